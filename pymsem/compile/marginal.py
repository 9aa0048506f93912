"""The collapsed (marginal) two-level likelihood: every latent variable integrated out.

Without random slopes the level-1 vectors of cluster ``g`` are
``y_ig ~ N(mu_g, Sigma_W)`` and the cluster vector ``z_g`` (latent cluster
means of the level-1 variables and the level-2 columns) is
``N(nu, Sigma_B)``.  Integrating ``mu_g`` out, the cluster's log-likelihood
depends on the data only through its size ``n_g``, its mean vector and its
within scatter matrix ``S_g``:

    log p(y_g) = -(n_g-1)/2 log|Sigma_W| - tr(Sigma_W^-1 S_g)/2 - p1/2 log n_g
                 + log N(z_g | nu, Sigma_B + E Sigma_W E'/n_g) - (n_g-1) p1/2 log 2 pi

(``E`` embeds the level-1 block into the between vector).  Summing over
clusters, the within part needs only the pooled scatter; the between part
needs, for each distinct cluster size, one Cholesky factor and the scatter
of the cluster vectors of that size.  A gradient therefore costs
``O(n_sizes * p^3)`` whatever the number of students: balanced data have a
single size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from pymsem.compile.cluster_woodbury import packed_lower
from pymsem.compile.kernel.missing_op import missing_kernel_logp
from pymsem.compile.kernel.op import complete_kernel_logp
from pymsem.compile.likelihood import register
from pymsem.compile.linalg import batched_matmul, chol_logdet, cholesky, solve_lower
from pymsem.compile.logdet_quad import logdet_quad
from pymsem.compile.matrices import LevelMatrices
from pymsem.compile.missing import (
    PatternStatistics,
    missing_logp,
    padded_inverse,
    pattern_statistics,
    woodbury_padded_inverse,
)
from pymsem.compile.random_effects import conditioned_random_slope_logp
from pymsem.compile.slope_woodbury import (
    moderated_woodbury_logp,
    moderated_woodbury_plan,
    woodbury_slope_logp,
)
from pymsem.compile.slopes import (
    SlopeSettings,
    add_random_slopes,
    cluster_latent_covariance,
    moderated_deviations,
    moderator_values,
)
from pymsem.compile.structure import ModelStructure
from pymsem.specification.data import ClusteredData

__all__ = ["MarginalLikelihood", "PatternLikelihood", "SufficientStatistics", "sufficient_statistics"]


@dataclass(frozen=True)
class SufficientStatistics:
    """What the marginal likelihood needs from the data, computed once before sampling."""

    n_obs: Any  # int, or a pm.Data scalar in the model
    n_clusters: int
    p1: int
    pb: int
    within_root: np.ndarray  # R with R R' = pooled within scatter (p1 x p1)
    sizes: np.ndarray  # distinct cluster sizes (K,)
    counts: np.ndarray  # clusters of each size (K,)
    means: np.ndarray  # mean cluster vector per size (K, pb)
    roots: np.ndarray  # R_k with R_k R_k' = scatter of cluster vectors of size k (K, pb, pb)
    log_n_sum: Any  # sum over clusters of log n_g (float, or a pm.Data scalar)
    cluster_sizes: np.ndarray  # n_g (G,)
    cluster_vectors: np.ndarray  # z_g (G, pb)
    cluster_roots: np.ndarray | None  # R_g with R_g R_g' = within scatter of cluster g (G, p1, p1)
    cluster_scatter: np.ndarray | None = (
        None  # each cluster's within scatter, packed lower triangle (G, p1(p1+1)/2)
    )
    cluster_size_index: np.ndarray | None = None  # index of n_g in ``sizes`` (G,)

    def as_model_data(self) -> SufficientStatistics:
        """The same statistics with every array registered as ``pm.Data`` in the current model.

        As graph constants, arrays over 1 MB (about 900 clusters in Model 3) make numba's compiled
        function uncacheable, and their values make it specific to one data set. As data
        (shared variables), the compiled log density is cached on disk across processes and
        sessions and reused for any data with the same number of clusters; nutpie passes the
        arrays at call time.
        """
        import pymc as pm

        arrays = {
            f.name: pm.Data(f"stats_{f.name}", getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        # Totals that differ between data sets of the same shape (the count of clusters fixes
        # array shapes, so it stays a constant).
        for name in ("n_obs", "log_n_sum"):
            arrays[name] = pm.Data(f"stats_{name}", float(getattr(self, name)))
        return replace(self, **arrays)


def _root(S: np.ndarray) -> np.ndarray:
    """A square root ``R R' = S`` of a PSD scatter matrix (via eigh, so singular S is fine)."""
    w, Q = np.linalg.eigh((S + S.T) / 2)
    return Q * np.sqrt(np.clip(w, 0.0, None))


