"""Random slopes as between-level latent variables, and the likelihood given each cluster's slopes.

The between level's latent variables ``eta`` (latent cluster means, between factors,
level-2 columns) and the clusters' centered slopes ``s`` (a slope minus its mean, labelled
e.g. ``a_w``) form one recursive system

    [eta; s] = B* [eta; s] + [zeta; u],   Cov([zeta; u]) = Psi*,

where ``B*`` holds the between regressions, the slopes' regressions on between variables
(cross-level moderation, ``Gamma``) and between variables' regressions on slopes (a slope
predicting a level-2 outcome), and ``Psi*`` holds ``Psi_B``, the slopes' residual covariance
``T`` (LKJ correlations) and correlations of slope residuals with disturbances of endogenous
between variables (a random slope covarying with a random intercept that is itself regressed
on level-2 predictors). Its covariance ``Sigma* = A* Psi* A*'`` (``A* = (I - B*)^-1``) gives the
slopes' marginal covariance ``C_ss`` and their covariance with ``eta``, ``C_es``.

Each cluster's slopes change its within covariance, so they are sampled (non-centered
from ``N(0, C_ss)``); given them everything else is Gaussian and integrates out exactly:
``eta | s ~ N(K s, Sigma_ee - K C_se)`` with ``K = C_es C_ss^-1``. No moderator, latent or
observed, is sampled, and level-2 columns with missing values are integrated out like any
missing cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pymsem.compile.matrices import LevelMatrices
from pymsem.compile.structure import ModelStructure
from pymsem.specification.errors import MSEMSpecificationError

__all__ = [
    "augmented_between",
    "augmented_depth",
    "conditioned_random_slope_logp",
    "implied_level_matrices",
    "posterior_level_matrices",
]


def _edges(structure: ModelStructure) -> list[tuple[int, int]]:
    """(outcome, predictor) pairs of ``B*``: slopes are numbered after the between latents."""
    lb = structure.between
    mb = lb.n_lat
    edges = [(int(r), int(c)) for r, c, _ in lb.beta_free]
    for i, rs in enumerate(structure.random_slopes):
        edges += [(mb + i, int(lat)) for lat, _ in rs.moderators]
        edges += [(int(lat), mb + i) for lat, _ in rs.predicts]
    return edges


def augmented_depth(structure: ModelStructure) -> int:
    """Longest chain of regressions in ``B*``; refuses a cycle through the slopes, naming it."""
    lb = structure.between
    names = lb.latent + [r.name for r in structure.random_slopes]
    preds: dict[int, set[int]] = {i: set() for i in range(len(names))}
    for out, pred in _edges(structure):
        preds[out].add(pred)
    depth: dict[int, int] = {}

    def visit(i: int, stack: list[int]) -> int:
        if i in depth:
            return depth[i]
        if i in stack:
            cyc = " <- ".join(names[j] for j in [*stack[stack.index(i) :], i])
            raise MSEMSpecificationError(
                f"The between-level regressions with random slopes contain a cycle: {cyc}. A slope "
                f"cannot predict a variable that (through other paths) moderates it; drop one path."
            )
        d = max((visit(p, [*stack, i]) + 1 for p in preds[i]), default=0)
        depth[i] = d
        return d

    return max((visit(i, []) for i in range(len(names))), default=0)


def augmented_between(
    structure: ModelStructure, between: LevelMatrices, vals: dict[str, Any], T: Any
) -> tuple[Any, Any]:
    """``(Sigma*, Psi*)`` of ``[eta; s]`` from the between matrices and the slopes' residual covariance.

    Works on PyTensor tensors (no batch) and on NumPy arrays with leading batch dimensions
    (posterior draws), as :mod:`pymsem.compile.matrices` does.
    """
    lb = structure.between
    mb, k = lb.n_lat, len(structure.random_slopes)
    n = mb + k
    path_b = vals.get("path_b")
    lv_cor = vals.get("lv_cor_b")
    rows, cols, src = [], [], []
    for i, rs in enumerate(structure.random_slopes):
        for lat, idx in rs.moderators:
            rows.append(mb + i), cols.append(int(lat)), src.append(int(idx))
        for lat, idx in rs.predicts:
            rows.append(int(lat)), cols.append(mb + i), src.append(int(idx))
    crow, ccol, csrc = [], [], []
    for i, rs in enumerate(structure.random_slopes):
        for lat, idx in rs.disturbance_cors:
            crow.append(int(lat)), ccol.append(mb + i), csrc.append(int(idx))
    depth = augmented_depth(structure)
    if isinstance(between.B, np.ndarray) and not _is_tensor(T):
        batch = np.shape(T)[:-2]
        B = np.zeros((*batch, n, n))
        B[..., :mb, :mb] = between.B
        if src:
            B[..., rows, cols] = np.asarray(path_b)[..., src]
        Psi = np.zeros((*batch, n, n))
        Psi[..., :mb, :mb] = between.Psi
        Psi[..., mb:, mb:] = T
        if csrc:
            sd_e = np.sqrt(between.Psi[..., crow, crow])
            sd_s = np.sqrt(np.asarray(T)[..., np.asarray(ccol) - mb, np.asarray(ccol) - mb])
            cov = np.asarray(lv_cor)[..., csrc] * sd_e * sd_s
            Psi[..., crow, ccol] = cov
            Psi[..., ccol, crow] = cov
        A = np.broadcast_to(np.eye(n), B.shape).copy()
        power = B
        for _ in range(depth):
            A = A + power
            power = power @ B
        return A @ Psi @ np.swapaxes(A, -1, -2), Psi
    import pytensor.tensor as pt

    B = pt.zeros((n, n))
    B = pt.set_subtensor(B[:mb, :mb], between.B)
    if src:
        B = pt.set_subtensor(B[rows, cols], path_b[src])
    Psi = pt.zeros((n, n))
    Psi = pt.set_subtensor(Psi[:mb, :mb], between.Psi)
    Psi = pt.set_subtensor(Psi[mb:, mb:], T)
    if csrc:
        cr, cc = np.asarray(crow), np.asarray(ccol)
        cov = lv_cor[csrc] * pt.sqrt(between.Psi[cr, cr]) * pt.sqrt(T[cc - mb, cc - mb])
        Psi = pt.set_subtensor(Psi[cr, cc], cov)
        Psi = pt.set_subtensor(Psi[cc, cr], cov)
    A = pt.eye(n)
    power = B
    for _ in range(depth):
        A = A + power
        power = pt.dot(power, B)
    return pt.dot(pt.dot(A, Psi), A.T), Psi


def implied_level_matrices(
    structure: ModelStructure, ls: Any, vals: dict[str, np.ndarray], slope_cov: np.ndarray | None = None
) -> LevelMatrices:
    """A level's matrices on posterior draws, the slopes' part included in the between moments.

    When random slopes predict between-level outcomes, those outcomes' implied variances
    include the slopes' (``Sigma*``); standardized estimates, ICCs and ``var()`` in derived
    expressions read them from here. ``slope_cov`` is the slopes' residual covariance ``T``
    per draw; elsewhere this is :func:`pymsem.compile.matrices.level_matrices`.
    """
    from dataclasses import replace

    from pymsem.compile.matrices import level_matrices

    M = level_matrices(ls, vals)
    if ls.level.short != "b" or not structure.slopes_in_between_model or slope_cov is None:
        return M
    Sigma_aug, _ = augmented_between(structure, M, vals, slope_cov)
    mb = ls.n_lat
    S_eta = Sigma_aug[..., :mb, :mb]
    Sigma = M.Lambda @ S_eta @ np.swapaxes(M.Lambda, -1, -2) + M.Theta
    return replace(M, Sigma_eta=S_eta, Sigma=Sigma)


def posterior_level_matrices(
    structure: ModelStructure, ls: Any, vals: dict[str, np.ndarray], posterior: Any
) -> LevelMatrices:
    """:func:`implied_level_matrices` with the slopes' residual covariance read from ``posterior``."""
    slope_cov = None
    if structure.slopes_in_between_model:
        from pymsem.compile.slopes import slope_covariance

        slope_cov = slope_covariance(structure, posterior)
    return implied_level_matrices(structure, ls, vals, slope_cov)


