"""The fused per-cluster Gaussian terms against NumPy and finite differences, in each backend."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pymsem.compile.logdet_quad import logdet_quad
from tests.conftest import KERNEL_MODES

G, K, R = 5, 4, 3


@pytest.fixture(scope="module")
def values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"M": rng.normal(size=(G, K, K)), "B": rng.normal(size=(G, K, R)), "w": rng.normal(size=(2, G))}


def _spd(M: np.ndarray) -> np.ndarray:
    return M @ np.swapaxes(M, -1, -2) + np.eye(M.shape[-1])


def _objective(M: np.ndarray, B: np.ndarray, w: np.ndarray) -> float:
    A = _spd(M)
    logdet = np.linalg.slogdet(A)[1]
    quad = np.einsum("gkr,gkr->g", B, np.linalg.solve(A, B))
    return float(w[0] @ logdet + w[1] @ quad)


def _numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        out[idx] = (f(up) - f(down)) / (2 * eps)
    return out


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_values_and_gradient(values: dict[str, np.ndarray], mode: str) -> None:
    M, B, w = values["M"], values["B"], values["w"]
    Mx, Bx = pt.tensor3("M"), pt.tensor3("B")
    # A built symmetric from M, as every caller in pymsem builds it.
    logdet, quad = logdet_quad(pt.matmul(Mx, Mx.transpose(0, 2, 1)) + pt.eye(K)[None], Bx)
    f = pt.sum(w[0] * logdet + w[1] * quad)
    fn = pytensor.function([Mx, Bx], [logdet, quad, *pt.grad(f, [Mx, Bx])], mode=mode)
    got_logdet, got_quad, gM, gB = fn(M, B)
    A = _spd(M)
    np.testing.assert_allclose(got_logdet, np.linalg.slogdet(A)[1], rtol=1e-12)
    np.testing.assert_allclose(got_quad, np.einsum("gkr,gkr->g", B, np.linalg.solve(A, B)), rtol=1e-12)
    np.testing.assert_allclose(gM, _numeric_grad(lambda m: _objective(m, B, w), M), atol=1e-6)
    np.testing.assert_allclose(gB, _numeric_grad(lambda b: _objective(M, b, w), B), atol=1e-6)


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_one_output_alone_and_vector_columns(values: dict[str, np.ndarray], mode: str) -> None:
    """Only the log determinant used (the quadratic form's gradient disconnected); a (G, k) vector batch."""
    M, B = values["M"], values["B"][:, :, 0]
    Mx, bx = pt.tensor3("M"), pt.matrix("b")
    A = pt.matmul(Mx, Mx.transpose(0, 2, 1)) + pt.eye(K)[None]
    logdet, quad = logdet_quad(A, bx)
    fn = pytensor.function([Mx, bx], [quad, pt.grad(pt.sum(logdet), Mx)], mode=mode)
    got_quad, gM = fn(M, B)
    An = _spd(M)
    np.testing.assert_allclose(
        got_quad, np.einsum("gk,gk->g", B, np.linalg.solve(An, B[..., None])[..., 0]), rtol=1e-12
    )
    ref = _numeric_grad(lambda m: float(np.linalg.slogdet(_spd(m))[1].sum()), M)
    np.testing.assert_allclose(gM, ref, atol=1e-6)


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_not_positive_definite_gives_nan(mode: str) -> None:
    A = np.stack([np.eye(3), -np.eye(3)])
    Ax, Bx = pt.tensor3("A"), pt.tensor3("B")
    logdet, quad = pytensor.function([Ax, Bx], list(logdet_quad(Ax, Bx)), mode=mode)(A, np.ones((2, 3, 1)))
    assert logdet[0] == pytest.approx(0.0) and quad[0] == pytest.approx(3.0)
    assert np.isnan(logdet[1]) and np.isnan(quad[1])
