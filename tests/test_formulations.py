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

import itertools
import time
from typing import Any

import numpy as np
import pytest
from scipy import stats

import pymsem as ms
from pymsem.compile.augmented import AugmentedLikelihood, augmented_layout
from pymsem.compile.matrices import level_matrices
from pymsem.simulate import parameter_vectors, spec_structure
from tests.conftest import REFERENCE_MODE

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


OBSERVED_VALUES = {
    "path_w": 0.3,
    "path_b": 0.4,
    "lv_sd_w": 1.0,
    "lv_sd_b": 0.5,
    "intercept_b": 0.2,
    "lv_cor_b": 0.2,
}


def observed_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """Observed variables only (Model 1 with a level-2 covariate): no factor, no residual at either level."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.path("M", on="X", level="within")
    m.path("Y", on=["M", "X"], level="within")
    m.path("M", on="X", level="between")
    m.path("Y", on=["M", "X", "W"], level="between")
    return m


#: name -> (specification, parameter values, level-2 columns)
CASES = {
    "small": (small_spec, SMALL_VALUES, ("W",)),
    "rich": (rich_spec, RICH_VALUES, ("W", "s1", "s2", "s3")),
    "observed": (observed_spec, OBSERVED_VALUES, ("W",)),
}

SIZES_TINY = np.array([1, 2, 3, 5, 1, 4, 2, 5, 3, 6, 1, 2])


@pytest.fixture(scope="module")
def tiny() -> dict[str, ms.MSEM]:
    """Each case on 12 unbalanced clusters (sizes 1 to 6) of simulated data."""
    out = {}
    for seed, (name, (spec, values, level2)) in enumerate(CASES.items()):
        df = ms.simulate(spec(None, level2), values, len(SIZES_TINY), SIZES_TINY, seed=seed)
        out[name] = spec(df)
    return out


@pytest.fixture(scope="module")
def small_tiny(tiny: dict[str, ms.MSEM]) -> ms.MSEM:
    return tiny["small"]


# ----------------------------------------------------------------------------- helpers


def _eval(model: Any, out: Any, values: dict[str, np.ndarray]) -> float:
    """Evaluate ``out`` with the model variables named in ``values`` replaced by constants."""
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    repl = {model[k]: pt.as_tensor(np.asarray(v, dtype=float)) for k, v in values.items()}
    return float(graph_replace(out, repl, strict=True).eval(mode=REFERENCE_MODE))


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
    if not u:
        return np.zeros((0, len(o))), np.zeros((0, 0))
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
    z_of = {c: cd.cluster_values(c) for c in st.level2}
    nu = Bm.nu
    logj = 0.0

    def coord(name: str) -> list[str]:
        return list(model.coords.get(name, ()))

    def innovations(name: str, n: int, k: int) -> np.ndarray:
        return raw[name] if k else np.zeros((n, 0))

    # between latents: the level-2 single-indicator ones are data, the rest follow from eta_b_raw
    o = [be.latent.index(v) for v in be.latent if v in st.level2]
    u = [be.latent.index(v) for v in coord("latent_b")]
    assert sorted(o + u) == list(range(be.n_lat))
    eta_b = np.zeros((G, be.n_lat))
    for j in o:
        eta_b[:, j] = z_of[be.latent[j]] - nu[be.observed.index(be.latent[j])]
    K, L = _conditional(Bm.Sigma_eta, o, u)
    eta_b[:, u] = eta_b[:, o] @ K.T + innovations("eta_b_raw", G, len(u)) @ L.T
    logj += G * np.log(np.diag(L)).sum()
    centered = _mvn(eta_b, Bm.Sigma_eta)

    # between residuals: sampled for level-1 variables, data for level-2 indicators
    lam = eta_b @ Bm.Lambda.T
    r1 = [be.observed.index(v) for v in coord("resid_b")]
    r2 = [be.observed.index(v) for v in st.level2 if v not in be.single_indicator]
    assert not set(r1) & set(range(p1, be.n_obs))
    T = Bm.Theta
    assert np.allclose(T[np.ix_(r1, r2)], 0.0)  # the two residual blocks are independent here
    _, Lt = _conditional(T, [], r1)
    eps = innovations("eps_b_raw", G, len(r1)) @ Lt.T
    logj += G * np.log(np.diag(Lt)).sum()
    centered += _mvn(eps, T[np.ix_(r1, r1)])
    eps_obs = np.zeros((G, len(r2)))
    for k, i in enumerate(r2):
        eps_obs[:, k] = z_of[be.observed[i]] - nu[i] - lam[:, i]
    centered += _mvn(eps_obs, T[np.ix_(r2, r2)])
    mu = nu[:p1] + lam[:, :p1]
    mu[:, r1] += eps

    # within: single-indicator latents are y - mu, factors follow from eta_w_raw
    dev = Y - mu[cd.cluster_index]
    ow = [wi.latent.index(v) for v in wi.single_indicator]
    uw = [wi.latent.index(v) for v in coord("latent_w")]
    assert sorted(ow + uw) == list(range(wi.n_lat))
    eta_w = np.zeros((len(Y), wi.n_lat))
    eta_w[:, ow] = dev[:, [wi.observed.index(wi.latent[j]) for j in ow]]
    K, L = _conditional(Wm.Sigma_eta, ow, uw)
    eta_w[:, uw] = eta_w[:, ow] @ K.T + innovations("eta_w_raw", len(Y), len(uw)) @ L.T
    logj += len(Y) * np.log(np.diag(L)).sum()
    centered += _mvn(eta_w, Wm.Sigma_eta)
    rw = [i for i, v in enumerate(wi.observed) if v not in wi.single_indicator]
    resid = (dev - eta_w @ Wm.Lambda.T)[:, rw]
    centered += _mvn(resid, Wm.Theta[np.ix_(rw, rw)])
    return centered + logj


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("case", list(CASES))
def test_marginal_matches_dense(case: str, tiny: dict[str, ms.MSEM]) -> None:
    m = tiny[case]
    assert len(set(m.clustered_data().sizes.tolist())) > 3  # unbalanced
    vec = _params(m, CASES[case][1])
    model = m.compile("marginal").pymc_model
    got = _eval(model, model["loglik"], vec)
    want = _dense_loglik(m, vec)
    assert np.isfinite(want)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_augmented_matches_complete_data_density(case: str, tiny: dict[str, ms.MSEM]) -> None:
    m = tiny[case]
    lay = augmented_layout(m.structure())
    if case == "rich":  # every branch of the formulation
        assert len(lay.b_known) and len(lay.b_unknown) and len(lay.b_resid_sampled)
        assert len(lay.b_resid_observed) and len(lay.w_known) and len(lay.w_unknown)
        assert not lay.b_resid_diagonal and not lay.w_resid_diagonal
    if case == "observed":  # nothing to sample but the latent cluster means
        assert not len(lay.b_resid_sampled) and not len(lay.w_unknown) and not len(lay.w_resid)
    vec = _params(m, CASES[case][1])
    model = m.compile("augmented").pymc_model
    rng = np.random.default_rng(7)
    raw = {
        name: rng.standard_normal([len(model.coords[d]) for d in model.named_vars_to_dims[name]])
        for name in ("eta_b_raw", "eps_b_raw", "eta_w_raw")
        if name in model.named_vars
    }
    # Groups are set directly (the variables they are built from, such as the grand means'
    # whitened coordinates or an LKJ factor, are then unused).
    assert set(raw) == {
        v.name for v in model.free_RVs if not v.name.startswith(tuple(f"{g}_" for g in vec))
    } - set(vec)
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
        # tune is kept short: low-rank mass-matrix adaptation costs O(dims) per warm-up step
        run = sample_compiled(compiled, draws=1000, tune=400, chains=2, seed=1, progress=False)
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


# ----------------------------------------------------------------------------- random slopes

SLOPE_VALUES = {
    **{k: v for k, v in RICH_VALUES.items() if not k.startswith("resid_cor")},
    "slope_sd_b": 0.3,
}


def slope_spec(data: Any, level2: tuple[str, ...] = ("W",), moderated: bool = True) -> ms.MSEM:
    """Random slopes on a factor (RSa) and on an observed predictor V (RSb), X ~~ V within.

    With ``moderated``, RSa is regressed on the level-2 column W: the slopes are then
    known given the parameters, ``slope_raw`` and the data, as both formulations need
    for the exact comparison below.
    """
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2", "x3"])
    m.latent("Y", ["y1", "y2", "y3"])
    m.path(
        "Y",
        on=["X", "V"],
        level="within",
        random=[ms.RandomSlope("RSa", "a_w"), ms.RandomSlope("RSb", "v_w")],
    )
    m.covariance("X", "V", level="within")
    m.path("Y", on=["X", "W"], level="between")
    if moderated:
        m.path("RSa", on="W", level="between", label="mod")
    m.covariance("RSa", "RSb", level="between")
    return m


def _integrated_augmented(model: Any, fixed: dict[str, np.ndarray]) -> float:
    """``log int exp(loglik) N(z; 0, I) dz`` over the augmented model's latent innovations ``z``.

    Given the parameters and the slopes, every latent is linear in ``z`` and the data are
    Gaussian given the latents, so the integrand is exactly Gaussian in ``z``: one Newton
    step finds its mode and the Laplace formula is exact.
    """
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    names = [n for n in ("eta_b_raw", "eps_b_raw", "eta_w_raw") if n in model.named_vars]
    shapes = [tuple(len(model.coords[d]) for d in model.named_vars_to_dims[n]) for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    z = pt.vector("z")
    ends = np.cumsum([0, *sizes])
    parts = [z[a:b] for a, b in itertools.pairwise(ends)]
    repl = {model[k]: pt.as_tensor(np.asarray(v, dtype=float)) for k, v in fixed.items()}
    repl |= {model[n]: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
    f = graph_replace(model["loglik"], repl, strict=True) - 0.5 * pt.sum(pt.square(z))
    g = pt.grad(f, z)
    fn = pytensor.function([z], [f, g], mode=REFERENCE_MODE)
    z0 = np.zeros(sum(sizes))
    _, g0 = fn(z0)
    # The gradient is linear in z, so unit differences give the Hessian exactly (up to rounding).
    H = np.column_stack([fn(e)[1] - g0 for e in np.eye(len(z0))])
    H = 0.5 * (H + H.T)
    zhat = z0 - np.linalg.solve(H, g0)
    fhat, ghat = fn(zhat)
    assert np.abs(ghat).max() < 1e-6
    # f omits N(z)'s constant -d/2 log(2 pi), which cancels against the Gaussian integral's.
    return float(fhat - 0.5 * np.linalg.slogdet(-H)[1])


@pytest.mark.parametrize("moderated", [True, False])
def test_augmented_with_random_slopes_integrates_to_marginal(moderated: bool) -> None:
    """Augmented with random slopes, its latents integrated out, equals the collapsed likelihood.

    Covers a slope on a factor and one on an observed (known) within predictor correlated with
    the factor, correlated slopes, a level-2 moderator, and unbalanced clusters of 1 to 6.
    """
    values = SLOPE_VALUES | ({"mod": 0.2} if moderated else {})
    df = ms.simulate(slope_spec(None, moderated=moderated), values, len(SIZES_TINY), SIZES_TINY, seed=3)
    m = slope_spec(df, moderated=moderated)
    vec = _params(m, values)
    rng = np.random.default_rng(5)
    slopes = {
        "slope_raw": rng.standard_normal((len(SIZES_TINY), 2)),
        "slope_corr_chol": np.array([[1.0, 0.0], [0.3, np.sqrt(1 - 0.09)]]),
    }
    marg = m.compile("marginal").pymc_model
    want = _eval(marg, marg["loglik"], {**vec, **slopes})
    aug = m.compile("augmented").pymc_model
    got = _integrated_augmented(aug, {**vec, **slopes})
    assert np.isfinite(want)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-8)


# ----------------------------------------------------------------------------- grand means


@pytest.mark.parametrize("formulation", ["marginal", "augmented"])
def test_whitened_grand_means_have_the_same_posterior_density(
    formulation: str, tiny: dict[str, ms.MSEM]
) -> None:
    """``nu = center + R z`` is linear: at matching points the two log posteriors are equal."""
    from pymsem.compile.build import build_pymc_model

    spec, _, level2 = CASES["rich"]
    m = spec(tiny["rich"].data, level2)
    m.set_prior("intercept_b[x1]", ms.Prior("StudentT", nu=4, mu=0, sigma=3))  # two prior families
    args = (m.structure(), m.clustered_data(), m.prior_overrides, formulation)
    white = build_pymc_model(*args, whiten=True).pymc_model
    plain = build_pymc_model(*args, whiten=False).pymc_model
    assert "intercept_b_white" in white.named_vars and "intercept_b_white" not in plain.named_vars
    center = white["white_intercept_b"].get_value()[:, 0]
    root = white["white_intercept_b"].get_value()[:, 1:]
    assert np.allclose(np.tril(root), root) and np.all(np.diag(root) > 0)
    f_white, f_plain = white.compile_logp(mode=REFERENCE_MODE), plain.compile_logp(mode=REFERENCE_MODE)
    rng = np.random.default_rng(3)
    base = plain.initial_point()
    for _ in range(3):
        point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in base.items()}
        # The plain model samples the grand means in two parts, one per prior family.
        elements = list(plain.coords["intercept_b_param"])
        nu = np.zeros(len(elements))
        for part in ("intercept_b_normal", "intercept_b_studentt"):
            nu[[elements.index(e) for e in plain.coords[f"{part}_dim"]]] = point[part]
        wpoint = {k: v for k, v in point.items() if not k.startswith("intercept_b")}
        wpoint["intercept_b_white"] = np.linalg.solve(root, nu - center)
        assert float(f_white(wpoint)) == pytest.approx(float(f_plain(point)), rel=1e-10, abs=1e-8)
