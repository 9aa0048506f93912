"""The kernel's NumPy twin: the same log-likelihood, written densely, for the tests.

It shares nothing with the compiled kernel but the packed specification, so a test that
compares the two checks the kernel's matrix algebra, its Cholesky factors and its gradient
(against finite differences of this function).
"""

from __future__ import annotations

import numpy as np

from pymsem.compile.kernel.spec import decode_level

__all__ = ["complete_logp", "level_covariance"]

_LOG2PI = float(np.log(2 * np.pi))


def level_covariance(theta: np.ndarray, ispec: np.ndarray, fspec: np.ndarray, io: int, fo: int):
    """``(Sigma, nu, next io, next fo)`` of the level packed at ``(io, fo)``."""
    d, io2, fo2 = decode_level(ispec, fspec, io, fo)
    p, m = d["p"], d["m"]
    Lam = d["lambda_fixed"].copy()
    for r, c, k in d["loading"]:
        Lam[r, c] = theta[k]
    B = np.zeros((m, m))
    for r, c, k in d["path"]:
        B[r, c] = theta[k]

    def cov(sd0: np.ndarray, sds: np.ndarray, cors: np.ndarray, n: int) -> np.ndarray:
        sd = sd0.copy()
        for i, k in sds:
            sd[i] = theta[k]
        R = np.eye(n)
        for i, j, k in cors:
            R[i, j] = R[j, i] = theta[k]
        return sd[:, None] * R * sd[None, :]

    Psi = cov(d["lv_sd_fixed"], d["lv_sd"], d["lv_cor"], m)
    Theta = cov(d["resid_sd_fixed"], d["resid_sd"], d["resid_cor"], p)
    A = np.linalg.inv(np.eye(m) - B)
    Sigma = Lam @ A @ Psi @ A.T @ Lam.T + Theta
    nu = np.zeros(p)
    for i, k in d["intercept"]:
        nu[i] = theta[k]
    return Sigma, nu, io2, fo2


def complete_logp(
    theta: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    within_scatter: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    means: np.ndarray,
    scatter: np.ndarray,
    totals: np.ndarray,
) -> float:
    """The collapsed log-likelihood of complete data, reduced by cluster size.

    ``totals`` is ``(N - G, sum_g log n_g)``; see :mod:`pymsem.compile.marginal` for the
    formula.
    """
    W, _, io, fo = level_covariance(theta, ispec, fspec, 0, 0)
    SB, nu, _, _ = level_covariance(theta, ispec, fspec, io, fo)
    p1, pb = W.shape[0], SB.shape[0]
    n_within, log_n_sum = totals
    _, ldW = np.linalg.slogdet(W)
    f = -0.5 * n_within * (p1 * _LOG2PI + ldW) - 0.5 * np.trace(np.linalg.solve(W, within_scatter))
    f -= 0.5 * p1 * log_n_sum
    for n, c, mk, Sk in zip(sizes, counts, means, scatter, strict=True):
        V = SB.copy()
        V[:p1, :p1] += W / n
        d = mk - nu
        _, ldV = np.linalg.slogdet(V)
        M = Sk + c * np.outer(d, d)
        f += -0.5 * c * (pb * _LOG2PI + ldV) - 0.5 * np.trace(np.linalg.solve(V, M))
    return float(f)
