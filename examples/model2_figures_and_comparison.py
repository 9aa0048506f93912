"""Tutorial Models 1 and 2 side by side, and Model 2's effects as publishable figures.

The tutorial compares Model 1 (observed scale scores) with Model 2 (latent variables): correcting
for measurement error makes the paths larger.  ``ms.compare_tables`` prints that comparison;
the forest plot shows each path's within and between estimates next to each other with the
indirect and contextual effects below them.

Run: ``python examples/model2_figures_and_comparison.py`` (about half a minute; writes
``docs/images/model2_forest.png`` and ``docs/images/model2_effects.png``).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pymsem as ms

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
OUT.mkdir(parents=True, exist_ok=True)

data = ms.datasets.load_school()
fits = {
    f"Model {k}": getattr(ms.tutorial, f"model{k}")(data).fit(draws=1000, tune=1000, chains=4, seed=46)
    for k in (1, 2)
}
comparison = ms.compare_tables(fits, blocks=["Regressions"], title="Models 1 and 2: regression paths")
print(comparison)  # .to_latex(), .to_markdown(), .to_csv("compare.csv") for the paper

fit = fits["Model 2"]
# Derived quantities are computed on the draws, so adding them after fitting needs no resampling.
fit.model.derived("med_w", ms.indirect("a_w", "b_w"))
fit.model.derived("med_b", ms.indirect("a_b", "b_b"))
fit.model.derived("a_con", ms.contextual("a_b", "a_w"))
fit.model.derived("b_con", ms.contextual("b_b", "b_w"))

ax = fit.plot_forest()  # regressions (within and between side by side), then derived effects
ax.set_title("Model 2: effects within and between schools")
ax.figure.savefig(OUT / "model2_forest.png", dpi=120, bbox_inches="tight")
axes = fit.plot_posterior(["med_w", "med_b", "a_con"])
axes[0].figure.savefig(OUT / "model2_effects.png", dpi=120, bbox_inches="tight")
fit.plot_trace()  # ArviZ trace and density per chain for the paths (a PlotCollection)
