"""Same-run A/B of versions of the moderated slopes' likelihood, and its cost split into a fixed
part and a part per cluster.

Run: ``python bench/moderated_ab.py FILE [FILE ...] [--clusters 10 50 100]``. Each ``FILE`` is a
version of ``pymsem/compile/kernel/moderated_numba.py`` (for instance ``git show
REV:pymsem/compile/kernel/moderated_numba.py > /tmp/old.py``, and the working copy). Each is
imported as a module of its own (numba's disk cache off) and its ``moderated_value_and_grad`` is
compiled in this process, so that all of them run in one process, in turns: round after round,
each version 300 calls, the minimum per call kept (this machine's neighbours make medians
drift by 10-50% between runs; minima of interleaved rounds agree within about 1%).

Tutorial Model 4 on the bundled data's first ``C`` clusters (complete data), at the kernel's
starting point. Every version's outputs are compared with the first's. With two or more
``--clusters``, a line fitted through the times gives each version's fixed cost per gradient
and its cost per cluster: the fixed part is what makes Model 4's ratio to Model 3 larger on
100 clusters than on many. Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from missing_gradient import _data

import pymsem as ms
from pymsem.compile.kernel import model_numba
from pymsem.sample import _initial_point, _whole_model_kernel


def _load(path: Path, tmp: Path, i: int):  # type: ignore[no-untyped-def]
    """``moderated_value_and_grad`` of a version, compiled without the disk cache."""
    copy = tmp / f"moderated_v{i}.py"
    copy.write_text(path.read_text().replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location(f"moderated_v{i}", copy)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.moderated_value_and_grad


def _arguments(n_clusters: int) -> tuple[tuple, tuple[bool, int, int]]:
    """The likelihood's arguments for Model 4 on the first ``n_clusters`` clusters."""
    df = _data(0.0)
    df = df[df["schid"].isin(df["schid"].unique()[:n_clusters])]
    compiled = ms.tutorial.MODELS[4](df).compile()
    kernel = _whole_model_kernel(compiled, _initial_point(compiled, None))
    a = kernel.arrays
    pi, pf, x = a[0], a[1], kernel.flat.x0.copy()
    ext = model_numba._forward(x, pi, pf)[0]
    # (theta, ext, x, si, sf, ispec, fspec, sizes, counts, totals, size_index, S, z)
    arguments = (ext[: pi[0]].copy(), ext, x, a[15], a[16], a[2], a[3], a[5], a[6], a[9], a[13], a[17], a[18])
    return arguments, kernel.flat.slopes_variant


def _wrap(likelihood, variant: tuple[bool, int, int]):  # type: ignore[no-untyped-def]
    """The likelihood with the entry point's compile-time constants."""
    want, fixed, moderated = variant

    @numba.njit
    def call(*arguments):  # type: ignore[no-untyped-def]
        return likelihood(*arguments, want, fixed, moderated)

    return call


def _max_diff(a: tuple, b: tuple) -> float:
    out = abs(a[0] - b[0])
    for p, q in zip(a[1:], b[1:], strict=True):
        p, q = np.asarray(p), np.asarray(q)
        if p.shape != q.shape:
            return np.inf
        if p.size:
            out = max(out, float(np.max(np.abs(p - q))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--clusters", type=int, nargs="+", default=[100])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {c: _arguments(c) for c in args.clusters}
        variant = next(iter(cases.values()))[1]
        calls = [_wrap(_load(f, Path(tmp), i), variant) for i, f in enumerate(args.files)]
        for c, (arguments, _) in cases.items():
            outs = [call(*arguments) for call in calls]  # compiles each version once
            for f, out in zip(args.files[1:], outs[1:], strict=True):
                if (d := _max_diff(outs[0], out)) > 1e-8:
                    print(f"warning: {f} differs from {args.files[0]} by {d:.3g} on {c} clusters")
        best = {(i, c): np.inf for i in range(len(calls)) for c in cases}
        with threadpool_limits(1, "blas"):
            for _ in range(args.rounds):
                for c, (arguments, _) in cases.items():
                    for i, call in enumerate(calls):
                        t = time.perf_counter()
                        for _ in range(300):
                            call(*arguments)
                        best[i, c] = min(best[i, c], (time.perf_counter() - t) / 300 * 1e3)
    rows = []
    for i, f in enumerate(args.files):
        row = {"file": str(f)} | {f"ms_{c}_clusters": round(best[i, c], 4) for c in cases}
        if len(cases) > 1:
            slope, fixed = np.polyfit(list(cases), [best[i, c] for c in cases], 1)
            row |= {"fixed_ms": round(fixed, 4), "us_per_cluster": round(1e3 * slope, 3)}
        rows.append(row)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
