"""Where a cold compile of the whole-model kernel goes: seconds per numba function, LLVM apart.

Run: ``python bench/compile_breakdown.py [--models 2 3 4] [--shares 0] [--repeat 1] [--tree DIR]``.
Each measurement is a new Python process with empty compile caches (``base_compiledir`` and
``NUMBA_CACHE_DIR`` in a fresh folder). It builds a tutorial model on the bundled data (with
a share of the indicators' cells missing, :func:`missing_gradient._data`) and compiles its
kernel entry point (:func:`pymsem.sample._whole_model_kernel`) while numba's event recorders
run. Per compiled function it reports the seconds spent in it apart from its callees'
compiles, and of those the seconds under numba's LLVM lock (LLVM's optimization and code
generation). LLVM time outside any function's compile is the C entry points' own (numba
optimizes a ``cfunc``'s module again with everything it calls linked in).

``--tree DIR`` imports pymsem from ``DIR`` instead of the installed one (a checkout of an
earlier commit), for a same-run comparison of two versions; runs alternate between them with
``--repeat``. Appends to ``bench/results/compile_breakdown.csv`` (one row per run) and prints the
largest functions of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, os, resource, sys, time
if os.environ.get("PYMSEM_TREE"):
    # The editable install's finder comes before sys.path: drop it to import the other tree.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["PYMSEM_TREE"])
sys.path.insert(0, sys.argv[3])
from numba.core import event
from missing_gradient import _data
import pymsem as ms
from pymsem.sample import _initial_point, _whole_model_kernel

model, share = int(sys.argv[1]), float(sys.argv[2])
t0 = time.perf_counter()
compiled = ms.tutorial.MODELS[model](_data(share)).compile()
t1 = time.perf_counter()
with event.install_recorder("numba:llvm_lock") as rl, event.install_recorder("numba:compile") as rc:
    _whole_model_kernel(compiled, _initial_point(compiled, None))
t2 = time.perf_counter()

events = sorted([(ts, "c", e) for ts, e in rc.buffer] + [(ts, "l", e) for ts, e in rl.buffer],
                key=lambda t: t[0])
stack, per, llvm_depth, llvm_start, llvm_total, llvm_outside = [], {}, 0, 0.0, 0.0, 0.0
for ts, kind, e in events:
    if kind == "c":
        if e.is_start:
            fn = getattr((e.data or {}).get("dispatcher"), "py_func", None)
            stack.append([getattr(fn, "__qualname__", "?"), ts, 0.0, 0.0])
        else:
            name, start, child, llvm = stack.pop()
            row = per.setdefault(name, [0.0, 0.0, 0])
            row[0] += ts - start - child
            row[1] += llvm
            row[2] += 1
            if stack:
                stack[-1][2] += ts - start
    elif e.is_start:
        llvm_depth += 1
        if llvm_depth == 1:
            llvm_start = ts
    else:
        llvm_depth -= 1
        if llvm_depth == 0:
            llvm_total += ts - llvm_start
            if stack:
                stack[-1][3] += ts - llvm_start
            else:
                llvm_outside += ts - llvm_start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "pymsem": os.path.dirname(ms.__file__), "build_s": t1 - t0, "compile_s": t2 - t1,
    "llvm_s": llvm_total, "llvm_outside_s": llvm_outside, "cpu_s": usage.ru_utime + usage.ru_stime,
    "functions": {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1][0])[:12]},
}))
"""


def _run(model: int, share: float, tree: str | None) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {
            **os.environ,
            "PYTENSOR_FLAGS": f"base_compiledir={cache}/pytensor",
            "NUMBA_CACHE_DIR": f"{cache}/numba",
            "PYMSEM_TREE": tree or "",
        }
        bench = str(Path(__file__).resolve().parent)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(model), str(share), bench],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--shares", type=float, nargs="+", default=[0.0])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tree", default=None, help="a pymsem checkout to compare with, run alternately")
    p.add_argument("--out", default=str(OUT / "compile_breakdown.csv"))
    args = p.parse_args()
    rows = []
    for model in args.models:
        for share in args.shares:
            for rep in range(args.repeat):
                for tree in ([args.tree] if args.tree else []) + [None]:
                    r = _run(model, share, tree)
                    label = "tree" if tree else "installed"
                    top = "; ".join(
                        f"{k} {v[0]:.1f} ({v[1]:.1f} LLVM)" for k, v in list(r["functions"].items())[:6]
                    )
                    print(f"model {model} share {share} {label} #{rep}: compile {r['compile_s']:.1f} s, "
                          f"LLVM {r['llvm_s']:.1f} s ({r['llvm_outside_s']:.1f} in the C entry points); {top}")  # fmt: skip
                    rows.append({
                        "model": model, "share": share, "version": label, "repeat": rep,
                        "compile_s": round(r["compile_s"], 2), "llvm_s": round(r["llvm_s"], 2),
                        "llvm_entry_s": round(r["llvm_outside_s"], 2), "cpu_s": round(r["cpu_s"], 2),
                        "build_s": round(r["build_s"], 2), "top": top,
                    })  # fmt: skip
    df = pd.DataFrame(rows)
    out = Path(args.out)
    df.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(
        df.groupby(["model", "share", "version"])[["compile_s", "llvm_s", "llvm_entry_s"]]
        .median()
        .to_markdown()
    )


if __name__ == "__main__":
    main()
