"""What is missing in the data a model uses: counts by column, patterns, clusters affected."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pymsem.specification.data import ClusteredData

__all__ = ["MissingReport", "missing_report"]


@dataclass(frozen=True)
class MissingReport:
    """The missing-data summary of a model's data (``model.missing()``).

    Attributes
    ----------
    by_column
        One row per used column: ``level`` (1 or 2), ``n_missing`` (rows, or
        clusters for level-2 columns), ``share`` and ``clusters_affected``.
    n_rows, n_clusters
        Rows and clusters in the data the model uses.
    n_incomplete_rows
        Rows with at least one missing level-1 value.
    n_patterns
        Distinct patterns of observed level-1 values (complete rows included).
    n_cells, n_missing_cells
        Level-1 cells (rows x level-1 columns) and how many are missing.
    n_excluded_rows
        Rows left out because their cluster id was missing (``drop_missing_cluster=True``).
    """

    by_column: pd.DataFrame
    n_rows: int
    n_clusters: int
    n_incomplete_rows: int
    n_patterns: int
    n_cells: int
    n_missing_cells: int
    n_excluded_rows: int

    @property
    def any(self) -> bool:
        """Whether anything is missing (or was excluded)."""
        return bool(self.by_column["n_missing"].sum() or self.n_excluded_rows)

    def line(self) -> str:
        """One line for a table footer or a fit's header."""
        parts = []
        if self.n_missing_cells or self.by_column["n_missing"].sum():
            cols = self.by_column[self.by_column["n_missing"] > 0]
            share = self.n_missing_cells / self.n_cells if self.n_cells else 0.0
            parts.append(
                f"{self.n_missing_cells} of {self.n_cells} level-1 cells missing ({share:.1%}) in "
                f"{len(cols)} column(s), {self.n_incomplete_rows} incomplete rows, "
                f"{self.n_patterns} patterns; modeled (MAR), none dropped"
            )
            l2 = cols[cols["level"] == 2]
            if len(l2):
                parts.append(f"level-2 values missing in {int(l2['n_missing'].sum())} cluster cell(s)")
        else:
            parts.append("none")
        if self.n_excluded_rows:
            parts.append(f"{self.n_excluded_rows} row(s) without a cluster id excluded")
        return "; ".join(parts)

    def __str__(self) -> str:
        head = f"Missing data: {self.line()}"
        return head + "\n" + self.by_column.to_string(formatters={"share": "{:.1%}".format})

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        body = self.by_column.to_html(formatters={"share": "{:.1%}".format})
        return f"<p><b>Missing data</b>: {self.line()}</p>{body}"


def missing_report(data: ClusteredData, level1: list[str], level2: list[str]) -> MissingReport:
    """Summarize the missing values of the used columns."""
    rows = []
    idx = data.cluster_index
    for c in level1:
        na = data.frame[c].isna().to_numpy()
        rows.append(
            {
                "column": c,
                "level": 1,
                "n_missing": int(na.sum()),
                "share": float(na.mean()),
                "clusters_affected": len(np.unique(idx[na])),
            }
        )
    for c in level2:
        na = np.isnan(data.cluster_values(c))
        rows.append(
            {
                "column": c,
                "level": 2,
                "n_missing": int(na.sum()),
                "share": float(na.mean()),
                "clusters_affected": int(na.sum()),
            }
        )
    by_column = pd.DataFrame(rows).set_index("column") if rows else pd.DataFrame()
    Y = data.frame[level1].isna().to_numpy()
    return MissingReport(
        by_column=by_column,
        n_rows=data.n_obs,
        n_clusters=data.n_clusters,
        n_incomplete_rows=int(Y.any(axis=1).sum()),
        n_patterns=len(np.unique(Y, axis=0)) if Y.size else 1,
        n_cells=int(Y.size),
        n_missing_cells=int(Y.sum()),
        n_excluded_rows=len(data.excluded_rows),
    )
