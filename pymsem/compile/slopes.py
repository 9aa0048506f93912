"""Random slopes: cluster deviations ``u_g ~ MvNormal(0, diag(sd) R diag(sd))``.

``R`` has an LKJ prior (``eta = 2`` by default: mild shrinkage toward zero
correlation). The slope of cluster ``g`` is the path's mean (``path_w``,
labelled e.g. ``a_w``) plus ``u_g``.

Two parametrizations, the same posterior:

* non-centered (``slope_raw``): standard normal ``z_g`` and ``u_g = diag(sd) L z_g``
  with ``L`` the Cholesky factor of ``R``. Best when clusters carry little
  information about their own slopes (small clusters, small slope variance): the
  prior of ``z_g`` does not depend on ``sd``, so there is no funnel.
* centered (``slope``): the cluster's slopes ``mean + u_g`` themselves. Best when each cluster's data pin its
  slopes down (large clusters): then ``u_g`` is nearly independent of ``sd`` a
  posteriori, while ``z_g = u_g / sd`` would move with ``sd`` in lockstep and
  slow down every trajectory.

``"auto"`` picks by the clusters' sizes (:func:`centered_slopes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pymsem.compile.structure import ModelStructure
from pymsem.priors import Prior

__all__ = [
    "DEFAULT_SLOPE_CORR_PRIOR",
    "SLOPE_PARAMETRIZATIONS",
    "SlopeSettings",
    "add_random_slopes",
    "centered_slopes",
    "cluster_latent_covariance",
    "moderated_deviations",
    "moderator_values",
    "slope_deviations",
    "total_slope_deviations",
]

DEFAULT_SLOPE_CORR_PRIOR = Prior("LKJCorr", eta=2.0)

SLOPE_PARAMETRIZATIONS = ("auto", "centered", "noncentered")

#: With ``"auto"``, slopes are centered when the median cluster has at least this many
#: level-1 units. See ``bench/results/slope_parametrization.md`` for the measurements.
CENTERED_MIN_MEDIAN_SIZE = 50


@dataclass(frozen=True)
class SlopeSettings:
    """How the random slopes enter the PyMC model: their correlation prior and parametrization."""

    corr_prior: Prior = DEFAULT_SLOPE_CORR_PRIOR
    centered: bool = False


def centered_slopes(parametrization: str, cluster_sizes: np.ndarray, moderated: bool = False) -> bool:
    """Whether to center the slopes: ``"centered"``, ``"noncentered"`` or ``"auto"`` by cluster size.

    Slopes regressed on between-level variables (``moderated``) are always non-centered.
    """
    if parametrization not in SLOPE_PARAMETRIZATIONS:
        raise ValueError(
            f"Unknown slope parametrization {parametrization!r}; use one of {', '.join(SLOPE_PARAMETRIZATIONS)}."
        )
    if moderated:
        if parametrization == "centered":
            raise ValueError(
                "slopes='centered' is not available when random slopes are regressed on between-level "
                "variables; use 'noncentered' or 'auto'."
            )
        return False
    if parametrization == "auto":
        return bool(len(cluster_sizes)) and float(np.median(cluster_sizes)) >= CENTERED_MIN_MEDIAN_SIZE
    return parametrization == "centered"


def add_random_slopes(structure: ModelStructure, params: dict[str, Any], settings: SlopeSettings) -> Any:
    """Create the slope deviations in the current PyMC model; returns ``u`` shaped (cluster, slope)."""
    import pymc as pm
    import pytensor.tensor as pt

    k = len(structure.random_slopes)
    model = pm.modelcontext(None)
    model.add_coord("random_slope", [r.name for r in structure.random_slopes])
    sd = params["slope_sd_b"]
    dims = ("cluster", "random_slope")
    L = pm.LKJCorr("slope_corr_chol", n=k, **settings.corr_prior.params) if k > 1 else None
    if settings.centered:
        # The clusters' slopes themselves are sampled, around their means: centering only the
        # deviations would leave a ridge between the mean and the average deviation.
        mean = params["path_w"][np.asarray([r.mean_index for r in structure.random_slopes])]
        if L is None:
            slopes = pm.Normal("slope", mean, sd, dims=dims)
        else:
            slopes = pm.MvNormal("slope", mu=mean, chol=sd[:, None] * L, dims=dims)
        return slopes - mean[None, :]
    z = pm.Normal("slope_raw", 0.0, 1.0, dims=dims)
    if L is None:
        return z * sd[None, :]
    return pt.dot(z, L.T) * sd[None, :]


def moderated_deviations(
    structure: ModelStructure, u: Any, params: dict[str, Any], eta: dict[int, Any]
) -> Any:
    """Slope deviations from the path means, ``u_g + Gamma eta_o,g`` (cluster, slope).

    ``eta`` maps a between latent index to its cluster values (a vector over clusters)
    for every moderator of a slope; ``Gamma`` holds the moderators' ``path_b`` coefficients.
    """
    import pytensor.tensor as pt

    cols = []
    for j, r in enumerate(structure.random_slopes):
        dev = u[:, j]
        for lat, k in r.moderators:
            dev = dev + params["path_b"][k] * eta[lat]
        cols.append(dev)
    return pt.stack(cols, axis=1)


def moderator_values(structure: ModelStructure, mods: list[int], eta: dict[int, Any]) -> Any:
    """The moderators' cluster values (cluster, moderator), kept in the trace as ``moderator_values``.

    :func:`pymsem.effects.random_slopes.cluster_slopes` reads them back to rebuild each
    cluster's slopes.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model = pm.modelcontext(None)
    if "slope_moderator" not in model.coords:
        model.add_coord("slope_moderator", [structure.between.latent[lat] for lat in mods])
    values = pt.stack([eta[lat] for lat in mods], axis=1)
    pm.Deterministic("moderator_values", values, dims=("cluster", "slope_moderator"))
    return values


