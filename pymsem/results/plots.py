"""Figures for papers: forest plots of effects by level, posterior densities, caterpillar plots.

The plotting functions here take plain data (a summary ``DataFrame``, arrays
of draws), so they can be used on saved results; :class:`~pymsem.results.fit.MSEMFit`
wraps them as ``fit.plot_forest()``, ``fit.plot_posterior()`` and
``fit.plot_caterpillar()``.  Convergence diagnostics (``fit.plot_trace()``,
``fit.plot_rank()``) are ArviZ's own plots, drawn on a DataTree that names
each parameter by its label (see :func:`diagnostic_tree`).

Every interval is an equal-tailed credible interval, as in the tables.  Each
plotted element carries a matplotlib ``gid`` (``"points:within"``,
``"intervals:between"``, ``"median"``, ...) so that scripts and tests can
find the numbers a figure shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pymsem.effects.standardized import QuantityDraws
    from pymsem.results.fit import MSEMFit

__all__ = [
    "FOREST_BLOCKS",
    "diagnostic_tree",
    "interval_frame",
    "plot_caterpillar",
    "plot_densities",
    "plot_forest",
]

#: Blocks a forest plot shows by default: the effects, not variances or loadings.
FOREST_BLOCKS: tuple[str, ...] = ("Regressions", "Derived")
_LEVEL_ORDER = ("within", "between", "derived")
_LEVEL_TITLES = {"within": "Within", "between": "Between", "derived": "Derived"}
#: Parameter kinds that ``plot_trace`` / ``plot_rank`` show by default.
_DIAGNOSTIC_KINDS = ("path", "slope_sd")


def _level_color(level: str, levels: Sequence[str]) -> str:
    """Matplotlib cycle colour of a level; fixed for the known levels so figures agree with each other."""
    if level in _LEVEL_ORDER:
        return f"C{_LEVEL_ORDER.index(level)}"
    return f"C{len(_LEVEL_ORDER) + list(levels).index(level)}"


def _eti(flat: np.ndarray, ci_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bound, median and upper bound along the last axis (as ``MSEMFit.summary`` computes them)."""
    lo, med, hi = np.quantile(flat, [(1 - ci_prob) / 2, 0.5, (1 + ci_prob) / 2], axis=-1)
    return lo, med, hi


def _check_prob(ci_prob: float) -> None:
    if not 0 < ci_prob < 1:
        raise ValueError(f"ci_prob must be between 0 and 1, got {ci_prob}.")


def _percent(prob: float) -> str:
    return f"{round(prob * 100, 6):g}%"


# ------------------------------------------------------------------- forest
def interval_frame(
    quantities: Sequence[QuantityDraws], ci_prob: float = 0.95, standardized: bool = False
) -> pd.DataFrame:
    """Median and equal-tailed interval of each quantity's draws, or of its standardized draws.

    Parameters
    ----------
    quantities
        Quantities with draws (``fit.quantities()``).
    ci_prob
        Interval probability.
    standardized
        Summarize the level-specific standardized draws instead; quantities without
        a standardized version (intercepts, ICCs, derived quantities) are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``level``, ``parameter``, ``block``, ``label``, ``median``, ``lower``, ``upper``.
    """
    _check_prob(ci_prob)
    rows = []
    for q in quantities:
        draws = q.std if standardized else q.draws
        if draws is None:
            continue
        lo, med, hi = _eti(np.asarray(draws, dtype=float).ravel(), ci_prob)
        rows.append((q.level, q.parameter, q.block, q.label, float(med), float(lo), float(hi)))
    cols = ["level", "parameter", "block", "label", "median", "lower", "upper"]
    return pd.DataFrame(rows, columns=cols)


