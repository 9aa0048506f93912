"""The data-augmentation formulation: every latent variable sampled explicitly, non-centered.

The model of :mod:`pymsem.compile.structure` is written generatively, cluster
by cluster and student by student.  Between clusters the cluster vector

    z_g = (mu_g, w_g) = nu + Lambda_b eta_b,g + eps_b,g,    eta_b,g ~ N(0, A_b Psi_b A_b')

holds the latent cluster means ``mu_g`` of the level-1 variables and the
observed level-2 columns ``w_g``; within clusters

    y_ig = mu_g + Lambda_w eta_w,ig + eps_w,ig,             eta_w,ig ~ N(0, A_w Psi_w A_w').

Single-indicator latents (observed variables that enter a regression or a
latent covariance) have loading 1 and residual SD 0, so some latent values
are *known* given the data and the other latents:

* between: a level-2 column used as a single-indicator latent gives
  ``eta = w_g - nu``;
* within: every single-indicator latent gives ``eta = y_ig - mu_g``.

All other latents are *unknown*: the between factors and the latent cluster
means of level-1 variables, the within factors, and the between residuals
of the level-1 variables.  With ``Sigma`` the implied covariance of a
level's latents, partitioned into known ``o`` and unknown ``u``, the
known ones contribute ``log N(eta_o | 0, Sigma_oo)`` and the unknown ones
are drawn from their conditional distribution, non-centered::

    eta_u = K eta_o + chol(Sigma_uu - K Sigma_ou) z_u,   K = Sigma_uo Sigma_oo^-1,  z_u ~ N(0, I).

Why this parametrization.  Sampling ``eta`` itself (centered) couples every
latent value to the variance parameters that scale it: when clusters are
small or the between variance is small relative to the within noise, the
posterior of ``(eta, sd)`` is a funnel that NUTS cannot traverse.  Sampling
the standardized innovations ``z`` instead makes their prior independent of
the parameters, which removes the funnel.  Conditioning on the known
single-indicator latents (instead of sampling all of ``eta`` and adding a
zero-variance measurement) keeps the model exact: the known values are data,
and only the genuinely unknown coordinates get a free variable.  The
Jacobian of ``z -> eta`` is handled implicitly, because ``z`` itself carries
the standard normal prior.

Every per-cluster and per-student quantity is one array (``cluster`` x latent,
``obs`` x latent); there are no Python loops over clusters or students in the
graph, so graph size does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pymsem.compile.likelihood import register
from pymsem.compile.matrices import LevelMatrices
from pymsem.compile.slopes import (
    SlopeSettings,
    add_random_slopes,
    cluster_latent_covariance,
    moderated_deviations,
    moderator_values,
)
from pymsem.compile.structure import LevelStructure, ModelStructure
from pymsem.specification.data import ClusteredData

__all__ = ["AugmentedLayout", "AugmentedLikelihood", "augmented_layout"]

_LOG2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class AugmentedLayout:
    """Which coordinates of each level are known from the data and which are sampled.

    All index arrays are NumPy ``int64`` and index the level's latent or
    observed lists (:class:`~pymsem.compile.structure.LevelStructure`).

    Attributes
    ----------
    b_known, b_unknown
        Between latents known from level-2 columns, and the sampled ones.
    b_known_obs
        For each known between latent, the between observed index of its column.
    b_resid_sampled
        Level-1 variables (between observed indices ``< p1``) with a nonzero
        between residual SD: their residuals are sampled.
    b_resid_observed
        Level-2 columns with a nonzero between residual SD (e.g. level-2
        indicators of a between factor): their residuals are data.
    b_resid_diagonal
        ``True`` when no residual correlation links two of the between residuals above.
    w_known, w_unknown
        Within single-indicator latents (known) and within factors (sampled).
    w_known_obs
        For each known within latent, its within observed (level-1) index.
    w_resid
        Level-1 variables with a nonzero within residual SD (the indicators
        and the variables that load on nothing): they get a likelihood term.
    w_resid_diagonal
        ``True`` when no within residual correlation links two of them.
    """

    b_known: np.ndarray
    b_unknown: np.ndarray
    b_known_obs: np.ndarray
    b_resid_sampled: np.ndarray
    b_resid_observed: np.ndarray
    b_resid_diagonal: bool
    w_known: np.ndarray
    w_unknown: np.ndarray
    w_known_obs: np.ndarray
    w_resid: np.ndarray
    w_resid_diagonal: bool


def _ix(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _nonzero_residuals(ls: LevelStructure) -> np.ndarray:
    """Observed indices whose residual SD is free or fixed at a nonzero value."""
    free = set(ls.resid_sd_free[:, 0].tolist())
    return _ix([i for i in range(ls.n_obs) if i in free or ls.resid_sd_fixed[i] != 0.0])


def _diagonal(ls: LevelStructure, rows: np.ndarray) -> bool:
    """No residual correlation between two of ``rows``."""
    s = set(rows.tolist())
    return not any(int(i) in s and int(j) in s for i, j, _ in ls.resid_cor)


def augmented_layout(structure: ModelStructure) -> AugmentedLayout:
    """Split each level's latents and residuals into known (data) and sampled coordinates."""
    wi, be = structure.within, structure.between
    p1 = len(structure.level1)
    level2 = set(structure.level2)
    b_obs = {v: i for i, v in enumerate(be.observed)}
    b_known = [j for j, v in enumerate(be.latent) if v in be.single_indicator and v in level2]
    b_unknown = [j for j in range(be.n_lat) if j not in b_known]
    b_res = _nonzero_residuals(be)
    w_obs = {v: i for i, v in enumerate(wi.observed)}
    w_known = [j for j, v in enumerate(wi.latent) if v in wi.single_indicator]
    w_unknown = [j for j in range(wi.n_lat) if j not in w_known]
    w_res = _nonzero_residuals(wi)
    return AugmentedLayout(
        b_known=_ix(b_known),
        b_unknown=_ix(b_unknown),
        b_known_obs=_ix([b_obs[be.latent[j]] for j in b_known]),
        b_resid_sampled=b_res[b_res < p1],
        b_resid_observed=b_res[b_res >= p1],
        b_resid_diagonal=_diagonal(be, b_res),
        w_known=_ix(w_known),
        w_unknown=_ix(w_unknown),
        w_known_obs=_ix([w_obs[wi.latent[j]] for j in w_known]),
        w_resid=w_res,
        w_resid_diagonal=_diagonal(wi, w_res),
    )


