"""Model comparison by leave-one-cluster-out cross-validation (PSIS-LOO) and WAIC.

**The unit of prediction is a whole cluster.** The pointwise log-likelihood has
one value per cluster and posterior draw: the log density of *all* the
cluster's observed values (every student, every level-2 value) with every
latent variable of the cluster integrated out,

    log p(y_g | theta) = log integral p(y_g | z_g, u_g, theta) p(z_g, u_g | theta) d(z_g, u_g),

so LOO estimates how well the model predicts a *new school* (leave one cluster
out), not a new student of a school already seen.  This is the question a
two-level model answers about its between-level structure, and the only one the
collapsed likelihood can answer without refitting: a student-level LOO would
have to condition on the rest of the student's school.  Numbers are therefore
on the scale of clusters (``n_data_points`` is the number of clusters), and
models compared must describe the same clusters and the same variables.

Without random slopes the integral is Gaussian and exact
(:func:`pymsem.compile.missing.missing_logp`, which handles missing cells).
With random slopes it is not: given the cluster's slopes ``u_g`` the rest is
again Gaussian, and the slopes are integrated out against their population
distribution ``N(0, T(theta))`` by importance sampling::

    log p(y_g | theta) ~= logsumexp_k [log p(y_g | theta, u_k) + log N(u_k | 0, T) - log q_g(u_k)] - log K.

When the slopes depend on between-level variables (cross-level moderation, slopes
predicting level-2 outcomes or covarying with their disturbances), ``u_g`` is the whole
deviation of the cluster's slopes from their means and ``T`` its marginal covariance
``C_ss``; given ``u_g`` the cluster's between latents are ``N(K u_g, Sigma_ee - K C_se)``
(``K = C_es C_ss^-1``, :mod:`pymsem.compile.random_effects`), so the rest is again Gaussian
and integrates out exactly, moderators included.

The slopes the sampler drew for cluster ``g`` are *not* conditioned on: that
would predict the cluster's data from its own fitted slopes, not a new cluster,
and gives unstable importance ratios.  They only shape the proposal ``q_g``: a
defensive mixture of ``N(0, T)`` (20% of the points, which bounds the weights)
and a normal at the cluster's posterior slope moments (80%).  Drawing everything
from ``N(0, T)`` is unbiased too, but with 20 students per school the data pin
a school's slopes down to a fraction of ``T`` and most points are wasted: on
tutorial Model 3 (150 x 20) 256 population draws left some schools with an
ESS of 3 and errors up to 1.2 in their log-likelihood, against 0.01 with the
mixture.  The points are randomized quasi-Monte Carlo (scrambled Halton) and the
same for every posterior draw, so the estimate is smooth in the parameters, as
PSIS needs; the price is that a point set's small error is the same in every
draw and shifts the total elpd: on Model 3 by about 0.2 with 256 points, 1 with
128 and 2 with 64 (independent pseudo-random points shifted it by up to 19).
Model 3's 1,200 draws take about 2.5 minutes with 256 points on two cores
(``thin`` and ``slope_draws`` trade accuracy for time).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from pymsem.compile.reproducible import ieee_numba

if TYPE_CHECKING:
    from pymsem.compile.missing import PatternStatistics
    from pymsem.compile.structure import ModelStructure
    from pymsem.results.fit import MSEMFit
    from pymsem.specification.data import ClusteredData

__all__ = [
    "DEFAULT_SLOPE_DRAWS",
    "LooWarning",
    "WAICData",
    "cluster_loglik",
    "compare",
    "ic_statistics",
    "log_likelihood_tree",
    "loglik_draws",
    "loo",
    "waic",
]

#: Importance samples of each cluster's random slopes per posterior draw.
DEFAULT_SLOPE_DRAWS = 256
#: Share of them drawn from the slopes' population distribution (the rest near the cluster's slopes).
DEFAULT_PRIOR_SHARE = 0.2
#: Factor on the posterior covariance of a cluster's slopes in the proposal (wider than the target).
_PROPOSAL_INFLATION = 1.5
#: Pseudo-clusters (slope samples x clusters) evaluated by one call of the compiled function.
_CHUNK_CLUSTERS = 2048
#: Importance-sampling ESS of the slopes below which a cluster's value is flagged as noisy.
_MIN_SLOPE_ESS = 10.0
#: WAIC's per-cluster variance of the log-likelihood above which WAIC is unreliable (Vehtari et al. 2017).
_WAIC_MAX_VAR = 0.4


class LooWarning(UserWarning):
    """Pareto k, WAIC or slope-sampling diagnostics say an estimate may be unreliable."""


# ----------------------------------------------------------------------- the function
def _replicate(ps: PatternStatistics, r: int) -> PatternStatistics:
    """``r`` copies of the data's pattern statistics: pseudo-cluster ``k * G + g`` is cluster ``g``."""
    from pymsem.compile.missing import PatternStatistics

    G, P = ps.n_clusters, ps.n_pairs
    rep = np.repeat(np.arange(r), P)
    return PatternStatistics(
        n_clusters=r * G,
        p1=ps.p1,
        patterns=ps.patterns,
        pair_cluster=np.tile(ps.pair_cluster, r) + rep * G,
        pair_pattern=np.tile(ps.pair_pattern, r),
        pair_n=np.tile(ps.pair_n, r),
        pair_mean=np.tile(ps.pair_mean, (r, 1)),
        scatter_pairs=np.tile(ps.scatter_pairs, r) + np.repeat(np.arange(r), len(ps.scatter_pairs)) * P,
        pair_scatter=np.tile(ps.pair_scatter, (r, 1, 1)),
        level2=np.tile(ps.level2, (r, 1)),
        level2_mask=np.tile(ps.level2_mask, (r, 1)),
    )