def _forest_rows(
    df: pd.DataFrame, blocks: Sequence[str], by: str
) -> list[tuple[str, str, list[tuple[str, pd.Series]]]]:
    """Sections and rows of a forest plot: ``[(section, row text, [(level, summary row), ...]), ...]``.

    A row with an empty text is a section header.
    """
    levels = [lv for lv in _LEVEL_ORDER if lv in set(df["level"])]
    levels += [lv for lv in pd.unique(df["level"]) if lv not in levels]

    def text(parameter: str, labels: list[str]) -> str:
        labels = [lab for lab in dict.fromkeys(labels) if lab]
        return f"{parameter} ({', '.join(labels)})" if labels else parameter

    out: list[tuple[str, str, list[tuple[str, pd.Series]]]] = []
    if by == "level":
        multi = len([b for b in blocks if b != "Derived"]) > 1
        for lv in levels:
            for block in blocks:
                part = df[(df["level"] == lv) & (df["block"] == block)]
                if part.empty:
                    continue
                title = _LEVEL_TITLES.get(lv, str(lv).title())
                if multi and lv != "derived" and block != "Derived":
                    title += f": {block}"
                out.append((title, "", []))
                out += [(title, text(r.parameter, [r.label]), [(lv, r)]) for _, r in part.iterrows()]
        return out
    # by == "path": one row per parameter text, its estimates at each level side by side.
    for block in blocks:
        part = df[df["block"] == block]
        if part.empty:
            continue
        out.append((block, "", []))
        for parameter in pd.unique(part["parameter"]):
            same = part[part["parameter"] == parameter]
            ests = [(lv, r) for lv in levels for _, r in same[same["level"] == lv].iterrows()]
            out.append((block, text(parameter, [r.label for _, r in ests]), ests))
    return out


def plot_forest(
    summary: pd.DataFrame,
    blocks: Sequence[str] | str | None = None,
    parameters: Sequence[str] | None = None,
    by: str = "path",
    ci_prob: float | None = 0.95,
    xlabel: str = "Estimate",
    ax: Axes | None = None,
) -> Axes:
    """Forest plot of estimates by level: median dot, credible-interval line, a line at zero.

    Parameters
    ----------
    summary
        One row per quantity with ``level``, ``parameter`` (columns or index
        levels, as ``fit.summary()`` gives them), ``block``, ``label``,
        ``median``, ``lower``, ``upper``.
    blocks
        Blocks to show, in this order (default :data:`FOREST_BLOCKS`: regressions, then
        derived quantities such as indirect and contextual effects).
    parameters
        Only these rows, by parameter text (``"INT <- REL"``) or label (``"a_w"``).
    by
        ``"path"`` (default): one row per path with its within and between estimates side
        by side, coloured by level, so contextual differences show at a glance.
        ``"level"``: one section per level.
    ci_prob
        Interval probability, for the axis label only (the bounds come from ``summary``).
    xlabel
        Label of the x axis.
    ax
        Axes to draw on; a new figure is made by default.

    Returns
    -------
    matplotlib.axes.Axes
        Points carry ``gid="points:<level>"`` and intervals (a ``LineCollection``)
        ``gid="intervals:<level>"``, in row order from the top.
    """
    import matplotlib.pyplot as plt

    if by not in ("path", "level"):
        raise ValueError(f"by must be 'path' or 'level', got {by!r}.")
    df = summary
    if "level" not in df.columns or "parameter" not in df.columns:
        df = df.reset_index()
    missing = [c for c in ("level", "parameter", "block", "median", "lower", "upper") if c not in df.columns]
    if missing:
        raise ValueError(f"summary lacks column(s) {missing}.")
    df = df.copy()
    if "label" not in df.columns:
        df["label"] = ""
    df["label"] = df["label"].fillna("").astype(str)
    present = list(pd.unique(df["block"]))
    if blocks is None:
        blocks = [b for b in FOREST_BLOCKS if b in present]
    elif isinstance(blocks, str):
        # A lone string would otherwise be read as a list of characters.
        blocks = present if blocks == "all" else [blocks]
    unknown = [b for b in blocks if b not in present]
    if unknown:
        raise ValueError(f"No block(s) {unknown}; blocks present: {present}.")
    if parameters is not None:
        if isinstance(parameters, str):
            parameters = [parameters]
        keep = df["parameter"].isin(parameters) | df["label"].isin(parameters)
        known = set(df.loc[df["block"].isin(blocks), "parameter"]) | set(
            df.loc[df["block"].isin(blocks), "label"]
        )
        absent = [p for p in parameters if p not in known]
        if absent:
            raise ValueError(
                f"No parameter(s) {absent} in blocks {list(blocks)}; known: {sorted(known - {''})}."
            )
        df = df[keep]
    rows = _forest_rows(df[df["block"].isin(blocks)], blocks, by)
    if not any(ests for _, _, ests in rows):
        raise ValueError("Nothing to plot: no rows in the chosen blocks and parameters.")

    if ax is None:
        height = 0.8 + 0.32 * len(rows)
        _, ax = plt.subplots(figsize=(6.5, min(max(height, 2.5), 30)))
    levels = list(dict.fromkeys(lv for _, _, ests in rows for lv, _ in ests))
    dodge = 0.22
    pts: dict[str, list[tuple[float, float, float, float]]] = {lv: [] for lv in levels}
    ticks, ticklabels, headers = [], [], []
    for y, (section, row_text, ests) in enumerate(rows):
        ticks.append(y)
        if not ests:
            ticklabels.append(section)
            headers.append(y)
            continue
        ticklabels.append(row_text)
        for i, (lv, r) in enumerate(ests):
            # The estimates of one row sit symmetrically around its tick; a lone one on it.
            off = (i - (len(ests) - 1) / 2) * dodge
            pts[lv].append((y + off, float(r["median"]), float(r["lower"]), float(r["upper"])))
    for lv in levels:
        ys, med, lo, hi = (np.array(v) for v in zip(*pts[lv]))
        color = _level_color(lv, levels)
        ax.hlines(ys, lo, hi, color=color, lw=2, gid=f"intervals:{lv}")
        ax.plot(med, ys, "o", color=color, ms=5, gid=f"points:{lv}", label=_LEVEL_TITLES.get(lv, lv))
    ax.axvline(0, color="gray", lw=0.8, ls="--", zorder=0)
    ax.set_yticks(ticks, ticklabels)
    for y, lab in zip(ticks, ax.get_yticklabels()):
        if y in headers:
            lab.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(xlabel + (f" (median, {_percent(ci_prob)} CI)" if ci_prob else ""))
    if by == "path" and len(levels) > 1:
        # In one line across the first row, a section header without intervals to cover (above
        # the axes it would collide with a title).
        ax.legend(frameon=False, loc="upper right", ncols=len(levels), fontsize="small", borderaxespad=0.2)
    return ax


