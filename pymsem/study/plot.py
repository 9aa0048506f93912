"""Power curve: power against the number of clusters, one line per label (and cluster size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_power_curve"]


def plot_power_curve(
    summary: pd.DataFrame,
    x: str = "n_clusters",
    target: float | None = 0.8,
    by: Sequence[str] = ("cluster_size", "missing", "mechanism"),
    ax: Any = None,
    band: bool = True,
) -> Any:
    """Power against ``x`` (the number of clusters) from a study summary.

    One line per label and per value of the design settings in ``by`` that vary; a band of
    +/- 2 Monte Carlo SEs (``power_se``) around each line; a dashed line at ``target``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    varying = [c for c in by if c in summary and summary[c].nunique() > 1]
    keys = ["label", *varying]
    s = summary.assign(label=summary["label"].where(summary["label"] != "", summary["parameter"]))
    for key, part in s.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        part = part.groupby(x, as_index=False)[["power", "power_se"]].mean().sort_values(x)
        name = key[0] + "".join(f", {c} {v}" for c, v in zip(varying, key[1:]))
        (line,) = ax.plot(part[x], part["power"], marker="o", lw=1.8, ms=4, label=name)
        if band:
            lo = np.clip(part["power"] - 2 * part["power_se"], 0, 1)
            hi = np.clip(part["power"] + 2 * part["power_se"], 0, 1)
            ax.fill_between(part[x], lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    if target is not None:
        ax.axhline(target, color="0.4", ls="--", lw=1, zorder=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("clusters" if x == "n_clusters" else x)
    ax.set_ylabel("power (interval excludes 0)")
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(frameon=False, fontsize="small")
    return ax
