"""Ordinal (Likert, binary) columns: which of the model's columns are ordinal, checked, and coded.

A column is ordinal when it is declared so (``MSEM(..., ordinal=[...])``) or when the model uses
it and it is a pandas ordered Categorical. :func:`ordinal_columns` finds and checks them and
describes each as an :class:`OrdinalColumn` (its categories, in order, and how often each is
observed); :func:`encode_ordinal` replaces them with their category codes ``0 .. K-1``, which is
what the compiler models (through a latent response and ordered thresholds, see
:mod:`pymsem.compile.ordinal`).

What may be declared ordinal
----------------------------
- An ordered Categorical: its categories, in their declared order, must all be observed.
- Integer codes (any integer values, gaps allowed: ``{1, 2, 4}`` has three categories), at most
  :data:`MAX_CATEGORIES` distinct values.
- A boolean column: the two categories ``(False, True)``.

Every ordinal column needs two observed categories, must vary within clusters (ordinal level-2
variables are not supported yet), and no row is dropped: missing values stay missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pymsem.specification.errors import MSEMDataError, closest

__all__ = ["MAX_CATEGORIES", "OrdinalColumn", "encode_ordinal", "ordinal_columns"]

#: Most distinct values a numeric column declared ordinal may have. With more, it is more likely a
#: continuous measurement (or a sum score) than a rating, and every extra category costs a threshold.
MAX_CATEGORIES = 10

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # pymsem/, for warnings' location


@dataclass(frozen=True)
class OrdinalColumn:
    """An ordinal column of the data: its categories in order and how often each is observed.

    Attributes
    ----------
    name
        The column's name.
    categories
        The original category values, lowest first (``(1, 2, 3, 4, 5)``,
        ``("disagree", "neutral", "agree")``, ``(False, True)``); category ``k`` is coded ``k``.
    counts
        Rows observed in each category, in the order of ``categories``.
    """

    name: str
    categories: tuple[Any, ...]
    counts: tuple[int, ...]

    @property
    def n_categories(self) -> int:
        """Number of categories ``K`` (codes ``0 .. K-1``, ``K - 1`` thresholds)."""
        return len(self.categories)

    @property
    def binary(self) -> bool:
        """Whether the column has two categories."""
        return self.n_categories == 2


def ordinal_columns(
    data: pd.DataFrame, declared: Sequence[str], used: Sequence[str], cluster: str
) -> dict[str, OrdinalColumn]:
    """Which of the model's columns are ordinal, validated.

    The declared columns, plus every used column that is a pandas ordered Categorical.

    Parameters
    ----------
    data
        The user's data frame.
    declared
        Columns declared ordinal (``MSEM(..., ordinal=...)``).
    used
        The columns the model uses. A used column that is not in the data is left for
        :func:`pymsem.specification.data.prepare_data` to report.
    cluster
        Name of the cluster column (for the level-2 check and the one-cluster warning).

    Returns
    -------
    dict[str, OrdinalColumn]
        One entry per ordinal column, in the order of ``used``.

    Raises
    ------
    MSEMDataError
        When a declared column is not in the data or not used by the model; a used column is an
        unordered Categorical (nominal); a declared column is text, an unordered Categorical, or
        neither numeric nor boolean; a numeric one has non-integer values or more than
        :data:`MAX_CATEGORIES` distinct values; an ordered Categorical has a category observed
        in no row; a column has fewer than two observed categories, or a category observed only
        in rows without a cluster id; or an ordinal column is constant within every cluster
        (level-2).

    Warns
    -----
    UserWarning
        When a category is observed in one cluster only: its threshold is then informed by
        that cluster alone.
    """
    columns = [str(c) for c in data.columns]
    declared = list(dict.fromkeys(declared))
    used_set = set(used)
    for c in declared:
        if c not in data.columns:
            raise MSEMDataError(
                f"Column {c!r} is declared ordinal but is not in the data." + closest(str(c), columns)
            )
        if c not in used_set:
            what = "is the cluster id column" if c == cluster else "is not in the model"
            raise MSEMDataError(
                f"Column {c!r} is declared ordinal but {what}: no statement of the model uses it. Drop "
                f"it from ordinal=, or add it to the model."
            )
    present = [c for c in used if c in data.columns]
    _check_unique(data, [*declared, *present])
    out: dict[str, OrdinalColumn] = {}
    ids = data[cluster]
    for c in present:
        s = data[c]
        is_declared = c in declared
        if isinstance(s.dtype, pd.CategoricalDtype):
            if not s.cat.ordered:
                raise MSEMDataError(_unordered_message(s, c, is_declared))
        elif not is_declared:
            continue  # continuous; prepare_data checks it is numeric
        out[c] = _describe(s, c, ids, cluster)
    return out


def encode_ordinal(data: pd.DataFrame, columns: Mapping[str, OrdinalColumn]) -> pd.DataFrame:
    """A copy of ``data`` with each ordinal column replaced by its float codes ``0 .. K-1``.

    Parameters
    ----------
    data
        The data the columns were found in (by :func:`ordinal_columns`).
    columns
        The ordinal columns; category ``k`` of ``categories`` becomes code ``k``.

    Returns
    -------
    pandas.DataFrame
        Same rows, index and column order; ordinal columns are float with NaN where missing.

    Raises
    ------
    MSEMDataError
        When a column holds an observed value that is none of its categories (``columns`` were
        found in other data).
    """
    out = data.copy()
    for c, col in columns.items():
        codes = _codes(data[c], col)
        out[c] = codes
    return out


# ------------------------------------------------------------------------------------- helpers
def _check_unique(data: pd.DataFrame, names: list[str]) -> None:
    # Before anything selects a column by name: with a duplicated name data[c] is a frame.
    dup = [c for c in dict.fromkeys(names) if int((data.columns == c).sum()) > 1]
    if dup:
        counts = ", ".join(f"{c!r} ({int((data.columns == c).sum())} columns)" for c in dup)
        raise MSEMDataError(
            f"The data have several columns with the same name: {counts}. pymsem selects columns by "
            f"name, so a used column must be unique: drop or rename the copies "
            f"(data.loc[:, ~data.columns.duplicated()] keeps the first of each)."
        )


def _shown(values: Sequence[Any], n: int = 10) -> str:
    """``[1, 2, 3 ...]`` with Python scalars (so ``2.5``, not ``np.float64(2.5)``)."""
    items = [v.item() if isinstance(v, np.generic) else v for v in values[:n]]
    return f"[{', '.join(repr(v) for v in items)}{' ...' if len(values) > n else ''}]"


def _sorted_observed(s: pd.Series) -> list[Any]:
    values = list(pd.unique(s.dropna()))
    try:
        return sorted(values)
    except TypeError:  # mixed types: keep the order of appearance
        return values


def _unordered_message(s: pd.Series, c: str, is_declared: bool) -> str:
    cats = list(s.cat.categories)
    order = f"pd.Categorical(data[{c!r}], categories={_shown(cats, 20)}, ordered=True)"
    if is_declared:
        return (
            f"Column {c!r} is declared ordinal but is an unordered Categorical with categories "
            f"{_shown(cats)}, so the order of its categories is unknown. Give the order: "
            f"data[{c!r}] = {order}, with the categories listed lowest first."
        )
    return (
        f"Column {c!r} is an unordered Categorical (categories {_shown(cats)}): nominal variables "
        f"are not supported yet. Dummy-code it (pd.get_dummies) or, if its categories are ordered, "
        f"declare the order: data[{c!r}] = {order}, lowest first."
    )


def _describe(s: pd.Series, c: str, ids: pd.Series, cluster: str) -> OrdinalColumn:
    """The column's categories and counts, checked."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        categories = tuple(v.item() if isinstance(v, np.generic) else v for v in s.cat.categories)
        codes = s.cat.codes.to_numpy().astype(float)
        codes[codes < 0] = np.nan
    elif pd.api.types.is_bool_dtype(s):
        categories = (False, True)
        codes = s.to_numpy(dtype=float, na_value=np.nan)
    elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s):
        categories, codes = _integer_categories(s, c)
    elif s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        values = _sorted_observed(s)
        numeric = pd.to_numeric(s.dropna(), errors="coerce").notna().all()
        hint = (
            f" Its values read as numbers: if they are integer codes, convert them with "
            f"data[{c!r}] = pd.to_numeric(data[{c!r}])."
            if numeric and len(values)
            else ""
        )
        raise MSEMDataError(
            f"Column {c!r} is declared ordinal but holds text (dtype {s.dtype}, values "
            f"{_shown(values)}), whose order pymsem cannot know. Make it an ordered Categorical "
            f"with the categories lowest first: data[{c!r}] = pd.Categorical(data[{c!r}], "
            f"categories=[...], ordered=True).{hint}"
        )
    else:
        raise MSEMDataError(
            f"Column {c!r} is declared ordinal but has dtype {s.dtype}. An ordinal column holds "
            f"integer codes, booleans or an ordered Categorical (pd.Categorical(..., ordered=True))."
        )
    ok = ~np.isnan(codes)
    counts = np.bincount(codes[ok].astype(np.int64), minlength=len(categories))
    observed = [categories[k] for k in np.flatnonzero(counts)]
    if len(observed) < 2:
        if not len(observed):
            why = f"has no observed value (all {len(s)} rows are missing)"
        else:
            why = f"has a single observed category ({observed[0]!r}, in {int(counts.sum())} rows)"
        raise MSEMDataError(
            f"Column {c!r} is ordinal but {why}; an ordinal variable needs at least two observed "
            f"categories. Drop it from the model (and from ordinal=) or check the data."
        )
    unused = [categories[k] for k in np.flatnonzero(counts == 0)]
    if unused:
        raise MSEMDataError(
            f"Column {c!r} is an ordered Categorical with categories {_shown(categories, 20)}, but "
            f"{_shown(unused)} {'is' if len(unused) == 1 else 'are'} observed in no row, and a "
            f"threshold next to an empty category is not identified. Drop the empty categories with "
            f"data[{c!r}] = data[{c!r}].cat.remove_unused_categories(), or merge them into a neighbour."
        )
    _check_clusters(codes, categories, c, ids, cluster)
    return OrdinalColumn(str(c), categories, tuple(int(n) for n in counts))


