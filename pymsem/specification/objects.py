"""Declarative, immutable specification objects.

These objects say *what* the model is, in the vocabulary of lavaan and Blimp
(levels, latent variables measured ``by`` indicators, regressions ``~``,
covariances ``~~``, labels).  They hold no data and build no PyMC objects:
:mod:`pymsem.compile` lowers them to matrices and a ``pm.Model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = [
    "Covariance",
    "Derived",
    "Latent",
    "Level",
    "Path",
    "RandomSlope",
    "as_level",
]


class Level(StrEnum):
    """A level of the two-level model.

    ``within`` holds the student-level (level-1) deviations from the cluster
    means; ``between`` holds the cluster-level (level-2) quantities: latent
    cluster means, between-level factors and level-2 observed variables.
    """

    WITHIN = "within"
    BETWEEN = "between"

    @property
    def short(self) -> str:
        """``"w"`` or ``"b"``, the suffix used in PyMC variable names."""
        return "w" if self is Level.WITHIN else "b"

    def __str__(self) -> str:
        return self.value


_LEVEL_ALIASES = {
    "within": Level.WITHIN,
    "w": Level.WITHIN,
    "l1": Level.WITHIN,
    "level1": Level.WITHIN,
    "between": Level.BETWEEN,
    "b": Level.BETWEEN,
    "l2": Level.BETWEEN,
    "level2": Level.BETWEEN,
}


def as_level(value: Level | str) -> Level:
    """Convert ``"within"``/``"between"`` (or ``"w"``, ``"b"``, ``"l1"``, ``"l2"``) to a :class:`Level`."""
    if isinstance(value, Level):
        return value
    key = str(value).strip().lower()
    if key not in _LEVEL_ALIASES:
        raise ValueError(f"Unknown level {value!r}. Use 'within' (level 1) or 'between' (level 2).")
    return _LEVEL_ALIASES[key]


@dataclass(frozen=True)
class Latent:
    """A latent factor measured by observed indicators (lavaan's ``=~``, Blimp's ``->``).

    Parameters
    ----------
    name
        Name of the factor; the same name is used at every level it exists on.
    indicators
        Observed columns that load on the factor.
    levels
        Levels at which the factor exists. A factor at both levels has a
        within part (student scores) and a between part (cluster scores).
    fix
        Loadings fixed to a value, ``{indicator: value}``. By default the
        first indicator's loading is fixed to 1 (marker-variable scaling).
    free
        Indicators whose loading is freed, e.g. the marker. If no loading
        remains fixed, the factor's (residual) variance is fixed to 1 instead.
    between_residuals
        ``"free"`` (default) estimates the between-level residual variance of
        each indicator; ``0`` fixes them to zero (Blimp's ``| 0``), so that all
        between-cluster variation of the indicators runs through the factor.
    """

    name: str
    indicators: tuple[str, ...]
    levels: tuple[Level, ...] = (Level.WITHIN, Level.BETWEEN)
    fix: tuple[tuple[str, float], ...] = ()
    free: tuple[str, ...] = ()
    between_residuals: Literal["free", 0] = "free"

    def fixed_loadings(self) -> dict[str, float]:
        """Loadings held fixed: the marker (unless freed) plus ``fix``."""
        fixed = dict(self.fix)
        if not fixed and self.indicators and self.indicators[0] not in self.free:
            fixed[self.indicators[0]] = 1.0
        for ind in self.free:
            fixed.pop(ind, None)
        return fixed


@dataclass(frozen=True)
class RandomSlope:
    """A regression slope that varies over clusters (Blimp's ``X@RSa``).

    The cluster-specific slope is a between-level latent variable,
    ``slope_g = mean + u_g``; its deviations ``u_g`` are multivariate normal
    with the other random slopes (LKJ prior on their correlation).

    Parameters
    ----------
    name
        Name of the random slope, e.g. ``"RSa"``; usable as a between-level
        variable in paths, covariances and derived quantities.
    mean_label
        Label of the slope's mean (the average within-cluster effect), e.g.
        ``"a_w"``. Defaults to ``name + "_mean"``.
    """

    name: str
    mean_label: str | None = None

    @property
    def mean_name(self) -> str:
        return self.mean_label or f"{self.name}_mean"


@dataclass(frozen=True)
class Path:
    """A regression ``outcome ~ predictors`` at one level.

    Parameters
    ----------
    outcome
        The dependent variable: a latent factor or an observed column.
    predictors
        The predictors, latent factors or observed columns at the same level.
    level
        The level of the regression.
    labels
        One label per predictor (``None`` for unlabeled coefficients).
    random
        One :class:`RandomSlope` (or ``None``) per predictor.
    """

    outcome: str
    predictors: tuple[str, ...]
    level: Level
    labels: tuple[str | None, ...] = ()
    random: tuple[RandomSlope | None, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.predictors)
        if not self.labels:
            object.__setattr__(self, "labels", (None,) * n)
        if not self.random:
            object.__setattr__(self, "random", (None,) * n)
        if len(self.labels) != n:
            raise ValueError(
                f"Path {self.outcome} ~ {' + '.join(self.predictors)}: {len(self.labels)} labels "
                f"for {n} predictors. Give one label per predictor (None for unlabeled)."
            )
        if len(self.random) != n:
            raise ValueError(
                f"Path {self.outcome} ~ {' + '.join(self.predictors)}: give one random slope "
                f"(or None) per predictor."
            )


@dataclass(frozen=True)
class Covariance:
    """A (residual) covariance ``a ~~ b`` at one level, estimated as a correlation."""

    a: str
    b: str
    level: Level
    label: str | None = None


@dataclass(frozen=True)
class Derived:
    """A quantity computed from the posterior draws (Blimp's ``PARAMETERS`` block).

    Parameters
    ----------
    name
        Label of the quantity, e.g. ``"med_w"``.
    expression
        An expression over labels, e.g. ``"a_b * b_b"``; parsed with :mod:`ast`,
        never evaluated as Python.
    """

    name: str
    expression: str = field(default="")
