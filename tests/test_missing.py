"""Missing data: the likelihood of what was observed, exact; recovery under MAR; imputations.

* The collapsed likelihood with missing cells equals the dense multivariate normal density
  of each cluster's observed values (level-1 cells and level-2 values), for the formulation
  test cases (free residuals, residual correlations, observed variables only) and for random
  slopes (Woodbury and Cholesky forms); with complete data it equals the complete-data path.
* The default formulation samples the missing cells instead: its log-likelihood integrated over
  them (exactly: it is quadratic in them) is the same dense density, with and without slopes.
* MAR recovery (the chance that INT and REL indicators are missing depends on the observed
  ACH1): intervals cover Model 2's paths, while listwise deletion on the same data is biased.
* Imputations reproduce the mean of the values that were deleted, not of those observed.
* The collapsed and augmented formulations agree on data with missing cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pymsem as ms
from pymsem.compile import marginal as mg
from pymsem.compile.matrices import level_matrices, pytensor_ops
from pymsem.compile.missing import missing_logp, padded_inverse, pattern_statistics
from pymsem.specification.errors import MSEMDataError
from tests.conftest import MODEL2_TRUTH, REFERENCE_MODE, model2_spec
from tests.test_formulations import CASES, SIZES_TINY, _eval, _params
from tests.test_random_slopes import MODEL3_TRUTH, model3_spec


def _punch(df: pd.DataFrame, cols: list[str], share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in cols:
        out.loc[rng.random(len(out)) < share, c] = np.nan
    return out


def _dense_per_cluster(
    m: ms.MSEM, vec: dict[str, np.ndarray], slopes: np.ndarray | None = None
) -> np.ndarray:
    """Each cluster's dense normal log density of its observed values (students stacked, level-2 last)."""
    st, cd = m.structure(), m.clustered_data()
    W, B = level_matrices(st.within, vec), level_matrices(st.between, vec)
    p1 = len(st.level1)
    Y = cd.frame[st.level1].to_numpy(float)
    Z2 = (
        np.column_stack([cd.cluster_values(c) for c in st.level2])
        if st.level2
        else np.zeros((cd.n_clusters, 0))
    )
    out = np.zeros(cd.n_clusters)
    for g in range(cd.n_clusters):
        SW = W.Sigma
        if slopes is not None:
            ls = st.within
            Bg = W.B.copy()
            Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += slopes[g, ls.beta_random[:, 2]]
            A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
            SW = W.Lambda @ A @ W.Psi @ A.T @ W.Lambda.T + W.Theta
        y = Y[cd.cluster_index == g]
        n = len(y)
        x = np.concatenate([y.ravel(), Z2[g]])
        mean = np.concatenate([np.tile(B.nu[:p1], n), B.nu[p1:]])
        S11 = np.kron(np.eye(n), SW) + np.kron(np.ones((n, n)), B.Sigma[:p1, :p1])
        S12 = np.kron(np.ones((n, 1)), B.Sigma[:p1, p1:])
        cov = np.block([[S11, S12], [S12.T, B.Sigma[p1:, p1:]]])
        o = ~np.isnan(x)
        if o.any():
            out[g] = stats.multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(x[o])
    return out


def _dense_observed(m: ms.MSEM, vec: dict[str, np.ndarray], slopes: np.ndarray | None = None) -> float:
    """Sum over clusters of the dense normal density of the cluster's observed values."""
    return float(_dense_per_cluster(m, vec, slopes).sum())


def _tiny_case(name: str, share: float = 0.25) -> tuple[ms.MSEM, dict[str, np.ndarray]]:
    seed = list(CASES).index(name)
    spec, values, level2 = CASES[name]
    df = ms.simulate(spec(None, level2), values, len(SIZES_TINY), SIZES_TINY, seed=seed)
    cols = [c for c in df.columns if c not in ("schid", "id", *level2)]
    df = _punch(df, cols, share, seed)
    if level2:  # one level-2 column missing in two clusters
        df.loc[df.schid.isin(df.schid.unique()[[2, 5]]), level2[0]] = np.nan
    m = spec(df, level2)
    return m, _params(m, values)


