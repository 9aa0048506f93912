"""Compile time for new data of the same shape: in-process reuse and numba's disk cache.

Run: ``python bench/reuse.py [--reps 3]``. Simulates Model 3 data sets shaped like the bundled
data (100 schools x 30 students) and, for each:

* ``first``: the first fit in a fresh process (numba's disk cache as it stands);
* ``reused``: later fits in the same process, on new data of the same shape (``pymsem.reuse``);
* ``new process``: a second fresh process on new data, where only the disk cache can help.

Reports compile seconds (nutpie's compile, or the reuse check) and sampling seconds for 4
chains x 1000 draws. Writes ``bench/results/reuse.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from scaling import TRUTH, spec  # Model 3 without derived quantities (bench/scaling.py)

import pymsem as ms


def one_fit(seed: int) -> dict:
    df = ms.simulate(spec(None), TRUTH, n_clusters=100, cluster_size=30, seed=seed)
    t0 = time.perf_counter()
    fit = spec(df).fit(seed=seed, progress=False, warn=False)
    return {
        "data_seed": seed,
        "reused": fit.run.reused_compiled,
        "compile_s": round(fit.run.compile_seconds, 2),
        "sampling_s": round(fit.run.sampling_seconds, 2),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one_fit(args.child)))
        return
    rows = []
    for i in range(args.reps):
        r = one_fit(100 + i)
        rows.append({"process": "first", **r} if i == 0 else {"process": "same", **r})
        print(rows[-1], flush=True)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "999"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows.append({"process": "new process", **json.loads(out.stdout.strip().splitlines()[-1])})
    print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    path = Path(__file__).parent / "results" / "reuse.csv"
    df.to_csv(path, index=False)
    print("\nModel 3, 100 schools x 30 students, 4 chains x (1000 + 1000)\n")
    print("| process | data seed | reused | compile s | sampling s | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['process']} | {r['data_seed']} | {r['reused']} | {r['compile_s']} | "
            f"{r['sampling_s']} | {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
