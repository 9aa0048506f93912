"""The compiled kernel: implied covariances, collapsed log-likelihood and gradient in one call.

Every function here takes the packed specification (:mod:`pymsem.compile.kernel.spec`) as
data, so numba compiles it once for all models and caches it on disk (``cache=True``);
a new model costs no compilation of its own. Matrices are factor- and variable-sized (a
few to a few dozen rows), so plain loops beat LAPACK calls, whose per-call overhead and
compile time (tens of seconds, cold, in PyTensor's numba backend) dominated before.

The gradient is the reverse pass written out: with ``G = df/dSigma`` (symmetric),
``Sigma = Lambda S_eta Lambda' + Theta`` and ``S_eta = A Psi A'``, ``A = (I - B)^-1``::

    df/dLambda = 2 G Lambda S_eta,     H = df/dS_eta = Lambda' G Lambda,
    df/dPsi = A' H A,                  df/dB = A' (2 H A Psi) A',
    df/dTheta = G,

and for ``Psi_ij = sd_i R_ij sd_j``: ``df/dsd_k = 2 sum_j G_kj R_kj sd_j``,
``df/dR_ij = 2 G_ij sd_i sd_j``. Floating-point flags are IEEE (no fast-math), so the same
inputs give the same bits in every process (see :mod:`pymsem.compile.reproducible`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["complete_core", "complete_value_and_grad", "level_grads_to_theta", "level_parts"]

_LOG2PI = float(np.log(2 * np.pi))
_jit = numba.njit(cache=True, fastmath=False, nogil=True)
#: Small helpers of hot loops, inlined where they are called.
_inline = numba.njit(cache=True, fastmath=False, nogil=True, inline="always")


@_inline
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` of two 1-d arrays of one length, in four interleaved partial sums: the same
    rounding on every call (a fixed order), and four independent chains, which the CPU overlaps
    (without fastmath LLVM keeps one chain's order, one add after another). Callers pass slices,
    so that the indices count from 0 and LLVM drops numba's negative-index checks."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    r = 0
    while r + 4 <= n:
        s0 += a[r] * b[r]
        s1 += a[r + 1] * b[r + 1]
        s2 += a[r + 2] * b[r + 2]
        s3 += a[r + 3] * b[r + 3]
        r += 4
    while r < n:
        s0 += a[r] * b[r]
        r += 1
    return (s0 + s1) + (s2 + s3)


@_inline
def _range_sum(a: np.ndarray) -> float:
    """``sum(a)`` of a 1-d array in four interleaved partial sums (see :func:`_dot`)."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    r = 0
    while r + 4 <= n:
        s0 += a[r]
        s1 += a[r + 1]
        s2 += a[r + 2]
        s3 += a[r + 3]
        r += 4
    while r < n:
        s0 += a[r]
        r += 1
    return (s0 + s1) + (s2 + s3)


@_inline
def _axpy_dot(out: np.ndarray, c: float, d: np.ndarray, lam: float, w: np.ndarray, first: bool) -> float:
    """``out = c * d + lam * w`` (``first``) or ``out += lam * w``, and ``sum(d * w)`` (summed
    as :func:`_dot` sums), in one pass over the rows."""
    n = d.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    r = 0
    while r + 4 <= n:
        w0, w1, w2, w3 = w[r], w[r + 1], w[r + 2], w[r + 3]
        x0, x1, x2, x3 = d[r], d[r + 1], d[r + 2], d[r + 3]
        s0 += x0 * w0
        s1 += x1 * w1
        s2 += x2 * w2
        s3 += x3 * w3
        if first:
            out[r] = c * x0 + lam * w0
            out[r + 1] = c * x1 + lam * w1
            out[r + 2] = c * x2 + lam * w2
            out[r + 3] = c * x3 + lam * w3
        else:
            out[r] += lam * w0
            out[r + 1] += lam * w1
            out[r + 2] += lam * w2
            out[r + 3] += lam * w3
        r += 4
    while r < n:
        s0 += d[r] * w[r]
        if first:
            out[r] = c * d[r] + lam * w[r]
        else:
            out[r] += lam * w[r]
        r += 1
    return (s0 + s1) + (s2 + s3)


@_jit
def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, k = a.shape
    m = b.shape[1]
    out = np.zeros((n, m))
    for i in range(n):
        for t in range(k):
            v = a[i, t]
            if v != 0.0:
                for j in range(m):
                    out[i, j] += v * b[t, j]
    return out


