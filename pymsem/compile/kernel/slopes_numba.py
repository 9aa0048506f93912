"""The random-slope likelihood inside the whole-model kernel: Woodbury per cluster, gradient to ``theta``.

The same function of the parameters as :func:`pymsem.compile.slope_woodbury.woodbury_slope_logp`
(tutorial Model 3: random slopes, free uncorrelated residuals at both levels, complete data),
written for the whole-model kernel (:mod:`pymsem.compile.kernel.model_numba`): the levels'
matrices come from ``theta`` through the likelihood kernel's specification, the slopes from
their unconstrained coordinates (non-centered ``u_g = diag(sd) L z_g``, or centered slopes
with a multivariate normal prior), and the reverse pass runs back to ``theta``, the slopes'
SDs, their LKJ factor and their coordinates. The per-cluster loop is
:mod:`pymsem.compile.cluster_woodbury`'s, with the loadings' pattern as data instead of
compile-time constants, so one compiled function serves every model.

Layout of the integer array ``si``::

    k, p1, m, mb, pb, centered, x offset of the slopes, theta position of the first slope SD,
    position of the slopes' LKJ factor after theta (-1 for one slope),
    n_cells, (r, c, j) * n_cells            (I - B_g)[r, c] -= u_g[j]
    theta position of each slope's mean * k
    n_terms, t_e, t_a, t_b, t_i, t_k        (each n_terms long: M = LamD' S_g LamD's terms;
                                            t_e the packed scatter entry of each)
    n_grp, grp_a, grp_b (n_grp each), grp_ptr (n_grp + 1)
    n_u, u_i, u_a                           U's nonzeros

and ``sf``: ``t_mult`` then ``t_half`` (n_terms each), as
:func:`pymsem.compile.cluster_woodbury._scatter_terms` builds them.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from pymsem.compile.kernel.numba_impl import (
    _axpy_dot,
    _dot,
    _inverse_pd,
    _matmul,
    _transpose,
    level_grads_to_theta,
    level_parts,
)

__all__ = ["loop_size", "slope_deviations", "slopes_backward", "slopes_value_and_grad", "woodbury_core"]

_jit = numba.njit(cache=True, fastmath=False, nogil=True)
#: The per-cluster helpers, inlined into the cluster loop (called thousands of times per gradient),
#: and :func:`slopes_value_and_grad`, inlined into its callers so that the compile does not
#: optimize the kernel's code once more for it (:mod:`pymsem.compile.kernel.model_numba`'s ``_inline``).
_inline = numba.njit(cache=True, fastmath=False, nogil=True, inline="always")
_LOG2PI = math.log(2.0 * math.pi)


@_inline
def _factor(A: np.ndarray, L: np.ndarray, dinv: np.ndarray, k: int) -> bool:
    """Cholesky ``L`` of ``A``'s lower triangle, and ``1 / diag(L)``; False if not PD."""
    for jj in range(k):
        d = A[jj, jj]
        for mm in range(jj):
            d -= L[jj, mm] * L[jj, mm]
        if not d > 0.0:
            return False
        L[jj, jj] = math.sqrt(d)
        r = 1.0 / L[jj, jj]
        dinv[jj] = r
        for i in range(jj + 1, k):
            x = A[i, jj]
            for mm in range(jj):
                x -= L[i, mm] * L[jj, mm]
            L[i, jj] = x * r
    return True


@_inline
def _inverse(L: np.ndarray, dinv: np.ndarray, Linv: np.ndarray, Ainv: np.ndarray, k: int) -> float:
    """``A^-1`` from ``A = L L'`` into ``Ainv`` (full); returns ``log|A|``."""
    for col in range(k):
        for i in range(col, k):
            x = 1.0 if i == col else 0.0
            for mm in range(col, i):
                x -= L[i, mm] * Linv[mm, col]
            Linv[i, col] = x * dinv[i]
    det = 1.0  # one log per matrix, not one per diagonal entry
    for i in range(k):
        det *= L[i, i]
        for jj in range(i + 1):
            x = 0.0
            for mm in range(i, k):
                x += Linv[mm, i] * Linv[mm, jj]
            Ainv[i, jj] = x
            Ainv[jj, i] = x
    return 2.0 * math.log(det)


@_inline
def _mm(X: np.ndarray, Y: np.ndarray, out: np.ndarray, k: int) -> None:
    """``out = X Y`` for k x k matrices."""
    for i in range(k):
        for t in range(k):
            x = 0.0
            for mm in range(k):
                x += X[i, mm] * Y[mm, t]
            out[i, t] = x


