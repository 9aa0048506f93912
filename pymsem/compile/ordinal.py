"""Ordinal variables: thresholds, and the latent responses behind the observed categories.

An ordinal column with categories ``0..K-1`` is the interval in which a continuous latent
response falls (probit): category ``k`` is observed exactly when
``tau_{k-1} < y* <= tau_k``, with ``tau_{-1} = -inf`` and ``tau_{K-1} = +inf``. The latent
response is an ordinary level-1 variable of the model: a between part (its latent cluster
mean, with a free between variance) and a within part whose residual variance is fixed at 1,
the probit scale of Mplus's and Blimp's ordinal models (:func:`pymsem.compile.structure.lower`
fixes it); its grand mean is 0 because the thresholds carry its location. Loadings, paths and
between variances are therefore on the latent-response scale, within residual SD 1.

Why the formulation is exact. The likelihood of the observed categories is the Gaussian
density of the latent responses integrated over their intervals. Sampling each observed cell's
latent response jointly with the parameters, under the model's Gaussian density (the collapsed
one: given the random slopes where the model has them) restricted to the cell's interval, leaves exactly that
integral as the posterior of the parameters: data augmentation, as the Gibbs samplers of Blimp
and Mplus do, but with NUTS. Each cell is a free real ``r`` mapped onto its interval,

* interior categories: ``y* = tau_{k-1} + (tau_k - tau_{k-1}) sigmoid(r)``,
* the lowest: ``y* = tau_0 - s exp(r)``; the highest: ``y* = tau_{K-2} + s exp(r)``,

with the log-Jacobian of the map added to the density. ``s`` is 1, except for binary columns,
where it is the latent response's model-implied SD (:func:`latent_response_scale`): their
cells, all outer ones, then stretch with a loading or a variance instead of staying put while
the parameter moves, which is what made binary items mix slowly. Any positive ``s`` leaves the integral,
and so the posterior of the parameters, unchanged; only the geometry NUTS sees differs. With random slopes the slopes' cluster
deviations are sampled as for continuous data and the rest still integrates out cluster by
cluster; the per-cluster statistics are then graph nodes too (:func:`cluster_statistics`). The map moves with the thresholds, so
a move of the thresholds carries the latent responses along inside their intervals rather
than leaving them outside. Missing ordinal cells are unconstrained, like other missing cells.

Thresholds get ``Normal(0, THRESHOLD_SD)`` priors on the ordered vector (PyMC's ordered
transform) and start at the normal quantiles of the observed cumulative proportions, scaled
to the latent response's expected SD.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pymsem.compile.linalg import chol_logdet, cholesky, solve_lower
from pymsem.compile.matrices import LevelMatrices
from pymsem.compile.structure import ModelStructure
from pymsem.specification.data import ClusteredData

__all__ = [
    "THRESHOLD_SD",
    "cluster_statistics",
    "complete_data_logp",
    "latent_response_data",
    "latent_response_scale",
    "threshold_name",
    "thresholds",
]

#: Prior SD of every threshold (probit scale; the latent response's within residual SD is 1).
THRESHOLD_SD = 5.0

#: The free vector of the observed ordinal cells' latent responses (left out of the stored trace).
LATENT_RESPONSE = "latent_response"

_LOG2PI = float(np.log(2 * np.pi))


def threshold_name(column: str) -> str:
    """The PyMC variable holding a column's thresholds (``threshold[ACH1]``)."""
    return f"threshold[{column}]"


def _start_thresholds(codes: np.ndarray, K: int, icc: float) -> np.ndarray:
    """Normal quantiles of the cumulative proportions, on the scale of an SD ``sqrt(1 / (1 - icc))``."""
    from scipy.stats import norm

    x = codes[~np.isnan(codes)].astype(int)
    cum = np.cumsum(np.bincount(x, minlength=K))[:-1] / len(x)
    tau = norm.ppf(np.clip(cum, 0.01, 0.99)) * np.sqrt(1.0 / (1.0 - icc))
    # Strictly increasing, also where a middle category is rare.
    return np.maximum.accumulate(tau + 1e-3 * np.arange(K - 1))


def _icc(codes: np.ndarray, cluster_index: np.ndarray, G: int) -> float:
    ok = ~np.isnan(codes)
    x, g = codes[ok], cluster_index[ok]
    n = np.bincount(g, minlength=G)
    m = np.bincount(g, weights=x, minlength=G) / np.maximum(n, 1)
    within = np.sum((x - m[g]) ** 2) / max(len(x) - np.count_nonzero(n), 1)
    between = max(np.var(m[n > 0]) - within / max(np.mean(n[n > 0]), 1), 0.0)
    return float(np.clip(between / (between + within), 0.0, 0.5)) if within > 0 else 0.0


