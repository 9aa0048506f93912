"""The likelihood formulations: exactness against dense computations, and agreement with each other.

* ``marginal``: the collapsed log-likelihood equals the dense multivariate
  normal density of every cluster's stacked data (unbalanced clusters, a
  level-2 covariate, residual correlations, a level-2 factor).
* ``augmented``: with the latent innovations at given values, the model's
  log density equals the centered complete-data density of the latents and
  the data plus the log-Jacobian of the non-centered transform, computed here
  with dense NumPy/SciPy linear algebra.
* Both formulations give the same posterior on a small simulated data set.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from scipy import stats

import pymsem as ms
from pymsem.compile.augmented import AugmentedLikelihood, augmented_layout
from pymsem.compile.matrices import level_matrices
from pymsem.simulate import parameter_vectors, spec_structure

# ----------------------------------------------------------------------------- specifications

SMALL_VALUES = {
    "loading_w": 0.8,
    "loading_b": 0.9,
    "a_w": 0.4,
    "a_b": 0.5,
    "c_b": 0.3,
    "lv_sd_w": 1.0,
    "lv_sd_b": 0.6,
    "resid_sd_w": 0.7,
    "resid_sd_b": 0.25,
    "intercept_b": 0.1,
    "lv_cor_b": 0.2,
}

RICH_VALUES = {
    "loading_w": 0.8,
    "loading_b": 0.9,
    "path_w": 0.3,
    "path_b": 0.25,
    "lv_sd_w": 0.9,
    "lv_sd_b": 0.6,
    "lv_cor_w": 0.2,
    "lv_cor_b": 0.15,
    "resid_sd_w": 0.7,
    "resid_sd_b": 0.3,
    "resid_cor_w": 0.3,
    "resid_cor_b": -0.25,
    "intercept_b": 0.2,
}


def small_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """Two factors with three indicators at both levels, one path per level, a level-2 covariate W."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2", "x3"])
    m.latent("Y", ["y1", "y2", "y3"])
    m.path("Y", on="X", level="within", label="a_w")
    m.path("Y", on=["X", "W"], level="between", label=["a_b", "c_b"])
    return m


def rich_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """Every kind of coordinate the augmented formulation distinguishes.

    Within: factors X, Y (sampled), observed V (known single-indicator
    latent), U (loads on nothing), residual correlation x2 ~~ x3.  Between:
    factors X, Y and the latent cluster mean of U (sampled), W (known
    level-2 single-indicator latent), a between-only factor S with level-2
    indicators (observed residuals), V with only a between residual, and the
    residual correlation x2 ~~ x3 among sampled between residuals.
    """
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2", "x3"])
    m.latent("Y", ["y1", "y2", "y3"])
    m.latent("S", ["s1", "s2", "s3"], levels=("between",))
    m.path("Y", on=["X", "V"], level="within")
    m.path("Y", on=["X", "W", "U"], level="between")
    m.covariance("x2", "x3", level="within")
    m.covariance("x2", "x3", level="between")
    return m


SIZES_TINY = np.array([1, 2, 3, 5, 1, 4, 2, 5, 3, 6, 1, 2])


@pytest.fixture(scope="module")
def small_tiny() -> ms.MSEM:
    df = ms.simulate(small_spec(None, ("W",)), SMALL_VALUES, len(SIZES_TINY), SIZES_TINY, seed=3)
    return small_spec(df)


@pytest.fixture(scope="module")
def rich_tiny() -> ms.MSEM:
    l2 = ("W", "s1", "s2", "s3")
    df = ms.simulate(rich_spec(None, l2), RICH_VALUES, len(SIZES_TINY), SIZES_TINY, seed=4)
    return rich_spec(df)


# ----------------------------------------------------------------------------- helpers


def _eval(model: Any, out: Any, values: dict[str, np.ndarray]) -> float:
    """Evaluate ``out`` with the model variables named in ``values`` replaced by constants."""
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    repl = {model[k]: pt.as_tensor(np.asarray(v, dtype=float)) for k, v in values.items()}
    return float(graph_replace(out, repl, strict=True).eval())


