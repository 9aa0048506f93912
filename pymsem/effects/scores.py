"""Between-level latent scores from their exact conditional distributions, per posterior draw.

The collapsed likelihood integrates the latent variables out; they are not lost. Given a
posterior draw (and, with random slopes, the clusters' slopes), each cluster's between-level
latent vector is Gaussian given its data. Its prior given the slopes is ``N(m_g, S)`` (``m_g = 0``,
``S = Sigma_eta`` unless the slopes depend on between variables; then ``m_g = K s_g`` and
``S = Sigma_ee - K C_se`` as in :mod:`pymsem.compile.random_effects`), and the cluster vector
``z_g = nu + Lambda_B eta_g + e_g`` has covariance ``V = Lambda_B S Lambda_B' + Theta_B``. With
complete data

    eta_g | data ~ N(m_g + K_g (z_g - nu - Lambda_B m_g), S - K_g Lambda_B S),
    K_g = S Lambda_B' V_g^-1,  V_g = V + E Sigma_W,g E' / n_g,

where ``z_g`` stacks the cluster's observed means and level-2 values. With missing cells the
per-cluster kernel (:func:`pymsem.compile.kernel.missing_numba.missing_moments`) gives the
posterior mean ``zhat_g`` and covariance ``Z_g`` of ``z_g`` given the observed cells, and with
``H = S Lambda_B' V^-1``

    eta_g | data ~ N(m_g + H (zhat_g - nu - Lambda_B m_g), S - H Lambda_B S + H Z_g H').

Drawing from it for every posterior draw gives draws from the joint posterior of the scores
(cluster means of level-1 variables, between factors, level-2 latents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pymsem.compile.matrices import level_matrices
from pymsem.compile.slopes import slope_covariance, total_slope_deviations

if TYPE_CHECKING:
    from pymsem.compile.structure import ModelStructure
    from pymsem.results.fit import MSEMFit

__all__ = ["between_prior", "between_score_moments", "between_scores", "cluster_vector_posterior"]


def _within_covariances(structure: ModelStructure, W: Any, s: np.ndarray | None, G: int) -> np.ndarray:
    """Each cluster's within covariance given its slope deviations, (..., G, p1, p1); (..., 1, p1, p1) without slopes."""
    if s is None:
        return W.Sigma[..., None, :, :]
    ls = structure.within
    Bg = np.broadcast_to(W.B[..., None, :, :], (*s.shape[:-2], G, ls.n_lat, ls.n_lat)).copy()
    Bg[..., ls.beta_random[:, 0], ls.beta_random[:, 1]] += s[..., ls.beta_random[:, 2]]
    Ag = np.linalg.inv(np.eye(ls.n_lat) - Bg)
    Sw = W.Lambda[..., None, :, :] @ Ag @ W.Psi[..., None, :, :] @ np.swapaxes(Ag, -1, -2)
    return Sw @ np.swapaxes(W.Lambda, -1, -2)[..., None, :, :] + W.Theta[..., None, :, :]