def _integer_categories(s: pd.Series, c: str) -> tuple[tuple[Any, ...], np.ndarray]:
    """Sorted distinct observed values of a numeric column (must be integers) and the row codes."""
    x = s.to_numpy(dtype=float, na_value=np.nan)
    values = np.unique(x[~np.isnan(x)])
    finite = np.isfinite(values)
    bad = values[~finite | (np.mod(np.where(finite, values, 0.0), 1) != 0)]
    if len(bad):
        raise MSEMDataError(
            f"Column {c!r} is declared ordinal but has {len(bad)} non-integer value(s) "
            f"{_shown(bad)}; an ordinal column holds integer category codes (e.g. 1 to 5). Recode "
            f"those values, or drop {c!r} from ordinal= to model it as continuous."
        )
    if len(values) > MAX_CATEGORIES:
        raise MSEMDataError(
            f"Column {c!r} is declared ordinal but has {len(values)} distinct values "
            f"{_shown([int(v) for v in values])}; at most {MAX_CATEGORIES} categories are accepted, and this many "
            f"looks continuous. Model it as continuous (drop it from ordinal=), or recode it into "
            f"at most {MAX_CATEGORIES} categories (e.g. pd.cut)."
        )
    # Gaps ({1, 2, 4}) are fine: the categories are the values observed, coded in order.
    categories = tuple(int(v) for v in values)
    codes = np.searchsorted(values, x).astype(float)
    codes[np.isnan(x)] = np.nan
    return categories, codes


