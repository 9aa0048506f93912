"""One table for every model class: no slopes, slopes, moderated slopes, each with and without missing cells.

Run: ``python bench/model_classes.py [--models 2 3 4] [--shares 0 0.3] [--draws 500] [--tune 500]``.
The classes are tutorial Models 2 (no random slopes), 3 (random slopes) and 4 (slopes moderated
by the latent school mean of SES) on the bundled data (100 schools x 30 students); missing cells
are deleted from the twelve indicators at random, MAR on SES (``bench/missing_gradient._data``,
seed 1). Each (model, share) runs in new processes, one after the other in this run:

1. cold: empty PyTensor and numba caches (a directory of their own), ``compile`` and sampling
   as a user's first fit;
2. warm: the same caches again, in a second new process (what every later fit of a model of the
   same shape waits for);
3. in the warm process also the log density and gradient nutpie called, timed through its C
   entry point with one BLAS thread (``bench/kernel_gradient.py``'s timer: median of 15 x 100
   calls): the whole-model kernel's (``route`` "kernel") or PyTensor's compiled graph's.

Sampling is nutpie, 2 chains (this machine's cores) x (tune + draws), seed 46, from pymsem's
starting values. Min bulk ESS is over the structural parameters (regressions and random-slope
parameters). Writes ``bench/results/model_classes.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).parent


def one(model: int, share: float, draws: int, tune: int, gradient: bool) -> dict:
    """Compile, sample and (optionally) time the gradient of one class, in this process."""
    sys.path.insert(0, str(HERE))
    from missing_gradient import _data

    import pymsem as ms
    from pymsem.results.fit import MSEMFit
    from pymsem.sample import sample_compiled

    t0 = time.perf_counter()
    spec = ms.tutorial.MODELS[model](_data(share), "schid")
    compiled = spec.compile()
    build_s = time.perf_counter() - t0
    run = sample_compiled(compiled, draws=draws, tune=tune, chains=2, seed=46, progress=False)
    fit = MSEMFit(spec, compiled, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = fit.diagnostics()
        s = fit.summary()
    structural = s[s["block"].isin(["Regressions", "Random slopes"])]
    min_ess = float(structural["ess_bulk"].min())
    row = {
        # Building the model compiles pymsem's own numba kernels (cached on disk); nutpie then
        # compiles the log density: both are what the user waits for before sampling.
        "compile_s": round(build_s + run.compile_seconds, 1),
        "sampling_s": round(run.sampling_seconds, 1),
        "min_ess": round(min_ess),
        "ess_per_s": round(min_ess / run.sampling_seconds, 1),
        "max_rhat": round(float(d["max_rhat"]), 4),
        "divergences": int(d["divergences"]),
        "formulation": compiled.formulation.name,
    }
    row["route"] = run.log_density
    if gradient:
        row["ms_per_grad"] = round(_ms_per_grad(compiled), 4)
    return row


def _ms_per_grad(compiled) -> float:
    """Milliseconds per log density and gradient through the entry point nutpie called: the
    whole-model kernel's where it covers the model, else PyTensor's compiled graph (reused from
    the fit in this process)."""
    from kernel_gradient import _ms_per_call
    from threadpoolctl import threadpool_limits

    from pymsem.compile import nutpie_cache
    from pymsem.compile.reproducible import ieee_numba
    from pymsem.sample import _initial_point, _whole_model_kernel

    init = _initial_point(compiled, None)
    kernel = _whole_model_kernel(compiled, init)
    if kernel is not None:
        fn, x, ud = kernel.logp_cfunc.ctypes, kernel._initial_point(0), kernel.user_data.ctypes.data
    else:
        with ieee_numba():
            graph = nutpie_cache.compile_nutpie(compiled.pymc_model, init)
        fn, x, ud = graph.compiled_logp_func.ctypes, graph.initial_point_func(0), graph.user_data.ctypes.data
    with threadpool_limits(1, "blas"):
        return _ms_per_call(fn, x, ud)[0]


def _subprocess(model: int, share: float, draws: int, tune: int, cache: str, gradient: bool) -> dict:
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache}/pt", NUMBA_CACHE_DIR=f"{cache}/nb")
    cmd = [
        sys.executable,
        __file__,
        "--one",
        str(model),
        str(share),
        "--draws",
        str(draws),
        "--tune",
        str(tune),
    ]
    if gradient:
        cmd.append("--gradient")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.3])
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--one", type=float, nargs=2, default=None)
    p.add_argument("--gradient", action="store_true")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.draws, args.tune, args.gradient)))
        return
    import pandas as pd

    sys.path.insert(0, str(HERE))
    from compare_samplers import markdown_table

    rows = []
    for model in args.models:
        for share in args.shares:
            with tempfile.TemporaryDirectory() as cache:
                cold = _subprocess(model, share, args.draws, args.tune, cache, gradient=False)
                warm = _subprocess(model, share, args.draws, args.tune, cache, gradient=True)
            row = {
                "model": model,
                "missing": share,
                "formulation": warm["formulation"],
                "route": warm["route"],
                "ms_per_grad": warm["ms_per_grad"],
                "compile_cold_s": cold["compile_s"],
                "wall_cold_s": cold["wall_s"],
                "compile_warm_s": warm["compile_s"],
                "wall_warm_s": warm["wall_s"],
                "sampling_s": warm["sampling_s"],
                "min_ess": warm["min_ess"],
                "ess_per_s": warm["ess_per_s"],
                "max_rhat": warm["max_rhat"],
                "divergences": warm["divergences"],
            }
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    base = df[(df["model"] == 3) & (df["missing"] == 0.0)]["ms_per_grad"]
    if len(base):
        df["grad_vs_model3"] = (df["ms_per_grad"] / float(base.iloc[0])).round(2)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    df.assign(tag=args.tag).to_csv(out / "model_classes.csv", index=False)
    print("\n" + markdown_table(df))


if __name__ == "__main__":
    main()
