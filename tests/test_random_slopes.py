"""Random slopes (tutorial Model 3): exact likelihood, recovery, derived effects, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import pymsem as ms
from pymsem.compile import marginal as mg
from pymsem.compile.matrices import level_matrices, pytensor_ops
from tests.conftest import REFERENCE_MODE

FACTORS = ("ACH", "INT", "REL")

#: Model 3 truth: random slope variances 0.3 and 0.2 (SDs below), correlation 0.1.
MODEL3_TRUTH = {
    "a_w": 0.35, "b_w": 0.45, "c_w": 0.25, "a_b": 0.60, "b_b": 0.50, "c_b": 0.25,
    "loading_w": 1.0, "loading_b": 1.0, "lv_sd_w": 1.0, "lv_sd_b": 0.6, "resid_sd_w": 1.0,
    "resid_sd_b": 0.25, "intercept_b": 2.0,
    "slope_sd_b[RSa]": 0.3**0.5, "slope_sd_b[RSb]": 0.2**0.5, "rCor": 0.1,
}  # fmt: skip


def model3_spec(data: pd.DataFrame | None, indicators: int = 4) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in FACTORS:
        m.latent(f, [f"{f}{i}" for i in range(1, indicators + 1)])
    m.path("INT", on="REL", level="within", random=ms.RandomSlope("RSa", mean_label="a_w"))
    m.path(
        "ACH",
        on=["INT", "REL"],
        level="within",
        label=[None, "c_w"],
        random=[ms.RandomSlope("RSb", "b_w"), None],
    )
    m.covariance("RSa", "RSb", level="between", label="rCor")
    m.path("INT", on="REL", level="between", label="a_b")
    m.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])
    m.derived("rCov", "cov(RSa, RSb)")
    m.derived("med_w", ms.indirect("a_w", "b_w"))
    m.derived("med_b", ms.indirect("a_b", "b_b"))
    m.derived("a_con", ms.contextual("a_b", "a_w"))
    m.derived("b_con", ms.contextual("b_b", "b_w"))
    m.derived("med_con", "med_b - med_w")
    return m


def truth_of(name: str) -> float:
    t = MODEL3_TRUTH
    cov = t["rCor"] * t["slope_sd_b[RSa]"] * t["slope_sd_b[RSb]"]
    derived = {
        "rCov": cov,
        "med_w": t["a_w"] * t["b_w"] + cov,
        "med_b": t["a_b"] * t["b_b"],
        "a_con": t["a_b"] - t["a_w"],
        "b_con": t["b_b"] - t["b_w"],
        "med_con": t["a_b"] * t["b_b"] - t["a_w"] * t["b_w"] - cov,
    }
    return derived.get(name, t.get(name, np.nan))


# model3_data and model3_fit are session fixtures (tests/conftest.py): the plot tests share the fit.


# ----------------------------------------------------------------- exactness
def _param_values(structure, rng) -> dict[str, np.ndarray]:
    base = {"loading": 1.0, "path": 0.3, "intercept": 2.0, "lv_sd": 0.7, "resid_sd": 0.8, "slope_sd": 0.4}
    return {n: base.get(g.kind, 0.1) + 0.1 * rng.standard_normal(len(g)) for n, g in structure.groups.items()}


@pytest.fixture(scope="module")
def tiny_model() -> ms.MSEM:
    """Model 3 with three indicators per factor on tiny unbalanced data (cluster sizes 1 to 5)."""
    sizes = np.array([1, 2, 3, 5, 4, 2])
    df = ms.simulate(model3_spec(None, indicators=3), MODEL3_TRUTH, n_clusters=6, cluster_size=sizes, seed=3)
    return model3_spec(df, indicators=3)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model.structure(), tiny_model.clustered_data()


def _logp_functions(structure, data):
    import pytensor
    import pytensor.tensor as pt

    stats = mg.sufficient_statistics(structure, data, per_cluster=True)
    syms = {n: pt.vector(n) for n in structure.groups}
    u = pt.matrix("u")
    W = level_matrices(structure.within, syms, pytensor_ops())
    B = level_matrices(structure.between, syms, pytensor_ops())
    out = {}
    for name, fn in (("cholesky", mg.random_slope_logp), ("woodbury", mg.random_slope_logp_woodbury)):
        out[name] = pytensor.function(
            [*syms.values(), u], fn(stats, structure, W, B, u), on_unused_input="ignore", mode=REFERENCE_MODE
        )
    return out


def test_random_slope_likelihood_equals_dense_normal(tiny) -> None:
    """Given the slopes, each cluster's stacked data are normal; both formulas equal the dense density."""
    structure, data = tiny
    assert mg.woodbury_applies(structure)
    rng = np.random.default_rng(1)
    vals = _param_values(structure, rng)
    u = 0.3 * rng.standard_normal((data.n_clusters, 2))
    fns = _logp_functions(structure, data)
    args = [vals[n] for n in structure.groups] + [u]
    W = level_matrices(structure.within, vals)
    Bm = level_matrices(structure.between, vals)
    ls = structure.within
    y = data.frame[structure.level1].to_numpy()
    dense = 0.0
    start = np.r_[0, np.cumsum(data.sizes)]
    for g in range(data.n_clusters):
        Bg = W.B.copy()
        Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += u[g, ls.beta_random[:, 2]]
        A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
        Sw = W.Lambda @ A @ W.Psi @ A.T @ W.Lambda.T + W.Theta
        n = data.sizes[g]
        cov = np.kron(np.eye(n), Sw) + np.kron(np.ones((n, n)), Bm.Sigma)
        dense += multivariate_normal(np.tile(Bm.nu, n), cov).logpdf(y[start[g] : start[g + 1]].ravel())
    assert fns["cholesky"](*args) == pytest.approx(dense, rel=1e-8)
    assert fns["woodbury"](*args) == pytest.approx(dense, rel=1e-8)


