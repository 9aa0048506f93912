"""One fused operation for the Gaussian terms of every cluster: ``log|A_g|`` and ``tr(B_g' A_g^-1 B_g)``.

Every collapsed likelihood in pymsem needs, per cluster (or per cluster size), the log
determinant of a small covariance-like matrix ``A_g`` and a quadratic form of it with a
block of columns ``B_g`` (a cluster's scatter root, or its centred mean vector). Written
as PyTensor graphs, the batched Cholesky, the triangular solves and their gradients are
dozens of elementwise operations over the batch, each allocating a batch-sized array, or
a LAPACK call per matrix. Here the forward pass and the gradient are each one loop over
the batch (numba), with all per-matrix work in registers and the cache.

The gradient is the symmetric one, ``d log|A| = tr(A^-1 dA)`` and
``d tr(B'A^-1B) = -tr(A^-1 B B' A^-1 dA) + 2 tr(B' A^-1 dB)``, which is the derivative
along any symmetric perturbation of ``A``. The inputs are built symmetric by
construction in pymsem; only the lower triangle of ``A`` is read. A matrix that is not
positive definite gives ``nan`` for both outputs (as a LAPACK Cholesky does), so the
sampler rejects the point.

PyTensor's C/Python backend uses :meth:`perform` (NumPy); numba (nutpie) and JAX
(numpyro, blackjax) have their own implementations registered below.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.linalg import numba_cache_salt

__all__ = ["logdet_quad"]


def _np_forward(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    G = A.shape[0]
    logdet = np.full(G, np.nan)
    quad = np.full(G, np.nan)
    for g in range(G):
        try:
            L = np.linalg.cholesky(A[g])  # reads the lower triangle only
        except np.linalg.LinAlgError:
            continue
        logdet[g] = 2 * np.log(np.diag(L)).sum()
        quad[g] = np.square(np.linalg.solve(L, B[g])).sum()
    return logdet, quad


def _np_backward(
    A: np.ndarray, B: np.ndarray, g_logdet: np.ndarray, g_quad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    As = np.tril(A) + np.swapaxes(np.tril(A, -1), -1, -2)
    Ainv = np.linalg.inv(As)
    X = Ainv @ B
    gA = g_logdet[:, None, None] * Ainv - g_quad[:, None, None] * (X @ np.swapaxes(X, -1, -2))
    gB = 2 * g_quad[:, None, None] * X
    return gA, gB


class LogdetQuad(Op):
    """``(log|A_g|, tr(B_g' A_g^-1 B_g))`` for a batch: ``A`` (G, k, k), ``B`` (G, k, r)."""

    __props__ = ()

    def make_node(self, A: Any, B: Any) -> Apply:
        A = pt.as_tensor_variable(A).astype("float64")
        B = pt.as_tensor_variable(B).astype("float64")
        if A.ndim != 3 or B.ndim != 3:
            raise ValueError("logdet_quad takes A of shape (G, k, k) and B of shape (G, k, r).")
        out = pt.tensor(dtype="float64", shape=(A.type.shape[0],))
        return Apply(self, [A, B], [out, out.type()])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        logdet, quad = _np_forward(*inputs)
        outputs[0][0] = logdet
        outputs[1][0] = quad

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [(shapes[0][0],), (shapes[0][0],)]

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        from pytensor.gradient import DisconnectedType

        A, B = inputs
        g_logdet, g_quad = output_grads
        G = A.shape[0]
        if isinstance(g_logdet.type, DisconnectedType):
            g_logdet = pt.zeros((G,))
        if isinstance(g_quad.type, DisconnectedType):
            g_quad = pt.zeros((G,))
        return list(_GRAD_OP(A, B, g_logdet, g_quad))


class LogdetQuadGrad(Op):
    """The vector-Jacobian product of :class:`LogdetQuad`."""

    __props__ = ()

    def make_node(self, A: Any, B: Any, g_logdet: Any, g_quad: Any) -> Apply:
        ins = [pt.as_tensor_variable(v).astype("float64") for v in (A, B, g_logdet, g_quad)]
        return Apply(self, ins, [ins[0].type(), ins[1].type()])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        gA, gB = _np_backward(*inputs)
        outputs[0][0] = gA
        outputs[1][0] = gB

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [shapes[0], shapes[1]]


_OP = LogdetQuad()
_GRAD_OP = LogdetQuadGrad()


def logdet_quad(A: Any, B: Any) -> tuple[Any, Any]:
    """Per-matrix ``log|A_g|`` and ``tr(B_g' A_g^-1 B_g)`` (shapes (G,)).

    ``A`` is a batch of symmetric positive definite matrices (G, k, k) and ``B`` a batch of
    column blocks (G, k, r); a vector batch (G, k) is taken as one column.
    """
    B = pt.as_tensor_variable(B)
    if B.ndim == 2:
        B = B[:, :, None]
    logdet, quad = _OP(A, B)
    return logdet, quad


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    @numba_njit
    def _factor(A: np.ndarray, L: np.ndarray) -> bool:
        k = A.shape[0]
        for j in range(k):
            d = A[j, j]
            for m in range(j):
                d -= L[j, m] * L[j, m]
            if not d > 0.0:
                return False
            L[j, j] = np.sqrt(d)
            for i in range(j + 1, k):
                v = A[i, j]
                for m in range(j):
                    v -= L[i, m] * L[j, m]
                L[i, j] = v / L[j, j]
        return True

    @register_funcify_default_op_cache_key(LogdetQuad)
    def _funcify_forward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def forward(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            G, k, r = B.shape
            logdet = np.empty(G)
            quad = np.empty(G)
            L = np.zeros((k, k))
            y = np.empty(k)
            for g in range(G):
                if not _factor(A[g], L):
                    logdet[g] = np.nan
                    quad[g] = np.nan
                    continue
                s = 0.0
                for j in range(k):
                    s += np.log(L[j, j])
                logdet[g] = 2.0 * s
                q = 0.0
                for c in range(r):
                    for i in range(k):
                        v = B[g, i, c]
                        for m in range(i):
                            v -= L[i, m] * y[m]
                        y[i] = v / L[i, i]
                        q += y[i] * y[i]
                quad[g] = q
            return logdet, quad

        return forward, numba_cache_salt(__file__)

    @register_funcify_default_op_cache_key(LogdetQuadGrad)
    def _funcify_backward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def backward(
            A: np.ndarray, B: np.ndarray, g_logdet: np.ndarray, g_quad: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            G, k, r = B.shape
            gA = np.empty((G, k, k))
            gB = np.empty((G, k, r))
            L = np.zeros((k, k))
            Linv = np.zeros((k, k))
            X = np.empty((k, r))
            for g in range(G):
                if not _factor(A[g], L):
                    gA[g] = np.nan
                    gB[g] = np.nan
                    continue
                # L^-1 by forward substitution on the identity's columns (lower triangle only:
                # nothing below reads the upper one).
                for c in range(k):
                    for i in range(c, k):
                        v = 1.0 if i == c else 0.0
                        for m in range(c, i):
                            v -= L[i, m] * Linv[m, c]
                        Linv[i, c] = v / L[i, i]
                # X = A^-1 B = L^-T (L^-1 B)
                for c in range(r):
                    for i in range(k):
                        v = 0.0
                        for m in range(i + 1):
                            v += Linv[i, m] * B[g, m, c]
                        gB[g, i, c] = v  # L^-1 B, reused as scratch
                    for i in range(k):
                        v = 0.0
                        for m in range(i, k):
                            v += Linv[m, i] * gB[g, m, c]
                        X[i, c] = v
                gl = g_logdet[g]
                gq = g_quad[g]
                for i in range(k):
                    for j in range(i + 1):
                        ainv = 0.0
                        for m in range(i, k):
                            ainv += Linv[m, i] * Linv[m, j]
                        xx = 0.0
                        for c in range(r):
                            xx += X[i, c] * X[j, c]
                        v = gl * ainv - gq * xx
                        gA[g, i, j] = v
                        gA[g, j, i] = v
                for i in range(k):
                    for c in range(r):
                        gB[g, i, c] = 2.0 * gq * X[i, c]
            return gA, gB

        return backward, numba_cache_salt(__file__)


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # jax not installed: the JAX samplers are not available anyway
        return

    @jax_funcify.register(LogdetQuad)
    def _jax_forward(op: Any, **kwargs: Any) -> Any:
        import jax.numpy as jnp
        from jax.scipy.linalg import solve_triangular

        def forward(A: Any, B: Any) -> Any:
            L = jnp.linalg.cholesky(A)
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
            quad = jnp.sum(jnp.square(solve_triangular(L, B, lower=True)), axis=(-2, -1))
            return logdet, quad

        return forward

    @jax_funcify.register(LogdetQuadGrad)
    def _jax_backward(op: Any, **kwargs: Any) -> Any:
        import jax.numpy as jnp
        from jax.scipy.linalg import cho_solve

        def backward(A: Any, B: Any, g_logdet: Any, g_quad: Any) -> Any:
            L = jnp.linalg.cholesky(A)
            eye = jnp.broadcast_to(jnp.eye(A.shape[-1]), A.shape)
            Ainv = cho_solve((L, True), eye)
            X = cho_solve((L, True), B)
            gA = g_logdet[:, None, None] * Ainv - g_quad[:, None, None] * (X @ jnp.swapaxes(X, -1, -2))
            return gA, 2 * g_quad[:, None, None] * X

        return backward


_register_numba()
_register_jax()
