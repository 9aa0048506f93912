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

import numbers
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
        Its parameters (finite numbers), e.g. ``mu=0, sigma=1``.

    Raises
    ------
    ValueError
        For an unknown distribution, a parameter that is not a finite number, a
        scale, precision, rate, shape, degrees of freedom or LKJ ``eta`` that is
        not > 0 (``sigma``, ``tau`` everywhere; ``beta`` of (Half)Cauchy;
        ``alpha``/``beta`` of Gamma, InverseGamma and Beta; ``lam`` of
        Exponential; ``nu`` of StudentT; ...), or ``lower`` not below ``upper``.
        The message names the distribution, the parameter and the rule.

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
        _check_params(distribution, params)
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


# Parameters that must be > 0, by distribution: scales, precisions, rates, shapes, degrees of
# freedom and LKJ's eta. PyMC accepts a bad value here silently and fails only when sampling (or
# never, with a meaningless posterior), so the Prior refuses it where the user wrote it. "*" applies
# to every distribution: in PyMC, sigma is always a scale and tau always a precision.
_POSITIVE: dict[str, tuple[str, ...]] = {
    "*": ("sigma", "tau"),
    "Beta": ("alpha", "beta", "nu"),
    "Cauchy": ("beta",),
    "ChiSquared": ("nu",),
    "Exponential": ("lam", "scale"),
    "Gamma": ("alpha", "beta", "mu"),
    "HalfCauchy": ("beta",),
    "HalfStudentT": ("nu", "lam"),
    "InverseGamma": ("alpha", "beta", "mu"),
    "Laplace": ("b",),
    "LKJCholeskyCov": ("eta",),
    "LKJCorr": ("eta",),
    "Logistic": ("s",),
    "StudentT": ("nu", "lam"),
    "Weibull": ("alpha", "beta"),
}
# Pairs that must be ordered, for every distribution that takes them (Uniform, TruncatedNormal, ...).
_ORDERED: tuple[tuple[str, str], ...] = (("lower", "upper"),)


def _check_params(distribution: str, params: dict[str, Any]) -> None:
    """Refuse a non-numeric or non-finite parameter, and one that breaks the rules above.

    Raises
    ------
    ValueError
        Naming the distribution, the parameter and the rule, e.g. ``sigma must be > 0``.
    """

    def show(v: Any) -> str:  # as the repr shows numbers (1, not np.float64(1.0))
        return _fmt(v) if _is_number(v) else repr(v)

    def refuse(rule: str) -> ValueError:
        args = ", ".join(f"{k}={show(v)}" for k, v in sorted(params.items()))
        return ValueError(f'Prior("{distribution}", {args}) is invalid: {rule}.')

    for k, v in params.items():
        if not _is_number(v):
            raise refuse(f"{k} must be a number (got {type(v).__name__} {v!r})")
        if not np.isfinite(float(v)):
            raise refuse(f"{k} must be a finite number (got {show(v)})")
    for k in _POSITIVE["*"] + _POSITIVE.get(distribution, ()):
        if k in params and not params[k] > 0:
            raise refuse(f"{k} must be > 0 (got {show(params[k])})")
    for lo, hi in _ORDERED:
        if lo in params and hi in params and not params[lo] < params[hi]:
            raise refuse(f"{lo} must be < {hi} (got {lo}={show(params[lo])}, {hi}={show(params[hi])})")


def _is_number(v: Any) -> bool:
    # bool is an int to Python, but True as a prior parameter is a mistake, not a number.
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


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