@pytest.mark.parametrize("mode", [pytest.param(REFERENCE_MODE, id="py"), "NUMBA"])
def test_woodbury_gradient_equals_cholesky_gradient(tiny, mode) -> None:
    """The fused Woodbury operation's hand-written gradient against PyTensor's gradient of the
    batched-Cholesky formula (itself checked against the dense density above)."""
    import pytensor
    import pytensor.tensor as pt

    structure, data = tiny
    stats = mg.sufficient_statistics(structure, data, per_cluster=True)
    syms = {n: pt.vector(n) for n in structure.groups}
    u = pt.matrix("u")
    W = level_matrices(structure.within, syms, pytensor_ops())
    B = level_matrices(structure.between, syms, pytensor_ops())
    rng = np.random.default_rng(2)
    vals = _param_values(structure, rng)
    args = [vals[n] for n in structure.groups] + [0.3 * rng.standard_normal((data.n_clusters, 2))]
    grads = {}
    # The reference gradient is PyTensor's own, whatever mode the fused operation runs in.
    for name, fn, fmode in (
        ("cholesky", mg.random_slope_logp, REFERENCE_MODE),
        ("woodbury", mg.random_slope_logp_woodbury, mode),
    ):
        ll = fn(stats, structure, W, B, u)
        wrt = [*syms.values(), u]
        f = pytensor.function(
            wrt, pt.grad(ll, wrt, disconnected_inputs="ignore"), mode=fmode, on_unused_input="ignore"
        )
        grads[name] = f(*args)
    for name, a, b in zip([*syms, "u"], grads["woodbury"], grads["cholesky"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9, err_msg=name)


# ------------------------------------------------------------------ recovery
def test_model3_recovery(model3_fit) -> None:
    s = model3_fit.summary().reset_index()
    by_param = s.set_index("parameter")
    rows = {
        "a_w": by_param.loc["RSa mean"],
        "b_w": by_param.loc["RSb mean"],
        "RSa var": by_param.loc["RSa variance"],
        "RSb var": by_param.loc["RSb variance"],
    }
    truth = {"a_w": 0.35, "b_w": 0.45, "RSa var": 0.3, "RSb var": 0.2}
    for name in ("rCov", "med_w", "med_b", "a_con", "b_con", "med_con", "c_w", "a_b", "b_b", "c_b"):
        rows[name] = s[s["label"] == name].iloc[0]
        truth[name] = truth_of(name)
    misses = [
        f"{k}: truth {truth[k]:.3f}, [{r['lower']:.3f}, {r['upper']:.3f}]"
        for k, r in rows.items()
        if not r["lower"] <= truth[k] <= r["upper"]
    ]
    # 14 intervals at 95%: one miss can be chance; two would not be.
    assert len(misses) <= 1, misses


def test_model3_slope_variances_track_the_realized_slopes(model3_fit, model3_data) -> None:
    """The sample's own slopes (drawn by the simulator) lie inside the posterior of their moments."""
    realized = model3_data[1]
    s = model3_fit.summary().reset_index().set_index("parameter")
    for name in ("RSa", "RSb"):
        row = s.loc[f"{name} variance"]
        assert row["lower"] <= realized[name].var() <= row["upper"], name
        row = s.loc[f"{name} mean"]
        assert row["lower"] <= realized[name].mean() <= row["upper"], name


def test_derived_quantities_follow_their_formulas_per_draw(model3_fit) -> None:
    """med_w = a_w * b_w + cov(RSa, RSb) draw by draw; contextual = between - within."""
    q = {x.label: x.draws for x in model3_fit.quantities() if x.label}
    a, b = model3_fit.draws("a_w"), model3_fit.draws("b_w")
    sd = model3_fit.posterior["slope_sd_b"].values
    L = model3_fit.posterior["slope_corr_chol"].values
    cov = sd[..., 0] * sd[..., 1] * (L @ np.swapaxes(L, -1, -2))[..., 0, 1]
    np.testing.assert_allclose(q["rCov"], cov)
    np.testing.assert_allclose(q["med_w"], a * b + cov)
    np.testing.assert_allclose(q["med_con"], q["med_b"] - q["med_w"])
    np.testing.assert_allclose(q["a_con"], model3_fit.draws("a_b") - a)


def test_cluster_slopes_and_cluster_indirect_effects(model3_fit, model3_data) -> None:
    ds = model3_fit.cluster_slopes()
    # Each school's posterior mean slope tracks the slope the simulator drew for it.
    realized = model3_data[1]
    for name in ("RSa", "RSb"):
        est = ds[name].mean(("chain", "draw")).values
        assert np.corrcoef(est, realized[name].to_numpy())[0, 1] > 0.6, name
    assert set(ds.data_vars) == {"RSa", "RSb"}
    assert ds["RSa"].dims == ("chain", "draw", "cluster") and ds.sizes["cluster"] == 150
    # The average of the clusters' slopes estimates the slope mean.
    assert abs(float(ds["RSa"].mean()) - float(model3_fit.draws("a_w").mean())) < 0.05
    ind = model3_fit.cluster_indirect("a_w", "b_w")
    np.testing.assert_allclose(ind.values, (ds["RSa"] * ds["RSb"]).values)
    with pytest.raises(KeyError, match="not the mean label"):
        model3_fit.cluster_indirect("a_b", "b_w")


def test_adding_a_derived_quantity_needs_no_resampling(model3_fit) -> None:
    model3_fit.model.derived("ratio", "med_w / (med_w + c_w)")
    s = model3_fit.summary()
    assert "ratio" in set(s["label"])
    model3_fit.model.drop_derived("ratio")


def test_table_has_random_slope_and_derived_blocks(model3_fit) -> None:
    text = str(model3_fit.table())
    assert "Random slopes" in text and "RSa, RSb correlation" in text and "Derived" in text
    assert "indirect(a_w, b_w)" in text and "med_w" in text


# ------------------------------------------------------ derived expressions
def _ctx(values: dict[str, np.ndarray], slope_cov: float = 0.0):
    from pymsem.effects.derived import DerivedContext

    def moments(kind, names, level):
        if set(names) <= {"RSa", "RSb"}:
            var = {"RSa": 0.3, "RSb": 0.2}
            if kind == "var":
                return np.full(2, var[names[0]])
            return np.full(2, slope_cov if kind == "cov" else slope_cov / np.sqrt(0.06))
        raise ms.MSEMSpecificationError(f"no variable {names}")

    return DerivedContext(values, moments, {"a_w": "RSa", "b_w": "RSb"})


def test_indirect_effect_closed_form() -> None:
    from pymsem.effects.derived import evaluate

    vals = {
        "a_w": np.array([0.3, 0.5]),
        "b_w": np.array([0.4, 0.2]),
        "a_b": np.array([0.6, 0.7]),
        "b_b": np.array([0.5, 0.1]),
    }
    ctx = _ctx(vals, slope_cov=0.02)
    # Both paths random: E[a_g b_g] = a b + cov(a_g, b_g)
    np.testing.assert_allclose(evaluate(ms.indirect("a_w", "b_w"), ctx), [0.3 * 0.4 + 0.02, 0.5 * 0.2 + 0.02])
    # Fixed paths: the plain product
    np.testing.assert_allclose(evaluate(ms.indirect("a_b", "b_b"), ctx), [0.30, 0.07])
    np.testing.assert_allclose(evaluate(ms.contextual("a_b", "a_w"), ctx), [0.3, 0.2])
    np.testing.assert_allclose(evaluate("total(indirect(a_b, b_b), 0.1)", ctx), [0.40, 0.17])
    np.testing.assert_allclose(
        evaluate(
            "rCor * sqrt(totalvar(RSa) * totalvar(RSb))",
            {**ctx.__dict__} and _ctx({**vals, "rCor": np.array([0.1, 0.1])}),
        ),
        [0.1 * np.sqrt(0.06)] * 2,
    )
    np.testing.assert_allclose(
        evaluate("-a_w ** 2 + abs(-b_w) / 2", ctx), -(vals["a_w"] ** 2) + vals["b_w"] / 2
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo pwned')", "unknown function"),
        ("a_w.__class__", "Attribute is not allowed"),
        ("(lambda: 1)()", "unknown function|Lambda is not allowed"),
        ("[x for x in a_w]", "ListComp is not allowed"),
        ("a_w[0]", "Subscript is not allowed"),
        ("open('f')", "unknown function 'open'"),
        ("a_w +", "syntax error"),
        ("'abc'", "only numbers"),
        ("sqrt(a_w, b_w)", "sqrt\\(\\) takes one argument"),
        ("a_w if b_w else 0", "IfExp is not allowed"),
        ("a_w // b_w", "FloorDiv is not allowed"),
    ],
)
def test_expressions_cannot_execute_code(expression: str, message: str) -> None:
    from pymsem.effects.derived import evaluate

    with pytest.raises(ms.MSEMSpecificationError, match=message):
        evaluate(expression, _ctx({"a_w": np.ones(2), "b_w": np.ones(2)}), "x")


