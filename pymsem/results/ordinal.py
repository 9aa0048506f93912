"""Results of models with ordinal variables: latent responses cut into categories, and refusals.

An ordinal column's category is the interval of its latent response between consecutive
thresholds (:mod:`pymsem.compile.ordinal`): category ``k`` is observed exactly when
``tau_{k-1} < y* <= tau_k``. Whatever draws latent responses (imputations of missing cells,
posterior and prior predictive data sets) turns them into categories with :func:`cut` at the
same draw's thresholds, and :func:`category_values` gives the user's category labels back.

Results that need the probability of a cluster's observed categories (a multivariate normal
orthant probability per cluster: LOO, WAIC, prior sensitivity) or the per-cell latent
responses, which are sampled but not stored (latent scores), refuse ordinal fits through
:func:`refuse_ordinal` rather than treating category codes as continuous values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymsem.compile.structure import ModelStructure
    from pymsem.specification.ordinal import OrdinalColumn

__all__ = ["category_values", "cut", "cut_columns", "refuse_ordinal"]


def cut(latent: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Category codes ``0 .. K-1`` of latent responses, given ordered thresholds.

    Parameters
    ----------
    latent
        Latent responses, any shape ``(..., n)``; NaN stays NaN.
    tau
        The ``K - 1`` thresholds, shape ``(K - 1,)`` for all values or ``(..., K - 1)`` with
        the leading shape of ``latent`` (one set per draw).

    Returns
    -------
    numpy.ndarray
        Float codes of ``latent``'s shape: the number of thresholds strictly below each value,
        so a value equal to ``tau_k`` falls in category ``k`` (``y* <= tau_k``).
    """
    y = np.asarray(latent, dtype=float)
    t = np.asarray(tau, dtype=float)
    if t.ndim > 1:
        t = t[..., None, :]  # one threshold vector per leading index, shared by the n values
    codes = (y[..., None] > t).sum(axis=-1).astype(float)
    return np.where(np.isnan(y), np.nan, codes)


def cut_columns(
    structure: ModelStructure,
    y1: np.ndarray,
    thresholds: Mapping[str, np.ndarray],
    where: np.ndarray | None = None,
) -> np.ndarray:
    """``y1`` (N, p1) with each ordinal column's latent responses replaced by their codes.

    Parameters
    ----------
    structure
        The lowered model (``structure.level1`` names the columns of ``y1``).
    y1
        Level-1 values; ordinal columns hold latent responses (where ``where`` is true).
    thresholds
        One draw's thresholds per ordinal column, ``{col: (K - 1,)}``.
    where
        ``(N, p1)`` mask of the cells that hold latent responses (imputed cells, whose
        neighbours are observed codes already); default every cell.

    Returns
    -------
    numpy.ndarray
        A copy; continuous columns and cells outside ``where`` unchanged.
    """
    out = np.array(y1, dtype=float, copy=True)
    for col in structure.ordinal:
        j = structure.level1.index(col)
        codes = cut(out[:, j], thresholds[col])
        out[:, j] = codes if where is None else np.where(where[:, j], codes, out[:, j])
    return out


def category_values(codes: np.ndarray, column: OrdinalColumn, like: pd.Series | None = None) -> Any:
    """The user's category values of codes ``0 .. K-1`` (the inverse of ``encode_ordinal``).

    Parameters
    ----------
    codes
        Category codes; NaN where missing.
    column
        The column's categories, lowest first (``OrdinalColumn.categories``).
    like
        The user's original column. An ordered Categorical gives a Categorical with its
        categories (and order); otherwise the values are the categories themselves
        (integers, booleans).

    Returns
    -------
    pandas.Categorical or numpy.ndarray
        Integer or boolean arrays where no code is missing, object arrays with None otherwise.
    """
    c = np.asarray(codes, dtype=float)
    miss = np.isnan(c)
    k = np.where(miss, 0, c).astype(np.int64)
    if like is not None and isinstance(like.dtype, pd.CategoricalDtype):
        return pd.Categorical.from_codes(np.where(miss, -1, k), dtype=like.dtype)
    cats = np.asarray(column.categories)
    values = cats[k]
    if miss.any():
        values = values.astype(object)
        values[miss] = None
    return values


def refuse_ordinal(structure: ModelStructure, what: str, why: str, instead: str) -> None:
    """Raise ``NotImplementedError`` when the model has ordinal variables.

    Parameters
    ----------
    structure
        The fitted model's structure (``fit.structure``); nothing happens without ordinal columns.
    what
        The result refused (``"fit.loo()"``).
    why
        What a correct answer would need.
    instead
        What to do instead.

    Raises
    ------
    NotImplementedError
        When ``structure.ordinal`` is not empty.
    """
    if not structure.ordinal:
        return
    cols = ", ".join(f"{c} ({k} categories)" for c, k in structure.ordinal.items())
    raise NotImplementedError(
        f"{what} is not available for models with ordinal variables ({cols}): {why}. {instead}"
    )


#: Why leave-one-cluster-out LOO, WAIC and comparisons by them are refused.
LOO_WHY = (
    "their log-likelihood is the probability of each cluster's observed categories, a "
    "multivariate normal orthant probability per cluster, which pymsem cannot compute yet"
)
#: What to use instead of LOO/WAIC for an ordinal model.
LOO_INSTEAD = (
    "fit.ppc() checks ordinal models (replicated categories, category proportions); compare "
    "ordinal models by their posterior predictive checks or by the parameters of a larger model."
)
#: Why latent scores are refused for ordinal models.
SCORES_WHY = (
    "the scores are each draw's Gaussian conditional given the cluster's data, and for an "
    "ordinal column those data are its latent responses, which are sampled during fitting but "
    "not stored (one value per cell and draw); the category codes are not Gaussian data"
)
#: What to use instead of latent scores for an ordinal model.
SCORES_INSTEAD = (
    "Treat the items as continuous (drop them from ordinal=) if approximate scores will do; "
    "scores for ordinal variables need the stored latent responses, not available yet."
)