def thresholds(structure: ModelStructure, data: ClusteredData) -> dict[str, Any]:
    """Create each ordinal column's ordered thresholds in the current PyMC model."""
    import pymc as pm
    from pymc.distributions.transforms import ordered

    out = {}
    for col, K in structure.ordinal.items():
        codes = data.frame[col].to_numpy(float)
        start = _start_thresholds(codes, K, _icc(codes, data.cluster_index, data.n_clusters))
        out[col] = pm.Normal(
            threshold_name(col), 0.0, THRESHOLD_SD, shape=K - 1, transform=ordered, initval=start
        )
    return out


def _threshold_matrix(structure: ModelStructure, tau: dict[str, Any]) -> Any:
    """The ordinal columns' thresholds as one ``(columns, K_max - 1)`` matrix, rows padded at the end."""
    import pytensor.tensor as pt

    width = max(structure.ordinal.values()) - 1
    rows = []
    for col, K in structure.ordinal.items():
        t = tau[col]
        rows.append(t if K - 1 == width else pt.concatenate([t, pt.repeat(t[-1:], width - (K - 1))]))
    return pt.stack(rows)


def cell_order(code: np.ndarray, n_cat: np.ndarray) -> np.ndarray:
    """The order :func:`_interval_values` takes cells in: interior categories, the lowest, the highest."""
    cls = np.where(code == 0, 1, np.where(code == n_cat - 1, 2, 0))
    return np.argsort(cls, kind="stable")


def _interval_values(
    r: Any, column: np.ndarray, code: np.ndarray, n_cat: np.ndarray, T: Any, scale: Any = None
) -> tuple[Any, Any]:
    """Latent responses in their categories' intervals from free reals ``r``, and each one's log-Jacobian.

    ``scale`` (one positive value per row of ``T``, or None for 1) multiplies the outer
    cells' distance from their threshold.

    One vectorized map for the cells of every ordinal column (one small graph, whatever the
    number of columns): cell ``c`` is in column ``column[c]`` (a row of ``T``) with category
    ``code[c]`` of ``n_cat[c]``. The cells come in :func:`cell_order`, so that each kind of
    cell is a slice and gets only its own transform: per cell and gradient, the map's cost is
    its transcendental functions (one ``softplus`` and one ``exp`` for an interior cell, one
    ``exp`` for an outer one), not its indexing.
    """
    import pytensor.tensor as pt

    low, high = code == 0, code == n_cat - 1
    mid = ~(low | high)
    if np.any(np.diff(np.where(low, 1, np.where(high, 2, 0))) < 0):
        raise ValueError("_interval_values takes the cells in cell_order: interior, lowest, highest.")
    n_mid, n_low = int(mid.sum()), int(low.sum())
    rows, width = T.type.shape
    rows = int(column.max()) + 1 if rows is None else rows
    width = int(n_cat.max()) - 1 if width is None else width
    Tf = T.reshape((-1,))  # flat gathers: about half the cost of (row, column) pairs
    r_mid, r_out = r[:n_mid], r[n_mid:]
    c, k = column[:n_mid], code[:n_mid]
    lo = Tf[c * width + k - 1]
    y_mid = lo + (Tf[c * width + k] - lo) * pt.exp(-pt.softplus(-r_mid))  # sigmoid(r) = exp(-softplus(-r))
    # log(tau_k - tau_{k-1}) once per (column, category), not per cell; the padded entries of
    # short columns (zero width) are never read, 1 keeps their log and its gradient finite.
    used = np.zeros((rows, max(width - 1, 0)), dtype=bool)
    used[c, k - 1] = True
    log_width = pt.log(pt.where(used, T[:, 1:] - T[:, :-1], 1.0)).reshape((-1,))
    # log sigmoid'(r) = -softplus(-r) - softplus(r) = -r - 2 softplus(-r)
    logj_mid = log_width[c * (width - 1) + k - 1] - r_mid - 2.0 * pt.softplus(-r_mid)
    c_low = column[n_mid : n_mid + n_low]
    c_high, k_high = column[n_mid + n_low :], n_cat[n_mid + n_low :] - 2
    e = pt.exp(r_out)
    logj_out = r_out
    if scale is not None:
        c_out = column[n_mid:]
        e = e * scale[c_out]
        logj_out = r_out + pt.log(scale)[c_out]
    y_low = Tf[c_low * width] - e[:n_low]
    y_high = Tf[c_high * width + k_high] + e[n_low:]
    return pt.concatenate([y_mid, y_low, y_high]), pt.concatenate([logj_mid, logj_out])