def _params(m: ms.MSEM, values: dict[str, float]) -> dict[str, np.ndarray]:
    return parameter_vectors(m.structure(), values)


def _dense_loglik(m: ms.MSEM, vec: dict[str, np.ndarray]) -> float:
    """Sum over clusters of the dense MVN density of (y_1g, ..., y_ng, level-2 values)."""
    st, cd = m.structure(), m.clustered_data()
    W = level_matrices(st.within, vec)
    B = level_matrices(st.between, vec)
    p1 = len(st.level1)
    SW, SB, nu = W.Sigma, B.Sigma, B.nu
    Y = cd.frame[st.level1].to_numpy(float)
    Z2 = (
        np.column_stack([cd.cluster_values(c) for c in st.level2])
        if st.level2
        else np.zeros((cd.n_clusters, 0))
    )
    total = 0.0
    for g in range(cd.n_clusters):
        y = Y[cd.cluster_index == g]
        n = len(y)
        x = np.concatenate([y.ravel(), Z2[g]])
        mean = np.concatenate([np.tile(nu[:p1], n), nu[p1:]])
        S11 = np.kron(np.eye(n), SW) + np.kron(np.ones((n, n)), SB[:p1, :p1])
        S12 = np.kron(np.ones((n, 1)), SB[:p1, p1:])
        cov = np.block([[S11, S12], [S12.T, SB[p1:, p1:]]])
        total += stats.multivariate_normal(mean, cov).logpdf(x)
    return total


def _mvn(x: np.ndarray, cov: np.ndarray) -> float:
    """Sum of zero-mean MVN log densities of the rows of ``x``."""
    if x.shape[1] == 0:
        return 0.0
    return float(stats.multivariate_normal(np.zeros(len(cov)), cov).logpdf(x).sum())


