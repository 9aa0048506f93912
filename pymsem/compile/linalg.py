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

__all__ = ["MaskedGradCholesky", "chol_logdet", "cholesky"]


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


def cholesky(x: Any) -> Any:
    """Lower Cholesky factor of a (batch of) symmetric positive definite matrices (NaN if not PD)."""
    x = pt.as_tensor_variable(x)
    if x.ndim == 2:
        return _LOWER(x)
    return Blockwise(_LOWER)(x)


def chol_logdet(L: Any) -> Any:
    """``log|L L'|`` of (batched) Cholesky factors (the diagonal taken with a mask, for the same reason)."""
    n = L.type.shape[-1] if L.type.shape[-1] is not None else L.shape[-1]
    return 2 * pt.sum(pt.log(pt.sum(L * pt.eye(n), axis=-1)), axis=-1)