def split_gaussian(
    cov: Any,
    known: np.ndarray,
    unknown: np.ndarray,
    known_values: Any,
    raw: Any,
    diagonal: bool = False,
) -> tuple[Any, Any]:
    """Log density of the known coordinates and non-centered draws of the unknown ones.

    The rows of ``(known_values, unknown)`` are independent draws of
    ``N(0, cov)``; ``known`` and ``unknown`` index ``cov``.

    Parameters
    ----------
    cov
        Covariance matrix (PyTensor, square).
    known, unknown
        Indices of the observed and of the sampled coordinates.
    known_values
        ``(n, len(known))`` values of the observed coordinates (ignored when there are none).
    raw
        ``(n, len(unknown))`` standard normal innovations (ignored when there are none).
    diagonal
        ``cov`` restricted to ``known`` and ``unknown`` is diagonal: use the SDs
        instead of Cholesky factors.

    Returns
    -------
    logp
        ``sum_rows log N(known_values | 0, cov_oo)`` (``0.0`` without known coordinates).
    unknown_values
        ``(n, len(unknown))`` draws ``K x_o + chol(cov_uu - K cov_ou) raw`` with
        ``K = cov_uo cov_oo^-1`` (``None`` without unknown coordinates).
    """
    import pytensor.tensor as pt

    no, nu_ = len(known), len(unknown)
    logp: Any = pt.constant(0.0)
    unknown_values = None
    if diagonal:
        sd = pt.sqrt(pt.diag(cov))
        if no:
            s_o = sd[known]
            n = known_values.shape[0]
            logp = -0.5 * pt.sum(pt.square(known_values / s_o)) - n * (
                pt.sum(pt.log(s_o)) + 0.5 * no * _LOG2PI
            )
        if nu_:
            unknown_values = raw * sd[unknown]
        return logp, unknown_values
    if no:
        L_o = pt.linalg.cholesky(cov[known][:, known], lower=True)
        # V = L_o^-1 x_o' (no x n): whitened known values, reused for the conditional mean.
        V = pt.linalg.solve_triangular(L_o, known_values.T, lower=True)
        n = known_values.shape[0]
        logp = -0.5 * pt.sum(pt.square(V)) - n * (pt.sum(pt.log(pt.diag(L_o))) + 0.5 * no * _LOG2PI)
    if nu_:
        cov_uu = cov[unknown][:, unknown]
        if no:
            # W = L_o^-1 cov_ou, so K = W' L_o^-1, K x_o = W' V and K cov_ou = W' W.
            W = pt.linalg.solve_triangular(L_o, cov[known][:, unknown], lower=True)
            cond = cov_uu - W.T @ W
            L_u = pt.linalg.cholesky(0.5 * (cond + cond.T), lower=True)
            unknown_values = V.T @ W + raw @ L_u.T
        else:
            unknown_values = raw @ pt.linalg.cholesky(cov_uu, lower=True).T
    return logp, unknown_values


