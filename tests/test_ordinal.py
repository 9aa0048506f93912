"""Ordinal variables: the latent-response map, the collapsed likelihood of sampled data, lowering,
and recovery of loadings, paths and thresholds from 5-category and binary items."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.stats import multivariate_normal, norm

import pymsem as ms
from pymsem.compile.ordinal import _interval_values, complete_data_logp
from pymsem.specification.errors import MSEMSpecificationError
from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

ITEMS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)]


@pytest.mark.parametrize("scale", [None, 2.7], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_interval_map_integrates_to_the_category_probability(k: int, scale: float | None) -> None:
    """The density of a normal latent response, carried onto the real line by the map and its
    Jacobian, integrates to the probability of the category: what sampling the cell leaves,
    whatever the outer cells' scale."""
    tau = np.array([-1.0, 0.3, 1.2])
    mu, sd = 0.4, 1.3
    r = pt.dvector("r")
    n = 40001
    s = None if scale is None else pt.as_tensor_variable(np.array([scale]))
    y, logj = _interval_values(
        r, np.zeros(n, dtype=int), np.full(n, k), np.full(n, 4), pt.as_tensor_variable(tau[None, :]), s
    )
    dens = pt.exp(-0.5 * pt.square((y - mu) / sd) - np.log(sd * np.sqrt(2 * np.pi)) + logj)
    grid = np.linspace(-40, 40, n)
    values = pytensor.function([r], [dens, y])(grid)
    integral = np.trapezoid(values[0], grid)
    edges = np.concatenate([[-np.inf], tau, [np.inf]])
    exact = norm.cdf((edges[k + 1] - mu) / sd) - norm.cdf((edges[k] - mu) / sd)
    assert integral == pytest.approx(exact, rel=1e-4)
    # Every value lies in its category's interval.
    assert np.all(values[1] >= edges[k] - 1e-12) and np.all(values[1] <= edges[k + 1] + 1e-12)


def test_interval_map_of_mixed_columns_matches_its_formula() -> None:
    """Columns of 2, 3 and 5 categories (padded threshold rows), cells in cell_order: each value
    and log-Jacobian as the direct formula gives it, and a finite threshold gradient (the
    padded rows' zero widths never reach a log)."""
    from scipy.special import expit

    from pymsem.compile.ordinal import cell_order

    rng = np.random.default_rng(0)
    K = np.array([5, 2, 3, 5])
    T = np.array([[-1.5, -0.5, 0.4, 1.3], [0.2, 0.2, 0.2, 0.2], [-0.3, 0.8, 0.8, 0.8], [-1.0, 0.0, 1.0, 2.0]])
    column = rng.integers(0, 4, 500)
    n_cat = K[column]
    code = rng.integers(0, 10, 500) % n_cat
    o = cell_order(code, n_cat)
    column, code, n_cat = column[o], code[o], n_cat[o]
    rv = rng.normal(scale=2.0, size=500)
    S = np.array([0.5, 1.0, 2.0, 3.0])
    Tt, r, St = pt.dmatrix("T"), pt.dvector("r"), pt.dvector("S")
    y, lj = _interval_values(r, column, code, n_cat, Tt, St)
    f = pytensor.function([r, Tt, St], [y, lj, pytensor.grad(pt.sum(lj) + pt.sum(y), Tt)])
    yv, ljv, gv = f(rv, T, S)
    s = S[column]
    lo, hi = T[column, np.maximum(code - 1, 0)], T[column, np.minimum(code, n_cat - 2)]
    low, high = code == 0, code == n_cat - 1
    mid = ~(low | high)
    w = np.where(mid, hi - lo, 1.0)
    np.testing.assert_allclose(
        yv,
        np.where(low, hi - s * np.exp(rv), np.where(high, lo + s * np.exp(rv), lo + w * expit(rv))),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        ljv, np.where(mid, np.log(w * expit(rv) * (1 - expit(rv))), rv + np.log(s)), atol=1e-10
    )
    assert np.isfinite(gv).all() and gv[1, 1:].sum() == 0.0
    with pytest.raises(ValueError, match="cell_order"):
        _interval_values(r, column[::-1], code[::-1], n_cat[::-1], Tt)