def _clusters(u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, want, fixed):  # type: ignore[no-untyped-def]
    """The per-cluster part and its gradients (:mod:`pymsem.compile.cluster_woodbury`'s loop).

    ``fixed`` (a compile-time constant, :func:`loop_size`) is the factor count at both levels
    where the model has as many factors at each level (two to four: the usual two-level factor
    models; a random slope joins two within factors), else 0. numba then compiles a
    specialization in which the counts are constants and LLVM unrolls the factor-sized loops:
    1.7x faster per cluster for tutorial Model 3, at PyTensor's fused operation's speed
    (``bench/results/compile_kernel.md``). The loop is chosen when numba types the call
    (:func:`_clusters_typed`), so an entry point compiles only its own loop: numba does not prune
    branches on constant arguments.
    """
    raise NotImplementedError("called from numba-compiled code only")


@overload(_clusters, prefer_literal=True, jit_options={"cache": True})
def _clusters_typed(u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, want, fixed):  # type: ignore[no-untyped-def]
    n = getattr(fixed, "literal_value", 0)
    if n in (2, 3, 4):

        def fixed_loop(  # type: ignore[no-untyped-def]
            u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, want, fixed
        ):
            return _cluster_loop(
                u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, n, n, want
            )

        return fixed_loop

    def general_loop(  # type: ignore[no-untyped-def]
        u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, want, fixed
    ):
        return _cluster_loop(
            u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, si[2], si[3], want
        )

    return general_loop


def loop_size(si: np.ndarray) -> int:
    """The cluster loop's compile-time factor count for a model's slopes table (0: general)."""
    m, mb = int(si[2]), int(si[3])
    return m if m == mb and m in (2, 3, 4) else 0


