"""ms per gradient through nutpie's C entry point, two versions of pymsem in one process.

Run: ``python bench/entry_point_inprocess.py --old OLD_CHECKOUT [--rounds 40]``. The old
checkout's ``pymsem`` is copied to a temporary folder as ``pymsem_old`` (its imports renamed), so
both versions load in one process; each builds the kernel of every case below at the model's
starting point (its own numba cache, in the copy), and the cases of both versions are timed in
turns (min of ``--rounds`` x 100 calls, one BLAS thread). Process-to-process drift (several
percent on a shared machine, larger than a small change) then cancels out of the ratios new /
old, which :mod:`entry_point_ab` (alternating processes) cannot resolve. Cases: tutorial
Models 3 and 4 on the bundled data (100 x 30), complete and with a share of the indicators'
cells missing (MAR on SES, :func:`missing_gradient._data`). Appends to
``bench/results/entry_point_inprocess.csv`` and prints the times and ratios.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
CASES = (("model3", 3, 0.0), ("model3_missing30", 3, 0.3), ("model4", 4, 0.0), ("model4_missing20", 4, 0.2))


def _renamed_copy(checkout: Path, dest: Path) -> None:
    """``checkout``'s pymsem package as ``dest / "pymsem_old"``, every import of pymsem renamed."""
    target = dest / "pymsem_old"
    shutil.copytree(checkout / "pymsem", target, ignore=shutil.ignore_patterns("__pycache__"))
    word = re.compile(r"\bpymsem\b(?=[.\s]|$)", re.M)
    for path in target.rglob("*.py"):
        path.write_text(word.sub("pymsem_old", path.read_text()))


def _version(path: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "pymsem"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _entry(pkg, model: int, df, keep: list):  # type: ignore[no-untyped-def]
    """The entry point of ``pkg``'s tutorial ``model`` on ``df`` and its ctypes arguments."""
    import importlib

    from kernel_gradient import entry_args

    sample = importlib.import_module(pkg.__name__ + ".sample")
    compiled = pkg.tutorial.MODELS[model](df).compile()
    kernel = sample._whole_model_kernel(compiled, sample._initial_point(compiled, None))
    args, grad, lp, x = entry_args(kernel.flat.x0, kernel.user_data.ctypes.data)
    keep.append((compiled, kernel, x, grad, lp))  # the record points into these
    return kernel.logp_cfunc.ctypes, args


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old", required=True, help="a pymsem checkout to compare the installed one with")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--out", default=str(HERE / "results" / "entry_point_inprocess.csv"))
    args = p.parse_args()
    import time

    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE))
    from missing_gradient import _data

    import pymsem as new

    old_path = Path(args.old).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        _renamed_copy(old_path, Path(tmp))
        sys.path.insert(0, tmp)
        import pymsem_old as old

        keep: list = []
        cases = {}
        for name, model, share in CASES:
            df = _data(share)
            cases[(name, "old")] = _entry(old, model, df, keep)
            cases[(name, "new")] = _entry(new, model, df, keep)
        best = dict.fromkeys(cases, float("inf"))
        with threadpool_limits(1, "blas"):
            for _ in range(args.rounds):
                for key, (fn, cargs) in cases.items():
                    t = time.perf_counter()
                    for _ in range(100):
                        fn(*cargs)
                    best[key] = min(best[key], (time.perf_counter() - t) * 10)
    row = {"old": _version(old_path), "new": _version(HERE.parent)}
    for name, _, _ in CASES:
        row[f"{name}_old"] = round(best[(name, "old")], 4)
        row[f"{name}_new"] = round(best[(name, "new")], 4)
        row[f"{name}_new_over_old"] = round(best[(name, "new")] / best[(name, "old")], 3)
    for v in ("old", "new"):
        row[f"model4_over_3_{v}"] = round(best[("model4", v)] / best[("model3", v)], 3)
        row[f"model3_missing_over_complete_{v}"] = round(
            best[("model3_missing30", v)] / best[("model3", v)], 3
        )
    for k, v in row.items():
        print(f"{k}: {v}")
    out = Path(args.out)
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
