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

``--check`` times nothing: it evaluates both versions' value and gradient at the starting point
and at two points drawn around it (fixed seed) and prints, per case, whether they are bitwise
equal and the largest relative difference, the exactness check of a change that is meant to
keep the arithmetic (or, where it reorders sums, to stay within rounding).
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


def _check(names: list[str], cases: dict, keep: list) -> None:
    """Print, per case in ``names``, whether old and new give bitwise-equal values and gradients
    at three points, and the largest difference relative to the largest magnitude among them."""
    import numpy as np

    xs = {key: k[2] for key, k in zip(cases, keep, strict=True)}
    outs = {key: (k[3], k[4]) for key, k in zip(cases, keep, strict=True)}
    for name in names:
        x0 = xs[(name, "old")].copy()
        rng = np.random.default_rng(35)
        points = [x0, x0 + 0.1 * rng.standard_normal(x0.shape), x0 + 0.3 * rng.standard_normal(x0.shape)]
        same, worst = True, 0.0
        for point in points:
            got = []
            for v in ("old", "new"):
                fn, cargs = cases[(name, v)]
                xs[(name, v)][:] = point
                fn(*cargs)
                grad, lp = outs[(name, v)]
                got.append(np.concatenate([lp, grad]))
            same &= bool(np.array_equal(got[0], got[1]))
            worst = max(worst, float(np.max(np.abs(got[1] - got[0])) / np.max(np.abs(got[0]))))
        print(f"{name}: bitwise {'equal' if same else 'DIFFERENT'}, max relative difference {worst:.3g}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old", required=True, help="a pymsem checkout to compare the installed one with")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], help="a subset of the cases")
    p.add_argument("--check", action="store_true", help="compare values and gradients, time nothing")
    p.add_argument("--out", default=str(HERE / "results" / "entry_point_inprocess.csv"))
    args = p.parse_args()
    names = [c[0] for c in CASES if c[0] in args.cases]  # in CASES's order
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
            if name not in names:
                continue
            df = _data(share)
            cases[(name, "old")] = _entry(old, model, df, keep)
            cases[(name, "new")] = _entry(new, model, df, keep)
        if args.check:
            _check(names, cases, keep)
            return
        best = dict.fromkeys(cases, float("inf"))
        with threadpool_limits(1, "blas"):
            for _ in range(args.rounds):
                for key, (fn, cargs) in cases.items():
                    t = time.perf_counter()
                    for _ in range(100):
                        fn(*cargs)
                    best[key] = min(best[key], (time.perf_counter() - t) * 10)
    row = {"old": _version(old_path), "new": _version(HERE.parent)}
    for name in names:
        row[f"{name}_old"] = round(best[(name, "old")], 4)
        row[f"{name}_new"] = round(best[(name, "new")], 4)
        row[f"{name}_new_over_old"] = round(best[(name, "new")] / best[(name, "old")], 3)
    for v in ("old", "new"):
        if {"model3", "model4"} <= set(names):
            row[f"model4_over_3_{v}"] = round(best[("model4", v)] / best[("model3", v)], 3)
        if {"model3", "model3_missing30"} <= set(names):
            row[f"model3_missing_over_complete_{v}"] = round(
                best[("model3_missing30", v)] / best[("model3", v)], 3
            )
    for k, v in row.items():
        print(f"{k}: {v}")
    out = Path(args.out)
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