def sufficient_statistics(
    structure: ModelStructure, data: ClusteredData, per_cluster: bool = False
) -> SufficientStatistics:
    """Pooled within scatter and per-size cluster-vector moments (and per-cluster scatter roots)."""
    y1 = data.frame[structure.level1].to_numpy(float)
    idx, sizes = data.cluster_index, data.sizes
    G = data.n_clusters
    means1 = np.zeros((G, y1.shape[1]))
    np.add.at(means1, idx, y1)
    means1 /= sizes[:, None]
    dev = y1 - means1[idx]
    z = means1
    if structure.level2:
        z = np.column_stack([means1, np.column_stack([data.cluster_values(c) for c in structure.level2])])
    scatter = _cluster_scatter(dev, idx, G) if per_cluster else None
    uniq, inv = np.unique(sizes, return_inverse=True)
    counts = np.bincount(inv)
    m = np.zeros((len(uniq), z.shape[1]))
    roots = np.zeros((len(uniq), z.shape[1], z.shape[1]))
    for k in range(len(uniq)):
        zk = z[inv == k]
        m[k] = zk.mean(0)
        d = zk - m[k]
        roots[k] = _root(d.T @ d)
    return SufficientStatistics(
        n_obs=data.n_obs,
        n_clusters=G,
        p1=y1.shape[1],
        pb=z.shape[1],
        within_root=_root(dev.T @ dev),
        sizes=uniq.astype(float),
        counts=counts.astype(float),
        means=m,
        roots=roots,
        log_n_sum=float(np.log(sizes).sum()),
        cluster_sizes=sizes.astype(float),
        cluster_vectors=z,
        cluster_roots=np.stack([_root(S) for S in scatter]) if per_cluster else None,
        cluster_scatter=packed_lower(scatter) if per_cluster else None,
        cluster_size_index=inv.astype(np.int64) if per_cluster else None,
    )


def _cluster_scatter(dev: np.ndarray, idx: np.ndarray, G: int) -> np.ndarray:
    """Each cluster's within scatter matrix (G, p, p), one weighted count per entry."""
    p = dev.shape[1]
    S = np.empty((G, p, p))
    for i in range(p):
        for j in range(i + 1):
            S[:, i, j] = S[:, j, i] = np.bincount(idx, weights=dev[:, i] * dev[:, j], minlength=G)
    return S


def marginal_logp(stats: SufficientStatistics, Sigma_W: Any, Sigma_B: Any, nu: Any) -> Any:
    """The collapsed log-likelihood as a PyTensor expression."""
    import pytensor.tensor as pt

    log2pi = np.log(2 * np.pi)
    p1, pb = stats.p1, stats.pb
    n_within = stats.n_obs - stats.n_clusters
    L_W = cholesky(Sigma_W)
    logdet_W = chol_logdet(L_W)
    within = -0.5 * n_within * (p1 * log2pi + logdet_W)
    within -= 0.5 * pt.sum(pt.square(solve_lower(L_W, stats.within_root)))
    within -= 0.5 * p1 * stats.log_n_sum

    pad = pt.zeros((pb, pb))
    pad = pt.set_subtensor(pad[:p1, :p1], Sigma_W)
    V = Sigma_B[None, :, :] + pad[None, :, :] / stats.sizes[:, None, None]
    L = cholesky(V)
    logdet = chol_logdet(L)
    scatter = pt.sum(pt.square(solve_lower(L, stats.roots)), axis=(1, 2))
    d = (stats.means - nu[None, :])[:, :, None]
    quad = pt.sum(pt.square(solve_lower(L, d)), axis=(1, 2))
    between = pt.sum(-0.5 * stats.counts * (pb * log2pi + logdet + quad) - 0.5 * scatter)
    return within + between