# ----------------------------------------------------------------- densities
def _axes_grid(n: int, ax: Any, panel: tuple[float, float] = (3.2, 2.4), ncols: int = 3) -> np.ndarray:
    """``n`` axes: those given (one Axes or a sequence), else a new grid with the spare panels removed."""
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != n:
            raise ValueError(f"{n} panel(s) to draw but {len(axes)} axes given.")
        return axes
    ncols = min(n, ncols)
    nrows = math.ceil(n / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False)
    axes = grid.ravel()
    for spare in axes[n:]:
        fig.delaxes(spare)
    fig.set_layout_engine("constrained")
    return axes[:n]


def plot_densities(
    draws: Mapping[str, np.ndarray],
    ci_prob: float = 0.95,
    titles: Mapping[str, str] | None = None,
    ax: Any = None,
) -> np.ndarray:
    """Posterior density of each quantity with its credible interval shaded and its median marked.

    Parameters
    ----------
    draws
        Draws by name (any shape; all draws are pooled).
    ci_prob
        Probability of the equal-tailed interval that is shaded.
    titles
        Panel titles by name (default: the name).
    ax
        One Axes per quantity (a single Axes for one quantity); new ones by default.

    Returns
    -------
    numpy.ndarray
        The axes, one per quantity.  In each, the density curve has ``gid="density"``,
        the shaded interval ``gid="interval"`` and the median line ``gid="median"``.
    """
    from arviz_stats.base import array_stats

    _check_prob(ci_prob)
    if not draws:
        raise ValueError("No quantities to plot.")
    axes = _axes_grid(len(draws), ax)
    titles = dict(titles or {})
    for a, (name, d) in zip(axes, draws.items()):
        flat = np.asarray(d, dtype=float).ravel()
        lo, med, hi = (float(v) for v in _eti(flat, ci_prob))
        if np.ptp(flat) > 0:
            grid, pdf, _ = array_stats.kde(flat)
        else:  # a constant (e.g. a fixed parameter): a spike rather than a KDE error
            grid, pdf = np.array([flat[0], flat[0]]), np.array([0.0, 1.0])
        grid, pdf = np.asarray(grid), np.asarray(pdf)
        # Put the interval bounds on the grid so the shading starts and stops exactly at them.
        extra = np.array([b for b in (lo, hi) if grid[0] < b < grid[-1]])
        at = np.searchsorted(grid, extra)
        grid, pdf = np.insert(grid, at, extra), np.insert(pdf, at, np.interp(extra, grid, pdf))
        a.plot(grid, pdf, color="C0", lw=1.5, gid="density")
        inside = (grid >= lo) & (grid <= hi)
        a.fill_between(grid, 0, pdf, where=inside, color="C0", alpha=0.3, lw=0, gid="interval")
        a.plot([med, med], [0, np.interp(med, grid, pdf)], color="C0", lw=1.5, gid="median")
        if grid[0] <= 0 <= grid[-1]:
            a.axvline(0, color="gray", lw=0.8, ls="--", zorder=0)
        a.set_title(f"{titles.get(name, name)}\n{med:.3f} [{lo:.3f}, {hi:.3f}]", fontsize="medium")
        a.set_yticks([])
        a.set_ylim(bottom=0)
        for side in ("left", "right", "top"):
            a.spines[side].set_visible(False)
    axes[0].figure.supxlabel(f"Posterior median [{_percent(ci_prob)} CI]", fontsize="small")
    return axes