def test_outer_cells_are_scaled_for_binary_columns_only() -> None:
    """Binary columns' outer cells scale with the latent response's SD; other columns keep 1."""
    from pymsem.compile.ordinal import latent_response_scale

    W, B = np.diag([1.5, 2.0, 3.0]), np.diag([0.5, 0.25, 1.0, 9.0])  # level1 (c, a, b), one level-2
    lv = lambda S: SimpleNamespace(Sigma=pt.as_tensor_variable(S))  # noqa: E731
    mixed = SimpleNamespace(ordinal={"a": 2, "b": 5}, level1=["c", "a", "b"])
    np.testing.assert_allclose(latent_response_scale(mixed, lv(W), lv(B)).eval(), [np.sqrt(2.25), 1.0])
    binary = SimpleNamespace(ordinal={"b": 2, "a": 2}, level1=["c", "a", "b"])
    np.testing.assert_allclose(latent_response_scale(binary, lv(W), lv(B)).eval(), [2.0, np.sqrt(2.25)])
    assert latent_response_scale(SimpleNamespace(ordinal={"a": 3}, level1=["a"]), lv(W), lv(B)) is None


@pytest.mark.parametrize("shuffled", [False, True], ids=["cluster-order", "shuffled-rows"])
def test_complete_data_logp_equals_the_dense_normal(shuffled: bool) -> None:
    """The in-graph collapsed likelihood (statistics from sampled data) against the dense
    normal of each cluster's stacked rows and level-2 value, on unbalanced clusters (rows in
    cluster order, and shuffled: the likelihood sorts them itself)."""
    rng = np.random.default_rng(3)
    sizes = [1, 2, 3, 5, 2]
    df = pd.DataFrame({"g": np.repeat(np.arange(5), sizes)})
    df["y1"], df["y2"] = rng.normal(size=(2, len(df))) + 40.0  # far from 0: centring matters
    df["w"] = np.repeat(rng.normal(size=5), sizes)
    if shuffled:
        df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    data = ms.MSEM(df, cluster="g").path("y1", on="y2", level="within").path("y1", on="w", level="between")
    data = data.clustered_data()
    A = rng.normal(size=(2, 2))
    SW = A @ A.T + 0.5 * np.eye(2)
    B = rng.normal(size=(3, 3))
    SB = B @ B.T + 0.3 * np.eye(3)
    nu = rng.normal(size=3) + np.array([40.0, 40.0, 0.0])
    Y = data.frame[["y1", "y2"]].to_numpy()
    Z2 = data.level2_values(["w"])
    within = SimpleNamespace(Sigma=pt.as_tensor_variable(SW))
    between = SimpleNamespace(Sigma=pt.as_tensor_variable(SB), nu=pt.as_tensor_variable(nu))
    got = complete_data_logp(
        data, pt.as_tensor_variable(Y), pt.as_tensor_variable(Z2), within, between
    ).eval()
    ref = 0.0
    for g in range(data.n_clusters):
        rows = Y[data.cluster_index == g]
        n = len(rows)
        cov = np.kron(np.eye(n), SW) + np.kron(np.ones((n, n)), SB[:2, :2])
        cross = np.kron(np.ones((n, 1)), SB[:2, 2:])
        full = np.block([[cov, cross], [cross.T, SB[2:, 2:]]])
        x = np.concatenate([rows.ravel(), Z2[g]])
        ref += multivariate_normal(np.concatenate([np.tile(nu[:2], n), nu[2:]]), full).logpdf(x)
    assert got == pytest.approx(ref, rel=1e-10)


def _ordinal_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), 5)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=60)})
    for c in ("u1", "u2", "u3", "u4"):
        df[c] = rng.integers(0, 4, 60)
    return df


def test_lowering_fixes_the_probit_scale() -> None:
    m = ms.MSEM(_ordinal_frame(), cluster="g", ordinal=["u1", "u2", "u3", "u4"])
    m.latent("F", ["u1", "u2", "u3"], levels=("within", "between"))
    m.path("u4", on="x", level="within")
    st = m.structure()
    assert st.ordinal == {"u1": 4, "u2": 4, "u3": 4, "u4": 4}
    wi, be = st.within, st.between
    for v in ("u1", "u2", "u3"):  # indicators: residual SD 1, not free
        i = wi.observed.index(v)
        assert wi.resid_sd_fixed[i] == 1.0 and i not in wi.resid_sd_free[:, 0]
    j = wi.latent.index("u4")  # an outcome: its disturbance SD is 1
    assert wi.lv_sd_fixed[j] == 1.0 and j not in wi.lv_sd_free[:, 0]
    # Grand means: only the continuous x has one; the thresholds locate the ordinal ones.
    assert [be.observed[i] for i in be.intercept_free[:, 0]] == ["x"]
    fit_rows = m.parameters()
    assert not fit_rows.empty