def exact_case(name: str, missing: bool) -> tuple[ms.MSEM, dict[str, np.ndarray]]:
    """A tiny unbalanced case of ``CASES`` with its true parameter vectors, complete or with missing cells."""
    if missing:
        m, vec = _tiny_case(name)
        assert m.clustered_data().has_missing
        return m, vec
    spec, values, level2 = CASES[name]
    df = ms.simulate(spec(None, level2), values, len(SIZES_TINY), SIZES_TINY, seed=9)
    m = spec(df, level2)
    return m, _params(m, values)


@pytest.mark.parametrize("case", list(CASES))
def test_missing_likelihood_equals_dense_density_of_observed_values(case: str) -> None:
    m, vec = _tiny_case(case)
    assert m.clustered_data().has_missing
    model = m.compile("patterns").pymc_model
    assert _eval(model, model["loglik"], vec) == pytest.approx(_dense_observed(m, vec), rel=1e-9)


def _integrate_cells(model, fixed: dict[str, np.ndarray]) -> float:
    """``log \\int exp(loglik) d(missing cells)``, exact: the log-likelihood is quadratic in the cells.

    With ``f(x) = f0 + g'x - x'Ax/2`` the integral is ``f0 + g'A^-1 g/2 + d/2 log 2 pi - log|A|/2``;
    ``f0``, ``g`` and ``A`` come from the graph's value and gradient.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    cells = [n for n in ("y_missing", "level2_missing") if n in model.named_vars]
    flat = pt.vector("x")
    repl = {model[k]: pt.as_tensor(np.asarray(v, dtype=float)) for k, v in fixed.items()}
    start = 0
    for n in cells:
        k = int(np.prod(model.initial_point()[n].shape))
        repl[model[n]] = flat[start : start + k]
        start += k
    f = graph_replace(model["loglik"], repl, strict=True)
    fn = pytensor.function([flat], [f, pytensor.gradient.grad(f, flat)], mode=REFERENCE_MODE)
    f0, g0 = fn(np.zeros(start))
    # The gradient is affine in x: the Hessian's columns are its differences along unit vectors.
    A = np.column_stack([g0 - fn(e)[1] for e in np.eye(start)])
    A = (A + A.T) / 2
    sign, logdet = np.linalg.slogdet(A)
    assert sign > 0
    return float(f0 + 0.5 * g0 @ np.linalg.solve(A, g0) + 0.5 * start * np.log(2 * np.pi) - 0.5 * logdet)


def test_many_missing_cells_are_integrated_out_rather_than_stored(monkeypatch) -> None:
    m, vec = _tiny_case("small")
    n_cells = mg.missing_cell_count(m.structure(), m.clustered_data())
    monkeypatch.setattr(mg, "MAX_SAMPLED_CELLS", n_cells - 1)
    compiled = m.compile()
    assert compiled.formulation.name == "marginal" and not compiled.formulation.samples_missing
    assert "y_missing" not in compiled.pymc_model.named_vars
    model = compiled.pymc_model
    assert _eval(model, model["loglik"], vec) == pytest.approx(_dense_observed(m, vec), rel=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_sampled_cells_integrate_to_the_observed_data_likelihood(case: str) -> None:
    """The default marginal formulation samples the missing cells: integrated over them, its
    log-likelihood is the dense normal density of the observed values."""
    m, vec = _tiny_case(case)
    model = m.compile().pymc_model
    assert "y_missing" in model.named_vars
    assert _integrate_cells(model, vec) == pytest.approx(_dense_observed(m, vec), rel=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_pattern_likelihood_on_complete_data_equals_complete_data_path(case: str) -> None:
    import pytensor

    spec, values, level2 = CASES[case]
    df = ms.simulate(spec(None, level2), values, len(SIZES_TINY), SIZES_TINY, seed=9)
    m = spec(df, level2)
    st, cd = m.structure(), m.clustered_data()
    vec = _params(m, values)
    W, B = level_matrices(st.within, vec, pytensor_ops()), level_matrices(st.between, vec, pytensor_ops())
    ps = pattern_statistics(st, cd)
    assert len(ps.patterns) == 1 and ps.n_pairs == cd.n_clusters
    Rinv, ld = padded_inverse(W.Sigma[None], ps.patterns)
    ll, _ = missing_logp(ps, Rinv, ld, B.Sigma, B.nu, list(range(len(st.level2))), per_pattern=True)
    complete = mg.marginal_logp(mg.sufficient_statistics(st, cd), W.Sigma, B.Sigma, B.nu)
    f = pytensor.function([], [ll.sum(), complete], mode=REFERENCE_MODE)
    got, want = f()
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("woodbury", [True, False])
def test_random_slope_missing_likelihood_equals_dense(woodbury: bool) -> None:
    """Given the slopes, each cluster's observed values are normal: both within forms are exact."""
    import pytensor
    import pytensor.tensor as pt

    sizes = np.array([1, 2, 3, 5, 4, 2, 6])
    df = ms.simulate(model3_spec(None, indicators=3), MODEL3_TRUTH, 7, sizes, seed=3)
    df = _punch(df, [c for c in df.columns if c[:3] in ("ACH", "INT", "REL")], 0.3, 4)
    m = model3_spec(df, indicators=3)
    st, cd = m.structure(), m.clustered_data()
    rng = np.random.default_rng(1)
    vals = {n: 0.7 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    u = 0.3 * rng.standard_normal((cd.n_clusters, 2))
    syms = {n: pt.vector(n) for n in st.groups}
    us = pt.matrix("u")
    W = level_matrices(st.within, syms, pytensor_ops())
    B = level_matrices(st.between, syms, pytensor_ops())
    ps = pattern_statistics(st, cd)
    if woodbury:
        Rinv, ld = mg.within_inverses(st, W, ps, u=us)
    else:
        Wg = mg._cluster_within_cov(st, W, us, cd.n_clusters)
        Rinv, ld = padded_inverse(Wg[ps.pair_cluster], ps.pair_mask)
    ll, _ = missing_logp(ps, Rinv, ld, B.Sigma, B.nu, [])
    f = pytensor.function([*syms.values(), us], ll.sum(), on_unused_input="ignore", mode=REFERENCE_MODE)
    got = f(*[vals[n] for n in st.groups], u)
    assert got == pytest.approx(_dense_observed(m, vals, slopes=u), rel=1e-9)


def test_sampled_cells_with_random_slopes_integrate_to_the_observed_data_likelihood() -> None:
    """Given the slopes, the sampled cells integrate out to the observed values' dense density."""
    sizes = np.array([1, 2, 3, 5, 4, 2, 6])
    df = ms.simulate(model3_spec(None, indicators=3), MODEL3_TRUTH, 7, sizes, seed=3)
    df = _punch(df, [c for c in df.columns if c[:3] in ("ACH", "INT", "REL")], 0.3, 4)
    m = model3_spec(df, indicators=3)
    st, cd = m.structure(), m.clustered_data()
    model = m.compile(slopes="centered").pymc_model  # the clusters' slopes are then free variables
    rng = np.random.default_rng(1)
    vals = {n: 0.7 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    mean = vals["path_w"][[r.mean_index for r in st.random_slopes]]
    u = 0.3 * rng.standard_normal((cd.n_clusters, len(st.random_slopes)))
    fixed = {**vals, "slope": mean[None, :] + u}
    assert _integrate_cells(model, fixed) == pytest.approx(_dense_observed(m, vals, slopes=u), rel=1e-9)


# ------------------------------------------------------------------------ data handling
def test_missing_report_counts() -> None:
    df = ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=10, cluster_size=5, seed=2)
    df.loc[[0, 1, 7], "ACH1"] = np.nan
    df.loc[[1, 30], "INT2"] = np.nan
    rep = model2_spec(df).missing()
    assert rep.by_column.loc["ACH1", "n_missing"] == 3
    assert rep.by_column.loc["INT2", "n_missing"] == 2
    assert rep.by_column.loc["ACH1", "clusters_affected"] == 2  # rows 0, 1 in cluster 1; row 7 in 2
    assert rep.n_missing_cells == 5 and rep.n_incomplete_rows == 4
    assert rep.n_patterns == 4  # complete, ACH1, ACH1+INT2, INT2
    assert "5 of 600 level-1 cells missing" in rep.line()
    assert "none dropped" in rep.line()


def test_missing_cluster_id_is_refused_with_the_rows_or_excluded_on_request() -> None:
    df = ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=10, cluster_size=5, seed=2)
    df["schid"] = df["schid"].astype(float)
    df.loc[[3, 17], "schid"] = np.nan
    with pytest.raises(
        MSEMDataError, match=r"2 missing value\(s\) \(rows with index \[3, 17\]\).*drop_missing_cluster"
    ):
        model2_spec(df).clustered_data()
    m = ms.MSEM(df, cluster="schid", drop_missing_cluster=True)
    for f in ("ACH", "INT", "REL"):
        m.latent(f, [f"{f}{i}" for i in range(1, 5)])
    cd = m.clustered_data()
    assert cd.n_obs == 48 and cd.excluded_rows == (3, 17)
    assert "2 row(s) without a cluster id excluded" in m.missing().line()