def test_unknown_label_lists_known_ones() -> None:
    from pymsem.effects.derived import evaluate

    with pytest.raises(ms.MSEMSpecificationError, match=r"unknown label 'a_ww'.*Did you mean 'a_w'"):
        evaluate("a_ww * b_w", _ctx({"a_w": np.ones(2), "b_w": np.ones(2)}), "med")


def test_derived_syntax_checked_when_declared() -> None:
    m = model3_spec(None)
    with pytest.raises(ms.MSEMSpecificationError, match="Derived quantity 'bad': syntax error"):
        m.derived("bad", "a_w * (b_w")
    with pytest.raises(ms.MSEMSpecificationError, match="defined twice"):
        m.derived("med_w", "a_w")


# ------------------------------------------------------------------ bad input
@pytest.fixture
def small() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(60, 3)), columns=["X", "Y", "Z"])
    df["cl"] = np.repeat(np.arange(10), 6)
    df["W"] = np.repeat(rng.normal(size=10), 6)
    return df


def test_random_slope_on_between_path(small: pd.DataFrame) -> None:
    m = ms.MSEM(small, cluster="cl").path("Y", on="X", level="between", random=ms.RandomSlope("RS"))
    with pytest.raises(ms.MSEMSpecificationError, match="only within-level slopes can vary"):
        m.structure()


