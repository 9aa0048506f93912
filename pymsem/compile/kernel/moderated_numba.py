"""Moderated random slopes inside the whole-model kernel: the moderators, the exact covariates'
shift, then the Woodbury core, with the reverse pass back to ``theta``.

The same function of the parameters as
:func:`pymsem.compile.marginal.moderated_random_slope_logp` where
:func:`~pymsem.compile.slope_woodbury.moderated_woodbury_plan` applies (tutorial Model 4:
slopes regressed on a latent school mean, a covariate measured without error at both levels;
or on level-2 columns). Given the moderators ``eta_o`` (level-2 columns, and latent ones
sampled non-centered given them), each cluster's slopes are ``u_g + Gamma eta_o,g``; the
cluster vectors' means are ``nu + Lambda_B C S_oo^-1 eta_o``, the between factors that are no
moderator have covariance ``S_rr - S_ro S_oo^-1 S_or``, the covariates measured without error
contribute their own density and shift the items by ``C_g x_w``
(:func:`pymsem.compile.slope_woodbury._exact_covariates`), and
:func:`pymsem.compile.kernel.slopes_numba.woodbury_core` evaluates the rest. With complete data
the shift enters at factor size, through ``C_g = hs_g' LamI'`` (``hs_g`` the items' latents'
total effects of the covariates' latents, ``mI x kx``): a correction of each cluster's
``LamD' S_g LamD`` and of the pooled diagonal, from each cluster's scatter as it is (no pass over
the students); with sampled missing cells, the shift is applied to the students' deviations
from their cluster means, computed per call from the completed data (as Model 3's missing cells
are).

The moderation table is appended to the slopes table ``si`` (which the core reads from the
start, with the items as its level-1 variables and the rows as its cluster vector); ``si[-1]``
is where it starts::

    o, n_known, x offset of the moderators' coordinates, kx, pI, mI, n_rows, n_r, depth_w, depth_b,
    n_gamma, n_ix, G,
    mods (o), X (kx), Xl (kx), items (pI), Il (mI), rows (n_rows), r_lat (n_r),
    (slope, moderator, theta position) * n_gamma      u_total[g, slope] += theta[pos] eta_o[g, moderator]
    (r, c, slope) * n_ix                               gamma_g[r, c] += u_total[g, slope]
    kcol (o)                                           a level-2 column's place in the cluster vector, or -1

``mods`` are between latents, ``X`` the level-1 variables measured without error (their within
latents ``Xl``), ``items``/``Il`` the other level-1 variables and their latents, ``rows`` the
cluster vector's entries kept, ``r_lat`` the between latents that are no moderator. Moderators
that are level-2 columns (``kcol >= 0``) are known given the data (``w_g - nu``, with their own
density); the others are sampled given them (:func:`_moderators`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pymsem.compile.kernel.numba_impl import (
    _cholesky,
    _dot,
    _inline,
    _inverse_pd,
    _lower_inverse,
    _matmul,
    _mm_nt,
    _transpose,
    level_grads_to_theta,
    level_parts,
)
from pymsem.compile.kernel.slopes_numba import slope_deviations, slopes_backward, woodbury_core

__all__ = ["moderated_value_and_grad", "moderator_values"]

_jit = numba.njit(cache=True, fastmath=False, nogil=True)
_LOG2PI = math.log(2.0 * math.pi)


@_jit
def _sub(A: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``A[rows][:, cols]`` (a new array)."""
    out = np.empty((rows.shape[0], cols.shape[0]))
    for i in range(rows.shape[0]):
        for j in range(cols.shape[0]):
            out[i, j] = A[rows[i], cols[j]]
    return out


@_jit
def _chol_backward(L: np.ndarray, Lbar: np.ndarray) -> np.ndarray:
    """The gradient in ``A`` (symmetric) given the gradient in its Cholesky factor ``L``:
    ``sym(L^-T Phi(L' Lbar) L^-1)``, ``Phi`` the lower triangle with the diagonal halved."""
    n = L.shape[0]
    P = _matmul(L.T, Lbar)
    for i in range(n):
        for j in range(n):
            if j > i:
                P[i, j] = 0.0
        P[i, i] *= 0.5
    Li = _lower_inverse(L)
    X = _matmul(Li.T, _matmul(P, Li))
    for i in range(n):
        for j in range(i):
            v = 0.5 * (X[i, j] + X[j, i])
            X[i, j] = v
            X[j, i] = v
    return X


@_jit
def _series_inverse(B: np.ndarray, depth: int) -> np.ndarray:
    """``(I - B)^-1 = I + B + ... + B^depth`` for recursive paths (``B`` nilpotent)."""
    n = B.shape[0]
    T = np.eye(n)
    power = np.eye(n)
    for _ in range(depth):
        power = _matmul(power, B)
        T += power
    return T


@_jit
def _table(si: np.ndarray):
    """The moderation table's header and index arrays (see the module's docstring)."""
    c = si[si.shape[0] - 1]
    o, kx, pI, mI = si[c], si[c + 3], si[c + 4], si[c + 5]
    nrows, nr, n_gamma, n_ix = si[c + 6], si[c + 7], si[c + 10], si[c + 11]
    head = si[c : c + 13]
    c += 13
    mods = si[c : c + o]
    c += o
    X = si[c : c + kx]
    c += kx
    Xl = si[c : c + kx]
    c += kx
    items = si[c : c + pI]
    c += pI
    Il = si[c : c + mI]
    c += mI
    rows = si[c : c + nrows]
    c += nrows
    rlat = si[c : c + nr]
    c += nr
    gam = si[c : c + 3 * n_gamma]
    c += 3 * n_gamma
    ix = si[c : c + 3 * n_ix]
    c += 3 * n_ix
    kcol = si[c : c + o]
    return head, mods, X, Xl, items, Il, rows, rlat, gam, ix, kcol