def cluster_latent_covariance(structure: ModelStructure, within: Any, u: Any, G: int) -> Any:
    """Each cluster's within latent covariance ``A_g Psi A_g'`` given its slope deviations ``u`` (G, k).

    ``A_g = (I - B_g)^-1`` is summed as ``I + B_g + B_g^2 + ...`` up to the path depth: the
    within regressions are recursive, so ``B_g`` is nilpotent and the series is exact.
    """
    import pytensor.tensor as pt

    from pymsem.compile.linalg import batched_matmul

    ls = structure.within
    m = ls.n_lat
    r, c, j = ls.beta_random[:, 0], ls.beta_random[:, 1], ls.beta_random[:, 2]
    Bg = pt.zeros((G, m, m)) + within.B[None, :, :]
    Bg = pt.inc_subtensor(Bg[:, r, c], u[:, j])
    Ag = pt.eye(m)[None, :, :] + Bg
    power = Bg
    for _ in range(ls.depth - 1):
        power = batched_matmul(power, Bg)
        Ag = Ag + power
    return batched_matmul(batched_matmul(Ag, within.Psi[None, :, :]), Ag.transpose(0, 2, 1))


def slope_deviations(structure: ModelStructure, posterior: Any) -> np.ndarray:
    """Cluster slope deviations from posterior draws, shaped (chain, draw, cluster, slope).

    Where the likelihood conditions on the slopes (slopes in the between model, see
    :mod:`pymsem.compile.random_effects`) these are the whole deviations from the means,
    moderators' contributions included.
    """
    if "slope_deviation" in posterior:
        return np.asarray(posterior["slope_deviation"].values)
    if "slope" in posterior:
        mean = np.asarray(posterior["path_w"].values)[..., [r.mean_index for r in structure.random_slopes]]
        return np.asarray(posterior["slope"].values) - mean[..., None, :]
    z = np.asarray(posterior["slope_raw"].values)
    sd = np.asarray(posterior["slope_sd_b"].values)
    if "slope_corr_chol" in posterior:
        L = np.asarray(posterior["slope_corr_chol"].values)
        z = np.einsum("cdgj,cdkj->cdgk", z, L)
    return z * sd[:, :, None, :]


def total_slope_deviations(structure: ModelStructure, posterior: Any) -> np.ndarray:
    """Each cluster's slopes minus their means, moderators' contributions included (chain, draw, cluster, slope).

    Where the moderators are sampled (``moderator_values`` in the trace) a cluster's slope
    deviation is ``u_g + Gamma eta_o,g``; elsewhere :func:`slope_deviations` already is.
    """
    u = slope_deviations(structure, posterior)
    if "moderator_values" not in posterior:
        return u
    eta = np.asarray(posterior["moderator_values"].values)  # (chain, draw, cluster, moderator)
    mods = list(posterior["moderator_values"].coords["slope_moderator"].values)
    path_b = np.asarray(posterior["path_b"].values)
    u = u.copy()
    for i, r in enumerate(structure.random_slopes):
        for lat, k in r.moderators:
            u[..., i] += path_b[..., k][..., None] * eta[..., mods.index(structure.between.latent[lat])]
    return u


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
    if not total or not (mods or structure.slopes_in_between_model):
        return T
    if structure.slopes_in_between_model:
        from pymsem.compile.matrices import level_matrices
        from pymsem.compile.random_effects import augmented_between

        vals = {n: np.asarray(posterior[n].values) for n in structure.groups}
        Sigma_aug, _ = augmented_between(structure, level_matrices(structure.between, vals), vals, T)
        mb = structure.between.n_lat
        return Sigma_aug[..., mb:, mb:]
    from pymsem.compile.matrices import level_matrices

    vals = {n: np.asarray(posterior[n].values) for n in structure.groups}
    S = level_matrices(structure.between, vals).Sigma_eta[..., mods, :][..., :, mods]
    Gam = np.zeros((*sd.shape[:-1], k, len(mods)))
    for i, r in enumerate(structure.random_slopes):
        for lat, idx in r.moderators:
            Gam[..., i, mods.index(lat)] = vals["path_b"][..., idx]
    return T + Gam @ S @ np.swapaxes(Gam, -1, -2)
