"""Replications per hour of a simulation study: 1 vs 2 local workers, and a Dask LocalCluster.

Run: ``python bench/study_scaling.py [--model 1] [--reps 8] [--clusters 50] [--size 20]``.
The same study (tutorial Model ``--model`` on ``--clusters`` schools of ``--size``, 2 chains x
(500 + 500) draws, seed 11) runs with

* 1 worker (this process; its 2 chains on 2 threads),
* 2 local worker processes (spawned; 2 chains each, so 4 chain threads on the cores),
* a Dask ``LocalCluster`` of 2 worker processes (1 thread each),

each in a new output directory, after one warm-up replication in this process (so every
engine finds numba's and PyTensor's disk caches warm, as on a machine that has run pymsem
before; a new worker process still compiles each design shape once). Reports wall seconds,
replications per hour (wall clock, compiles included), the median seconds of a replication
that reused its worker's compiled model, and checks that every engine gave the same medians.
Writes ``bench/results/study_scaling.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pymsem.study import SimulationStudy, grid
from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

RESULTS = Path(__file__).parent / "results"


def run(number: int, designs: list, reps: int, out: Path, **engine) -> tuple[SimulationStudy, float]:
    study = SimulationStudy(
        tutorial_spec(number), TUTORIAL_TRUTH[number], designs, reps=reps, seed=11, out=out,
        parameters=["a_w", "b_w"], **engine,
    )  # fmt: skip
    t = time.perf_counter()
    study.run(progress=False)
    return study, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=int, default=1)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--clusters", type=int, default=50)
    p.add_argument("--size", type=int, default=20)
    args = p.parse_args()
    designs = grid([args.clusters], cluster_size=args.size)
    tmp = Path(tempfile.mkdtemp(prefix="study_scaling_"))
    run(args.model, designs, 1, tmp / "warmup", workers=1)  # warm the disk caches

    rows, medians = [], {}
    engines = [("1 worker", {"workers": 1}), ("2 workers", {"workers": 2})]
    try:
        from dask.distributed import Client, LocalCluster

        engines.append(("dask LocalCluster 2x1", {"dask": True}))
    except ImportError:
        print("dask.distributed is not installed: the Dask run is skipped (pip install 'pymsem[dask]').")
    for name, engine in engines:
        if engine.get("dask"):
            with (
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
                Client(lc) as client,
            ):
                study, wall = run(args.model, designs, args.reps, tmp / "dask", client=client)
        else:
            study, wall = run(args.model, designs, args.reps, tmp / name.replace(" ", "_"), **engine)
        res = study.results()
        n_workers = 2 if engine.get("dask") else engine["workers"]
        per_rep = res.groupby("rep").first()
        reused = per_rep.loc[per_rep["reused"].astype(bool), "seconds"]
        medians[name] = res.sort_values(["rep", "label"])["median"].to_numpy()
        rows.append(
            {
                "engine": name,
                "model": args.model,
                "design": designs[0].label,
                "reps": args.reps,
                "wall_s": round(wall, 1),
                "reps_per_hour": round(3600 * args.reps / wall),
                "compiles": int((~per_rep["reused"].astype(bool)).sum()),
                "median_rep_s_reused": round(float(reused.median()), 2) if len(reused) else np.nan,
                # throughput once compiled: every worker busy with reused replications
                "steady_per_hour": round(n_workers * 3600 / float(reused.median()))
                if len(reused)
                else np.nan,
                "failed": int((per_rep["error"] != "").sum()),
            }
        )
        print(rows[-1], flush=True)
    first = next(iter(medians.values()))
    same = all(np.array_equal(first, m) for m in medians.values())
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / "study_scaling.csv", index=False)
    header = (
        f"# Simulation study throughput (`python bench/study_scaling.py --model {args.model} "
        f"--reps {args.reps} --clusters {args.clusters} --size {args.size}`)\n\n"
        f"{datetime.date.today()}, {os.cpu_count()}-core machine shared with other jobs (timings are "
        f"indicative), tutorial Model {args.model}, {designs[0].label}, 2 chains x (500 + 500) draws "
        f"per replication. reps_per_hour: wall clock, each worker's compiles included; "
        f"median_rep_s_reused: a replication that reused its worker's compiled model. Every engine "
        f"gave identical per-replication medians: {same}.\n\n"
    )
    table = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    table += "".join("| " + " | ".join(map(str, r)) + " |\n" for r in df.itertuples(index=False))
    (RESULTS / "study_scaling.md").write_text(header + table)
    print(header + table)


if __name__ == "__main__":  # worker processes are spawned and import this file
    main()
