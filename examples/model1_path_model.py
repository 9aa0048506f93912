"""Tutorial Model 1: multilevel path model on scale scores, with latent mean centering.

Run: ``python examples/model1_path_model.py``
"""

from pathlib import Path

import pymsem as ms

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
data = ms.datasets.load_school()
for f in ("ACH", "INT", "REL"):  # scale scores: row means of the four indicators
    data[f] = data[[f"{f}{i}" for i in range(1, 5)]].mean(axis=1)

model = ms.MSEM(data, cluster="schid")
# Observed level-1 variables are split into latent school means and within-school deviations.
model.path("INT", on="REL", level="within", label="a_w")
model.path("ACH", on=["INT", "REL"], level="within", label=["b_w", "c_w"])
model.path("INT", on="REL", level="between", label="a_b")
model.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])

print(model.icc())  # how much of each variable's variance lies between schools
IMAGES.mkdir(parents=True, exist_ok=True)
model.diagram(title="Model 1. Observed variables").save(IMAGES / "model1_diagram.png")  # Figure 1
fit = model.fit(draws=1000, tune=1000, chains=4, seed=46)
print(fit.table(title="Table 1. 1-1-1 mediation model with observed variables"))