def test_all_missing_column_is_refused() -> None:
    df = ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=10, cluster_size=5, seed=2)
    df["ACH4"] = np.nan
    with pytest.raises(MSEMDataError, match="'ACH4' has no observed value"):
        model2_spec(df).clustered_data()


def test_level2_column_with_missing_clusters_is_still_level2() -> None:
    spec, values, level2 = CASES["small"]
    df = ms.simulate(spec(None, level2), values, 12, 4, seed=1)
    df.loc[df.schid == df.schid.iloc[0], "W"] = np.nan
    df.loc[df.index[5], "W"] = np.nan  # one row of a cluster whose other rows have W
    m = spec(df, level2)
    assert "W" in m.clustered_data().level2
    assert m.missing().by_column.loc["W", "n_missing"] == 1  # one cluster without any W


# ------------------------------------------------------------------------ recovery (MAR)
@pytest.fixture(scope="module")
def mar() -> dict[str, object]:
    """Model 2, 100 x 20; INT and REL indicators missing with a chance rising with observed ACH1."""
    full = ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=100, cluster_size=20, seed=14)
    rng = np.random.default_rng(7)
    df = full.copy()
    z = (df.ACH1 - df.ACH1.mean()) / df.ACH1.std()
    p = 1 / (1 + np.exp(-(-1.2 + 1.5 * z)))
    for c in [f"{f}{i}" for f in ("INT", "REL") for i in range(1, 5)]:
        df.loc[rng.random(len(df)) < p, c] = np.nan
    kw = dict(draws=500, tune=500, chains=2, progress=False, warn=False)
    fit = model2_spec(df).fit(seed=2, **kw)
    listwise = model2_spec(df.dropna()).fit(seed=2, **kw)
    return {"full": full, "data": df, "fit": fit, "listwise": listwise}


