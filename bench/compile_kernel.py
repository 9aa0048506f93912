"""Compile and sampling seconds of the whole-model kernel against PyTensor's compiled graph.

Each row is a new process on its own compile caches (PyTensor's ``base_compiledir``, its numba
cache included, and ``NUMBA_CACHE_DIR``): "cold" finds them empty, as a new machine does;
"warm" finds what the cold row of the same route wrote; "new model" is a model of the same
class the caches have not seen (Model 2 with one path less and a between covariance instead;
Model 3 with one between path less), the case of a user editing a model. Routes: ``kernel`` (the default for models the whole-model
kernel covers, :mod:`pymsem.compile.nutpie_kernel`) and ``graph`` (nutpie on PyTensor's
compiled log density, the route before it; forced here). Model "RI" is a one-variable
random-intercept model (ACH1); "2-miss30" is Model 2 with 30% of the indicator cells missing
(MAR on SES, ``bench/missing_gradient._data``), the cells sampled. Every fit: nutpie, 4 chains x (1000 + 1000), seed 46, as
``pymsem tutorial 2`` runs. In the same run, lavaan's two-level ML fit of Model 2 (the whole
``Rscript`` call) is the yardstick of issue 21.

    python bench/compile_kernel.py          # bench/results/compile_kernel.{csv,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lavaan_compare import MODEL2_LAVAAN, fit_lavaan, lavaan_available

OUT = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import pymsem as ms
from pymsem import sample

which, route, BENCH = sys.argv[1], sys.argv[2], sys.argv[3]
if route == "graph":
    sample._whole_model_kernel = lambda compiled, init: None
data = ms.datasets.load_school()
if which == "2":
    model = ms.tutorial.model2(data)
elif which == "2-new":
    model = ms.MSEM(data, cluster="schid")
    for f in ("ACH", "INT", "REL"):
        model.latent(f, [f"{f}{i}" for i in range(1, 5)], levels=("within", "between"))
    model.path("INT", on="REL", level="within")
    model.path("ACH", on=["INT", "REL"], level="within")
    model.path("INT", on="REL", level="between")
    model.path("ACH", on="INT", level="between")
    model.covariance("ACH", "REL", level="between")
elif which == "3":
    model = ms.tutorial.model3(data)
elif which == "3-new":
    model = ms.MSEM(data, cluster="schid")
    for f in ("ACH", "INT", "REL"):
        model.latent(f, [f"{f}{i}" for i in range(1, 5)], levels=("within", "between"))
    model.path("INT", on="REL", level="within", random=ms.RandomSlope("RSa", mean_label="a_w"))
    model.path("ACH", on=["INT", "REL"], level="within", label=[None, "c_w"],
               random=[ms.RandomSlope("RSb", "b_w"), None])  # fmt: skip
    model.covariance("RSa", "RSb", level="between")
    model.path("INT", on="REL", level="between")
    model.path("ACH", on="INT", level="between")
elif which == "2-miss30":
    sys.path.insert(0, BENCH)
    from missing_gradient import _data

    model = ms.tutorial.model2(_data(0.3))
else:
    model = ms.MSEM.from_lavaan("level: 1\n ACH1 ~~ ACH1\nlevel: 2\n ACH1 ~~ ACH1", data, cluster="schid")
fit = model.fit(draws=1000, tune=1000, chains=4, seed=46, progress=False, warn=False)
table = fit.table()
wall = time.perf_counter() - t0
s = fit.summary()
nut = next(v for k, v in fit.compiled.sampler_cache.items() if k[0] == "nutpie")
# The C entry point nutpie calls, through ctypes (about a microsecond of overhead per call).
if hasattr(nut, "flat"):
    x, fn = nut._initial_point(0), nut.logp_cfunc.ctypes
else:
    x, fn = nut.initial_point_func(0), nut.compiled_logp_func.ctypes
x = np.ascontiguousarray(x, dtype=np.float64)
grad, lp = np.empty_like(x), np.empty(1)
import ctypes

ptr = ctypes.POINTER(ctypes.c_double)
args = (len(x), x.ctypes.data_as(ptr), grad.ctypes.data_as(ptr), lp.ctypes.data_as(ptr),
        ctypes.c_void_p(nut.user_data.ctypes.data))
from threadpoolctl import threadpool_limits

with threadpool_limits(1, "blas"):
    for _ in range(50):
        fn(*args)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        for _ in range(100):
            fn(*args)
        times.append((time.perf_counter() - t) / 100)
steps = float(fit.idata.sample_stats["n_steps"].mean())
print("RESULT", json.dumps({
    "kind": type(nut).__name__,
    "compile_s": fit.run.compile_seconds,
    "sampling_s": fit.run.sampling_seconds,
    "wall_in_process_s": wall,
    "min_ess": float(s["ess_bulk"].min()),
    "max_rhat": float(s["rhat"].max()),
    "ms_per_grad": 1000 * float(np.median(times)),
    "steps_per_draw": steps,
}))
"""


def run(which: str, route: str, folder: str) -> dict:
    """One fit in a new process on the caches in ``folder``; the process's wall seconds too."""
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={folder}/pt"
    env["NUMBA_CACHE_DIR"] = f"{folder}/nb"
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, route, str(Path(__file__).resolve().parent)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    return {"wall_s": wall, **json.loads(line.split(" ", 1)[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--note", default="", help="a line on the machine and its load, for the report")
    ap.add_argument("--routes", nargs="+", default=["kernel", "graph"])
    args = ap.parse_args()
    rows = []
    lavaan_s = None
    if lavaan_available():
        from pymsem.datasets import load_school

        _, info = fit_lavaan(MODEL2_LAVAAN, load_school())
        lavaan_s = info["wall_seconds"]
        rows.append({"model": "2", "route": "lavaan sem() (Rscript)", "caches": "-", "wall_s": lavaan_s})
    for route in args.routes:
        with tempfile.TemporaryDirectory() as d:
            for which, caches in (("2", "cold"), ("2", "warm"), ("2-new", "new model")):
                rows.append({"model": which, "route": route, "caches": caches, **run(which, route, d)})
                print(rows[-1], flush=True)
        with tempfile.TemporaryDirectory() as d:
            for which, caches in (("3", "cold"), ("3", "warm"), ("3-new", "new model")):
                rows.append({"model": which, "route": route, "caches": caches, **run(which, route, d)})
                print(rows[-1], flush=True)
        for which in ("RI", "2-miss30"):
            with tempfile.TemporaryDirectory() as d:
                for caches in ("cold", "warm"):
                    rows.append({"model": which, "route": route, "caches": caches, **run(which, route, d)})
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["ess_per_s"] = table["min_ess"] / table["sampling_s"]
    if lavaan_s:
        table["x_lavaan"] = table["wall_s"] / lavaan_s
    OUT.mkdir(exist_ok=True)
    table.round(3).to_csv(OUT / "compile_kernel.csv", index=False)
    show = table.drop(columns=["kind", "wall_in_process_s"], errors="ignore").round(
        {"wall_s": 1, "compile_s": 1, "sampling_s": 2, "min_ess": 0, "max_rhat": 3, "ms_per_grad": 4,
         "steps_per_draw": 1, "ess_per_s": 0, "x_lavaan": 2}
    )  # fmt: skip
    text = [
        "# The whole-model kernel against PyTensor's compiled graph: compile, wall and sampling seconds",
        "",
        f"`python bench/compile_kernel.py`. {args.note}",
        "",
        show.to_markdown(index=False),
        "",
    ]
    (OUT / "compile_kernel.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