def between_prior(
    structure: ModelStructure,
    vals: dict[str, np.ndarray],
    slopes: np.ndarray | None,
    slope_cov: np.ndarray | None,
    G: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The between latents' prior given the slopes, and the cluster vector's: ``(m, S, C, V, mean_z)``.

    ``m`` (..., G, mb) and ``S`` (..., mb, mb) are the latents' mean and covariance, ``C``
    (..., mb, pb) their covariance with the cluster vector ``z_g``, ``V`` (..., pb, pb) and
    ``mean_z`` (..., G, pb) the cluster vector's covariance and mean. Slopes change them only
    where they depend on between variables (cross-level moderators, slopes in the between model).
    """
    from pymsem.compile.random_effects import augmented_between

    B = level_matrices(structure.between, vals)
    mb = structure.between.n_lat
    batch = B.Sigma.shape[:-2]
    Lam_t = np.swapaxes(B.Lambda, -1, -2)
    if structure.slopes_in_between_model or any(r.moderators for r in structure.random_slopes):
        Sigma, _ = augmented_between(structure, B, vals, slope_cov)
        Css, Cse = Sigma[..., mb:, mb:], Sigma[..., mb:, :mb]
        Kt = np.linalg.solve(Css, Cse)  # (..., k, mb) = K'
        S = Sigma[..., :mb, :mb] - np.swapaxes(Cse, -1, -2) @ Kt
        m = slopes @ Kt  # (..., G, mb)
    else:
        S = B.Sigma_eta
        m = np.zeros((*batch, G, mb))
    C = S @ Lam_t
    V = B.Lambda @ C + B.Theta
    mean_z = B.nu[..., None, :] + m @ Lam_t
    return m, S, C, V, mean_z


def cluster_vector_posterior(
    structure: ModelStructure, data: Any, Sw: np.ndarray, V: np.ndarray, mean_z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean ``(..., G, pb)`` and covariance ``(..., G, pb, pb)`` of each cluster vector.

    Given its observed cells (missing level-1 and level-2 cells allowed), from the per-cluster
    kernel (:func:`pymsem.compile.kernel.missing_numba.missing_moments`). ``Sw`` is the within
    covariance, ``(..., 1 | G, p1, p1)``; ``V`` ``(..., pb, pb)`` and ``mean_z`` ``(..., G, pb)``
    the cluster vector's prior.
    """
    from pymsem.compile.kernel.missing_numba import missing_moments
    from pymsem.compile.kernel.missing_op import missing_reduction
    from pymsem.compile.missing import pattern_statistics

    red = missing_reduction(pattern_statistics(structure, data))
    batch = V.shape[:-2]
    G, pb = mean_z.shape[-2:]
    flat = int(np.prod(batch))
    Swf = Sw.reshape(flat, *Sw.shape[-3:])
    Vf, muf = V.reshape(flat, pb, pb), mean_z.reshape(flat, G, pb)
    zhat, zcov = np.empty((flat, G, pb)), np.empty((flat, G, pb, pb))
    for i in range(flat):
        c = np.ascontiguousarray
        _, zhat[i], zcov[i] = missing_moments(c(Swf[i]), c(Vf[i]), c(muf[i]), **red)
    return zhat.reshape(*batch, G, pb), zcov.reshape(*batch, G, pb, pb)


def between_score_moments(
    structure: ModelStructure,
    data: Any,
    vals: dict[str, np.ndarray],
    slopes: np.ndarray | None = None,
    slope_cov: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean ``(..., G, m)`` and covariance ``(..., G, m, m)`` of the between latents.

    Parameters
    ----------
    structure, data
        The lowered model and its data (missing cells allowed).
    vals
        Parameter vectors by group with leading batch dimensions (posterior draws).
    slopes
        With random slopes: each cluster's whole slope deviations ``(..., G, k)``.
    slope_cov
        Where slopes depend on between variables: the slopes' residual covariance ``(..., k, k)``.
    """
    W = level_matrices(structure.within, vals)
    G, mb = data.n_clusters, structure.between.n_lat
    Sw = _within_covariances(structure, W, slopes if structure.random_slopes else None, G)
    m, S, C, V, mean_z = between_prior(structure, vals, slopes, slope_cov, G)
    batch = V.shape[:-2]
    if data.has_missing:
        zhat, zcov = cluster_vector_posterior(structure, data, Sw, V, mean_z)
        Ht = np.linalg.solve(V, np.swapaxes(C, -1, -2))  # (..., pb, mb) = H'
        H = np.swapaxes(Ht, -1, -2)  # (..., mb, pb)
        mean = m + (H[..., None, :, :] @ (zhat - mean_z)[..., None])[..., 0]
        S_data = S - H @ np.swapaxes(C, -1, -2)  # given z_g exactly
        cov = S_data[..., None, :, :] + H[..., None, :, :] @ zcov @ Ht[..., None, :, :]
        return mean, cov
    from pymsem.compile.marginal import sufficient_statistics

    stats = sufficient_statistics(structure, data)
    n = data.sizes.astype(float)
    p1 = stats.p1
    Vg = np.broadcast_to(V[..., None, :, :], (*batch, G, *V.shape[-2:])).copy()
    Vg[..., :p1, :p1] += Sw / n[:, None, None]
    Ct = np.swapaxes(C, -1, -2)[..., None, :, :]  # (..., 1, pb, mb)
    Kt = np.linalg.solve(Vg, np.broadcast_to(Ct, (*Vg.shape[:-1], mb)))  # (..., G, pb, mb) = K_g'
    mean = m + (np.swapaxes(Kt, -1, -2) @ (stats.cluster_vectors - mean_z)[..., None])[..., 0]
    cov = S[..., None, :, :] - np.swapaxes(Kt, -1, -2) @ Ct
    return mean, cov


def between_scores(fit: MSEMFit, draw: bool = True, seed: int | None = None) -> Any:
    """Between-level latent scores per cluster: draws (or conditional means) over (chain, draw, cluster).

    Complete or missing data, with or without random slopes, cross-level moderators included
    (the scores are then conditioned on each draw's slopes as well as on the data).

    Parameters
    ----------
    fit
        A fitted model.
    draw
        Draw from the conditional distribution (default); ``False`` returns conditional means.
    seed
        Seed for those draws.

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).
    """
    import xarray as xr

    from pymsem.results.ordinal import SCORES_INSTEAD, SCORES_WHY, refuse_ordinal

    refuse_ordinal(fit.structure, "fit.latent_scores()", SCORES_WHY, SCORES_INSTEAD)
    st = fit.structure
    data = fit.compiled.data
    vals = fit.parameter_draws()
    slopes = slope_cov = None
    if st.random_slopes:
        slopes = total_slope_deviations(st, fit.posterior)
        slope_cov = slope_covariance(st, fit.posterior)
    mean, cov = between_score_moments(st, data, vals, slopes, slope_cov)
    if draw:
        cov = (cov + np.swapaxes(cov, -1, -2)) / 2
        w, Q = np.linalg.eigh(cov)
        root = Q * np.sqrt(np.clip(w, 0, None))[..., None, :]
        rng = np.random.default_rng(seed)
        mean = mean + (root @ rng.standard_normal(mean.shape)[..., None])[..., 0]
    names = st.between.latent
    cluster = [str(c) for c in data.cluster_ids]
    return xr.Dataset(
        {name: (("chain", "draw", "cluster"), mean[..., j]) for j, name in enumerate(names)},
        coords={"cluster": cluster},
    )