@pytest.mark.slow
def test_mar_share_of_missing_cells(mar) -> None:
    cells = mar["data"][[c for c in mar["data"].columns if c[:3] in ("ACH", "INT", "REL")]]
    assert 0.17 < cells.isna().to_numpy().mean() < 0.23


@pytest.mark.slow
def test_mar_intervals_cover_the_paths_and_listwise_deletion_is_biased(mar) -> None:
    s, lw = mar["fit"].summary(), mar["listwise"].summary()
    for label in ("a_w", "b_w", "c_w", "a_b", "b_b", "c_b"):
        row = s[s.label == label].iloc[0]
        assert row.lower < MODEL2_TRUTH[label] < row.upper, label
    # Deleting incomplete rows selects students on ACH (the outcome): b_w is attenuated far
    # outside its interval, which the model-based analysis of the same data recovers.
    row = lw[lw.label == "b_w"].iloc[0]
    assert row.upper < MODEL2_TRUTH["b_w"]
    full_row = s[s.label == "b_w"].iloc[0]
    assert abs(full_row["median"] - MODEL2_TRUTH["b_w"]) < abs(row["median"] - MODEL2_TRUTH["b_w"]) / 2


@pytest.mark.slow
def test_mar_fit_reports_missing_data(mar) -> None:
    fit = mar["fit"]
    assert "modeled (MAR), none dropped" in fit.meta()["Missing data"]
    assert "Missing data:" in str(fit.table())
    assert "missing data:" in repr(fit)