@_jit
def _mm_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a b'`` without forming ``b'``."""
    n = a.shape[0]
    m = b.shape[0]
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            out[i, j] = _dot(a[i], b[j])
    return out


@_jit
def _eye(n: int) -> np.ndarray:
    out = np.zeros((n, n))
    for i in range(n):
        out[i, i] = 1.0
    return out


@_jit
def _transpose(a: np.ndarray) -> np.ndarray:
    n, m = a.shape
    out = np.empty((m, n))
    for i in range(n):
        for j in range(m):
            out[j, i] = a[i, j]
    return out


@_jit
def _cholesky(A: np.ndarray) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor and ``log|A|`` (``nan`` when ``A`` is not positive definite)."""
    n = A.shape[0]
    L = np.zeros((n, n))
    logdet = 0.0
    for j in range(n):
        d = A[j, j]
        for k in range(j):
            d -= L[j, k] * L[j, k]
        if not d > 0.0:
            return L, np.nan
        L[j, j] = np.sqrt(d)
        logdet += 2.0 * np.log(L[j, j])
        for i in range(j + 1, n):
            v = A[i, j]
            for k in range(j):
                v -= L[i, k] * L[j, k]
            L[i, j] = v / L[j, j]
    return L, logdet


@_jit
def _lower_inverse(L: np.ndarray) -> np.ndarray:
    """``L^-1`` of a lower-triangular ``L``, by forward substitution."""
    n = L.shape[0]
    Li = np.zeros((n, n))
    for c in range(n):
        Li[c, c] = 1.0 / L[c, c]
        for i in range(c + 1, n):
            v = 0.0
            for k in range(c, i):
                v -= L[i, k] * Li[k, c]
            Li[i, c] = v / L[i, i]
    return Li


@_jit
def _inverse_pd(A: np.ndarray, inv: np.ndarray) -> float:
    """``inv = A^-1`` through a Cholesky factor; returns ``log|A|`` (``nan`` if not PD)."""
    n = A.shape[0]
    L, logdet = _cholesky(A)
    if np.isnan(logdet):
        return np.nan
    Li = _lower_inverse(L)  # A^-1 = L^-T L^-1
    for i in range(n):
        for j in range(i + 1):
            v = 0.0
            for k in range(i, n):
                v += Li[k, i] * Li[k, j]
            inv[i, j] = v
            inv[j, i] = v
    return logdet


@_jit
def level_parts(theta: np.ndarray, ispec: np.ndarray, fspec: np.ndarray, io: int, fo: int):
    """The level's ``Lambda, B, Psi``, SDs and correlations, ``nu``; where the next level starts."""
    p, m = ispec[io], ispec[io + 1]
    c = io + 3
    # Element by element, not a reshape: numba's reshape brings its error formatting along,
    # which costs seconds of compiling on a new machine.
    Lam = np.empty((p, m))
    for i in range(p):
        for j in range(m):
            Lam[i, j] = fspec[fo + i * m + j]
    lv_sd = fspec[fo + p * m : fo + p * m + m].copy()
    rsd = fspec[fo + p * m + m : fo + p * m + m + p].copy()
    fo_next = fo + p * m + m + p
    n = ispec[c]
    c += 1
    for _ in range(n):
        Lam[ispec[c], ispec[c + 1]] = theta[ispec[c + 2]]
        c += 3
    B = np.zeros((m, m))
    n = ispec[c]
    c += 1
    for _ in range(n):
        B[ispec[c], ispec[c + 1]] = theta[ispec[c + 2]]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        lv_sd[ispec[c]] = theta[ispec[c + 1]]
        c += 2
    Rp = _eye(m)
    n = ispec[c]
    c += 1
    for _ in range(n):
        Rp[ispec[c], ispec[c + 1]] = theta[ispec[c + 2]]
        Rp[ispec[c + 1], ispec[c]] = theta[ispec[c + 2]]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        rsd[ispec[c]] = theta[ispec[c + 1]]
        c += 2
    Rt = _eye(p)
    n = ispec[c]
    c += 1
    for _ in range(n):
        Rt[ispec[c], ispec[c + 1]] = theta[ispec[c + 2]]
        Rt[ispec[c + 1], ispec[c]] = theta[ispec[c + 2]]
        c += 3
    nu = np.zeros(p)
    n = ispec[c]
    c += 1
    for _ in range(n):
        nu[ispec[c]] = theta[ispec[c + 1]]
        c += 2
    Psi = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            Psi[i, j] = lv_sd[i] * Rp[i, j] * lv_sd[j]
    return Lam, B, Psi, lv_sd, Rp, rsd, Rt, nu, c, fo_next


