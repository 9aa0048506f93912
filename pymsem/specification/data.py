"""Checks and summaries of the user's data frame: cluster ids, levels of variables, scales."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pymsem.specification.errors import MSEMDataError, closest

__all__ = ["ClusteredData", "prepare_data"]


@dataclass(frozen=True)
class ClusteredData:
    """Numeric data sorted by cluster, with what the compiler needs to know about it.

    Attributes
    ----------
    frame
        The used columns, sorted by cluster (stable), as float.
    cluster
        Name of the cluster column.
    cluster_ids
        Sorted unique cluster ids (the ``cluster`` coordinate).
    cluster_index
        Integer cluster position of every row.
    sizes
        Number of rows in each cluster.
    level2
        Columns that are constant within every cluster (missing values aside).
    excluded_rows
        Positions (in the user's data) of rows left out because their cluster id
        is missing (only with ``drop_missing_cluster=True``).
    """

    frame: pd.DataFrame
    cluster: str
    cluster_ids: np.ndarray
    cluster_index: np.ndarray
    sizes: np.ndarray
    level2: frozenset[str]
    excluded_rows: tuple[int, ...] = ()
    source_rows: np.ndarray | None = None  # position in the user's data of every row of ``frame``
    #: Ordinal columns (``frame`` holds their category codes 0..K-1), see
    #: :mod:`pymsem.specification.ordinal`.
    ordinal: dict[str, Any] = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        return len(self.frame)

    @property
    def has_missing(self) -> bool:
        """Whether any used cell is missing."""
        return bool(self.frame.isna().to_numpy().any())

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ids)

    def cluster_values(self, column: str) -> np.ndarray:
        """One value per cluster of a level-2 column (NaN where the cluster has none observed)."""
        x = self.frame[column].to_numpy(dtype=float)
        ok = ~np.isnan(x)
        out = np.full(self.n_clusters, np.nan)
        # Rows are sorted by cluster, so the last write per cluster is one of its observed values.
        out[self.cluster_index[ok]] = x[ok]
        return out

    def cluster_means(self, column: str) -> np.ndarray:
        """Each cluster's mean of its observed values (NaN where it has none); a level-2 column's value."""
        if column in self.level2:
            return self.cluster_values(column)
        x = self.frame[column].to_numpy(dtype=float)
        ok = ~np.isnan(x)
        n = np.bincount(self.cluster_index[ok], minlength=self.n_clusters)
        tot = np.bincount(self.cluster_index[ok], weights=x[ok], minlength=self.n_clusters)
        return np.where(n > 0, tot / np.maximum(n, 1), np.nan)

    def level2_values(self, columns: list[str]) -> np.ndarray:
        """``(clusters, len(columns))`` values of level-2 columns (NaN where a cluster has none)."""
        if not columns:
            return np.zeros((self.n_clusters, 0))
        return np.column_stack([self.cluster_values(c) for c in columns])

    def variance_components(self, column: str) -> tuple[float, float]:
        """Within and between variance of a column (one-way ANOVA estimates).

        The between component is the variance of the cluster means minus the
        within variance over the average cluster size, floored at a small
        share of the total so that data-scaled priors never collapse to zero.
        """
        x = self.frame[column].to_numpy(dtype=float)
        if column in self.level2:
            v = self.cluster_values(column)
            return 0.0, float(np.var(v[~np.isnan(v)], ddof=1))
        ok = ~np.isnan(x)  # observed values only: these scales set priors and starting values
        idx, x = self.cluster_index[ok], x[ok]
        sizes = np.bincount(idx, minlength=self.n_clusters)
        has = sizes > 0
        cluster_means = self.cluster_means(column)
        means = cluster_means[has]
        dev = x - cluster_means[idx]
        dof = max(len(x) - int(has.sum()), 1)
        within = float(dev @ dev / dof)
        n_bar = float(np.mean(sizes[has]))
        between = float(np.var(means, ddof=1)) - within / n_bar
        total = float(np.var(x, ddof=1))
        return within, max(between, 0.01 * total)


# Largest magnitude accepted in a used column. The data's variances (which set the default priors
# and starting values) square it: x**2 overflows float64 (max ~1.8e308) once |x| > ~1.3e154, and a
# sum of squared deviations (up to (2x)**2 per row) overflows sooner. At |x| <= 1e150 every square is
# <= 4e300, so sums over tens of millions of rows stay finite. No real measurement comes near this;
# such a value is a missing-value code (1e300, 9.9e307) or a data-entry error.
MAX_ABS_VALUE = 1e150

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # pymsem/, for warnings' location


def prepare_data(
    data: pd.DataFrame, cluster: str, columns: list[str], drop_missing_cluster: bool = False
) -> ClusteredData:
    """Validate and sort the data for the columns a model uses.

    Missing values of used columns are kept (as NaN): the likelihood models
    them. A row whose cluster id is missing cannot be placed in a cluster; it
    is refused unless ``drop_missing_cluster`` is set, in which case it is left
    out and reported (``excluded_rows``).

    Parameters
    ----------
    data
        The user's data frame.
    cluster
        Name of the cluster column.
    columns
        The columns the model uses.
    drop_missing_cluster
        Leave out rows whose cluster id is missing instead of refusing them.

    Returns
    -------
    ClusteredData
        The used columns as float, sorted by cluster.

    Raises
    ------
    MSEMDataError
        When the data have no rows; the cluster column or a used column is
        absent or shares its name with another column; a used column is not
        numeric (or is boolean or complex), has no observed value, has an
        infinite value or one beyond ``MAX_ABS_VALUE`` in magnitude, or has a
        single distinct observed value (no variance); the cluster column has
        missing values (and ``drop_missing_cluster`` is not set) or nothing but
        missing values; or there are fewer than two clusters.

    Warns
    -----
    UserWarning
        When every cluster has a single row (every column is then level-2),
        which usually means a row id was given as the cluster column.
    """
    if not isinstance(data, pd.DataFrame):
        raise MSEMDataError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    if cluster not in data.columns:
        raise MSEMDataError(
            f"Cluster column {cluster!r} is not in the data." + closest(cluster, list(map(str, data.columns)))
        )
    missing_cols = [c for c in columns if c not in data.columns]
    if missing_cols:
        c = missing_cols[0]
        raise MSEMDataError(
            f"Variable {c!r} is used in the model but is not a column of the data, and it is not "
            f"declared as a latent variable." + closest(c, list(map(str, data.columns)))
        )
    # Before anything selects a column by name: with a duplicated name, data[c] is a frame, and
    # pandas fails far from the cause. Copies of columns the model does not use are harmless.
    _check_unique_columns(data, cluster, columns)
    if len(data) == 0:
        raise MSEMDataError("The data have no rows.")
    ids = data[cluster]
    excluded: tuple[int, ...] = ()
    kept = np.arange(len(data))
    if ids.isna().any():
        bad = np.flatnonzero(ids.isna().to_numpy())
        if not drop_missing_cluster:
            raise MSEMDataError(
                f"Cluster column {cluster!r} has {len(bad)} missing value(s) (rows with index "
                f"{_row_labels(data.index, bad, 10)}). A row without a cluster cannot be placed: fill in "
                f"the cluster ids, or pass drop_missing_cluster=True to MSEM(...) to leave these rows "
                f"out (the fit reports how many)."
            )
        if len(bad) == len(data):
            raise MSEMDataError(
                f"Cluster column {cluster!r} is missing in every row ({len(data)}), so no row is left "
                f"once rows without a cluster are dropped. Check that {cluster!r} is the cluster id column."
            )
        excluded = tuple(int(i) for i in bad)
        kept = np.flatnonzero(ids.notna().to_numpy())
        data = data.iloc[kept]
        ids = data[cluster]
    for c in columns:
        problem = _numeric_problem(data[c], c)
        if problem:
            raise MSEMDataError(problem)
    for c in columns:
        if data[c].isna().all():
            raise MSEMDataError(
                f"Column {c!r} has no observed value (all {len(data)} rows are missing); drop it from "
                f"the model or fix the data."
            )
    for c in columns:
        _check_values(data[c], c)
    order = np.argsort(pd.factorize(ids, sort=True)[0], kind="stable")
    frame = data.iloc[order][columns].astype(float).reset_index(drop=True)
    codes, uniques = pd.factorize(ids.iloc[order], sort=True)
    if len(uniques) < 2:
        raise MSEMDataError(
            f"Cluster column {cluster!r} has {len(uniques)} distinct value; a two-level model needs "
            f"at least 2 clusters (and many more for stable between-level estimates)."
        )
    sizes = np.bincount(codes)
    if sizes.max() == 1:
        # The model can still run (everything is between-level), but this is rarely what was meant.
        warnings.warn(
            f"Every cluster of {cluster!r} has a single row ({len(sizes)} clusters), so every column is "
            f"constant within clusters and is treated as level-2 (between only). If {cluster!r} is a "
            f"row id rather than the cluster id, pass the cluster column as cluster=.",
            UserWarning,
            skip_file_prefixes=(_PACKAGE_DIR,),  # point at the user's call, however deep in pymsem
        )
    level2 = {c for c in columns if constant_within(frame[c].to_numpy(), codes, len(sizes))}
    return ClusteredData(
        frame=frame,
        cluster=cluster,
        cluster_ids=np.asarray(uniques),
        cluster_index=codes.astype(np.int64),
        sizes=sizes.astype(np.int64),
        level2=frozenset(level2),
        excluded_rows=excluded,
        source_rows=kept[order],
    )


def _row_labels(index: pd.Index, positions: np.ndarray, n: int = 5) -> str:
    """The user's row labels (index values) at the first ``n`` positions, as ``[3, 17 ...]``."""
    # tolist() gives Python scalars, so labels print as 3, not np.int64(3).
    labels = index[positions[:n]].tolist()
    return f"{labels}{' ...' if len(positions) > n else ''}"


def _check_unique_columns(data: pd.DataFrame, cluster: str, columns: list[str]) -> None:
    """Refuse a duplicated column name among the used columns and the cluster column."""
    duplicated = data.columns[data.columns.duplicated()].unique()
    ambiguous = [c for c in duplicated if c == cluster or c in columns]
    if ambiguous:
        counts = ", ".join(f"{c!r} ({int((data.columns == c).sum())} columns)" for c in ambiguous)
        raise MSEMDataError(
            f"The data have several columns with the same name: {counts}. pymsem selects columns "
            f"by name, so a used column or the cluster column must be unique: drop or rename the "
            f"copies (data.loc[:, ~data.columns.duplicated()] keeps the first of each)."
        )


def _numeric_problem(s: pd.Series, c: str) -> str | None:
    """Why column ``c`` cannot be used as numbers, with how to convert it; ``None`` if it can."""
    if pd.api.types.is_bool_dtype(s):
        # Refused rather than silently coded 0/1: the user should decide that a flag is a number.
        return (
            f"Column {c!r} is boolean (True/False), not numeric. If it is meant as a 0/1 variable, "
            f"convert it with data[{c!r}] = data[{c!r}].astype(float) before fitting."
        )
    if pd.api.types.is_complex_dtype(s):
        # float(complex) would silently drop the imaginary part.
        return f"Column {c!r} holds complex numbers (dtype {s.dtype}); pymsem needs real numbers."
    if pd.api.types.is_numeric_dtype(s):
        return None
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
        if len(bad):
            return (
                f"Column {c!r} is not numeric (dtype {s.dtype}) (e.g. {bad.iloc[0]!r}). Convert it to "
                f"numbers (pd.to_numeric, or dummy-code categories) before fitting."
            )
        return (
            f"Column {c!r} is not numeric (dtype {s.dtype}), though its values read as numbers "
            f"(numbers stored as text or objects). Convert it with data[{c!r}] = pd.to_numeric(data[{c!r}]) "
            f"before fitting."
        )
    return (
        f"Column {c!r} is not numeric (dtype {s.dtype}). Convert it to numbers (pd.to_numeric, or "
        f"dummy-code categories) before fitting."
    )


def _check_values(s: pd.Series, c: str) -> None:
    """Refuse infinite or overflowing values, and a column without variance (``s`` is numeric)."""
    x = s.to_numpy(dtype=float, na_value=np.nan)
    inf = np.isinf(x)
    bad = np.flatnonzero(inf | (np.abs(x) > MAX_ABS_VALUE))  # NaN compares False: missing is fine
    if len(bad):
        n_inf = int(inf.sum())
        if n_inf == len(bad):
            what = f"{len(bad)} infinite value(s)"
        elif n_inf == 0:
            what = f"{len(bad)} value(s) too large to model (|x| > {MAX_ABS_VALUE:.0e}, e.g. {x[bad[0]]:.3g})"
        else:
            what = f"{len(bad)} infinite or too large (|x| > {MAX_ABS_VALUE:.0e}) value(s)"
        raise MSEMDataError(
            f"Column {c!r} has {what} (rows with index {_row_labels(s.index, bad)}). Only NaN counts as "
            f"missing, and these values would make the variances that set priors and starting values "
            f"infinite or NaN. Replace them with NaN to treat them as missing (they are often a "
            f"missing-value code), or fix the data."
        )
    observed = x[~np.isnan(x)]
    lo, hi = observed.min(), observed.max()
    if lo == hi:
        # Nothing to model, and priors scaled by its SD (zero) would be degenerate.
        if len(observed) == 1:
            rows = _row_labels(s.index, np.flatnonzero(~np.isnan(x)))
            why = f"has a single observed value ({lo:g}, row with index {rows})"
        else:
            why = f"is constant: all {len(observed)} observed values are {lo:g}"
        raise MSEMDataError(
            f"Column {c!r} {why}, so it has no variance, within or between clusters, for the model "
            f"to explain. Drop it from the model or check the data (e.g. a filter that kept one value)."
        )


def constant_within(x: np.ndarray, codes: np.ndarray, n_clusters: int) -> bool:
    """Whether the observed values of ``x`` are constant within every cluster."""
    return bool(len(varying_clusters(x, codes, n_clusters)) == 0)


def varying_clusters(x: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Positions of the clusters whose observed values of ``x`` are not all equal."""
    ok = ~np.isnan(x)
    lo = np.full(n_clusters, np.inf)
    hi = np.full(n_clusters, -np.inf)
    np.minimum.at(lo, codes[ok], x[ok])
    np.maximum.at(hi, codes[ok], x[ok])
    spread = np.where(np.isfinite(lo), hi - lo, 0.0)
    scale = np.maximum(np.abs(hi), np.abs(lo))
    return np.flatnonzero(spread > 1e-8 + 1e-5 * np.where(np.isfinite(scale), scale, 0.0))
