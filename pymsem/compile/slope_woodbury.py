"""The random-slope likelihood through the Woodbury identity, for plain and moderated slopes.

Given its slope deviations, cluster ``g``'s within covariance is ``Theta_W + Lambda S_g
Lambda'`` with ``S_g^-1 = (I - B_g)' Psi^-1 (I - B_g)``, and its cluster vector's covariance
``E_g + U K_g U'`` with ``E_g = Theta_B + Theta_W / n_g`` diagonal, ``U = [Lambda_B,
Lambda_W]`` and ``K_g = diag(S_B, S_g / n_g)``. :func:`woodbury_slope_logp` sums the
collapsed log-likelihood over clusters from factor-sized matrices only: the per-cluster part
is one fused operation (:mod:`pymsem.compile.cluster_woodbury`), the rest is pooled over
clusters or computed once per distinct cluster size.

Slopes regressed on between-level variables (tutorial Model 4) condition on the moderators,
which are sampled per cluster. A covariate such as SES with latent mean centering is then
observed without error at both levels (zero residual variances), which the diagonal ``E_g``
cannot hold; but its between part is a moderator, so given the moderators its within part
``x_ij - nu - eta_x,g`` is known, and :func:`moderated_woodbury_logp` factors the density as
``p(x_w) p(items | x_w)``. Given ``x_w``, the items are a two-level factor model again, their
within scatter and cluster means shifted by ``C_g x_w`` (``C_g = Lambda A_g gamma_g``, the
items' regression on the covariate through the within paths), and the Woodbury form applies.
:func:`moderated_woodbury_plan` says when this holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pymsem.compile.cluster_woodbury import loading_pattern, woodbury_op_logp
from pymsem.compile.linalg import batched_matmul, chol_logdet, cholesky, solve_lower
from pymsem.compile.shifted_scatter import shifted_scatter

__all__ = [
    "ModeratedWoodburyPlan",
    "moderated_woodbury_logp",
    "moderated_woodbury_plan",
    "woodbury_slope_logp",
]


def _packed(i: int, j: int) -> int:
    """Position of entry (i, j) in a packed lower triangle (row by row)."""
    a, b = max(i, j), min(i, j)
    return a * (a + 1) // 2 + b


def woodbury_slope_logp(
    *,
    stats: Any,
    scatter: Any,
    z: Any,
    nu: Any,
    u: Any,
    slope_entries: np.ndarray,
    pat_w: np.ndarray,
    pat_b: np.ndarray,
    theta: Any,
    Lambda: Any,
    IB0: Any,
    Psi: Any,
    theta_b: Any,
    Lambda_B: Any,
    SB_inv: Any,
    logdet_SB: Any,
    sq: Any = None,
    pooled_diag: Any = None,
) -> Any:
    """The collapsed log-likelihood summed over clusters, given the slope deviations ``u``.

    ``stats`` supplies the cluster sizes and totals (``n_obs``, ``log_n_sum``, ``sizes``,
    ``counts``, ``cluster_sizes``, ``cluster_size_index``); ``scatter`` (G, p(p+1)/2) and ``z``
    (G, pb) are the clusters' packed within scatter and vectors of the modeled variables, ``nu``
    their between mean. ``theta``, ``Lambda`` (p, m), ``IB0 = I - B`` and ``Psi`` are the within
    level's, ``theta_b`` (pb,), ``Lambda_B`` (pb, mb) and the between factors' precision
    ``SB_inv`` with its covariance's log determinant ``logdet_SB`` the between level's. Where
    ``sq`` (K, pb: each size's sum of ``(z - nu)^2``) or ``pooled_diag`` (the pooled within
    scatter's diagonal) are known from the data they can be passed. ``pat_w`` (p, m) and
    ``pat_b`` (pb, mb) are where ``Lambda`` and ``Lambda_B`` may be nonzero.
    """
    import pytensor.tensor as pt

    G = stats.n_clusters
    p1, m = pat_w.shape
    pb, mb = pat_b.shape
    pat_u = np.zeros((pb, mb + m), dtype=bool)  # where U = [Lambda_B, Lambda padded] may be nonzero
    pat_u[:, :mb] = pat_b
    pat_u[:p1, mb:] = pat_w
    n = stats.cluster_sizes
    log2pi = np.log(2 * np.pi)
    Lpsi = cholesky(Psi)
    Psi_inv = pt.linalg.cho_solve((Lpsi, True), pt.eye(m))
    logdet_psi = chol_logdet(Lpsi)
    LamD = Lambda / theta[:, None]
    LtL = pt.dot(Lambda.T, LamD)
    theta_pad = pt.zeros(pb)
    theta_pad = pt.set_subtensor(theta_pad[:p1], theta)
    # E_g and U' E_g^-1 U depend on the cluster only through its size: computed once per size.
    E_k = theta_b[None, :] + theta_pad[None, :] / stats.sizes[:, None]  # (K, pb)
    lam_w_pad = pt.zeros((pb, m))
    lam_w_pad = pt.set_subtensor(lam_w_pad[:p1], Lambda)
    U = pt.concatenate([Lambda_B, lam_w_pad], axis=1)  # (pb, mb + m)
    K_pad = pt.zeros((mb + m, mb + m))
    K_pad = pt.set_subtensor(K_pad[:mb, :mb], SB_inv)
    UEU_k = pt.matmul(U.T[None, :, :] / E_k[:, None, :], U[None, :, :]) + K_pad[None, :, :]
    per_cluster = woodbury_op_logp(
        slope_entries,
        pat_w,
        pat_u,
        mb,
        u=u,
        IB0=IB0,
        Psi_inv=Psi_inv,
        LtL=LtL,
        LamD=LamD,
        S=scatter,
        w=n - 1,
        n=n,
        size=stats.cluster_size_index,
        UEU=UEU_k,
        z=z,
        nu=nu,
        Einv=1.0 / E_k,
        U=U,
    )
    if pooled_diag is None:
        pooled_diag = pt.sum(scatter[:, [_packed(i, i) for i in range(p1)]], axis=0)
    if sq is None:  # each size's sum of squared deviations, from its clusters' vectors
        size_index = pt.as_tensor_variable(stats.cluster_size_index)
        counts = pt.as_tensor_variable(stats.counts)
        onehot = pt.eq(pt.arange(counts.shape[0])[:, None], size_index[None, :])
        sq = pt.dot(pt.cast(onehot, "float64"), pt.square(z - nu))
    n_within = stats.n_obs - G
    within_ll = (
        -0.5 * n_within * (p1 * log2pi + pt.sum(pt.log(theta)) + logdet_psi)
        - 0.5 * pt.sum(pooled_diag / theta)
        - 0.5 * p1 * stats.log_n_sum
    )
    between_ll = (
        -0.5 * G * (pb * log2pi + logdet_SB + logdet_psi)
        - 0.5 * pt.sum(stats.counts * pt.sum(pt.log(E_k), axis=1))
        + 0.5 * m * stats.log_n_sum
        - 0.5 * pt.sum(sq / E_k)
    )
    return per_cluster + within_ll + between_ll


@dataclass(frozen=True)
class ModeratedWoodburyPlan:
    """Index sets of :func:`moderated_woodbury_logp` (positions in the level's matrices).

    ``exact`` are the level-1 variables measured without error (their within latents
    ``exact_lat``), ``items`` the other level-1 variables (within latents ``item_lat``);
    ``rows`` the between variables kept in the cluster vector (the items, then the level-2
    columns that are not known moderators) and ``between_lat`` the between factors that are no
    moderator.
    """

    exact: list[int]
    exact_lat: list[int]
    items: list[int]
    item_lat: list[int]
    rows: list[int]
    between_lat: list[int]


def _exact_variables(ls: Any, pattern: np.ndarray) -> tuple[list[int], list[int]] | None:
    """A level's variables without residual (loading 1 on a factor of their own), and their factors.

    None when some variable without residual does not have that simple form.
    """
    free = set(ls.resid_sd_free[:, 0].tolist())
    loaded_free = set(ls.lambda_free[:, 0].tolist()) if len(ls.lambda_free) else set()
    exact, lat = [], []
    for i in range(ls.n_obs):
        if i in free or ls.resid_sd_fixed[i] != 0.0:
            continue
        cols = np.flatnonzero(pattern[i])
        if len(cols) != 1 or i in loaded_free or ls.lambda_fixed[i, cols[0]] != 1.0:
            return None
        if np.flatnonzero(pattern[:, cols[0]]).tolist() != [i]:
            return None
        exact.append(i)
        lat.append(int(cols[0]))
    return exact, lat


def moderated_woodbury_plan(
    structure: Any, known: list[int], latent: list[int]
) -> ModeratedWoodburyPlan | None:
    """When :func:`moderated_woodbury_logp` applies to moderated slopes, its index sets; else None.

    It needs uncorrelated residuals at both levels; every within variable either with a free
    residual variance or measured without error, the latter's factors exogenous, loaded by
    nothing else and with between parts that are sampled moderators measured without error;
    and free between residual variances for the level-2 columns that are not known moderators.
    ``known`` and ``latent`` are the between latents moderating a slope (level-2 columns, and
    the others).
    """
    ls, lb = structure.within, structure.between
    p1 = len(structure.level1)
    if len(ls.resid_cor) or len(lb.resid_cor) or ls.n_lat == 0:
        return None
    pat_w, pat_b = loading_pattern(ls), loading_pattern(lb)
    found = _exact_variables(ls, pat_w)
    if found is None:
        return None
    exact, exact_lat = found
    outcomes = set(ls.beta_free[:, 0].tolist()) if len(ls.beta_free) else set()
    outcomes |= set(ls.beta_random[:, 0].tolist())
    if outcomes & set(exact_lat):
        return None
    for i in exact:  # the between part: a sampled moderator, no residual, loading 1
        cols = np.flatnonzero(pat_b[i])
        if (
            len(cols) != 1
            or cols[0] not in latent
            or lb.lambda_fixed[i, cols[0]] != 1.0
            or i in set(lb.resid_sd_free[:, 0].tolist())
            or lb.resid_sd_fixed[i] != 0.0
        ):
            return None
    items = [i for i in range(p1) if i not in exact]
    item_lat = [a for a in range(ls.n_lat) if a not in exact_lat]
    if not items or not item_lat:
        return None
    level2_known = {int(np.flatnonzero(pat_b[:, lat])[0]) for lat in known}
    l2_free = set(lb.resid_sd_free[:, 0].tolist())
    rows_l2 = [i for i in range(p1, lb.n_obs) if i not in level2_known]
    if not set(rows_l2) <= l2_free:
        return None
    mods = set(known) | set(latent)
    between_lat = [a for a in range(lb.n_lat) if a not in mods]
    return ModeratedWoodburyPlan(exact, exact_lat, items, item_lat, items + rows_l2, between_lat)


def _exact_covariates(
    plan: ModeratedWoodburyPlan,
    structure: Any,
    stats: Any,
    within: Any,
    mean: Any,
    u_total: Any,
    entries: np.ndarray,
    pos_X: dict[int, int],
    S_II: Any,
    Lam_I: Any,
) -> tuple[Any, Any, Any, Any]:
    """The covariates measured without error (:func:`moderated_woodbury_logp`): their within
    part's density, the items' latent covariance given them, and the items' packed scatter and
    cluster vectors shifted by ``C_g x_w``."""
    import pytensor.tensor as pt

    ls = structure.within
    X, Xl, items, Il = plan.exact, plan.exact_lat, plan.items, plan.item_lat
    G, k = stats.n_clusters, len(X)
    n = stats.cluster_sizes
    S_full = stats.cluster_scatter
    # The covariate's within part given the moderators: x_ij - nu - eta_x,g; its cluster mean
    # is d_g = xbar_g - (conditional mean of x's between part) and its scatter is the data's.
    d = stats.cluster_vectors[:, X] - mean[:, X]  # (G, k)
    Sxx = [[S_full[:, _packed(a, b)] for b in X] for a in X]  # k x k of (G,)
    Psi = within.Psi
    Psi_xx = Psi[Xl][:, Xl]
    Lx = cholesky(Psi_xx)
    Sxx_sum = pt.stack([pt.stack([pt.sum(Sxx[a][b]) for b in range(k)]) for a in range(k)])
    dd = pt.dot(d.T * n[None, :], d)  # sum_g n_g d_g d_g'
    Psi_xx_inv = pt.linalg.cho_solve((Lx, True), pt.eye(k))
    quad_x = pt.sum(Psi_xx_inv * (Sxx_sum + dd))
    ll_x = -0.5 * stats.n_obs * (k * np.log(2 * np.pi) + chol_logdet(Lx)) - 0.5 * quad_x

    # The items' latents given the covariate's: zeta_I | eta_x ~ N(Psi_Ix Psi_xx^-1 eta_x, Psi~).
    Psi_Ix = Psi[Il][:, Xl]
    Wt = solve_lower(Lx, Psi_Ix.T)  # (k, mI)
    Psi_cond = Psi[Il][:, Il] - pt.dot(Wt.T, Wt)
    K_reg = pt.dot(Psi_Ix, Psi_xx_inv)  # (mI, k)
    B = within.B
    mI = len(Il)
    pos_I = {a: i for i, a in enumerate(Il)}
    br = ls.beta_random
    in_IX = [t for t in range(len(br)) if br[t, 1] in pos_X]
    B_II = B[Il][:, Il]
    # gamma_g = B_Ix,g + Psi_Ix Psi_xx^-1: the items' latents' regression on the covariate.
    gamma = pt.zeros((G, mI, k)) + (B[Il][:, Xl] + K_reg)[None]
    if in_IX:
        r_ = [pos_I[br[t, 0]] for t in in_IX]
        c_ = [pos_X[br[t, 1]] for t in in_IX]
        gamma = pt.inc_subtensor(gamma[:, r_, c_], u_total[:, [br[t, 2] for t in in_IX]])
    # A_g gamma_g with A_g = (I - B_g)^-1 = I + B_g + ... (B_g nilpotent: recursive paths).
    Bg = pt.zeros((G, mI, mI)) + B_II[None]
    if len(entries):
        Bg = pt.inc_subtensor(Bg[:, entries[:, 0], entries[:, 1]], u_total[:, entries[:, 2]])
    acc, h = gamma, gamma
    for _ in range(ls.depth):
        h = batched_matmul(Bg, h)
        acc = acc + h
    Cg = pt.tensordot(acc, Lam_I, axes=[[1], [1]])  # (G, k, pI): row t is C_g[:, t]

    # Shifted statistics: y~ = y_I - C_g x_w. (G, k, pI): the items' scatter with each
    # covariate; (G, k, k): the covariates' scatter.
    s_IX = pt.stack([S_full[:, [_packed(i, X[t]) for i in items]] for t in range(k)], axis=1)
    S_XX = S_full[:, np.array([[_packed(a, b) for b in X] for a in X])]
    scatter = shifted_scatter(S_II, Cg, s_IX, S_XX)
    z_items = stats.cluster_vectors[:, items] - pt.sum(Cg * d[:, :, None], axis=1)
    return ll_x, Psi_cond, scatter, z_items


def moderated_woodbury_logp(
    plan: ModeratedWoodburyPlan,
    structure: Any,
    stats: Any,
    within: Any,
    between: Any,
    u_total: Any,
    mean: Any,
    Lo: Any,
    mods: list[int],
) -> Any:
    """The cluster data's log-likelihood given the moderators, through :func:`woodbury_slope_logp`.

    ``u_total`` (G, k) are the slopes' deviations from their means, moderators' contributions
    included; ``mean`` (G, pb) the cluster vectors' conditional means given the moderators,
    ``Lo`` the Cholesky factor of the moderators' covariance and ``mods`` their between latents.
    The moderators' own density is not included.
    """
    import pytensor.tensor as pt

    ls = structure.within
    X, Xl, items, Il, rows = plan.exact, plan.exact_lat, plan.items, plan.item_lat, plan.rows
    k, pI = len(X), len(items)
    S_full = stats.cluster_scatter
    Psi = within.Psi
    B = within.B
    mI = len(Il)
    pos_I, pos_X = {a: i for i, a in enumerate(Il)}, {a: i for i, a in enumerate(Xl)}
    br = ls.beta_random
    in_II = [t for t in range(len(br)) if br[t, 1] in pos_I]
    entries = np.array([[pos_I[br[t, 0]], pos_I[br[t, 1]], br[t, 2]] for t in in_II], dtype=np.int64)
    B_II = B[Il][:, Il]
    Lam_I = within.Lambda[items][:, Il]
    pairs = [(a, b) for a in range(pI) for b in range(a + 1)]
    S_II = S_full[:, [_packed(items[a], items[b]) for a, b in pairs]]
    if k == 0:
        # No covariate measured without error (the moderators are level-2 columns or between
        # factors): nothing to condition on or shift; the items are the level-1 variables.
        ll_x = 0.0
        Psi_cond = Psi[Il][:, Il]
        scatter = S_II
        z_items = stats.cluster_vectors[:, items]
    else:
        ll_x, Psi_cond, scatter, z_items = _exact_covariates(
            plan, structure, stats, within, mean, u_total, entries, pos_X, S_II, Lam_I
        )
    z = z_items if len(rows) == pI else pt.concatenate([z_items, stats.cluster_vectors[:, rows[pI:]]], axis=1)
    z = z - mean[:, rows]

    # Between factors given the moderators: S_rr - S_ro S_oo^-1 S_or.
    lb = structure.between
    r_lat = plan.between_lat
    S = between.Sigma_eta
    pat_b = loading_pattern(lb)[rows][:, r_lat]
    pat_w = loading_pattern(ls)[items][:, Il]
    if r_lat:
        Wr = solve_lower(Lo, S[mods][:, r_lat])
        SB = S[r_lat][:, r_lat] - pt.dot(Wr.T, Wr)
        LB = cholesky(SB)
        SB_inv = pt.linalg.cho_solve((LB, True), pt.eye(len(r_lat)))
        logdet_SB = chol_logdet(LB)
        Lambda_B = between.Lambda[rows][:, r_lat]
    else:
        SB_inv, logdet_SB, Lambda_B = pt.zeros((0, 0)), 0.0, pt.zeros((len(rows), 0))
    items_ll = woodbury_slope_logp(
        stats=stats,
        scatter=scatter,
        z=z,
        nu=pt.zeros(len(rows)),
        u=u_total,
        slope_entries=entries.reshape(-1, 3),
        pat_w=pat_w,
        pat_b=pat_b,
        theta=pt.diagonal(within.Theta)[items],
        Lambda=Lam_I,
        IB0=pt.eye(mI) - B_II,
        Psi=Psi_cond,
        theta_b=pt.diagonal(between.Theta)[rows],
        Lambda_B=Lambda_B,
        SB_inv=SB_inv,
        logdet_SB=logdet_SB,
    )
    return ll_x + items_ll