def test_a_free_or_fixed_scale_of_an_ordinal_variable_is_refused() -> None:
    text = "level: 1\n F =~ u1 + u2 + u3\n u1 ~~ u1\nlevel: 2\n F =~ u1 + u2 + u3\n"
    m = ms.MSEM.from_lavaan(text, _ordinal_frame(), cluster="g", ordered=["u1", "u2", "u3"])
    with pytest.raises(MSEMSpecificationError, match=r"'u1' is ordinal.*fixed at 1"):
        m.structure()
    text = "level: 1\n F =~ u1 + u2 + u3\nlevel: 2\n F =~ u1 + u2 + u3\n u1 ~ 1\n"
    m = ms.MSEM.from_lavaan(text, _ordinal_frame(), cluster="g", ordered=["u1", "u2", "u3"])
    with pytest.raises(MSEMSpecificationError, match=r"'u1' is ordinal.*thresholds"):
        m.structure()


def test_random_slopes_with_ordinal_variables_stay_collapsed() -> None:
    m = ms.MSEM(_ordinal_frame(), cluster="g", ordinal=["u1", "u2", "u3", "u4"])
    m.latent("F", ["u1", "u2", "u3"], levels=("within", "between"))
    m.path("u4", on="x", level="within", random=ms.RandomSlope("S"))
    assert m.compile().formulation.name == "marginal"
    names = set(m.build().named_vars)
    assert {"latent_response", "slope_raw"} <= names or {"latent_response", "slope"} <= names
    assert m.compile(formulation="augmented").formulation.name == "augmented"


def test_in_graph_cluster_statistics_give_the_random_slope_likelihood_of_fixed_data() -> None:
    """Unbalanced, shuffled rows: the padded deviations reproduce each cluster's scatter, and the
    random-slope likelihood from them equals the one from statistics computed once in NumPy."""
    import pytensor.tensor as pt

    from pymsem.compile.marginal import random_slope_logp, sufficient_statistics
    from pymsem.compile.matrices import level_matrices
    from pymsem.compile.ordinal import cluster_statistics
    from pymsem.simulate import parameter_vectors

    spec = tutorial_spec(3)
    d = ms.simulate(spec, TUTORIAL_TRUTH[3], n_clusters=12, cluster_size=6, seed=1)
    d = d.drop(index=[0, 1, 7, 20]).sample(frac=1, random_state=1)
    m = spec.with_data(d)
    st, cd = m.structure(), m.clustered_data()
    fixed = sufficient_statistics(st, cd, per_cluster=True)
    Y = pt.as_tensor_variable(cd.frame[st.level1].to_numpy(float))
    graph = cluster_statistics(cd, Y, pt.as_tensor_variable(cd.level2_values(st.level2)))
    R = graph.cluster_roots.eval()
    np.testing.assert_allclose(
        R @ R.transpose(0, 2, 1), fixed.cluster_roots @ fixed.cluster_roots.transpose(0, 2, 1), atol=1e-10
    )
    np.testing.assert_allclose(graph.cluster_vectors.eval(), fixed.cluster_vectors, atol=1e-12)
    vec = parameter_vectors(st, TUTORIAL_TRUTH[3])
    within, between = level_matrices(st.within, vec), level_matrices(st.between, vec)
    u = np.random.default_rng(0).normal(0, 0.1, (cd.n_clusters, len(st.random_slopes)))
    a = random_slope_logp(fixed, st, within, between, pt.as_tensor_variable(u)).eval()
    b = random_slope_logp(graph, st, within, between, pt.as_tensor_variable(u)).eval()
    assert np.isfinite(a) and abs(a - b) < 1e-8 * abs(a)


# --------------------------------------------------------------------------------- recovery
#: Thresholds of the 5-category items (on the latent response: within residual SD 1).
TAU5 = np.array([-1.5, -0.5, 0.4, 1.3])


def _cut(df: pd.DataFrame, tau: np.ndarray) -> pd.DataFrame:
    out = df.copy()
    for c in ITEMS:
        out[c] = (df[c].to_numpy()[:, None] > tau[None, :]).sum(1)
    return out