def latent_response_scale(
    structure: ModelStructure, within: LevelMatrices, between: LevelMatrices
) -> Any | None:
    """The outer cells' scale of each ordinal column, in ``structure.ordinal`` order (None: all 1).

    A binary column's is its latent response's model-implied SD, ``sqrt(Sigma_W,kk + Sigma_B,kk)``;
    every other column's is 1. Binary items have only outer cells, and letting them stretch with
    the loadings and variances raised the minimum bulk ESS of binary Model 3 2.7-fold; for
    5-category items, whose cells are mostly interior, the same scale lowered it (212 -> 163 and
    212 -> 126 on two seeds, same runs; ``bench/results/ordinal.md``). Random slopes add to a
    column's within variance cluster by cluster; the scale leaves them out (it need only be
    positive and follow the loadings and variances, see the module text).
    """
    import pytensor.tensor as pt

    binary = np.array([K == 2 for K in structure.ordinal.values()])
    if not binary.any():
        return None
    k = np.array([structure.level1.index(col) for col in structure.ordinal], dtype=np.int64)
    sd = pt.sqrt(pt.diagonal(within.Sigma)[k] + pt.diagonal(between.Sigma)[k])
    return sd if binary.all() else pt.where(binary, sd, 1.0)


def latent_response_data(
    structure: ModelStructure, data: ClusteredData, Y: Any, tau: dict[str, Any], scale: Any = None
) -> tuple[Any, list[str]]:
    """``Y`` with every observed ordinal cell replaced by its (sampled) latent response.

    ``Y`` is the ``(N, p1)`` level-1 data as a tensor whose missing cells are already
    filled (``augmented._fill_missing``); its ordinal columns hold category codes. ``scale``
    (:func:`latent_response_scale`, or None for 1) stretches the outer categories' cells. Adds the
    free vector ``latent_response`` (one real per observed ordinal cell) and the Jacobian
    ``Potential``; returns the new ``Y`` and the names of what results never read (dropped
    from the stored trace: one value per cell and draw).
    """
    import pymc as pm
    import pytensor.tensor as pt

    rows, cols, column, code, n_cat = [], [], [], [], []
    for i, (col, K) in enumerate(structure.ordinal.items()):
        codes = data.frame[col].to_numpy(float)
        r = np.flatnonzero(~np.isnan(codes))
        rows.append(r)
        cols.append(np.full(len(r), structure.level1.index(col)))
        column.append(np.full(len(r), i))
        code.append(codes[r].astype(np.int64))
        n_cat.append(np.full(len(r), K))
    rows_, cols_, column_, code_, n_cat_ = (np.concatenate(a) for a in (rows, cols, column, code, n_cat))
    order = cell_order(code_, n_cat_)
    rows_, cols_, column_, code_, n_cat_ = (a[order] for a in (rows_, cols_, column_, code_, n_cat_))
    # Mid-interval (interior categories) or half a unit (of the scale) beyond the outer thresholds.
    start = np.where((code_ == 0) | (code_ == n_cat_ - 1), np.log(0.5), 0.0)
    r = pm.Flat(LATENT_RESPONSE, shape=len(code_), initval=start)
    ystar, logj = _interval_values(r, column_, code_, n_cat_, _threshold_matrix(structure, tau), scale)
    pm.Potential("latent_response_jacobian", pt.sum(logj))
    p1 = len(structure.level1)
    flat = pt.set_subtensor(Y.reshape((-1,))[rows_ * p1 + cols_], ystar)
    return flat.reshape((data.n_obs, p1)), [LATENT_RESPONSE]


