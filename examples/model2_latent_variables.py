"""Tutorial Model 2: two-level SEM with three factors measured by four indicators at both levels.

Run: ``python examples/model2_latent_variables.py``
"""

from pathlib import Path

import pymsem as ms

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
data = ms.datasets.load_school()
model = ms.MSEM(data, cluster="schid")
for f in ("ACH", "INT", "REL"):
    # Blimp: F_w -> F1:F4; F_b -> F1:F4 (first loading fixed to 1 at each level)
    model.latent(f, indicators=[f"{f}{i}" for i in range(1, 5)], levels=("within", "between"))
model.path("INT", on="REL", level="within", label="a_w")
model.path("ACH", on=["INT", "REL"], level="within", label=["b_w", "c_w"])
model.path("INT", on="REL", level="between", label="a_b")
model.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])

print(model.priors()[["level", "parameter", "label", "prior"]].head(8))  # defaults are visible
IMAGES.mkdir(parents=True, exist_ok=True)
model.diagram(title="Model 2. Latent variables").save(IMAGES / "model2_diagram.png")  # Figure 2
fit = model.fit(draws=1000, tune=1000, chains=4, seed=46)
table = fit.table(title="Table 2. 1-1-1 mediation model with latent variables")
print(table)
print(fit.summary().query("label != ''")[["label", "median", "lower", "upper", "rhat", "std"]])
