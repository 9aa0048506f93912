"""Model-implied variances and covariances of latent variables and random slopes, per draw."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pymsem.compile.random_effects import posterior_level_matrices
from pymsem.compile.slopes import slope_covariance
from pymsem.specification.errors import MSEMSpecificationError, closest
from pymsem.specification.objects import Level, as_level

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["moments_function"]


def moments_function(fit: MSEMFit) -> Callable[[str, tuple[str, ...], str | None], np.ndarray]:
    """``moments(kind, names, level)`` for derived expressions: ``kind`` in var, cov, cor.

    Random slopes use their total (model-implied) covariance; latent and
    observed variables use the level's implied covariance (``Sigma_eta`` for
    latents, ``Sigma`` for observed indicators).
    """
    st = fit.structure
    vals = fit.parameter_draws()
    slopes = [r.name for r in st.random_slopes]
    cache: dict[Level, tuple] = {}

    def level_cov(level: Level) -> tuple:
        if level not in cache:
            ls = st.level(level)
            cache[level] = (ls, posterior_level_matrices(st, ls, vals, fit.posterior))
        return cache[level]

    def lookup(names: tuple[str, ...], level: str | None) -> tuple[np.ndarray, list[int]]:
        if all(n in slopes for n in names):
            return slope_covariance(st, fit.posterior, total=True), [slopes.index(n) for n in names]
        levels = [as_level(level)] if level else [Level.WITHIN, Level.BETWEEN]
        found = []
        for lv in levels:
            ls, M = level_cov(lv)
            if all(n in ls.latent for n in names):
                found.append((M.Sigma_eta, [ls.latent.index(n) for n in names], lv))
            elif all(n in ls.observed for n in names):
                found.append((M.Sigma, [ls.observed.index(n) for n in names], lv))
        if not found:
            known = set(slopes) | set(st.within.latent) | set(st.between.latent)
            bad = next((n for n in names if n not in known), names[0])
            raise MSEMSpecificationError(
                f"No random slope or {level or ''} variable named {bad!r} (or the names live at different "
                f"levels)." + closest(bad, known)
            )
        if len(found) > 1:
            raise MSEMSpecificationError(
                f"{', '.join(names)} exist at both levels: name the level, e.g. var({names[0]}, between)."
            )
        return found[0][0], found[0][1]

    def moments(kind: str, names: tuple[str, ...], level: str | None) -> np.ndarray:
        C, idx = lookup(names, level)
        if kind == "var":
            return C[..., idx[0], idx[0]]
        cov = C[..., idx[0], idx[1]]
        if kind == "cov":
            return cov
        return cov / np.sqrt(C[..., idx[0], idx[0]] * C[..., idx[1], idx[1]])

    return moments