def complete_data_logp(
    data: ClusteredData, Y: Any, Z2: Any, within: LevelMatrices, between: LevelMatrices
) -> Any:
    """The collapsed two-level normal log-likelihood of complete data given as tensors.

    The same value as :func:`pymsem.compile.marginal.marginal_logp`, whose sufficient statistics
    are computed once from fixed data; here the data hold sampled latent responses (and filled
    missing cells), so the cluster means and the within scatter are part of the graph. Each
    cluster contributes its mean vector's density under ``Sigma_B + Sigma_W / n_g`` and its
    ``n_g - 1`` within deviations' density under ``Sigma_W``. ``between.nu`` must be set (zeros
    where every grand mean is fixed at 0).

    The passes over the students are the cluster sums and one matrix product, the pooled within
    scatter ``Y'Y - sum_g s_g s_g' / n_g`` (no per-student deviations or solves); the between
    part weights each distinct cluster size's precision with the scatter of its clusters' mean
    vectors, where a solve per cluster was one LAPACK call each.
    """
    import pytensor.tensor as pt

    idx, sizes = data.cluster_index, data.sizes
    N, G, p1 = data.n_obs, data.n_clusters, within.Sigma.type.shape[-1]
    # Centred, so Y'Y and the cluster sums' outer products do not cancel large numbers (the
    # within scatter does not depend on the shift; the cluster means add it back).
    centre = pt.mean(Y, axis=0)
    Yc = Y - centre[None, :]
    sums = pt.inc_subtensor(pt.zeros((G, p1))[idx], Yc)
    n = sizes.astype(float)
    scatter_w = pt.dot(Yc.T, Yc) - pt.dot((sums / n[:, None]).T, sums)
    L_W = cholesky(within.Sigma)
    L_W_inv = solve_lower(L_W, pt.eye(p1))
    ll = -0.5 * (N - G) * (p1 * _LOG2PI + chol_logdet(L_W))
    ll = ll - 0.5 * pt.sum(pt.dot(L_W_inv.T, L_W_inv) * scatter_w) - 0.5 * p1 * float(np.log(n).sum())

    means = sums / n[:, None] + centre[None, :]
    z = means if Z2 is None else pt.concatenate([means, Z2], axis=1)
    pb, nu = between.Sigma.type.shape[-1], between.nu
    uniq, inv = np.unique(sizes, return_inverse=True)
    counts = np.bincount(inv).astype(float)
    onehot = np.zeros((len(uniq), G))
    onehot[inv, np.arange(G)] = 1.0
    d = z - nu[None, :]
    # Each size's scatter of (z_g - nu) about 0: one product over the clusters.
    D = pt.dot(onehot, (d[:, :, None] * d[:, None, :]).reshape((G, pb * pb))).reshape((len(uniq), pb, pb))
    pad = pt.zeros((pb, pb))
    pad = pt.set_subtensor(pad[:p1, :p1], within.Sigma)
    L = cholesky(between.Sigma[None, :, :] + pad[None, :, :] / uniq[:, None, None])  # (K, pb, pb)
    L_inv = solve_lower(L, pt.eye(pb)[None, :, :])
    precision = pt.matmul(L_inv.transpose(0, 2, 1), L_inv)
    ll = ll - 0.5 * (G * pb * _LOG2PI + pt.sum(counts * chol_logdet(L)) + pt.sum(precision * D))
    return ll


def cluster_statistics(data: ClusteredData, Y: Any, Z2: Any) -> Any:
    """Per-cluster statistics of data given as tensors, for the random-slope likelihoods.

    The fields of :class:`pymsem.compile.marginal.SufficientStatistics` that the per-cluster
    (random-slope) likelihoods read, with the sampled values in them: the cluster vectors
    (cluster means and level-2 columns), each cluster's within scatter packed (the Woodbury
    operation's input, differentiable in it) and, as each cluster's scatter root for the dense
    path, its deviations from its mean padded with zero columns to the largest cluster
    (``R_g R_g'`` is then the cluster's within scatter, whatever its size). The pooled and
    per-size moments of fixed data are left out (``None``): the likelihoods sum them from the
    clusters.
    """
    import pytensor.tensor as pt

    from pymsem.compile.cluster_scatter import cluster_scatter
    from pymsem.compile.marginal import SufficientStatistics

    idx, sizes = data.cluster_index, data.sizes
    G, p1, q = data.n_clusters, Y.type.shape[-1], Z2.type.shape[-1]
    means, scatter = cluster_scatter(Y, idx, G)
    dev = Y - means[idx]
    # Each student's position inside its cluster, in row order.
    order = np.argsort(idx, kind="stable")
    position = np.empty(len(idx), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position[order] = np.arange(len(idx)) - np.repeat(starts, sizes)
    padded = pt.zeros((G, int(sizes.max()), p1))
    padded = pt.set_subtensor(padded[idx, position], dev)
    z = means if q == 0 else pt.concatenate([means, Z2], axis=1)
    uniq, inv = np.unique(sizes, return_inverse=True)
    return SufficientStatistics(
        n_obs=data.n_obs,
        n_clusters=G,
        p1=p1,
        pb=p1 + q,
        within_root=None,
        sizes=uniq.astype(float),
        counts=np.bincount(inv).astype(float),
        means=None,
        roots=None,
        log_n_sum=float(np.log(sizes).sum()),
        cluster_sizes=sizes.astype(float),
        cluster_vectors=z,
        cluster_roots=padded.transpose(0, 2, 1),
        cluster_scatter=scatter,
        cluster_size_index=inv.astype(np.int64),
    )
