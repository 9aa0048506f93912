"""Tutorial Model 4: SES as a covariate at both levels and a cross-level moderator of the random slopes.

Run: ``python examples/model4_moderated_mediation.py`` (about 4 minutes on 2 cores).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pymsem as ms

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
data = ms.datasets.load_school()
model = ms.tutorial.model4(data)  # the full specification, written out in pymsem/tutorial.py
print(model)
IMAGES.mkdir(parents=True, exist_ok=True)
model.diagram(title="Model 4. Cross-level moderation").save(IMAGES / "model4_diagram.png")  # Figure 4
fit = model.fit(draws=1000, tune=1000, chains=4, seed=46)
print(fit.table(blocks=["Random slopes", "Derived"], title="Table 4. Cross-level moderation"))
effects = fit.conditional_indirect("a_w", "b_w", "SES", at=["-1sd", "mean", "+1sd"])
print(effects.median(("chain", "draw")).to_series())
ax = fit.plot_conditional_indirect("a_w", "b_w", "SES")
ax.figure.savefig("model4_conditional_indirect.png", dpi=120, bbox_inches="tight")