# --------------------------------------------------------------- caterpillar
def _cluster_matrix(draws: Any) -> tuple[np.ndarray, list[str]]:
    """Draws as (cluster, sample) plus cluster names, from a DataFrame, DataArray or array."""
    if isinstance(draws, pd.DataFrame):
        # A DataFrame holds one column per cluster and one row per draw.
        return draws.to_numpy(dtype=float).T, [str(c) for c in draws.columns]
    if hasattr(draws, "dims") and "cluster" in draws.dims:
        da = draws.transpose("cluster", ...)
        names = [str(c) for c in da["cluster"].values] if "cluster" in da.coords else None
        mat = np.asarray(da.values, dtype=float).reshape(da.sizes["cluster"], -1)
        return mat, names or [str(i) for i in range(mat.shape[0])]
    arr = np.asarray(draws, dtype=float)
    if arr.ndim < 2:
        raise ValueError(
            "draws need a cluster axis and at least one sample axis, e.g. (chain, draw, cluster)."
        )
    # A bare array is read as (..., cluster), the layout of fit.cluster_slopes().
    mat = np.moveaxis(arr, -1, 0).reshape(arr.shape[-1], -1)
    return mat, [str(i) for i in range(mat.shape[0])]


def plot_caterpillar(
    draws: Any,
    average: float | np.ndarray | None = None,
    ci_prob: float = 0.95,
    ylabel: str = "Effect",
    title: str | None = None,
    ax: Axes | None = None,
    max_tick_labels: int = 40,
) -> Axes:
    """Cluster-specific effects sorted by their posterior median, with intervals and the average effect.

    Parameters
    ----------
    draws
        Each cluster's draws: an ``xarray.DataArray`` with a ``cluster`` dimension (as
        ``fit.cluster_slopes()["RSa"]`` or ``fit.cluster_indirect(...)`` give), a
        ``DataFrame`` with one column per cluster and one row per draw, or an array
        shaped ``(..., cluster)``.
    average
        The average effect: a number, or its draws (then the line is their median and the
        band their interval).
    ci_prob
        Probability of the equal-tailed intervals.
    ylabel, title
        Axis label and title.
    ax
        Axes to draw on; a new figure is made by default.
    max_tick_labels
        Clusters are named on the x axis when there are at most this many.

    Returns
    -------
    matplotlib.axes.Axes
        Medians (``gid="points"``) sit at x = 0, 1, ... in increasing order; intervals are a
        ``LineCollection`` with ``gid="intervals"``; the average is the line ``gid="average"``
        (and ``gid="average band"`` for its interval).
    """
    import matplotlib.pyplot as plt

    _check_prob(ci_prob)
    mat, names = _cluster_matrix(draws)
    lo, med, hi = _eti(mat, ci_prob)
    order = np.argsort(med, kind="stable")
    x = np.arange(len(order))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, min(0.08 * len(x) + 3, 14)), 4))
    ax.vlines(x, lo[order], hi[order], color="C0", lw=1, alpha=0.7, gid="intervals")
    ax.plot(x, med[order], "o", color="C0", ms=3, gid="points")
    if average is not None:
        avg = np.asarray(average, dtype=float).ravel()
        a_lo, a_med, a_hi = (float(v) for v in _eti(avg, ci_prob))
        ax.axhline(a_med, color="C1", lw=1.5, gid="average", label=f"average effect {a_med:.3f}")
        if avg.size > 1:
            ax.axhspan(a_lo, a_hi, color="C1", alpha=0.15, lw=0, gid="average band")
        ax.legend(frameon=False, loc="upper left")
    ax.axhline(0, color="gray", lw=0.8, ls="--", zorder=0)
    if len(x) <= max_tick_labels:
        ax.set_xticks(x, [names[i] for i in order], rotation=90, fontsize="small")
        ax.set_xlabel("Cluster (sorted by posterior median)")
    else:
        ax.set_xlabel(f"{len(x)} clusters, sorted by posterior median")
    ax.set_ylabel(f"{ylabel} (median, {_percent(ci_prob)} CI)")
    if title:
        ax.set_title(title)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    return ax


