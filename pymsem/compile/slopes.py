"""Random slopes: cluster deviations ``u_g ~ MvNormal(0, diag(sd) R diag(sd))``, non-centered.

``R`` has an LKJ prior (``eta = 2`` by default: mild shrinkage toward zero
correlation); its Cholesky factor ``L`` and standard normal draws ``z_g`` give
``u_g = diag(sd) L z_g``.  The slope of cluster ``g`` is the path's mean
(``path_w``, labelled e.g. ``a_w``) plus ``u_g``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pymsem.compile.structure import ModelStructure
from pymsem.priors import Prior

__all__ = ["DEFAULT_SLOPE_CORR_PRIOR", "add_random_slopes", "slope_deviations"]

DEFAULT_SLOPE_CORR_PRIOR = Prior("LKJCorr", eta=2.0)


def add_random_slopes(
    structure: ModelStructure, params: dict[str, Any], corr_prior: Prior | None = None
) -> Any:
    """Create the slope deviations in the current PyMC model; returns ``u`` shaped (cluster, slope)."""
    import pymc as pm
    import pytensor.tensor as pt

    k = len(structure.random_slopes)
    model = pm.modelcontext(None)
    model.add_coord("random_slope", [r.name for r in structure.random_slopes])
    z = pm.Normal("slope_raw", 0.0, 1.0, dims=("cluster", "random_slope"))
    sd = params["slope_sd_b"]
    if k == 1:
        return z * sd[None, :]
    prior = corr_prior or DEFAULT_SLOPE_CORR_PRIOR
    L = pm.LKJCorr("slope_corr_chol", n=k, **prior.params)
    return pt.dot(z, L.T) * sd[None, :]


def slope_deviations(structure: ModelStructure, posterior: Any) -> np.ndarray:
    """Cluster slope deviations from posterior draws, shaped (chain, draw, cluster, slope)."""
    z = np.asarray(posterior["slope_raw"].values)
    sd = np.asarray(posterior["slope_sd_b"].values)
    if "slope_corr_chol" in posterior:
        L = np.asarray(posterior["slope_corr_chol"].values)
        z = np.einsum("cdgj,cdkj->cdgk", z, L)
    return z * sd[:, :, None, :]


def slope_covariance(structure: ModelStructure, posterior: Any, total: bool = False) -> np.ndarray:
    """Covariance matrix of the slopes per draw, (chain, draw, slope, slope).

    By default that of the residual deviations ``u_g``; with ``total``, the model-implied
    covariance of the slopes themselves, ``Gamma Sigma_oo Gamma' + T`` when they are regressed
    on between-level variables (Blimp's ``RSa.totalvar``).
    """
    sd = np.asarray(posterior["slope_sd_b"].values)
    k = sd.shape[-1]
    if "slope_corr_chol" in posterior:
        L = np.asarray(posterior["slope_corr_chol"].values)
        R = L @ np.swapaxes(L, -1, -2)
    else:
        R = np.broadcast_to(np.eye(k), (*sd.shape[:-1], k, k))
    T = sd[..., :, None] * R * sd[..., None, :]
    mods = sorted({lat for r in structure.random_slopes for lat, _ in r.moderators})
    if not total or not mods:
        return T
    from pymsem.compile.matrices import level_matrices

    vals = {n: np.asarray(posterior[n].values) for n in structure.groups}
    S = level_matrices(structure.between, vals).Sigma_eta[..., mods, :][..., :, mods]
    Gam = np.zeros((*sd.shape[:-1], k, len(mods)))
    for i, r in enumerate(structure.random_slopes):
        for lat, idx in r.moderators:
            Gam[..., i, mods.index(lat)] = vals["path_b"][..., idx]
    return T + Gam @ S @ np.swapaxes(Gam, -1, -2)
