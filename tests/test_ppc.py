"""Posterior predictive checks (fit.ppc, PPP) and the prior predictive (model.prior_predictive)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import pymsem as ms
import pymsem.results.ppc as ppc_module
from pymsem.results.ppc import _ImpliedMoments, _sample_moments
from pymsem.simulate import draw_data, parameter_vectors, spec_structure

FIT = dict(draws=200, tune=300, chains=2, seed=1, progress=False, warn=False)
ITEMS = {"F": ["F1", "F2", "F3"], "G": ["G1", "G2", "G3"]}
ALL_ITEMS = ITEMS["F"] + ITEMS["G"]
FACTOR_TRUTH = {
    "loading_w": 0.8, "loading_b": 0.5, "lv_sd_w": 1.0, "lv_sd_b": 1.0, "lv_cor_w": 0.3,
    "resid_sd_w": 0.6, "resid_sd_b": 0.2, "intercept_b": 0.0,
}  # fmt: skip
SLOPE_TRUTH = {"a_w": 0.4, "a_b": 0.5, "lv_sd_w": 1.0, "lv_sd_b": 0.6, "intercept_b": 0.0, "slope_sd_b": 0.5}


def factor_spec(data: pd.DataFrame | None, within_factors: int) -> ms.MSEM:
    """Two correlated within factors (the truth) or one for all six items; one between factor."""
    m = ms.MSEM(data, cluster="cl")
    if within_factors == 2:
        for f, items in ITEMS.items():
            m.latent(f, items, levels="within")
    else:
        m.latent("F", ALL_ITEMS, levels="within")
    return m.latent("B", ALL_ITEMS, levels="between")


def slope_spec(data: pd.DataFrame | None, random: bool) -> ms.MSEM:
    m = ms.MSEM(data, cluster="cl")
    if random:
        m.path("Y", on="X", level="within", random=[ms.RandomSlope("s", "a_w")])
    else:
        m.path("Y", on="X", level="within", label="a_w")
    return m.path("Y", on="X", level="between", label="a_b")


# ------------------------------------------------------------------ replicated moments
@pytest.mark.parametrize("which", ["factor", "slopes"])
def test_replicated_data_reproduce_implied_moments(which: str) -> None:
    """Averaged over many replications at fixed parameters, the sample within covariance and
    covariance of cluster means equal the implied ones (the chi-square's reference)."""
    spec, values = (
        (factor_spec(None, 2), FACTOR_TRUTH) if which == "factor" else (slope_spec(None, True), SLOPE_TRUTH)
    )
    st = spec_structure(spec)
    vec = parameter_vectors(st, values)
    T = np.diag(vec["slope_sd_b"] ** 2) if st.random_slopes else None
    sizes = np.array([6, 10, 14] * 10)  # unbalanced: mean(1/n) enters the between moments
    implied_W, implied_B = _ImpliedMoments(st, sizes)(vec, T)
    if which == "slopes":
        # The within variance of Y averages the slopes' variance: Var(Y) = (a^2 + sd_s^2) Var(X) + res.
        assert implied_W[0, 0] == pytest.approx(0.4**2 + 0.5**2 + 1.0, rel=0.02)
    rng = np.random.default_rng(4)
    reps = 400
    SW = np.zeros_like(implied_W)
    SB = np.zeros_like(implied_B)
    for _ in range(reps):
        d = draw_data(st, vec, T, sizes, rng)
        w, b, _ = _sample_moments(d.level1, d.level2, sizes)
        SW += w / reps
        SB += b / reps
    # Monte Carlo error of the means: a few percent of the scale (N=300 students, G=30 clusters).
    np.testing.assert_allclose(SW, implied_W, atol=0.03 * np.abs(implied_W).max())
    np.testing.assert_allclose(SB, implied_B, atol=0.04 * np.abs(implied_B).max())


class _PointFit:
    """A stand-in for a fit whose posterior is the truth (every draw the same): no sampling."""

    def __init__(self, model: ms.MSEM, values: dict, draws: int) -> None:
        self.model = model
        self.structure = model.structure()
        self.compiled = SimpleNamespace(data=model.clustered_data())
        vec = parameter_vectors(self.structure, values)
        self._draws = {k: np.broadcast_to(v, (1, draws, len(v))).copy() for k, v in vec.items()}

    def parameter_draws(self) -> dict[str, np.ndarray]:
        return self._draws


def test_ppc_masks_missing_cells_and_keeps_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replications have the observed sizes and holes; at the true parameters the checks pass."""
    df = ms.simulate(factor_spec(None, 2), FACTOR_TRUTH, n_clusters=30, cluster_size=[6, 10, 14] * 10, seed=5)
    holes = np.random.default_rng(1).random((len(df), len(ALL_ITEMS))) < 0.15
    df[ALL_ITEMS] = df[ALL_ITEMS].mask(holes)
    fake = _PointFit(factor_spec(df, 2), FACTOR_TRUTH, draws=300)
    y_obs, _, sizes_obs = ppc_module.observed_arrays(fake)
    assert np.isnan(y_obs).mean() == pytest.approx(holes.mean())
    seen = []
    original = ppc_module.ppc_statistics

    def spy(structure, y1, level2, sizes):
        seen.append((np.isnan(y1).copy(), np.asarray(sizes).copy()))
        return original(structure, y1, level2, sizes)

    monkeypatch.setattr(ppc_module, "ppc_statistics", spy)
    res = ppc_module.ppc(fake, draws=300, seed=2)
    assert len(seen) == 1 + 300  # the data, then one replication per draw
    for mask, sizes in seen:
        np.testing.assert_array_equal(mask, np.isnan(y_obs))
        np.testing.assert_array_equal(sizes, sizes_obs)
    t = res.table()
    assert (t["draws"] == 300).all()
    assert 0.05 < res.ppp < 0.95
    assert t["flag"].mean() < 0.15  # PPPs spread, not piled at 0 or 1


# ------------------------------------------------------------------ fits: factor misfit
@pytest.fixture(scope="module")
def factor_fits() -> dict[int, ms.results.fit.MSEMFit]:
    df = ms.simulate(factor_spec(None, 2), FACTOR_TRUTH, n_clusters=40, cluster_size=10, seed=1)
    return {k: factor_spec(df, k).fit(**FIT) for k in (1, 2)}


def test_ppp_flags_one_factor_fitted_to_two_factor_data(factor_fits: dict) -> None:
    bad = factor_fits[1].ppc(draws=200, seed=1)
    t = bad.table()
    assert bad.ppp < 0.05 and t.loc["chi-square", "flag"]
    # One factor cannot reproduce both blocks: it follows one and underfits the other's
    # covariances, which are observed above the replicated ones and flagged.
    blocks = [
        [f"within cov({b}, {a})" for i, a in enumerate(items) for b in items[i + 1 :]]
        for items in ITEMS.values()
    ]
    worst = max(blocks, key=lambda names: t.loc[names, "flag"].sum())
    assert t.loc[worst, "flag"].all()
    assert (t.loc[worst, "observed"] > t.loc[worst, "rep 97.5%"]).all()


def test_ppp_true_model_not_flagged(factor_fits: dict) -> None:
    good = factor_fits[2].ppc(draws=200, seed=1)
    t = good.table()
    assert 0.05 < good.ppp < 0.95 and not t.loc["chi-square", "flag"]
    assert t["flag"].mean() < 0.1  # no systematic misfit: at most a chance flag or two
    assert set(t["kind"]) == {"chi-square", "within", "between", "ICC"}
    # Same seed, same result.
    pd.testing.assert_frame_equal(factor_fits[2].ppc(draws=200, seed=1).table(), t)
    # The PPP is in the table's footer once the checks have been run.
    footer = str(factor_fits[2].table())
    assert f"PPP (chi-square): {round(t.loc['chi-square', 'ppp'], 3):g}" in footer
    fig = good.plot()
    assert len([a for a in fig.axes if a.get_visible()]) >= 1 + 6  # chi-square and six ICCs
    plt.close(fig)


# ------------------------------------------------------------------ fits: random slopes
@pytest.fixture(scope="module")
def slope_fits() -> dict[bool, ms.results.fit.MSEMFit]:
    df = ms.simulate(slope_spec(None, True), SLOPE_TRUTH, n_clusters=30, cluster_size=12, seed=2)
    return {r: slope_spec(df, r).fit(**FIT) for r in (False, True)}


@pytest.mark.slow
def test_slope_sd_flags_missing_random_slope(slope_fits: dict) -> None:
    name = "slope SD Y ~ X"
    fixed = slope_fits[False].ppc(draws=200, seed=1).table()
    assert fixed.loc[name, "ppp"] < 0.05 and fixed.loc[name, "flag"]
    random = slope_fits[True].ppc(draws=200, seed=1).table()
    assert 0.05 < random.loc[name, "ppp"] < 0.95 and not random.loc[name, "flag"]
    assert 0.05 < random.loc["chi-square", "ppp"] < 0.95


# ------------------------------------------------------------------ prior predictive
def _prior_model() -> ms.MSEM:
    values = {k: v for k, v in SLOPE_TRUTH.items() if k != "slope_sd_b"}
    df = ms.simulate(slope_spec(None, False), values, n_clusters=30, cluster_size=5, seed=1)
    m = slope_spec(df, False).derived("prod", "a_w * a_b")
    m.set_prior("a_w", ms.Prior("Normal", mu=0.5, sigma=0.1))
    m.set_prior("a_b", ms.Prior("Normal", mu=0.3, sigma=0.2))
    m.set_prior("lv_sd_w", ms.Prior("HalfNormal", sigma=1.0))
    return m.set_prior("lv_sd_b", ms.Prior("HalfNormal", sigma=0.5))


def test_prior_predictive_matches_hand_computation() -> None:
    m = _prior_model()
    pp = m.prior_predictive(draws=4000, seed=3)
    d = pp.draws
    # The product of independent normals: mean mu_a mu_b, variance by hand.
    sd = np.sqrt(0.1**2 * 0.2**2 + 0.5**2 * 0.2**2 + 0.3**2 * 0.1**2)
    assert d["prod"].mean() == pytest.approx(0.15, abs=4 * sd / np.sqrt(len(d)))
    assert d["prod"].std() == pytest.approx(sd, rel=0.06)
    # ICC and R-squared by direct Monte Carlo from the prior definitions.
    rng = np.random.default_rng(0)
    n = 200_000
    a_w, a_b = rng.normal(0.5, 0.1, n), rng.normal(0.3, 0.2, n)
    sx_w, sy_w = np.abs(rng.normal(0, 1.0, (2, n)))
    sx_b, sy_b = np.abs(rng.normal(0, 0.5, (2, n)))
    var_w, var_b = a_w**2 * sx_w**2 + sy_w**2, a_b**2 * sx_b**2 + sy_b**2
    hand = {"ICC Y": var_b / (var_b + var_w), "R2 within Y": a_w**2 * sx_w**2 / var_w}
    for name, x in hand.items():
        q = np.quantile(x, [0.1, 0.5, 0.9])
        np.testing.assert_allclose(np.quantile(d[name], [0.1, 0.5, 0.9]), q, atol=0.03, err_msg=name)
    assert pp.kinds["ICC Y"] == "ICC" and pp.kinds["prod"] == "derived"
    assert {"ICC X", "R2 between Y"} <= set(d.columns)
    s = pp.summary()
    assert s.loc["prod", "mean"] == pytest.approx(d["prod"].mean())
    # Same seed, same draws; a data set from a prior draw keeps the observed cluster sizes.
    pd.testing.assert_frame_equal(m.prior_predictive(draws=4000, seed=3).draws, d)
    data = pp.data_set(0, seed=1)
    assert data.groupby("cl").size().tolist() == [5] * 30
    fig = pp.plot()
    plt.close(fig)


def test_prior_predictive_slope_sd() -> None:
    """A random slope's prior SD is its HalfNormal prior's."""
    df = ms.simulate(slope_spec(None, True), SLOPE_TRUTH, n_clusters=20, cluster_size=5, seed=1)
    m = slope_spec(df, True).set_prior("slope_sd_b", ms.Prior("HalfNormal", sigma=0.7))
    d = m.prior_predictive(draws=2000, seed=1).draws
    assert d["slope SD s"].mean() == pytest.approx(0.7 * np.sqrt(2 / np.pi), rel=0.06)