@_jit
def _edges(BII: np.ndarray, si: np.ndarray, n_ent: int, m: int):
    """The within paths among the items' latents as edges ``a <- b`` (``B_II``'s nonzeros and
    the random slopes' entries), sorted by ``a``'s depth in the paths, so that every edge into
    ``b`` comes before the edges out of it: ``(ea, eb, base, e_of)``, ``base`` the edges' fixed
    part ``B_II[a, b]`` and ``e_of`` each slope entry's edge. A path free but zero here is no
    edge: it adds nothing to ``B_g``, and its gradient is formed densely (see the caller)."""
    on = np.zeros((m, m), np.bool_)
    for a in range(m):
        for b in range(m):
            on[a, b] = BII[a, b] != 0.0
    for e in range(n_ent):
        on[si[10 + 3 * e], si[11 + 3 * e]] = True
    level = np.zeros(m, np.int64)
    for _ in range(m):  # the longest path into each latent (the paths are recursive)
        for a in range(m):
            for b in range(m):
                if on[a, b] and level[b] + 1 > level[a]:
                    level[a] = level[b] + 1
    # Listed level by level, each in row-major order (a stable sort of the nonzeros by level),
    # by hand: numpy's nonzero and argsort would cost five more arrays on every gradient.
    n, top = 0, 0
    for a in range(m):
        top = max(top, level[a])
        for b in range(m):
            if on[a, b]:
                n += 1
    ea = np.empty(n, np.int64)
    eb = np.empty(n, np.int64)
    base = np.empty(n)
    t = 0
    for lev in range(top + 1):
        for a in range(m):
            if level[a] == lev:
                for b in range(m):
                    if on[a, b]:
                        ea[t], eb[t], base[t] = a, b, BII[a, b]
                        t += 1
    e_of = np.empty(n_ent, np.int64)
    for e in range(n_ent):
        for t in range(n):
            if ea[t] == si[10 + 3 * e] and eb[t] == si[11 + 3 * e]:
                e_of[e] = t
    return ea, eb, base, e_of