def test_random_slope_on_level2_predictor(small: pd.DataFrame) -> None:
    m = ms.MSEM(small, cluster="cl").path("Y", on="W", level="within", random=ms.RandomSlope("RS"))
    with pytest.raises(ms.MSEMSpecificationError, match="'W' is a level-2 variable"):
        m.structure()


def test_random_slope_named_like_a_variable(small: pd.DataFrame) -> None:
    m = ms.MSEM(small, cluster="cl").path("Y", on="X", level="within", random=ms.RandomSlope("Z"))
    with pytest.raises(ms.MSEMSpecificationError, match=r"Random slope 'Z'.*name of an existing column"):
        m.structure()


def test_random_slope_name_used_twice(small: pd.DataFrame) -> None:
    m = ms.MSEM(small, cluster="cl").path("Y", on="X", level="within", random=ms.RandomSlope("RS"))
    m.path("Z", on="X", level="within", random=ms.RandomSlope("RS"))
    with pytest.raises(ms.MSEMSpecificationError, match="Random slope name 'RS' is used for"):
        m.structure()


def test_between_latent_scores_with_random_slopes(model3_fit, model3_data) -> None:
    """Between factor scores given the slopes: intervals cover about 95% of the drawn values."""
    truth = model3_data[1]
    scores = model3_fit.latent_scores(seed=2)
    for name in ("ACH", "INT", "REL"):
        lo = scores[name].quantile(0.025, dim=("chain", "draw")).values
        hi = scores[name].quantile(0.975, dim=("chain", "draw")).values
        cover = np.mean((lo <= truth[name].to_numpy()) & (truth[name].to_numpy() <= hi))
        assert 0.85 <= cover <= 1.0, (name, cover)


