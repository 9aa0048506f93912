"""The collapsed likelihood with missing values: every student contributes what was observed.

Students of cluster ``g`` with the same set ``o`` of observed level-1 variables
(a *missingness pattern*) form a *pair* ``(g, o)``; the pair enters the
likelihood only through its size, mean vector and within scatter, computed once
before sampling, so complete rows keep using sufficient statistics.

Write ``z_g`` for the cluster vector (latent cluster means ``z1`` of the level-1
variables, then the level-2 columns ``x``), ``z_g ~ N(mean_g, V)``, and
``y_ig = z1_g + e_ig`` with ``e_ig ~ N(0, W_g)``.  First the observed level-2
values are conditioned on (one Gaussian conditioning per pattern of observed
level-2 columns): ``log N(x_o | mean_x, V_oo)`` and ``z1 | x_o ~ N(m_g, C)``.
Then, with ``R_i = W_g[o_i, o_i]`` and ``r_i = y_i,o - m_g[o_i]``, integrating
``z1`` out gives (Woodbury identity and determinant lemma, ``C = L L'``)::

    log p(y_g | x_o) = sum_i log N(r_i | 0, R_i) - log|M_g|/2 + b_g' L M_g^-1 L' b_g / 2,
    W~_g = sum_i P_i' R_i^-1 P_i,  b_g = sum_i P_i' R_i^-1 r_i,  M_g = I + L' W~_g L,

so each cluster needs one Cholesky factor of a ``p1 x p1`` matrix, whatever its
size and however many patterns it has.  Sub-matrices of varying size are never
formed: a missing coordinate is *padded*, ``R~ = D R D + (I - D)`` with ``D`` the
0/1 diagonal of observed coordinates, whose inverse and log-determinant are those
of the observed block (plus an identity block and 0).  With complete data this is
the same likelihood as :func:`pymsem.compile.marginal.marginal_logp`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pymsem.compile.linalg import chol_logdet, cholesky, solve_lower
from pymsem.compile.structure import ModelStructure
from pymsem.specification.data import ClusteredData

__all__ = ["PatternStatistics", "missing_logp", "pattern_statistics"]

_LOG2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class PatternStatistics:
    """Per-(cluster, pattern) sufficient statistics of data with missing values.

    Attributes
    ----------
    patterns
        ``(K, p1)`` 0/1 masks of the observed level-1 variables of each pattern
        (patterns with no observed level-1 variable are left out: such rows carry
        no level-1 information).
    pair_cluster, pair_pattern, pair_n
        For each (cluster, pattern) pair with at least one student: its cluster,
        its pattern and its number of students.
    pair_mean
        ``(P, p1)`` the pair's mean vector, 0 at missing coordinates.
    scatter_pairs, pair_scatter
        Pairs with two or more students and their within-pair scatter matrices
        ``(P2, p1, p1)`` (0 at missing coordinates).
    level2
        ``(G, q)`` values of the level-2 columns (0 where missing) and
        ``level2_mask`` which of them are observed.
    """

    n_clusters: int
    p1: int
    patterns: np.ndarray
    pair_cluster: np.ndarray
    pair_pattern: np.ndarray
    pair_n: np.ndarray
    pair_mean: np.ndarray
    scatter_pairs: np.ndarray
    pair_scatter: np.ndarray
    level2: np.ndarray
    level2_mask: np.ndarray

    def as_model_data(self) -> PatternStatistics:
        """The pairs' moments and the level-2 values as ``pm.Data`` in the current model.

        Index arrays and masks stay constants (they shape the graph); see
        :meth:`pymsem.compile.marginal.SufficientStatistics.as_model_data` for why data.
        """
        import pymc as pm

        names = ("pair_n", "pair_mean", "pair_scatter", "level2")
        return replace(self, **{f: pm.Data(f"stats_{f}", getattr(self, f)) for f in names})

    @property
    def pair_mask(self) -> np.ndarray:
        return self.patterns[self.pair_pattern]

    @property
    def n_pairs(self) -> int:
        return len(self.pair_n)


def pattern_statistics(structure: ModelStructure, data: ClusteredData) -> PatternStatistics:
    """Group the students of every cluster by missingness pattern and reduce each group to moments."""
    Y = data.frame[structure.level1].to_numpy(float)
    obs = ~np.isnan(Y)
    keep = obs.any(axis=1)
    Y, obs, cl = Y[keep], obs[keep], data.cluster_index[keep]
    patterns, pat = np.unique(obs, axis=0, return_inverse=True)
    pat = pat.ravel()
    K, G, p1 = len(patterns), data.n_clusters, Y.shape[1]
    pair_keys, pair_of_row = np.unique(cl * K + pat, return_inverse=True)
    pair_of_row = pair_of_row.ravel()
    P = len(pair_keys)
    n = np.bincount(pair_of_row, minlength=P).astype(float)
    Y0 = np.where(obs, Y, 0.0)
    mean = np.stack([np.bincount(pair_of_row, weights=Y0[:, j], minlength=P) for j in range(p1)], 1)
    mean /= n[:, None]
    dev = Y0 - mean[pair_of_row]
    multi = np.flatnonzero(n >= 2)
    where = np.full(P, -1)
    where[multi] = np.arange(len(multi))
    rows = where[pair_of_row] >= 0
    idx = where[pair_of_row][rows]
    scatter = np.zeros((len(multi), p1, p1))
    for j in range(p1):
        for k in range(j, p1):
            s = np.bincount(idx, weights=dev[rows, j] * dev[rows, k], minlength=len(multi))
            scatter[:, j, k] = s
            scatter[:, k, j] = s
    X = data.level2_values(structure.level2)
    return PatternStatistics(
        n_clusters=G,
        p1=p1,
        patterns=patterns.astype(float),
        pair_cluster=(pair_keys // K).astype(np.int64),
        pair_pattern=(pair_keys % K).astype(np.int64),
        pair_n=n,
        pair_mean=mean,
        scatter_pairs=multi.astype(np.int64),
        pair_scatter=scatter,
        level2=np.nan_to_num(X),
        level2_mask=(~np.isnan(X)).astype(float),
    )


def _padded(S: Any, mask: Any) -> Any:
    """``D S D + (I - D)`` for a batch of masks ``(.., p)``: the observed block, identity elsewhere."""
    import pytensor.tensor as pt

    p = mask.shape[-1]
    return S * mask[..., :, None] * mask[..., None, :] + pt.eye(p) * (1 - mask[..., :, None])


def padded_inverse(S: Any, mask: Any) -> tuple[Any, Any]:
    """Inverse and log-determinant of the observed blocks of ``S`` (padded; batched over masks)."""
    import pytensor.tensor as pt

    Sp = _padded(S, mask)
    L = cholesky(Sp)
    p = mask.shape[-1]
    Li = solve_lower(L, pt.eye(p) + pt.zeros_like(Sp))
    return pt.matmul(Li.swapaxes(-1, -2), Li) * mask[..., :, None] * mask[..., None, :], chol_logdet(L)


def woodbury_padded_inverse(theta: Any, Lambda: Any, Sinv: Any, logdet_S: Any, mask: Any) -> tuple[Any, Any]:
    """As :func:`padded_inverse` for ``S = diag(theta) + Lambda S_eta Lambda'`` given ``S_eta^-1``.

    ``theta`` ``(p,)``, ``Lambda`` ``(p, m)``, ``Sinv`` ``(..., m, m)`` and ``logdet_S`` (``log|S_eta|``)
    broadcast against the masks ``(..., p)``; only ``m x m`` factors are formed.
    """
    import pytensor.tensor as pt

    t_inv = mask / theta  # 0 at missing coordinates
    LamD = Lambda * t_inv[..., :, None]  # (.., p, m)
    # Products over the p indicators and the m factors as broadcast sums: batched matmuls of
    # tiny matrices cost a call per matrix in the numba backend.
    cap = Sinv + pt.sum(Lambda[..., :, :, None] * LamD[..., :, None, :], axis=-3)
    Lc = cholesky(cap)
    X = solve_lower(Lc, LamD.swapaxes(-1, -2))  # (.., m, p)
    i = np.arange(mask.shape[-1])
    # Adding the diagonal by indexing: ``eye * t_inv`` is rewritten to a batched AllocDiag,
    # which the numba backend runs in object mode.
    XtX = pt.sum(X[..., :, :, None] * X[..., :, None, :], axis=-3)
    Rinv = pt.inc_subtensor((-XtX)[..., i, i], t_inv)
    logdet = pt.sum(mask * pt.log(theta), axis=-1) + logdet_S + chol_logdet(Lc)
    return Rinv, logdet


def _segment_sum(values: Any, index: np.ndarray, n: int) -> Any:
    """Sums of ``values`` (first axis) over the groups given by ``index``."""
    import pytensor.tensor as pt

    out = pt.zeros((n, *tuple(values.shape)[1:]))
    return pt.inc_subtensor(out[index], values)


def missing_logp(
    ps: PatternStatistics,
    Rinv: Any,
    logdet_R: Any,
    V: Any,
    mean: Any,
    level2_cols: list[int],
    per_pattern: bool = False,
    fixed: Sequence[int] = (),
) -> tuple[Any, Any]:
    """Per-cluster log-likelihood of data with missing values.

    Parameters
    ----------
    ps
        The pattern statistics.
    Rinv, logdet_R
        Padded inverses of the pairs' within covariances and their log-determinants, either
        one per pair (``(P, p1, p1)``, ``(P,)``) or, with ``per_pattern``, one per pattern
        (``(K, p1, p1)``, ``(K,)``).
    V
        Covariance of the cluster vector ``(z1, level-2 columns)``, ``p1 + q``.
    mean
        Its mean, ``(p1 + q,)`` or ``(G, p1 + q)``.
    level2_cols
        The level-2 columns of ``ps.level2`` that the cluster vector holds, in its order.
    per_pattern
        ``Rinv`` and ``logdet_R`` are given per pattern (the same within covariance in every
        cluster), not per pair.
    fixed
        Level-1 cluster means that are known given what ``mean`` conditions on (zero
        conditional variance, e.g. the latent mean of an observed moderator of a random
        slope): they are left out of the integral instead of factoring a singular matrix.

    Returns
    -------
    logp
        ``(G,)`` log-likelihood of each cluster's observed values.
    post
        ``(m, L, M_chol, b)``: the cluster means' conditional mean given the level-2
        values and the factors of their posterior (used to impute).
    """
    import pytensor.tensor as pt

    G, p1 = ps.n_clusters, ps.p1
    q = len(level2_cols)
    mean = pt.as_tensor_variable(mean)
    mean_g = mean if mean.ndim == 2 else pt.zeros((G, 1)) + mean[None, :]
    logp_x = pt.zeros(G)
    if q:
        X = ps.level2[:, level2_cols]
        Xm = ps.level2_mask[:, level2_cols]
        l2pat, l2inv = np.unique(Xm, axis=0, return_inverse=True)
        l2inv = l2inv.ravel()
        V11, V1x, Vxx = V[:p1, :p1], V[:p1, p1:], V[p1:, p1:]
        Lx = cholesky(_padded(Vxx[None], l2pat))  # (Q, q, q)
        A = solve_lower(Lx, V1x.T[None] * l2pat[:, :, None])  # (Q, q, p1)
        C = V11[None] - pt.matmul(A.swapaxes(1, 2), A)
        dx = (X - mean_g[:, p1:]) * Xm
        white = solve_lower(Lx[l2inv], dx[:, :, None])[:, :, 0]  # (G, q)
        logp_x = -0.5 * (Xm.sum(1) * _LOG2PI + chol_logdet(Lx)[l2inv] + pt.sum(pt.square(white), 1))
        m = mean_g[:, :p1] + pt.sum(A[l2inv] * white[:, :, None], axis=1)
    else:
        m = mean_g[:, :p1]
        C = V[:p1, :p1][None]
        l2inv = np.zeros(G, dtype=np.int64)
    # z1 = m + L w, w ~ N(0, I): coordinates known given the conditioning get a zero row of L.
    free = np.asarray([i for i in range(p1) if i not in set(fixed)], dtype=np.int64)
    Lf = cholesky(C[:, free][:, :, free])
    L = pt.set_subtensor(pt.zeros((Lf.shape[0], p1, len(free)))[:, free], Lf)[l2inv]

    Rp = Rinv[ps.pair_pattern] if per_pattern else Rinv
    ldp = logdet_R[ps.pair_pattern] if per_pattern else logdet_R
    mask = ps.pair_mask
    n = ps.pair_n
    d = (ps.pair_mean - m[ps.pair_cluster]) * mask
    Rd = pt.sum(Rp * d[:, None, :], axis=2)
    quad = n * pt.sum(d * Rd, axis=1) + n * (ldp + mask.sum(1) * _LOG2PI)
    if len(ps.scatter_pairs):
        quad = pt.inc_subtensor(
            quad[ps.scatter_pairs], pt.sum(Rp[ps.scatter_pairs] * ps.pair_scatter, axis=(1, 2))
        )
    rows = -0.5 * _segment_sum(quad, ps.pair_cluster, G)
    b = _segment_sum(n[:, None] * Rd, ps.pair_cluster, G)  # (G, p1)
    Wt = _segment_sum(n[:, None, None] * Rp, ps.pair_cluster, G)  # (G, p1, p1); Rp is 0 off the pattern
    Lt = L.swapaxes(1, 2)
    M = pt.eye(len(free)) + pt.matmul(pt.matmul(Lt, Wt), L)
    LM = cholesky(M)
    v = solve_lower(LM, pt.matmul(Lt, b[:, :, None]))
    logp = logp_x + rows - 0.5 * chol_logdet(LM) + 0.5 * pt.sum(pt.square(v), axis=(1, 2))
    return logp, (m, L, LM, b)
