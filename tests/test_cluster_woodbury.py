"""The fused per-cluster Woodbury likelihood against its definition and finite differences, in each backend."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pymsem.compile.cluster_woodbury import (
    GRAD_INPUTS,
    INPUTS,
    ClusterWoodbury,
    _np_value_and_grad,
    packed_lower,
)
from tests.conftest import KERNEL_MODES, REFERENCE_MODE

# Model 3's layout, smaller: 3 within factors (INT on REL, ACH on INT and REL), random slopes
# in (1, 0) and (0, 1); 3 between factors, so the capacitance is 6 x 6; 5 level-1 variables
# and one level-2 column; two cluster sizes. One cross-loading in each level's pattern.
R, C, J, MB = (1, 2), (0, 1), (0, 1), 3
G, M, Q, P1, PB, KS = 6, 3, 6, 5, 6, 2
LAM_W = ((0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (4, 1))
LAM_B = ((0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 2), (1, 1))
U_PAT = LAM_B + tuple((i, MB + a) for i, a in LAM_W)
OP = ClusterWoodbury(R, C, J, MB, M, P1, PB, LAM_W, U_PAT)


def _masked(rng: np.random.Generator, shape: tuple[int, int], pattern: tuple) -> np.ndarray:
    out = np.zeros(shape)
    for i, a in pattern:
        out[i, a] = rng.normal()
    return out


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    A = rng.normal(size=(M, M))
    Bm = rng.normal(size=(M, M))
    Um = rng.normal(size=(KS, Q, Q))
    IB0 = np.eye(M)
    IB0[1, 0], IB0[2, 0], IB0[2, 1] = -0.3, -0.2, -0.4
    n = rng.integers(1, 30, size=G).astype(float)
    Y = rng.normal(size=(G, P1, 8))
    return {
        "u": 0.3 * rng.normal(size=(G, 2)),
        "IB0": IB0,
        "Psi_inv": A @ A.T + M * np.eye(M),
        "LtL": Bm @ Bm.T + np.eye(M),
        "LamD": _masked(rng, (P1, M), LAM_W),
        "S": packed_lower(Y @ np.swapaxes(Y, 1, 2)),
        "w": n - 1,
        "n": n,
        "size": rng.integers(0, KS, size=G),
        "UEU": Um @ np.swapaxes(Um, 1, 2) + np.eye(Q),
        "z": rng.normal(size=(G, PB)),
        "nu": rng.normal(size=PB),
        "Einv": rng.uniform(0.5, 2.0, size=(KS, PB)),
        "U": _masked(rng, (PB, Q), U_PAT),
    }


def _direct(x: dict[str, np.ndarray]) -> float:
    """``f`` cluster by cluster with dense NumPy algebra, written from the definition."""
    i, j = np.tril_indices(P1)
    total = 0.0
    for g in range(G):
        IB = x["IB0"].copy()
        for r, c, k in zip(R, C, J, strict=True):
            IB[r, c] -= x["u"][g, k]
        Sinv = IB.T @ x["Psi_inv"] @ IB
        Cg = Sinv + x["LtL"]
        Kg = x["UEU"][x["size"][g]].copy()
        Kg[MB:, MB:] += x["n"][g] * Sinv
        S = np.zeros((P1, P1))
        S[i, j] = x["S"][g]
        S[j, i] = x["S"][g]
        Mg = x["LamD"].T @ S @ x["LamD"]
        v = x["U"].T @ ((x["z"][g] - x["nu"]) * x["Einv"][x["size"][g]])
        total += (
            -0.5 * x["w"][g] * np.linalg.slogdet(Cg)[1]
            + 0.5 * np.trace(np.linalg.solve(Cg, Mg))
            - 0.5 * np.linalg.slogdet(Kg)[1]
            + 0.5 * v @ np.linalg.solve(Kg, v)
        )
    return total


def _numeric_grad(x: dict[str, np.ndarray], name: str, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x[name])
    symmetric = name in ("Psi_inv", "LtL", "UEU")
    pattern = {"LamD": LAM_W, "U": U_PAT}.get(name)
    for idx in np.ndindex(out.shape):
        if symmetric and idx[-1] > idx[-2]:
            continue
        if pattern is not None and idx not in pattern:
            continue  # structurally zero: not read, gradient zero
        up = {k: v.copy() for k, v in x.items()}
        down = {k: v.copy() for k, v in x.items()}
        mirror = (*idx[:-2], idx[-1], idx[-2]) if symmetric else idx
        for d, sign in ((up, 1), (down, -1)):
            d[name][idx] += sign * eps
            if symmetric and idx[-1] != idx[-2]:  # a symmetric perturbation
                d[name][mirror] += sign * eps
        val = (_direct(up) - _direct(down)) / (2 * eps)
        if symmetric and idx[-1] != idx[-2]:
            out[idx] = out[mirror] = val / 2  # the symmetric gradient splits it evenly
        else:
            out[idx] = val
    return out


def test_reference_matches_definition_and_finite_differences(inputs: dict[str, np.ndarray]) -> None:
    res = _np_value_and_grad(OP, *(inputs[k] for k in INPUTS))
    assert res[0] == pytest.approx(_direct(inputs), rel=1e-12)
    for name, got in zip(GRAD_INPUTS, res[1:], strict=True):
        np.testing.assert_allclose(got, _numeric_grad(inputs, name), atol=1e-6, err_msg=name)


def _symbols(x: dict[str, np.ndarray]) -> list:
    return [
        pt.tensor(k, dtype="int64" if k == "size" else "float64", shape=(None,) * x[k].ndim) for k in INPUTS
    ]


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_backends_match_reference(inputs: dict[str, np.ndarray], mode: str) -> None:
    """Value and gradients through PyTensor's grad (the pull-back), compiled in each backend."""
    syms = _symbols(inputs)
    f = OP(*syms)[0]
    wrt = [syms[INPUTS.index(k)] for k in GRAD_INPUTS]
    fn = pytensor.function(syms, [f, *pt.grad(2.0 * f, wrt)], mode=mode)
    got = fn(*(inputs[k] for k in INPUTS))
    ref = _np_value_and_grad(OP, *(inputs[k] for k in INPUTS))
    assert float(got[0]) == pytest.approx(float(ref[0]), rel=1e-12)
    for name, a, b in zip(GRAD_INPUTS, got[1:], ref[1:], strict=True):
        if name in ("Psi_inv", "LtL", "UEU"):
            # Symmetric inputs: JAX's gradient differs from the symmetric one by an antisymmetric
            # part, which no symmetric perturbation sees; compare a + a'.
            a = a + np.swapaxes(a, -1, -2)
            b = b + np.swapaxes(b, -1, -2)
        np.testing.assert_allclose(a, 2.0 * b, rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("mode", [pytest.param(REFERENCE_MODE, id="py"), "NUMBA"])
def test_not_positive_definite_gives_nan(inputs: dict[str, np.ndarray], mode: str) -> None:
    bad = dict(inputs)
    bad["LtL"] = -10.0 * np.eye(M)
    syms = _symbols(inputs)
    out = OP(*syms)
    fn = pytensor.function(syms, [out[0], out[1]], mode=mode)
    f, gu = fn(*(bad[k] for k in INPUTS))
    assert np.isnan(f) and np.isnan(gu).all()


def test_second_derivative_is_refused(inputs: dict[str, np.ndarray]) -> None:
    syms = _symbols(inputs)
    f = OP(*syms)[0]
    g = pt.grad(f, syms[0])
    with pytest.raises(NotImplementedError, match="Second derivatives"):
        pt.grad(pt.sum(g), syms[0])
