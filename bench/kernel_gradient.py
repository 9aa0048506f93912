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
Writes ``bench/results/kernel_gradient.csv`` and prints a markdown table.
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


def _ms_per_call(fn, x: np.ndarray, user_data: int) -> tuple[float, float, np.ndarray]:
    """Median milliseconds per call of a nutpie log-density entry point, its value and gradient."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    grad, lp = np.empty_like(x), np.empty(1)
    args = (len(x), x.ctypes.data_as(_PTR), grad.ctypes.data_as(_PTR), lp.ctypes.data_as(_PTR))
    args = (*args, ctypes.c_void_p(user_data))
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


def row(model: int, share: float) -> list[dict]:
    compiled = ms.tutorial.MODELS[model](_data(share)).compile()
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
            out.append(
                {"model": model, "missing": share, "route": "kernel", "ms_per_grad": round(k_ms, 4),
                 "dims": g_grad.size, "logp_diff": abs(k_lp - g_lp),
                 "grad_max_diff": float(np.abs(k_grad - g_grad).max())}  # fmt: skip
            )
    out.append({"model": model, "missing": share, "route": "graph", "ms_per_grad": round(g_ms, 4),
                "dims": g_grad.size})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.3])
    args = parser.parse_args()
    rows = [r for m in args.models for s in args.shares for r in row(m, s)]
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