def _conditioned(structure: ModelStructure) -> bool:
    """Whether the slopes and the between latents are dependent (moderators, slopes in the between model).

    Then each cluster's between moments are taken given its slopes (as
    :func:`pymsem.compile.random_effects.conditioned_random_slope_logp` does), and the slopes
    are integrated out against their marginal distribution ``N(0, C_ss)``.
    """
    return structure.slopes_in_between_model or any(r.moderators for r in structure.random_slopes)


def _compiled_function(
    structure: ModelStructure, data: ClusteredData, reps: int, mode: str | None = None
) -> Callable[..., np.ndarray]:
    """One PyTensor function: parameter vectors (by group), and slope deviations if any -> (reps*G,).

    Without random slopes ``reps`` is 1 and the value is exact. With random slopes the
    function takes ``u`` shaped ``(reps * G, k)`` and returns each pseudo-cluster's
    log-likelihood given those slopes (the data of cluster ``g`` repeated ``reps`` times).
    Where the slopes depend on between variables (:func:`_conditioned`) it also takes their
    residual covariance ``T`` (k, k) after ``u``, and ``u`` is the slopes' whole deviation.
    ``mode`` is PyTensor's (default: its default backend, numba, which compiles in seconds
    and then evaluates fast).
    """
    import pytensor
    import pytensor.tensor as pt

    from pymsem.compile import marginal as mg
    from pymsem.compile.matrices import level_matrices, pytensor_ops
    from pymsem.compile.missing import (
        missing_logp,
        padded_inverse,
        pattern_statistics,
        woodbury_padded_inverse,
    )

    syms = {name: pt.vector(name) for name in structure.groups}
    W = level_matrices(structure.within, syms, pytensor_ops())
    B = level_matrices(structure.between, syms, pytensor_ops())
    ps = pattern_statistics(structure, data)
    l2 = list(range(len(structure.level2)))
    inputs = list(syms.values())
    if not structure.random_slopes:
        # As MarginalLikelihood._add_missing: one padded inverse per missingness pattern.
        if mg.within_woodbury_applies(structure):
            Sinv, logdet_psi = mg._cluster_precisions(structure, W, pt.zeros((1, 0)), 1)
            Rinv, ld = woodbury_padded_inverse(pt.diagonal(W.Theta), W.Lambda, Sinv, logdet_psi, ps.patterns)
        else:
            Rinv, ld = padded_inverse(W.Sigma[None], ps.patterns)
        ll, _ = missing_logp(ps, Rinv, ld, B.Sigma, B.nu, l2, per_pattern=True)
    else:
        psr = _replicate(ps, reps)
        u = pt.matrix("u")
        inputs.append(u)
        V, mean = B.Sigma, B.nu
        if _conditioned(structure):
            from pymsem.compile.linalg import cholesky, solve_lower
            from pymsem.compile.random_effects import augmented_between

            # Given its slopes s_g, a cluster's between latents are N(K s_g, Sigma_ee - K C_se),
            # K = C_es C_ss^-1, which moves its cluster vector's mean and shrinks its covariance.
            T = pt.matrix("T")
            inputs.append(T)
            Sigma, _ = augmented_between(structure, B, syms, T)
            mb = structure.between.n_lat
            Ls = cholesky(Sigma[mb:, mb:])
            Kt = solve_lower(Ls, Sigma[mb:, :mb])  # (k, mb)
            z = solve_lower(Ls, u.T).T  # whitened slopes: K s_g = Kt' z_g
            V = pt.dot(pt.dot(B.Lambda, Sigma[:mb, :mb] - pt.dot(Kt.T, Kt)), B.Lambda.T) + B.Theta
            mean = B.nu[None, :] + pt.dot(pt.dot(z, Kt), B.Lambda.T)
        Wg = (
            None
            if mg.within_woodbury_applies(structure)
            else mg._cluster_within_cov(structure, W, u, psr.n_clusters)
        )
        Rinv, ld = mg.within_inverses(structure, W, psr, Wg=Wg, u=u)
        ll, _ = missing_logp(psr, Rinv, ld, V, mean, l2)
    with ieee_numba():
        fn = pytensor.function(inputs, ll, on_unused_input="ignore", mode=mode)
    return functools.partial(_quietly, fn)


