"""ms per gradient through nutpie's C entry point, two versions of pymsem in alternating processes.

Run: ``python bench/entry_point_ab.py --trees OLD_CHECKOUT . [--rounds 2]``. Each round starts
one new process per tree (in the order given, so the versions alternate); each process puts its
tree first on ``sys.path``, builds the kernel for every case below at the model's starting
point and times the entry point (min of 30 rounds x 100 calls, the cases in turns, one BLAS
thread). Cases: tutorial Models 3 and 4 on the bundled data (100 x 30) complete and with a
share of the indicators' cells missing (MAR on SES, :func:`missing_gradient._data`), and Models
3 and 4 on ``tutorial4_unbalanced``'s 100 clusters of 6-54 students. This machine's timings
drift between processes by several percent, so compare versions by the spread over rounds,
and the ratios (Model 4 / Model 3, missing / complete) within a process. Appends to
``bench/results/entry_point_ab.csv`` and prints one line per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

CHILD = r"""
import ctypes, json, sys, time
tree = sys.argv[1]
sys.path[:0] = [tree, tree + "/bench"]
import numpy as np
from threadpoolctl import threadpool_limits
import pymsem as ms
from pymsem.sample import _initial_point, _whole_model_kernel
from missing_gradient import _data
from tutorial4_unbalanced import data as unbalanced

keep = []
def entry(model, df):
    compiled = ms.tutorial.MODELS[model](df).compile()
    kernel = _whole_model_kernel(compiled, _initial_point(compiled, None))
    x = np.ascontiguousarray(kernel.flat.x0)
    grad, lp = np.empty_like(x), np.empty(1)
    ptr = ctypes.POINTER(ctypes.c_double)
    args = (len(x), x.ctypes.data_as(ptr), grad.ctypes.data_as(ptr), lp.ctypes.data_as(ptr),
            ctypes.c_void_p(kernel.user_data.ctypes.data))
    keep.append((compiled, kernel, x, grad, lp))  # the record points into these
    return kernel.logp_cfunc.ctypes, args

cases = {
    "model3": entry(3, _data(0.0)), "model3_missing30": entry(3, _data(0.3)),
    "model4": entry(4, _data(0.0)), "model4_missing20": entry(4, _data(0.2)),
    "model3_unbalanced": entry(3, unbalanced(0.0)), "model4_unbalanced": entry(4, unbalanced(0.0)),
    "model4_unbalanced_missing20": entry(4, unbalanced(0.2)),
}
best = dict.fromkeys(cases, float("inf"))
with threadpool_limits(1, "blas"):
    for _ in range(30):
        for k, (fn, args) in cases.items():
            t = time.perf_counter()
            for _ in range(100):
                fn(*args)
            best[k] = min(best[k], (time.perf_counter() - t) * 10)
print("RESULT", json.dumps(best))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trees", nargs="+", default=["."])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "entry_point_ab.csv"))
    args = p.parse_args()
    rows = []
    for r in range(args.rounds):
        for tree in args.trees:
            path = str(Path(tree).resolve())
            head = subprocess.run(
                ["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            )
            dirty = subprocess.run(
                ["git", "-C", path, "status", "--porcelain", "pymsem"], capture_output=True, text=True
            )
            version = head.stdout.strip() + ("+" if dirty.stdout.strip() else "")
            out = subprocess.run(
                [sys.executable, "-c", CHILD, path],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ),
            )
            line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
            ms_ = json.loads(line.split(" ", 1)[1])
            row = {"round": r, "version": version, **{k: round(v, 4) for k, v in ms_.items()}}
            row["model4_over_3"] = round(ms_["model4"] / ms_["model3"], 3)
            row["model3_missing_over_complete"] = round(ms_["model3_missing30"] / ms_["model3"], 3)
            row["model4_over_3_unbalanced"] = round(ms_["model4_unbalanced"] / ms_["model3_unbalanced"], 3)
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    df = pd.DataFrame(rows)
    out_csv = Path(args.out)
    df.to_csv(out_csv, mode="a", header=not out_csv.exists(), index=False)


if __name__ == "__main__":
    main()
