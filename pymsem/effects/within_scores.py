"""Within-level (per-student) latent scores from their exact Gaussian conditional.

Given a posterior draw (and, with random slopes, the cluster's slopes), student ``i`` of
cluster ``g`` has level-1 values ``y_i = mu_g + w_i``: ``mu_g`` the cluster's latent means (the
first ``p1`` entries of the between-level vector ``b_g ~ N(nu_B, Sigma_B)``) and
``w_i = Lambda_W eta_i + eps_i ~ N(0, Sigma_W,g)``. Given ``mu_g`` the students are independent,
and the cluster's mean vector ``z_g`` (level-1 means and level-2 values) is sufficient for
``mu_g``, so

    mu_g | data ~ N(m_g, R_g),   m_g = nu_1 + S_1. V_g^-1 (z_g - nu_B),
                                 R_g = S_11 - S_1. V_g^-1 S_.1,   V_g = Sigma_B + E Sigma_W,g E' / n_g,
    eta_i | data ~ N(K_g (y_i - m_g), Sigma_eta,g - K_g Lambda_W Sigma_eta,g + K_g R_g K_g'),
                                 K_g = Sigma_eta,g Lambda_W' Sigma_W,g^-1.

The uncertainty about the cluster's means enters through ``K_g R_g K_g'``. Over posterior
draws the scores' posterior mean is the mean of the conditional means and their posterior
variance the law of total variance: mean conditional variance plus variance of the conditional
means (Rao-Blackwellized: no Monte Carlo error beyond that of the posterior draws).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pymsem.compile.matrices import level_matrices
from pymsem.compile.slopes import slope_covariance, total_slope_deviations

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["within_conditional", "within_conditional_missing", "within_given_cluster_means", "within_scores"]


def within_conditional(
    y: np.ndarray,
    cluster_index: np.ndarray,
    z: np.ndarray,
    sizes: np.ndarray,
    nu_B: np.ndarray,
    Sigma_B: np.ndarray,
    Sigma_W: np.ndarray,
    cov_eta_w: np.ndarray,
    Sigma_eta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean and covariance of every student's within latents, for one parameter draw.

    Parameters
    ----------
    y
        Level-1 values, (N, p1), in the structure's ``level1`` order.
    cluster_index
        Cluster of each student, (N,), integers in ``0..G-1``.
    z
        Cluster vectors, (G, pb): the level-1 means of the cluster's students, then its level-2 values.
    sizes
        Students per cluster, (G,).
    nu_B, Sigma_B
        Between-level intercepts (pb,) and implied covariance (pb, pb).
    Sigma_W
        Within implied covariance, (p1, p1) or one per cluster (G, p1, p1) (random slopes).
    cov_eta_w
        ``Cov(eta, w) = Sigma_eta Lambda_W'``, (m, p1) or (G, m, p1).
    Sigma_eta
        Within latents' covariance, (m, m) or (G, m, m).

    Returns
    -------
    mean : ndarray
        (N, m) conditional means.
    cov : ndarray
        (G, m, m) conditional covariance, the same for every student of a cluster.
    """
    G, pb = z.shape
    p1 = y.shape[1]
    Sw = np.broadcast_to(Sigma_W, (G, p1, p1))
    Cew = np.broadcast_to(cov_eta_w, (G, *np.shape(cov_eta_w)[-2:]))
    Se = np.broadcast_to(Sigma_eta, (G, *np.shape(Sigma_eta)[-2:]))
    V = np.broadcast_to(Sigma_B, (G, pb, pb)).copy()
    V[:, :p1, :p1] += Sw / np.asarray(sizes, float)[:, None, None]
    S1 = Sigma_B[:p1, :]  # Cov(mu_g, z_g): the within part of z_g is independent of mu_g
    VinvS = np.linalg.solve(V, np.broadcast_to(S1.T, (G, pb, p1)))  # (G, pb, p1)
    m_mu = nu_B[:p1] + np.einsum("gqp,gq->gp", VinvS, z - nu_B)
    R = Sigma_B[:p1, :p1] - S1 @ VinvS
    K = np.swapaxes(np.linalg.solve(Sw, np.swapaxes(Cew, -1, -2)), -1, -2)  # (G, m, p1)
    dev = y - m_mu[cluster_index]
    mean = np.einsum("imp,ip->im", K[cluster_index], dev)
    cov = Se - K @ np.swapaxes(Cew, -1, -2) + K @ R @ np.swapaxes(K, -1, -2)
    return mean, (cov + np.swapaxes(cov, -1, -2)) / 2


