"""The whole-model kernel against PyMC: each prior family, every model it takes, and its refusals.

The kernel (:mod:`pymsem.compile.kernel.model_numba`) replaces the ``pm.Model``'s compiled log
density for the models :func:`~pymsem.compile.kernel.flat_model.flat_model` accepts. It must be
the same function of the unconstrained point: value (Jacobians and normalizing constants
included), gradient and traced values, which these tests compare with PyMC's own graph evaluated
by PyTensor's Python linker.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

import pymsem as ms
from pymsem.compile.kernel.flat_model import FlatModel, flat_model
from pymsem.compile.kernel.priors import FAMILIES, encode_prior, prior_logp, transform, transform_bounds
from pymsem.sample import _initial_point
from pymsem.tutorial import model4 as tutorial_model4
from tests.conftest import REFERENCE_MODE
from tests.test_formulations import CASES, SIZES_TINY, small_spec
from tests.test_kernel import KERNEL_CASES, VALUES
from tests.test_random_slopes import MODEL3_TRUTH, model3_spec

FAMILY_CASES = [
    ("Normal", {"mu": 0.3, "sigma": 1.7}),
    ("Normal", {}),
    ("HalfNormal", {"sigma": 2.0}),
    ("Uniform", {"lower": -1.0, "upper": 1.0}),
    ("Uniform", {"lower": 0.5, "upper": 3.0}),
    ("StudentT", {"nu": 4.0, "mu": 0.2, "sigma": 1.5}),
    ("HalfStudentT", {"nu": 3.0, "sigma": 2.0}),
    ("Cauchy", {"alpha": 0.1, "beta": 2.0}),
    ("HalfCauchy", {"beta": 1.5}),
    ("Exponential", {"lam": 0.7}),
    ("Gamma", {"alpha": 2.5, "beta": 1.3}),
    ("InverseGamma", {"alpha": 3.0, "beta": 2.0}),
    ("LogNormal", {"mu": 0.2, "sigma": 0.8}),
    ("Laplace", {"mu": -0.4, "b": 1.2}),
    ("Beta", {"alpha": 2.0, "beta": 5.0}),
]


def test_every_family_is_tested() -> None:
    assert {d for d, _ in FAMILY_CASES} == set(FAMILIES)


@pytest.mark.parametrize(
    ("dist", "params"), FAMILY_CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(FAMILY_CASES)]
)
def test_family_equals_pymc_log_density_and_gradient(dist: str, params: dict[str, float]) -> None:
    """Prior plus log-Jacobian of PyMC's default transform, at unconstrained points, against pm.Model.logp."""
    with pm.Model() as m:
        # As arrays: a Python float becomes a float32 constant where that is exact enough for
        # PyTensor's cast policy; pymsem's hyperparameters are float64 data.
        rv = getattr(pm, dist)("v", **{k: np.asarray(v, dtype=np.float64) for k, v in params.items()})
    trans = m.rvs_to_transforms.get(rv)
    enc = encode_prior(dist, params)
    assert not isinstance(enc, str)
    fam, h = enc
    assert (None if trans is None else type(trans).__name__) == fam.transform_name
    value = m.rvs_to_values[rv]
    logp = m.logp()
    fn = pytensor.function([value], [logp, pt.grad(logp, value)], mode=REFERENCE_MODE)
    a, b = transform_bounds(dist, params)
    for y in np.linspace(-2.5, 2.5, 11):
        v, dv, lj, dlj = transform(fam.transform, y, a, b)
        lp, g = prior_logp(fam.code, v, *h)
        ref, gref = fn(y)
        # PyMC's HalfNormal constant differs from log(sqrt(2/pi)) by 2e-9 (a constant: the
        # posterior is the same); everything else agrees to rounding.
        assert lp + lj == pytest.approx(float(ref), rel=1e-11, abs=1e-8)
        assert g * dv + dlj == pytest.approx(float(gref), rel=1e-9, abs=1e-10)


