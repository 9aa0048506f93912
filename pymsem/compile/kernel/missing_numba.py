"""The per-cluster Gaussian kernel for observed cells: log-likelihood, moments and gradient in one call.

Each cluster ``g`` has a cluster vector ``z_g = (z1, x) ~ N(mu_g, V)`` (latent cluster
means of the ``p1`` level-1 variables, then the ``q`` level-2 columns) and students
``y_i = z1 + e_i``, ``e_i ~ N(0, W_g)``, of whom only the observed cells are seen. The
students of a cluster are reduced by missingness pattern (:mod:`pymsem.compile.missing`):
a *pair* (cluster, pattern) enters through its size, mean and scatter.

For one cluster the kernel conditions on the observed level-2 values, integrates the rest
of ``z_g`` out (one Cholesky factor of the unobserved block, whatever the cluster's size)
and returns the log-likelihood and the posterior mean and covariance of ``z_g``. The
gradient follows from those moments by Fisher's identity (the gradient of the observed-data
log-likelihood is the posterior expectation of the complete-data one)::

    df/dmu_g = V^-1 (E z_g - mu_g),
    df/dV    = V^-1 T V^-1 / 2 - G V^-1 / 2,  T = sum_g E[(z_g - mu_g)(z_g - mu_g)'],
    df/dW_g  = sum_pairs D R^-1 (S + n (e e' + C_oo)) R^-1 D / 2 - n D R^-1 D / 2,

with ``R`` the pair's observed block of ``W_g``, ``e`` its mean minus the posterior mean of
``z1``, ``C`` the posterior covariance and ``D`` the observed coordinates. With one within
covariance for all clusters (``W`` of shape ``(1, p1, p1)``), each pattern's block is
factored once and the pairs' expected scatters are summed per pattern, so a pair costs
``O(p1^2)``. Floating-point flags are IEEE, as in :mod:`pymsem.compile.kernel.numba_impl`.
"""

from __future__ import annotations

import numba
import numpy as np

from pymsem.compile.kernel.numba_impl import _cholesky, _inverse_pd, _matmul

__all__ = ["missing_moments", "missing_value_and_grad"]

_LOG2PI = float(np.log(2 * np.pi))
_jit = numba.njit(cache=True, fastmath=False, nogil=True)


@_jit
def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L^-1 B`` for a lower-triangular ``L`` and a matrix ``B``."""
    n, k = B.shape
    X = np.empty((n, k))
    for c in range(k):
        for i in range(n):
            v = B[i, c]
            for t in range(i):
                v -= L[i, t] * X[t, c]
            X[i, c] = v / L[i, i]
    return X


@_jit
def _masked_inverse(W: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The inverse of the observed block of ``W``, zero-padded to ``p x p``, and its log-determinant."""
    p = W.shape[0]
    obs = np.flatnonzero(mask > 0.5)
    k = len(obs)
    R = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            R[a, b] = W[obs[a], obs[b]]
    Ri = np.empty((k, k))
    logdet = _inverse_pd(R, Ri)
    out = np.zeros((p, p))
    if np.isnan(logdet):
        return out, np.nan
    for a in range(k):
        for b in range(k):
            out[obs[a], obs[b]] = Ri[a, b]
    return out, logdet


