"""Between-level latent scores from their exact conditional distributions, per posterior draw.

The collapsed likelihood integrates the latent variables out; they are not lost. Given a
posterior draw (and, with random slopes, the clusters' slopes), each cluster's between-level
latent vector is Gaussian given its data:

    eta_B,g | z_g ~ N(K_g (z_g - nu), Sigma_eta - K_g Lambda_B Sigma_eta),
    K_g = Sigma_eta Lambda_B' V_g^-1,  V_g = Sigma_B + E Sigma_W,g E' / n_g,

where ``z_g`` stacks the cluster's observed means and level-2 values. Drawing from it for every
posterior draw gives draws from the joint posterior of the scores (cluster means of level-1
variables, between factors, level-2 latents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pymsem.compile.matrices import level_matrices
from pymsem.compile.slopes import slope_deviations

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["between_scores"]


def between_scores(fit: MSEMFit, draw: bool = True, seed: int | None = None) -> Any:
    """Between-level latent scores per cluster: draws (or conditional means) over (chain, draw, cluster).

    Parameters
    ----------
    fit
        A fitted model without cross-level moderators.
    draw
        Draw from the conditional distribution (default); ``False`` returns conditional means.
    seed
        Seed for those draws.
    """
    import xarray as xr

    from pymsem.compile.marginal import sufficient_statistics

    st = fit.structure
    if any(r.moderators for r in st.random_slopes) or st.slopes_in_between_model:
        raise NotImplementedError(
            "latent_scores() does not yet handle random slopes regressed on between-level variables, "
            "predicting them, or covarying with their disturbances."
        )
    data = fit.compiled.data
    stats = sufficient_statistics(st, data)
    z = stats.cluster_vectors  # (G, pb)
    n = data.sizes.astype(float)
    vals = fit.parameter_draws()
    W = level_matrices(st.within, vals)
    B = level_matrices(st.between, vals)
    p1 = stats.p1
    if st.random_slopes:
        ls = st.within
        u = slope_deviations(st, fit.posterior)  # (c, d, G, k)
        Bg = np.broadcast_to(W.B[..., None, :, :], (*u.shape[:3], ls.n_lat, ls.n_lat)).copy()
        Bg[..., ls.beta_random[:, 0], ls.beta_random[:, 1]] += u[..., ls.beta_random[:, 2]]
        Ag = np.linalg.inv(np.eye(ls.n_lat) - Bg)
        Sw = W.Lambda[..., None, :, :] @ Ag @ W.Psi[..., None, :, :] @ np.swapaxes(Ag, -1, -2)
        Sw = Sw @ np.swapaxes(W.Lambda, -1, -2)[..., None, :, :] + W.Theta[..., None, :, :]
    else:
        Sw = np.broadcast_to(W.Sigma[..., None, :, :], (*W.Sigma.shape[:-2], len(n), p1, p1))
    V = np.broadcast_to(B.Sigma[..., None, :, :], (*Sw.shape[:-2], stats.pb, stats.pb)).copy()
    V[..., :p1, :p1] += Sw / n[:, None, None]
    cov_eta_z = B.Sigma_eta @ np.swapaxes(B.Lambda, -1, -2)  # (c, d, m, pb)
    K = np.swapaxes(
        np.linalg.solve(V, np.swapaxes(cov_eta_z, -1, -2)[..., None, :, :]), -1, -2
    )  # (c,d,G,m,pb)
    d = z - B.nu[..., None, :]  # (c, d, G, pb)
    mean = (K @ d[..., None])[..., 0]
    if draw:
        C = B.Sigma_eta[..., None, :, :] - K @ cov_eta_z[..., None, :, :].swapaxes(-1, -2)
        C = (C + np.swapaxes(C, -1, -2)) / 2
        w, Q = np.linalg.eigh(C)
        root = Q * np.sqrt(np.clip(w, 0, None))[..., None, :]
        rng = np.random.default_rng(seed)
        mean = mean + (root @ rng.standard_normal(mean.shape)[..., None])[..., 0]
    names = st.between.latent
    cluster = [str(c) for c in data.cluster_ids]
    return xr.Dataset(
        {name: (("chain", "draw", "cluster"), mean[..., j]) for j, name in enumerate(names)},
        coords={"cluster": cluster},
    )
