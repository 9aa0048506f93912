"""Model-implied matrices of a level, written once for NumPy draws and PyTensor graphs.

The same code builds ``Lambda``, ``B``, ``Psi``, ``Theta`` and the implied
covariance ``Sigma = Lambda (I-B)^-1 Psi (I-B)^-T Lambda' + Theta`` inside the
PyMC model (PyTensor, no batch dimension) and on posterior draws or for
simulation (NumPy, any leading batch dimensions), so the likelihood, the
standardized estimates and the simulator cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pymsem.compile.structure import LevelStructure

__all__ = ["NUMPY", "PYTENSOR", "LevelMatrices", "level_matrices"]


class _NumpyOps:
    """Array operations on NumPy arrays with leading batch dimensions."""

    def scatter(
        self, fixed: np.ndarray, index: tuple[np.ndarray, ...], vals: Any, src: np.ndarray
    ) -> np.ndarray:
        vals = np.asarray(vals, dtype=float)
        batch = vals.shape[:-1]
        out = np.array(np.broadcast_to(fixed, batch + fixed.shape), dtype=float)
        if len(src):
            out[(Ellipsis, *index)] = vals[..., src]
        return out

    def batch_shape(self, vals: dict[str, Any]) -> tuple[int, ...]:
        for v in vals.values():
            return np.shape(v)[:-1]
        return ()

    def matmul(self, a: Any, b: Any) -> Any:
        return np.matmul(a, b)

    def mT(self, a: Any) -> Any:
        return np.swapaxes(a, -1, -2)

    def square(self, a: Any) -> Any:
        return np.square(a)

    def get(self, vals: dict[str, Any], name: str, batch: tuple[int, ...]) -> Any:
        return vals.get(name, np.zeros((*batch, 0)))


class _PytensorOps:
    """The same operations on PyTensor variables (no batch dimensions)."""

    def __init__(self) -> None:
        import pytensor.tensor as pt

        self.pt = pt

    def scatter(self, fixed: np.ndarray, index: tuple[np.ndarray, ...], vals: Any, src: np.ndarray) -> Any:
        out = self.pt.as_tensor_variable(np.asarray(fixed, dtype=float))
        if len(src):
            out = self.pt.set_subtensor(out[index], vals[src])
        return out

    def batch_shape(self, vals: dict[str, Any]) -> tuple[int, ...]:
        return ()

    def matmul(self, a: Any, b: Any) -> Any:
        return self.pt.dot(a, b)

    def mT(self, a: Any) -> Any:
        return a.T

    def square(self, a: Any) -> Any:
        return self.pt.square(a)

    def get(self, vals: dict[str, Any], name: str, batch: tuple[int, ...]) -> Any:
        return vals.get(name, self.pt.zeros((0,)))


NUMPY = _NumpyOps()
PYTENSOR: Any = None  # created lazily so that importing pymsem does not import pytensor


def pytensor_ops() -> _PytensorOps:
    global PYTENSOR
    if PYTENSOR is None:
        PYTENSOR = _PytensorOps()
    return PYTENSOR


@dataclass
class LevelMatrices:
    """Matrices of one level (arrays or tensors)."""

    Lambda: Any
    B: Any
    A: Any  # (I - B)^-1
    Psi: Any  # covariance of the latent disturbances zeta
    Theta: Any  # covariance of the indicator residuals
    Sigma_eta: Any  # implied covariance of the latents
    Sigma: Any  # implied covariance of the observed variables
    nu: Any | None  # intercepts (between level only)


def _sym_cov(ops: Any, sd: Any, cor_idx: np.ndarray, cor: Any, n: int, batch: tuple[int, ...]) -> Any:
    """``diag(sd) R diag(sd)`` with the correlations ``cor`` at the pairs ``cor_idx``."""
    eye = np.eye(n)
    if len(cor_idx):
        i, j, k = cor_idx[:, 0], cor_idx[:, 1], cor_idx[:, 2]
        R = ops.scatter(eye, (i, j), cor, k)
        R = ops.scatter(np.zeros((n, n)), (j, i), cor, k) + R
    else:
        R = eye
    D = sd[..., :, None] * R
    return D * sd[..., None, :]


def level_matrices(ls: LevelStructure, vals: dict[str, Any], ops: Any = NUMPY) -> LevelMatrices:
    """Assemble a level's matrices from the free-parameter vectors ``vals``.

    Parameters
    ----------
    ls
        The level's structure.
    vals
        Parameter vectors keyed by group name (``"loading_w"``, ...); with
        NumPy they may carry leading batch dimensions (chains, draws).
    ops
        :data:`NUMPY` or :func:`pytensor_ops`.
    """
    s = ls.level.short
    batch = ops.batch_shape(vals)
    get = lambda kind: ops.get(vals, f"{kind}_{s}", batch)  # noqa: E731
    lf, bf = ls.lambda_free, ls.beta_free
    Lambda = ops.scatter(ls.lambda_fixed, (lf[:, 0], lf[:, 1]), get("loading"), lf[:, 2])
    B = ops.scatter(np.zeros((ls.n_lat, ls.n_lat)), (bf[:, 0], bf[:, 1]), get("path"), bf[:, 2])
    A = np.eye(ls.n_lat)
    if ls.depth:
        # B is nilpotent (acyclic regressions), so (I - B)^-1 = I + B + ... + B^depth.
        power = B
        A = A + B
        for _ in range(ls.depth - 1):
            power = ops.matmul(power, B)
            A = A + power
    lv_sd = ops.scatter(ls.lv_sd_fixed, (ls.lv_sd_free[:, 0],), get("lv_sd"), ls.lv_sd_free[:, 1])
    Psi = _sym_cov(ops, lv_sd, ls.lv_cor, get("lv_cor"), ls.n_lat, batch)
    rsd = ops.scatter(ls.resid_sd_fixed, (ls.resid_sd_free[:, 0],), get("resid_sd"), ls.resid_sd_free[:, 1])
    Theta = _sym_cov(ops, rsd, ls.resid_cor, get("resid_cor"), ls.n_obs, batch)
    if ls.n_lat == 0:
        # No latent variables at this level (items' between variances only): no products of
        # empty matrices in the graph, which PyTensor's dot rewrites fail on.
        Sigma_eta, Sigma = Psi, Theta
    else:
        Sigma_eta = ops.matmul(ops.matmul(A, Psi), ops.mT(A))
        Sigma = ops.matmul(ops.matmul(Lambda, Sigma_eta), ops.mT(Lambda)) + Theta
    nu = None
    if len(ls.intercept_free):
        ic = ls.intercept_free
        nu = ops.scatter(np.zeros(ls.n_obs), (ic[:, 0],), get("intercept"), ic[:, 1])
    return LevelMatrices(Lambda, B, A, Psi, Theta, Sigma_eta, Sigma, nu)