def within_conditional_missing(
    y: np.ndarray,
    cluster_index: np.ndarray,
    level2: np.ndarray,
    nu_B: np.ndarray,
    Sigma_B: np.ndarray,
    Sigma_W: np.ndarray,
    cov_eta_w: np.ndarray,
    Sigma_eta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`within_conditional`, with missing level-1 cells (NaN in ``y``).

    The cluster means' posterior is no longer a function of the observed cluster means: it is
    accumulated in information form, ``J_g = P^-1 + sum_i H_i' Sigma_oo,i^-1 H_i`` (``P`` the
    prior covariance of the means given the level-2 values, ``H_i`` picking student ``i``'s
    observed cells), and each student's gain uses only its observed cells. Students with no
    observed cell get the within latents' marginal distribution shifted by nothing.

    Parameters
    ----------
    y
        Level-1 values with NaN for missing cells, (N, p1).
    cluster_index
        Cluster of each student, (N,).
    level2
        Level-2 values, (G, pb - p1), complete.
    nu_B, Sigma_B, Sigma_W, cov_eta_w, Sigma_eta
        As in :func:`within_conditional`.

    Returns
    -------
    mean : ndarray
        (N, m) conditional means.
    cov : ndarray
        (N, m, m) conditional covariances (they differ by missingness pattern).
    """
    G = level2.shape[0]
    p1 = y.shape[1]
    Sw = np.broadcast_to(Sigma_W, (G, p1, p1))
    S11 = Sigma_B[:p1, :p1]
    if level2.shape[1]:
        S12, S22 = Sigma_B[:p1, p1:], Sigma_B[p1:, p1:]
        gain = np.linalg.solve(S22, S12.T).T
        prior_mean = nu_B[:p1] + (level2 - nu_B[p1:]) @ gain.T  # (G, p1)
        P = S11 - gain @ S12.T
    else:
        prior_mean, P = np.broadcast_to(nu_B[:p1], (G, p1)), S11
    observed = ~np.isnan(y)
    y0 = np.where(observed, y, 0.0)
    M = _padded_inverses(observed, Sw, cluster_index)
    Pinv = np.linalg.inv(P)
    J = np.broadcast_to(Pinv, (G, p1, p1)).copy()
    np.add.at(J, cluster_index, M)
    h = prior_mean @ Pinv.T
    np.add.at(h, cluster_index, np.einsum("ipq,iq->ip", M, y0))
    R = np.linalg.inv(J)
    m_mu = np.einsum("gpq,gq->gp", R, h)
    return within_given_cluster_means(y, cluster_index, m_mu, R, Sw, cov_eta_w, Sigma_eta, M)


def _padded_inverses(observed: np.ndarray, Sw: np.ndarray, cluster_index: np.ndarray) -> np.ndarray:
    """Each student's inverse of its observed block of ``Sw``, zero-padded to (N, p1, p1), once per pattern."""
    N, p1 = observed.shape
    M = np.zeros((N, p1, p1))
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    for k, pat in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == k)
        o = np.flatnonzero(pat)
        if len(o) == 0:
            continue
        M[np.ix_(rows, o, o)] = np.linalg.inv(Sw[cluster_index[rows]][:, o][:, :, o])
    return M


