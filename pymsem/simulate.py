"""Simulate two-level data from a specification and known parameter values.

Used for power analysis, for recovery tests, and to make the bundled data set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pymsem.compile.matrices import level_matrices
from pymsem.compile.structure import ModelStructure, lower
from pymsem.specification.errors import MSEMSpecificationError, closest
from pymsem.specification.model import MSEM

__all__ = ["DrawnData", "draw_data", "parameter_vectors", "simulate", "spec_structure"]


def spec_structure(model: MSEM) -> ModelStructure:
    """Lower a specification without looking at data: columns listed in ``level2=`` are level-2."""
    model._validate_spec_names_only()
    names = {f.name for f in model.latents}
    used: list[str] = []
    for f in model.latents:
        used += [i for i in f.indicators if i not in used]
    slopes = {r.name for p in model.paths for r in p.random if r is not None}
    for p in model.paths:
        used += [
            v for v in (p.outcome, *p.predictors) if v not in names and v not in used and v not in slopes
        ]
    for c in model.covariances:
        used += [v for v in (c.a, c.b) if v not in names and v not in used and v not in slopes]
    level2 = [c for c in used if c in model.declared_level2]
    level1 = [c for c in used if c not in model.declared_level2]
    return lower(model.table, level1, level2, model.auto_exogenous_covariances)


def slope_correlation(structure: ModelStructure, values: Mapping[str, float]) -> np.ndarray:
    """Correlation matrix of the random slopes: by label (e.g. ``rCor``), ``"slope_cor"`` for all pairs, else 0."""
    rs = structure.random_slopes
    R = np.eye(len(rs))
    for i, a in enumerate(rs):
        for j, b in enumerate(rs):
            if i != j:
                lab = a.cor_labels.get(b.name)
                R[i, j] = (
                    values.get(lab, values.get("slope_cor", 0.0)) if lab else values.get("slope_cor", 0.0)
                )
    return R


def parameter_vectors(structure: ModelStructure, values: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Parameter vectors by group from values keyed by label, ``"group[element]"`` or group name.

    A group name sets every element of the group (e.g. ``{"loading_w": 1.0}``);
    more specific keys win.
    """
    known: set[str] = set()
    out: dict[str, np.ndarray] = {}
    missing = []
    for g in structure.groups.values():
        vec = np.full(len(g), np.nan)
        for i, (el, lab) in enumerate(zip(g.elements, g.labels)):
            keys = ([lab] if lab else []) + [f"{g.name}[{el}]", g.name]
            known.update(keys)
            key = next((k for k in keys if k in values), None)
            if g.owners[i] is not None:
                continue  # equal by a shared label to an earlier parameter: set below
            if key is None:
                missing.append(f"{g.name}[{el}]" + (f" (label {lab})" if lab else ""))
            else:
                vec[i] = float(values[key])
        for i, owner in enumerate(g.owners):
            if owner is not None:  # equal by a shared label to an earlier parameter
                vec[i] = out[owner[0]][owner[1]]
        out[g.name] = vec
    known.add("slope_cor")
    known.update(lab for r in structure.random_slopes for lab in r.cor_labels.values())
    unknown = [k for k in values if k not in known]
    if unknown:
        raise MSEMSpecificationError(
            f"Parameter value for {unknown[0]!r}: no such parameter." + closest(unknown[0], known)
        )
    if missing:
        raise MSEMSpecificationError(
            f"No value given for {len(missing)} parameter(s): {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''}. Give them by label, 'group[element]' or group name."
        )
    return out


@dataclass
class DrawnData:
    """One data set drawn by :func:`draw_data` (arrays, no column names)."""

    level1: np.ndarray  # (N, p1): students in cluster order, columns as ``structure.level1``
    level2: np.ndarray  # (G, p2): each cluster's level-2 values, columns as ``structure.level2``
    eta_b: np.ndarray  # (G, between latents): each cluster's between latent variables (centered)
    slopes: np.ndarray | None  # (G, k): each cluster's slope deviations ``u_g``, or None