def _truth_rows(fit: ms.results.fit.MSEMFit, truth: dict[str, float], tau: np.ndarray) -> pd.DataFrame:
    """Summary rows of the paths, loadings and thresholds with their true values."""
    s = fit.summary().reset_index()
    st = fit.structure
    rows = []
    for ref in st.refs():
        if ref.kind not in ("path", "loading"):
            continue
        key = ref.label if ref.label in truth else ref.group
        value = truth.get(f"{ref.group}[{ref.element}]", truth.get(key))
        level = "within" if ref.group.endswith("_w") else "between"
        element = ref.element
        row = s[(s.level == level) & (s.parameter == element)].iloc[0]
        rows.append(
            (ref.group + "[" + element + "]", value, row["median"], row["sd"], row["lower"], row["upper"])
        )
    for c in ITEMS:
        for k, t in enumerate(tau):
            row = s[s.parameter == f"{c} | t{k + 1}"].iloc[0]
            rows.append((f"{c} | t{k + 1}", t, row["median"], row["sd"], row["lower"], row["upper"]))
    return pd.DataFrame(rows, columns=["parameter", "truth", "median", "sd", "lower", "upper"])


@pytest.fixture(scope="module")
def model2_ordinal() -> dict[str, object]:
    """Tutorial Model 2 at 60 schools x 10, its 12 items cut into 5 categories and into 2."""
    truth = {**TUTORIAL_TRUTH[2], "resid_sd_w": 1.0, "intercept_b": 0.0}
    spec = tutorial_spec(2)
    latent = ms.simulate(spec, truth, n_clusters=60, cluster_size=10, seed=11)
    kw = dict(draws=500, tune=500, chains=2, seed=2, progress=False, warn=False)
    five = spec.with_data(_cut(latent, TAU5), ordinal=ITEMS).fit(**kw)
    binary = spec.with_data(_cut(latent, np.array([0.2])), ordinal=ITEMS).fit(**kw)
    return {"truth": truth, "five": five, "binary": binary}


@pytest.mark.slow
def test_five_category_items_recover_paths_loadings_and_thresholds(model2_ordinal) -> None:
    rows = _truth_rows(model2_ordinal["five"], model2_ordinal["truth"], TAU5)
    covered = (rows.lower <= rows.truth) & (rows.truth <= rows.upper)
    z = (rows["median"] - rows.truth).abs() / rows["sd"]
    assert len(rows) == 6 + 18 + 48
    assert covered.mean() >= 0.9, rows[~covered]
    assert (z < 2).mean() >= 0.9 and z.max() < 3.5, rows[z >= 2]
    # The within paths, the best-informed parameters, within 2 posterior SD each.
    assert (z[rows.parameter.str.startswith("path_w")] < 2).all()


@pytest.mark.slow
def test_binary_items_recover_the_within_model_and_their_thresholds(model2_ordinal) -> None:
    """One data set: its between-level INT loadings (all three free ones near 1.7-1.9 in every
    fit, intervals just above 1) are one event of the sample, not three misses, so the shares
    leave room for it; all medians stay within 2.5 posterior SD."""
    rows = _truth_rows(model2_ordinal["binary"], model2_ordinal["truth"], np.array([0.2]))
    covered = (rows.lower <= rows.truth) & (rows.truth <= rows.upper)
    z = (rows["median"] - rows.truth).abs() / rows["sd"]
    assert covered.mean() >= 0.85 and z.max() < 2.5, rows[~covered | (z >= 2)]
    within = rows[rows.parameter.str.contains("_w\\[") | rows.parameter.str.contains(" \\| t1")]
    assert ((within["median"] - within.truth).abs() < 2 * within["sd"]).mean() >= 0.9, within
    # Binary items carry less information than five categories: wider intervals (within, where
    # the between model's weakly identified paths do not dominate the comparison).
    five = _truth_rows(model2_ordinal["five"], model2_ordinal["truth"], TAU5)
    w = rows.parameter.iloc[:24].str.contains("_w\\[").to_numpy()
    assert rows["sd"].iloc[:24][w].mean() > 1.2 * five["sd"].iloc[:24][w].mean()


@pytest.mark.slow
def test_ordinal_fit_reports_thresholds_and_the_probit_scale(model2_ordinal) -> None:
    fit = model2_ordinal["five"]
    text = str(fit.table())
    assert "Thresholds" in text and "ACH1 | t4" in text
    assert "Ordinal (categories): ACH1 (5)" in text
    assert "latent_response" not in fit.posterior  # one value per cell and draw: not kept
    std = fit.summary().reset_index()
    lam = std[(std.parameter == "ACH2 by ACH") & (std.level == "within")].iloc[0]
    assert 0 < lam["std"] < 1  # standardized loading on the latent-response scale