@_jit
def _cluster(
    g, W, V, mu_g, pair_start, pair_pattern, patterns, pair_n, pair_mean, scatter_index, pair_scatter,
    level2, level2_mask, shared_inv, shared_ld,
):  # fmt: skip
    """One cluster: ``(log p, E z, Cov z, the pairs' padded inverses)``; ``nan`` if not PD."""
    p1 = W.shape[1]
    pb = V.shape[0]
    q = pb - p1
    ox = np.empty(q, dtype=np.int64)
    no = 0
    u = np.empty(pb, dtype=np.int64)
    nu = 0
    for i in range(p1):
        u[nu] = i
        nu += 1
    for j in range(q):
        if level2_mask[g, j] > 0.5:
            ox[no] = p1 + j
            no += 1
        else:
            u[nu] = p1 + j
            nu += 1
    ox = ox[:no]
    u = u[:nu]
    zhat = np.empty(pb)
    zcov = np.zeros((pb, pb))
    npair = pair_start[g + 1] - pair_start[g]
    shared = shared_inv.shape[0] > 0
    Rinv = np.zeros((0 if shared else npair, p1, p1))
    # Condition on the observed level-2 values: z_u | x_o ~ N(m_u, C_u).
    m_u = np.empty(nu)
    for a in range(nu):
        m_u[a] = mu_g[u[a]]
    C_u = np.empty((nu, nu))
    for a in range(nu):
        for b in range(nu):
            C_u[a, b] = V[u[a], u[b]]
    ll = 0.0
    if no > 0:
        Voo = np.empty((no, no))
        Vou = np.empty((no, nu))
        dx = np.empty((no, 1))
        for a in range(no):
            dx[a, 0] = level2[g, ox[a] - p1] - mu_g[ox[a]]
            for b in range(no):
                Voo[a, b] = V[ox[a], ox[b]]
            for b in range(nu):
                Vou[a, b] = V[ox[a], u[b]]
        Loo, ld_oo = _cholesky(Voo)
        if np.isnan(ld_oo):
            return np.nan, zhat, zcov, Rinv
        w = _solve_lower(Loo, dx)
        A = _solve_lower(Loo, Vou)
        ww = 0.0
        for a in range(no):
            ww += w[a, 0] * w[a, 0]
        ll += -0.5 * (no * _LOG2PI + ld_oo + ww)
        for a in range(nu):
            v = 0.0
            for t in range(no):
                v += A[t, a] * w[t, 0]
            m_u[a] += v
            for b in range(nu):
                v = 0.0
                for t in range(no):
                    v += A[t, a] * A[t, b]
                C_u[a, b] -= v
    # The pairs: their own terms, the precision they add to z1 and its score at m_u.
    Wt = np.zeros((p1, p1))
    bvec = np.zeros(p1)
    d = np.empty(p1)
    for k in range(npair):
        pr = pair_start[g] + k
        pat = pair_pattern[pr]
        mask = patterns[pat]
        if shared:
            Ri = shared_inv[pat]
            ld = shared_ld[pat]
        else:
            Ri, ld = _masked_inverse(W[g], mask)
            if np.isnan(ld):
                return np.nan, zhat, zcov, Rinv
            Rinv[k] = Ri
        n = pair_n[pr]
        nobs = 0.0
        for i in range(p1):
            d[i] = (pair_mean[pr, i] - m_u[i]) * mask[i]
            nobs += mask[i]
        quad = 0.0
        for i in range(p1):
            if mask[i] > 0.5:
                v = 0.0
                for j in range(p1):
                    v += Ri[i, j] * d[j]
                bvec[i] += n * v
                quad += d[i] * v
                for j in range(p1):
                    Wt[i, j] += n * Ri[i, j]
        tr = 0.0
        s = scatter_index[pr]
        if s >= 0:
            for i in range(p1):
                for j in range(p1):
                    tr += Ri[i, j] * pair_scatter[s, i, j]
        ll += -0.5 * (n * (ld + nobs * _LOG2PI) + n * quad + tr)
    # Integrate z_u out: with C_u = L L', M = I + L' H L (H = Wt on the z1 block).
    L, ld_c = _cholesky(C_u)
    if np.isnan(ld_c):
        return np.nan, zhat, zcov, Rinv
    HL = np.zeros((nu, nu))
    for i in range(p1):
        for j in range(nu):
            v = 0.0
            for t in range(p1):
                v += Wt[i, t] * L[t, j]
            HL[i, j] = v
    M = np.eye(nu)
    for i in range(nu):
        for j in range(nu):
            v = 0.0
            for t in range(p1):
                v += L[t, i] * HL[t, j]
            M[i, j] += v
    LM, ld_m = _cholesky(M)
    if np.isnan(ld_m):
        return np.nan, zhat, zcov, Rinv
    Ltb = np.zeros((nu, 1))
    for i in range(nu):
        v = 0.0
        for t in range(p1):
            v += L[t, i] * bvec[t]
        Ltb[i, 0] = v
    vv = _solve_lower(LM, Ltb)
    vq = 0.0
    for i in range(nu):
        vq += vv[i, 0] * vv[i, 0]
    ll += -0.5 * ld_m + 0.5 * vq
    # Posterior of z_u: covariance L M^-1 L', mean m_u + L M^-1 L' b.
    X = _solve_lower(LM, L.T.copy())  # LM^-1 L'
    P = np.empty((nu, nu))
    for i in range(nu):
        for j in range(i + 1):
            v = 0.0
            for t in range(nu):
                v += X[t, i] * X[t, j]
            P[i, j] = v
            P[j, i] = v
    for a in range(no):
        zhat[ox[a]] = level2[g, ox[a] - p1]
    for a in range(nu):
        v = 0.0
        for t in range(p1):
            v += P[a, t] * bvec[t]
        zhat[u[a]] = m_u[a] + v
        for b in range(nu):
            zcov[u[a], u[b]] = P[a, b]
    return ll, zhat, zcov, Rinv


