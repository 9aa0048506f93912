"""Compile seconds of tutorial models in new processes, cold (empty caches) and warm, kernel vs graph.

Each measurement is a new Python process: model build plus nutpie's numba compile, with
``base_compiledir`` (PyTensor, including its numba cache) and ``NUMBA_CACHE_DIR`` in a fresh
folder for "cold"; "warm" is the next process on the same folders. ``graph`` is the
likelihood written as PyTensor nodes (``marginal_logp``, the formulation before the kernel),
patched in for the same-run baseline; ``nutpie-wrappers`` compiles with nutpie's own C
wrappers instead of pymsem's cached ones (:mod:`pymsem.compile.nutpie_cache`). Also ms per log-density-and-gradient call (numba).

    python bench/compile_time.py [--models 1 2 0] [--out bench/results/compile_time.csv]

Model 0 is a one-variable random-intercept model on the bundled data (ACH1 only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from pymsem import MSEM, tutorial
from pymsem.datasets import load_school
from pymsem.compile.reproducible import ieee_numba
from pymsem.sample import _initial_point
from pymsem.compile.nutpie_cache import compile_nutpie
import nutpie
n, variant = int(sys.argv[1]), sys.argv[2]
if variant == "graph":
    import pymsem.compile.marginal as mg
    def _graph(structure, stats, params):
        from pymsem.compile.matrices import level_matrices, pytensor_ops
        W = level_matrices(structure.within, params, pytensor_ops())
        B = level_matrices(structure.between, params, pytensor_ops())
        return mg.marginal_logp(stats.as_model_data(), W.Sigma, B.Sigma, B.nu)
    mg.complete_kernel_logp = _graph
data = load_school()
t1 = time.perf_counter()
if n == 0:
    m = MSEM.from_lavaan("level: 1\n ACH1 ~~ ACH1\nlevel: 2\n ACH1 ~~ ACH1", data, cluster="schid")
else:
    m = getattr(tutorial, f"model{n}")(data)
c = m.compile()
init = _initial_point(c, None)
with ieee_numba():
    if variant == "nutpie-wrappers":  # nutpie's own uncacheable wrappers, the baseline
        nut = nutpie.compile_pymc_model(c.pymc_model, backend="numba", initial_points=init, jitter_rvs=set())
    else:  # what pymsem.sample does
        nut = compile_nutpie(c.pymc_model, init)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1}))
"""


def run(n: int, variant: str, folder: str) -> dict:
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={folder}/pt"
    env["NUMBA_CACHE_DIR"] = f"{folder}/nb"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), variant], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["kernel", "nutpie-wrappers"])
    ap.add_argument("--out", default="bench/results/compile_time.csv")
    args = ap.parse_args()
    rows = []
    for n in args.models:
        for variant in args.variants:
            with tempfile.TemporaryDirectory() as d:
                for state in ("cold", "warm"):
                    r = run(n, variant, d)
                    rows.append({"model": n, "likelihood": variant, "caches": state, **r})
                    print(rows[-1], flush=True)
    import pandas as pd

    df = pd.DataFrame(rows).round(2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
