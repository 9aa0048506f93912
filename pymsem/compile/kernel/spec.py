"""A model's level structures as two flat arrays that one compiled kernel reads.

The kernel is compiled once for all models (numba caches it on disk); what differs between
models (how many latents, which loadings are free, where each parameter sits in the
parameter vector) is data to it. Per level, the integer array holds::

    p, m, depth,
    n_loading, (row, col, pos) * n_loading,        Lambda[row, col] = theta[pos]
    n_path, (row, col, pos) * n_path,              B[row, col]
    n_lv_sd, (latent, pos) * n_lv_sd,              SD of a latent disturbance
    n_lv_cor, (i, j, pos) * n_lv_cor,              their correlations
    n_resid_sd, (observed, pos) * n_resid_sd,      SD of a residual
    n_resid_cor, (i, j, pos) * n_resid_cor,        their correlations
    n_intercept, (observed, pos) * n_intercept     intercepts (between level)

and the float array ``Lambda``'s fixed values (row-major), then the fixed SDs of the latent
disturbances and of the residuals. ``pos`` indexes the concatenated parameter vector
``theta``: the groups in :func:`theta_layout`'s order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymsem.compile.structure import LevelStructure, ModelStructure

__all__ = ["KernelSpec", "decode_level", "kernel_spec", "theta_layout"]

#: The kinds a level contributes to the kernel, in the order its integer array lists them.
SPEC_KINDS = ("loading", "path", "lv_sd", "lv_cor", "resid_sd", "resid_cor", "intercept")


@dataclass(frozen=True)
class KernelSpec:
    """The packed structure of both levels and where each parameter group sits in ``theta``."""

    ispec: np.ndarray  # int64: within level, then between level
    fspec: np.ndarray  # float64: within level, then between level
    groups: tuple[str, ...]  # parameter groups concatenated into theta, in order
    offsets: dict[str, int]  # each group's first position in theta
    n_theta: int
    p1: int  # level-1 variables (the first p1 between variables are their cluster means)


def theta_layout(structure: ModelStructure) -> tuple[tuple[str, ...], dict[str, int], int]:
    """The groups the likelihood reads (every group but the slope SDs) and their offsets in theta."""
    groups = tuple(name for name, g in structure.groups.items() if g.kind in SPEC_KINDS)
    offsets, pos = {}, 0
    for name in groups:
        offsets[name] = pos
        pos += len(structure.groups[name])
    return groups, offsets, pos


def _pack_level(ls: LevelStructure, offsets: dict[str, int]) -> tuple[list[int], list[float]]:
    s = ls.level.short

    def rows(arr: np.ndarray, kind: str) -> list[int]:
        arr = np.asarray(arr, dtype=np.int64)
        if not len(arr):
            return [0]
        base = offsets[f"{kind}_{s}"]
        out = arr.copy()
        out[:, -1] += base
        return [len(arr), *out.ravel().tolist()]

    ints = [ls.n_obs, ls.n_lat, int(ls.depth)]
    ints += rows(ls.lambda_free, "loading")
    ints += rows(ls.beta_free, "path")
    ints += rows(ls.lv_sd_free, "lv_sd")
    ints += rows(ls.lv_cor, "lv_cor")
    ints += rows(ls.resid_sd_free, "resid_sd")
    ints += rows(ls.resid_cor, "resid_cor")
    ints += rows(ls.intercept_free, "intercept")
    floats = [
        *np.asarray(ls.lambda_fixed, float).ravel().tolist(),
        *np.asarray(ls.lv_sd_fixed, float).tolist(),
        *np.asarray(ls.resid_sd_fixed, float).tolist(),
    ]
    return ints, floats


def kernel_spec(structure: ModelStructure) -> KernelSpec:
    """Pack ``structure`` for the kernel."""
    groups, offsets, n = theta_layout(structure)
    iw, fw = _pack_level(structure.within, offsets)
    ib, fb = _pack_level(structure.between, offsets)
    return KernelSpec(
        ispec=np.asarray(iw + ib, dtype=np.int64),
        fspec=np.asarray(fw + fb, dtype=np.float64),
        groups=groups,
        offsets=offsets,
        n_theta=n,
        p1=len(structure.level1),
    )


def decode_level(ispec: np.ndarray, fspec: np.ndarray, io: int, fo: int) -> tuple[dict, int, int]:
    """The index arrays of the level packed at ``(io, fo)``, and where the next level starts."""
    p, m, depth = (int(v) for v in ispec[io : io + 3])
    c = io + 3
    out: dict = {"p": p, "m": m, "depth": depth}
    for kind, width in zip(SPEC_KINDS, (3, 3, 2, 3, 2, 3, 2), strict=True):
        k = int(ispec[c])
        c += 1
        out[kind] = np.asarray(ispec[c : c + k * width], dtype=np.int64).reshape(k, width)
        c += k * width
    out["lambda_fixed"] = np.asarray(fspec[fo : fo + p * m], float).reshape(p, m)
    out["lv_sd_fixed"] = np.asarray(fspec[fo + p * m : fo + p * m + m], float)
    out["resid_sd_fixed"] = np.asarray(fspec[fo + p * m + m : fo + p * m + m + p], float)
    return out, c, fo + p * m + m + p