@_jit
def _shared_inverses(W: np.ndarray, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    K, p1 = patterns.shape
    inv = np.zeros((K, p1, p1))
    ld = np.empty(K)
    for k in range(K):
        inv[k], ld[k] = _masked_inverse(W[0], patterns[k])
    return inv, ld


@_jit
def missing_moments(
    W, V, mu, pair_start, pair_pattern, patterns, pair_n, pair_mean, scatter_index, pair_scatter, level2,
    level2_mask,
):  # fmt: skip
    """Each cluster's log-likelihood ``(G,)`` and the posterior mean ``(G, pb)`` and covariance of ``z_g``.

    ``W`` is ``(1, p1, p1)`` (one within covariance) or ``(G, p1, p1)``; ``mu`` is ``(1, pb)``
    or ``(G, pb)``. Pairs are sorted by cluster, those of cluster ``g`` at
    ``pair_start[g]:pair_start[g + 1]``; ``scatter_index`` points into ``pair_scatter`` (-1:
    a pair of one student).
    """
    G = level2.shape[0]
    pb = V.shape[0]
    shared = W.shape[0] == 1
    if shared:
        inv, ld = _shared_inverses(W, patterns)
    else:
        inv, ld = np.zeros((0, 1, 1)), np.zeros(0)
    out = np.empty(G)
    zhat = np.empty((G, pb))
    zcov = np.empty((G, pb, pb))
    for g in range(G):
        mg = mu[0] if mu.shape[0] == 1 else mu[g]
        out[g], zhat[g], zcov[g], _ = _cluster(
            g, W, V, mg, pair_start, pair_pattern, patterns,
            pair_n, pair_mean, scatter_index, pair_scatter, level2, level2_mask, inv, ld,
        )  # fmt: skip
    return out, zhat, zcov


@_jit
def missing_value_and_grad(
    W, V, mu, pair_start, pair_pattern, patterns, pair_n, pair_mean, scatter_index, pair_scatter, level2,
    level2_mask,
):  # fmt: skip
    """``(f, df/dW, df/dV, df/dmu)``: the summed log-likelihood and its gradient (see the module)."""
    G = level2.shape[0]
    p1 = W.shape[1]
    pb = V.shape[0]
    K = patterns.shape[0]
    shared = W.shape[0] == 1
    if shared:
        inv, ld = _shared_inverses(W, patterns)
        for k in range(K):
            if np.isnan(ld[k]):
                return np.nan, np.zeros_like(W), np.zeros_like(V), np.zeros_like(mu)
    else:
        inv, ld = np.zeros((0, 1, 1)), np.zeros(0)
    Vinv = np.empty((pb, pb))
    if np.isnan(_inverse_pd(V, Vinv)):
        return np.nan, np.zeros_like(W), np.zeros_like(V), np.zeros_like(mu)
    f = 0.0
    dW = np.zeros_like(W)
    dmu = np.zeros_like(mu)
    T = np.zeros((pb, pb))
    E_pat = np.zeros((K if shared else 0, p1, p1))  # expected scatter summed per pattern
    n_pat = np.zeros(K)
    dev = np.empty(pb)
    for g in range(G):
        mg = mu[0] if mu.shape[0] == 1 else mu[g]
        ll, zhat, zcov, Rinv = _cluster(
            g, W, V, mg, pair_start, pair_pattern, patterns, pair_n, pair_mean, scatter_index,
            pair_scatter, level2, level2_mask, inv, ld,
        )  # fmt: skip
        if np.isnan(ll):
            return np.nan, np.zeros_like(W), np.zeros_like(V), np.zeros_like(mu)
        f += ll
        for i in range(pb):
            dev[i] = zhat[i] - mg[i]
        for i in range(pb):
            for j in range(pb):
                T[i, j] += dev[i] * dev[j] + zcov[i, j]
        gm = 0 if mu.shape[0] == 1 else g
        for i in range(pb):
            v = 0.0
            for j in range(pb):
                v += Vinv[i, j] * dev[j]
            dmu[gm, i] += v
        # E = S + n (e e' + C_oo) on the observed coordinates of each pair.
        for k in range(pair_start[g + 1] - pair_start[g]):
            pr = pair_start[g] + k
            pat = pair_pattern[pr]
            mask = patterns[pat]
            n = pair_n[pr]
            s = scatter_index[pr]
            E = np.zeros((p1, p1))
            for i in range(p1):
                if mask[i] > 0.5:
                    ei = pair_mean[pr, i] - zhat[i]
                    for j in range(p1):
                        if mask[j] > 0.5:
                            ej = pair_mean[pr, j] - zhat[j]
                            E[i, j] = n * (ei * ej + zcov[i, j])
                            if s >= 0:
                                E[i, j] += pair_scatter[s, i, j]
            if shared:
                E_pat[pat] += E
                n_pat[pat] += n
            else:
                # On the observed block only: a pair with a third of its cells missing costs
                # about a third of the full p1 x p1 product.
                obs = np.flatnonzero(mask > 0.5)
                no = len(obs)
                Rk = np.empty((no, no))
                Ek = np.empty((no, no))
                for a in range(no):
                    for b in range(no):
                        Rk[a, b] = Rinv[k, obs[a], obs[b]]
                        Ek[a, b] = E[obs[a], obs[b]]
                RER = _matmul(_matmul(Rk, Ek), Rk)
                for a in range(no):
                    for b in range(no):
                        dW[g, obs[a], obs[b]] += 0.5 * (RER[a, b] - n * Rk[a, b])
    if shared:
        for k in range(K):
            if n_pat[k] > 0:
                RER = _matmul(_matmul(inv[k], E_pat[k]), inv[k])
                for i in range(p1):
                    for j in range(p1):
                        dW[0, i, j] += 0.5 * (RER[i, j] - n_pat[k] * inv[k][i, j])
    VTV = _matmul(_matmul(Vinv, T), Vinv)
    dV = 0.5 * (VTV - G * Vinv)
    return f, dW, dV, dmu