# --------------------------------------------------------------- diagnostics
def diagnostic_tree(fit: MSEMFit, var_names: Sequence[str] | str | None = None) -> Any:
    """The draws to diagnose as an ``xarray.DataTree``, one scalar variable per parameter.

    Parameters
    ----------
    fit
        The fitted model.
    var_names
        Labels (``"a_w"``), ``"group[element]"`` names, whole parameter groups (``"loading_w"``)
        or derived quantities (``"med_w"``).  Default: the regression paths and random-slope SDs.

    Returns
    -------
    xarray.DataTree
        Groups ``posterior`` (variables named by label where there is one, else
        ``group[element]``) and, when the run recorded it, ``sample_stats`` with ``diverging``.
    """
    import xarray as xr

    st = fit.structure
    groups = st.groups
    if var_names is None:
        var_names = [g for g in groups if groups[g].kind in _DIAGNOSTIC_KINDS]
    elif isinstance(var_names, str):
        var_names = [var_names]
    derived = None
    post = fit.posterior
    data: dict[str, Any] = {}
    for name in var_names:
        if name in groups:
            g = groups[name]
            for i, el in enumerate(g.elements):
                key = g.labels[i] or f"{g.name}[{el}]"
                data[key] = fit.parameter_draws()[name][..., i]
            continue
        try:
            data[name] = fit.draws(name)
            continue
        except KeyError as err:
            if derived is None:
                derived = {q.label: q.draws for q in fit.derived_quantities()}
            if name in derived:
                data[name] = derived[name]
                continue
            known = sorted(set(groups) | set(st.labels) | set(derived))
            raise KeyError(f"No parameter, group or derived quantity {name!r}; known: {known}.") from err
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    ds = xr.Dataset(
        {k: (("chain", "draw"), np.asarray(v, dtype=float)) for k, v in data.items()}, coords=coords
    )
    tree = {"posterior": ds}
    if "sample_stats" in fit.idata.children:
        stats = fit.idata["sample_stats"].to_dataset()
        if "diverging" in stats:
            tree["sample_stats"] = stats[["diverging"]]
    return xr.DataTree.from_dict(tree)
