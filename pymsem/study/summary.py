"""What a simulation study reports: power, coverage, bias, RMSE, convergence and failures.

Per design and parameter, over the replications that produced estimates:

* ``power``: share of intervals that exclude 0 (with its Monte Carlo SE, ``power_se``);
* ``coverage``: share of intervals that contain the true value;
* ``bias`` (mean of median - truth), ``rel_bias`` (bias / truth; NaN when the truth is 0),
  ``rmse``;
* ``mean_sd`` (the average posterior SD) against ``sd_estimates`` (the SD of the medians over
  replications) and their ratio ``sd_ratio`` (about 1 when the posterior SDs are honest);
* ``reps`` (replications with estimates), ``failed`` (replications that raised),
  ``converged`` (share of all the design's replications that converged).

Parameters without a known truth get NaN coverage, bias and RMSE, but still power.
Replications that failed or did not converge are never dropped silently: they are counted
here and listed by :func:`failures`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["failures", "select", "summarize"]

DESIGN_COLUMNS = ["design_name", "n_clusters", "cluster_size", "missing", "mechanism"]


def _as_float(s: pd.Series) -> pd.Series:
    """A flag column (nullable boolean) as 1.0 / 0.0 / NaN, for means."""
    return pd.Series(s.astype("boolean").to_numpy(dtype=float, na_value=np.nan), index=s.index)


def select(results: pd.DataFrame, labels: Sequence[str] | str | None) -> pd.DataFrame:
    """The rows of ``results`` whose label or parameter name is in ``labels`` (all when None)."""
    if labels is None:
        return results
    labels = [labels] if isinstance(labels, str) else list(labels)
    return results[results["label"].isin(labels) | results["parameter"].isin(labels)]


def summarize(
    results: pd.DataFrame,
    designs: pd.DataFrame | None = None,
    labels: Sequence[str] | str | None = None,
    converged_only: bool = False,
) -> pd.DataFrame:
    """Per design and parameter: power, coverage, bias, RMSE, SDs and convergence.

    Parameters
    ----------
    results
        The per-replication table (``SimulationStudy.results()``).
    designs
        One row per design index with its settings (``n_clusters``, ...), joined in.
    labels
        Keep these labels or parameter names (all by default).
    converged_only
        Summarize only replications that converged (``converged`` is still the share of all).
    """
    res = results.copy()
    res["failed"] = res["error"].fillna("").astype(str) != ""
    res["converged"] = _as_float(res["converged"]).fillna(0.0)
    per_rep = res.groupby(["design", "rep"]).agg(failed=("failed", "first"), converged=("converged", "first"))
    per_design = per_rep.groupby("design").agg(
        reps_total=("failed", "size"), failed=("failed", "sum"), converged=("converged", "mean")
    )
    ok = res[~res["failed"]]
    if converged_only:
        ok = ok[ok["converged"] == 1.0]
    ok = select(ok, labels).copy()
    ok["power"] = _as_float(ok["excludes_zero"])
    ok["coverage"] = _as_float(ok["covers"])
    ok["error_"] = ok["median"].astype(float) - ok["truth"].astype(float)
    ok["sq"] = ok["error_"] ** 2
    keys = ["design", "level", "parameter", "label"]
    g = ok.groupby(keys, sort=False)
    out = g.agg(
        block=("block", "first"),
        truth=("truth", "first"),
        reps=("rep", "size"),
        power=("power", "mean"),
        coverage=("coverage", "mean"),
        bias=("error_", "mean"),
        mse=("sq", "mean"),
        mean_sd=("sd", "mean"),
        sd_estimates=("median", "std"),
        mean_estimate=("median", "mean"),
    ).reset_index()
    out["power_se"] = np.sqrt(out["power"] * (1 - out["power"]) / out["reps"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_bias"] = np.where(out["truth"] != 0, out["bias"] / out["truth"], np.nan)
        out["sd_ratio"] = out["mean_sd"] / out["sd_estimates"]
    out["rmse"] = np.sqrt(out.pop("mse"))
    out = out.merge(per_design[["failed", "converged"]], left_on="design", right_index=True, how="left")
    if designs is not None:
        out = out.merge(designs, left_on="design", right_index=True, how="left")
    cols = ["design", *(c for c in DESIGN_COLUMNS if c in out), "level", "parameter", "label", "block",
            "truth", "reps", "power", "power_se", "coverage", "bias", "rel_bias", "rmse", "mean_estimate",
            "mean_sd", "sd_estimates", "sd_ratio", "converged", "failed"]  # fmt: skip
    return out[cols].sort_values(["design"], kind="stable", ignore_index=True)


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """One row per replication that raised or did not converge, with why."""
    res = results.copy()
    res["converged"] = _as_float(res["converged"]).fillna(0.0)
    per_rep = res.groupby(["design", "rep"], as_index=False).first()
    bad = per_rep[(per_rep["error"].fillna("").astype(str) != "") | (per_rep["converged"] != 1.0)]
    cols = [
        "design",
        "rep",
        "error",
        "max_rhat",
        "min_ess_bulk",
        "divergences",
        "warnings",
        "data_seed",
        "fit_seed",
    ]
    return bad[cols].reset_index(drop=True)
