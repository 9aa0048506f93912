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
        Columns that are constant within every cluster.
    """

    frame: pd.DataFrame
    cluster: str
    cluster_ids: np.ndarray
    cluster_index: np.ndarray
    sizes: np.ndarray
    level2: frozenset[str]

    @property
    def n_obs(self) -> int:
        return len(self.frame)

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ids)

    def cluster_values(self, column: str) -> np.ndarray:
        """One value per cluster of a level-2 column."""
        first = np.r_[0, np.cumsum(self.sizes)[:-1]]
        return self.frame[column].to_numpy()[first]

    def variance_components(self, column: str) -> tuple[float, float]:
        """Within and between variance of a column (one-way ANOVA estimates).

        The between component is the variance of the cluster means minus the
        within variance over the average cluster size, floored at a small
        share of the total so that data-scaled priors never collapse to zero.
        """
        x = self.frame[column].to_numpy(dtype=float)
        if column in self.level2:
            return 0.0, float(np.var(self.cluster_values(column), ddof=1))
        means = np.bincount(self.cluster_index, weights=x) / self.sizes
        dev = x - means[self.cluster_index]
        dof = max(self.n_obs - self.n_clusters, 1)
        within = float(dev @ dev / dof)
        n_bar = float(np.mean(self.sizes))
        between = float(np.var(means, ddof=1)) - within / n_bar
        total = float(np.var(x, ddof=1))
        return within, max(between, 0.01 * total)


def prepare_data(data: pd.DataFrame, cluster: str, columns: list[str]) -> ClusteredData:
    """Validate and sort the data for the columns a model uses.

    Raises
    ------
    MSEMDataError
        When the cluster column or a used column is absent, a used column is
        not numeric, the cluster column has missing values, there are fewer
        than two clusters, or a used column has missing values (modeling
        missing data is not yet supported, and rows are never dropped
        silently).
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
    if ids.isna().any():
        rows = [int(i) for i in np.flatnonzero(ids.isna().to_numpy())[:10]]
        raise MSEMDataError(
            f"Cluster column {cluster!r} has {int(ids.isna().sum())} missing value(s) (rows {rows}"
            f"{' ...' if ids.isna().sum() > 10 else ''}). A row without a cluster cannot be placed: "
            f"fill in the cluster ids or remove those rows before fitting."
        )
    for c in columns:
        if not pd.api.types.is_numeric_dtype(data[c]) or pd.api.types.is_bool_dtype(data[c]):
            bad = data[c][pd.to_numeric(data[c], errors="coerce").isna() & data[c].notna()]
            example = f" (e.g. {bad.iloc[0]!r})" if len(bad) else ""
            raise MSEMDataError(
                f"Column {c!r} is not numeric (dtype {data[c].dtype}){example}. Convert it to numbers "
                f"(pd.to_numeric, or dummy-code categories) before fitting."
            )
    for c in columns:
        n_na = int(data[c].isna().sum())
        if n_na:
            raise MSEMDataError(
                f"Column {c!r} has {n_na} missing value(s). Modeling missing data is not supported yet, "
                f"and pymsem never drops rows silently: impute or remove those rows explicitly, "
                f"e.g. data.dropna(subset=[{c!r}]), and report it."
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
    level2 = set()
    for c in columns:
        x = frame[c].to_numpy()
        first = np.r_[0, np.cumsum(sizes)[:-1]]
        if np.allclose(x, x[first][codes]):
            level2.add(c)
    return ClusteredData(
        frame=frame,
        cluster=cluster,
        cluster_ids=np.asarray(uniques),
        cluster_index=codes.astype(np.int64),
        sizes=sizes.astype(np.int64),
        level2=frozenset(level2),
    )