@_jit
def _within_nonzeros(si: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The within loadings' nonzeros ``(i, a)``: ``U``'s entries in the within block."""
    u_i, u_a = _u_pattern(si)
    p1, mb = si[1], si[3]
    keep = (u_i < p1) & (u_a >= mb)
    return u_i[keep], u_a[keep] - mb


@_jit
def _first_nonzero(w_i: np.ndarray, p1: int) -> np.ndarray:
    """Each item's first within loading in the nonzeros' order (-1: none)."""
    first = np.full(p1, -1)
    for t in range(w_i.shape[0]):
        if first[w_i[t]] < 0:
            first[w_i[t]] = t
    return first


@_inline
def _u_pattern(si: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``U``'s nonzeros ``(u_i, u_a)`` from the slopes table (its last section)."""
    c = 10 + 3 * si[9] + si[0]
    c += 1 + 5 * si[c]
    c += 2 + 3 * si[c]
    n_u = si[c]
    return si[c + 1 : c + 1 + n_u], si[c + 1 + n_u : c + 1 + 2 * n_u]


@_jit
def _cluster_loop(u, IB0, Psi_inv, LtL, LamD, S, dM, sizes, size, UEU, z, nu, Einv, U, si, sf, m, mb, want):
    """:func:`_clusters` for ``m`` within and ``mb`` between factors.

    With ``want`` (sampled missing cells) ``S`` holds ``V' = LamD' D'`` (m, N; ``D`` the
    students' deviations from their cluster means, sorted by cluster; factor-major, so that the
    loops over a cluster's students are contiguous) instead of the clusters' packed scatters,
    from which each cluster's ``LamD' S_g LamD = V_g' V_g``; the gradients in ``V'`` are
    returned, and the caller takes the loadings' share: passes over the students instead of one
    per scatter entry. Without, each cluster's ``C_g^-1`` (G, m * m) is returned in their place
    (the gradient in ``M_g = LamD' S_g LamD`` is ``C_g^-1 / 2``). The gradient in each cluster's
    vector ``z`` is returned either way."""
    pb = si[4]
    q = mb + m
    c = 9
    n_cells = si[c]
    rr, cc, js = (
        si[c + 1 : c + 1 + 3 * n_cells : 3],
        si[c + 2 : c + 2 + 3 * n_cells : 3],
        si[c + 3 : c + 3 + 3 * n_cells : 3],
    )
    c += 1 + 3 * n_cells + si[0]
    n_terms = si[c]
    # t_e (each term's packed scatter entry) is not read: S arrives in the terms' order.
    t_a = si[c + 1 + n_terms : c + 1 + 2 * n_terms]
    t_b = si[c + 1 + 2 * n_terms : c + 1 + 3 * n_terms]
    t_i = si[c + 1 + 3 * n_terms : c + 1 + 4 * n_terms]
    t_k = si[c + 1 + 4 * n_terms : c + 1 + 5 * n_terms]
    c += 1 + 5 * n_terms
    n_grp = si[c]
    grp_a = si[c + 1 : c + 1 + n_grp]
    grp_b = si[c + 1 + n_grp : c + 1 + 2 * n_grp]
    grp_ptr = si[c + 1 + 2 * n_grp : c + 2 + 3 * n_grp]
    u_i, u_a = _u_pattern(si)
    n_u = u_i.shape[0]
    t_mult = sf[:n_terms]
    t_half = sf[n_terms : 2 * n_terms]

    G = u.shape[0]
    gu = np.zeros(u.shape)
    gIB0 = np.zeros((m, m))
    gPsi = np.zeros((m, m))
    gLtL = np.zeros((m, m))
    gLamD = np.zeros(LamD.shape)
    gUEU = np.zeros(UEU.shape)
    gnu = np.zeros(nu.shape)
    gEinv = np.zeros(Einv.shape)
    gU = np.zeros(U.shape)
    # With complete data, each cluster's C_g^-1 (d f / dM_g = C_g^-1 / 2), for callers whose
    # scatter depends on the parameters (moderated slopes' shifted scatter).
    gS = np.zeros(S.shape) if want else np.empty((G, m * m))
    gz = np.zeros(z.shape)
    IB = np.empty((m, m))
    IBt = np.empty((m, m))
    A = np.empty((m, m))
    Sg = np.empty((m, m))
    Cm = np.empty((m, m))
    Lc = np.zeros((m, m))
    Li = np.zeros((m, m))
    Cinv = np.empty((m, m))
    M = np.empty((m, m))
    CM = np.empty((m, m))
    GS = np.empty((m, m))
    K = np.empty((q, q))
    Lk = np.zeros((q, q))
    Lki = np.zeros((q, q))
    Kinv = np.empty((q, q))
    v = np.empty(q)
    b = np.empty(q)
    dc = np.empty(m)
    dk = np.empty(q)
    dE = np.empty(pb)
    gdE = np.empty(pb)
    coef = np.empty(n_terms)
    gcoef = np.zeros(n_terms)
    for t in range(n_terms):
        coef[t] = t_mult[t] * LamD[t_i[t], t_a[t]] * LamD[t_k[t], t_b[t]]
    uval = np.empty(n_u)
    guval = np.zeros(n_u)
    for t in range(n_u):
        uval[t] = U[u_i[t], u_a[t]]
    Psym = np.empty((m, m))
    for i in range(m):
        for t in range(m):
            Psym[i, t] = Psi_inv[i, t] + Psi_inv[t, i]
    f = 0.0
    r0 = 0  # the cluster's first row (``want``)
    for g in range(G):
        sz = size[g]
        ng = sizes[sz]
        for i in range(m):
            for t in range(m):
                IB[i, t] = IB0[i, t]
        for s in range(n_cells):
            IB[rr[s], cc[s]] -= u[g, js[s]]
        for i in range(m):
            for t in range(m):
                IBt[i, t] = IB[t, i]
        _mm(Psi_inv, IB, A, m)
        _mm(IBt, A, Sg, m)
        for i in range(m):
            for t in range(i + 1):
                Cm[i, t] = Sg[i, t] + LtL[i, t]
        for i in range(q):
            for t in range(i + 1):
                K[i, t] = UEU[sz, i, t]
        for i in range(m):
            for t in range(i + 1):
                K[mb + i, mb + t] += ng * Sg[i, t]
        # Both factors, then one test: behind a short-circuit ``and``, numba kept the reference
        # counts of the loop's arrays, two calls per array and cluster (session 34's note).
        ok_c = _factor(Cm, Lc, dc, m)
        ok_k = _factor(K, Lk, dk, q)
        if not (ok_c and ok_k):
            f = np.nan
            break
        logdet_C = _inverse(Lc, dc, Li, Cinv, m)
        logdet_K = _inverse(Lk, dk, Lki, Kinv, q)
        if want:  # S holds V' = LamD' D' (m, N): M = V_g' V_g
            r1 = r0 + int(ng)
            for a in range(m):
                va = S[a, r0:r1]
                for t in range(a + 1):
                    M[a, t] = _dot(va, S[t, r0:r1])
        else:
            s_g = S[g]
            for h in range(n_grp):
                t0, t1 = grp_ptr[h], grp_ptr[h + 1]
                M[grp_a[h], grp_b[h]] = _dot(s_g[t0:t1], coef[t0:t1])
            if dM.shape[0] > 0:
                for a in range(m):
                    for t in range(a + 1):
                        M[a, t] += dM[g, a, t]
        quad_C = 0.0
        for a in range(m):
            quad_C += Cinv[a, a] * M[a, a]
            for t in range(a):
                M[t, a] = M[a, t]
                quad_C += 2.0 * Cinv[a, t] * M[a, t]
        for i in range(pb):
            dE[i] = (z[g, i] - nu[i]) * Einv[sz, i]
            gdE[i] = 0.0
        for a in range(q):
            v[a] = 0.0
        for t in range(n_u):
            v[u_a[t]] += uval[t] * dE[u_i[t]]
        quad_v = 0.0
        for a in range(q):
            x = 0.0
            for kk in range(q):
                x += Kinv[a, kk] * v[kk]
            b[a] = x
            quad_v += x * v[a]
        wg = ng - 1.0
        f += -0.5 * wg * logdet_C + 0.5 * quad_C - 0.5 * logdet_K + 0.5 * quad_v
        for i in range(q):
            for t in range(q):
                x = -0.5 * (Kinv[i, t] + b[i] * b[t])
                gUEU[sz, i, t] += x
                K[i, t] = x
        _mm(Cinv, M, CM, m)
        _mm(CM, Cinv, GS, m)
        for i in range(m):
            for t in range(m):
                x = -0.5 * (wg * Cinv[i, t] + GS[i, t])
                gLtL[i, t] += x
                GS[i, t] = x + ng * K[mb + i, mb + t]
        if want:  # d(0.5 tr(C^-1 V_g' V_g)) / dV_g = V_g C^-1; the loadings' share is taken outside
            r1 = r0 + int(ng)
            for a in range(m):
                ga = gS[a, r0:r1]
                for t in range(m):
                    c_ta = Cinv[t, a]
                    vt = S[t, r0:r1]
                    for r in range(ga.shape[0]):
                        ga[r] += vt[r] * c_ta
            r0 = r1
        else:
            for h in range(n_grp):
                c_ab = Cinv[grp_a[h], grp_b[h]]
                t0, t1 = grp_ptr[h], grp_ptr[h + 1]
                gc, sg = gcoef[t0:t1], S[g, t0:t1]
                for t in range(gc.shape[0]):
                    gc[t] += c_ab * sg[t]
            for i in range(m):
                for t in range(m):
                    gS[g, i * m + t] = Cinv[i, t]
        for t in range(n_u):
            i, a = u_i[t], u_a[t]
            guval[t] += dE[i] * b[a]
            gdE[i] += uval[t] * b[a]
        for i in range(pb):
            gnu[i] -= gdE[i] * Einv[sz, i]
            gEinv[sz, i] += gdE[i] * (z[g, i] - nu[i])
            gz[g, i] = gdE[i] * Einv[sz, i]
        _mm(IB, GS, A, m)
        _mm(A, IBt, CM, m)
        for i in range(m):
            for t in range(m):
                gPsi[i, t] += CM[i, t]
        _mm(Psym, A, CM, m)
        for i in range(m):
            for t in range(m):
                gIB0[i, t] += CM[i, t]
        for s in range(n_cells):
            gu[g, js[s]] -= CM[rr[s], cc[s]]
    for t in range(n_terms):
        x = gcoef[t] * t_mult[t] * t_half[t]
        gLamD[t_i[t], t_a[t]] += x * LamD[t_k[t], t_b[t]]
        gLamD[t_k[t], t_b[t]] += x * LamD[t_i[t], t_a[t]]
    for t in range(n_u):
        gU[u_i[t], u_a[t]] += guval[t]
    return f, gu, gIB0, gPsi, gLtL, gLamD, gUEU, gnu, gEinv, gU, gS, gz


@_jit
def slope_deviations(theta: np.ndarray, ext: np.ndarray, x: np.ndarray, si: np.ndarray, G: int):
    """The clusters' slope deviations ``u`` (G, k) from their coordinates, and their prior.

    Non-centered: ``u_g = diag(sd) L z_g`` with ``z_g`` standard normal; centered: the slopes
    minus their means, with a multivariate normal prior (added by :func:`slopes_backward`,
    which needs its precision anyway). Returns ``(u, lp, C, L, Cinv)`` with ``C = diag(sd) L``
    and ``Cinv = (C C')^-1`` (centered only); ``lp`` is nan where ``C C'`` is singular.
    """
    k, centered, s_off, sd_pos, l_pos = si[0], si[5], si[6], si[7], si[8]
    mean_at = 10 + 3 * si[9]
    L = np.eye(k)
    if l_pos >= 0:
        for i in range(k):
            for j in range(k):
                L[i, j] = ext[l_pos + i * k + j]
    sd = theta[sd_pos : sd_pos + k]
    u = np.empty((G, k))
    lp = 0.0
    C = np.empty((k, k))  # diag(sd) L
    for i in range(k):
        for j in range(k):
            C[i, j] = sd[i] * L[i, j]
    Cinv = np.empty((k, k))  # (C C')^-1, centered slopes only
    if centered:
        logdiag = 0.0
        for i in range(k):
            logdiag += math.log(C[i, i])
        lp -= G * (logdiag + 0.5 * k * _LOG2PI)
        ldc = _inverse_pd(_matmul(C, _transpose(C)), Cinv)
        if np.isnan(ldc):
            return u, np.nan, C, L, Cinv
        for g in range(G):
            for j in range(k):
                u[g, j] = x[s_off + g * k + j] - theta[si[mean_at + j]]
    else:
        for g in range(G):
            for j in range(k):
                t = 0.0
                for r in range(j + 1):
                    t += C[j, r] * x[s_off + g * k + r]
                u[g, j] = t
                lp -= 0.5 * x[s_off + g * k + j] ** 2
        lp -= 0.5 * G * k * _LOG2PI
    return u, lp, C, L, Cinv


@_jit
def slopes_backward(
    gu: np.ndarray,
    u: np.ndarray,
    x: np.ndarray,
    theta: np.ndarray,
    si: np.ndarray,
    C: np.ndarray,
    L: np.ndarray,
    Cinv: np.ndarray,
    gtheta: np.ndarray,
    gext: np.ndarray,
) -> tuple[float, np.ndarray]:
    """The gradient through the slope deviations (``gu``) to their coordinates (returned, with the
    centered prior's quadratic term, which :func:`slope_deviations` leaves out), SDs and LKJ
    factor (added to ``gtheta`` and ``gext``)."""
    k, centered, s_off, sd_pos, l_pos = si[0], si[5], si[6], si[7], si[8]
    mean_at = 10 + 3 * si[9]
    G = u.shape[0]
    gxs = np.zeros(G * k)
    f = 0.0
    gC = np.zeros((k, k))
    if centered:
        e = np.empty(k)
        w = np.empty(k)
        for g in range(G):
            for j in range(k):
                e[j] = u[g, j]
            quad = 0.0
            for i in range(k):
                t = 0.0
                for j in range(k):
                    t += Cinv[i, j] * e[j]
                w[i] = t
                quad += e[i] * t
            f -= 0.5 * quad
            for i in range(k):
                gxs[g * k + i] = gu[g, i] - w[i]
                gtheta[si[mean_at + i]] += w[i] - gu[g, i]
                for j in range(k):
                    gC[i, j] += w[i] * w[j]  # -(1/2) d(e' (CC')^-1 e)/d(CC') = w w' / 2, times 2 C below
        # d/dC of -1/2 e'(CC')^-1 e summed: (sum w w') C; of -G sum log C_ii: -G / C_ii.
        gC = _matmul(gC, C)
        for i in range(k):
            for j in range(k):
                if j > i:
                    gC[i, j] = 0.0
            gC[i, i] -= G / C[i, i]
    else:
        for g in range(G):
            for j in range(k):
                zj = x[s_off + g * k + j]
                t = -zj
                for r in range(j, k):
                    t += gu[g, r] * C[r, j]
                gxs[g * k + j] = t
                for r in range(j + 1):
                    gC[j, r] += gu[g, j] * x[s_off + g * k + r]
    # C = diag(sd) L.
    sd = theta[sd_pos : sd_pos + k]
    for i in range(k):
        t = 0.0
        for j in range(k):
            t += gC[i, j] * L[i, j]
        gtheta[sd_pos + i] += t
        if l_pos >= 0:
            for j in range(k):
                gext[l_pos + i * k + j] += gC[i, j] * sd[i]
    return f, gxs


@_jit
def woodbury_core(
    thw: np.ndarray,
    Lw: np.ndarray,
    IB0: np.ndarray,
    Psi_inv: np.ndarray,
    logdet_psi: float,
    thb: np.ndarray,
    Lb: np.ndarray,
    SBinv: np.ndarray,
    logdet_sb: float,
    nu: np.ndarray,
    u: np.ndarray,
    S: np.ndarray,
    dM: np.ndarray,
    dpool: np.ndarray,
    z: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    size_index: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
    want: bool,
    fixed: int,
):
    """The collapsed log-likelihood given the slope deviations ``u``, from the levels' matrices,
    and its gradients in them (:func:`pymsem.compile.slope_woodbury.woodbury_slope_logp`).

    ``thw`` (p1) the within residual variances, ``Lw`` (p1, m) the loadings, ``IB0 = I - B``,
    ``Psi_inv`` the within factors' precision with ``log|Psi|``; ``thb`` (pb), ``Lb`` (pb, mb),
    the between factors' precision ``SBinv`` with ``log|S_B|``, ``nu`` (pb). ``S`` and ``z`` as
    :func:`slopes_value_and_grad` takes them; ``dM`` (G, m, m), where not empty, is added to
    each cluster's ``M_g = LamD' S_g LamD`` (complete data: a shift of the scatter that the caller
    computes at factor size), and ``dpool`` (p1), where not empty, to the pooled within
    scatter's diagonal (the same shift's; its gradient is ``-1 / (2 thw)``). Returns ``(f, gthw,
    dLw, gIB0, gPsiinv, gthb, dLb, gSBinv, gnu, gu, gS, gz)``: ``gS`` with ``want`` the gradient
    in the deviations, else each cluster's ``C_g^-1`` (:func:`_cluster_loop`); ``gz`` the
    gradient in the cluster vectors. The log determinants' gradients are the caller's (``-(n_within + G) / 2`` in
    ``log|Psi|``, ``-G / 2`` in ``log|S_B|``).
    """
    k, p1, m, mb, pb = si[0], si[1], si[2], si[3], si[4]
    q = mb + m
    G = z.shape[0]
    K_sizes = sizes.shape[0]
    n_within, log_n_sum = totals[0], totals[1]
    mean_at = 10 + 3 * si[9]
    LamD = np.empty((p1, m))
    for i in range(p1):
        for a in range(m):
            LamD[i, a] = Lw[i, a] / thw[i]
    LtL = _matmul(_transpose(Lw), LamD)
    E = np.empty((K_sizes, pb))
    Einv = np.empty((K_sizes, pb))
    for kk in range(K_sizes):
        for i in range(pb):
            E[kk, i] = thb[i] + (thw[i] / sizes[kk] if i < p1 else 0.0)
            Einv[kk, i] = 1.0 / E[kk, i]
    U = np.zeros((pb, q))
    for i in range(pb):
        for a in range(mb):
            U[i, a] = Lb[i, a]
    for i in range(p1):
        for a in range(m):
            U[i, mb + a] = Lw[i, a]
    UEU = np.zeros((K_sizes, q, q))
    for kk in range(K_sizes):
        for a in range(q):
            for c in range(q):
                t = 0.0
                for i in range(pb):
                    t += U[i, a] * Einv[kk, i] * U[i, c]
                UEU[kk, a, c] = t
        for a in range(mb):
            for c in range(mb):
                UEU[kk, a, c] += SBinv[a, c]
    if want:
        # S holds the students' deviations from their cluster means item-major (p1, N; columns
        # sorted by cluster): V' = LamD' D' over the loadings' nonzeros, contiguous in the students.
        DT = S
        N = DT.shape[1]
        w_i, w_a = _within_nonzeros(si)
        first = _first_nonzero(w_i, p1)
        SV = np.zeros((m, N))
        pooled_diag = np.empty(p1)
        for i in range(p1):
            if first[i] < 0:
                pooled_diag[i] = _dot(DT[i], DT[i])
        # An item's row is read once for its pooled diagonal and its first loading's share of
        # V' (N students: a pass costs more than the arithmetic in it).
        for t in range(w_i.shape[0]):
            i, a = w_i[t], w_a[t]
            lam, v, d = LamD[i, a], SV[a], DT[i]
            if first[i] == t:
                pooled_diag[i] = _axpy_dot(v, 0.0, d, lam, d, False)
            else:
                for r in range(N):
                    v[r] += lam * d[r]
    else:
        SV = S
        n_terms = si[mean_at + k]
        pooled_diag = np.zeros(p1)
        for g in range(G):
            for i in range(p1):
                pooled_diag[i] += S[g, n_terms + i]
        if dpool.shape[0] > 0:
            for i in range(p1):
                pooled_diag[i] += dpool[i]
    f, gu, gIB0, gPsiinv, gLtL, gLamD, gUEU, gnu, gEinv, gU, gM, gz = _clusters(
        u, IB0, Psi_inv, LtL, LamD, SV, dM, sizes, size_index, UEU, z, nu, Einv, U, si, sf, want, fixed
    )
    gthw = np.zeros(p1)
    gthb = np.zeros(pb)
    dLw = np.zeros((p1, m))
    dLb = np.zeros((pb, mb))
    gSB = np.zeros((mb, mb))
    gS = gM  # complete data: each cluster's C_g^-1 (G, m * m)
    if np.isnan(f):
        return f, gthw, dLw, gIB0, gPsiinv, gthb, dLb, gSB, gnu, gu, gS, gz
    if want:
        # dD' = LamD dV' plus the pooled diagonal's share; dLamD = D' dV (at the nonzeros).
        W = gM
        gS = np.empty((p1, N))
        for i in range(p1):
            if first[i] < 0:
                c = -1.0 / thw[i]
                for r in range(N):
                    gS[i, r] = c * DT[i, r]
        for t in range(w_i.shape[0]):  # each row written in its first loading's pass
            i, a = w_i[t], w_a[t]
            gLamD[i, a] += _axpy_dot(gS[i], -1.0 / thw[i], DT[i], LamD[i, a], W[a], first[i] == t)
    # Pooled terms (pymsem.compile.slope_woodbury.woodbury_slope_logp's within_ll, between_ll).
    f += -0.5 * n_within * (p1 * _LOG2PI + logdet_psi) - 0.5 * p1 * log_n_sum
    f += -0.5 * G * (pb * _LOG2PI + logdet_sb + logdet_psi) + 0.5 * m * log_n_sum
    # The pooled within scatter's diagonal and each size's squared deviations of the cluster
    # vectors, summed from the clusters' (their gradients reach S and z when these are sampled).
    for i in range(p1):
        pooled = pooled_diag[i]
        f += -0.5 * n_within * math.log(thw[i]) - 0.5 * pooled / thw[i]
        gthw[i] += -0.5 * n_within / thw[i] + 0.5 * pooled / (thw[i] * thw[i])
    sq = np.zeros((K_sizes, pb))
    for g in range(G):
        kk = size_index[g]
        for i in range(pb):
            d = z[g, i] - nu[i]
            sq[kk, i] += d * d
            gnu[i] += d * Einv[kk, i]
            gz[g, i] -= d * Einv[kk, i]
    gE = np.zeros((K_sizes, pb))
    for kk in range(K_sizes):
        for i in range(pb):
            f += -0.5 * counts[kk] * math.log(E[kk, i]) - 0.5 * sq[kk, i] * Einv[kk, i]
            gE[kk, i] = -0.5 * counts[kk] * Einv[kk, i] + 0.5 * sq[kk, i] * Einv[kk, i] * Einv[kk, i]
            gE[kk, i] -= gEinv[kk, i] * Einv[kk, i] * Einv[kk, i]
    # Reverse pass to the levels' matrices. UEU_k = U' diag(Einv_k) U + pad(SB^-1).
    for kk in range(K_sizes):
        for a in range(q):
            for c in range(q):
                gk = gUEU[kk, a, c]
                if gk != 0.0:
                    for i in range(pb):
                        gU[i, a] += gk * Einv[kk, i] * U[i, c]
                        gU[i, c] += gk * Einv[kk, i] * U[i, a]
        for i in range(pb):
            t = 0.0
            for a in range(q):
                for c in range(q):
                    t += gUEU[kk, a, c] * U[i, a] * U[i, c]
            gE[kk, i] -= t * Einv[kk, i] * Einv[kk, i]
        for a in range(mb):
            for c in range(mb):
                gSB[a, c] += gUEU[kk, a, c]
    for kk in range(K_sizes):
        for i in range(pb):
            gthb[i] += gE[kk, i]
            if i < p1:
                gthw[i] += gE[kk, i] / sizes[kk]
    for i in range(pb):
        for a in range(mb):
            dLb[i, a] += gU[i, a]
    for i in range(p1):
        for a in range(m):
            dLw[i, a] += gU[i, mb + a] + gLamD[i, a] / thw[i]
            gthw[i] -= gLamD[i, a] * Lw[i, a] / (thw[i] * thw[i])
    # LtL = Lw' diag(1/thw) Lw, its gradient symmetric.
    for i in range(p1):
        t = 0.0
        for a in range(m):
            r = 0.0
            for c in range(m):
                r += (gLtL[a, c] + gLtL[c, a]) * Lw[i, c]
            dLw[i, a] += r / thw[i]
            for c in range(m):
                t += gLtL[a, c] * Lw[i, a] * Lw[i, c]
        gthw[i] -= t / (thw[i] * thw[i])
    return f, gthw, dLw, gIB0, gPsiinv, gthb, dLb, gSB, gnu, gu, gS, gz


@_inline
def slopes_value_and_grad(
    theta: np.ndarray,
    ext: np.ndarray,
    x: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    size_index: np.ndarray,
    S: np.ndarray,
    z: np.ndarray,
    want: bool,
    fixed: int,
):
    """The collapsed log-likelihood given the slopes, plus the slopes' prior; and the gradients.

    ``theta`` the parameter groups (slope SDs included), ``ext`` theta with the LKJ factors
    after it, ``x`` the unconstrained point (the slopes' coordinates); ``S`` (G, n_terms + p1)
    each cluster's within scatter entries in the order of ``LamD' S_g LamD``'s terms (``S_g[t_e]``,
    read contiguously in the cluster loop), then its diagonal, and ``z`` (G, pb) its vector; or
    with ``want`` (sampled missing cells) ``S`` the students' deviations from their cluster
    means, item-major (p1, N; students sorted by cluster). Returns ``(f, gtheta, gx_slopes,
    gext, gS, gz)``: ``gx_slopes`` for the slopes' block of ``x``, ``gext`` for the LKJ factors
    (the slopes' correlations) after ``theta``, and the gradients in the deviations with ``want``
    (item-major, each student as if their cluster's mean were fixed: the mean's share sums to
    zero; else each cluster's ``C_g^-1``) and in ``z``. ``want`` and ``fixed`` (the
    cluster loop's factor count, :func:`loop_size`) are compile-time constants: each entry point
    compiles one cluster loop.
    """
    k, p1, m, mb, pb = si[0], si[1], si[2], si[3], si[4]
    G = z.shape[0]
    n_within = totals[0]
    gtheta = np.zeros(theta.shape[0])
    gext = np.zeros(ext.shape[0])
    Lw, Bw, Psiw, sdw, Rpw, rsdw, Rtw, _nuw, io, fo = level_parts(theta, ispec, fspec, 0, 0)
    Lb, Bb, Psib, sdb, Rpb, rsdb, Rtb, nu, _, _ = level_parts(theta, ispec, fspec, io, fo)
    u, lp, C, L, Cinv = slope_deviations(theta, ext, x, si, G)
    if np.isnan(lp):
        return np.nan, gtheta, np.zeros(G * k), gext, np.zeros((0, 0)), np.zeros((0, 0))
    # The levels' pieces of the Woodbury form.
    thw = np.empty(p1)
    for i in range(p1):
        thw[i] = rsdw[i] * rsdw[i]
    thb = np.empty(pb)
    for i in range(pb):
        thb[i] = rsdb[i] * rsdb[i]
    Psi_inv = np.empty((m, m))
    logdet_psi = _inverse_pd(Psiw, Psi_inv)
    Psib_inv = np.empty((mb, mb))
    logdet_sb = _inverse_pd(Psib, Psib_inv)
    if np.isnan(logdet_psi) or np.isnan(logdet_sb):
        return np.nan, gtheta, np.zeros(G * k), gext, np.zeros((0, 0)), np.zeros((0, 0))
    IBb = -Bb
    for i in range(mb):
        IBb[i, i] += 1.0
    SBinv = _matmul(_matmul(_transpose(IBb), Psib_inv), IBb)
    IB0 = -Bw
    for i in range(m):
        IB0[i, i] += 1.0
    f, gthw, dLw, gIB0, gPsiinv, gthb, dLb, gSB, gnu, gu, gS, gz = woodbury_core(
        thw, Lw, IB0, Psi_inv, logdet_psi, thb, Lb, SBinv, logdet_sb, nu, u, S, np.zeros((0, m, m)),
        np.zeros(0), z, sizes, counts, totals, size_index, si, sf, want, fixed,
    )  # fmt: skip
    if np.isnan(f):
        return np.nan, gtheta, np.zeros(G * k), gext, gS, gz
    f += lp
    # Psi_inv = Psi^-1 (and log|Psi| twice): dPsi = -Psi^-1 gPsiinv Psi^-1 - N/2 Psi^-1.
    # Symmetrized into a new matrix: in place, the lower triangle would read updated entries
    # (wrong gradients for the SDs of correlated factors).
    P = _matmul(_matmul(Psi_inv, gPsiinv), Psi_inv)
    n_total = n_within + G
    dPsiw = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            dPsiw[i, j] = -0.5 * (P[i, j] + P[j, i]) - 0.5 * n_total * Psi_inv[i, j]
    dBw = -gIB0
    # SB^-1 = IBb' Psib^-1 IBb: dIBb = Psib^-1 IBb (gSB + gSB'), dPsib^-1 = IBb gSB IBb'.
    gSBs = gSB + _transpose(gSB)
    dBb = -_matmul(_matmul(Psib_inv, IBb), gSBs)
    gPb = _matmul(_matmul(IBb, gSB), _transpose(IBb))
    Pb = _matmul(_matmul(Psib_inv, gPb), Psib_inv)
    dPsib = np.empty((mb, mb))
    for i in range(mb):
        for j in range(mb):
            dPsib[i, j] = -0.5 * (Pb[i, j] + Pb[j, i]) - 0.5 * G * Psib_inv[i, j]
    dThw = np.zeros((p1, p1))
    for i in range(p1):
        dThw[i, i] = gthw[i]
    dThb = np.zeros((pb, pb))
    for i in range(pb):
        dThb[i, i] = gthb[i]
    level_grads_to_theta(dLw, dBw, dPsiw, dThw, np.zeros(p1), ispec, 0, Rpw, sdw, Rtw, rsdw, gtheta)
    level_grads_to_theta(dLb, dBb, dPsib, dThb, gnu, ispec, io, Rpb, sdb, Rtb, rsdb, gtheta)
    fq, gxs = slopes_backward(gu, u, x, theta, si, C, L, Cinv, gtheta, gext)
    f += fq
    return f, gtheta, gxs, gext, gS, gz
