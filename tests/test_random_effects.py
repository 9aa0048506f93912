"""Random slopes as between-level latent variables: predictors of level-2 outcomes, covariances
with random intercepts that are themselves regressed, moderators with missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import pymsem as ms
from pymsem.compile.matrices import level_matrices, pytensor_ops
from pymsem.compile.random_effects import conditioned_random_slope_logp
from pymsem.priors import Prior
from tests.conftest import REFERENCE_MODE


def slope_spec(data: pd.DataFrame | None) -> ms.MSEM:
    """M ~ X with random slope RSa; RSa moderated by level-2 Z, predicting level-2 Q, covarying
    with M's random intercept (M's cluster mean, regressed on X's)."""
    m = ms.MSEM(data, cluster="schid", level2=["Z", "Q"])
    m.path("M", on="X", level="within", random=ms.RandomSlope("RSa", "a_w"))
    m.path("M", on="X", level="between", label="a_b")
    m.path("RSa", on="Z", level="between", label="za")
    m.path("Q", on=["RSa", "Z"], level="between", label=["q_rs", "q_z"])
    m.covariance("RSa", "M", level="between", label="r_int_slope")
    return m


VALUES = {
    "a_w": 0.3, "a_b": 0.5, "za": 0.2, "q_rs": 0.8, "q_z": 0.3, "r_int_slope": 0.4,
    "lv_sd_w": 1.0, "lv_sd_b": 0.6, "lv_cor_b": 0.2, "intercept_b": 1.0, "slope_sd_b": 0.4,
}  # fmt: skip


def test_structure_puts_slopes_in_the_between_model() -> None:
    from pymsem.simulate import spec_structure

    st = spec_structure(slope_spec(None))
    (rs,) = st.random_slopes
    lb = st.between
    assert st.slopes_in_between_model
    assert [(lb.latent[lat], st.groups["path_b"].labels[k]) for lat, k in rs.predicts] == [("Q", "q_rs")]
    assert [(lb.latent[lat], st.groups["lv_cor_b"].labels[k]) for lat, k in rs.disturbance_cors] == [
        ("M", "r_int_slope")
    ]
    assert [lb.latent[lat] for lat, _ in rs.moderators] == ["Z"]
    # Q is regressed on the slope: endogenous, so it gets no default covariance with Z or X.
    pairs = {frozenset((lb.latent[i], lb.latent[j])) for i, j, _ in lb.lv_cor}
    assert frozenset(("Q", "Z")) not in pairs and frozenset(("X", "Z")) in pairs


def test_cycle_through_a_slope_is_refused() -> None:
    m = slope_spec(None).path("Z", on="Q", level="between")
    from pymsem.simulate import spec_structure

    with pytest.raises(ms.MSEMSpecificationError, match="cycle"):
        from pymsem.compile.random_effects import augmented_depth

        augmented_depth(spec_structure(m))


