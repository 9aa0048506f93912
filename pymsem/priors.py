"""Priors as small declarative objects, with data-scaled defaults that are shown before sampling.

Defaults (``sd_x`` is the level-specific SD of a variable, from a one-way
ANOVA of the data; for a factor, that of its marker indicator):

=========================  ==============================================
kind                       default prior
=========================  ==============================================
regression slope           ``Normal(0, 2.5 * sd_outcome / sd_predictor)``
factor loading             ``Normal(0, 2.5 * sd_indicator / sd_marker)``
intercept (grand mean)     ``Normal(mean_x, 2.5 * sd_x)`` (total SD)
latent (residual) SD       ``HalfNormal(2.5 * sd_x)``
indicator residual SD      ``HalfNormal(2.5 * sd_x)``
correlations               ``Uniform(-1, 1)``
random slope SD            ``HalfNormal(sd_outcome / sd_predictor)`` (within)
random slope correlations  ``LKJCorr(eta=2)`` (key ``"slope_cor"``)
=========================  ==============================================

These are weakly informative on any data scale: they exclude only effects
that are implausibly large relative to the data's own spread.  Override
them per label (``"a_w"``), per PyMC variable (``"path_w"``), per element
(``"path_w[INT <- REL]"``) or per kind (``"path"``) with
:meth:`pymsem.MSEM.set_prior`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prior", "ResolvedPrior"]


class Prior:
    """A prior distribution: a PyMC distribution name and its parameters.

    Parameters
    ----------
    distribution
        Name of a PyMC distribution, e.g. ``"Normal"``, ``"HalfNormal"``,
        ``"TruncatedNormal"``, ``"StudentT"``, ``"Uniform"``.
    **params
        Its parameters (numbers), e.g. ``mu=0, sigma=1``.

    Examples
    --------
    >>> Prior("Normal", mu=0, sigma=0.5)
    Prior("Normal", mu=0, sigma=0.5)
    """

    __slots__ = ("distribution", "params")

    def __init__(self, distribution: str, **params: float) -> None:
        import pymc as pm

        if not isinstance(distribution, str) or not hasattr(pm, distribution):
            raise ValueError(
                f"Unknown PyMC distribution {distribution!r}: give the name of a PyMC distribution "
                f"class such as 'Normal', 'HalfNormal', 'StudentT' or 'Uniform'."
            )
        for k, v in params.items():
            if not np.isscalar(v) or not np.isfinite(v):
                raise ValueError(f"Prior parameter {k}={v!r} must be a finite number.")
        object.__setattr__(self, "distribution", distribution)
        object.__setattr__(self, "params", dict(sorted(params.items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Prior objects are immutable; create a new one.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f'Prior("{self.distribution}"{", " if args else ""}{args})'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prior) and (self.distribution, self.params) == (
            other.distribution,
            other.params,
        )

    def __hash__(self) -> int:
        return hash((self.distribution, tuple(self.params.items())))

    def to_dict(self) -> dict[str, Any]:
        """``{"distribution": ..., **params}``, the inverse of :meth:`from_dict`."""
        return {"distribution": self.distribution, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        d = dict(d)
        return cls(d.pop("distribution"), **d)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


@dataclass(frozen=True)
class ResolvedPrior:
    """The prior one free parameter will get, and where it came from."""

    prior: Prior
    source: str  # "default: ..." or "user: <key>"


def default_prior(kind: str, scale: float, center: float = 0.0) -> tuple[Prior, str]:
    """The default prior of a parameter kind, given its data scale.

    Returns the prior and a short description of the rule that set it.
    """
    scale = float(max(scale, 1e-8))
    if kind == "path":
        return Prior("Normal", mu=0.0, sigma=2.5 * scale), "2.5 x sd(outcome)/sd(predictor)"
    if kind == "loading":
        return Prior("Normal", mu=0.0, sigma=2.5 * scale), "2.5 x sd(indicator)/sd(marker)"
    if kind == "intercept":
        return Prior("Normal", mu=float(center), sigma=2.5 * scale), "mean, 2.5 x sd (total)"
    if kind in ("lv_sd", "resid_sd"):
        return Prior("HalfNormal", sigma=2.5 * scale), "2.5 x sd at this level"
    if kind == "slope_sd":
        return Prior("HalfNormal", sigma=scale), "sd(outcome)/sd(predictor), within"
    if kind in ("lv_cor", "resid_cor"):
        return Prior("Uniform", lower=-1.0, upper=1.0), "uniform correlation"
    raise KeyError(kind)
