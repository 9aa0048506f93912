"""Random-slope quantities on posterior draws: means, variances, correlations, cluster slopes."""

from __future__ import annotations

from typing import Any

import numpy as np

from pymsem.compile.slopes import slope_covariance, total_slope_deviations
from pymsem.compile.structure import ModelStructure
from pymsem.effects.standardized import QuantityDraws

__all__ = ["cluster_slopes", "random_slope_quantities"]


def random_slope_quantities(structure: ModelStructure, posterior: Any) -> list[QuantityDraws]:
    """Table 3's rows: each slope's mean and variance, each pair's correlation and covariance."""
    rs = structure.random_slopes
    if not rs:
        return []
    paths = np.asarray(posterior["path_w"].values)
    path_b = np.asarray(posterior["path_b"].values) if "path_b" in posterior else None
    T = slope_covariance(structure, posterior)
    moderated = any(r.moderators for r in rs)
    var_name = "residual variance" if moderated else "variance"
    out = []
    for r in rs:
        out.append(
            QuantityDraws(
                "between", "Random slopes", r.mean_label, f"{r.name} mean", paths[..., r.mean_index], None
            )
        )
    g = structure.groups.get("path_b")
    for r in rs:
        for lat, k in r.moderators:
            out.append(
                QuantityDraws(
                    "between", "Random slopes", (g.labels[k] or "") if g else "",
                    f"{r.name} <- {structure.between.latent[lat]}", path_b[..., k], None,
                )
            )  # fmt: skip
    for r in rs:
        for lat, k in r.predicts:
            out.append(
                QuantityDraws(
                    "between", "Random slopes", (g.labels[k] or "") if g else "",
                    f"{structure.between.latent[lat]} <- {r.name}", path_b[..., k], None,
                )
            )  # fmt: skip
    if any(r.disturbance_cors for r in rs):
        from pymsem.compile.matrices import level_matrices

        vals = {n: np.asarray(posterior[n].values) for n in structure.groups}
        Psi = level_matrices(structure.between, vals).Psi
        gc = structure.groups["lv_cor_b"]
        for i, r in enumerate(rs):
            for lat, k in r.disturbance_cors:
                cor = vals["lv_cor_b"][..., k]
                cov = cor * np.sqrt(Psi[..., lat, lat] * T[..., i, i])
                name = structure.between.latent[lat]
                label = gc.labels[k] or ""
                out.append(QuantityDraws("between", "Random slopes", label, f"{r.name} ~~ {name}", cov, cor))
    if any(r.covariances for r in rs):
        from pymsem.compile.matrices import level_matrices

        vals = {n: np.asarray(posterior[n].values) for n in structure.groups}
        S = level_matrices(structure.between, vals).Sigma_eta
        total = slope_covariance(structure, posterior, total=True)
        for i, r in enumerate(rs):
            for lat, label in r.covariances:
                cov = sum(path_b[..., k] * S[..., m, lat] for m, k in r.moderators)
                cor = cov / np.sqrt(total[..., i, i] * S[..., lat, lat])
                name = structure.between.latent[lat]
                out.append(QuantityDraws("between", "Random slopes", label, f"{r.name} ~~ {name}", cov, cor))
    for i, r in enumerate(rs):
        out.append(QuantityDraws("between", "Random slopes", "", f"{r.name} {var_name}", T[..., i, i], None))
    for i, a in enumerate(rs):
        for j in range(i + 1, len(rs)):
            b = rs[j]
            cor = T[..., i, j] / np.sqrt(T[..., i, i] * T[..., j, j])
            out.append(
                QuantityDraws(
                    "between",
                    "Random slopes",
                    a.cor_labels.get(b.name, ""),
                    f"{a.name}, {b.name} correlation",
                    cor,
                    None,
                )
            )
            out.append(
                QuantityDraws(
                    "between", "Random slopes", "", f"{a.name}, {b.name} covariance", T[..., i, j], cor
                )
            )
    return out


def cluster_slopes(structure: ModelStructure, posterior: Any, cluster_ids: list[str]) -> Any:
    """Each cluster's slopes (mean + deviation) as an ``xarray.Dataset`` over (chain, draw, cluster)."""
    import xarray as xr

    u = total_slope_deviations(structure, posterior)
    paths = np.asarray(posterior["path_w"].values)
    data = {
        r.name: (("chain", "draw", "cluster"), paths[..., r.mean_index][..., None] + u[..., i])
        for i, r in enumerate(structure.random_slopes)
    }
    return xr.Dataset(data, coords={"cluster": cluster_ids})