def test_values_outside_the_support_have_no_density() -> None:
    for dist, v in (("HalfNormal", -0.1), ("Uniform", 1.5), ("Gamma", 0.0), ("Beta", 1.0)):
        params = dict(FAMILY_CASES[[d for d, _ in FAMILY_CASES].index(dist)][1])
        fam, h = encode_prior(dist, params)  # type: ignore[misc]
        assert prior_logp(fam.code, v, *h)[0] == -np.inf


def test_priors_outside_the_families_are_named() -> None:
    assert "TruncatedNormal" in encode_prior("TruncatedNormal", {"mu": 0, "sigma": 1, "lower": 0})
    assert "['mu', 'sigma']" in encode_prior("Gamma", {"mu": 1.0, "sigma": 0.5})
    assert "lacks ['lam']" in encode_prior("Exponential", {})


def _mixed_priors_spec(data: Any, level2: tuple[str, ...] = ("W",)) -> ms.MSEM:
    """Groups split into prior families (their own variables), whitened grand means with mixed priors."""
    m = small_spec(data, level2)
    m.set_prior("loading_w[x2 by X]", ms.Prior("StudentT", nu=4, mu=0, sigma=2))
    m.set_prior("resid_sd_w[x1]", ms.Prior("Exponential", lam=1.0))
    m.set_prior("resid_sd_b[y3]", ms.Prior("Gamma", alpha=2.0, beta=4.0))
    m.set_prior("lv_sd_b", ms.Prior("HalfCauchy", beta=1.0))
    m.set_prior("intercept_b[x1]", ms.Prior("StudentT", nu=5, mu=0, sigma=3))
    m.set_prior("a_b", ms.Prior("Laplace", mu=0, b=1))
    return m