def split_gaussian_grouped(
    covs: Any,
    known: np.ndarray,
    unknown: np.ndarray,
    known_values: Any,
    raw: Any,
    groups: np.ndarray,
) -> tuple[Any, Any]:
    """:func:`split_gaussian` when each row's covariance is its group's (one per cluster).

    ``covs`` is ``(G, m, m)`` and row ``i`` is a draw of ``N(0, covs[groups[i]])``; this is
    the within level with random slopes, whose latent covariance differs between clusters.
    Factorizations are per group, the whitening per row.
    """
    import pytensor.tensor as pt

    from pymsem.compile.linalg import batched_matmul, chol_logdet, cholesky, solve_lower

    no, nu_ = len(known), len(unknown)
    G = int(groups.max()) + 1 if len(groups) else 0
    logp: Any = pt.constant(0.0)
    unknown_values = None
    if no:
        L_o = cholesky(covs[:, known][:, :, known])  # (G, no, no)
        Linv = solve_lower(L_o, pt.zeros((G, no, no)) + pt.eye(no)[None])
        V = pt.sum(Linv[groups] * known_values[:, None, :], axis=-1)  # (N, no): L_o^-1 x_o per row
        counts = np.bincount(groups, minlength=G).astype(float)
        logp = (
            -0.5 * pt.sum(pt.square(V))
            - 0.5 * pt.sum(counts * chol_logdet(L_o))
            - 0.5 * len(groups) * no * _LOG2PI
        )
    if nu_:
        cov_uu = covs[:, unknown][:, :, unknown]
        if no:
            W = solve_lower(L_o, covs[:, known][:, :, unknown])  # (G, no, nu)
            cond = cov_uu - batched_matmul(W.transpose(0, 2, 1), W)
            L_u = cholesky(0.5 * (cond + cond.transpose(0, 2, 1)))
            unknown_values = pt.sum(V[:, :, None] * W[groups], axis=1)
        else:
            L_u = cholesky(cov_uu)
            unknown_values = 0.0
        unknown_values = unknown_values + pt.sum(L_u[groups] * raw[:, None, :], axis=-1)
    return logp, unknown_values


def _add_coord(model: Any, name: str, values: list[str]) -> None:
    if name not in model.coords:
        model.add_coord(name, values)


def _innovations(name: str, dims: tuple[str, str], shape: tuple[int, int], seed: int) -> Any:
    """Standard normal innovations, started at a fixed prior draw.

    Starting all innovations at 0 would put every latent variable at its
    mean, where the gradient of the structural paths vanishes exactly (and
    nutpie refuses an initial gradient with a zero component); a fixed draw
    from the prior is a typical starting point and keeps chains reproducible.
    """
    import pymc as pm

    start = np.random.default_rng(seed).standard_normal(shape)
    return pm.Normal(name, 0.0, 1.0, dims=dims, initval=start)


def _fill_missing(model: Any, name: str, X: np.ndarray, groups: np.ndarray) -> Any:
    """``X`` with its missing cells replaced by free variables (the data-augmentation of MAR data).

    The missing cells are latent like the factor scores: they enter the complete-data
    density, so integrating them out leaves the likelihood of what was observed. They
    get a flat prior here because that density is their prior; they start at their
    column's mean within the group (cluster) or overall.
    """
    import pymc as pm
    import pytensor.tensor as pt

    miss = np.isnan(X)
    if not miss.any():
        return X
    rows, cols = np.nonzero(miss)
    start = np.empty(len(rows))
    for j in np.unique(cols):
        x, ok = X[:, j], ~miss[:, j]
        overall = x[ok].mean()
        n = np.bincount(groups[ok], minlength=groups.max() + 1)
        s = np.bincount(groups[ok], weights=x[ok], minlength=groups.max() + 1)
        grp = np.where(n > 0, s / np.maximum(n, 1), overall)
        sel = cols == j
        start[sel] = grp[groups[rows[sel]]]
    _add_coord(model, f"{name}_cell", [f"{r},{c}" for r, c in zip(rows, cols)])
    cells = pm.Flat(name, dims=f"{name}_cell", initval=start)
    return pt.set_subtensor(pt.as_tensor_variable(np.nan_to_num(X))[rows, cols], cells)