def within_given_cluster_means(
    y: np.ndarray,
    cluster_index: np.ndarray,
    m_mu: np.ndarray,
    R: np.ndarray,
    Sigma_W: np.ndarray,
    cov_eta_w: np.ndarray,
    Sigma_eta: np.ndarray,
    inverses: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every student's within latents given the posterior ``N(m_mu_g, R_g)`` of its cluster's level-1 means.

    Given the means the students are independent, so ``eta_i | data`` has mean
    ``K_i (y_i,o - m_mu_g,o)`` and covariance ``Sigma_eta - K_i Cov(w_o, eta) + K_i R_g,oo K_i'``
    with ``K_i = Cov(eta, w_o) Sigma_W,oo^-1`` over the student's observed cells ``o``.

    Parameters
    ----------
    y
        Level-1 values with NaN for missing cells, (N, p1).
    cluster_index
        Cluster of each student, (N,).
    m_mu, R
        Posterior mean (G, p1) and covariance (G, p1, p1) of the clusters' level-1 means.
    Sigma_W, cov_eta_w, Sigma_eta
        As in :func:`within_conditional` (one, or one per cluster).
    inverses
        Each student's padded inverse of its observed block of ``Sigma_W`` (N, p1, p1), if
        already computed.

    Returns
    -------
    mean : ndarray
        (N, m) conditional means.
    cov : ndarray
        (N, m, m) conditional covariances.
    """
    G, p1 = m_mu.shape
    Sw = np.broadcast_to(Sigma_W, (G, p1, p1))
    Cew = np.broadcast_to(cov_eta_w, (G, *np.shape(cov_eta_w)[-2:]))[cluster_index]
    Se = np.broadcast_to(Sigma_eta, (G, *np.shape(Sigma_eta)[-2:]))[cluster_index]
    observed = ~np.isnan(y)
    M = _padded_inverses(observed, Sw, cluster_index) if inverses is None else inverses
    K = Cew @ M  # (N, m, p1), zero columns at missing cells
    mean = np.einsum("imp,ip->im", K, np.where(observed, y, 0.0) - m_mu[cluster_index])
    cov = Se - K @ np.swapaxes(Cew, -1, -2) + K @ R[cluster_index] @ np.swapaxes(K, -1, -2)
    return mean, (cov + np.swapaxes(cov, -1, -2)) / 2


def within_scores(fit: MSEMFit) -> Any:
    """Per-student posterior means and SDs of the within-level latent variables.

    Each draw's exact Gaussian conditional (given the student's values, the cluster's data
    through its latent means and, with random slopes, the cluster's drawn slopes) is averaged
    over the posterior draws; the SD is the law of total variance (mean conditional variance
    plus the variance of the conditional means across draws).

    Parameters
    ----------
    fit
        A fitted model. Missing cells are allowed: each student is scored from its observed
        cells, and the cluster's latent means from all of the cluster's observed cells, level-2
        values included (integrated out where missing). Where random slopes depend on
        between-level variables, each draw conditions on the clusters' drawn slopes.

    Returns
    -------
    xarray.Dataset
        ``mean`` and ``sd``, dims ``(student, latent)``; ``student`` is the row's position in the
        data the model was given, with a ``cluster`` coordinate.

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).
    """
    import xarray as xr

    from pymsem.compile.marginal import sufficient_statistics
    from pymsem.results.ordinal import SCORES_INSTEAD, SCORES_WHY, refuse_ordinal

    refuse_ordinal(fit.structure, "fit.within_scores()", SCORES_WHY, SCORES_INSTEAD)
    from pymsem.effects.scores import between_prior, cluster_vector_posterior

    st = fit.structure
    data = fit.compiled.data
    y = data.frame[st.level1].to_numpy(float)
    missing = bool(np.isnan(y).any())
    level2 = (
        np.column_stack([data.cluster_values(c) for c in st.level2])
        if st.level2
        else np.zeros((data.n_clusters, 0))
    )
    n, idx = data.sizes.astype(float), data.cluster_index
    vals = fit.parameter_draws()
    W = level_matrices(st.within, vals)
    B = level_matrices(st.between, vals)
    ls = st.within
    u = s_cov = None
    if st.random_slopes:
        u, s_cov = total_slope_deviations(st, fit.posterior), slope_covariance(st, fit.posterior)
    # Where the cluster means' prior depends on the slopes, or level-2 cells are missing, the
    # per-cluster kernel gives the means' posterior; elsewhere the closed forms below do.
    kernel = (
        bool(np.isnan(level2).any())
        or st.slopes_in_between_model
        or any(r.moderators for r in st.random_slopes)
    )
    z = None if missing or kernel else sufficient_statistics(st, data).cluster_vectors
    if kernel:
        _, _, _, V, mean_z = between_prior(st, vals, u, s_cov, data.n_clusters)
    batch = W.Lambda.shape[:-2]
    flat = int(np.prod(batch))
    m = ls.n_lat
    p1 = len(st.level1)
    acc_mean = np.zeros((len(y), m))
    acc_sq = np.zeros((len(y), m))
    acc_var = np.zeros((len(y), m))

    def at(a: np.ndarray, s: int) -> np.ndarray:
        return a.reshape(flat, *a.shape[len(batch) :])[s]

    for s in range(flat):
        Lam, Psi, Th = at(W.Lambda, s), at(W.Psi, s), at(W.Theta, s)
        if u is None:
            Se = at(W.Sigma_eta, s)
        else:
            # The cluster's slopes change its within B, hence its latent and observed covariances.
            Bg = np.broadcast_to(at(W.B, s), (len(n), m, m)).copy()
            Bg[:, ls.beta_random[:, 0], ls.beta_random[:, 1]] += at(u, s)[:, ls.beta_random[:, 2]]
            Ag = np.linalg.inv(np.eye(m) - Bg)
            Se = Ag @ Psi @ np.swapaxes(Ag, -1, -2)
        Cew = Se @ Lam.T
        Sw = Lam @ Cew + Th
        if kernel:
            Swg = Sw if Sw.ndim == 3 else Sw[None]
            zhat, zcov = cluster_vector_posterior(st, data, Swg, at(V, s), at(mean_z, s))
            mean, cov = within_given_cluster_means(y, idx, zhat[:, :p1], zcov[:, :p1, :p1], Sw, Cew, Se)
        elif z is None:
            mean, cov = within_conditional_missing(y, idx, level2, at(B.nu, s), at(B.Sigma, s), Sw, Cew, Se)
        else:
            mean, cov = within_conditional(y, idx, z, n, at(B.nu, s), at(B.Sigma, s), Sw, Cew, Se)
            cov = cov[idx]
        acc_mean += mean
        acc_sq += mean**2
        acc_var += np.diagonal(cov, axis1=-2, axis2=-1)
    post_mean = acc_mean / flat
    var_of_means = np.clip(acc_sq / flat - post_mean**2, 0, None)
    sd = np.sqrt(acc_var / flat + var_of_means)
    rows = data.source_rows if data.source_rows is not None else np.arange(len(y))
    coords = {
        "student": np.asarray(rows),
        "latent": list(ls.latent),
        "cluster": ("student", [str(c) for c in np.asarray(data.cluster_ids)[idx]]),
    }
    return xr.Dataset(
        {"mean": (("student", "latent"), post_mean), "sd": (("student", "latent"), sd)}, coords=coords
    )
