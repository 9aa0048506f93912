"""Checks and summaries of the user's data frame: cluster ids, levels of variables, scales."""

from __future__ import annotations

from dataclasses import dataclass

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


def prepare_data(
    data: pd.DataFrame, cluster: str, columns: list[str], drop_missing_cluster: bool = False
) -> ClusteredData:
    """Validate and sort the data for the columns a model uses.

    Missing values of used columns are kept (as NaN): the likelihood models
    them. A row whose cluster id is missing cannot be placed in a cluster; it
    is refused unless ``drop_missing_cluster`` is set, in which case it is left
    out and reported (``excluded_rows``).

    Raises
    ------
    MSEMDataError
        When the cluster column or a used column is absent, a used column is
        not numeric, the cluster column has missing values (and
        ``drop_missing_cluster`` is not set), a used column has no observed
        value, or there are fewer than two clusters.
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
    ids = data[cluster]
    excluded: tuple[int, ...] = ()
    kept = np.arange(len(data))
    if ids.isna().any():
        bad = np.flatnonzero(ids.isna().to_numpy())
        if not drop_missing_cluster:
            labels = [data.index[i] for i in bad[:10]]
            raise MSEMDataError(
                f"Cluster column {cluster!r} has {len(bad)} missing value(s) (rows with index {labels}"
                f"{' ...' if len(bad) > 10 else ''}). A row without a cluster cannot be placed: fill in "
                f"the cluster ids, or pass drop_missing_cluster=True to MSEM(...) to leave these rows "
                f"out (the fit reports how many)."
            )
        excluded = tuple(int(i) for i in bad)
        kept = np.flatnonzero(ids.notna().to_numpy())
        data = data.iloc[kept]
        ids = data[cluster]
    for c in columns:
        if not pd.api.types.is_numeric_dtype(data[c]) or pd.api.types.is_bool_dtype(data[c]):
            bad = data[c][pd.to_numeric(data[c], errors="coerce").isna() & data[c].notna()]
            example = f" (e.g. {bad.iloc[0]!r})" if len(bad) else ""
            raise MSEMDataError(
                f"Column {c!r} is not numeric (dtype {data[c].dtype}){example}. Convert it to numbers "
                f"(pd.to_numeric, or dummy-code categories) before fitting."
            )
    for c in columns:
        if data[c].isna().all():
            raise MSEMDataError(
                f"Column {c!r} has no observed value (all {len(data)} rows are missing); drop it from "
                f"the model or fix the data."
            )
    order = np.argsort(pd.factorize(ids, sort=True)[0], kind="stable")
    frame = data.iloc[order][columns].astype(float).reset_index(drop=True)
    codes, uniques = pd.factorize(ids.iloc[order], sort=True)
    if len(uniques) < 2:
        raise MSEMDataError(
            f"Cluster column {cluster!r} has {len(uniques)} distinct value; a two-level model needs "
            f"at least 2 clusters (and many more for stable between-level estimates)."
        )
    sizes = np.bincount(codes)
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