def random_slope_logp(
    stats: SufficientStatistics,
    structure: ModelStructure,
    within: LevelMatrices,
    between: LevelMatrices,
    u: Any,
) -> Any:
    """The collapsed log-likelihood given the clusters' slope deviations ``u`` (cluster, slope).

    Each cluster has its own within covariance ``Sigma_W,g`` (its slopes enter
    ``B_g``), so the within part uses each cluster's scatter matrix and the
    between part ``N(z_g | nu, Sigma_B + E Sigma_W,g E' / n_g)``: one Cholesky of
    each per cluster, batched.
    """
    import pytensor.tensor as pt

    Wg = _cluster_within_cov(structure, within, u, stats.n_clusters)
    between_ll = _between_part(stats, Wg, between.Sigma, between.nu, list(range(stats.pb)))
    return pt.sum(_within_part(stats, Wg) + between_ll)


def woodbury_applies(structure: ModelStructure) -> bool:
    """Whether both levels' covariances are 'positive diagonal plus low rank' for every cluster.

    True when every within variable has a free residual variance (no single-indicator
    latents at the within level), level-2 columns have free between residual variances,
    and no residual covariances are specified. Then the per-cluster determinants and
    solves need only factor-sized matrices.
    """
    w, b = structure.within, structure.between
    p1 = len(structure.level1)
    l2_free = set(b.resid_sd_free[:, 0].tolist()) >= set(range(p1, b.n_obs))
    return (
        len(w.resid_sd_free) == w.n_obs
        and l2_free
        and not len(w.resid_cor)
        and not len(b.resid_cor)
        and w.n_lat > 0
        and b.n_lat > 0
    )


def random_slope_logp_woodbury(
    stats: SufficientStatistics,
    structure: ModelStructure,
    within: LevelMatrices,
    between: LevelMatrices,
    u: Any,
) -> Any:
    """:func:`random_slope_logp` through the Woodbury identity and the matrix determinant lemma.

    ``Sigma_W,g = Theta_W + Lambda S_g Lambda'`` with ``S_g^-1 = (I-B_g)' Psi^-1 (I-B_g)``
    (no inverse of ``I - B_g`` is needed, and ``|S_g| = |Psi|``), and
    ``V_g = E_g + U K_g U'`` with ``E_g = Theta_B + Theta_W/n_g`` diagonal,
    ``U = [Lambda_B, Lambda_W]`` and ``K_g = diag(S_B, S_g/n_g)``. Each cluster then
    needs Cholesky factors of factor-sized (3x3 and 6x6 in Model 3) matrices only, which
    one fused operation (:mod:`pymsem.compile.cluster_woodbury`) does, value and gradient,
    in a single loop over the clusters. Everything that does not depend on the cluster's
    slopes is summed here from pooled or per-size statistics.
    """
    import pytensor.tensor as pt

    from pymsem.compile.cluster_woodbury import loading_pattern

    ls, lb = structure.within, structure.between
    Lpsib = cholesky(between.Psi)
    IBb = pt.eye(lb.n_lat) - between.B
    SB_inv = pt.dot(pt.dot(IBb.T, pt.linalg.cho_solve((Lpsib, True), pt.eye(lb.n_lat))), IBb)
    # With fixed data the pooled within scatter and each size's scatter of cluster vectors are
    # known; with sampled data (roots None) they are summed from the clusters.
    pooled_diag = None if stats.within_root is None else pt.sum(pt.square(stats.within_root), axis=1)
    sq = None
    if stats.roots is not None:
        dev = stats.means - between.nu[None, :]
        sq = pt.sum(pt.square(stats.roots), axis=2) + stats.counts[:, None] * pt.square(dev)
    return woodbury_slope_logp(
        stats=stats,
        scatter=stats.cluster_scatter,
        z=stats.cluster_vectors,
        nu=between.nu,
        u=u,
        slope_entries=ls.beta_random,
        pat_w=loading_pattern(ls),
        pat_b=loading_pattern(lb),
        theta=pt.diagonal(within.Theta),
        Lambda=within.Lambda,
        IB0=pt.eye(ls.n_lat) - within.B,
        Psi=within.Psi,
        theta_b=pt.diagonal(between.Theta),
        Lambda_B=between.Lambda,
        SB_inv=SB_inv,
        logdet_SB=chol_logdet(Lpsib),
        sq=sq,
        pooled_diag=pooled_diag,
    )