@_jit
def _level_forward(theta: np.ndarray, ispec: np.ndarray, fspec: np.ndarray, io: int, fo: int):
    """The level's implied covariance and matrices, from the spec at ``(io, fo)``."""
    Lam, B, Psi, lv_sd, Rp, rsd, Rt, nu, c, fo_next = level_parts(theta, ispec, fspec, io, fo)
    p, m, depth = ispec[io], ispec[io + 1], ispec[io + 2]
    # B is nilpotent (acyclic regressions): (I - B)^-1 = I + B + ... + B^depth.
    A = _eye(m)
    for _ in range(depth):
        A = _matmul(B, A)
        for i in range(m):
            A[i, i] += 1.0
    Seta = _matmul(_matmul(A, Psi), _transpose(A))
    Sigma = _matmul(_matmul(Lam, Seta), _transpose(Lam))
    for i in range(p):
        for j in range(p):
            Sigma[i, j] += rsd[i] * Rt[i, j] * rsd[j]
    return Sigma, nu, Lam, A, Psi, Rp, lv_sd, Rt, rsd, Seta, c, fo_next


@_jit
def _level_backward(
    G: np.ndarray,
    gnu: np.ndarray,
    ispec: np.ndarray,
    io: int,
    Lam: np.ndarray,
    A: np.ndarray,
    Psi: np.ndarray,
    Rp: np.ndarray,
    lv_sd: np.ndarray,
    Rt: np.ndarray,
    rsd: np.ndarray,
    Seta: np.ndarray,
    gtheta: np.ndarray,
) -> None:
    """Add ``df/dtheta`` of one level to ``gtheta``, given ``G = df/dSigma`` and ``df/dnu``."""
    dLam = _matmul(_matmul(G, Lam), Seta)
    H = _matmul(_matmul(_transpose(Lam), G), Lam)
    At = _transpose(A)
    dPsi = _matmul(_matmul(At, H), A)
    dB = _matmul(_matmul(At, _matmul(_matmul(H, A), Psi)), At)
    for i in range(dLam.shape[0]):
        for j in range(dLam.shape[1]):
            dLam[i, j] *= 2.0
    for i in range(dB.shape[0]):
        for j in range(dB.shape[1]):
            dB[i, j] *= 2.0
    level_grads_to_theta(dLam, dB, dPsi, G, gnu, ispec, io, Rp, lv_sd, Rt, rsd, gtheta)


@_jit
def level_grads_to_theta(
    dLam: np.ndarray,
    dB: np.ndarray,
    dPsi: np.ndarray,
    dTheta: np.ndarray,
    gnu: np.ndarray,
    ispec: np.ndarray,
    io: int,
    Rp: np.ndarray,
    lv_sd: np.ndarray,
    Rt: np.ndarray,
    rsd: np.ndarray,
    gtheta: np.ndarray,
) -> None:
    """Add to ``gtheta`` the gradient of a level's parameters given ``df/dLambda``, ``df/dB``,
    ``df/dPsi`` and ``df/dTheta`` (both symmetric) and ``df/dnu``.

    With ``Psi_ij = sd_i R_ij sd_j``: ``df/dsd_k = 2 sum_j dPsi_kj R_kj sd_j``, ``df/dR_ij =
    2 dPsi_ij sd_i sd_j``; the residuals' SDs and correlations likewise from ``dTheta``.
    """
    p, m = dLam.shape
    c = io + 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        gtheta[ispec[c + 2]] += dLam[ispec[c], ispec[c + 1]]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        gtheta[ispec[c + 2]] += dB[ispec[c], ispec[c + 1]]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        k = ispec[c]
        v = 0.0
        for j in range(m):
            v += dPsi[k, j] * Rp[k, j] * lv_sd[j]
        gtheta[ispec[c + 1]] += 2.0 * v
        c += 2
    n = ispec[c]
    c += 1
    for _ in range(n):
        i, j = ispec[c], ispec[c + 1]
        gtheta[ispec[c + 2]] += 2.0 * dPsi[i, j] * lv_sd[i] * lv_sd[j]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        k = ispec[c]
        v = 0.0
        for j in range(p):
            v += dTheta[k, j] * Rt[k, j] * rsd[j]
        gtheta[ispec[c + 1]] += 2.0 * v
        c += 2
    n = ispec[c]
    c += 1
    for _ in range(n):
        i, j = ispec[c], ispec[c + 1]
        gtheta[ispec[c + 2]] += 2.0 * dTheta[i, j] * rsd[i] * rsd[j]
        c += 3
    n = ispec[c]
    c += 1
    for _ in range(n):
        gtheta[ispec[c + 1]] += gnu[ispec[c]]
        c += 2


