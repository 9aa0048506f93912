"""Tutorial Model 3: random slopes on the within a and b paths, indirect and contextual effects.

Run: ``python examples/model3_random_slopes.py``
"""

from pathlib import Path

import pymsem as ms

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
data = ms.datasets.load_school()
model = ms.MSEM(data, cluster="schid")
for f in ("ACH", "INT", "REL"):
    model.latent(f, indicators=[f"{f}{i}" for i in range(1, 5)])

# Blimp: INT_w ~ REL_w@RSa;  ACH_w ~ INT_w@RSb REL_w;  RSa ~ 1@a_w;  RSb ~ 1@b_w
model.path("INT", on="REL", level="within", random=ms.RandomSlope("RSa", mean_label="a_w"))
model.path(
    "ACH", on=["INT", "REL"], level="within", label=[None, "c_w"], random=[ms.RandomSlope("RSb", "b_w"), None]
)
model.covariance("RSa", "RSb", level="between", label="rCor")  # RSa ~~ RSb@rCor
model.path("INT", on="REL", level="between", label="a_b")
model.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])

# Blimp's PARAMETERS block
model.derived("rCov", "cov(RSa, RSb)")
model.derived("med_w", ms.indirect("a_w", "b_w"))  # a_w * b_w + cov(RSa, RSb): both slopes random
model.derived("med_b", ms.indirect("a_b", "b_b"))  # a_b * b_b
model.derived("a_con", ms.contextual("a_b", "a_w"))
model.derived("b_con", ms.contextual("b_b", "b_w"))
model.derived("med_con", "med_b - med_w")

# The specification as the tutorial's Figure 3 draws it (no sampling needed): random slopes are
# dots on the within arrows and ellipses in the between box.
IMAGES.mkdir(parents=True, exist_ok=True)
model.diagram(title="Model 3. Random slopes on the a and b paths").save(IMAGES / "model3_diagram.png")

fit = model.fit(draws=1000, tune=1000, chains=4, seed=46)
fit.diagram(standardized=True).save("model3_estimates.png")  # standardized medians, bold if CI excludes 0
print(
    fit.table(
        blocks=["Random slopes", "Derived"], title="Table 3. Random slopes, indirect and contextual effects"
    )
)
schools = fit.cluster_slopes()  # each school's a and b slopes, per posterior draw
print(schools["RSa"].mean(("chain", "draw")).to_series().describe())
print(fit.cluster_indirect("a_w", "b_w").median(("chain", "draw")).to_series().head())
