"""Cross-level moderation (tutorial Model 4): exact likelihood, conditional indirect effects, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import pymsem as ms
from pymsem.compile import marginal as mg
from pymsem.compile.matrices import level_matrices, pytensor_ops
from tests.conftest import REFERENCE_MODE


def tiny_spec(data: pd.DataFrame | None) -> ms.MSEM:
    """Observed X, M, Y; random slope of M on X moderated by the latent school mean of W and by level-2 Z."""
    m = ms.MSEM(data, cluster="schid", level2=["Z"])
    m.path("M", on=["X", "W"], level="within", random=[ms.RandomSlope("RSa", "a_w"), None])
    m.path("Y", on=["M", "X"], level="within", random=[ms.RandomSlope("RSb", "b_w"), None])
    m.path("M", on=["X", "W"], level="between")
    m.path("Y", on=["M", "X", "Z"], level="between")
    m.path("RSa", on=["W", "Z"], level="between", label=["wa", "za"])
    m.path("RSb", on="W", level="between", label="wb")
    return m


VALUES = {
    "path_w": 0.3, "path_b": 0.4, "wa": 0.3, "za": -0.2, "wb": 0.1, "lv_sd_w": 1.0, "lv_sd_b": 0.6,
    "lv_cor_w": 0.2, "lv_cor_b": 0.1, "intercept_b": 1.0, "slope_sd_b": 0.4, "slope_cor": 0.2,
}  # fmt: skip


def test_moderated_likelihood_equals_dense_conditional_normal() -> None:
    """Given the moderators and the slope residuals, the data are normal: check against a dense density."""
    import pytensor
    import pytensor.tensor as pt

    sizes = np.array([1, 3, 2, 4])
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=4, cluster_size=sizes, seed=1)
    model = tiny_spec(df)
    st, data = model.structure(), model.clustered_data()
    assert [r.name for r in st.random_slopes] == ["RSa", "RSb"]
    stats = mg.sufficient_statistics(st, data, per_cluster=True)
    rng = np.random.default_rng(2)
    vals = {n: 0.2 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    for n in ("lv_sd_w", "lv_sd_b", "slope_sd_b"):
        vals[n] = 0.5 + 0.1 * rng.random(len(st.groups[n]))
    u = 0.3 * rng.standard_normal((4, 2))
    import pymc as pm

    with pm.Model(coords={"cluster": [str(c) for c in data.cluster_ids]}):
        syms = {n: pt.vector(n) for n in st.groups}
        W = level_matrices(st.within, syms, pytensor_ops())
        B = level_matrices(st.between, syms, pytensor_ops())
        uu = pt.matrix("u")
        ll = mg.moderated_random_slope_logp(stats, st, W, B, uu, syms)
        raw = pm.modelcontext(None)["moderator_raw"]
        f = pytensor.function([*syms.values(), uu, raw], ll, on_unused_input="ignore", mode=REFERENCE_MODE)
    raw_val = rng.standard_normal((4, 1))
    got = f(*[vals[n] for n in st.groups], u, raw_val)

    # Dense: draw-free computation of the same quantity.
    Wm, Bm = level_matrices(st.within, vals), level_matrices(st.between, vals)
    lb = st.between
    iw, iz = lb.latent.index("W"), lb.latent.index("Z")
    p1, pb = len(st.level1), lb.n_obs
    zcol = p1 + st.level2.index("Z")
    S = Bm.Sigma_eta
    zvals = data.cluster_values("Z") - Bm.nu[zcol]
    dense = multivariate_normal(0, S[iz, iz]).logpdf(zvals).sum()
    # W's latent mean given Z, non-centered with the raw draw
    k = S[iw, iz] / S[iz, iz]
    eta_w = k * zvals + np.sqrt(S[iw, iw] - k * S[iz, iw]) * raw_val[:, 0]
    y = data.frame[st.level1].to_numpy()
    start = np.r_[0, np.cumsum(data.sizes)]
    o = [iw, iz]
    C = S[:, o]
    Soo_inv = np.linalg.inv(S[np.ix_(o, o)])
    rest = [i for i in range(pb) if i != zcol]
    ls = st.within
    g_ = st.groups["path_b"]
    coef = {e: vals["path_b"][i] for i, e in enumerate(g_.elements)}
    for g in range(4):
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
        # level-1 block of the between vector (Z is known and conditioned on)
        idx1 = list(range(p1))
        cov = np.kron(np.eye(n), Sw) + np.kron(np.ones((n, n)), Sb[np.ix_(idx1, idx1)])
        dense += multivariate_normal(np.tile(mean_b[idx1], n), cov).logpdf(y[start[g] : start[g + 1]].ravel())
        assert rest == idx1
    assert got == pytest.approx(dense, rel=1e-8)


def _covariate_slope_spec(data: pd.DataFrame | None) -> ms.MSEM:
    """Tutorial Model 4 plus a random slope of the covariate SES (moderated by level-2 Z) and a second covariate."""
    m = ms.MSEM(data, cluster="schid", level2=["Z"])
    for f in ("ACH", "INT", "REL"):
        m.latent(f, [f"{f}{i}" for i in range(1, 4)])
    m.path("INT", on=["REL", "SES", "X2"], level="within", random=[ms.RandomSlope("RSa", "a_w"), None, None])
    m.path("ACH", on=["INT", "REL", "SES"], level="within",
           random=[ms.RandomSlope("RSb", "b_w"), None, ms.RandomSlope("RSc", "c_w")])  # fmt: skip
    m.covariance("REL", "SES", level="within")
    m.path("INT", on=["REL", "SES", "X2"], level="between")
    m.path("ACH", on=["INT", "REL", "SES", "Z"], level="between")
    m.path("RSa", on=["SES", "Z"], level="between")
    m.path("RSb", on="X2", level="between")
    m.path("RSc", on="Z", level="between")
    return m


def _level2_moderator_spec(data: pd.DataFrame | None) -> ms.MSEM:
    """Random slopes on factors only, one regressed on a level-2 column: no covariate without error."""
    m = ms.MSEM(data, cluster="schid", level2=["Z"])
    for f in ("ACH", "INT", "REL"):
        m.latent(f, [f"{f}{i}" for i in range(1, 4)])
    m.path("INT", on="REL", level="within", random=ms.RandomSlope("RSa", "a_w"))
    m.path("ACH", on=["INT", "REL"], level="within", random=[ms.RandomSlope("RSb", "b_w"), None])
    m.path("INT", on="REL", level="between")
    m.path("ACH", on=["INT", "REL", "Z"], level="between")
    m.path("RSa", on="Z", level="between")
    return m


def _unbalanced_school(sizes: list[int]) -> pd.DataFrame:
    df = ms.datasets.load_school()
    ids = df["schid"].unique()[: len(sizes)]
    rows = [np.flatnonzero(df["schid"].to_numpy() == c)[:n] for c, n in zip(ids, sizes, strict=True)]
    sub = df.iloc[np.concatenate(rows)].copy()
    rng = np.random.default_rng(3)
    sub["X2"] = rng.standard_normal(len(sub))
    sub["Z"] = sub["schid"].map(dict(zip(ids, rng.standard_normal(len(ids)), strict=True)))
    return sub


@pytest.mark.parametrize("spec", ["model4", "covariate_slope", "level2_moderator"])
def test_moderated_woodbury_equals_the_dense_moderated_likelihood(spec: str) -> None:
    """Covariates without error (SES): the Woodbury form given their within parts is exact, gradients too.

    ``level2_moderator``: the only moderator a level-2 column, no covariate to condition on (this
    raised in the graph's construction before).
    """
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    from pymsem.compile.slope_woodbury import moderated_woodbury_plan

    df = _unbalanced_school([1, 2, 5, 3, 7, 4])
    specs = {"model4": ms.tutorial.model4, "covariate_slope": _covariate_slope_spec}
    model = (specs | {"level2_moderator": _level2_moderator_spec})[spec](df)
    st, data = model.structure(), model.clustered_data()
    mods = sorted({lat for r in st.random_slopes for lat, _ in r.moderators})
    known = [lat for lat in mods if st.between.latent[lat] in st.level2]
    plan = moderated_woodbury_plan(st, known, [lat for lat in mods if lat not in known])
    exact = {"model4": ["SES"], "covariate_slope": ["SES", "X2"], "level2_moderator": []}
    assert plan is not None and [st.level1[i] for i in plan.exact] == exact[spec]
    stats = mg.sufficient_statistics(st, data, per_cluster=True)
    rng = np.random.default_rng(2)
    vals = {n: 0.2 + 0.1 * rng.standard_normal(len(g)) for n, g in st.groups.items()}
    for n in vals:
        if "sd" in n:
            vals[n] = 0.5 + 0.3 * rng.random(len(st.groups[n]))
    G, k = data.n_clusters, len(st.random_slopes)
    u = 0.3 * rng.standard_normal((G, k))
    results = []
    for woodbury in (True, False):
        with pm.Model(coords={"cluster": [str(c) for c in data.cluster_ids]}):
            syms = {n: pt.vector(n) for n in st.groups}
            W = level_matrices(st.within, syms, pytensor_ops())
            B = level_matrices(st.between, syms, pytensor_ops())
            uu = pt.matrix("u")
            ll = mg.moderated_random_slope_logp(stats, st, W, B, uu, syms, woodbury=woodbury)
            raw = pm.modelcontext(None).named_vars.get("moderator_raw")
            ins = [*syms.values(), uu, *([raw] if raw is not None else [])]
            grads = pt.grad(ll, ins, disconnected_inputs="ignore")
            f = pytensor.function(ins, [ll, *grads], on_unused_input="ignore", mode=REFERENCE_MODE)
        raw_val = np.random.default_rng(5).standard_normal((G, len(mods) - len(known)))
        results.append(f(*[vals[n] for n in st.groups], u, *([raw_val] if raw is not None else [])))
    fast, dense = results
    assert fast[0] == pytest.approx(dense[0], rel=1e-10)
    for a, b in zip(fast[1:], dense[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_moderator_must_be_between_level() -> None:
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    m = tiny_spec(df).path("RSb", on="X", level="within")
    with pytest.raises(ms.MSEMSpecificationError, match="regress it at level='between'"):
        m.structure()


def test_random_slope_predicts_between_not_within() -> None:
    """A slope is a between-level variable: it may predict a between outcome, not a within one."""
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    st = tiny_spec(df).path("Y", on="RSa", level="between", label="y_rs").structure()
    rsa = next(r for r in st.random_slopes if r.name == "RSa")
    assert [(st.between.latent[lat], st.groups["path_b"].labels[k]) for lat, k in rsa.predicts] == [
        ("Y", "y_rs")
    ]
    with pytest.raises(ms.MSEMSpecificationError, match="use it as a predictor at level='between'"):
        tiny_spec(df).path("Y", on="RSa", level="within").structure()


def test_covariance_between_levels_mixed() -> None:
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    m = tiny_spec(df).covariance("RSa", "X", level="within")
    with pytest.raises(
        ms.MSEMSpecificationError, match=r"their covariances are specified at level=.between."
    ):
        m.structure()


@pytest.fixture(scope="module")
def fixed_fit():
    """An MSEMFit over hand-set draws (2 chains x 3 draws) for hand computations, no sampling."""
    from types import SimpleNamespace

    import xarray as xr

    from pymsem.results.fit import MSEMFit

    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    model = tiny_spec(df)
    st = model.structure()
    rng = np.random.default_rng(7)
    post = {}
    for name, g in st.groups.items():
        vals = 0.5 + 0.2 * rng.random((2, 3, len(g)))
        post[name] = (("chain", "draw", f"{name}_param"), vals)
    L = np.zeros((2, 3, 2, 2))
    r = np.array([[0.1, -0.2, 0.3], [0.0, 0.25, -0.1]])
    L[..., 0, 0], L[..., 1, 0], L[..., 1, 1] = 1.0, r, np.sqrt(1 - r**2)
    post["slope_corr_chol"] = (("chain", "draw", "i", "j"), L)
    ds = xr.Dataset(post)
    tree = xr.DataTree.from_dict({"posterior": ds})
    compiled = SimpleNamespace(structure=st, data=model.clustered_data())
    run = SimpleNamespace(idata=tree)
    return MSEMFit(model, compiled, run), r


def test_conditional_indirect_matches_hand_computation(fixed_fit) -> None:
    fit, r = fixed_fit
    st = fit.structure
    P = fit.parameter_draws()
    pw, pb = st.groups["path_w"], st.groups["path_b"]
    a0 = P["path_w"][..., pw.elements.index("M <- X")]
    b0 = P["path_w"][..., pw.elements.index("Y <- M")]
    a1 = P["path_b"][..., pb.elements.index("RSa <- W")]
    b1 = P["path_b"][..., pb.elements.index("RSb <- W")]
    sd = P["slope_sd_b"]
    cov = r * sd[..., 0] * sd[..., 1]
    w_sd = P["lv_sd_b"][..., st.groups["lv_sd_b"].elements.index("W")]  # W is exogenous between
    out = fit.conditional_indirect(
        "a_w", "b_w", "W", at=["+1sd", "mean", "-1sd", 2.0], labels=["p1", "m", "m1", "two"]
    )
    np.testing.assert_allclose(out.sel(at="p1").values, (a0 + a1 * w_sd) * (b0 + b1 * w_sd) + cov)
    np.testing.assert_allclose(out.sel(at="m").values, a0 * b0 + cov)
    np.testing.assert_allclose(out.sel(at="m1").values, (a0 - a1 * w_sd) * (b0 - b1 * w_sd) + cov)
    w2 = 2.0 - P["intercept_b"][..., st.groups["intercept_b"].elements.index("W")]  # numbers: own scale
    np.testing.assert_allclose(out.sel(at="two").values, (a0 + a1 * w2) * (b0 + b1 * w2) + cov)


def test_conditional_indirect_in_derived_expressions(fixed_fit) -> None:
    fit, _ = fixed_fit
    fit.model.derived("mome_p1", "conditional_indirect(a_w, b_w, W, sd(W, between))")
    try:
        q = {x.label: x.draws for x in fit.derived_quantities()}
        np.testing.assert_allclose(
            q["mome_p1"], fit.conditional_indirect("a_w", "b_w", "W", at=["+1sd"]).values[..., 0]
        )
    finally:
        fit.model.drop_derived("mome_p1")


def test_index_of_moderated_mediation(fixed_fit) -> None:
    fit, _ = fixed_fit
    P, st = fit.parameter_draws(), fit.structure
    # Z moderates only the a path: index = a1 * b0
    a1 = P["path_b"][..., st.groups["path_b"].elements.index("RSa <- Z")]
    b0 = P["path_w"][..., st.groups["path_w"].elements.index("Y <- M")]
    np.testing.assert_allclose(fit.index_of_moderated_mediation("a_w", "b_w", "Z"), a1 * b0)
    with pytest.raises(ms.MSEMSpecificationError, match="quadratic"):
        fit.index_of_moderated_mediation("a_w", "b_w", "W")


@pytest.mark.parametrize(
    ("moderator", "at", "message"),
    [
        ("W", ["high"], "neither a number nor one of|use numbers"),
        ("W", [True], "neither a number"),
        ("RSa", ["+1sd"], "must be a between-level variable"),
        ("nothing", ["+1sd"], "not a variable of the model"),
    ],
)
def test_conditional_indirect_bad_input(fixed_fit, moderator, at, message) -> None:
    fit, _ = fixed_fit
    with pytest.raises(ms.MSEMSpecificationError, match=message):
        fit.conditional_indirect("a_w", "b_w", moderator, at=at)


def test_plot_conditional_indirect_returns_axes(fixed_fit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    fit, _ = fixed_fit
    ax = fit.plot_conditional_indirect("a_w", "b_w", "W", points=41)
    line = ax.get_lines()[0]
    assert len(line.get_xdata()) == 41
    mid = fit.conditional_indirect("a_w", "b_w", "W", at=["mean"]).values
    assert line.get_ydata()[20] == pytest.approx(np.median(mid))


# ------------------------------------------------------------ Johnson-Neyman regions
def _jn_truth(ma: float, sa: float, mb: float, sb: float, z: float) -> np.ndarray:
    """Where ``|ma + mb w| = z sqrt(sa^2 + sb^2 w^2)``: the JN boundaries of ``A + B w``, A, B normal."""
    return np.sort(np.roots([mb**2 - z**2 * sb**2, 2 * ma * mb, ma**2 - z**2 * sa**2]).real)


def test_johnson_neyman_boundaries_match_the_closed_form() -> None:
    from scipy.stats import norm

    from pymsem.effects.conditional import johnson_neyman_regions

    rng = np.random.default_rng(3)
    ma, sa, mb, sb = 0.3, 0.1, 0.4, 0.1
    A, B = rng.normal(ma, sa, 400_000), rng.normal(mb, sb, 400_000)
    w = np.linspace(-3, 3, 121)
    lo, hi = np.quantile(A[None] + B[None] * w[:, None], [0.025, 0.975], axis=1)
    regions, bounds = johnson_neyman_regions(w, lo, hi)
    left, right = _jn_truth(ma, sa, mb, sb, norm.ppf(0.975))  # -1.728 and -0.245
    np.testing.assert_allclose(bounds["value"], [left, right], atol=0.01)
    assert list(bounds["bound"]) == ["upper", "lower"]
    assert list(bounds["excludes_zero_above"]) == [False, True]
    # Negative below the left boundary (from the grid's start), positive above the right one.
    assert list(regions["sign"]) == ["negative", "positive"]
    np.testing.assert_allclose(regions[["start", "end"]].to_numpy(), [[-3, left], [right, 3]], atol=0.01)
    assert list(regions["open_start"]) == [True, False] and list(regions["open_end"]) == [False, True]
    # No region where the interval always includes 0; one region over the whole grid when it never does.
    none, _ = johnson_neyman_regions(w, -np.ones_like(w), np.ones_like(w))
    assert none.empty
    full, nob = johnson_neyman_regions(w, np.ones_like(w), 2 * np.ones_like(w))
    assert full[["start", "end"]].to_numpy().tolist() == [[-3.0, 3.0]] and nob.empty


def test_johnson_neyman_interpolates_a_crossing_between_grid_points() -> None:
    from pymsem.effects.conditional import johnson_neyman_regions

    x = np.array([0.0, 1.0, 2.0])
    regions, bounds = johnson_neyman_regions(x, np.array([-0.5, 0.5, 1.5]), np.array([2.0, 3.0, 4.0]))
    assert bounds["value"].tolist() == [0.5]  # the lower bound is -0.5 + w: 0 at w = 0.5
    assert regions[["start", "end"]].to_numpy().tolist() == [[0.5, 2.0]]
    with pytest.raises(ValueError, match="increasing"):
        johnson_neyman_regions(x[::-1], x, x)


def test_fit_johnson_neyman_is_the_effect_at_fixed_moderator_values(fixed_fit) -> None:
    fit, _ = fixed_fit
    jn = fit.johnson_neyman("a_w", "b_w", "W", ci_prob=0.9, points=11)
    st = fit.structure
    w_sd = fit.parameter_draws()["lv_sd_b"][..., st.groups["lv_sd_b"].elements.index("W")]
    center = np.median(fit.draws("intercept_b[W]"))
    assert jn.scale == pytest.approx(np.median(w_sd)) and jn.center == pytest.approx(center)
    # Each grid point is the conditional indirect effect at that fixed (centered) value of W.
    from pymsem.effects.conditional import conditional_indirect

    w = jn.curve["value"].to_numpy() - center
    np.testing.assert_allclose(w, jn.curve["sd"] * jn.scale)
    draws = np.stack([conditional_indirect(fit, "a_w", "b_w", "W", x).ravel() for x in w])
    lo, med, hi = np.quantile(draws, [0.05, 0.5, 0.95], axis=1)
    np.testing.assert_allclose(jn.curve[["lower", "median", "upper"]].to_numpy(), np.c_[lo, med, hi])
    # The path alone: a0 + a1 w.
    P = fit.parameter_draws()
    a0 = P["path_w"][..., st.groups["path_w"].elements.index("M <- X")].ravel()
    a1 = P["path_b"][..., st.groups["path_b"].elements.index("RSa <- W")].ravel()
    single = fit.johnson_neyman("a_w", None, "W", points=11)
    w = (single.curve["value"].to_numpy() - center)[:, None]
    np.testing.assert_allclose(single.curve["median"], np.median(a0 + a1 * w, axis=1))
    with pytest.raises(ms.MSEMSpecificationError, match="between-level variable"):
        fit.johnson_neyman("a_w", "b_w", "RSa")


def test_plot_conditional_indirect_shades_the_johnson_neyman_regions(fixed_fit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    fit, _ = fixed_fit
    # A wide range: the effect (a0 + a1 w)(b0 + b1 w) with positive paths turns negative far
    # below the mean, so its interval has boundaries inside the plot.
    jn = fit.johnson_neyman("a_w", "b_w", "W", sd_range=8.0)
    assert len(jn.boundaries) >= 1 and len(jn.regions) >= 1
    ax = fit.plot_conditional_indirect("a_w", "b_w", "W", sd_range=8.0)
    spans = [p for p in ax.patches if p.get_gid() == "johnson-neyman-region"]
    assert len(spans) == len(jn.regions)
    for p, r in zip(spans, jn.regions.itertuples(index=False)):
        xs = (
            np.asarray(p.get_xy())[:, 0] if isinstance(p, Polygon) else [p.get_x(), p.get_x() + p.get_width()]
        )
        assert (min(xs), max(xs)) == pytest.approx((r.start_sd, r.end_sd))
    lines = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == "johnson-neyman-boundary"]
    np.testing.assert_allclose(lines, jn.boundaries["sd"])
    assert "johnson-neyman-region" not in {
        p.get_gid() for p in fit.plot_conditional_indirect("a_w", "b_w", "W", johnson_neyman=False).patches
    }
    plt.close("all")


# --------------------------------------------------------------- recovery (Model 4)
MODEL4_TRUTH = {
    "a_w": 0.33, "b_w": 0.46, "c_w": 0.25, "ses_int_w": 0.2, "ses_ach_w": 0.1,
    "a_b": 0.6, "b_b": 0.5, "c_b": 0.2, "ses_int_b": 0.3, "ses_ach_b": 0.1,
    "SESb_a": 0.36, "SESb_b": 0.09, "slope_sd_b[RSa]": 0.3**0.5, "slope_sd_b[RSb]": 0.2**0.5, "rCor": 0.05,
    "loading_w": 1.0, "loading_b": 1.0, "lv_sd_w": 1.0, "lv_sd_b": 0.55, "lv_sd_b[SES]": 0.5,
    "lv_cor_w": 0.2, "lv_cor_b": 0.2, "resid_sd_w": 1.0, "resid_sd_b": 0.25, "intercept_b": 2.0,
}  # fmt: skip


def model4_spec(data: pd.DataFrame | None) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in ("ACH", "INT", "REL"):
        m.latent(f, [f"{f}{i}" for i in range(1, 4)])
    m.path(
        "INT",
        on=["REL", "SES"],
        level="within",
        label=[None, "ses_int_w"],
        random=[ms.RandomSlope("RSa", "a_w"), None],
    )
    m.path(
        "ACH", on=["INT", "REL", "SES"], level="within", label=[None, "c_w", "ses_ach_w"],
        random=[ms.RandomSlope("RSb", "b_w"), None, None],
    )  # fmt: skip
    m.path("INT", on=["REL", "SES"], level="between", label=["a_b", "ses_int_b"])
    m.path("ACH", on=["INT", "REL", "SES"], level="between", label=["b_b", "c_b", "ses_ach_b"])
    m.path("RSa", on="SES", level="between", label="SESb_a")
    m.path("RSb", on="SES", level="between", label="SESb_b")
    m.covariance("RSa", "RSb", level="between", label="rCor")
    m.derived("mome_p1", "conditional_indirect(a_w, b_w, SES, sd(SES, between))")
    m.derived("mome_m1", "conditional_indirect(a_w, b_w, SES, -sd(SES, between))")
    m.derived("med_w", ms.indirect("a_w", "b_w"))
    return m


@pytest.mark.slow
def test_model4_recovery() -> None:
    df = ms.simulate(model4_spec(None), MODEL4_TRUTH, n_clusters=120, cluster_size=15, seed=8)
    fit = model4_spec(df).fit(draws=500, tune=500, chains=2, seed=2, progress=False, warn=False)
    t = MODEL4_TRUTH
    rcov = t["rCor"] * t["slope_sd_b[RSa]"] * t["slope_sd_b[RSb]"]
    sd_ses = t["lv_sd_b[SES]"]
    truth = {
        "SESb_a": t["SESb_a"],
        "SESb_b": t["SESb_b"],
        "a_w": t["a_w"],
        "b_w": t["b_w"],
        "mome_p1": (t["a_w"] + t["SESb_a"] * sd_ses) * (t["b_w"] + t["SESb_b"] * sd_ses) + rcov,
        "mome_m1": (t["a_w"] - t["SESb_a"] * sd_ses) * (t["b_w"] - t["SESb_b"] * sd_ses) + rcov,
        # marginal over SES: a_w b_w + total slope covariance (residual + SESb_a SESb_b var(SES_b))
        "med_w": t["a_w"] * t["b_w"] + rcov + t["SESb_a"] * t["SESb_b"] * sd_ses**2,
    }
    s = fit.summary()
    misses = []
    for label, true in truth.items():
        row = s[s["label"] == label].iloc[0]
        if not row["lower"] <= true <= row["upper"]:
            misses.append(f"{label}: truth {true:.3f} [{row['lower']:.3f}, {row['upper']:.3f}]")
    assert not misses, misses


def test_slope_covariance_with_an_exogenous_between_variable() -> None:
    """RSb ~~ X (between) is estimated as RSb's regression on X and reported as a covariance."""
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    m = tiny_spec(df).covariance("RSb", "X", level="between", label="cov_bx")
    st = m.structure()
    rsb = next(r for r in st.random_slopes if r.name == "RSb")
    lat = st.between.latent.index("X")
    assert (lat, "cov_bx") in rsb.covariances
    assert any(mod == lat for mod, _ in rsb.moderators)
    # With an endogenous variable (M is regressed between) it is the correlation of the slope's
    # residual with M's disturbance.
    st = tiny_spec(df).covariance("RSb", "M", level="between", label="r_m").structure()
    rsb = next(r for r in st.random_slopes if r.name == "RSb")
    assert [(st.between.latent[lat], st.groups["lv_cor_b"].labels[k]) for lat, k in rsb.disturbance_cors] == [
        ("M", "r_m")
    ]


def test_slope_covariance_with_a_within_only_variable() -> None:
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=5, cluster_size=3, seed=1)
    df["F1"], df["F2"], df["F3"] = df["X"] + 0.1, df["X"] - 0.1, df["X"] * 0.9
    m = tiny_spec(df).latent("F", ["F1", "F2", "F3"], levels="within").path("M", on="F", level="within")
    m.covariance("RSa", "F", level="between")
    with pytest.raises(ms.MSEMSpecificationError, match="'F' has no between-level part"):
        m.structure()


# ------------------------------------------------------ missing level-2 moderators (MAR)
def test_missing_level2_moderator_is_integrated_out() -> None:
    """A level-2 moderator missing in some clusters: the "patterns" likelihood conditions on the
    slopes and integrates the missing values out (exactness: tests/test_random_effects.py)."""
    df = ms.simulate(tiny_spec(None), VALUES, n_clusters=6, cluster_size=3, seed=3)
    df.loc[df["schid"] == 2, "Z"] = np.nan
    model = tiny_spec(df)
    pm_model = model.build("patterns")
    assert "slope_deviation" in pm_model.named_vars and "moderator_raw" not in pm_model.named_vars
    logp = pm_model.compile_logp(mode=REFERENCE_MODE)  # nothing compiled: each Op's NumPy perform
    assert np.isfinite(logp(pm_model.initial_point()))
    # The default formulation samples the missing value instead (one cell per cluster without Z).
    sampled = model.build()
    assert sampled["level2_missing"].type.shape in ((1,), (None,))
    assert np.isfinite(sampled.compile_logp(mode=REFERENCE_MODE)(sampled.initial_point()))
