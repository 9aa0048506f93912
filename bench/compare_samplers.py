"""Compile and sampling time, min bulk ESS and ESS per second for the tutorial models, nutpie vs PyMC NUTS.

Run: ``python bench/compare_samplers.py [--models 1 2 3] [--samplers nutpie pymc] [--draws 1000]``.
Writes ``bench/results/compare_samplers_models{N}.csv`` and prints a markdown table. Both samplers run in
the same process on the same machine, 4 chains, so their ratio is meaningful; absolute times
depend on the machine (2 cores here).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

import pymsem as ms
from pymsem.results.fit import MSEMFit
from pymsem.sample import sample_compiled


def run(model_number: int, sampler: str, draws: int, tune: int, seed: int, formulation: str = "auto") -> dict:
    """Fit tutorial Model ``model_number`` on the bundled data once and time it."""
    model = ms.tutorial.tutorial_model(model_number, ms.datasets.load_school())
    t0 = time.perf_counter()
    compiled = model.compile(formulation)
    build_s = time.perf_counter() - t0
    run = sample_compiled(
        compiled, draws=draws, tune=tune, chains=4, seed=seed, sampler=sampler, progress=False
    )
    fit = MSEMFit(model, compiled, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = fit.diagnostics()
        s = fit.summary()
    structural = s[s["block"].isin(["Regressions", "Random slopes"])]
    min_ess = float(structural["ess_bulk"].min())
    return {
        "model": model_number,
        "sampler": sampler,
        "formulation": compiled.formulation.name,
        "build_s": round(build_s, 1),
        "compile_s": round(run.compile_seconds, 1),
        "sampling_s": round(run.sampling_seconds, 1),
        "min_ess_structural": round(min_ess),
        "min_ess_all": round(d["min_ess_bulk"]),
        "ess_per_s": round(min_ess / run.sampling_seconds, 1),
        "max_rhat": round(d["max_rhat"], 4),
        "divergences": d["divergences"],
    }


def markdown_table(df: pd.DataFrame) -> str:
    """The rows of ``df`` as a markdown table."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in df.to_dict("records")]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--samplers", nargs="+", default=["nutpie", "pymc"])
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--seed", type=int, default=46)
    args = p.parse_args()
    rows = []
    for m in args.models:
        for sampler in args.samplers:
            rows.append(run(m, sampler, args.draws, args.tune, args.seed))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    tag = "_".join(str(m) for m in args.models)
    out = Path(__file__).parent / "results" / f"compare_samplers_models{tag}.csv"
    out.parent.mkdir(exist_ok=True)
    df.to_csv(out, index=False)
    print("\n" + markdown_table(df))


if __name__ == "__main__":
    main()