@pytest.mark.slow
def test_imputations_reproduce_the_deleted_values(mar) -> None:
    full, df, fit = mar["full"], mar["data"], mar["fit"]
    imp = fit.impute(m=20, seed=5)
    assert list(imp.imputation.unique()) == list(range(1, 21))
    assert len(imp) == 20 * len(df)
    one = imp[imp.imputation == 1].drop(columns="imputation")
    pd.testing.assert_index_equal(one.index, df.index)
    obs = df.notna()
    assert (one[obs] == df[obs]).sum().sum() == obs.sum().sum()  # observed cells untouched
    assert not one.isna().any().any()
    for c in ("INT1", "REL2"):
        miss = df[c].isna().to_numpy()
        vals = np.stack([imp[imp.imputation == k][c].to_numpy()[miss] for k in range(1, 21)])
        true = full[c].to_numpy()[miss]
        se = true.std() / np.sqrt(miss.sum())
        # MAR: the deleted values are higher than the observed ones (missingness rises with ACH) ...
        assert true.mean() - full[c].to_numpy()[~miss].mean() > 5 * se
        # ... and the imputations recover their mean, their spread, and their link to the truth.
        assert abs(vals.mean() - true.mean()) < 4 * se
        assert 0.85 < vals.std() / true.std() < 1.15
        assert np.corrcoef(vals.mean(0), true)[0, 1] > 0.5
        # Between and within variance of the completed column match the complete data's.
        comp = imp[imp.imputation == 3]
        cm = comp.groupby("schid")[c].transform("mean")
        fm = full.groupby("schid")[c].transform("mean")
        assert (comp[c] - cm).var() == pytest.approx((full[c] - fm).var(), rel=0.12)
        assert cm.var() == pytest.approx(fm.var(), rel=0.25)
    again = fit.impute(m=20, seed=5)
    pd.testing.assert_frame_equal(imp, again)


# ------------------------------------------------------------------------ formulations agree
@pytest.mark.slow
def test_augmented_and_marginal_agree_with_missing_cells() -> None:
    spec, values, level2 = CASES["small"]
    df = ms.simulate(spec(None, level2), values, 60, 8, seed=21)
    df = _punch(df, [c for c in df.columns if c[0] in "xy"], 0.2, 22)
    df.loc[df.schid.isin(df.schid.unique()[:4]), "W"] = np.nan
    kw = dict(draws=500, tune=500, chains=2, seed=3, progress=False, warn=False)
    marg = spec(df, level2).fit(formulation="marginal", **kw)
    aug = spec(df, level2).fit(formulation="augmented", **kw)
    assert "y_missing" in aug.posterior and "level2_missing" in aug.posterior
    for var in ("path_w", "path_b", "loading_w", "loading_b", "lv_sd_w", "resid_sd_w"):
        a = marg.posterior[var].values.reshape(-1, marg.posterior[var].shape[-1])
        b = aug.posterior[var].values.reshape(-1, aug.posterior[var].shape[-1])
        if var == "path_b":
            # On 60 clusters with missing cells the between path's posterior has a long tail (the
            # between factor's variance near 0: draws reach +-5), so 1000 draws pin its median
            # only loosely; the central halves of the two posteriors must overlap.
            qa, qb = np.quantile(a, [0.25, 0.75], 0), np.quantile(b, [0.25, 0.75], 0)
            assert np.all((qa[0] < qb[1]) & (qb[0] < qa[1])), var
            continue
        sd = a.std(0)
        assert np.all(np.abs(np.median(a, 0) - np.median(b, 0)) < 0.35 * sd + 0.02), var
    imp = aug.impute(m=3)
    assert not imp[[c for c in df.columns if c[0] in "xyW"]].isna().any().any()


