"""Linear algebra for batched likelihoods: a Cholesky factorization whose gradient batches well.

PyTensor's ``Cholesky`` gradient (Murray 2016) extracts and rebuilds diagonals with
``diag(diagonal(.))``. On a batch of matrices (one per cluster or per missingness
pattern) that becomes a batched ``AllocDiag``, which the numba backend runs in
object mode, one Python call per matrix: in Model 3 that cost more than the rest of
the gradient together. The same gradient written with an identity mask is a few
elementwise operations that batch like everything else.

This module imports PyTensor; only the compile modules import it, so importing
pymsem alone does not.
"""

from __future__ import annotations

from typing import Any

import pytensor.tensor as pt
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.linalg.decomposition.cholesky import Cholesky
from pytensor.tensor.linalg.solvers.triangular import SolveTriangular

__all__ = [
    "MaskedGradCholesky",
    "batched_matmul",
    "chol_logdet",
    "cholesky",
    "numba_cache_salt",
    "solve_lower",
]


class MaskedGradCholesky(Cholesky):
    """``Cholesky`` with the same reverse-mode gradient written without ``AllocDiag``."""

    def pullback(self, inputs: Any, outputs: Any, gradients: Any) -> list[Any]:
        dz = gradients[0]
        L = outputs[0]
        if not self.lower:
            L, dz = L.T, dz.T
        eye = pt.eye(L.shape[0])
        phi = L.T.dot(dz)
        phi = pt.tril(phi) - 0.5 * phi * eye  # lower triangle, diagonal halved
        solve_upper = SolveTriangular(lower=False, b_ndim=2)
        s = solve_upper(L.T, solve_upper(L.T, phi.T).T)  # L^-T phi L^-1
        grad = pt.tril(s + s.T) - s * eye
        return [grad if self.lower else grad.T]


_LOWER = MaskedGradCholesky(lower=True)


#: Batches of matrices up to this size are factored with unrolled elementwise arithmetic.
UNROLL_MAX = 8


def _static_size(x: Any) -> int | None:
    n = x.type.shape[-1]
    return int(n) if n is not None and x.type.shape[-2] == n else None


def cholesky(x: Any) -> Any:
    """Lower Cholesky factor of a (batch of) symmetric positive definite matrices (NaN if not PD).

    A batch of small matrices (static size up to :data:`UNROLL_MAX`) is factored with the
    Cholesky-Banachiewicz recursion written out in elementwise operations over the batch:
    a batched LAPACK call costs a few microseconds per matrix in the numba backend (and as
    much again for each solve in its gradient), which dominates when there is one small
    matrix per cluster or per (cluster, missingness pattern).
    """
    x = pt.as_tensor_variable(x)
    if x.ndim == 2:
        return _LOWER(x)
    n = _static_size(x)
    if n is not None and n <= UNROLL_MAX:
        return _unrolled_cholesky(x, n)
    return Blockwise(_LOWER)(x)


def _unrolled_cholesky(x: Any, n: int) -> Any:
    L: list[list[Any]] = [[None] * n for _ in range(n)]
    zero = pt.zeros_like(x[..., 0, 0])
    for j in range(n):
        d = x[..., j, j]
        for k in range(j):
            d = d - pt.square(L[j][k])
        L[j][j] = pt.sqrt(d)  # NaN when not positive definite, as the LAPACK path
        for i in range(j + 1, n):
            v = x[..., i, j]
            for k in range(j):
                v = v - L[i][k] * L[j][k]
            L[i][j] = v / L[j][j]
    rows = [pt.stack([L[i][j] if j <= i else zero for j in range(n)], axis=-1) for i in range(n)]
    return pt.stack(rows, axis=-2)


def solve_lower(L: Any, b: Any) -> Any:
    """``L^-1 b`` for (batched) lower-triangular ``L`` and matrices ``b`` (unrolled when small)."""
    n = _static_size(L)
    if L.ndim == 2 or n is None or n > UNROLL_MAX:
        return pt.linalg.solve_triangular(L, b, lower=True)
    out: list[Any] = []
    for i in range(n):
        v = b[..., i, :]
        for k in range(i):
            v = v - L[..., i, k][..., None] * out[k]
        out.append(v / L[..., i, i][..., None])
    return pt.stack(out, axis=-2)


def chol_logdet(L: Any) -> Any:
    """``log|L L'|`` of (batched) Cholesky factors (the diagonal taken with a mask, for the same reason)."""
    n = L.type.shape[-1] if L.type.shape[-1] is not None else L.shape[-1]
    return 2 * pt.sum(pt.log(pt.sum(L * pt.eye(n), axis=-1)), axis=-1)


def batched_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` over a batch of small matrices, as broadcast products and a sum when small.

    A batched ``matmul`` runs one ``dot`` call per matrix in the numba backend (and two more
    in its gradient); for factor-sized matrices the call overhead dominates, while products
    and sums over the batch fuse into a few loops.
    """
    a, b = pt.as_tensor_variable(a), pt.as_tensor_variable(b)
    k = a.type.shape[-1]
    if k is None or k > UNROLL_MAX or a.ndim < 2 or b.ndim < 2:
        return pt.matmul(a, b)
    return pt.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def numba_cache_salt(source_file: str) -> int:
    """A hash of a fused Op's source file, returned with its numba implementation.

    PyTensor's on-disk numba cache key for a custom Op covers only the Op's class and props, so
    an edited implementation or a new pymsem version must change the key itself, or numba
    would run a stale compiled loop.
    """
    import hashlib
    from pathlib import Path

    return int(hashlib.sha256(Path(source_file).read_bytes()).hexdigest()[:12], 16)