def moderated_random_slope_logp(
    stats: SufficientStatistics | None,
    structure: ModelStructure,
    within: LevelMatrices,
    between: LevelMatrices,
    u: Any,
    params: dict[str, Any],
    ps: PatternStatistics | None = None,
    terms: dict[str, Any] | None = None,
    woodbury: bool = True,
) -> Any:
    """The collapsed log-likelihood when random slopes are regressed on between-level variables.

    The slopes depend on their moderators ``eta_o`` (between latents such as a latent school
    mean of SES, or level-2 columns), so the moderators stay explicit: level-2 columns are
    known (``w_g - nu``), latent moderators are sampled non-centered given the known ones.
    Given ``eta_o`` and the slopes ``s_g = mean + Gamma eta_o,g + u_g``, everything else is
    Gaussian: the within part as in :func:`random_slope_logp`, and the cluster vector (without
    known moderators) ``N(nu + Lambda_B C Sigma_oo^-1 eta_o, Sigma_B|o + E Sigma_W,g E'/n_g)``
    with ``C = Cov(eta_B, eta_o)``. With missing values (``ps``) the last two parts are
    :func:`pymsem.compile.missing.missing_logp` given the same conditional moments, which
    are then stored in ``terms`` (for imputation). With complete data, where
    :func:`~pymsem.compile.slope_woodbury.moderated_woodbury_plan` applies (and ``woodbury``),
    the within and between parts are summed through the Woodbury identity instead of one dense
    factorization per cluster.
    """
    import pymc as pm
    import pytensor.tensor as pt

    lb = structure.between
    if ps is not None:
        G, p1, pb = ps.n_clusters, ps.p1, ps.p1 + len(structure.level2)
    else:
        G, p1, pb = stats.n_clusters, stats.p1, stats.pb
    mods = sorted({lat for r in structure.random_slopes for lat, _ in r.moderators})
    level2_cols = {name: p1 + i for i, name in enumerate(structure.level2)}
    known = [lat for lat in mods if lb.latent[lat] in level2_cols]
    latent = [lat for lat in mods if lat not in known]
    S = between.Sigma_eta
    eta = {}
    logp = 0.0
    Z = stats.cluster_vectors if ps is None else pt.concatenate([pt.zeros((G, p1)), ps.level2], axis=1)
    if known:
        cols = [level2_cols[lb.latent[lat]] for lat in known]
        eta_k = Z[:, cols] - between.nu[cols][None, :]
        Lk = cholesky(S[known][:, known])
        white = solve_lower(Lk, eta_k.T)  # (k, G)
        logp += -0.5 * pt.sum(pt.square(white)) - G * (
            0.5 * len(known) * np.log(2 * np.pi) + 0.5 * chol_logdet(Lk)
        )
        for i, lat in enumerate(known):
            eta[lat] = eta_k[:, i]
    if latent:
        model = pm.modelcontext(None)
        model.add_coord("moderator", [lb.latent[lat] for lat in latent])
        raw = pm.Normal("moderator_raw", 0.0, 1.0, dims=("cluster", "moderator"))
        if known:
            # eta_l | eta_k ~ N(K eta_k, S_ll - K S_kl), K = S_lk S_kk^-1, through the whitened eta_k.
            Wt = solve_lower(Lk, S[known][:, latent])  # (k, l)
            mean = pt.dot(white.T, Wt)
            cond = S[latent][:, latent] - pt.dot(Wt.T, Wt)
        else:
            mean, cond = 0.0, S[latent][:, latent]
        eta_l = mean + pt.dot(raw, cholesky(cond).T)
        for i, lat in enumerate(latent):
            eta[lat] = eta_l[:, i]
    u_total = moderated_deviations(structure, u, params, eta)
    # Between part conditional on the moderators.
    eta_o = moderator_values(structure, mods, eta)  # (G, o)
    C = S[:, mods]
    Lo = cholesky(S[mods][:, mods])
    LC = pt.dot(between.Lambda, C)  # (pb, o)
    A_ = solve_lower(Lo, LC.T)  # (o, pb): Lo^-1 C' Lambda'
    Sigma_cond = between.Sigma - pt.dot(A_.T, A_)
    mean = between.nu[None, :] + pt.dot(solve_lower(Lo, eta_o.T).T, A_)
    rest = [i for i in range(pb) if i not in {level2_cols[lb.latent[lat]] for lat in known}]
    plan = moderated_woodbury_plan(structure, known, latent) if ps is None and woodbury else None
    if plan is not None:
        return logp + moderated_woodbury_logp(
            plan, structure, stats, within, between, u_total, mean, Lo, mods
        )
    Wg = _cluster_within_cov(structure, within, u_total, G)
    if ps is not None:
        Rinv, ld = within_inverses(structure, within, ps, Wg=Wg, u=u_total)
        V = Sigma_cond[rest][:, rest]
        l2 = [i - p1 for i in rest if i >= p1]
        free_b = set(lb.resid_sd_free[:, 0].tolist())
        fixed = [
            structure.level1.index(lb.latent[lat])
            for lat in latent
            if lb.latent[lat] in structure.level1
            and lb.latent[lat] in lb.single_indicator
            and (i := lb.observed.index(lb.latent[lat])) not in free_b
            and lb.resid_sd_fixed[i] == 0.0
        ]
        ll, _ = missing_logp(ps, Rinv, ld, V, mean[:, rest], l2, fixed=fixed)
        if terms is not None:
            terms.update({"W": Wg, "V": V, "mean": mean[:, rest], "level2_cols": l2})
        return logp + pt.sum(ll)
    within_ll = _within_part(stats, Wg)
    between_ll = _between_part(stats, Wg, Sigma_cond, mean, rest)
    return logp + pt.sum(within_ll + between_ll)