def _check_clusters(
    codes: np.ndarray, categories: tuple[Any, ...], c: str, ids: pd.Series, cluster: str
) -> None:
    """Refuse ordinal level-2 columns and empty-once-placed categories; warn of one-cluster ones."""
    placed = ids.notna().to_numpy()
    if not placed.any():
        return  # prepare_data refuses a cluster column without values
    cluster_codes, uniques = pd.factorize(ids[placed], sort=True)
    x = codes[placed]
    ok = ~np.isnan(x)
    k = x[ok].astype(np.int64)
    g = cluster_codes[ok]
    n_clusters = len(uniques)
    # Rows without a cluster id are refused, or left out with drop_missing_cluster=True; a category
    # seen only there would then be empty.
    in_placed = np.bincount(k, minlength=len(categories))
    lost = [categories[j] for j in np.flatnonzero(in_placed == 0)]
    if lost:
        raise MSEMDataError(
            f"Column {c!r}: category {_shown(lost)} is observed only in rows whose cluster id "
            f"({cluster!r}) is missing. Those rows cannot be placed in a cluster, so the category "
            f"would be empty: fill in their cluster ids, or merge the category into a neighbour."
        )
    if n_clusters < 2:
        return  # prepare_data refuses a single cluster
    if np.bincount(cluster_codes, minlength=n_clusters).max() > 1:
        lo = np.full(n_clusters, np.iinfo(np.int64).max)
        hi = np.full(n_clusters, -1)
        np.minimum.at(lo, g, k)
        np.maximum.at(hi, g, k)
        if not (hi > lo).any():
            raise MSEMDataError(
                f"Column {c!r} is ordinal (categories {_shown(categories)}) but constant within every "
                f"cluster of {cluster!r}, that is a level-2 variable: ordinal level-2 variables are "
                f"not supported yet. Treat it as continuous (drop it from ordinal=, or convert an "
                f"ordered Categorical to its codes), or as a level-1 variable if it should vary "
                f"within clusters."
            )
    pairs = np.unique(np.column_stack([k, g]), axis=0)
    n_per_category = np.bincount(pairs[:, 0], minlength=len(categories))
    lonely = np.flatnonzero(n_per_category == 1)
    if len(lonely):
        where = ", ".join(
            f"{categories[j]!r} only in {cluster} = {_scalar(uniques[pairs[pairs[:, 0] == j, 1][0]])!r}"
            for j in lonely[:10]
        )
        warnings.warn(
            f"Column {c!r}: categories observed in a single cluster ({where}"
            f"{' ...' if len(lonely) > 10 else ''}). Their thresholds are informed by that one "
            f"cluster only, so they may be poorly estimated; consider merging a rare category "
            f"into a neighbour.",
            UserWarning,
            skip_file_prefixes=(_PACKAGE_DIR,),  # point at the user's call, however deep in pymsem
        )


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _codes(s: pd.Series, col: OrdinalColumn) -> np.ndarray:
    """Row codes of ``s`` by position in ``col.categories`` (NaN where missing)."""
    missing = s.isna().to_numpy()
    if isinstance(s.dtype, pd.CategoricalDtype):
        values: Any = s.astype(object).to_numpy()
    elif pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        values = s.astype(object).to_numpy()
    else:
        values = s.to_numpy(dtype=float, na_value=np.nan)
    idx = pd.Index(list(col.categories), dtype=object).get_indexer(values)
    unknown = (idx < 0) & ~missing
    if unknown.any():
        raise MSEMDataError(
            f"Column {col.name!r} has value(s) {_shown(_sorted_observed(s[unknown]))} that are none "
            f"of its ordinal categories {_shown(col.categories, 20)}."
        )
    codes = idx.astype(float)
    codes[missing] = np.nan
    return codes