def test_centered_and_noncentered_slopes_define_the_same_model(tiny_model) -> None:
    """Slopes ``mean + diag(sd) L z``: same likelihood, priors differing by the Jacobian ``|diag(sd) L|^G``."""
    m = tiny_model
    nc = m.compile(slopes="noncentered").pymc_model
    c = m.compile(slopes="centered").pymc_model
    assert "slope_raw" in nc.named_vars and "slope" in c.named_vars
    point = nc.initial_point()
    rng = np.random.default_rng(2)
    point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in point.items()}

    def fn(model, outs):  # the model's variables as functions of its value variables
        return model.compile_fn(
            model.replace_rvs_by_values(outs),
            inputs=model.value_vars,
            on_unused_input="ignore",
            mode=REFERENCE_MODE,
        )

    ll_nc, sd, L = fn(nc, [nc["loglik"], nc["slope_sd_b"], nc["slope_corr_chol"]])(point)
    u = point["slope_raw"] @ (sd[:, None] * L).T
    mean = point["path_w"][[r.mean_index for r in m.structure().random_slopes]]
    cpoint = {k: v for k, v in point.items() if k != "slope_raw"} | {"slope": mean + u}
    (ll_c,) = fn(c, [c["loglik"]])(cpoint)
    assert ll_c == pytest.approx(ll_nc, rel=1e-10)
    G = m.clustered_data().n_clusters
    jacobian = G * (np.log(sd).sum() + np.log(np.diag(L)).sum())
    logp_c, logp_nc = c.compile_logp(mode=REFERENCE_MODE), nc.compile_logp(mode=REFERENCE_MODE)
    assert logp_c(cpoint) == pytest.approx(logp_nc(point) - jacobian, rel=1e-10)


def test_auto_slope_parametrization_follows_cluster_size() -> None:
    from pymsem.compile.slopes import CENTERED_MIN_MEDIAN_SIZE, centered_slopes

    assert not centered_slopes("auto", np.full(100, 30))
    assert centered_slopes("auto", np.full(100, CENTERED_MIN_MEDIAN_SIZE))
    assert centered_slopes("centered", np.full(3, 2)) and not centered_slopes("noncentered", np.full(3, 500))
    with pytest.raises(ValueError, match="centred"):
        centered_slopes("centred", np.full(3, 2))
    # Slopes regressed on between-level variables stay non-centered.
    assert not centered_slopes("auto", np.full(3, 500), moderated=True)
    with pytest.raises(ValueError, match="regressed on between-level"):
        centered_slopes("centered", np.full(3, 500), moderated=True)


def test_slope_correlation_label_reads_its_draws(model3_fit) -> None:
    """``rCor`` labels the slopes' correlation: draws, trace and rank plots take it by label."""
    L = model3_fit.posterior["slope_corr_chol"].values
    R = L @ np.swapaxes(L, -1, -2)
    np.testing.assert_allclose(model3_fit.draws("rCor"), R[..., 1, 0], rtol=1e-12)
    from pymsem.results.plots import diagnostic_tree

    tree = diagnostic_tree(model3_fit, ["rCor", "a_w"])
    assert set(tree["posterior"].data_vars) == {"rCor", "a_w"}
    with pytest.raises(KeyError, match="rCor"):
        model3_fit.draws("rCorr")