def within_woodbury_applies(structure: ModelStructure) -> bool:
    """Every within variable has a free residual variance and none are correlated."""
    w = structure.within
    return len(w.resid_sd_free) == w.n_obs and not len(w.resid_cor) and w.n_lat > 0


def _cluster_precisions(structure: ModelStructure, within: LevelMatrices, u: Any, G: int) -> Any:
    """``S_g^-1 = (I - B_g)' Psi^-1 (I - B_g)``: each cluster's within latent precision."""
    import pytensor.tensor as pt

    ls = structure.within
    m = ls.n_lat
    r, c, j = ls.beta_random[:, 0], ls.beta_random[:, 1], ls.beta_random[:, 2]
    IBg = pt.zeros((G, m, m)) + (pt.eye(m) - within.B)[None, :, :]
    IBg = pt.inc_subtensor(IBg[:, r, c], -u[:, j])
    Lpsi = cholesky(within.Psi)
    Psi_inv = pt.linalg.cho_solve((Lpsi, True), pt.eye(m))
    left = batched_matmul(IBg.transpose(0, 2, 1), Psi_inv[None, :, :])
    return batched_matmul(left, IBg), chol_logdet(Lpsi)


def within_inverses(
    structure: ModelStructure,
    within: LevelMatrices,
    ps: PatternStatistics,
    Wg: Any = None,
    u: Any = None,
) -> tuple[Any, Any]:
    """Padded inverses and log-determinants of each pair's within covariance (random slopes).

    With free, uncorrelated within residuals only factor-sized matrices are factored
    (Woodbury); otherwise each pair's padded ``Sigma_W,g`` is.
    """
    import pytensor.tensor as pt

    if u is not None and within_woodbury_applies(structure):
        Sinv, logdet_psi = _cluster_precisions(structure, within, u, ps.n_clusters)
        theta = pt.diagonal(within.Theta)
        return woodbury_padded_inverse(theta, within.Lambda, Sinv[ps.pair_cluster], logdet_psi, ps.pair_mask)
    return padded_inverse(Wg[ps.pair_cluster], ps.pair_mask)