def test_moderated_missing_likelihood_equals_dense_conditional_normal() -> None:
    """Cross-level moderators with missing level-1 cells: given the moderators and slope residuals,
    each cluster's observed values are normal (the dense check of test_moderation, on observed cells)."""
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt
    from scipy.stats import multivariate_normal

    from tests.test_moderation import VALUES, tiny_spec

    sizes = np.array([2, 3, 4, 5, 1])
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=sizes, seed=1)
    df = _punch(df, ["X", "M", "Y", "W"], 0.3, 6)
    model = tiny_spec(df)
    st, data = model.structure(), model.clustered_data()
    ps = pattern_statistics(st, data)
    rng = np.random.default_rng(2)
    vals = {n: 0.2 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    for n in ("lv_sd_w", "lv_sd_b", "slope_sd_b"):
        vals[n] = 0.5 + 0.1 * rng.random(len(st.groups[n]))
    u = 0.3 * rng.standard_normal((5, 2))
    with pm.Model(coords={"cluster": [str(c) for c in data.cluster_ids]}):
        syms = {n: pt.vector(n) for n in st.groups}
        W = level_matrices(st.within, syms, pytensor_ops())
        B = level_matrices(st.between, syms, pytensor_ops())
        uu = pt.matrix("u")
        ll = mg.moderated_random_slope_logp(None, st, W, B, uu, syms, ps)
        raw = pm.modelcontext(None)["moderator_raw"]
        f = pytensor.function([*syms.values(), uu, raw], ll, on_unused_input="ignore", mode=REFERENCE_MODE)
    raw_val = rng.standard_normal((5, 1))
    got = f(*[vals[n] for n in st.groups], u, raw_val)

    Wm, Bm = level_matrices(st.within, vals), level_matrices(st.between, vals)
    lb, ls = st.between, st.within
    iw, iz = lb.latent.index("W"), lb.latent.index("Z")
    p1 = len(st.level1)
    zcol = p1 + st.level2.index("Z")
    S = Bm.Sigma_eta
    zvals = data.cluster_values("Z") - Bm.nu[zcol]
    dense = multivariate_normal(0, S[iz, iz]).logpdf(zvals).sum()
    k = S[iw, iz] / S[iz, iz]
    eta_w = k * zvals + np.sqrt(S[iw, iw] - k * S[iz, iw]) * raw_val[:, 0]
    y = data.frame[st.level1].to_numpy()
    start = np.r_[0, np.cumsum(data.sizes)]
    o = [iw, iz]
    C, Soo_inv = S[:, o], np.linalg.inv(S[np.ix_(o, o)])
    coef = {e: vals["path_b"][i] for i, e in enumerate(st.groups["path_b"].elements)}
    for g in range(5):
        eo = np.array([eta_w[g], zvals[g]])
        dev = u[g] + np.array(
            [coef["RSa <- W"] * eta_w[g] + coef["RSa <- Z"] * zvals[g], coef["RSb <- W"] * eta_w[g]]
        )
        Bg = Wm.B.copy()
        Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += dev[ls.beta_random[:, 2]]
        A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
        Sw = Wm.Lambda @ A @ Wm.Psi @ A.T @ Wm.Lambda.T + Wm.Theta
        mean_b = Bm.nu + Bm.Lambda @ C @ Soo_inv @ eo
        Sb = Bm.Sigma - Bm.Lambda @ C @ Soo_inv @ C.T @ Bm.Lambda.T
        n = data.sizes[g]
        cov = np.kron(np.eye(n), Sw) + np.kron(np.ones((n, n)), Sb[:p1, :p1])
        x = y[start[g] : start[g + 1]].ravel()
        ok = ~np.isnan(x)
        if ok.any():
            dense += multivariate_normal(np.tile(mean_b[:p1], n)[ok], cov[np.ix_(ok, ok)]).logpdf(x[ok])
    assert np.isnan(y).any()
    assert got == pytest.approx(dense, rel=1e-8)
