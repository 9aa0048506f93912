"""Data scales of every variable at every level: for default priors and starting values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pymsem.compile.structure import LevelStructure, ModelStructure
from pymsem.specification.data import ClusteredData
from pymsem.specification.objects import Level

__all__ = ["Scales", "initial_values"]


class Scales:
    """Level-specific SDs (one-way ANOVA) of observed variables, and of latents through their markers."""

    def __init__(self, structure: ModelStructure, data: ClusteredData) -> None:
        self.structure = structure
        self.data = data
        cols = structure.level1 + structure.level2
        comps = {c: data.variance_components(c) for c in cols}
        self._obs = {
            Level.WITHIN: {c: float(np.sqrt(max(comps[c][0], 1e-12))) for c in cols},
            Level.BETWEEN: {c: float(np.sqrt(max(comps[c][1], 1e-12))) for c in cols},
        }
        self.mean = {c: float(data.frame[c].mean()) for c in cols}
        self.total_sd = {c: float(data.frame[c].std(ddof=1)) or 1.0 for c in cols}
        for c in structure.level2:
            vals = data.cluster_values(c)
            vals = vals[~np.isnan(vals)]
            self.mean[c] = float(vals.mean())
            self.total_sd[c] = float(vals.std(ddof=1)) or 1.0

    def cluster_mean_root(self, columns: list[str]) -> np.ndarray:
        """``R`` with ``R R' = Cov(cluster means) / clusters``: the data's scale for the grand means.

        The cluster means of level-1 columns (level-2 columns: their values), pairwise
        complete; eigenvalues are floored so that ``R`` is invertible with few clusters.
        """
        means = np.column_stack([self.data.cluster_means(c) for c in columns])
        S = pd.DataFrame(means).cov().to_numpy()
        S = np.nan_to_num((S + S.T) / 2)
        w, Q = np.linalg.eigh(S)
        floor = 1e-3 * max(float(np.mean(np.diag(S))), 1e-12)
        S = (Q * np.maximum(w, floor)) @ Q.T
        return np.linalg.cholesky(S / max(self.data.n_clusters, 1))

    def marker(self, factor: str) -> str:
        f = self.structure.factors[factor]
        fixed = f.fixed_loadings()
        return next((i for i in f.indicators if i in fixed), f.indicators[0])

    def observed(self, name: str, level: Level) -> float:
        return self._obs[level][name]

    def latent(self, name: str, level: Level) -> float:
        """SD of a latent's scale: its marker's component SD (times the fixed loading).

        A random slope's scale is that of its path, ``sd(outcome) / sd(predictor)`` within.
        """
        slope = next((r for r in self.structure.random_slopes if r.name == name), None)
        if slope is not None:
            return self.latent(slope.outcome, Level.WITHIN) / self.latent(slope.predictor, Level.WITHIN)
        if name in self.structure.factors:
            f = self.structure.factors[name]
            m = self.marker(name)
            return self._obs[level][m] / abs(f.fixed_loadings().get(m, 1.0) or 1.0)
        return self._obs[level][name]

    def element_scale(self, kind: str, level: Level, element: str) -> tuple[float, float]:
        """(scale, center) for the default prior of one element."""
        if kind == "path":
            out, pred = element.split(" <- ")
            return self.latent(out, level) / self.latent(pred, level), 0.0
        if kind == "loading":
            ind, fac = element.split(" by ")
            return self.observed(ind, level) / self.latent(fac, level), 0.0
        if kind == "intercept":
            return self.total_sd[element], self.mean[element]
        if kind == "lv_sd":
            return self.latent(element, level), 0.0
        if kind == "resid_sd":
            return self.observed(element, level), 0.0
        if kind == "slope_sd":
            r = next(r for r in self.structure.random_slopes if r.name == element)
            return self.latent(r.outcome, Level.WITHIN) / self.latent(r.predictor, Level.WITHIN), 0.0
        return 1.0, 0.0


def _level_inits(ls: LevelStructure, structure: ModelStructure, scales: Scales) -> dict[str, np.ndarray]:
    s = ls.level.short
    out: dict[str, np.ndarray] = {}
    g = structure.groups
    if f"loading_{s}" in g:
        out[f"loading_{s}"] = np.ones(len(g[f"loading_{s}"]))
    if f"path_{s}" in g:
        # Slightly off zero: nutpie scales its initial mass matrix by the initial gradient, and at
        # exactly zero (or at the means, for intercepts) a gradient entry can vanish by symmetry.
        out[f"path_{s}"] = np.full(len(g[f"path_{s}"]), 0.01)
    outcomes = set(ls.beta_free[:, 0].tolist()) if len(ls.beta_free) else set()
    if f"lv_sd_{s}" in g:
        vals = []
        for lat_i, _ in ls.lv_sd_free:
            name = ls.latent[lat_i]
            share = 0.5 if name in structure.factors else 1.0
            if lat_i in outcomes:
                share *= 0.6
            vals.append(np.sqrt(share) * scales.latent(name, ls.level))
        out[f"lv_sd_{s}"] = np.asarray(vals)
    if f"resid_sd_{s}" in g:
        loaded = set(np.flatnonzero(np.abs(ls.lambda_fixed).sum(1) > 0)) | set(ls.lambda_free[:, 0].tolist())
        vals = []
        for obs_i, _ in ls.resid_sd_free:
            share = 0.5 if obs_i in loaded else 1.0
            vals.append(np.sqrt(share) * scales.observed(ls.observed[obs_i], ls.level))
        out[f"resid_sd_{s}"] = np.asarray(vals)
    for kind in ("lv_cor", "resid_cor"):
        if f"{kind}_{s}" in g:
            out[f"{kind}_{s}"] = np.zeros(len(g[f"{kind}_{s}"]))
    if f"slope_sd_{s}" in g:
        out[f"slope_sd_{s}"] = np.asarray(
            [0.3 * scales.element_scale("slope_sd", ls.level, e)[0] for e in g[f"slope_sd_{s}"].elements]
        )
    if f"intercept_{s}" in g:
        els = g[f"intercept_{s}"].elements
        out[f"intercept_{s}"] = np.asarray([scales.mean[v] + 0.01 * scales.total_sd[v] for v in els])
    return out


def initial_values(structure: ModelStructure, scales: Scales) -> dict[str, np.ndarray]:
    """Starting values in the main mode of a marker-identified model.

    Loadings start at 1 (positive, as the marker), paths near 0, factor
    variances at half the marker's level-specific variance, residual
    variances at the other half, intercepts near the observed means.  Chains
    started here stay clear of the sign-flipped local modes that random
    starts fall into.
    """
    out = _level_inits(structure.within, structure, scales)
    out.update(_level_inits(structure.between, structure, scales))
    return out