def _cluster_within_cov(structure: ModelStructure, within: LevelMatrices, u: Any, G: int) -> Any:
    """Each cluster's within covariance ``Sigma_W,g`` given its slope deviations ``u`` (G, k)."""
    Seta = cluster_latent_covariance(structure, within, u, G)
    return (
        batched_matmul(batched_matmul(within.Lambda[None, :, :], Seta), within.Lambda.T[None, :, :])
        + within.Theta[None]
    )


def _within_part(stats: SufficientStatistics, Wg: Any) -> Any:
    import pytensor.tensor as pt

    n, p1 = stats.cluster_sizes, stats.p1
    logdet, tr = logdet_quad(Wg, stats.cluster_roots)
    return -0.5 * (n - 1) * (p1 * np.log(2 * np.pi) + logdet) - 0.5 * tr - 0.5 * p1 * pt.log(n)


def _between_part(stats: SufficientStatistics, Wg: Any, Sigma_B: Any, mean: Any, rest: list[int]) -> Any:
    """``log N(z_g[rest] | mean_g[rest], Sigma_B[rest, rest] + E Sigma_W,g E'/n_g)`` per cluster."""
    import pytensor.tensor as pt

    G, p1, pb = stats.n_clusters, stats.p1, stats.pb
    n = stats.cluster_sizes
    pad = pt.zeros((G, pb, pb))
    pad = pt.set_subtensor(pad[:, :p1, :p1], Wg)
    V = (Sigma_B[None, :, :] + pad / n[:, None, None])[:, rest][:, :, rest]
    d = stats.cluster_vectors[:, rest] - (mean[:, rest] if mean.ndim == 2 else mean[None, rest])
    logdet, quad = logdet_quad(V, d)
    return -0.5 * (len(rest) * np.log(2 * np.pi) + logdet + quad)


def missing_cell_count(structure: ModelStructure, data: ClusteredData) -> int:
    """The missing level-1 cells and level-2 values of the model's columns."""
    level1 = np.isnan(data.frame[structure.level1].to_numpy(float)).sum()
    return int(level1 + np.isnan(data.level2_values(structure.level2)).sum())


#: Above this many missing cells the default formulation integrates them out rather than sampling
#: them: each sampled cell is stored per draw (4 chains x 1000 draws x 50,000 cells: 1.6 GB).
MAX_SAMPLED_CELLS = 50_000


