"""Designs of a simulation study: clusters, cluster sizes, missing data and truth overrides.

A :class:`Design` is one cell of a study: how many clusters, how many units each (a number,
one number per cluster, or a distribution drawn anew in each replication from that
replication's seed), which share of which columns is missing and by which mechanism, and
optionally parameter values that replace the study's truth (an effect size varied across
designs). :func:`grid` crosses lists of these into a list of designs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pymsem.specification.errors import MSEMSpecificationError

__all__ = ["Design", "grid", "impose_missing"]

#: Cluster-size distributions by name: ``("uniform", lo, hi)`` integers lo..hi inclusive,
#: ``("poisson", mean)`` (at least 1), ``("normal", mean, sd)`` rounded (at least 1).
DISTRIBUTIONS = ("uniform", "poisson", "normal")
MECHANISMS = ("MCAR", "MAR")

ClusterSize = int | Sequence[int] | tuple | Callable[[np.random.Generator, int], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Design:
    """One cell of a simulation study.

    Parameters
    ----------
    n_clusters
        Number of clusters (schools).
    cluster_size
        Units per cluster: an int (balanced); a sequence of ``n_clusters`` ints (unbalanced,
        the same in every replication); a distribution drawn per replication with the
        replication's seed, ``("uniform", lo, hi)`` (integers lo..hi inclusive),
        ``("poisson", mean)`` or ``("normal", mean, sd)`` (rounded, at least 1); or a callable
        ``f(rng, n_clusters) -> sizes``.
    missing
        Share of cells set missing in ``missing_columns`` (0 to < 1).
    mechanism
        ``"MCAR"`` (every cell equally likely) or ``"MAR"`` (the probability rises with the
        observed, always complete column ``mar_on``: logistic in its standardized value with
        slope ``mar_strength``, the intercept set so the expected share is ``missing``).
    missing_columns
        Columns that receive missing cells (default: every simulated level-1 column except
        ``mar_on``).
    mar_on
        The always-observed column MAR missingness depends on (required for ``"MAR"``).
    mar_strength
        Logistic slope of MAR missingness per SD of ``mar_on``.
    truth
        Parameter values that replace the study's truth in this design (e.g. ``{"a_w": 0.2}``).
    name
        A short name for tables and files (default: built from the settings).

    Notes
    -----
    A worker reuses its compiled model for every replication whose data have the same shape
    (:mod:`pymsem.reuse`): fixed cluster sizes without missing data compile once per design and
    worker, then cost sampling only. Missing cells change the shape (the missingness patterns)
    in every replication, and so do cluster sizes drawn per replication, mostly: those
    replications compile anew (tens of seconds each). Callables (``cluster_size``) must be
    importable, module-level functions for worker processes and Dask.
    """

    n_clusters: int
    cluster_size: Any = 20
    missing: float = 0.0
    mechanism: str = "MCAR"
    missing_columns: tuple[str, ...] | None = None
    mar_on: str | None = None
    mar_strength: float = 1.0
    truth: Mapping[str, float] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if int(self.n_clusters) != self.n_clusters or self.n_clusters < 2:
            raise MSEMSpecificationError(
                f"Design n_clusters must be an integer >= 2, got {self.n_clusters!r}."
            )
        if not 0 <= self.missing < 1:
            raise MSEMSpecificationError(f"Design missing must be a share in [0, 1), got {self.missing!r}.")
        if self.mechanism not in MECHANISMS:
            raise MSEMSpecificationError(
                f"Design mechanism must be one of {MECHANISMS}, got {self.mechanism!r}."
            )
        if self.mechanism == "MAR" and self.missing > 0 and not self.mar_on:
            raise MSEMSpecificationError(
                "MAR missingness needs mar_on=: the always-observed column the probability depends on."
            )
        if self.missing_columns is not None:
            object.__setattr__(self, "missing_columns", tuple(self.missing_columns))
        cs = self.cluster_size
        if isinstance(cs, tuple) and cs and isinstance(cs[0], str):
            if cs[0] not in DISTRIBUTIONS:
                raise MSEMSpecificationError(
                    f"Cluster-size distribution {cs[0]!r} is unknown; use one of {DISTRIBUTIONS} "
                    f"or a callable f(rng, n_clusters)."
                )
        elif isinstance(cs, Sequence) and not isinstance(cs, str):
            if len(cs) != self.n_clusters:
                raise MSEMSpecificationError(
                    f"cluster_size has {len(cs)} entries for {self.n_clusters} clusters; give one per cluster."
                )
        if self.truth is not None:
            object.__setattr__(self, "truth", dict(self.truth))

    # ------------------------------------------------------------------ labels
    def size_label(self) -> str:
        """The cluster size as text: ``20``, ``uniform(6, 54)``, ``mean 17.3`` or a callable's name."""
        cs = self.cluster_size
        if isinstance(cs, int | np.integer):
            return str(int(cs))
        if isinstance(cs, tuple) and cs and isinstance(cs[0], str):
            return f"{cs[0]}({', '.join(map(str, cs[1:]))})"
        if callable(cs):
            return getattr(cs, "__name__", "custom")
        return f"mean {np.mean(cs):.1f}"

    @property
    def label(self) -> str:
        """A short name: ``name``, else e.g. ``J=50 n=20 miss=0.1 MAR``."""
        if self.name:
            return self.name
        s = f"J={self.n_clusters} n={self.size_label()}"
        if self.missing:
            s += f" miss={self.missing:g} {self.mechanism}"
        if self.truth:
            s += " " + " ".join(f"{k}={v:g}" for k, v in self.truth.items())
        return s

    def columns(self) -> dict[str, Any]:
        """The design's settings as table columns."""
        return {
            "design_name": self.label,
            "n_clusters": int(self.n_clusters),
            "cluster_size": self.size_label(),
            "missing": float(self.missing),
            "mechanism": self.mechanism if self.missing else "",
        }

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, compared on resume (a changed design is a different study)."""
        cs = self.cluster_size
        if callable(cs):
            cs = f"callable:{getattr(cs, '__qualname__', 'custom')}"
        elif not isinstance(cs, int | str):
            cs = [x if isinstance(x, str) else float(x) for x in cs]
        return {
            "n_clusters": int(self.n_clusters),
            "cluster_size": cs,
            "missing": float(self.missing),
            "mechanism": self.mechanism,
            "missing_columns": list(self.missing_columns) if self.missing_columns else None,
            "mar_on": self.mar_on,
            "mar_strength": float(self.mar_strength),
            "truth": dict(self.truth) if self.truth else None,
            "name": self.label,
        }

    # ------------------------------------------------------------------ draws
    def sizes(self, rng: np.random.Generator) -> np.ndarray:
        """Units per cluster for one replication (distributions drawn from ``rng``)."""
        cs, n = self.cluster_size, int(self.n_clusters)
        if isinstance(cs, int | np.integer):
            out = np.full(n, int(cs))
        elif isinstance(cs, tuple) and cs and isinstance(cs[0], str):
            kind, *args = cs
            if kind == "uniform":
                out = rng.integers(int(args[0]), int(args[1]) + 1, size=n)
            elif kind == "poisson":
                out = rng.poisson(float(args[0]), size=n)
            else:
                out = np.rint(rng.normal(float(args[0]), float(args[1]), size=n)).astype(int)
            out = np.maximum(out, 1)
        elif callable(cs):
            out = np.asarray(cs(rng, n), dtype=int)
            if out.shape != (n,):
                raise MSEMSpecificationError(
                    f"The cluster_size callable returned shape {out.shape}; it must return {n} sizes."
                )
        else:
            out = np.asarray(cs, dtype=int)
        if (out < 1).any():
            raise MSEMSpecificationError("Every cluster needs at least one unit (cluster_size >= 1).")
        return out


def grid(
    n_clusters: int | Sequence[int],
    cluster_size: Any = 20,
    missing: float | Sequence[float] = 0.0,
    mechanism: str = "MCAR",
    truth: Sequence[Mapping[str, float] | None] | None = None,
    **kwargs: Any,
) -> list[Design]:
    """Every combination of the given settings, as a list of :class:`Design`.

    ``n_clusters`` and ``missing`` take lists; ``cluster_size`` a list of settings (a bare int
    or distribution tuple is one setting); ``truth`` a list of overrides (effect sizes).
    Other keywords go to every :class:`Design`.

    >>> [d.label for d in grid([30, 50], cluster_size=[10, 20])]
    ['J=30 n=10', 'J=30 n=20', 'J=50 n=10', 'J=50 n=20']
    """
    ns = [n_clusters] if isinstance(n_clusters, int | np.integer) else list(n_clusters)
    if (
        isinstance(cluster_size, int | np.integer)
        or callable(cluster_size)
        or (isinstance(cluster_size, tuple) and cluster_size and isinstance(cluster_size[0], str))
    ):
        sizes = [cluster_size]
    else:
        sizes = list(cluster_size)
    shares = [missing] if isinstance(missing, int | float) else list(missing)
    truths = [None] if truth is None else list(truth)
    return [
        Design(int(n), s, float(m), mechanism, truth=t, **kwargs)
        for n, s, m, t in itertools.product(ns, sizes, shares, truths)
    ]


def impose_missing(
    df: pd.DataFrame, design: Design, columns: Sequence[str], rng: np.random.Generator
) -> pd.DataFrame:
    """``df`` with cells of ``columns`` set missing as the design says (a copy when any are)."""
    if not design.missing:
        return df
    cols = list(design.missing_columns or [c for c in columns if c != design.mar_on])
    unknown = [c for c in cols if c not in df.columns]
    if unknown:
        raise MSEMSpecificationError(
            f"missing_columns {unknown} are not simulated columns; choose from {list(columns)}."
        )
    n = len(df)
    if design.mechanism == "MCAR":
        p = np.full(n, design.missing)
    else:
        if design.mar_on not in df.columns:
            raise MSEMSpecificationError(
                f"mar_on column {design.mar_on!r} is not simulated; choose from {list(df.columns)}."
            )
        x = df[design.mar_on].to_numpy(dtype=float)
        z = (x - x.mean()) / (x.std() or 1.0)
        p = _logistic_share(z, design.mar_strength, design.missing)
    out = df.copy()
    for c in cols:
        hit = rng.random(n) < p
        out.loc[hit, c] = np.nan
    return out


def _logistic_share(z: np.ndarray, slope: float, share: float) -> np.ndarray:
    """Probabilities ``expit(alpha + slope z)`` whose mean is ``share`` (alpha by bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + slope * z)))) < share:
            lo = mid
        else:
            hi = mid
    return 1 / (1 + np.exp(-((lo + hi) / 2 + slope * z)))
