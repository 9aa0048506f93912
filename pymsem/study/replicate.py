"""One replication of a simulation study: seeds, simulate, impose missingness, fit, tabulate.

Every random draw of a replication comes from seeds derived from the study seed and the
replication's place in the study, ``SeedSequence(entropy=study_seed, spawn_key=(design, rep))``,
never from the order in which workers happen to run it: the same study gives the same rows
serially, on local processes and on a Dask cluster.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pymsem.specification.model import MSEM
from pymsem.study.design import Design, impose_missing

__all__ = ["COLUMNS", "Task", "rep_seeds", "replicate", "truth_values"]

#: Columns of the per-replication table, one row per replication and parameter (a failed
#: replication has one row, with ``error`` set and the estimate columns empty).
COLUMNS = [
    "design", "rep", "level", "parameter", "block", "label", "truth", "median", "sd", "lower",
    "upper", "covers", "excludes_zero", "rhat", "ess_bulk", "ess_tail", "max_rhat", "min_ess_bulk",
    "divergences", "converged", "seconds", "reused", "n_units", "missing_share", "data_seed",
    "fit_seed", "warnings", "error", "n_rows",
]  # fmt: skip

#: Fit settings of a replication unless the study's ``fit_options`` say otherwise: short chains
#: (a study wants many replications, each only precise enough to locate its interval), and
#: nothing printed (convergence messages become the ``warnings`` column).
FIT_DEFAULTS: dict[str, Any] = {"draws": 500, "tune": 500, "chains": 2}

# PyTensor's compilation and pymsem's reuse cache are not safe to enter from two threads at once:
# fits in one process (Dask thread workers) take turns; processes run side by side.
_FIT_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Task:
    """What a worker needs for one replication (pickled to processes and Dask workers)."""

    spec: MSEM
    truth: Mapping[str, float]
    design: Design
    design_index: int
    rep: int
    study_seed: int
    fit_options: Mapping[str, Any]
    ci_prob: float = 0.95
    max_rhat: float = 1.05
    min_ess: float = 100.0
    max_divergences: int = 0
    parameters: tuple[str, ...] | None = None


def rep_seeds(study_seed: int, design_index: int, rep: int) -> dict[str, int]:
    """The seeds of one replication: cluster sizes, data, missingness and the sampler.

    Derived with :class:`numpy.random.SeedSequence` from the study seed and the replication's
    (design, rep) position, so they do not depend on which worker runs it or when.
    """
    ss = np.random.SeedSequence(entropy=int(study_seed), spawn_key=(int(design_index), int(rep)))
    names = ("sizes", "data", "missing", "fit")
    return {n: int(c.generate_state(1, np.uint32)[0]) for n, c in zip(names, ss.spawn(len(names)))}


def truth_values(model: MSEM, values: Mapping[str, float]) -> dict[tuple[str, str, str], float]:
    """The true value of every row of ``fit.summary()`` for a model simulated with ``values``.

    The truth goes through the machinery a fit's draws go through (one "draw" equal to the
    true parameter vectors): variances reported as variances, random-slope moments, ICCs and
    derived quantities (``a_w*b_w``, conditional indirect effects) all follow, with no second
    implementation and no ``eval``. Keyed by (level, parameter, label).
    """
    import xarray as xr

    from pymsem.results.fit import MSEMFit
    from pymsem.simulate import parameter_vectors, slope_correlation

    st = model.structure()
    vec = parameter_vectors(st, values)
    ds: dict[str, Any] = {k: (("chain", "draw", f"{k}_dim"), v[None, None, :]) for k, v in vec.items()}
    if st.random_slopes:
        R = slope_correlation(st, values)
        ds["slope_corr_chol"] = (("chain", "draw", "slope_i", "slope_j"), np.linalg.cholesky(R)[None, None])
    fit = MSEMFit.__new__(MSEMFit)  # a "fit" whose posterior is the truth: no sampling, no data
    fit.model, fit.structure, fit._quantities = model, st, None
    fit.__dict__["_posterior"] = xr.Dataset(ds)
    with np.errstate(all="ignore"):
        qs = fit.quantities()
    return {(q.level, q.parameter, q.label or ""): float(np.asarray(q.draws).ravel()[0]) for q in qs}


def _simulated_columns(df: pd.DataFrame, spec: MSEM) -> list[str]:
    return [c for c in df.columns if c not in (spec.cluster, "id")]


def replicate(task: Task) -> list[dict[str, Any]]:
    """Run one replication; never raises: a failure is one row with its ``error``."""
    from pymsem.simulate import simulate

    start = time.perf_counter()
    seeds = rep_seeds(task.study_seed, task.design_index, task.rep)
    base = {
        "design": task.design_index,
        "rep": task.rep,
        "data_seed": seeds["data"],
        "fit_seed": seeds["fit"],
    }
    try:
        design = task.design
        truth = {**task.truth, **(design.truth or {})}
        sizes = design.sizes(np.random.default_rng(seeds["sizes"]))
        df = simulate(task.spec, truth, design.n_clusters, sizes, seed=seeds["data"])
        df = impose_missing(
            df, design, _simulated_columns(df, task.spec), np.random.default_rng(seeds["missing"])
        )
        cols = _simulated_columns(df, task.spec)
        share = float(df[cols].isna().to_numpy().mean()) if cols else 0.0
        model = task.spec.with_data(df)
        options = {**FIT_DEFAULTS, **task.fit_options, "seed": seeds["fit"], "progress": False, "warn": False}
        with _FIT_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Library deprecations are the developers' business, not a property of the replication.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            fit = model.fit(**options)
            summary = fit.summary(task.ci_prob).reset_index()
            diag = fit.diagnostics()
            messages = fit.check(warn=False)
        messages += [f"{w.category.__name__}: {w.message}" for w in caught]
        truths = truth_values(model, truth)
    except Exception as e:  # recorded, never raised: one bad data set must not stop a study
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        row = dict.fromkeys(COLUMNS, np.nan)
        row.update(base, error=f"{type(e).__name__}: {e}{where}", converged=False, warnings="")
        row.update(seconds=time.perf_counter() - start, n_rows=1)
        return [row]
    if task.parameters:
        keep = summary["label"].isin(task.parameters) | summary["parameter"].isin(task.parameters)
        summary = summary[keep]
    max_rhat, min_ess, div = diag["max_rhat"], diag["min_ess_bulk"], int(diag["divergences"])
    # One chain has no R-hat (NaN): the R-hat condition is then not applied.
    converged = bool(
        (np.isnan(max_rhat) or max_rhat <= task.max_rhat)
        and (np.isnan(min_ess) or min_ess >= task.min_ess)
        and div <= task.max_divergences
    )
    seconds = time.perf_counter() - start
    rows = []
    for r in summary.itertuples(index=False):
        t = truths.get((r.level, r.parameter, r.label or ""), np.nan)
        rows.append(
            {
                **base,
                "level": r.level, "parameter": r.parameter, "block": r.block, "label": r.label or "",
                "truth": t, "median": r.median, "sd": r.sd, "lower": r.lower, "upper": r.upper,
                "covers": (r.lower <= t <= r.upper) if np.isfinite(t) else np.nan,
                "excludes_zero": bool(r.lower > 0 or r.upper < 0),
                "rhat": r.rhat, "ess_bulk": r.ess_bulk, "ess_tail": r.ess_tail,
                "max_rhat": max_rhat, "min_ess_bulk": min_ess, "divergences": div,
                "converged": converged, "seconds": seconds, "reused": bool(fit.run.reused_compiled),
                "n_units": len(df), "missing_share": share, "warnings": " | ".join(messages), "error": "",
            }
        )  # fmt: skip
    for row in rows:
        row["n_rows"] = len(rows)
    return rows


def run_tasks(tasks: Sequence[Task]) -> list[list[dict[str, Any]]]:
    """Several replications in turn (one worker's share)."""
    return [replicate(t) for t in tasks]