@register
class AugmentedLikelihood:
    """Every latent variable sampled explicitly (non-centered), no integral taken.

    Adds to the PyMC model

    ``eta_b_raw`` (``cluster`` x ``latent_b``)
        Standard normal innovations of the unknown between latents (between
        factors and latent cluster means of level-1 variables), conditional
        on the known level-2 single-indicator latents.
    ``eps_b_raw`` (``cluster`` x ``resid_b``)
        Standard normal innovations of the between residuals of the level-1
        variables whose between residual SD is not fixed at 0.
    ``eta_w_raw`` (``obs`` x ``latent_w``)
        Standard normal innovations of the within factors of every student,
        conditional on the known within single-indicator latents.
    ``slope_raw`` (``cluster`` x ``random_slope``) or ``slope``
        The clusters' random slopes (:mod:`pymsem.compile.slopes`). With them the
        within latents' covariance differs between clusters, and the within
        innovations are conditioned cluster by cluster
        (:func:`split_gaussian_grouped`). Slopes regressed on between-level
        variables use the sampled between latents as moderators
        (``moderator_values``).
    ``loglik`` (Potential)
        ``log p(data | parameters, latents)``: the level-2 single-indicator
        latents, the residuals of other level-2 columns, the within
        single-indicator latents and the within residuals of the level-1
        variables.

    A variable is only created when it has at least one element.  The
    posterior of the free parameters is the same as with the ``"marginal"``
    formulation.  This one is slower (thousands of free variables, and the
    trace stores every student's innovations) and mixes worse where the
    clusters are large and informative: there the grand means ``nu`` and the
    average between innovation form a ridge that the non-centered
    parametrization cannot remove (on Model 2 with 100 x 20 students the
    intercepts reach a bulk ESS of about 60 per 2000 draws, against about 2000
    marginally).  It is the starting point for models without a closed-form
    marginal likelihood (non-normal outcomes) and gives the posterior of the
    latent scores.  A diagonal mass matrix suits it: low-rank adaptation
    costs O(free variables) per warm-up step.
    """

    name: ClassVar[str] = "augmented"
    slopes: SlopeSettings = SlopeSettings()
    #: Free variables left out of the stored trace (ordinal cells' latent responses).
    untraced: tuple[str, ...] | list[str] = ()
    #: Missing cells are free variables of the model (their draws are the imputations).
    samples_missing: ClassVar[bool] = True

    def supports(self, structure: ModelStructure) -> str | None:
        """``None`` if the model can be augmented, else why not."""
        if not structure.level1:
            return "it needs at least one level-1 (within-varying) variable"
        if structure.slopes_in_between_model:
            return (
                "random slopes predict between-level outcomes or covary with the disturbance of an "
                "endogenous between variable; use formulation='marginal'"
            )
        wi, be = structure.within, structure.between
        w_res = set(_nonzero_residuals(wi).tolist())
        for i, v in enumerate(wi.observed):
            if i not in w_res and v not in wi.single_indicator:
                return f"the within residual SD of {v!r} is fixed at 0 but it is no single-indicator latent"
        b_res = set(_nonzero_residuals(be).tolist())
        for v in structure.level2:
            i = be.observed.index(v)
            if i not in b_res and v not in be.single_indicator:
                return (
                    f"the level-2 column {v!r} has a between residual SD fixed at 0 but is no "
                    f"single-indicator latent (a deterministic constraint on the latents)"
                )
        return None

    def add(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        """Add the latent innovations and the complete-data log-likelihood to the current model."""
        import pymc as pm
        import pytensor.tensor as pt

        model = pm.modelcontext(None)
        lay = augmented_layout(structure)
        wi, be = structure.within, structure.between
        p1 = len(structure.level1)
        G, N = data.n_clusters, data.n_obs
        Y = data.frame[structure.level1].to_numpy(float)  # (N, p1)
        Z2 = data.level2_values(structure.level2)
        Y = _fill_missing(model, "y_missing", Y, data.cluster_index)
        Z2 = _fill_missing(model, "level2_missing", Z2, np.zeros(G, dtype=np.int64))
        if structure.ordinal:
            from pymsem.compile.ordinal import latent_response_data, thresholds

            tau = thresholds(structure, data)
            Y, self.untraced = latent_response_data(structure, data, pt.as_tensor_variable(Y), tau)
        nu = between.nu if between.nu is not None else pt.zeros(be.n_obs)
        terms = []

        # ------------------------------------------------------------- between
        Lb = between.Lambda
        eta_b_raw = None
        if len(lay.b_unknown):
            _add_coord(model, "latent_b", [be.latent[j] for j in lay.b_unknown])
            eta_b_raw = _innovations("eta_b_raw", ("cluster", "latent_b"), (G, len(lay.b_unknown)), 1)
        eta_o = None
        if len(lay.b_known):
            eta_o = Z2[:, lay.b_known_obs - p1] - nu[lay.b_known_obs][None, :]
        lp, eta_u = split_gaussian(between.Sigma_eta, lay.b_known, lay.b_unknown, eta_o, eta_b_raw)
        terms.append(lp)
        lam_eta = pt.zeros((G, be.n_obs))  # (Lambda_b eta_b,g)' for every cluster
        if eta_o is not None:
            lam_eta = lam_eta + eta_o @ Lb[:, lay.b_known].T
        if eta_u is not None:
            lam_eta = lam_eta + eta_u @ Lb[:, lay.b_unknown].T
        eps_b_raw = None
        if len(lay.b_resid_sampled):
            _add_coord(model, "resid_b", [be.observed[i] for i in lay.b_resid_sampled])
            eps_b_raw = _innovations("eps_b_raw", ("cluster", "resid_b"), (G, len(lay.b_resid_sampled)), 2)
        eps_obs = None
        if len(lay.b_resid_observed):
            r2 = lay.b_resid_observed
            eps_obs = Z2[:, r2 - p1] - nu[r2][None, :] - lam_eta[:, r2]
        lp, eps_u = split_gaussian(
            between.Theta, lay.b_resid_observed, lay.b_resid_sampled, eps_obs, eps_b_raw, lay.b_resid_diagonal
        )
        terms.append(lp)
        mu = nu[:p1][None, :] + lam_eta[:, :p1]  # latent cluster means (G, p1)
        if eps_u is not None:
            mu = pt.inc_subtensor(mu[:, lay.b_resid_sampled], eps_u)
        u_total = None
        if structure.random_slopes:
            u_total = self._slopes(structure, params, eta_o, eta_u, lay)

        # -------------------------------------------------------------- within
        Lw = within.Lambda
        dev = Y - mu[data.cluster_index]  # (N, p1): y_ig - mu_g
        eta_w_raw = None
        if len(lay.w_unknown):
            _add_coord(model, "obs", [str(i) for i in range(N)])
            _add_coord(model, "latent_w", [wi.latent[j] for j in lay.w_unknown])
            eta_w_raw = _innovations("eta_w_raw", ("obs", "latent_w"), (N, len(lay.w_unknown)), 3)
        xi_o = dev[:, lay.w_known_obs] if len(lay.w_known) else None
        if u_total is None:
            lp, xi_u = split_gaussian(within.Sigma_eta, lay.w_known, lay.w_unknown, xi_o, eta_w_raw)
        else:
            Sg = cluster_latent_covariance(structure, within, u_total, G)
            lp, xi_u = split_gaussian_grouped(
                Sg, lay.w_known, lay.w_unknown, xi_o, eta_w_raw, data.cluster_index
            )
        terms.append(lp)
        if len(lay.w_resid):
            r = lay.w_resid
            resid = dev[:, r]
            if xi_o is not None:
                resid = resid - xi_o @ Lw[r][:, lay.w_known].T
            if xi_u is not None:
                resid = resid - xi_u @ Lw[r][:, lay.w_unknown].T
            empty = np.zeros(0, dtype=np.int64)
            lp, _ = split_gaussian(within.Theta, r, empty, resid, None, lay.w_resid_diagonal)
            terms.append(lp)
        pm.Potential("loglik", pt.add(*terms))

    def _slopes(
        self, structure: ModelStructure, params: dict[str, Any], eta_o: Any, eta_u: Any, lay: AugmentedLayout
    ) -> Any:
        """The clusters' slope deviations ``u_g + Gamma eta_o,g``; the moderators are between latents here."""
        u = add_random_slopes(structure, params, self.slopes)
        mods = sorted({lat for r in structure.random_slopes for lat, _ in r.moderators})
        if not mods:
            return u
        known, unknown = lay.b_known.tolist(), lay.b_unknown.tolist()
        eta = {
            lat: (eta_o[:, known.index(lat)] if lat in known else eta_u[:, unknown.index(lat)])
            for lat in mods
        }
        moderator_values(structure, mods, eta)
        return moderated_deviations(structure, u, params, eta)
