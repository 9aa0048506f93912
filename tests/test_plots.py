"""Figures: each plot shows the numbers of the summary it was drawn from."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import pymsem as ms
from pymsem.results import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def fit_with_derived(model2_fit):
    """Model 2 with indirect and contextual effects, removed again afterwards (the fit is shared)."""
    m = model2_fit.model
    m.derived("med_w", ms.indirect("a_w", "b_w"))
    m.derived("med_b", ms.indirect("a_b", "b_b"))
    m.derived("a_con", ms.contextual("a_b", "a_w"))
    yield model2_fit
    m.drop_derived("med_w", "med_b", "a_con")


def _artist(ax, gid: str):
    found = [a for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, (gid, [a.get_gid() for a in ax.get_children() if a.get_gid()])
    return found[0]


def _points(ax, gid: str) -> tuple[np.ndarray, np.ndarray]:
    line = _artist(ax, gid)
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def _segments(ax, gid: str) -> np.ndarray:
    """Interval segments as rows (x0, y0, x1, y1)."""
    return np.array([np.ravel(s) for s in _artist(ax, gid).get_segments()])


def _ticklabels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


# -------------------------------------------------------------------- forest
def test_forest_points_and_intervals_are_the_summary(model2_fit) -> None:
    s = model2_fit.summary().reset_index()
    ax = model2_fit.plot_forest()
    reg = s[s["block"] == "Regressions"]
    for level in ("within", "between"):
        rows = reg[reg["level"] == level]
        x, y = _points(ax, f"points:{level}")
        np.testing.assert_allclose(x, rows["median"])
        seg = _segments(ax, f"intervals:{level}")
        np.testing.assert_allclose(seg[:, 0], rows["lower"])
        np.testing.assert_allclose(seg[:, 2], rows["upper"])
        np.testing.assert_allclose(seg[:, 1], y)
    # Each path's within and between estimates share one row, labelled with both labels.
    labels = _ticklabels(ax)
    assert labels == [
        "Regressions",
        "INT <- REL (a_w, a_b)",
        "ACH <- INT (b_w, b_b)",
        "ACH <- REL (c_w, c_b)",
    ]
    _, y_w = _points(ax, "points:within")
    _, y_b = _points(ax, "points:between")
    np.testing.assert_allclose((y_w + y_b) / 2, [1, 2, 3])
    assert (y_w < y_b).all()  # within above between (the y axis runs downward)
    assert ax.get_ylim()[0] > ax.get_ylim()[1]
    assert any(ln.get_xdata()[0] == 0 and ln.get_linestyle() == "--" for ln in ax.get_lines())


def test_forest_by_level_has_one_section_per_level_and_block(model1_fit) -> None:
    s = model1_fit.summary().reset_index()
    ax = model1_fit.plot_forest(blocks=["Regressions", "Intraclass correlations"], by="level")
    labels = _ticklabels(ax)
    assert labels[0] == "Within: Regressions"
    assert labels[1:4] == ["INT <- REL (a_w)", "ACH <- INT (b_w)", "ACH <- REL (c_w)"]
    assert "Between: Intraclass correlations" in labels and "ICC ACH" in labels
    x, _ = _points(ax, "points:between")
    rows = s[(s["level"] == "between") & s["block"].isin(["Regressions", "Intraclass correlations"])]
    np.testing.assert_allclose(x, rows["median"])
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["Within: Regressions", "Between: Regressions", "Between: Intraclass correlations"]


def test_forest_puts_derived_effects_in_their_own_group(fit_with_derived) -> None:
    s = fit_with_derived.summary().reset_index()
    ax = fit_with_derived.plot_forest()
    labels = _ticklabels(ax)
    assert labels[4:] == [
        "Derived",
        "indirect(a_w, b_w) (med_w)",
        "indirect(a_b, b_b) (med_b)",
        "contextual(a_b, a_w) (a_con)",
    ]
    x, y = _points(ax, "points:derived")
    np.testing.assert_allclose(x, s.loc[s["level"] == "derived", "median"])
    np.testing.assert_allclose(y, [5, 6, 7])
    # The indirect effect is the product of its paths, draw by draw, so its median is not the
    # product of medians; check it against the draws instead.
    med_w = np.median(fit_with_derived.draws("a_w") * fit_with_derived.draws("b_w"))
    assert x[0] == pytest.approx(med_w)


def test_forest_standardized_uses_standardized_draws(model2_fit) -> None:
    s = model2_fit.summary().reset_index()
    ax = model2_fit.plot_forest(standardized=True, ci_prob=0.9)
    reg = s[(s["block"] == "Regressions") & (s["level"] == "within")]
    x, _ = _points(ax, "points:within")
    # summary()'s std column is the median of the standardized draws.
    np.testing.assert_allclose(x, reg["std"])
    q = next(q for q in model2_fit.quantities() if q.label == "a_w")
    seg = _segments(ax, "intervals:within")
    np.testing.assert_allclose(seg[0, [0, 2]], np.quantile(q.std, [0.05, 0.95]))
    assert "Standardized" in ax.get_xlabel() and "90% CI" in ax.get_xlabel()


def test_forest_parameters_by_label_or_text(model2_fit) -> None:
    ax = model2_fit.plot_forest(parameters=["a_w", "ACH <- REL"])
    # a_w picks the within row only; the path text picks both levels.
    assert _ticklabels(ax) == ["Regressions", "INT <- REL (a_w)", "ACH <- REL (c_w, c_b)"]
    s = model2_fit.summary()
    x, _ = _points(ax, "points:within")
    np.testing.assert_allclose(x, s.loc[[("within", "INT <- REL"), ("within", "ACH <- REL")], "median"])


def test_forest_bad_input(model2_fit) -> None:
    with pytest.raises(ValueError, match="No block"):
        model2_fit.plot_forest(blocks=["Regresions"])
    with pytest.raises(ValueError, match=r"No parameter.*'z_w'.*known"):
        model2_fit.plot_forest(parameters=["z_w"])
    with pytest.raises(ValueError, match="by must be"):
        model2_fit.plot_forest(by="block")


def test_forest_on_a_saved_summary_draws_on_given_axes() -> None:
    df = pd.DataFrame(
        {
            "level": ["within", "between", "derived"],
            "parameter": ["Y <- X", "Y <- X", "contextual(b, w)"],
            "block": ["Regressions", "Regressions", "Derived"],
            "label": ["w", "b", "con"],
            "median": [0.2, 0.5, 0.3],
            "lower": [0.1, 0.2, -0.1],
            "upper": [0.3, 0.8, 0.7],
        }
    )
    _, ax = plt.subplots()
    assert plots.plot_forest(df, ax=ax) is ax
    assert _ticklabels(ax) == ["Regressions", "Y <- X (w, b)", "Derived", "contextual(b, w) (con)"]
    np.testing.assert_allclose(_segments(ax, "intervals:derived")[0, [0, 2]], [-0.1, 0.7])


# ----------------------------------------------------------------- densities
def test_posterior_densities_of_derived_effects(fit_with_derived) -> None:
    fit = fit_with_derived
    s = fit.summary().reset_index().set_index("label")
    axes = fit.plot_posterior()
    assert len(axes) == 3
    assert axes[0].get_title().startswith("med_w = indirect(a_w, b_w)")
    for ax, name in zip(axes, ["med_w", "med_b", "a_con"]):
        med = _artist(ax, "median").get_xdata()
        assert med[0] == pytest.approx(s.loc[name, "median"])
        # The shaded area runs exactly over the credible interval.
        shade = _artist(ax, "interval").get_paths()[0].vertices[:, 0]
        assert shade.min() == pytest.approx(s.loc[name, "lower"])
        assert shade.max() == pytest.approx(s.loc[name, "upper"])
        assert f"{s.loc[name, 'median']:.3f}" in ax.get_title()
        # The density integrates to about 1 over its grid.
        x, y = _artist(ax, "density").get_data()
        assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.05)


def test_posterior_defaults_to_labelled_paths_and_takes_names(model1_fit) -> None:
    axes = model1_fit.plot_posterior()
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        f"{lab} = {p}"
        for lab, p in [
            ("a_w", "INT <- REL"),
            ("b_w", "ACH <- INT"),
            ("c_w", "ACH <- REL"),
            ("a_b", "INT <- REL"),
            ("b_b", "ACH <- INT"),
            ("c_b", "ACH <- REL"),
        ]
    ]
    _, ax = plt.subplots()
    (out,) = model1_fit.plot_posterior("lv_sd_b[INT]", ci_prob=0.5, ax=ax)
    assert out is ax
    med = _artist(ax, "median").get_xdata()[0]
    assert med == pytest.approx(np.median(model1_fit.draws("lv_sd_b[INT]")))
    with pytest.raises(KeyError, match="No parameter 'nope'"):
        model1_fit.plot_posterior(["nope"])
    with pytest.raises(ValueError, match="2 panel"):
        model1_fit.plot_posterior(["a_w", "b_w"], ax=ax)


# --------------------------------------------------------------- caterpillar
def _synthetic_clusters(n_clusters: int = 12, n_draws: int = 800, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.3, 0.2, n_clusters)
    draws = centers + rng.normal(0, 0.05, (n_draws, n_clusters))
    return pd.DataFrame(draws, columns=[f"school{i}" for i in range(n_clusters)])


def test_caterpillar_sorts_clusters_by_median() -> None:
    df = _synthetic_clusters()
    avg = np.random.default_rng(2).normal(0.3, 0.02, 800)
    ax = plots.plot_caterpillar(df, average=avg, ci_prob=0.9)
    med = df.median().to_numpy()
    order = np.argsort(med)
    x, y = _points(ax, "points")
    np.testing.assert_allclose(x, np.arange(12))
    np.testing.assert_allclose(y, med[order])
    seg = _segments(ax, "intervals")
    np.testing.assert_allclose(seg[:, 1], df.quantile(0.05).to_numpy()[order])
    np.testing.assert_allclose(seg[:, 3], df.quantile(0.95).to_numpy()[order])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(df.columns[order])
    assert _artist(ax, "average").get_ydata()[0] == pytest.approx(np.median(avg))
    band = _artist(ax, "average band")  # a Rectangle spanning the axes' width
    np.testing.assert_allclose(
        [band.get_y(), band.get_y() + band.get_height()], np.quantile(avg, [0.05, 0.95])
    )


def test_caterpillar_reads_dataarrays_and_arrays() -> None:
    df = _synthetic_clusters(n_clusters=50)
    arr = df.to_numpy().reshape(2, 400, 50)  # (chain, draw, cluster)
    da = xr.DataArray(arr, dims=("chain", "draw", "cluster"), coords={"cluster": list(df.columns)})
    ax1 = plots.plot_caterpillar(da, average=0.3)
    ax2 = plots.plot_caterpillar(arr)
    np.testing.assert_allclose(_points(ax1, "points")[1], np.sort(df.median().to_numpy()))
    np.testing.assert_allclose(_points(ax2, "points")[1], np.sort(df.median().to_numpy()))
    # 50 clusters are too many to name on the axis; a fixed average has no band.
    assert "50 clusters" in ax1.get_xlabel()
    assert not [a for a in ax1.get_children() if a.get_gid() == "average band"]
    with pytest.raises(ValueError, match="cluster axis"):
        plots.plot_caterpillar(np.zeros(5))


def test_caterpillar_needs_random_slopes(model2_fit) -> None:
    with pytest.raises(ValueError, match="no random slopes"):
        model2_fit.plot_caterpillar()


# --------------------------------------------------------------- diagnostics
def test_diagnostic_tree_names_parameters_by_label(fit_with_derived) -> None:
    fit = fit_with_derived
    tree = plots.diagnostic_tree(fit)
    post = tree["posterior"].to_dataset()
    assert list(post.data_vars) == ["a_w", "b_w", "c_w", "a_b", "b_b", "c_b"]
    np.testing.assert_array_equal(post["b_b"].values, fit.draws("b_b"))
    assert "diverging" in tree["sample_stats"].to_dataset()
    tree = plots.diagnostic_tree(fit, ["lv_sd_b", "med_w"])
    post = tree["posterior"].to_dataset()
    elements = fit.structure.groups["lv_sd_b"].elements
    assert list(post.data_vars) == [f"lv_sd_b[{el}]" for el in elements] + ["med_w"]
    np.testing.assert_allclose(post["med_w"].values, fit.draws("a_w") * fit.draws("b_w"))
    with pytest.raises(KeyError, match="known"):
        plots.diagnostic_tree(fit, ["nope"])


def test_trace_and_rank_plots_are_arviz_plot_collections(model1_fit) -> None:
    from arviz_plots import PlotCollection

    pc = model1_fit.plot_trace()
    assert isinstance(pc, PlotCollection)
    assert set(pc.data.data_vars) == {"a_w", "b_w", "c_w", "a_b", "b_b", "c_b"}
    pc = model1_fit.plot_rank(["a_w", "lv_sd_w[INT]"])
    assert isinstance(pc, PlotCollection)
    assert set(pc.data.data_vars) == {"a_w", "lv_sd_w[INT]"}


def test_caterpillar_of_cluster_slopes_and_indirect_effects(model3_fit) -> None:
    fit = model3_fit
    slopes = fit.cluster_slopes()
    axes = fit.plot_caterpillar()
    assert len(axes) == 2
    for ax, name, mean_label in zip(axes, ["RSa", "RSb"], ["a_w", "b_w"]):
        med = slopes[name].median(("chain", "draw")).values
        np.testing.assert_allclose(_points(ax, "points")[1], np.sort(med))
        assert _artist(ax, "average").get_ydata()[0] == pytest.approx(np.median(fit.draws(mean_label)))
        assert mean_label in ax.get_title()
    (ax,) = fit.plot_caterpillar(slopes="b_w")
    assert "RSb" in ax.get_title()
    with pytest.raises(KeyError, match="known"):
        fit.plot_caterpillar(slopes=["RSc"])

    ax = fit.plot_caterpillar("indirect")
    med = fit.cluster_indirect("a_w", "b_w").median(("chain", "draw")).values
    np.testing.assert_allclose(_points(ax, "points")[1], np.sort(med))
    # The average line is the model's indirect effect a*b + cov(a, b), the derived med_w.
    med_w = next(q.draws for q in fit.derived_quantities() if q.label == "med_w")
    assert _artist(ax, "average").get_ydata()[0] == pytest.approx(np.median(med_w))
    with pytest.raises(ValueError, match="kind must be"):
        fit.plot_caterpillar("intercepts")
