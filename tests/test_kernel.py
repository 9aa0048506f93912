"""The compiled likelihood kernel against its NumPy twin, finite differences and the PyTensor graph.

The kernel takes the model's structure as data (:mod:`pymsem.compile.kernel.spec`), so these
cases cover what the packing must carry: fixed and free loadings, regressions at both levels,
correlated latents and residuals, level-2 columns, equality constraints, observed variables
only, and a one-variable random-intercept model. ``test_formulations`` checks the same
likelihood against the dense multivariate normal density of each cluster's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.compile import marginal as mg
from pymsem.compile.kernel import numba_impl, reference
from pymsem.compile.kernel.op import complete_reduction, kernel_arguments
from pymsem.compile.kernel.spec import kernel_spec
from pymsem.compile.matrices import level_matrices, pytensor_ops
from tests.conftest import KERNEL_MODES, MODEL2_TRUTH, REFERENCE_MODE, model2_spec
from tests.test_formulations import CASES, SIZES_TINY


def _equality_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """Cross-level invariant loadings (shared labels) and a within residual covariance."""
    m = ms.MSEM(data, cluster="schid")
    m.latent("X", ["x1", "x2", "x3"], equal_loadings=True)
    m.latent("Y", ["y1", "y2", "y3"], equal_loadings=True)
    m.path("Y", on="X", level="within")
    m.path("Y", on="X", level="between")
    m.covariance("y1", "y2", level="within")
    return m


def _intercept_only_spec(data: Any, level2: tuple[str, ...] = ()) -> ms.MSEM:
    """One variable, split into a within and a between part (a random-intercept model)."""
    return ms.MSEM.from_lavaan("level: 1\n y ~~ y\nlevel: 2\n y ~~ y", data, cluster="schid")


VALUES = {"loading_w": 0.8, "loading_b": 0.9, "path_w": 0.3, "path_b": 0.4, "lv_sd_w": 1.0}
VALUES |= {"lv_sd_b": 0.5, "resid_sd_w": 0.6, "resid_sd_b": 0.3, "resid_cor_w": 0.2}
VALUES |= {"intercept_b": 0.1}

KERNEL_CASES = {name: (spec, values) for name, (spec, values, _) in CASES.items()} | {
    "equality": (_equality_spec, VALUES),
    "intercept-only": (_intercept_only_spec, VALUES),
    "model2": (lambda d, level2=(): model2_spec(d), MODEL2_TRUTH),
}


@pytest.fixture(scope="module", params=list(KERNEL_CASES))
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    spec, values = KERNEL_CASES[request.param]
    level2 = CASES[request.param][2] if request.param in CASES else ()
    if request.param == "intercept-only":
        rng = np.random.default_rng(3)
        g = np.repeat(np.arange(len(SIZES_TINY)), SIZES_TINY)
        y = rng.normal(size=len(g)) + rng.normal(size=len(SIZES_TINY))[g]
        df = pd.DataFrame({"schid": g, "y": y})
    else:
        df = ms.simulate(spec(None, level2), values, len(SIZES_TINY), SIZES_TINY, seed=5)
    m = spec(df)
    st, cd = m.structure(), m.clustered_data()
    stats = mg.sufficient_statistics(st, cd)
    kspec = kernel_spec(st)
    rng = np.random.default_rng(11)
    vec = {}
    for name, g in st.groups.items():
        base = np.full(len(g), 0.6) if g.kind in ("lv_sd", "resid_sd") else np.full(len(g), 0.2)
        vec[name] = base + 0.1 * rng.uniform(size=len(g))
    theta = np.concatenate([vec[g] for g in kspec.groups])
    red = complete_reduction(stats)
    return {"m": m, "st": st, "stats": stats, "spec": kspec, "theta": theta, "vec": vec, "red": red}


def _args(c: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(kernel_arguments(c["theta"], c["spec"].ispec, c["spec"].fspec, *c["red"].values())[1:])


def test_kernel_value_equals_numpy_twin_and_graph(case: dict[str, Any]) -> None:
    import pytensor.tensor as pt

    f, _ = numba_impl.complete_value_and_grad(case["theta"], *_args(case))
    assert f == pytest.approx(reference.complete_logp(case["theta"], *_args(case)), rel=1e-12)
    vals = {k: pt.as_tensor_variable(v) for k, v in case["vec"].items()}
    st = case["st"]
    W = level_matrices(st.within, vals, pytensor_ops())
    B = level_matrices(st.between, vals, pytensor_ops())
    graph = mg.marginal_logp(case["stats"], W.Sigma, B.Sigma, B.nu).eval()
    assert f == pytest.approx(float(graph), rel=1e-12)


def test_kernel_gradient_equals_finite_differences(case: dict[str, Any]) -> None:
    theta, args = case["theta"], _args(case)
    _, g = numba_impl.complete_value_and_grad(theta, *args)
    h = 1e-6
    fd = np.array(
        [
            (reference.complete_logp(theta + h * e, *args) - reference.complete_logp(theta - h * e, *args))
            / (2 * h)
            for e in np.eye(len(theta))
        ]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.fixture(scope="module")
def graph_gradient(case: dict[str, Any]) -> list[np.ndarray]:
    """Value and gradient of the PyTensor graph the kernel replaced (Python linker: no compiling)."""
    import pytensor
    import pytensor.tensor as pt

    st, spec = case["st"], case["spec"]
    inputs = {k: pt.dvector(k) for k in case["vec"]}
    W = level_matrices(st.within, inputs, pytensor_ops())
    B = level_matrices(st.between, inputs, pytensor_ops())
    f = mg.marginal_logp(case["stats"], W.Sigma, B.Sigma, B.nu)
    xs = [inputs[g] for g in spec.groups]
    fn = pytensor.function(xs, [f, *pt.grad(f, xs)], mode=REFERENCE_MODE)
    return fn(*(case["vec"][g] for g in spec.groups))


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_op_gradient_equals_graph_gradient(case: dict[str, Any], graph_gradient: Any, mode: Any) -> None:
    """Through the Op (its pull-back and the concatenated parameter vector) in every backend."""
    import pytensor
    import pytensor.tensor as pt

    from pymsem.compile.kernel.op import CompleteKernel

    spec = case["spec"]
    # Static lengths, as in a sampled model (nutpie's JAX backend freezes the shapes): JAX
    # cannot split the gradient of the concatenated vector at positions known only at run time.
    xs = [pt.tensor(g, dtype="float64", shape=(len(case["vec"][g]),)) for g in spec.groups]
    f = CompleteKernel()(pt.concatenate(xs), spec.ispec, spec.fspec, *case["red"].values())[0]
    fn = pytensor.function(xs, [f, *pt.grad(f, xs)], mode=mode)
    got = fn(*(case["vec"][g] for g in spec.groups))
    for a, b in zip(got, graph_gradient, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_kernel_is_nan_where_a_covariance_is_not_positive_definite(case: dict[str, Any]) -> None:
    theta = case["theta"].copy()
    spec, st = case["spec"], case["st"]
    for name, g in st.groups.items():  # every within SD zero: the within covariance is 0
        if g.kind in ("resid_sd", "lv_sd") and g.level.short == "w":
            theta[spec.offsets[name] : spec.offsets[name] + len(g)] = 0.0
    f, g = numba_impl.complete_value_and_grad(theta, *_args(case))
    assert np.isnan(f) and np.isnan(g).all()


#: The kernel's numba signatures after the first case called it from Python (the parametrized
#: fixture runs the cases one after another in this module's worker).
_SIGNATURES: list[Any] = []


def test_kernel_serves_every_model_from_one_compiled_function(case: dict[str, Any]) -> None:
    """The structure is data to the kernel: no case adds a numba signature to the first one's.

    Compared with the first case, not counted from zero: a fitted model's compiled graph, run
    earlier in the same worker, calls the kernel with its own array types.
    """
    numba_impl.complete_value_and_grad(case["theta"], *_args(case))
    now = list(numba_impl.complete_value_and_grad.signatures)
    if not _SIGNATURES:
        _SIGNATURES.extend(now)
    assert now == _SIGNATURES


def test_compiled_model_uses_the_kernel() -> None:
    from pytensor.graph.traversal import ancestors

    spec, values = KERNEL_CASES["small"]
    df = ms.simulate(spec(None, ("W",)), values, len(SIZES_TINY), SIZES_TINY, seed=1)
    model = spec(df).compile().pymc_model
    ops = {type(v.owner.op).__name__ for v in ancestors([model["loglik"]]) if v.owner is not None}
    assert "CompleteKernel" in ops and "Cholesky" not in ops