@_jit
def _between_covariance(Bb: np.ndarray, Psib: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """``T = (I - B_B)^-1`` and the between factors' covariance ``T Psi_B T'``."""
    T = _series_inverse(Bb, depth)
    return T, _mm_nt(_matmul(T, Psib), T)


@_jit
def _moderators(
    S: np.ndarray,
    mods: np.ndarray,
    kcol: np.ndarray,
    nu: np.ndarray,
    zc: np.ndarray,
    x: np.ndarray,
    raw_off: int,
):
    """The moderators' cluster values ``eta`` (G, o) and their log density, with the pieces
    the reverse pass reads (:func:`_moderators_backward`); ``ok`` False where a covariance is
    not positive definite.

    Level-2 columns are known: ``eta_k = w_g - nu``, density ``N(0, S_kk)`` through ``Lk =
    chol(S_kk)`` (``white = Lk^-1 eta_k``). The latent moderators are sampled given them:
    ``eta_l = white Wt + raw Lc'`` with ``Wt = Lk^-1 S_kl``, ``Lc = chol(S_ll - Wt' Wt)`` and
    ``raw`` standard normal (:func:`pymsem.compile.marginal.moderated_random_slope_logp`).
    """
    o = mods.shape[0]
    G = zc.shape[0]
    nk = 0
    for a in range(o):
        if kcol[a] >= 0:
            nk += 1
    nl = o - nk
    kp = np.empty(nk, np.int64)
    lq = np.empty(nl, np.int64)
    ik, il = 0, 0
    for a in range(o):
        if kcol[a] >= 0:
            kp[ik] = a
            ik += 1
        else:
            lq[il] = a
            il += 1
    known, latent = mods[kp], mods[lq]
    Skl = _sub(S, known, latent)
    Lk, ld = _cholesky(_sub(S, known, known))
    eta = np.zeros((G, o))
    white = np.zeros((G, nk))
    Wt = np.zeros((nk, nl))
    Lc = np.zeros((nl, nl))
    if np.isnan(ld):
        return eta, 0.0, False, Lk, white, Wt, Lc, kp, lq
    lp = 0.0
    for i in range(nk):
        lp -= G * math.log(Lk[i, i])
    lp -= 0.5 * G * o * _LOG2PI
    for j in range(nl):  # Wt = Lk^-1 S_kl
        for i in range(nk):
            t = Skl[i, j]
            for r in range(i):
                t -= Lk[i, r] * Wt[r, j]
            Wt[i, j] = t / Lk[i, i]
    Sc = _sub(S, latent, latent)
    Sc -= _matmul(Wt.T, Wt)
    Lc, ld = _cholesky(Sc)
    if np.isnan(ld):
        return eta, 0.0, False, Lk, white, Wt, Lc, kp, lq
    for g in range(G):
        for i in range(nk):
            e = zc[g, kcol[kp[i]]] - nu[kcol[kp[i]]]
            eta[g, kp[i]] = e
            t = e
            for r in range(i):
                t -= Lk[i, r] * white[g, r]
            white[g, i] = t / Lk[i, i]
            lp -= 0.5 * white[g, i] ** 2
        for j in range(nl):
            t = 0.0
            for i in range(nk):
                t += white[g, i] * Wt[i, j]
            for r in range(j + 1):
                t += Lc[j, r] * x[raw_off + g * nl + r]
            eta[g, lq[j]] = t
            lp -= 0.5 * x[raw_off + g * nl + j] ** 2
    return eta, lp, True, Lk, white, Wt, Lc, kp, lq


@_jit
def _moderators_backward(
    geta: np.ndarray,
    mods: np.ndarray,
    kcol: np.ndarray,
    x: np.ndarray,
    raw_off: int,
    Lk: np.ndarray,
    white: np.ndarray,
    Wt: np.ndarray,
    Lc: np.ndarray,
    kp: np.ndarray,
    lq: np.ndarray,
    gS: np.ndarray,
    gzc: np.ndarray,
    gnu: np.ndarray,
) -> np.ndarray:
    """The reverse pass of :func:`_moderators` (their density included): adds to ``gS``,
    ``gzc`` and ``gnu``; returns the gradient in the latent moderators' coordinates."""
    G = geta.shape[0]
    nk, nl = kp.shape[0], lq.shape[0]
    graw = np.zeros(G * nl)
    gwhite = np.zeros((G, nk))
    gWt = np.zeros((nk, nl))
    gLc = np.zeros((nl, nl))
    for g in range(G):
        for j in range(nl):
            v = geta[g, lq[j]]
            for i in range(nk):
                gwhite[g, i] += v * Wt[i, j]
                gWt[i, j] += white[g, i] * v
            for r in range(j + 1):
                gLc[j, r] += v * x[raw_off + g * nl + r]
                graw[g * nl + r] += v * Lc[j, r]
        for j in range(nl):
            graw[g * nl + j] -= x[raw_off + g * nl + j]
        for i in range(nk):
            gwhite[g, i] -= white[g, i]
    # cond = S_ll - Wt' Wt, Lc = chol(cond).
    gcond = _chol_backward(Lc, gLc)
    for i in range(nl):
        for j in range(nl):
            gS[mods[lq[i]], mods[lq[j]]] += gcond[i, j]
    if nk == 0:  # no level-2 column among the moderators
        return graw
    WtC = _matmul(Wt, gcond)
    for i in range(nk):
        for j in range(nl):
            gWt[i, j] -= 2.0 * WtC[i, j]
    # Triangular solves X = Lk^-1 B: dB = Lk^-T dX, dLk -= dB X' (lower triangle).
    gLk = np.zeros((nk, nk))
    for i in range(nk):
        gLk[i, i] -= G / Lk[i, i]
    gB = np.empty(nk)
    for g in range(G):
        for i in range(nk - 1, -1, -1):
            t = gwhite[g, i]
            for r in range(i + 1, nk):
                t -= Lk[r, i] * gB[r]
            gB[i] = t / Lk[i, i]
        for i in range(nk):
            col = kcol[kp[i]]
            ge = gB[i] + geta[g, kp[i]]
            gzc[g, col] += ge
            gnu[col] -= ge
            for r in range(i + 1):
                gLk[i, r] -= gB[i] * white[g, r]
    for j in range(nl):
        for i in range(nk - 1, -1, -1):
            t = gWt[i, j]
            for r in range(i + 1, nk):
                t -= Lk[r, i] * gB[r]
            gB[i] = t / Lk[i, i]
        for i in range(nk):
            gS[mods[kp[i]], mods[lq[j]]] += gB[i]
            for r in range(i + 1):
                gLk[i, r] -= gB[i] * Wt[r, j]
    gSkk = _chol_backward(Lk, gLk)
    for i in range(nk):
        for j in range(nk):
            gS[mods[kp[i]], mods[kp[j]]] += gSkk[i, j]
    return graw


@_jit
def moderator_values(
    theta: np.ndarray,
    x: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    si: np.ndarray,
    pi: np.ndarray,
    Z2: np.ndarray,
    cells: np.ndarray,
    p1: int,
) -> np.ndarray:
    """The moderators' cluster values (G, o), traced as ``moderator_values``: the level-2
    columns (``Z2`` with its sampled cells, ``p1`` level-1 columns before them in the cluster
    vector) minus their means, and the latent ones (:func:`_moderators`)."""
    head, mods, _, _, _, _, _, _, _, _, kcol = _table(si)
    _, _, _, _, _, _, _, _, io, fo = level_parts(theta, ispec, fspec, 0, 0)
    _, Bb, Psib, _, _, _, _, nu, _, _ = level_parts(theta, ispec, fspec, io, fo)
    _, S = _between_covariance(Bb, Psib, head[9])
    G = head[12]
    zc = np.zeros((G, p1 + Z2.shape[1]))
    zc[:, p1:] = Z2
    n_y, z_off, n_z = pi[7], pi[8], pi[9]
    for c in range(n_z):
        zc[cells[n_y + c, 0], p1 + cells[n_y + c, 1]] = x[z_off + c]
    return _moderators(S, mods, kcol, nu, zc, x, head[2])[0]


@_inline
def _failed(
    gtheta: np.ndarray,
    n_u: int,
    graw: np.ndarray,
    gext: np.ndarray,
    gD: np.ndarray,
    gzc: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the likelihood returns where the parameters give no density (a covariance not
    positive definite): NaN and zero gradients, in the shapes of a success."""
    return np.nan, gtheta, np.zeros(n_u), graw, gext, gD, gzc


@_jit
def moderated_value_and_grad(
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
    D: np.ndarray,
    zc: np.ndarray,
    want: bool,
    fixed: int,
    moderated: int,
):
    """The log-likelihood of moderated random slopes given the slopes and moderators, their
    priors, and the gradients.

    With ``want`` (sampled missing cells) ``D`` (p1, N) are the students' deviations from their
    cluster means, item-major (students sorted by cluster), else each cluster's within scatter
    in the order :func:`pymsem.compile.kernel.flat_model._moderated_tables` gives; ``zc`` (G, pb) are the
    cluster vectors. ``fixed`` (the items' factor count, or 0) and ``moderated`` (one more than
    the covariates' count, or 0) are the caller's compile-time constants. Returns ``(f,
    gtheta, gx_slopes, gx_raw, gext, gD, gz)``: the gradients in the slopes' and the
    moderators' coordinates, the LKJ factors after ``theta``, and the deviations (item-major,
    each student as if their cluster's mean were fixed) and cluster vectors (for sampled
    missing cells).
    """
    head, mods, X, Xl, items, Il, rows, rlat, gam, ix, kcol = _table(si)
    o, raw_off, kx, pI, mI, nrows, nr = head[0], head[2], head[3], head[4], head[5], head[6], head[7]
    depth_b, n_gamma, n_ix = head[9], head[10], head[11]
    # The same counts as compile-time constants where the caller has them
    # (slopes_numba.loop_size, FlatModel.slopes_variant): LLVM unrolls the loops they bound.
    if fixed > 0:
        mI = fixed
    if moderated > 0:
        kx = moderated - 1
    k = si[0]
    n_ent = si[9]
    mean_at = 10 + 3 * n_ent
    Lw, Bw, Psiw, sdw, Rpw, rsdw, Rtw, _nuw, io, fo = level_parts(theta, ispec, fspec, 0, 0)
    Lb, Bb, Psib, sdb, Rpb, rsdb, Rtb, nu, _, _ = level_parts(theta, ispec, fspec, io, fo)
    mb = Bb.shape[0]
    p1, m = Lw.shape
    G = zc.shape[0]
    N = D.shape[1] if want else 0
    pb = zc.shape[1]
    n_within = totals[0]
    gtheta = np.zeros(theta.shape[0])
    gext = np.zeros(ext.shape[0])
    graw = np.zeros(0)
    gD = np.zeros((p1, N))
    gzc = np.zeros((G, pb))
    u, lp, C, L, Cinv = slope_deviations(theta, ext, x, si, G)
    if np.isnan(lp):
        return _failed(gtheta, G * k, graw, gext, gD, gzc)

    # The moderators and their density.
    T, S = _between_covariance(Bb, Psib, depth_b)
    eta, lp_mod, ok, Lk, white, Wt, Lc, kp, lq = _moderators(S, mods, kcol, nu, zc, x, raw_off)
    if not ok:
        return _failed(gtheta, G * k, graw, gext, gD, gzc)
    lp += lp_mod
    Soo = _sub(S, mods, mods)
    ut = u.copy()
    for e in range(n_gamma):
        j, oj, pos = gam[3 * e], gam[3 * e + 1], gam[3 * e + 2]
        for g in range(G):
            ut[g, j] += theta[pos] * eta[g, oj]

    # The cluster vectors' means given the moderators, and the other between factors' covariance.
    Qo = np.empty((o, o))
    _inverse_pd(Soo, Qo)
    So_all = _sub(S, mods, np.arange(mb))
    M = _matmul(Qo, So_all)  # (o, mb)
    P = _mm_nt(M, Lb)  # (o, pb)
    mean = np.empty((G, pb))
    for g in range(G):
        for i in range(pb):
            mean[g, i] = nu[i]
        for a in range(o):
            ea = eta[g, a]
            for i in range(pb):
                mean[g, i] += ea * P[a, i]
    Sro = _sub(S, rlat, mods)
    SroQ = _matmul(Sro, Qo)  # (nr, o)
    SB = _sub(S, rlat, rlat)
    SB -= _mm_nt(SroQ, Sro)
    SBinv = np.empty((nr, nr))
    logdet_sb = _inverse_pd(SB, SBinv)

    # The items' within matrices; their latents' covariance given the exact covariates' latents.
    thw = np.empty(pI)
    for i in range(pI):
        thw[i] = rsdw[items[i]] ** 2
    LamI = _sub(Lw, items, Il)
    BII = _sub(Bw, Il, Il)
    IB0 = -BII
    for a in range(mI):
        IB0[a, a] += 1.0
    Qx = np.empty((kx, kx))
    logdet_xx = _inverse_pd(_sub(Psiw, Xl, Xl), Qx) if kx > 0 else 0.0
    Psi_IX = _sub(Psiw, Il, Xl)
    Kr = _matmul(Psi_IX, Qx)  # (mI, kx)
    Pc = _sub(Psiw, Il, Il)
    Pc -= _mm_nt(Kr, Psi_IX)
    Psi_inv = np.empty((mI, mI))
    logdet_psi = _inverse_pd(Pc, Psi_inv)
    if np.isnan(logdet_sb) or np.isnan(logdet_psi) or np.isnan(logdet_xx):
        return _failed(gtheta, G * k, graw, gext, gD, gzc)
    thb = np.empty(nrows)
    for i in range(nrows):
        thb[i] = rsdb[rows[i]] ** 2
    Lbr = _sub(Lb, rows, rlat)

    # The exact covariates: their density given the moderators, and the shift of the items by
    # C_g x_w, C_g = hs_g' LamI' with hs_g = (I - B_g)^-1 gamma_g (B_g = B_II plus the cluster's
    # slopes): one forward substitution over the paths' edges (_edges) per cluster.
    # The shift is applied through hs_g (mI x kx), never through C_g (kx x pI): the cluster
    # vectors' items lose LamI v_g with v_g = hs_g d_g.
    LamD = np.empty((pI, mI))
    for i in range(pI):
        for a in range(mI):
            LamD[i, a] = LamI[i, a] / thw[i]
    # Transposed copies, so that the loops over the items (the innermost) read contiguously.
    LamIt = _transpose(LamI)
    LamDt = _transpose(LamD)
    K = _matmul(LamIt, LamD)  # LamI' diag(1 / thw) LamI
    zt = np.empty((G, nrows))
    d = np.zeros((G, kx))
    Hs = np.zeros((G, mI, kx))
    v = np.zeros((G, mI))
    ea, eb, ebase, e_of = _edges(BII, si, n_ent, mI)
    n_edge = ea.shape[0]
    W = np.empty((G, n_edge))  # each cluster's B_g at the edges
    f_x = 0.0
    gamma0 = np.empty((mI, kx))
    for a in range(mI):
        for s in range(kx):
            gamma0[a, s] = Bw[Il[a], Xl[s]] + Kr[a, s]
    for g in range(G):
        for s in range(kx):
            d[g, s] = zc[g, X[s]] - mean[g, X[s]]
        if kx > 0:
            for ed in range(n_edge):
                W[g, ed] = ebase[ed]
            for e in range(n_ent):
                W[g, e_of[e]] += ut[g, si[12 + 3 * e]]
            for a in range(mI):
                for s in range(kx):
                    Hs[g, a, s] = gamma0[a, s]
            for e in range(n_ix):
                Hs[g, ix[3 * e], ix[3 * e + 1]] += ut[g, ix[3 * e + 2]]
            for ed in range(n_edge):  # an edge's source is final before the edge is read
                a, b, w = ea[ed], eb[ed], W[g, ed]
                for s in range(kx):
                    Hs[g, a, s] += w * Hs[g, b, s]
            for a in range(mI):
                va = 0.0
                for s in range(kx):
                    va += Hs[g, a, s] * d[g, s]
                v[g, a] = va
        for i in range(nrows):
            t = zc[g, rows[i]] - mean[g, rows[i]]
            if i < pI and kx > 0:
                for a in range(mI):
                    t -= LamI[i, a] * v[g, a]
            zt[g, i] = t
    Sxx = np.zeros((kx, kx))
    # Sized for the branch taken (the other's are empty), once: numba wants every path to
    # define them, and the complete data's reverse pass reads them.
    shift = not want and kx > 0
    Gs = G if shift else 0
    dM = np.zeros((Gs, mI, mI))
    dpool = np.empty(pI if shift else 0)
    A_ = np.empty((Gs, kx, mI))
    TL_ = np.empty((Gs, kx, mI))
    Cg = np.zeros((G if want else 0, kx, pI))
    Q = np.zeros((mI, mI))
    R = np.zeros((mI, pI))
    if want:
        # The students' shifted deviations D_I - D_X C_g, item-major as the core reads them
        # (innermost loops over a cluster's students, contiguous): the items' whole rows first,
        # then each cluster's shift. A slice assignment per (cluster, item) had cost more than
        # the arithmetic (bench/results/kernel_gradient.md, session 33).
        Sin = np.empty((pI, N))
        for i in range(pI):
            out = Sin[i]
            di = D[items[i]]
            for r in range(N):
                out[r] = di[r]
        start = 0
        for g in range(G):
            for s in range(kx):
                for a in range(mI):
                    hs = Hs[g, a, s]
                    for i in range(pI):
                        Cg[g, s, i] += hs * LamIt[a, i]
            end = start + int(sizes[size_index[g]])
            for s in range(kx):
                xs = D[X[s], start:end]
                for i in range(pI):
                    c = Cg[g, s, i]
                    out = Sin[i, start:end]
                    for r in range(out.shape[0]):
                        out[r] -= xs[r] * c
            for s in range(kx):
                for s2 in range(kx):
                    Sxx[s, s2] += _dot(D[X[s], start:end], D[X[s2], start:end])
            start = end
    else:
        # D holds, per cluster, the items' scatter S_II at the core's terms and on its diagonal,
        # then s_XI and S_XX (flat_model._moderated_tables), and the core reads it as it is. The
        # shift by C_g, -C' s_XI - s_IX C + C' S_XX C, enters at factor size:
        # dM_g = LamD' shift LamD = A' TL - Y' A with A = hs' K, Y = s_XI LamD, TL = S_XX A - Y;
        # and the pooled diagonal (the core sums it over clusters) gains
        # diag(LamI Q LamI') - 2 diag(LamI R), Q = sum_g hs S_XX hs', R = sum_g hs s_XI.
        Sin = D
        if kx > 0:
            o_xi = si[mean_at + k] + pI
            o_xx = o_xi + kx * pI
            Y = np.empty((kx, mI))
            HS = np.empty((mI, kx))  # hs S_XX
            for g in range(G):
                for s in range(kx):
                    for a in range(mI):
                        ta = 0.0
                        for b in range(mI):
                            ta += Hs[g, b, s] * K[b, a]
                        A_[g, s, a] = ta
                    xs = D[g, o_xi + s * pI : o_xi + (s + 1) * pI]
                    for a in range(mI):
                        # The product and the update apart: the update's loop vectorizes.
                        Y[s, a] = _dot(xs, LamDt[a])
                        hs = Hs[g, a, s]
                        ra = R[a]
                        for i in range(pI):
                            ra[i] += hs * xs[i]
                for s in range(kx):
                    for s2 in range(kx):
                        Sxx[s, s2] += D[g, o_xx + s * kx + s2]
                    for a in range(mI):
                        t = -Y[s, a]
                        for s2 in range(kx):
                            t += D[g, o_xx + s * kx + s2] * A_[g, s2, a]
                        TL_[g, s, a] = t
                for a in range(mI):
                    for s in range(kx):
                        t = 0.0
                        for s2 in range(kx):
                            t += Hs[g, a, s2] * D[g, o_xx + s2 * kx + s]
                        HS[a, s] = t
                    for b in range(a + 1):
                        t = 0.0
                        q = 0.0
                        for s in range(kx):
                            t += A_[g, s, a] * TL_[g, s, b] - Y[s, a] * A_[g, s, b]
                            q += HS[a, s] * Hs[g, b, s]
                        dM[g, a, b] = t
                        Q[a, b] += q
            for a in range(mI):
                for b in range(a):
                    Q[b, a] = Q[a, b]
            for i in range(pI):
                t = 0.0
                for a in range(mI):
                    la = LamI[i, a]
                    t -= 2.0 * la * R[a, i]
                    for b in range(mI):
                        t += la * Q[a, b] * LamI[i, b]
                dpool[i] = t
    # The covariates' within part: scatter Sxx + sum_g n_g d_g d_g' about their conditional means.
    Mx = Sxx.copy()
    for s in range(kx):
        for s2 in range(kx):
            for g in range(G):
                Mx[s, s2] += sizes[size_index[g]] * d[g, s] * d[g, s2]
    if kx > 0:
        qm = 0.0
        for s in range(kx):
            qm += _dot(Qx[s], Mx[s])
        f_x = -0.5 * (n_within + G) * (kx * _LOG2PI + logdet_xx) - 0.5 * qm

    f, gthw, dLw, gIB0, gPsiinv, gthb, dLb, gSBinv, _, gut, gSin, gz = woodbury_core(
        thw, LamI, IB0, Psi_inv, logdet_psi, thb, Lbr, SBinv, logdet_sb, np.zeros(nrows), ut, Sin, dM, dpool,
        zt, sizes, counts, totals, size_index, si, sf, want, fixed,
    )  # fmt: skip
    if np.isnan(f):
        return _failed(gtheta, G * k, graw, gext, gD, gzc)
    f += f_x + lp

    # Reverse pass. Full-size gradients of both levels' matrices, the between covariance S,
    # the cluster vectors' means and the moderators.
    gLw = np.zeros((p1, m))
    gBw = np.zeros((m, m))
    gPsiw = np.zeros((m, m))
    gthw_all = np.zeros(p1)
    gLb = np.zeros((pb, mb))
    gS = np.zeros((mb, mb))
    gthb_all = np.zeros(pb)
    gnu = np.zeros(pb)
    geta = np.zeros((G, o))
    gQo = np.zeros((o, o))
    gQx = np.zeros((kx, kx))
    gKr = np.zeros((mI, kx))
    for i in range(pI):
        gthw_all[items[i]] += gthw[i]
        for a in range(mI):
            gLw[items[i], Il[a]] += dLw[i, a]
    for a in range(mI):
        for b in range(mI):
            gBw[Il[a], Il[b]] -= gIB0[a, b]
    for i in range(nrows):
        gthb_all[rows[i]] += gthb[i]
        for a in range(nr):
            gLb[rows[i], rlat[a]] += dLb[i, a]
    # The items' latent covariance given the covariates: Pc = Psi_II - Psi_IX Qx Psi_XI.
    Pm = _matmul(_matmul(Psi_inv, gPsiinv), Psi_inv)
    gPc = np.empty((mI, mI))
    for a in range(mI):
        for b in range(mI):
            gPc[a, b] = -0.5 * (Pm[a, b] + Pm[b, a]) - 0.5 * (n_within + G) * Psi_inv[a, b]
    for a in range(mI):
        for b in range(mI):
            gPsiw[Il[a], Il[b]] += gPc[a, b]
    gPcKr = _matmul(gPc, Kr)  # (mI, kx)
    for a in range(mI):
        for s in range(kx):
            gPsiw[Il[a], Xl[s]] -= gPcKr[a, s]
            gPsiw[Xl[s], Il[a]] -= gPcKr[a, s]
    gQx -= _matmul(_matmul(Psi_IX.T, gPc), Psi_IX)
    # One pass over the clusters: the cluster vectors (zt = zc[rows] - mean[rows] - LamI v_g,
    # v_g = hs_g d_g), the shift (the students' deviations with sampled cells, else dM_g), then
    # hs_g = (I - B_g)^-1 gamma_g: dh is the cluster's gradient in hs_g, lambda = (I - B_g)^-T dh
    # (one backward substitution over the edges) its gradient in gamma_g, and lambda hs_g' in
    # B_g. The loadings' (gLamIt, gLamDt: transposed) and the model's matrices' (B_II, and B_IX
    # with Kr through gamma_g) gradients are summed over the clusters.
    gLamIt = np.zeros((mI, pI))
    gLamDt = np.zeros((mI, pI))
    gd = np.zeros((G, kx))
    dh = np.zeros((mI, kx))
    gC = np.empty((kx, pI))
    dA = np.empty((kx, mI))
    dY = np.empty((kx, mI))
    dK = np.zeros((mI, mI))
    gh = np.empty((mI, kx))
    gB_sum = np.zeros((mI, mI))
    gh_sum = np.zeros((mI, kx))
    start = 0
    for g in range(G):
        for i in range(nrows):
            val = gz[g, i]
            gzc[g, rows[i]] += val
        if kx > 0:
            gzg = gz[g, :pI]
            for a in range(mI):
                dv = -_dot(gzg, LamIt[a])
                va = v[g, a]
                ga = gLamIt[a]
                for i in range(pI):
                    ga[i] -= gzg[i] * va
                for s in range(kx):
                    dh[a, s] = dv * d[g, s]
                    gd[g, s] += dv * Hs[g, a, s]
        if want:
            # The shifted deviations D_I - D_X C_g (their items' share added over whole rows
            # after the loop), and the covariates' scatter.
            end = start + int(sizes[size_index[g]])
            for s in range(kx):
                xs = D[X[s], start:end]
                gs = gD[X[s], start:end]
                for i in range(pI):
                    gsi = gSin[i, start:end]
                    gC[s, i] = -_dot(gsi, xs)
                    c = Cg[g, s, i]
                    for r in range(gs.shape[0]):
                        gs[r] -= gsi[r] * c
                for s2 in range(kx):
                    c = Qx[s, s2]
                    xs = D[X[s2], start:end]
                    for r in range(gs.shape[0]):
                        gs[r] -= c * xs[r]
            start = end
            for s in range(kx):
                for a in range(mI):
                    t = 0.0
                    hs = Hs[g, a, s]
                    for i in range(pI):
                        t += gC[s, i] * LamIt[a, i]
                        gLamIt[a, i] += gC[s, i] * hs
                    dh[a, s] += t
        elif kx > 0:
            # Through dM_g (its gradient C_g^-1 / 2, from the cluster loop) and the pooled
            # diagonal (its gradient -1 / (2 thw)): dA = TL C_g^-1, dY = -A C_g^-1; A = hs' K
            # gives dhs += K dA' and dK += hs dA; Y = s_XI LamD gives dLamD += s_XI' dY; Q and
            # R give dhs -= TL' (and the loadings' share after the loop).
            for s in range(kx):
                for b in range(mI):
                    ta = 0.0
                    ty = 0.0
                    for a in range(mI):
                        c_ab = gSin[g, a * mI + b]
                        ta += TL_[g, s, a] * c_ab
                        ty -= A_[g, s, a] * c_ab
                    dA[s, b] = ta
                    dY[s, b] = ty
                for a in range(mI):
                    t = -TL_[g, s, a]
                    hs = Hs[g, a, s]
                    for b in range(mI):
                        t += K[a, b] * dA[s, b]
                        dK[a, b] += hs * dA[s, b]
                    dh[a, s] += t
                xs = D[g, o_xi + s * pI : o_xi + (s + 1) * pI]
                for b in range(mI):
                    dy = dY[s, b]
                    gb = gLamDt[b]
                    for i in range(pI):
                        gb[i] += xs[i] * dy
        if kx > 0:
            for a in range(mI):
                for s in range(kx):
                    gh[a, s] = dh[a, s]
            for ed in range(n_edge - 1, -1, -1):  # an edge's target is final before it is read
                a, b, w = ea[ed], eb[ed], W[g, ed]
                for s in range(kx):
                    gh[b, s] += w * gh[a, s]
            # lambda hs_g' at every entry, edge or not: a path free but zero here has a gradient.
            for a in range(mI):
                for b in range(mI):
                    t = 0.0
                    for s in range(kx):
                        t += gh[a, s] * Hs[g, b, s]
                    gB_sum[a, b] += t
                for s in range(kx):
                    gh_sum[a, s] += gh[a, s]
            for e in range(n_ent):
                r, c = si[10 + 3 * e], si[11 + 3 * e]
                t = 0.0
                for s in range(kx):
                    t += gh[r, s] * Hs[g, c, s]
                gut[g, si[12 + 3 * e]] += t
            for e in range(n_ix):
                gut[g, ix[3 * e + 2]] += gh[ix[3 * e], ix[3 * e + 1]]
    if want:
        for i in range(pI):
            gi = gD[items[i]]
            gsi = gSin[i]
            for r in range(N):
                gi[r] += gsi[r]
    if not want and kx > 0:
        # K = LamI' LamD; the pooled diagonal's loadings' share -diag(1 / thw) (LamI Q - R').
        for i in range(pI):
            for a in range(mI):
                t = 0.0
                for b in range(mI):
                    t += LamD[i, b] * dK[a, b] - Q[a, b] * LamI[i, b] / thw[i]
                    gLamDt[a, i] += LamI[i, b] * dK[b, a]
                gLamIt[a, i] += t + R[a, i] / thw[i]
        for i in range(pI):
            for a in range(mI):
                val = gLamDt[a, i] / thw[i]
                gLw[items[i], Il[a]] += val
                gthw_all[items[i]] -= val * LamI[i, a] / thw[i]
    if kx > 0:
        # The covariates' density: -N/2 log|Psi_xx| - tr(Qx Mx) / 2.
        gQx -= 0.5 * Mx
        for g in range(G):
            nn = sizes[size_index[g]]
            for s in range(kx):
                t = 0.0
                for s2 in range(kx):
                    t += Qx[s, s2] * d[g, s2]
                gd[g, s] -= nn * t
        for i in range(pI):
            for a in range(mI):
                gLw[items[i], Il[a]] += gLamIt[a, i]
        for a in range(mI):
            for b in range(mI):
                gBw[Il[a], Il[b]] += gB_sum[a, b]
            for s in range(kx):
                gBw[Il[a], Xl[s]] += gh_sum[a, s]
                gKr[a, s] += gh_sum[a, s]
        # Kr = Psi_IX Qx; Qx = Psi_xx^-1.
        gKrQ = _matmul(gKr, Qx)
        for a in range(mI):
            for s in range(kx):
                gPsiw[Il[a], Xl[s]] += gKrQ[a, s]
        gQx += _matmul(Psi_IX.T, gKr)
        gPxx = _matmul(_matmul(Qx, gQx), Qx)
        for s in range(kx):
            for s2 in range(kx):
                gPsiw[Xl[s], Xl[s2]] -= gPxx[s, s2] + 0.5 * (n_within + G) * Qx[s, s2]
        for g in range(G):
            for s in range(kx):
                gzc[g, X[s]] += gd[g, s]
    # SB = S_rr - S_ro Qo S_or, through SB^-1 and log|SB|.
    Pb = _matmul(_matmul(SBinv, gSBinv), SBinv)
    gSB = np.empty((nr, nr))
    gSBs = np.empty((nr, nr))
    for i in range(nr):
        for j in range(nr):
            gSB[i, j] = -Pb[i, j] - 0.5 * G * SBinv[i, j]
    for i in range(nr):
        for j in range(i):
            t = gSB[i, j] + gSB[j, i]
            gSBs[i, j] = t
            gSBs[j, i] = t
        gSBs[i, i] = 2.0 * gSB[i, i]
    gSBSroQ = _matmul(gSBs, SroQ)  # (nr, o)
    for i in range(nr):
        for j in range(nr):
            gS[rlat[i], rlat[j]] += gSB[i, j]
        for a in range(o):
            gS[rlat[i], mods[a]] -= gSBSroQ[i, a]
    gQo -= _matmul(_matmul(Sro.T, gSB), Sro)
    # mean = nu + eta P, P = Qo S_o: Lb'. The means' gradient is -gzc so far (zt = zc - mean).
    gP = np.zeros((o, pb))
    for g in range(G):
        for i in range(pb):
            gnu[i] -= gzc[g, i]
        for a in range(o):
            ea = eta[g, a]
            t = 0.0
            for i in range(pb):
                gP[a, i] -= ea * gzc[g, i]
                t += gzc[g, i] * P[a, i]
            geta[g, a] -= t
    gM = _matmul(gP, Lb)  # (o, mb)
    gLb += _matmul(gP.T, M)
    gQo += _mm_nt(gM, So_all)
    QgM = _matmul(Qo, gM)
    for a in range(o):
        for b in range(mb):
            gS[mods[a], b] += QgM[a, b]
    # The slopes' moderation: ut = u + Gamma eta.
    for e in range(n_gamma):
        j, oj, pos = gam[3 * e], gam[3 * e + 1], gam[3 * e + 2]
        v = 0.0
        for g in range(G):
            v += gut[g, j] * eta[g, oj]
            geta[g, oj] += gut[g, j] * theta[pos]
        gtheta[pos] += v
    # The moderators (their density included); Qo = S_oo^-1.
    graw = _moderators_backward(geta, mods, kcol, x, raw_off, Lk, white, Wt, Lc, kp, lq, gS, gzc, gnu)
    gSoo = _matmul(_matmul(Qo, gQo), Qo)
    for a in range(o):
        for b in range(o):
            gS[mods[a], mods[b]] -= gSoo[a, b]
    # S = T Psi_B T', T = (I - B_B)^-1: dPsi_B = T' gS T; dB_B = T' (gS + gS') T Psi_B T'.
    gSs = np.empty((mb, mb))
    for i in range(mb):
        for j in range(mb):
            gSs[i, j] = gS[i, j] + gS[j, i]
    gPb = _matmul(T.T, _matmul(gS, T))
    dPsib = np.empty((mb, mb))
    for i in range(mb):
        for j in range(mb):
            dPsib[i, j] = 0.5 * (gPb[i, j] + gPb[j, i])
    dBb = _mm_nt(_matmul(T.T, _matmul(_matmul(gSs, T), Psib)), T)
    dPsiw = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            dPsiw[i, j] = 0.5 * (gPsiw[i, j] + gPsiw[j, i])
    dThw = np.zeros((p1, p1))
    for i in range(p1):
        dThw[i, i] = gthw_all[i]
    dThb = np.zeros((pb, pb))
    for i in range(pb):
        dThb[i, i] = gthb_all[i]
    level_grads_to_theta(gLw, gBw, dPsiw, dThw, np.zeros(p1), ispec, 0, Rpw, sdw, Rtw, rsdw, gtheta)
    level_grads_to_theta(gLb, dBb, dPsib, dThb, gnu, ispec, io, Rpb, sdb, Rtb, rsdb, gtheta)
    fq, gxs = slopes_backward(gut, u, x, theta, si, C, L, Cinv, gtheta, gext)
    return f + fq, gtheta, gxs, graw, gext, gD, gzc