def test_a_within_only_ordinal_model_compiles_quietly(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """No latent variable at the between level: no empty matrix products reach PyTensor's rewrites
    (they printed 'Rewrite failure ... argmax of an empty sequence' tracebacks)."""
    text = "level: 1\n F =~ u1 + u2 + u3 + u4\n"
    m = ms.MSEM.from_lavaan(text, _ordinal_frame(), cluster="g", ordered=["u1", "u2", "u3", "u4"])
    model = m.build()
    assert np.isfinite(model.compile_logp()(model.initial_point()))
    out = capfd.readouterr()
    text = out.err + out.out + caplog.text
    assert "Rewrite failure" not in text and "Traceback" not in text


# ------------------------------------------- ordinal mediators with random slopes, predictors
#: x -> m (random slope A) -> y with an ordinal predictor z of y, at both levels.
MEDIATION_TRUTH = {
    "a": 0.5, "slope_sd_b[A]": 0.3, "b": 0.4, "d": 0.3, "c": 0.2,
    "a2": 0.4, "b2": 0.5, "d2": 0.3, "c2": 0.2,
    "lv_sd_w": 1.0, "lv_sd_b": 0.6, "lv_cor_w": 0.2, "lv_cor_b": 0.0, "intercept_b": 0.0,
}  # fmt: skip
TAU_M, TAU_Z = np.array([-0.8, 0.2, 1.0]), np.array([-0.3, 0.7])


def _mediation_spec(data: pd.DataFrame, ordinal: list[str] | None = None) -> ms.MSEM:
    m = ms.MSEM(data, cluster="g", ordinal=ordinal)
    m.path("m", on="x", level="within", label="a", random=ms.RandomSlope("A"))
    m.path("y", on=["m", "z", "x"], level="within", label=["b", "d", "c"])
    m.path("m", on="x", level="between", label="a2")
    return m.path("y", on=["m", "z", "x"], level="between", label=["b2", "d2", "c2"])


@pytest.fixture(scope="module")
def ordinal_mediation() -> ms.results.fit.MSEMFit:
    """80 clusters x 12: the mediator m cut into 4 categories, the predictor z into 3."""
    blank = pd.DataFrame({"g": np.repeat(np.arange(4), 3), **{c: np.arange(12.0) for c in "xmzy"}})
    d = ms.simulate(_mediation_spec(blank), MEDIATION_TRUTH, n_clusters=80, cluster_size=12, seed=5)
    d["m"] = (d["m"].to_numpy()[:, None] > TAU_M).sum(1)
    d["z"] = (d["z"].to_numpy()[:, None] > TAU_Z).sum(1)
    return _mediation_spec(d, ordinal=["m", "z"]).fit(
        draws=500, tune=500, chains=2, seed=1, progress=False, warn=False
    )


@pytest.mark.slow
def test_ordinal_mediator_with_a_random_slope_and_an_ordinal_predictor_recover(ordinal_mediation) -> None:
    """An ordinal outcome of a random-slope regression that is also a predictor, and an ordinal
    exogenous predictor, both through their latent responses: paths at both levels, the slope
    variance and the thresholds recovered from one data set."""
    fit = ordinal_mediation
    assert fit.compiled.formulation.name == "marginal"
    s = fit.summary().reset_index()
    truth = {("within", f"{o} <- {p}"): MEDIATION_TRUTH[lab] for o, p, lab in
             [("m", "x", "a"), ("y", "m", "b"), ("y", "z", "d"), ("y", "x", "c")]}  # fmt: skip
    truth |= {("between", f"{o} <- {p}"): MEDIATION_TRUTH[lab] for o, p, lab in
              [("m", "x", "a2"), ("y", "m", "b2"), ("y", "z", "d2"), ("y", "x", "c2")]}  # fmt: skip
    truth[("between", "A variance")] = MEDIATION_TRUTH["slope_sd_b[A]"] ** 2
    for col, tau in (("m", TAU_M), ("z", TAU_Z)):
        truth |= {("between", f"{col} | t{k + 1}"): t for k, t in enumerate(tau)}
    rows = s.set_index(["level", "parameter"]).loc[list(truth)]
    t = pd.Series(truth).to_numpy()
    covered = (rows["lower"].to_numpy() <= t) & (t <= rows["upper"].to_numpy())
    z = np.abs(rows["median"].to_numpy() - t) / rows["sd"].to_numpy()
    assert covered.mean() >= 0.85 and z.max() < 2.5, rows.assign(truth=t, z=z)
    # The within paths, the best-informed ones, within 2 posterior SD each.
    assert (z[:4] < 2).all(), rows.assign(truth=t, z=z).iloc[:4]
    assert fit.diagnostics()["max_rhat"] < 1.05