def draw_data(
    structure: ModelStructure,
    vectors: Mapping[str, np.ndarray],
    slope_cov: np.ndarray | None,
    sizes: np.ndarray,
    rng: np.random.Generator,
) -> DrawnData:
    """Draw one two-level data set from per-group parameter vectors: the engine of :func:`simulate`.

    Used once per draw by the posterior and prior predictive checks
    (:mod:`pymsem.results.ppc`, :mod:`pymsem.results.prior_predictive`).

    Parameters
    ----------
    structure
        The lowered model.
    vectors
        Free-parameter vectors by group name, one value per element (as
        :func:`parameter_vectors` returns or one draw of ``MSEMFit.parameter_draws()``).
    slope_cov
        With random slopes: the covariance ``T`` of the slope deviations (the residual
        covariance where slopes are regressed on between variables); else None.
    sizes
        Students per cluster, one per cluster.
    rng
        The random generator (its draws are consumed in a fixed order: same seed, same data).

    Returns
    -------
    DrawnData
        The students' level-1 values, the clusters' level-2 values, between latents and slopes.
    """
    st, vec = structure, dict(vectors)
    sizes = np.asarray(sizes, dtype=int)
    n_clusters = len(sizes)
    W = level_matrices(st.within, vec)
    Bm = level_matrices(st.between, vec)
    for name, M in (("within", W), ("between", Bm)):
        if np.linalg.eigvalsh(M.Psi).min() < -1e-10:
            raise MSEMSpecificationError(
                f"The {name} latent covariance matrix is not positive semi-definite."
            )

    def draw(M, n: int) -> tuple[np.ndarray, np.ndarray]:
        zeta = rng.multivariate_normal(np.zeros(len(M.Psi)), M.Psi, size=n, method="eigh")
        eta = zeta @ M.A.T
        eps = rng.multivariate_normal(np.zeros(len(M.Theta)), M.Theta, size=n, method="eigh")
        return eta @ M.Lambda.T + eps, eta

    T = None if slope_cov is None else np.asarray(slope_cov, dtype=float)
    if st.random_slopes and T is None:
        raise ValueError("The model has random slopes: pass slope_cov (k, k).")
    if st.slopes_in_between_model:
        # Slopes and between latents as one recursive system (slopes predicting level-2
        # outcomes, or covarying with disturbances): drawn jointly.
        from pymsem.compile.random_effects import augmented_between

        Sigma_aug, Psi_aug = augmented_between(st, Bm, vec, T)
        if np.linalg.eigvalsh(Psi_aug).min() < -1e-10:
            raise MSEMSpecificationError(
                "The covariance matrix of the between disturbances and the slope residuals is not "
                "positive semi-definite; lower the slope-disturbance correlations."
            )
        mb = st.between.n_lat
        x = rng.multivariate_normal(np.zeros(len(Sigma_aug)), Sigma_aug, size=n_clusters, method="eigh")
        eta_b, u_joint = x[:, :mb], x[:, mb:]
        eps = rng.multivariate_normal(np.zeros(len(Bm.Theta)), Bm.Theta, size=n_clusters, method="eigh")
        zb = eta_b @ Bm.Lambda.T + eps
    else:
        zb, eta_b = draw(Bm, n_clusters)
    z = Bm.nu + zb
    cl = np.repeat(np.arange(n_clusters), sizes)
    p1 = len(st.level1)
    u = None
    if st.random_slopes:
        if st.slopes_in_between_model:
            u = u_joint
        else:
            u = rng.multivariate_normal(np.zeros(len(T)), T, size=n_clusters, method="eigh")
            for i, r_ in enumerate(st.random_slopes):  # cross-level moderation: slope on between variables
                for lat, k in r_.moderators:
                    u[:, i] += vec["path_b"][k] * eta_b[:, lat]
        y = np.empty((len(cl), p1))
        ls = st.within
        r, c, j = ls.beta_random[:, 0], ls.beta_random[:, 1], ls.beta_random[:, 2]
        start = np.r_[0, np.cumsum(sizes)]
        Wg = level_matrices(ls, vec)  # the cluster's matrices but for B, which its slopes move
        for g in range(n_clusters):
            Bg = Wg.B.copy()
            Bg[r, c] += u[g, j]
            Ag = np.linalg.inv(np.eye(ls.n_lat) - Bg)
            zeta = rng.multivariate_normal(np.zeros(ls.n_lat), Wg.Psi, size=sizes[g], method="eigh")
            eps = rng.multivariate_normal(np.zeros(ls.n_obs), Wg.Theta, size=sizes[g], method="eigh")
            y[start[g] : start[g + 1]] = z[g, :p1] + (zeta @ Ag.T) @ Wg.Lambda.T + eps
    else:
        y = z[cl, :p1] + draw(W, len(cl))[0]
    return DrawnData(level1=y, level2=z[:, p1:], eta_b=eta_b, slopes=u)


def simulate(
    model: MSEM,
    values: Mapping[str, float],
    n_clusters: int,
    cluster_size: int | Sequence[int],
    seed: int | None = None,
    return_cluster_values: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a data set from the model with the given parameter values.

    Parameters
    ----------
    model
        The specification (an :class:`~pymsem.MSEM`; its data are not used,
        columns listed in its ``level2=`` are simulated as level-2).
    values
        Parameter values by label (``"a_w"``), element (``"path_w[INT <- REL]"``)
        or group (``"loading_w"``: all of them). SDs are given for variance
        parameters (``lv_sd_*``, ``resid_sd_*``, ``slope_sd_b``) and correlations for ``*_cor``;
        random-slope correlations by their label or ``"slope_cor"`` (default 0).
    n_clusters
        Number of clusters.
    cluster_size
        Students per cluster: one number, or one per cluster (unbalanced).
    seed
        Random seed.
    return_cluster_values
        Also return what was drawn for each cluster (one row per cluster): its between-level
        latent variables (centered, named as in the model) and its random slopes, to compare
        estimates with the realized values of this sample.

    Returns
    -------
    pandas.DataFrame
        One row per student: the cluster column, an ``id`` column and the observed variables
        (and, with ``return_cluster_values``, the clusters' drawn values).
    """
    st = spec_structure(model)
    vec = parameter_vectors(st, values)
    rng = np.random.default_rng(seed)
    sizes = np.broadcast_to(np.asarray(cluster_size, dtype=int), (n_clusters,)).copy()
    if (sizes < 1).any():
        raise ValueError("cluster_size must be at least 1.")
    T = None
    if st.random_slopes:
        sd = vec["slope_sd_b"]
        T = sd[:, None] * slope_correlation(st, values) * sd[None, :]
    d = draw_data(st, vec, T, sizes, rng)
    y, eta_b, u = d.level1, d.eta_b, d.slopes
    cl = np.repeat(np.arange(n_clusters), sizes)
    df = pd.DataFrame(y, columns=st.level1)
    for j, c in enumerate(st.level2):
        df[c] = d.level2[cl, j]
    df[model.cluster] = cl + 1
    df["id"] = np.arange(1, len(cl) + 1)
    if return_cluster_values:
        values = {name: eta_b[:, j] for j, name in enumerate(st.between.latent)}
        for i, r in enumerate(st.random_slopes):
            values[r.name] = vec["path_w"][r.mean_index] + u[:, i]
        return df, pd.DataFrame(values, index=pd.Index(np.arange(1, n_clusters + 1), name=model.cluster))
    return df
