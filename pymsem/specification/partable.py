"""The parameter table: one row per statement, written by every front end, read by compile.

As in lavaan, a model is a list of statements ``lhs op rhs`` with a level, a
label, an optional fixed value and (pymsem's extension) a random slope. The
fluent builder (:class:`~pymsem.MSEM`), the lavaan front end and the Blimp
front end all write these rows; :func:`pymsem.compile.structure.lower` reads
only them and adds the defaults (marker loadings, residual variances, the
covariances of exogenous variables, grand means), which
:meth:`MSEM.parameters` shows.

Operators:

``=~``
    ``lhs`` (a factor) is measured by ``rhs`` (an observed column).
``~``
    ``lhs`` is regressed on ``rhs``; ``random`` names a random slope.
``~~``
    (residual) covariance of ``lhs`` and ``rhs``; a variance when they are equal.
``~1``
    the intercept (mean) of ``lhs``: the grand mean of a level-2 variable, or the
    mean of a random slope (its average within-cluster effect).
``:=``
    a defined quantity, ``lhs := rhs``, computed from the posterior draws.

Parameters that share a label are one parameter (equality constraints).
Levels are numbered (1 within, 2 between) so that a third level needs no new
kind of row; users write ``"within"`` and ``"between"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd

from pymsem.specification.errors import MSEMSpecificationError
from pymsem.specification.objects import Covariance, Latent, Level, Path, RandomSlope

__all__ = ["OPS", "ParameterTable", "Statement", "level_name", "level_number"]

#: Operators of the table, in lavaan's notation.
OPS = ("=~", "~", "~~", "~1", ":=")

_NUMBERS = {Level.WITHIN: 1, Level.BETWEEN: 2}
_LEVELS = {1: Level.WITHIN, 2: Level.BETWEEN}


def level_number(level: Level | str | int) -> int:
    """1 for the within (student) level, 2 for the between (cluster) level."""
    if isinstance(level, int) and not isinstance(level, bool):
        if level not in _LEVELS:
            raise MSEMSpecificationError(f"Level {level}: two-level models have levels 1 and 2.")
        return level
    from pymsem.specification.objects import as_level

    return _NUMBERS[as_level(level)]


def level_name(number: int) -> Level:
    """The :class:`Level` of a level number."""
    return _LEVELS[number]


@dataclass(frozen=True)
class Statement:
    """One row of the parameter table.

    Parameters
    ----------
    level
        1 (within) or 2 (between); 0 for defined quantities (``:=``).
    lhs, op, rhs
        The statement, e.g. ``("INT", "~", "REL")``; ``rhs`` is ``""`` for ``~1``
        and the expression for ``:=``.
    label
        The parameter's label (``a_w``); rows sharing a label are one parameter.
    fixed
        A fixed value (lavaan's ``1*x``), or ``None`` for a free parameter.
    free
        Freed explicitly (lavaan's ``NA*x``, e.g. to free a marker loading).
    random
        For ``~`` at level 1: the name of the random slope of this path.
    origin
        Where the row came from (``"lavaan line 3"``), for error messages.
    """

    level: int
    lhs: str
    op: str
    rhs: str = ""
    label: str | None = None
    fixed: float | None = None
    free: bool = False
    random: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise MSEMSpecificationError(f"Unknown operator {self.op!r}{self._where}; use one of {OPS}.")
        if self.fixed is not None and self.free:
            raise MSEMSpecificationError(
                f"{self.text()}{self._where}: a parameter cannot be fixed and free at once."
            )
        if self.fixed is not None and self.label is not None:
            raise MSEMSpecificationError(
                f"{self.text()}{self._where}: parameter {self.label!r} is both labelled and fixed to "
                f"{self.fixed:g}. A label makes parameters equal to each other; a fixed value needs no label."
            )
        if self.label is not None and not str(self.label).isidentifier():
            raise MSEMSpecificationError(
                f"Label {self.label!r} for {self.text()}{self._where} is not a valid name: use letters, "
                f"digits and underscores, starting with a letter."
            )

    @property
    def _where(self) -> str:
        return f" ({self.origin})" if self.origin else ""

    @property
    def level_enum(self) -> Level:
        return _LEVELS[self.level]

    def text(self) -> str:
        """The row in lavaan-like notation, e.g. ``INT ~ REL``."""
        if self.op == "~1":
            return f"{self.lhs} ~ 1"
        if self.op == ":=":
            return f"{self.lhs} := {self.rhs}"
        return f"{self.lhs} {self.op} {self.rhs}"


@dataclass
class ParameterTable:
    """The model's statements, in the order they were written."""

    rows: list[Statement] = field(default_factory=list)

    def add(self, row: Statement) -> None:
        self.rows.append(row)

    def extend(self, rows: Iterable[Statement]) -> None:
        for r in rows:
            self.add(r)

    def __iter__(self) -> Iterator[Statement]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, op: str | None = None, level: int | None = None) -> list[Statement]:
        return [r for r in self.rows if (op is None or r.op == op) and (level is None or r.level == level)]

    def to_frame(self) -> pd.DataFrame:
        """The statements as a DataFrame (what the user wrote, before defaults)."""
        cols = ["level", "lhs", "op", "rhs", "label", "fixed", "free", "random", "origin"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.rows], columns=cols)

    # ------------------------------------------------------------- views
    def random_slopes(self) -> dict[str, Statement]:
        """Random slope name -> the level-1 path row it modifies."""
        out: dict[str, Statement] = {}
        for r in self.select("~"):
            if r.random is not None:
                if r.random in out:
                    prev = out[r.random]
                    raise MSEMSpecificationError(
                        f"Random slope name {r.random!r} is used for {prev.text()} and for {r.text()}."
                    )
                out[r.random] = r
        return out

    def slope_mean_label(self, slope: str, path_label: str | None) -> str:
        """The label of a random slope's mean: the path's label, or ``slope ~ 1`` labelled."""
        means = [r for r in self.select("~1") if r.lhs == slope]
        labels = {r.label for r in means if r.label} | ({path_label} if path_label else set())
        if len(labels) > 1:
            raise MSEMSpecificationError(
                f"Random slope {slope!r}: its mean is labelled both {sorted(labels)[0]!r} and "
                f"{sorted(labels)[1]!r}; give the label once."
            )
        return labels.pop() if labels else f"{slope}_mean"

    def latents(self) -> list[Latent]:
        """One :class:`Latent` per factor, with the levels at which it is measured."""
        order: dict[str, dict[int, list[Statement]]] = {}
        for r in self.select("=~"):
            order.setdefault(r.lhs, {}).setdefault(r.level, []).append(r)
        out = []
        for name, by_level in order.items():
            levels = sorted(by_level)
            inds = [[r.rhs for r in by_level[lv]] for lv in levels]
            for ind in inds:
                if len(set(ind)) != len(ind):
                    raise MSEMSpecificationError(f"Latent {name!r} lists an indicator twice.")
            if len(inds) > 1 and set(inds[0]) != set(inds[1]):
                raise MSEMSpecificationError(
                    f"Factor {name!r} has indicators {inds[0]} within and {inds[1]} between clusters. "
                    f"A factor at both levels has the same indicators at each; give the between factor "
                    f"another name (e.g. {name + '_b'!r}) to measure it differently."
                )
            first = by_level[levels[0]]
            fix = tuple((r.rhs, float(r.fixed)) for r in first if r.fixed is not None)
            free = tuple(r.rhs for r in first if r.free)
            b_zero = 0 if self._between_residuals_zero(inds[-1]) and 2 in by_level else "free"
            out.append(
                Latent(
                    name,
                    tuple(inds[0]),
                    tuple(level_name(lv) for lv in levels),
                    fix=fix,
                    free=free,
                    between_residuals=b_zero,
                )
            )
        return out

    def _between_residuals_zero(self, indicators: list[str]) -> bool:
        zero = {r.lhs for r in self.select("~~", 2) if r.lhs == r.rhs and r.fixed == 0.0}
        return bool(indicators) and all(i in zero for i in indicators)

    def paths(self) -> list[Path]:
        """The regressions, one :class:`Path` per outcome and level, predictors in written order."""
        groups: dict[tuple[int, str], list[Statement]] = {}
        for r in self.select("~"):
            groups.setdefault((r.level, r.lhs), []).append(r)
        out = []
        for (lv, lhs), rows in groups.items():
            rnd = tuple(
                RandomSlope(r.random, self.slope_mean_label(r.random, r.label)) if r.random else None
                for r in rows
            )
            labels = tuple(None if r.random else r.label for r in rows)
            out.append(Path(lhs, tuple(r.rhs for r in rows), level_name(lv), labels, rnd))
        return out

    def covariances(self) -> list[Covariance]:
        """Covariances between two different variables (variances are defaults or fixed values)."""
        return [
            Covariance(r.lhs, r.rhs, r.level_enum, r.label)
            for r in self.select("~~")
            if r.lhs != r.rhs and r.fixed is None
        ]

    def fixed_zero_covariances(self, level: int) -> set[frozenset[str]]:
        """Pairs whose covariance is fixed to 0 (``x ~~ 0*y``): no default covariance for them."""
        return {
            frozenset((r.lhs, r.rhs))
            for r in self.select("~~", level)
            if r.lhs != r.rhs and r.fixed is not None
        }

    def derived(self) -> list[tuple[str, str]]:
        """``(name, expression)`` of the defined quantities."""
        return [(r.lhs, r.rhs) for r in self.select(":=")]

    def without(self, predicate) -> ParameterTable:  # type: ignore[no-untyped-def]
        return ParameterTable([r for r in self.rows if not predicate(r)])