def _disturbance_block(structure: ModelStructure) -> np.ndarray:
    """Indices in ``Psi*`` of the slopes, the disturbances correlated with them and their partners."""
    lb = structure.between
    mb = lb.n_lat
    lats = {int(lat) for r in structure.random_slopes for lat, _ in r.disturbance_cors}
    for i, j, _ in lb.lv_cor:
        if int(i) in lats or int(j) in lats:
            lats |= {int(i), int(j)}
    return np.asarray(sorted(lats) + [mb + i for i in range(len(structure.random_slopes))])


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("pytensor")


def conditioned_random_slope_logp(
    stats: Any,
    structure: ModelStructure,
    within: LevelMatrices,
    between: LevelMatrices,
    params: dict[str, Any],
    corr_prior: Any,
    ps: Any = None,
    terms: dict[str, Any] | None = None,
) -> Any:
    """The collapsed log-likelihood given each cluster's slopes, which are sampled (``slope_raw``).

    ``s_g = L z_g`` with ``L L' = C_ss`` and ``z_g`` standard normal; ``s_g`` is kept in the
    trace as ``slope_deviation`` (cluster, random_slope). Given ``s_g``, the cluster vector is
    ``N(nu + Lambda_B K s_g, Lambda_B (Sigma_ee - K C_se) Lambda_B' + Theta_B + E Sigma_W,g E'/n_g)``
    and the within part uses the cluster's ``Sigma_W,g``. With missing values (``ps``) the
    between and within parts are :func:`pymsem.compile.missing.missing_logp` given the same
    moments, stored in ``terms`` for imputation; ``ps`` are NumPy pattern statistics
    (:func:`pymsem.compile.marginal.observed_cells_logp`).
    """
    import pymc as pm
    import pytensor.tensor as pt

    from pymsem.compile.linalg import cholesky, solve_lower
    from pymsem.compile.marginal import _between_part, _cluster_within_cov, _within_part, observed_cells_logp

    rs = structure.random_slopes
    k, mb = len(rs), structure.between.n_lat
    model = pm.modelcontext(None)
    if "random_slope" not in model.coords:
        model.add_coord("random_slope", [r.name for r in rs])
    sd = params["slope_sd_b"]
    if k > 1:
        L = pm.LKJCorr("slope_corr_chol", n=k, **corr_prior.params)
        T = (sd[:, None] * pt.dot(L, L.T)) * sd[None, :]
    else:
        T = pt.reshape(pt.square(sd), (1, 1))
    Sigma, Psi = augmented_between(structure, between, params, T)
    if any(r.disturbance_cors for r in rs):
        # The slope-disturbance correlations have uniform priors each; the joint covariance of
        # disturbances and slope residuals must still be positive definite. Outside that region
        # the density is zero (the prior is the uniform one restricted to valid matrices), which a
        # failed Cholesky (NaN) detects. Conditional moments alone would not: they can stay
        # positive definite while Psi* is not.
        from pymsem.compile.linalg import chol_logdet

        block = _disturbance_block(structure)
        sub = Psi[block][:, block]
        invalid = pt.isnan(chol_logdet(cholesky(sub)))
        pm.Potential("slope_disturbance_psd", pt.switch(invalid, -np.inf, 0.0))
    Css, Cse = Sigma[mb:, mb:], Sigma[mb:, :mb]
    Ls = cholesky(Css)
    dims = ("cluster", "random_slope")
    z = pm.Normal("slope_raw", 0.0, 1.0, dims=dims)
    s = pt.dot(z, Ls.T)
    pm.Deterministic("slope_deviation", s, dims=dims)
    # K s_g = (Ls^-1 C_se)' (Ls^-1 s_g) = (Ls^-1 C_se)' z_g: no inverse of C_ss is formed.
    Kt = solve_lower(Ls, Cse)  # (k, mb)
    S_cond = Sigma[:mb, :mb] - pt.dot(Kt.T, Kt)
    LamB = between.Lambda
    mean = between.nu[None, :] + pt.dot(pt.dot(z, Kt), LamB.T)  # (G, pb)
    V = pt.dot(pt.dot(LamB, S_cond), LamB.T) + between.Theta
    if ps is not None:
        G, q = ps.n_clusters, len(structure.level2)
        Wg = _cluster_within_cov(structure, within, s, G)
        if terms is not None:
            terms.update({"W": Wg, "V": V, "mean": mean, "level2_cols": list(range(q))})
        return observed_cells_logp(structure, within, between, ps, Wg, u=s, V=V, mean=mean)
    Wg = _cluster_within_cov(structure, within, s, stats.n_clusters)
    return pt.sum(_within_part(stats, Wg) + _between_part(stats, Wg, V, mean, list(range(stats.pb))))