def _quietly(fn: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    """``fn(*args)`` without numba's notice that it cannot cache ``fn`` on disk.

    The function holds this fit's (replicated) pattern statistics as constants, so numba, which
    compiles it at its first call, cannot cache it and says so in a NumbaWarning; it is kept for
    the fit in memory instead (``fit.cluster_loglik``'s cache), which is all that is needed.
    """
    from numba.core.errors import NumbaWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
        return fn(*args)


def _slope_points(k: int, n: int, seed: int) -> np.ndarray:
    """``n`` standard normal points in ``k`` dimensions, randomized quasi-Monte Carlo (scrambled Halton)."""
    from scipy import stats
    from scipy.stats import qmc

    p = qmc.Halton(d=k, scramble=True, seed=seed).random(n)
    return stats.norm.ppf(np.clip(p, 1e-12, 1 - 1e-12))


def _function(
    structure: ModelStructure, data: ClusteredData, reps: int, functions: dict | None
) -> Callable[..., np.ndarray]:
    if functions is None:
        return _compiled_function(structure, data, reps)
    if reps not in functions:
        functions[reps] = _compiled_function(structure, data, reps)
    return functions[reps]


def _mvn_logpdf(u: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """``log N(u | mean, L L')`` for ``u`` (..., k) with ``mean``/``chol`` broadcasting (..., k) / (..., k, k)."""
    k = u.shape[-1]
    d = np.broadcast_to(u - mean, np.broadcast_shapes(u.shape, chol.shape[:-1]))
    w = np.linalg.solve(np.broadcast_to(chol, (*d.shape, k)), d[..., None])[..., 0]
    logdet = np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    return -0.5 * (np.sum(w**2, -1) + k * np.log(2 * np.pi)) - logdet


def loglik_draws(
    structure: ModelStructure,
    data: ClusteredData,
    params: Mapping[str, np.ndarray],
    slope_cov: np.ndarray | None = None,
    slope_draws: int = DEFAULT_SLOPE_DRAWS,
    seed: int = 0,
    proposal: tuple[np.ndarray, np.ndarray] | None = None,
    prior_share: float = DEFAULT_PRIOR_SHARE,
    return_ess: bool = False,
    functions: dict[int, Callable[..., np.ndarray]] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Each cluster's log-likelihood, every latent variable integrated out, for given parameter draws.

    The engine of :func:`cluster_loglik`, usable without a fit (tests, simulations).

    Parameters
    ----------
    structure, data
        The lowered model and its data.
    params
        Free-parameter vectors by group name, shaped ``(chain, draw, n)`` (as
        ``MSEMFit.parameter_draws()``).
    slope_cov
        With random slopes: the covariance ``T`` of the slope deviations per draw,
        ``(chain, draw, k, k)`` (the residual covariance where slopes are regressed on
        between variables).
    slope_draws
        Importance samples of the slopes per draw and cluster (random slopes only).
    seed
        Seed of the quasi-random slope points.
    proposal
        Optional per-cluster Gaussian ``(mean (G, k), cov (G, k, k))`` where the cluster's
        slopes are likely (e.g. their posterior moments). The slopes are then drawn from the
        defensive mixture ``prior_share N(0, T) + (1 - prior_share) N(mean_g, cov_g)``
        (deterministic allocation, mixture density in the weights), which estimates the same
        integral with far fewer samples when a cluster's data pin its slopes down. Without
        it every sample comes from ``N(0, T)``.
    prior_share
        Share of the samples drawn from ``N(0, T)`` when a proposal is given; it bounds the
        importance weights by ``1 / prior_share`` times the likelihood.
    return_ess
        Also return the importance-sampling effective sample size of the slopes,
        ``(chain, draw, cluster)`` (``nan`` without random slopes).
    functions
        A dict in which the compiled functions are kept for later calls (compiling
        costs seconds; :func:`cluster_loglik` keeps one per fit).

    Returns
    -------
    numpy.ndarray
        ``(chain, draw, cluster)`` log-likelihoods (and the ESS with ``return_ess``).
    """
    from scipy.special import logsumexp

    names = list(structure.groups)
    first = np.asarray(params[names[0]])
    batch = first.shape[:-1]
    flat = {n: np.asarray(params[n], dtype=float).reshape(-1, len(structure.groups[n])) for n in names}
    S = int(np.prod(batch))
    G = data.n_clusters
    out = np.empty((S, G))
    ess = np.full((S, G), np.nan)
    if not structure.random_slopes:
        f = _function(structure, data, 1, functions)
        for s in range(S):
            out[s] = f(*[flat[n][s] for n in names])
        out = out.reshape(*batch, G)
        return (out, ess.reshape(*batch, G)) if return_ess else out
    if slope_cov is None:
        raise ValueError("The model has random slopes: pass slope_cov (chain, draw, k, k).")
    if int(slope_draws) != slope_draws or slope_draws < 1:
        raise ValueError(f"slope_draws must be a positive integer, got {slope_draws!r}.")
    if not 0 < prior_share <= 1:
        raise ValueError(f"prior_share must be in (0, 1], got {prior_share!r}.")
    K, k = int(slope_draws), len(structure.random_slopes)
    cov = np.asarray(slope_cov, dtype=float).reshape(S, k, k)
    n0 = K if proposal is None else min(K, max(1, round(prior_share * K)))
    z0 = _slope_points(k, n0, seed)  # scaled by each draw's T
    u1 = np.zeros((0, G, k))
    if n0 < K:
        m, C = (np.asarray(a, dtype=float) for a in proposal)
        Lq = np.linalg.cholesky(C)  # (G, k, k)
        # The proposal does not depend on the draw: the same points for every draw keep the
        # estimate smooth in the parameters (common random numbers), which PSIS needs.
        u1 = m[None] + np.einsum("gij,nj->ngi", Lq, _slope_points(k, K - n0, seed + 1))  # (K - n0, G, k)
        log_q1 = _mvn_logpdf(u1, m[None], Lq[None])  # (K - n0, G)
    # Equal chunks of at most _CHUNK_CLUSTERS pseudo-clusters (slope samples x clusters), little padding.
    n_chunks = -(-K // max(1, _CHUNK_CLUSTERS // G))
    reps = -(-K // n_chunks)
    f = _function(structure, data, reps, functions)
    conditioned = _conditioned(structure)
    for s in range(S):
        args = [flat[n][s] for n in names]
        if conditioned:
            from pymsem.compile.matrices import level_matrices
            from pymsem.compile.random_effects import augmented_between

            # The population of a cluster's slopes is their marginal N(0, C_ss), moderators included.
            vals = {n: flat[n][s] for n in names}
            Sigma, _ = augmented_between(structure, level_matrices(structure.between, vals), vals, cov[s])
            mb = structure.between.n_lat
            L = np.linalg.cholesky(Sigma[mb:, mb:])
        else:
            L = np.linalg.cholesky(cov[s])
        u0 = np.broadcast_to((z0 @ L.T)[:, None, :], (n0, G, k))
        u = np.concatenate([u0, u1])  # (K, G, k)
        upad = np.zeros((n_chunks * reps, G, k))
        upad[:K] = u
        extra = [cov[s]] if conditioned else []  # T, after the slopes
        ll = np.concatenate(
            [
                f(*args, upad[c * reps : (c + 1) * reps].reshape(-1, k), *extra).reshape(reps, G)
                for c in range(n_chunks)
            ]
        )[:K]
        if n0 < K:
            log_p = _mvn_logpdf(u, np.zeros(k), L)  # (K, G): the slopes' population density
            # Balance heuristic: every point is weighted by the whole mixture's density.
            log_q1_all = np.concatenate([_mvn_logpdf(u0, m[None], Lq[None]), log_q1])
            log_q = np.logaddexp(np.log(n0 / K) + log_p, np.log1p(-n0 / K) + log_q1_all)
            ll = ll + log_p - log_q
        lse = logsumexp(ll, axis=0)
        out[s] = lse - np.log(K)
        ess[s] = np.exp(2 * lse - logsumexp(2 * ll, axis=0))
    out = out.reshape(*batch, G)
    return (out, ess.reshape(*batch, G)) if return_ess else out


# ---------------------------------------------------------------------- on a fit
def _thinned(fit: MSEMFit, thin: int) -> tuple[Any, dict[str, np.ndarray]]:
    if int(thin) != thin or thin < 1:
        raise ValueError(f"thin must be a positive integer, got {thin!r}.")
    post = fit.posterior.isel(draw=slice(None, None, int(thin)))
    return post, {n: np.asarray(post[n].values, dtype=float) for n in fit.structure.groups}


def cluster_loglik(
    fit: MSEMFit,
    thin: int = 1,
    slope_draws: int = DEFAULT_SLOPE_DRAWS,
    seed: int = 0,
    slope_proposal: str = "posterior",
) -> Any:
    """The pointwise log-likelihood for leave-one-cluster-out LOO and WAIC: one value per cluster.

    For every (thinned) posterior draw, the log density of all of a cluster's observed
    values with every latent variable of the cluster integrated out: latent cluster
    means, factors and residuals exactly; random slopes by importance sampling (see the
    module docstring). The unit of prediction is a whole cluster (a new school), not a
    student.

    Parameters
    ----------
    fit
        A fitted model.
    thin
        Keep every ``thin``-th draw of each chain.
    slope_draws
        Importance samples of the slopes per draw and cluster (random slopes only); the
        estimate's error in a cluster's log-likelihood is of order ``1 / sqrt(ESS)``.
    seed
        Seed of the quasi-random slope points (fixed: repeated calls agree).
    slope_proposal
        ``"posterior"``: a defensive mixture, 20% of the samples from the slopes'
        population distribution ``N(0, T)`` of the draw and 80% from a normal with the
        cluster's posterior slope mean and 1.5 times their posterior covariance;
        ``"prior"``: all from ``N(0, T)`` (needs many more samples when clusters are large).
        Both estimate the same integral; the proposal only decides where to look.

    Returns
    -------
    xarray.DataArray
        ``loglik`` with dims (chain, draw, cluster), cluster ids as coordinates. Attribute
        ``slope_min_ess``: the smallest importance-sampling ESS of any cluster (its median
        over draws), with random slopes.

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).

    Warns
    -----
    LooWarning
        When some cluster's slope integral rests on fewer than 10 effective samples:
        raise ``slope_draws``.
    """
    import xarray as xr

    from pymsem.results.ordinal import LOO_INSTEAD, LOO_WHY, refuse_ordinal

    refuse_ordinal(fit.structure, "fit.cluster_loglik() (and LOO, WAIC)", LOO_WHY, LOO_INSTEAD)
    cache = fit.__dict__.setdefault("_cluster_loglik", {})
    if slope_proposal not in ("posterior", "prior"):
        raise ValueError(f"slope_proposal must be 'posterior' or 'prior', got {slope_proposal!r}.")
    rs = bool(fit.structure.random_slopes)
    key = (int(thin), int(slope_draws) if rs else 0, int(seed), slope_proposal if rs else "")
    if key in cache:
        return cache[key]
    post, params = _thinned(fit, thin)
    slope_cov = proposal = None
    if rs:
        from pymsem.compile.slopes import slope_covariance, total_slope_deviations

        slope_cov = slope_covariance(fit.structure, post)
        if slope_proposal == "posterior" and ("slope_raw" in fit.posterior or "slope" in fit.posterior):
            # Moments over all draws (not only the thinned ones): the proposal only places samples.
            U = total_slope_deviations(fit.structure, fit.posterior)
            U = U.reshape(-1, *U.shape[-2:])  # (samples, cluster, slope)
            m = U.mean(0)
            C = np.einsum("sgi,sgj->gij", U - m, U - m) / max(len(U) - 1, 1)
            C += 1e-10 * np.eye(C.shape[-1])
            proposal = (m, _PROPOSAL_INFLATION * C)
    ll, ess = loglik_draws(
        fit.structure,
        fit.compiled.data,
        params,
        slope_cov,
        slope_draws,
        seed,
        proposal=proposal,
        return_ess=True,
        functions=fit.__dict__.setdefault("_loglik_functions", {}),
    )
    ids = [str(c) for c in fit.compiled.data.cluster_ids]
    da = xr.DataArray(
        ll,
        dims=("chain", "draw", "cluster"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values, "cluster": ids},
        name="loglik",
        attrs={"unit": "cluster (leave-one-cluster-out)", "thin": int(thin)},
    )
    if fit.structure.random_slopes:
        med = np.median(ess.reshape(-1, ess.shape[-1]), axis=0)
        da.attrs.update(slope_draws=int(slope_draws), slope_min_ess=float(med.min()))
        low = np.flatnonzero(med < _MIN_SLOPE_ESS)
        if len(low):
            names = ", ".join(ids[i] for i in low[:8]) + (" ..." if len(low) > 8 else "")
            warnings.warn(
                f"The random slopes of {len(low)} cluster(s) ({names}) were integrated out with fewer "
                f"than {_MIN_SLOPE_ESS:.0f} effective importance samples (median over draws; smallest "
                f"{med.min():.1f} of {slope_draws}): their log-likelihoods are noisy. Raise slope_draws.",
                LooWarning,
                stacklevel=2,
            )
    cache[key] = da
    return da


def log_likelihood_tree(fit: MSEMFit, **kwargs: Any) -> Any:
    """A DataTree with the (thinned) parameters as ``posterior`` and :func:`cluster_loglik` as ``log_likelihood``.

    What ``arviz_stats.loo`` and ``arviz_stats.compare`` take; ``kwargs`` go to
    :func:`cluster_loglik`.
    """
    import xarray as xr

    da = cluster_loglik(fit, **kwargs)
    post, _ = _thinned(fit, da.attrs["thin"])
    # Only the free parameters: ArviZ's relative efficiency averages the ESS over every variable.
    return xr.DataTree.from_dict(
        {"posterior": post[list(fit.structure.groups)], "log_likelihood": xr.Dataset({da.name: da})}
    )


def _warn_pareto(result: Any, label: str) -> None:
    k = np.asarray(result.pareto_k.values)
    ids = [str(c) for c in result.pareto_k["cluster"].values]
    bad = np.flatnonzero(k > result.good_k)
    if len(bad):
        worst = bad[np.argsort(-k[bad])]
        shown = ", ".join(f"{ids[i]} (k={k[i]:.2f})" for i in worst[:8]) + (" ..." if len(bad) > 8 else "")
        warnings.warn(
            f"{label}: Pareto k above {result.good_k:.2f} for {len(bad)} of {len(k)} cluster(s): {shown}. "
            f"Leaving these clusters out changes the posterior too much for importance sampling; their "
            f"elpd (and the total) is unreliable. Refit without them (exact LOO for those clusters) or "
            f"use K-fold cross-validation by clusters; more draws help only when k is near the threshold.",
            LooWarning,
            stacklevel=3,
        )


def loo(fit: MSEMFit, pointwise: bool = False, **kwargs: Any) -> Any:
    """Leave-one-cluster-out PSIS-LOO (``arviz_stats.loo`` on :func:`cluster_loglik`).

    Parameters
    ----------
    fit
        A fitted model.
    pointwise
        Keep each cluster's elpd and Pareto k (``elpd_i``, ``pareto_k`` with a ``cluster`` dim).
    **kwargs
        ``thin``, ``slope_draws``, ``seed``, ``slope_proposal`` of :func:`cluster_loglik`.

    Returns
    -------
    arviz_stats.ELPDDataLOO
        ``elpd`` (expected log predictive density of a new cluster, summed over clusters),
        ``se``, ``p`` (effective number of parameters), ``n_data_points`` (clusters).

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).

    Warns
    -----
    LooWarning
        Naming the clusters whose Pareto k exceeds ArviZ's threshold.
    """
    from arviz_stats import loo as az_loo

    from pymsem.results.ordinal import LOO_INSTEAD, LOO_WHY, refuse_ordinal

    refuse_ordinal(fit.structure, "fit.loo()", LOO_WHY, LOO_INSTEAD)
    tree = log_likelihood_tree(fit, **kwargs)
    with warnings.catch_warnings():
        # Our own warning names the clusters; ArviZ's generic one would repeat it without them.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        res = az_loo(tree, pointwise=True)
    _warn_pareto(res, "LOO")
    if not pointwise:
        res.elpd_i = None
        res.pareto_k = None
    return res


@dataclass(kw_only=True, repr=False)
class WAICData:
    """WAIC results on the cluster log-likelihood (ArviZ 1.x has no WAIC).

    Attributes as ``arviz_stats.ELPDData`` (``elpd``, ``se``, ``p``, ``n_samples``,
    ``n_data_points``, ``scale``, ``warning``, ``elpd_i``), ``kind`` ``"waic"``;
    ``p_i`` holds each cluster's contribution to ``p``.
    """

    elpd: float
    se: float
    p: float
    n_samples: int
    n_data_points: int
    scale: str = "log"
    warning: bool = False
    good_k: float | None = None
    elpd_i: Any = None
    pareto_k: Any = None
    p_i: Any = None

    kind: ClassVar[str] = "waic"

    def __str__(self) -> str:
        return (
            f"Computed from {self.n_samples} posterior samples and {self.n_data_points} clusters.\n\n"
            f"           Estimate       SE\nelpd_waic  {self.elpd:8.2f}  {self.se:7.2f}\n"
            f"p_waic     {self.p:8.2f}        -"
            + ("\n\nSome clusters' log-likelihood variance exceeds 0.4: prefer LOO." if self.warning else "")
        )

    def __repr__(self) -> str:
        return self.__str__()

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@functools.cache
def _elpd_waic_class() -> type:
    """An ``arviz_stats.ELPDData`` subclass of kind ``"waic"`` (built on first use: arviz imports lazily)."""
    from arviz_stats import ELPDData

    return type("ELPDDataWAIC", (ELPDData,), {"_kind": "waic", "__module__": __name__})


def _as_elpd_data(w: WAICData) -> Any:
    """The WAIC result as an ``arviz_stats.ELPDData`` of kind ``"waic"``, which ``compare`` accepts."""
    return _elpd_waic_class()(
        elpd=w.elpd, se=w.se, p=w.p, n_samples=w.n_samples, n_data_points=w.n_data_points,
        scale="log", warning=w.warning, good_k=None, elpd_i=w.elpd_i, pareto_k=None,
    )  # fmt: skip


def waic(fit: MSEMFit, pointwise: bool = False, **kwargs: Any) -> WAICData:
    """WAIC with clusters as the unit (Watanabe 2010; Vehtari, Gelman and Gabry 2017).

    ``elpd_waic = sum_g [log mean_s p(y_g | theta_s) - var_s log p(y_g | theta_s)]`` with the
    sample variance (``ddof=1``, as the R package ``loo``). PSIS-LOO (:func:`loo`) is the
    better estimate of the same quantity and has a diagnostic; WAIC is given for reporting.

    Parameters
    ----------
    fit
        A fitted model.
    pointwise
        Keep ``elpd_i`` and ``p_i`` per cluster.
    **kwargs
        ``thin``, ``slope_draws``, ``seed``, ``slope_proposal`` of :func:`cluster_loglik`.

    Returns
    -------
    WAICData

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).

    Warns
    -----
    LooWarning
        When some cluster's log-likelihood variance exceeds 0.4.
    """
    from scipy.special import logsumexp

    from pymsem.results.ordinal import LOO_INSTEAD, LOO_WHY, refuse_ordinal

    refuse_ordinal(fit.structure, "fit.waic()", LOO_WHY, LOO_INSTEAD)
    da = cluster_loglik(fit, **kwargs)
    ll = da.stack(sample=("chain", "draw")).transpose("cluster", "sample")
    x = np.asarray(ll.values)
    S = x.shape[1]
    lppd = logsumexp(x, axis=1) - np.log(S)
    p_i = x.var(axis=1, ddof=1)
    e_i = lppd - p_i
    n = len(e_i)
    bad = int((p_i > _WAIC_MAX_VAR).sum())
    if bad:
        warnings.warn(
            f"WAIC: {bad} of {n} cluster(s) have a log-likelihood variance over the draws above "
            f"{_WAIC_MAX_VAR} (p_waic_i); WAIC is unreliable then. Use fit.loo().",
            LooWarning,
            stacklevel=2,
        )
    coords = {"cluster": da["cluster"].values}
    import xarray as xr

    return WAICData(
        elpd=float(e_i.sum()),
        se=float(np.sqrt(n * e_i.var(ddof=0))) if n > 1 else float("nan"),
        p=float(p_i.sum()),
        n_samples=S,
        n_data_points=n,
        warning=bool(bad),
        elpd_i=xr.DataArray(e_i, dims="cluster", coords=coords) if pointwise else None,
        p_i=xr.DataArray(p_i, dims="cluster", coords=coords) if pointwise else None,
    )


# ---------------------------------------------------------------------- comparison
def _short(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")


def _check_same_clusters(clusters: Mapping[str, list[str]]) -> None:
    """Leave-one-cluster-out elpds are comparable only over the same clusters, in the same order."""
    names = list(clusters)
    ref, rc = names[0], clusters[names[0]]
    for name in names[1:]:
        c = clusters[name]
        if c == rc:
            continue
        only_a, only_b = sorted(set(rc) - set(c)), sorted(set(c) - set(rc))
        detail = (
            f"{len(only_a)} cluster(s) only in {ref!r} ({_short(only_a)}), "
            f"{len(only_b)} only in {name!r} ({_short(only_b)})"
            if only_a or only_b
            else "the same ids in a different order"
        )
        raise ValueError(
            f"Models {ref!r} and {name!r} were fitted to different clusters: {detail}. Leave-one-cluster-out "
            f"elpd compares predictions of the same clusters: fit both models to the same data."
        )


def _check_same_variables(fits: Mapping[str, MSEMFit]) -> None:
    """Log predictive densities of different variables (or students) are not comparable."""
    names = list(fits)
    ref = names[0]

    def describe(f: MSEMFit) -> tuple[list[str], int]:
        return sorted(f.structure.level1 + f.structure.level2), f.compiled.data.n_obs

    rv, rn = describe(fits[ref])
    for name in names[1:]:
        v, n = describe(fits[name])
        if v != rv:
            raise ValueError(
                f"Models {ref!r} and {name!r} describe different variables ({ref!r} only: "
                f"{sorted(set(rv) - set(v))}; {name!r} only: {sorted(set(v) - set(rv))}). Their log "
                f"predictive densities are densities of different data and cannot be compared."
            )
        if n != rn:
            raise ValueError(
                f"Models {ref!r} and {name!r} were fitted to different numbers of students ({rn} vs {n}): "
                f"fit both models to the same data."
            )


def _refuse_ordinal_fits(fits: Mapping[str, MSEMFit], what: str) -> None:
    """Refuse, before any work, a comparison that includes a model with ordinal variables."""
    from pymsem.results.ordinal import LOO_INSTEAD, LOO_WHY, refuse_ordinal

    for name, f in fits.items():
        refuse_ordinal(f.structure, f"{what} of model {name!r}", LOO_WHY, LOO_INSTEAD)


def _is_fit(x: Any) -> bool:
    return hasattr(x, "structure") and hasattr(x, "compiled")


def _ic(fit: MSEMFit, ic: str, **kwargs: Any) -> Any:
    if ic == "loo":
        return loo(fit, pointwise=True, **kwargs)
    return _as_elpd_data(waic(fit, pointwise=True, **kwargs))


def compare(
    fits: Mapping[str, Any], ic: str = "loo", method: str = "stacking", **kwargs: Any
) -> pd.DataFrame:
    """Rank models by their expected log predictive density of a new cluster.

    Parameters
    ----------
    fits
        Fitted models by name, fitted to the same clusters and the same variables
        (a ``ValueError`` names any difference). A value may also be a precomputed
        pointwise result, ``fit.loo(pointwise=True)`` or ``fit.waic(pointwise=True)``.
    ic
        ``"loo"`` (leave-one-cluster-out PSIS-LOO, recommended) or ``"waic"``.
    method
        Model weights, as ``arviz_stats.compare``: ``"stacking"``, ``"BB-pseudo-BMA"``
        or ``"pseudo-BMA"``.
    **kwargs
        ``thin``, ``slope_draws``, ``seed``, ``slope_proposal`` of :func:`cluster_loglik`.

    Returns
    -------
    pandas.DataFrame
        ``arviz_stats.compare``'s table, best model first: ``rank``, ``elpd_diff`` (sum over
        clusters of the pointwise differences from the best model), ``dse``, ``p_worse``,
        ``diag_diff``, ``diag_elpd``, ``p``, ``elpd``, ``se``, ``weight``.

    Raises
    ------
    NotImplementedError
        When a fitted model has ordinal variables.

    Examples
    --------
    >>> ms.compare({"Model 2": fit2, "Model 3": fit3})  # doctest: +SKIP
    """
    from arviz_stats import compare as az_compare

    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', got {ic!r}.")
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise ValueError(
            "compare needs a dict of at least two models, e.g. {'Model 1': fit1, 'Model 2': fit2}."
        )
    fitted = {str(n): f for n, f in fits.items() if _is_fit(f)}
    _refuse_ordinal_fits(fitted, f"compare(ic={ic!r})")
    if len(fitted) > 1:
        _check_same_clusters({n: [str(c) for c in f.compiled.data.cluster_ids] for n, f in fitted.items()})
        _check_same_variables(fitted)
    ics: dict[str, Any] = {}
    for name, f in fits.items():
        if _is_fit(f):
            r = _ic(f, ic, **kwargs)
        elif isinstance(f, WAICData):
            r = _as_elpd_data(f)
        elif hasattr(f, "elpd_i"):
            r = f
        else:
            raise TypeError(
                f"{name!r}: expected a fitted model or fit.loo(pointwise=True), got {type(f).__name__}."
            )
        if r.elpd_i is None:
            raise ValueError(f"{name!r}: compare needs pointwise values: pass fit.loo(pointwise=True).")
        ics[str(name)] = r
    _check_same_clusters({n: [str(c) for c in r.elpd_i["cluster"].values] for n, r in ics.items()})
    with warnings.catch_warnings():
        # loo() already warned about high Pareto k, naming the clusters.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        return az_compare(ics, method=method, round_to="none")


def ic_statistics(fits: Mapping[str, MSEMFit], ic: str = "loo", **kwargs: Any) -> pd.DataFrame:
    """Model-level statistics for :func:`pymsem.compare_tables` (``statistics=``): one column per model.

    Rows for ``ic="loo"``: ``elpd_loo``, ``SE(elpd_loo)``, ``p_loo``, ``LOOIC`` (``-2 elpd``),
    ``Clusters``; for ``"waic"``: ``elpd_waic``, ``SE(elpd_waic)``, ``p_waic``, ``WAIC``,
    ``Clusters``. Values are on the scale of clusters (leave-one-cluster-out); ``kwargs``
    go to :func:`cluster_loglik`.

    Raises
    ------
    NotImplementedError
        When a model has ordinal variables.
    """
    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', got {ic!r}.")
    _refuse_ordinal_fits(
        {str(n): f for n, f in fits.items()}, f"statistics={ic!r} (leave-one-cluster-out {ic.upper()})"
    )
    if len(fits) > 1:
        _check_same_clusters({str(n): [str(c) for c in f.compiled.data.cluster_ids] for n, f in fits.items()})
        _check_same_variables(fits)
    cols = {}
    for name, f in fits.items():
        r = loo(f, **kwargs) if ic == "loo" else waic(f, **kwargs)
        cols[str(name)] = {
            f"elpd_{ic}": r.elpd,
            f"SE(elpd_{ic})": r.se,
            f"p_{ic}": r.p,
            ("LOOIC" if ic == "loo" else "WAIC"): -2 * r.elpd,
            "Clusters": r.n_data_points,
        }
    return pd.DataFrame(cols)