def _dense_sigma(st, vals: dict[str, np.ndarray], T: np.ndarray) -> np.ndarray:
    """Sigma* of [eta_b; s] by hand: B* and Psi* filled entry by entry, (I - B*)^-1 by inversion."""
    Bm = level_matrices(st.between, vals)
    lb, rs = st.between, st.random_slopes
    mb, k = lb.n_lat, len(rs)
    B = np.zeros((mb + k, mb + k))
    B[:mb, :mb] = Bm.B
    Psi = np.zeros((mb + k, mb + k))
    Psi[:mb, :mb] = Bm.Psi
    Psi[mb:, mb:] = T
    for i, r in enumerate(rs):
        for lat, idx in r.moderators:
            B[mb + i, lat] = vals["path_b"][idx]
        for lat, idx in r.predicts:
            B[lat, mb + i] = vals["path_b"][idx]
        for lat, idx in r.disturbance_cors:
            Psi[lat, mb + i] = Psi[mb + i, lat] = vals["lv_cor_b"][idx] * np.sqrt(Bm.Psi[lat, lat] * T[i, i])
    A = np.linalg.inv(np.eye(mb + k) - B)
    return A @ Psi @ A.T


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
def test_conditioned_likelihood_equals_dense_normal(missing: bool) -> None:
    """Given the slopes, each cluster's data are normal: check against a dense density, cell by cell."""
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    from pymsem.compile import marginal as mg
    from pymsem.compile.missing import pattern_statistics

    sizes = np.array([1, 3, 2, 4, 3])
    G = len(sizes)
    df = ms.simulate(slope_spec(None), VALUES, n_clusters=G, cluster_size=sizes, seed=1)
    if missing:
        df.loc[[1, 4, 7], "M"] = np.nan
        df.loc[[2], "X"] = np.nan
        df.loc[df["schid"] == 3, "Z"] = np.nan  # a moderator missing in one cluster
        df.loc[df["schid"] == 5, "Q"] = np.nan
    model = slope_spec(df)
    st, data = model.structure(), model.clustered_data()
    rng = np.random.default_rng(2)
    vals = {n: 0.2 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    for n in ("lv_sd_w", "lv_sd_b", "slope_sd_b"):
        vals[n] = 0.6 + 0.1 * rng.random(len(st.groups[n]))
    z = rng.standard_normal((G, 1))
    with pm.Model(coords={"cluster": [str(c) for c in data.cluster_ids]}):
        syms = {n: pt.vector(n) for n in st.groups}
        W = level_matrices(st.within, syms, pytensor_ops())
        B = level_matrices(st.between, syms, pytensor_ops())
        if missing:
            ps = pattern_statistics(st, data)
            ll = conditioned_random_slope_logp(None, st, W, B, syms, Prior("LKJCorr", eta=2.0), ps)
        else:
            stats = mg.sufficient_statistics(st, data, per_cluster=True)
            ll = conditioned_random_slope_logp(stats, st, W, B, syms, Prior("LKJCorr", eta=2.0))
        raw = pm.modelcontext(None)["slope_raw"]
        f = pytensor.function([*syms.values(), raw], ll, on_unused_input="ignore", mode=REFERENCE_MODE)
    got = float(f(*[vals[n] for n in st.groups], z))

    Wm, Bm = level_matrices(st.within, vals), level_matrices(st.between, vals)
    T = np.array([[vals["slope_sd_b"][0] ** 2]])
    S = _dense_sigma(st, vals, T)
    mb = st.between.n_lat
    Css, Ces = S[mb:, mb:], S[:mb, mb:]
    s = z @ np.linalg.cholesky(Css).T
    K = Ces @ np.linalg.inv(Css)
    S_cond = S[:mb, :mb] - K @ Ces.T
    V = Bm.Lambda @ S_cond @ Bm.Lambda.T + Bm.Theta
    p1, ls = len(st.level1), st.within
    y = data.frame[st.level1].to_numpy()
    x2 = data.level2_values(st.level2)
    start = np.r_[0, np.cumsum(data.sizes)]
    dense = 0.0
    for g in range(G):
        mean_b = Bm.nu + Bm.Lambda @ K @ s[g]
        Bg = Wm.B.copy()
        Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += s[g, ls.beta_random[:, 2]]
        A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
        Sw = Wm.Lambda @ A @ Wm.Psi @ A.T @ Wm.Lambda.T + Wm.Theta
        n = data.sizes[g]
        # The cluster's cells: n level-1 vectors, then its level-2 values.
        cov = np.zeros((n * p1 + len(st.level2),) * 2)
        cov[: n * p1, : n * p1] = np.kron(np.eye(n), Sw) + np.kron(np.ones((n, n)), V[:p1, :p1])
        cov[: n * p1, n * p1 :] = np.kron(np.ones((n, 1)), V[:p1, p1:])
        cov[n * p1 :, : n * p1] = cov[: n * p1, n * p1 :].T
        cov[n * p1 :, n * p1 :] = V[p1:, p1:]
        mu = np.r_[np.tile(mean_b[:p1], n), mean_b[p1:]]
        x = np.r_[y[start[g] : start[g + 1]].ravel(), x2[g]]
        ok = ~np.isnan(x)
        dense += multivariate_normal(mu[ok], cov[np.ix_(ok, ok)]).logpdf(x[ok])
    assert got == pytest.approx(dense, rel=1e-9)


@pytest.mark.slow
def test_slopes_in_the_between_model_recovered() -> None:
    """Slope predicting a level-2 outcome, slope-intercept correlation, moderator with missing values."""
    truth = {**VALUES, "slope_sd_b": 0.45, "r_int_slope": 0.5}
    df = ms.simulate(slope_spec(None), truth, n_clusters=150, cluster_size=12, seed=21)
    rng = np.random.default_rng(3)
    lost = rng.choice(df["schid"].unique(), 30, replace=False)
    df.loc[df["schid"].isin(lost), "Z"] = np.nan  # MCAR: 20% of the clusters lack the moderator
    fit = slope_spec(df).fit(draws=500, tune=500, chains=2, seed=4, progress=False, warn=False)
    s = fit.summary()
    misses = []
    # The table reports the slope-intercept covariance (its correlation in the std column).
    cov = truth["r_int_slope"] * truth["lv_sd_b"] * truth["slope_sd_b"]
    for lab in ("q_rs", "q_z", "za", "a_w", "a_b", "r_int_slope"):
        row = s[s["label"] == lab].iloc[0]
        true = cov if lab == "r_int_slope" else truth[lab]
        ok = row["lower"] <= true <= row["upper"] and abs(row["median"] - true) <= 2 * row["sd"]
        if not ok:
            misses.append(
                f"{lab}: truth {true}, median {row['median']:.3f} [{row['lower']:.3f}, {row['upper']:.3f}]"
            )
    assert not misses, misses
    assert fit.diagnostics()["max_rhat"] < 1.05
    imp = fit.impute(m=2, seed=1)
    assert not imp["Z"].isna().any()


def test_implied_between_moments_include_the_slopes() -> None:
    """Q is regressed on the slope: its implied variance (standardized estimates, ICCs, var()) counts it."""
    from pymsem.compile.random_effects import implied_level_matrices
    from pymsem.simulate import parameter_vectors, spec_structure

    st = spec_structure(slope_spec(None))
    vec = parameter_vectors(st, VALUES)
    T = np.array([[VALUES["slope_sd_b"] ** 2]])
    M = implied_level_matrices(st, st.between, vec, T)
    plain = level_matrices(st.between, vec)
    _, cv = ms.simulate(
        slope_spec(None), VALUES, n_clusters=40000, cluster_size=1, seed=5, return_cluster_values=True
    )
    q = st.between.latent.index("Q")
    assert M.Sigma_eta[q, q] > plain.Sigma_eta[q, q]
    assert np.var(cv["Q"]) == pytest.approx(M.Sigma_eta[q, q], rel=0.03)


def test_invalid_slope_disturbance_correlations_have_zero_density() -> None:
    """Two correlated slopes both correlated with one disturbance: outside the positive definite
    region the log density is -inf, inside it is finite."""
    import pytensor

    m = ms.MSEM(None, cluster="schid", level2=["Z"])
    m.path(
        "M",
        on=["X", "W"],
        level="within",
        random=[ms.RandomSlope("RSa", "a_w"), ms.RandomSlope("RSb", "b_w")],
    )
    m.path("M", on=["X", "W"], level="between")
    m.covariance("RSa", "M", level="between", label="ra").covariance("RSb", "M", level="between", label="rb")
    m.covariance("RSa", "RSb", level="between")
    values = {"path_w": 0.3, "path_b": 0.3, "lv_sd_w": 1.0, "lv_sd_b": 0.6, "lv_cor_b": 0.0, "lv_cor_w": 0.0,
              "intercept_b": 0.0, "slope_sd_b": 0.4, "ra": 0.2, "rb": 0.2}  # fmt: skip
    df = ms.simulate(m, values, n_clusters=8, cluster_size=3, seed=2)
    df["Z"] = np.repeat(np.arange(8.0), 3)
    model = ms.MSEM(df, cluster="schid", level2=["Z"])
    model.table = m.table
    pm_model = model.build()
    (psd,) = pm_model.replace_rvs_by_values([pm_model["slope_disturbance_psd"]])
    inputs = [pm_model.rvs_to_values[rv] for rv in pm_model.free_RVs]
    f = pytensor.function(inputs, psd, on_unused_input="ignore", mode=REFERENCE_MODE)
    point = pm_model.initial_point()
    names = [v.name for v in inputs]
    g = model.structure().groups["lv_cor_b"]
    ia, ib = g.elements.index("RSa ~~ M"), g.elements.index("RSb ~~ M")
    chol = pm_model["slope_corr_chol"]
    L_name = pm_model.rvs_to_values[chol].name

    def at(ra: float, rb: float, rho: float) -> float:
        p = dict(point)
        lv = np.zeros(len(g))
        lv[ia], lv[ib] = ra, rb
        cor = pm_model["lv_cor_b"]
        p[pm_model.rvs_to_values[cor].name] = (
            pm_model.rvs_to_transforms[cor].forward(lv, *cor.owner.inputs).eval()
        )
        p[L_name] = (
            pm_model.rvs_to_transforms[chol].forward(np.array([[1, 0], [rho, np.sqrt(1 - rho**2)]])).eval()
        )
        return float(f(*[p[n] for n in names]))

    assert at(0.6, 0.6, 0.5) == 0.0  # positive definite
    assert at(0.9, -0.9, 0.9) == -np.inf  # each correlation valid, the matrix is not