def _one_slope_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """One random slope (no slope correlations to sample)."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2", "x3"])
    m.latent("Y", ["y1", "y2", "y3"])
    m.path("Y", on="X", level="within", random=ms.RandomSlope("RSa", "a_w"))
    m.path("Y", on="X", level="between")
    return m


def _general_slope_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """One random slope, three factors within and two between (the general cluster loop), and
    correlated factors at both levels (the factor covariances' off-diagonal gradients)."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2", "x3"])
    m.latent("Y", ["y1", "y2", "y3"])
    m.latent("V", ["v1", "v2"], levels=("within",))
    m.path("Y", on="X", level="within", random=ms.RandomSlope("RSa", "a_w"))
    return m


def _lkj_spec(data: Any, level2: tuple[str, ...] = ("W",)) -> ms.MSEM:
    """Three correlated factors at each level: LKJ blocks (one with a user's eta), no regressions."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("X", ["x1", "x2"])
    m.latent("Y", ["y1", "y2"])
    m.latent("Z", ["x3", "y3"])
    m.set_prior("lv_cor_b", ms.Prior("LKJCorr", eta=2.5))
    return m


def _covariate_slope_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """A random slope on a covariate measured without error (SES, latent mean centering),
    moderated by its school mean: the covariate's own slope varies (``gamma_g``)."""
    m = ms.MSEM(data, cluster="schid", level2=level2)
    m.latent("REL", ["REL1", "REL2", "REL3"], levels=("within", "between"))
    m.latent("INT", ["INT1", "INT2", "INT3"], levels=("within", "between"))
    m.path("INT", on=["REL", "SES"], level="within", random=[None, ms.RandomSlope("RSs", "s_w")])
    m.path("INT", on=["REL", "SES"], level="between")
    m.path("RSs", on="SES", level="between")
    return m


def _factor_moderator_spec(data: Any, level2: tuple[str, ...] = ("w1", "w2", "w3")) -> ms.MSEM:
    """A random slope moderated by a between-only factor of three level-2 columns: no covariate
    measured without error, and level-2 rows in the cluster vector."""
    m = _one_slope_spec(data, level2)
    m.latent("W", ["w1", "w2", "w3"], levels=("between",))
    m.path("RSa", on="W", level="between")
    return m


def _column_moderator_spec(data: Any, level2: tuple[str, ...] = ("w",)) -> ms.MSEM:
    """A random slope moderated by a level-2 column (known given the data)."""
    m = _one_slope_spec(data, level2)
    m.path("RSa", on="w", level="between")
    return m


def _mixed_moderators_spec(data: Any, level2: tuple[str, ...] = ("size",)) -> ms.MSEM:
    """A covariate's random slope moderated by its latent school mean and by a level-2 column:
    the latent moderator sampled given the known one."""
    m = _covariate_slope_spec(data, level2)
    m.path("RSs", on="size", level="between")
    return m


MODEL_CASES = {name: spec for name, (spec, _) in KERNEL_CASES.items()} | {
    "mixed-priors": _mixed_priors_spec,
    "lkj": _lkj_spec,
    "missing": small_spec,
    "missing-rich": KERNEL_CASES["rich"][0],
    "slopes": lambda d, level2=(): model3_spec(d, 3),
    "slopes-centered": lambda d, level2=(): model3_spec(d, 3),
    "one-slope": _one_slope_spec,
    "slopes-missing": lambda d, level2=(): model3_spec(d, 3),
    "one-slope-missing": _one_slope_spec,
    "slopes-general": _general_slope_spec,
    "slopes-general-missing": _general_slope_spec,
    "model4": lambda d, level2=(): tutorial_model4(d),
    "model4-missing": lambda d, level2=(): tutorial_model4(d),
    "model4-covariate-slope": _covariate_slope_spec,
    "model4-factor-moderator": _factor_moderator_spec,
    "model4-factor-moderator-missing": _factor_moderator_spec,
    "model4-column": _column_moderator_spec,
    "model4-column-missing": _column_moderator_spec,
    "model4-mixed": _mixed_moderators_spec,
}


def _with_holes(df: pd.DataFrame, level1: list[str], level2: list[str], seed: int) -> pd.DataFrame:
    """A fifth of the level-1 cells missing, and each level-2 column missing in two clusters."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in level1:
        out.loc[rng.uniform(size=len(out)) < 0.2, c] = np.nan
    for c in level2:
        for g in rng.choice(out["schid"].unique(), size=2, replace=False):
            out.loc[out["schid"] == g, c] = np.nan
    return out


def _level2(name: str) -> tuple[str, ...]:
    if name.startswith("model4-column"):
        return ("w",)
    if name == "model4-mixed":
        return ("size",)
    if name.startswith("model4-factor-moderator"):
        return ("w1", "w2", "w3")
    aliases = {"mixed-priors": "small", "lkj": "small", "missing": "small", "missing-rich": "rich"}
    base = aliases.get(name, name)
    return CASES[base][2] if base in CASES else ()


def _school(n: int) -> pd.DataFrame:
    """The bundled data's first ``n`` schools."""
    df = ms.datasets.load_school()
    return df[df["schid"].isin(df["schid"].unique()[:n])].reset_index(drop=True)


def _school_column(df: pd.DataFrame, name: str, seed: int) -> pd.DataFrame:
    """``df`` with a level-2 column ``name`` (one value per school)."""
    rng = np.random.default_rng(seed)
    codes, schools = pd.factorize(df["schid"])
    return df.assign(**{name: rng.normal(size=len(schools))[codes]})


def _data(name: str) -> pd.DataFrame:
    if name in ("model4", "model4-covariate-slope"):
        return _school(10)
    if name == "model4-mixed":
        return _school_column(_school(10), "size", seed=13)
    if name == "model4-column":
        return _school_column(_data("one-slope"), "w", seed=14)
    if name == "model4-column-missing":
        return _with_holes(_data("model4-column"), ["x2", "y1"], ["w"], seed=15)
    if name == "model4-missing":
        return _with_holes(_school(10), ["ACH1", "INT2", "REL3", "SES"], [], seed=4)
    if name.startswith("model4-factor-moderator"):
        # Level-2 columns that share a school factor (only their values matter here).
        df = _data("one-slope")
        rng = np.random.default_rng(11)
        school = rng.normal(size=df["schid"].max() + 1)
        for j, c in enumerate(["w1", "w2", "w3"]):
            noise = rng.normal(scale=0.6, size=school.size)
            df[c] = (0.8 + 0.1 * j) * school[df["schid"]] + noise[df["schid"]]
        if name.endswith("missing"):
            return _with_holes(df, ["x1", "y2"], ["w2"], seed=12)
        return df
    if name == "intercept-only":
        rng = np.random.default_rng(3)
        g = np.repeat(np.arange(len(SIZES_TINY)), SIZES_TINY)
        return pd.DataFrame({"schid": g, "y": rng.normal(size=len(g)) + rng.normal(size=len(SIZES_TINY))[g]})
    if name == "slopes-missing":
        return _with_holes(_data("slopes"), ["ACH1", "INT2", "REL3", "ACH2"], [], seed=3)
    if name == "slopes-general-missing":
        return _with_holes(_data("slopes-general"), ["x1", "y2", "v1"], [], seed=6)
    if name == "slopes-general":  # not as many factors at each level: the loop for any counts
        values = {k: v for k, v in VALUES.items() if k not in ("resid_cor_w", "path_b")}
        values |= {"slope_sd_b": 0.4, "lv_cor_w": 0.2, "lv_cor_b": 0.3}
        return ms.simulate(_general_slope_spec(None), values, len(SIZES_TINY), SIZES_TINY + 2, seed=9)
    if name.startswith("slopes"):
        return ms.simulate(model3_spec(None, 3), MODEL3_TRUTH, len(SIZES_TINY), SIZES_TINY + 3, seed=7)
    if name == "one-slope-missing":  # two factors a level: the loop specialized for m = 2
        return _with_holes(_data("one-slope"), ["x1", "y2", "y3"], [], seed=5)
    if name == "one-slope":
        values = {k: v for k, v in VALUES.items() if k != "resid_cor_w"} | {"slope_sd_b": 0.4}
        return ms.simulate(_one_slope_spec(None), values, len(SIZES_TINY), SIZES_TINY + 2, seed=8)
    if name == "missing":
        return _with_holes(_data("small"), ["x1", "x2", "y1", "y3"], ["W"], seed=1)
    if name == "missing-rich":
        return _with_holes(_data("rich"), ["x1", "y2", "V", "U"], ["W", "s2"], seed=2)
    base = "small" if name in ("mixed-priors", "lkj") else name
    spec, values = KERNEL_CASES[base]
    return ms.simulate(spec(None, _level2(base)), values, len(SIZES_TINY), SIZES_TINY, seed=7)


@pytest.fixture(scope="module", params=list(MODEL_CASES))
def kernel_case(request: pytest.FixtureRequest) -> dict[str, Any]:
    name = request.param
    compiled = MODEL_CASES[name](_data(name), _level2(name)).compile(
        slopes="centered" if name.endswith("centered") else "noncentered"
    )
    flat = flat_model(compiled, _initial_point(compiled, None))
    assert isinstance(flat, FlatModel), flat
    model = compiled.pymc_model
    values = [model.rvs_to_values[rv] for rv in model.free_RVs]
    logp = model.logp()
    traced = {v.name: v for v in model.unobserved_value_vars}
    fn = pytensor.function(
        values,
        [logp, *pt.grad(logp, values), *(traced[n] for n in flat.names)],
        mode=REFERENCE_MODE,
        on_unused_input="ignore",
    )
    return {"flat": flat, "fn": fn, "n": len(values), "compiled": compiled, "name": name}


def _split(flat: FlatModel, x: np.ndarray, n: int) -> list[np.ndarray]:
    out, o = [], 0
    for shape in flat.shapes[:n]:
        k = int(np.prod(shape))
        out.append(x[o : o + k].reshape(shape))
        o += k
    return out


def test_kernel_equals_the_pymc_model_log_density(kernel_case: dict[str, Any]) -> None:
    """Value, gradient and traced values at the start and at points around it."""
    flat, fn, n = kernel_case["flat"], kernel_case["fn"], kernel_case["n"]
    rng = np.random.default_rng(2)
    for step in (0.0, 0.05, 0.3):
        x = flat.x0 + step * rng.standard_normal(flat.n_dim)
        f, g = flat.value_and_grad(x)
        ref = fn(*_split(flat, x, n))
        assert f == pytest.approx(float(ref[0]), rel=1e-11, abs=1e-8 * flat.n_dim)
        gref = np.concatenate([np.ravel(r) for r in ref[1 : n + 1]])
        np.testing.assert_allclose(g, gref, rtol=1e-9, atol=1e-9 * np.abs(gref).max())
        np.testing.assert_allclose(
            flat.expand(x), np.concatenate([np.ravel(r) for r in ref[n + 1 :]]), rtol=1e-13
        )


#: The slopes entry point each case compiles: sampled missing cells, the cluster loop's factor
#: count (0: the general loop) and, for moderated slopes, one more than the count of covariates
#: measured without error (0: no moderators). Together they run every kind of cluster loop but
#: m = 4 (the loop for 2 and 3 factors with the count as a constant).
SLOPES_VARIANTS = {
    "slopes": (False, 3, 0),
    "slopes-centered": (False, 3, 0),
    "one-slope": (False, 2, 0),
    "slopes-missing": (True, 3, 0),
    "one-slope-missing": (True, 2, 0),
    "slopes-general": (False, 0, 0),
    "slopes-general-missing": (True, 0, 0),
    "model4": (False, 3, 2),
    "model4-missing": (True, 3, 2),
    "model4-covariate-slope": (False, 2, 2),
    "model4-factor-moderator": (False, 2, 1),
    "model4-factor-moderator-missing": (True, 2, 1),
    "model4-column": (False, 2, 1),
    "model4-column-missing": (True, 2, 1),
    "model4-mixed": (False, 2, 2),
}


def test_slopes_cases_run_each_kind_of_cluster_loop(kernel_case: dict[str, Any]) -> None:
    flat = kernel_case["flat"]
    assert flat.slopes == (kernel_case["name"] in SLOPES_VARIANTS)
    if flat.slopes:
        assert flat.slopes_variant == SLOPES_VARIANTS[kernel_case["name"]]


def test_kernel_starts_where_pymc_starts(kernel_case: dict[str, Any]) -> None:
    """The unconstrained start is PyMC's transform of pymsem's starting values."""
    compiled, flat = kernel_case["compiled"], kernel_case["flat"]
    fn = pm.initial_point.make_initial_point_fn(
        model=compiled.pymc_model,
        overrides=_initial_point(compiled, None),
        jitter_rvs=set(),
        return_transformed=True,
    )
    start = fn(0)
    np.testing.assert_allclose(
        flat.x0, np.concatenate([np.ravel(start[v]) for v in flat.names[: kernel_case["n"]]]), rtol=1e-12
    )


def test_kernel_is_not_finite_where_a_covariance_is_not_positive_definite() -> None:
    df = _data("small")
    compiled = small_spec(df, ("W",)).compile()
    flat = flat_model(compiled, _initial_point(compiled, None))
    x = flat.x0.copy()
    for i, name in enumerate(flat.names[: len(compiled.pymc_model.free_RVs)]):
        if name.startswith(("resid_sd_w", "lv_sd_w")):  # log SDs: -inf is an SD of 0
            x[
                sum(int(np.prod(s)) for s in flat.shapes[:i]) : sum(
                    int(np.prod(s)) for s in flat.shapes[: i + 1]
                )
            ] = -800.0
    f, g = flat.value_and_grad(x)
    assert not np.isfinite(f) and np.isnan(g).all()


def test_the_entry_points_code_says_which_output_is_not_finite() -> None:
    """nutpie reads the C entry point's return code: 3 for a gradient entry that is not finite
    (wherever it is: the check runs in four lanes and a tail), 4 for the value, else 0."""
    from pymsem.compile.nutpie_kernel import _store

    rng = np.random.default_rng(1)
    for n in (0, 1, 3, 4, 5, 8, 11):
        g = rng.normal(size=n) * 1e300  # large but finite: no false alarm from the check's sums
        out, logp = np.full(n, 7.0), np.empty(())
        assert _store(-1.5, g, out, logp) == 0 and np.array_equal(out, g) and logp[()] == -1.5
        assert _store(np.inf, g, out, logp) == 4 and _store(np.nan, g, out, logp) == 4
        for i in range(n):
            for bad in (np.nan, np.inf, -np.inf):
                h = g.copy()
                h[i] = bad
                assert _store(0.0, h, out, logp) == 3, (n, i, bad)


def _refusal(build: Any) -> str:
    out = flat_model(build, _initial_point(build, None))
    assert isinstance(out, str)
    return out


def test_models_outside_the_kernel_are_refused_with_the_reason() -> None:
    df = _data("small")
    holes = df.copy()
    holes.loc[3, "x2"] = np.nan
    assert "integrated out" in _refusal(small_spec(holes, ("W",)).compile(formulation="patterns"))
    moderated = _one_slope_spec(df, ("W",))
    moderated.path("RSa", on="W", level="between")
    moderated.covariance("x1", "x2", level="within")
    assert "not the Woodbury form" in _refusal(moderated.compile())
    trunc = small_spec(df, ("W",))
    trunc.set_prior("a_w", ms.Prior("TruncatedNormal", mu=0, sigma=1, lower=0))
    assert "TruncatedNormal" in _refusal(trunc.compile())
    extra = small_spec(df, ("W",))
    with extra.build():
        pm.Normal("my_effect", 0.0, 1.0)
    assert "'my_effect'" in _refusal(extra.compile())
    extended = small_spec(df, ("W",))
    with extended.build():
        pm.Potential("my_prior", -pt.square(extended.build()["path_w"]).sum())
    assert "my_prior" in _refusal(extended.compile())


@pytest.fixture(scope="module")
def kernel_fits() -> tuple[Any, Any, Any]:
    df = ms.simulate(small_spec(None, ("W",)), CASES["small"][1], 40, 8, seed=21)
    m = small_spec(df, ("W",))
    a = m.fit(draws=200, tune=300, chains=2, seed=5, progress=False, warn=False)
    b = small_spec(df, ("W",)).fit(draws=200, tune=300, chains=2, seed=5, progress=False, warn=False)
    return m, a, b


def test_fits_sample_through_the_kernel_with_the_same_draws_for_the_same_seed(kernel_fits: Any) -> None:
    from pymsem.compile.nutpie_kernel import KernelModel

    m, a, b = kernel_fits
    compiled = m.compile()
    assert any(isinstance(v, KernelModel) for v in compiled.sampler_cache.values())
    assert a.run.log_density == b.run.log_density == "kernel"
    for var in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[var].values, b.posterior[var].values)


def test_a_term_added_after_a_fit_is_sampled(kernel_fits: Any) -> None:
    """A potential added to ``model.build()`` after a kernel fit moves the fit (graph route)."""
    m, a, _ = kernel_fits
    with m.build() as model:
        pm.Potential("pin_a_w", pm.logp(pm.Normal.dist(2.0, 0.01), model["path_w"][0]))
    c = m.fit(draws=100, tune=200, chains=2, seed=5, progress=False, warn=False)
    assert c.run.log_density == "graph"
    assert float(c.posterior["path_w"][..., 0].median()) == pytest.approx(2.0, abs=0.05)
    assert abs(float(a.posterior["path_w"][..., 0].median()) - 2.0) > 0.5