def _conditional(S: np.ndarray, o: list[int], u: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Regression matrix and Cholesky factor of the conditional covariance of ``u`` given ``o``."""
    if not o:
        return np.zeros((len(u), 0)), np.linalg.cholesky(S[np.ix_(u, u)])
    K = S[np.ix_(u, o)] @ np.linalg.inv(S[np.ix_(o, o)])
    C = S[np.ix_(u, u)] - K @ S[np.ix_(o, u)]
    return K, np.linalg.cholesky(C)


def _complete_data_density(
    m: ms.MSEM, model: Any, vec: dict[str, np.ndarray], raw: dict[str, np.ndarray]
) -> float:
    """Centered complete-data log density plus the log-Jacobian of ``raw -> latents``, densely."""
    st, cd = m.structure(), m.clustered_data()
    Wm = level_matrices(st.within, vec)
    Bm = level_matrices(st.between, vec)
    wi, be = st.within, st.between
    p1, G = len(st.level1), cd.n_clusters
    Y = cd.frame[st.level1].to_numpy(float)
    Z2 = np.column_stack([cd.cluster_values(c) for c in st.level2])
    z_of = {c: Z2[:, j] for j, c in enumerate(st.level2)}
    nu = Bm.nu
    logj = 0.0

    # between latents: the level-2 single-indicator ones are data, the rest follow from eta_b_raw
    lat_b = list(model.coords["latent_b"])
    o = [be.latent.index(v) for v in be.latent if v in st.level2]
    u = [be.latent.index(v) for v in lat_b]
    assert sorted(o + u) == list(range(be.n_lat))
    eta_b = np.zeros((G, be.n_lat))
    eta_b[:, o] = np.column_stack([z_of[be.latent[j]] - nu[be.observed.index(be.latent[j])] for j in o])
    K, L = _conditional(Bm.Sigma_eta, o, u)
    eta_b[:, u] = eta_b[:, o] @ K.T + raw["eta_b_raw"] @ L.T
    logj += G * np.log(np.diag(L)).sum()
    centered = _mvn(eta_b, Bm.Sigma_eta)

    # between residuals: sampled for level-1 variables, data for level-2 indicators
    lam = eta_b @ Bm.Lambda.T
    r1 = [be.observed.index(v) for v in model.coords["resid_b"]]
    r2 = [be.observed.index(v) for v in st.level2 if v not in be.single_indicator]
    assert not set(r1) & set(range(p1, be.n_obs))
    T = Bm.Theta
    assert np.allclose(T[np.ix_(r1, r2)], 0.0)  # the two residual blocks are independent here
    Lt = np.linalg.cholesky(T[np.ix_(r1, r1)])
    eps = raw["eps_b_raw"] @ Lt.T
    logj += G * np.log(np.diag(Lt)).sum()
    centered += _mvn(eps, T[np.ix_(r1, r1)])
    eps_obs = np.column_stack([z_of[be.observed[i]] for i in r2]) - nu[r2] - lam[:, r2]
    centered += _mvn(eps_obs, T[np.ix_(r2, r2)])
    mu = nu[:p1] + lam[:, :p1]
    mu[:, r1] += eps

    # within: single-indicator latents are y - mu, factors follow from eta_w_raw
    dev = Y - mu[cd.cluster_index]
    ow = [wi.latent.index(v) for v in wi.single_indicator]
    uw = [wi.latent.index(v) for v in model.coords["latent_w"]]
    assert sorted(ow + uw) == list(range(wi.n_lat))
    eta_w = np.zeros((len(Y), wi.n_lat))
    eta_w[:, ow] = dev[:, [wi.observed.index(wi.latent[j]) for j in ow]]
    K, L = _conditional(Wm.Sigma_eta, ow, uw)
    eta_w[:, uw] = eta_w[:, ow] @ K.T + raw["eta_w_raw"] @ L.T
    logj += len(Y) * np.log(np.diag(L)).sum()
    centered += _mvn(eta_w, Wm.Sigma_eta)
    rw = [i for i, v in enumerate(wi.observed) if v not in wi.single_indicator]
    resid = (dev - eta_w @ Wm.Lambda.T)[:, rw]
    centered += _mvn(resid, Wm.Theta[np.ix_(rw, rw)])
    return centered + logj


def _nudge_intercepts(compiled: Any) -> None:
    """Move the intercept starting values off the exact data means.

    Started exactly at the mean of a level-2 column whose between covariances
    and paths start at 0, the gradient of its intercept is exactly 0, and
    nutpie rejects an initial gradient with a zero component ("bad initial
    gradient").  This works around that in the tests only.
    """
    iv = compiled.initial_values
    if "intercept_b" in iv:
        iv["intercept_b"] = np.asarray(iv["intercept_b"], float) + 0.01


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("which", ["small", "rich"])
def test_marginal_matches_dense(which: str, small_tiny: ms.MSEM, rich_tiny: ms.MSEM) -> None:
    m, values = (small_tiny, SMALL_VALUES) if which == "small" else (rich_tiny, RICH_VALUES)
    assert len(set(m.clustered_data().sizes.tolist())) > 3  # unbalanced
    vec = _params(m, values)
    model = m.compile("marginal").pymc_model
    got = _eval(model, model["loglik"], vec)
    want = _dense_loglik(m, vec)
    assert np.isfinite(want)
    assert got == pytest.approx(want, rel=1e-6)


def test_augmented_matches_complete_data_density(rich_tiny: ms.MSEM) -> None:
    m = rich_tiny
    lay = augmented_layout(m.structure())
    # every branch of the formulation is exercised by this model
    assert len(lay.b_known) and len(lay.b_unknown) and len(lay.b_resid_sampled) and len(lay.b_resid_observed)
    assert len(lay.w_known) and len(lay.w_unknown)
    assert not lay.b_resid_diagonal and not lay.w_resid_diagonal
    vec = _params(m, RICH_VALUES)
    model = m.compile("augmented").pymc_model
    rng = np.random.default_rng(7)
    raw = {
        name: rng.standard_normal([len(model.coords[d]) for d in model.named_vars_to_dims[name]])
        for name in ("eta_b_raw", "eps_b_raw", "eta_w_raw")
    }
    got = _eval(model, model["loglik"], {**vec, **raw})
    got += sum(stats.norm.logpdf(v).sum() for v in raw.values())
    want = _complete_data_density(m, model, vec, raw)
    assert got == pytest.approx(want, rel=1e-8)


def test_augmented_diagonal_and_no_known_latents(small_tiny: ms.MSEM) -> None:
    """Without within single-indicator latents or residual correlations, by hand."""
    m = small_tiny
    lay = augmented_layout(m.structure())
    assert not len(lay.w_known) and lay.w_resid_diagonal and lay.b_resid_diagonal
    # W unrelated to the between factors, so that with every innovation at 0 every
    # latent and residual is 0: mu_g = nu and y_ig ~ N(nu, resid_sd_w^2) independently
    vec = _params(m, {**SMALL_VALUES, "lv_cor_b": 0.0, "c_b": 0.0})
    model = m.compile("augmented").pymc_model
    st, cd = m.structure(), m.clustered_data()
    Wm, Bm = level_matrices(st.within, vec), level_matrices(st.between, vec)
    raw = {
        name: np.zeros([len(model.coords[d]) for d in model.named_vars_to_dims[name]])
        for name in ("eta_b_raw", "eps_b_raw", "eta_w_raw")
    }
    got = _eval(model, model["loglik"], {**vec, **raw})
    p1 = len(st.level1)
    Y = cd.frame[st.level1].to_numpy(float)
    want = stats.norm(Bm.nu[:p1], np.sqrt(np.diag(Wm.Theta))).logpdf(Y).sum()
    iw = st.between.latent.index("W")
    want += stats.norm(0.0, np.sqrt(Bm.Sigma_eta[iw, iw])).logpdf(cd.cluster_values("W") - Bm.nu[-1]).sum()
    assert got == pytest.approx(want, rel=1e-10)


def test_supports() -> None:
    st = spec_structure(small_spec(None, ("W",)))
    assert AugmentedLikelihood().supports(st) is None
    spec = ms.MSEM(None, cluster="schid", level2=("s1", "s2", "s3"))
    spec.latent("X", ["x1", "x2", "x3"])
    spec.latent("S", ["s1", "s2", "s3"], levels=("between",), between_residuals=0)
    why = AugmentedLikelihood().supports(spec_structure(spec))
    assert why is not None and "s1" in why


# ----------------------------------------------------------------------------- posterior agreement


@pytest.fixture(scope="module")
def posteriors() -> dict[str, Any]:
    from pymsem.sample import sample_compiled

    sizes = np.tile([3, 6, 9], 10)  # 30 clusters, 180 students
    df = ms.simulate(small_spec(None, ("W",)), SMALL_VALUES, len(sizes), sizes, seed=11)
    m = small_spec(df)
    out = {}
    for form in ("marginal", "augmented"):
        t0 = time.perf_counter()
        compiled = m.compile(form)
        build = time.perf_counter() - t0
        _nudge_intercepts(compiled)
        run = sample_compiled(compiled, draws=1000, tune=1000, chains=2, seed=1, progress=False)
        out[form] = run
        print(
            f"{form}: build {build:.1f}s, nutpie compile {run.compile_seconds:.1f}s, "
            f"sampling {run.sampling_seconds:.1f}s"
        )
    return out


def test_augmented_has_latent_innovations(posteriors: dict[str, Any]) -> None:
    post = posteriors["augmented"].idata["posterior"]
    assert post["eta_b_raw"].dims[-2:] == ("cluster", "latent_b")
    assert list(post["eta_b_raw"]["latent_b"].values) == ["X", "Y"]
    assert post["eta_w_raw"].shape[-2:] == (180, 2)
    assert "eta_b_raw" not in posteriors["marginal"].idata["posterior"]


@pytest.mark.parametrize("var", ["path_w", "path_b", "loading_w", "loading_b", "lv_sd_b", "resid_sd_w"])
def test_augmented_and_marginal_posteriors_agree(posteriors: dict[str, Any], var: str) -> None:
    import arviz_stats as azs

    med, se = {}, {}
    for form, run in posteriors.items():
        post = run.idata["posterior"]
        med[form] = post[var].median(("chain", "draw")).values
        se[form] = azs.mcse(run.idata, var_names=[var], method="median")[var].values
    diff = np.abs(med["marginal"] - med["augmented"])
    tol = 4 * np.sqrt(se["marginal"] ** 2 + se["augmented"] ** 2) + 0.02
    assert (diff < tol).all(), (var, med, se)
