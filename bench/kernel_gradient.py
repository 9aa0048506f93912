"""Gradient cost on each route, every tutorial model class, complete and with missing cells.

Run: ``python bench/kernel_gradient.py [--models 2 3 4] [--shares 0 0.3]``. For each tutorial
model on the bundled data (100 x 30), complete and with a share of the twelve indicators' cells
missing (MAR on SES, :func:`missing_gradient._data`, cells sampled), the log density and
gradient that nutpie calls is timed through its C entry point (median of 15 x 100 calls, one
BLAS thread, at the model's starting point), once for the whole-model kernel
(:mod:`pymsem.compile.nutpie_kernel`, where it covers the model) and once for PyTensor's compiled
graph (:func:`pymsem.compile.nutpie_cache.compile_nutpie`, the route before it). Both run in
one process, so their ratios are same-run; ``x_model3`` is against Model 3's complete-data
gradient on the same route (issue 21's targets: slopes at most 1.5x, 30% missing at most 3x).
``--copies K`` stacks K copies of the data as K x 100 clusters (new cluster ids; the
gradient's cost grows with the clusters, not with their values): the targets' ratios on larger
data of the same size for every model. ``--big`` adds Model 3 simulated on 10,000 clusters of 100 students (``bench/scaling.py``'s
model and true values, non-centered slopes). Writes ``bench/results/kernel_gradient.csv`` and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from missing_gradient import _data

import pymsem as ms
from pymsem.compile import nutpie_cache
from pymsem.compile.reproducible import ieee_numba
from pymsem.sample import _initial_point, _whole_model_kernel

OUT = Path(__file__).resolve().parent / "results"
_PTR = ctypes.POINTER(ctypes.c_double)


def entry_args(x: np.ndarray, user_data: int) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    """The ctypes arguments of a nutpie log-density entry point at ``x`` with the model's data
    record at address ``user_data``, and the gradient's and value's outputs. The arguments
    point into ``x`` (as a contiguous array: the fourth item returned) and the outputs: keep
    them alive while calling."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    grad, lp = np.empty_like(x), np.empty(1)
    args = (len(x), x.ctypes.data_as(_PTR), grad.ctypes.data_as(_PTR), lp.ctypes.data_as(_PTR))
    return (*args, ctypes.c_void_p(user_data)), grad, lp, x


def _ms_per_call(fn, x: np.ndarray, user_data: int) -> tuple[float, float, np.ndarray]:
    """Median milliseconds per call of a nutpie log-density entry point, its value and gradient."""
    args, grad, lp, x = entry_args(x, user_data)
    if fn(*args) != 0:
        raise RuntimeError("the log density failed at the starting point")
    for _ in range(50):
        fn(*args)
    times = []
    for _ in range(15):
        t = time.perf_counter()
        for _ in range(100):
            fn(*args)
        times.append((time.perf_counter() - t) / 100)
    return 1e3 * float(np.median(times)), float(lp[0]), grad.copy()


def _row(model: int, share: float, route: str, ms: float, dims: int) -> dict:
    return {"model": model, "missing": share, "route": route, "ms_per_grad": round(ms, 4), "dims": dims}


def _copies(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """``k`` copies of the data, each copy's clusters under new ids."""
    if k == 1:
        return df
    step = int(df["schid"].max()) + 1
    return pd.concat([df.assign(schid=df["schid"] + c * step) for c in range(k)], ignore_index=True)


def row(model: int | str, share: float, copies: int = 1) -> list[dict]:
    if model == "3-big":  # Model 3 simulated on 10,000 clusters of 100 (bench/scaling.py's)
        from scaling import TRUTH, spec

        compiled = spec(ms.simulate(spec(None), TRUTH, 10_000, 100, seed=1)).compile(slopes="noncentered")
    else:
        compiled = ms.tutorial.MODELS[model](_copies(_data(share), copies)).compile()
    init = _initial_point(compiled, None)
    kernel = _whole_model_kernel(compiled, init)
    with ieee_numba():
        graph = nutpie_cache.compile_nutpie(compiled.pymc_model, init)
    out = []
    with threadpool_limits(1, "blas"):
        g_ms, g_lp, g_grad = _ms_per_call(
            graph.compiled_logp_func.ctypes, graph.initial_point_func(0), graph.user_data.ctypes.data
        )
        if kernel is not None:
            k_ms, k_lp, k_grad = _ms_per_call(
                kernel.logp_cfunc.ctypes, kernel._initial_point(0), kernel.user_data.ctypes.data
            )
            diffs = {"logp_diff": abs(k_lp - g_lp), "grad_max_diff": float(np.abs(k_grad - g_grad).max())}
            out.append(_row(model, share, "kernel", k_ms, g_grad.size) | diffs)
    out.append(_row(model, share, "graph", g_ms, g_grad.size))
    n_clusters = 10_000 if model == "3-big" else 100 * copies
    return [r | {"clusters": n_clusters} for r in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--copies", type=int, default=1, help="K copies of the data: K x 100 clusters")
    parser.add_argument("--big", action="store_true", help="also Model 3 on 10,000 x 100 (1,000,000 rows)")
    args = parser.parse_args()
    rows = [r for m in args.models for s in args.shares for r in row(m, s, args.copies)]
    if args.big:
        rows += row("3-big", 0.0)
    df = pd.DataFrame(rows)
    for route in ("kernel", "graph"):
        base = df[(df.model == 3) & (df.missing == 0.0) & (df.route == route)]
        if len(base):
            sel = df.route == route
            df.loc[sel, "x_model3"] = (df.loc[sel, "ms_per_grad"] / base.ms_per_grad.iloc[0]).round(2)
    if not df.empty and (df.model == 3).any():
        OUT.mkdir(exist_ok=True)
        df.to_csv(OUT / "kernel_gradient.csv", index=False)
    print(df.to_markdown(index=False))


if __name__ == "__main__":
    main()