@_jit
def complete_value_and_grad(
    theta: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    within_scatter: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    means: np.ndarray,
    scatter: np.ndarray,
    totals: np.ndarray,
):
    """Collapsed log-likelihood of complete data (clusters reduced by size) and its gradient.

    Within: ``-(N-G)/2 (p1 log 2pi + log|W|) - tr(W^-1 S_W)/2 - p1/2 sum log n_g``; for each
    cluster size ``n_k`` (``c_k`` clusters, mean cluster vector ``m_k``, scatter ``S_k``):
    ``-c_k/2 (pb log 2pi + log|V_k|) - tr(V_k^-1 (S_k + c_k d d'))/2`` with
    ``V_k = Sigma_B + E W E'/n_k`` and ``d = m_k - nu``. Returns ``(f, df/dtheta)``;
    ``f`` is ``nan`` (and the gradient ``nan``) where a covariance is not positive definite.
    """
    f, gtheta, _, _, _ = complete_core(
        theta, ispec, fspec, within_scatter, sizes, counts, means, scatter, totals
    )
    return f, gtheta


@_jit
def complete_core(
    theta: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    within_scatter: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    means: np.ndarray,
    scatter: np.ndarray,
    totals: np.ndarray,
):
    """:func:`complete_value_and_grad`, and what the data's gradient needs: ``W^-1``, each size's
    ``V_k^-1`` and ``nu`` (the log-likelihood's gradient in a cluster vector ``z_g`` of size
    ``k`` is ``-V_k^-1 (z_g - nu)``, in a student's row ``-W^-1 (y_i - ybar_g)`` plus the
    cluster mean's share)."""
    W, _nu_w, Lw, Aw, Pw, Rpw, sdw, Rtw, rsw, Sew, io, fo = _level_forward(theta, ispec, fspec, 0, 0)
    SB, nu, Lb, Ab, Pb, Rpb, sdb, Rtb, rsb, Seb, _, _ = _level_forward(theta, ispec, fspec, io, fo)
    p1 = W.shape[0]
    pb = SB.shape[0]
    n_within, log_n_sum = totals[0], totals[1]
    gtheta = np.zeros(theta.shape[0])
    Winv = np.empty((p1, p1))
    Vinvs = np.empty((sizes.shape[0], pb, pb))
    ldW = _inverse_pd(W, Winv)
    if np.isnan(ldW):
        gtheta[:] = np.nan
        return np.nan, gtheta, Winv, Vinvs, nu
    WS = _matmul(Winv, within_scatter)
    tr = 0.0
    for i in range(p1):
        tr += WS[i, i]
    f = -0.5 * n_within * (p1 * _LOG2PI + ldW) - 0.5 * tr - 0.5 * p1 * log_n_sum
    GW = _matmul(WS, Winv)
    for i in range(p1):
        for j in range(p1):
            GW[i, j] = 0.5 * (GW[i, j] - n_within * Winv[i, j])
    GB = np.zeros((pb, pb))
    gnu = np.zeros(pb)
    V = np.empty((pb, pb))
    Vinv = np.empty((pb, pb))
    M = np.empty((pb, pb))
    d = np.empty(pb)
    for k in range(sizes.shape[0]):
        nk, ck = sizes[k], counts[k]
        for i in range(pb):
            d[i] = means[k, i] - nu[i]
        for i in range(pb):
            for j in range(pb):
                V[i, j] = SB[i, j]
                M[i, j] = scatter[k, i, j] + ck * d[i] * d[j]
        for i in range(p1):
            for j in range(p1):
                V[i, j] += W[i, j] / nk
        ldV = _inverse_pd(V, Vinv)
        if np.isnan(ldV):
            gtheta[:] = np.nan
            return np.nan, gtheta, Winv, Vinvs, nu
        for i in range(pb):
            for j in range(pb):
                Vinvs[k, i, j] = Vinv[i, j]
        VM = _matmul(Vinv, M)
        tr = 0.0
        for i in range(pb):
            tr += VM[i, i]
        f += -0.5 * ck * (pb * _LOG2PI + ldV) - 0.5 * tr
        GV = _matmul(VM, Vinv)
        for i in range(pb):
            v = 0.0
            for j in range(pb):
                GV[i, j] = 0.5 * (GV[i, j] - ck * Vinv[i, j])
                v += Vinv[i, j] * d[j]
            gnu[i] += ck * v
        for i in range(pb):
            for j in range(pb):
                GB[i, j] += GV[i, j]
        for i in range(p1):
            for j in range(p1):
                GW[i, j] += GV[i, j] / nk
    _level_backward(GW, np.zeros(p1), ispec, 0, Lw, Aw, Pw, Rpw, sdw, Rtw, rsw, Sew, gtheta)
    _level_backward(GB, gnu, ispec, io, Lb, Ab, Pb, Rpb, sdb, Rtb, rsb, Seb, gtheta)
    return f, gtheta, Winv, Vinvs, nu