@register
class MarginalLikelihood:
    """Both levels' latent variables integrated out.

    Without random slopes nothing per cluster is sampled; with random slopes
    only the slopes' cluster deviations are. Missing cells (and ordinal cells' latent
    responses) are sampled; :class:`PatternLikelihood` integrates missing cells out as well.
    """

    name: ClassVar[str] = "marginal"
    #: Missing cells are free variables of the model (their draws are the imputations); above
    #: MAX_SAMPLED_CELLS they are integrated out instead.
    samples_missing: bool = True
    slopes: SlopeSettings = SlopeSettings()

    #: Free variables left out of the stored trace (ordinal cells' latent responses).
    untraced: tuple[str, ...] | list[str] = ()

    def supports(self, structure: ModelStructure) -> str | None:
        if not structure.level1:
            return "it needs at least one level-1 (within-varying) variable"
        return None

    def add(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        import pymc as pm

        if structure.ordinal:
            self._add_ordinal(structure, data, within, between, params)
            return
        if data.has_missing:
            self._add_missing(structure, data, within, between, params)
            return
        if structure.random_slopes:
            stats = sufficient_statistics(structure, data, per_cluster=True).as_model_data()
            pm.Potential("loglik", self._slopes_logp(stats, structure, within, between, params))
            return
        # One kernel node from the parameters to the log-likelihood and its gradient: the
        # same value as marginal_logp's graph, which is compiled node by node.
        stats = sufficient_statistics(structure, data)
        pm.Potential("loglik", complete_kernel_logp(structure, stats, params))

    def _slopes_logp(
        self,
        stats: SufficientStatistics,
        structure: ModelStructure,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> Any:
        """The collapsed log-likelihood given explicit random slopes, from per-cluster statistics.

        The slopes stay explicit (non-centered); given them, every latent variable still
        integrates out exactly, cluster by cluster.
        """
        if structure.slopes_in_between_model:
            return conditioned_random_slope_logp(
                stats, structure, within, between, params, self.slopes.corr_prior
            )
        u = add_random_slopes(structure, params, self.slopes)
        if any(r.moderators for r in structure.random_slopes):
            return moderated_random_slope_logp(stats, structure, within, between, u, params)
        if woodbury_applies(structure):
            return random_slope_logp_woodbury(stats, structure, within, between, u)
        return random_slope_logp(stats, structure, within, between, u)

    def _completed_data(self, structure: ModelStructure, data: ClusteredData) -> tuple[Any, Any]:
        """The level-1 and level-2 data as tensors, each missing cell a free variable.

        The missing cells are sampled with the parameters (data augmentation); given them the
        data are complete and both levels' latent variables still integrate out. Their draws are
        the imputations (``y_missing``, ``level2_missing``).
        """
        import pymc as pm
        import pytensor.tensor as pt

        from pymsem.compile.augmented import _fill_missing

        model = pm.modelcontext(None)
        Y = _fill_missing(
            model, "y_missing", data.frame[structure.level1].to_numpy(float), data.cluster_index
        )
        Z2 = data.level2_values(structure.level2)
        Z2 = _fill_missing(model, "level2_missing", Z2, np.zeros(data.n_clusters, dtype=np.int64))
        return pt.as_tensor_variable(Y), pt.as_tensor_variable(Z2)

    def _add_completed(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
        Y: Any,
        Z2: Any,
    ) -> None:
        """The collapsed likelihood of data that hold sampled values, its statistics computed in the graph."""
        import pymc as pm

        from pymsem.compile.ordinal import cluster_statistics, complete_data_logp

        if structure.random_slopes:
            stats = cluster_statistics(data, Y, Z2)
            ll = self._slopes_logp(stats, structure, within, between, params)
        else:
            ll = complete_data_logp(data, Y, Z2, within, between)
        pm.Potential("loglik", ll)

    def _add_ordinal(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        """Ordinal columns: latent responses sampled per cell, both levels still integrated out.

        The sufficient statistics then depend on sampled values, so they are computed in the graph
        (:func:`pymsem.compile.ordinal.complete_data_logp`); missing cells are sampled as well.
        """
        import pytensor.tensor as pt

        from pymsem.compile.ordinal import latent_response_data, latent_response_scale, thresholds

        Y, Z2 = self._completed_data(structure, data)
        tau = thresholds(structure, data)
        scale = latent_response_scale(structure, within, between)
        Y, self.untraced = latent_response_data(structure, data, Y, tau, scale)
        if between.nu is None:  # every between mean is a threshold's job: grand means 0
            between = replace(between, nu=pt.zeros(len(structure.level1) + len(structure.level2)))
        self._add_completed(structure, data, within, between, params, Y, Z2)

    def _add_missing(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        """Missing cells sampled (data augmentation), the completed data's likelihood collapsed.

        Per gradient this costs a pass over the students (their statistics are graph nodes),
        where integrating the cells out costs one factorization per (cluster, missingness
        pattern) pair: with a tenth or more of the cells missing nearly every student has a
        pattern of their own, and sampling the cells is several times faster per effective
        draw (``bench/missing_formulations.py``). Where ``samples_missing`` is off
        (:class:`PatternLikelihood`, or more than :data:`MAX_SAMPLED_CELLS` cells) they are
        integrated out instead.
        """
        if missing_cell_count(structure, data) > MAX_SAMPLED_CELLS:
            self.samples_missing = False
        if not self.samples_missing:
            self._integrate_missing(structure, data, within, between, params)
            return
        Y, Z2 = self._completed_data(structure, data)
        self._add_completed(structure, data, within, between, params, Y, Z2)

    def _integrate_missing(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        """Missing cells integrated out: students grouped by (cluster, missingness pattern)."""
        import pymc as pm

        self.pattern_stats = pattern_statistics(structure, data)  # NumPy, for imputation
        q = len(structure.level2)
        if not structure.random_slopes:
            ll = observed_cells_logp(structure, within, between, self.pattern_stats, within.Sigma)
            self.imputation_terms = {
                "W": within.Sigma,
                "V": between.Sigma,
                "mean": between.nu,
                "level2_cols": list(range(q)),
            }
            pm.Potential("loglik", ll)
            return
        if structure.slopes_in_between_model or _moderator_missing(structure, self.pattern_stats):
            # Conditioning on the slopes integrates missing moderators out with the other cells.
            self.imputation_terms = {}
            ll = conditioned_random_slope_logp(
                None,
                structure,
                within,
                between,
                params,
                self.slopes.corr_prior,
                self.pattern_stats,
                self.imputation_terms,
            )
            pm.Potential("loglik", ll)
            return
        u = add_random_slopes(structure, params, self.slopes)
        if any(r.moderators for r in structure.random_slopes):
            # Known moderators leave cluster means with zero conditional variance (a singular
            # V), which the observed-cells kernel does not take: the graph formulation stays.
            self.imputation_terms = {}
            ps = self.pattern_stats.as_model_data()
            ll = moderated_random_slope_logp(
                None, structure, within, between, u, params, ps, self.imputation_terms
            )
            pm.Potential("loglik", ll)
            return
        Wg = _cluster_within_cov(structure, within, u, self.pattern_stats.n_clusters)
        ll = observed_cells_logp(structure, within, between, self.pattern_stats, Wg, u=u)
        self.imputation_terms = {
            "W": Wg,
            "V": between.Sigma,
            "mean": between.nu,
            "level2_cols": list(range(q)),
        }
        pm.Potential("loglik", ll)


@register
class PatternLikelihood(MarginalLikelihood):
    """The marginal likelihood with missing cells integrated out too: nothing per cell is sampled.

    Students are grouped by (cluster, missingness pattern) and each pair's observed block is
    factored (:mod:`pymsem.compile.missing`). Exact, like sampling the cells; faster where few
    cells are missing in many students (most pairs then share the complete pattern).
    """

    name: ClassVar[str] = "patterns"
    samples_missing: bool = False


def observed_cells_logp(
    structure: ModelStructure,
    within: LevelMatrices,
    between: LevelMatrices,
    ps: PatternStatistics,
    W: Any,
    u: Any = None,
    V: Any = None,
    mean: Any = None,
) -> Any:
    """The summed log-likelihood of the observed cells given the within covariance ``W``.

    ``W`` is one matrix, or one per cluster (``u``: the slope deviations that made them);
    ``V`` and ``mean`` default to the between level's. Where every within variable has a free
    residual variance (a factor model, "diagonal plus low rank"), the padded inverses come
    from factor-sized capacitance matrices (:func:`woodbury_padded_inverse`), which costs less
    per (cluster, pattern) pair than factoring each pair's observed block, as the dense
    kernel does (``bench/missing_gradient.py`` measures both). Otherwise the kernel
    (:mod:`pymsem.compile.kernel.missing_op`) factors the observed blocks in one compiled call.
    """
    import pytensor.tensor as pt

    V = between.Sigma if V is None else V
    mean = between.nu if mean is None else mean
    q = len(structure.level2)
    if not within_woodbury_applies(structure):
        return missing_kernel_logp(ps, W, V, mean)
    psd = ps.as_model_data()
    if W.ndim == 2:
        u0 = pt.zeros((1, len(structure.random_slopes)))
        Sinv, logdet_psi = _cluster_precisions(structure, within, u0, 1)
        theta = pt.diagonal(within.Theta)
        Rinv, ld = woodbury_padded_inverse(theta, within.Lambda, Sinv, logdet_psi, psd.patterns)
        return missing_logp(psd, Rinv, ld, V, mean, list(range(q)), per_pattern=True)[0].sum()
    Rinv, ld = within_inverses(structure, within, psd, Wg=W, u=u)
    return missing_logp(psd, Rinv, ld, V, mean, list(range(q)))[0].sum()


def _moderator_missing(structure: ModelStructure, stats: PatternStatistics) -> bool:
    """Whether a level-2 column that moderates a random slope is missing in some cluster."""
    lb = structure.between
    for r in structure.random_slopes:
        for lat, _ in r.moderators:
            name = lb.latent[lat]
            if name in structure.level2 and (stats.level2_mask[:, structure.level2.index(name)] == 0).any():
                return True
    return False
