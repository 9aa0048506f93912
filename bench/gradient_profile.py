"""Where a kernel gradient's time goes, per compiled function: Linux ``perf`` samples mapped to numba's symbols.

Run: ``python bench/gradient_profile.py [--models 3 4] [--share 0] [--seconds 12]`` (needs ``perf``,
Debian's ``linux-perf``, and permission to record a process). For each tutorial model on the
bundled data (with a share of the indicators' cells missing, :func:`missing_gradient._data`), a
child process compiles the kernel's C entry point with an empty numba cache (a function loaded
from the cache has no symbols to map), writes each compiled function's address, and calls the
entry point in a loop (one BLAS thread) while ``perf record`` samples it. Every sample in JIT
code is charged to the nearest function start below it; the rest is reported by shared library
(``libc``'s ``malloc``/``free``/``memset`` are the arrays numba allocates; ``libpython`` and
``_ctypes`` the Python loop's calls). LLVM inlines small callees, so a function's share includes
theirs. Writes ``bench/results/gradient_profile.csv`` and prints the largest shares per model.

``--lines NAME`` also charges the samples in the compiled function whose name contains NAME
(``moderated_value_and_grad``, say) to its source lines: the child compiles with
``NUMBA_DEBUGINFO=1`` and writes the entry point's object code (the bytes numba's JIT loaded),
``objdump -d -l`` maps each instruction's offset in the function to a line, and each sample's
offset from the function's start is looked up there. numba's own inlining (``inline="always"``)
keeps an inlined helper's line numbers under the caller's file name: a line that makes no
sense in the caller's file is a helper's (``_dot``'s loop, say). Prints the lines with the
largest shares of all samples.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "results"

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
import numpy as np
from threadpoolctl import threadpool_limits
from missing_gradient import _data
from kernel_gradient import entry_args
import pymsem as ms
from pymsem.sample import _initial_point, _whole_model_kernel

model, share, folder = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
compiled = ms.tutorial.MODELS[model](_data(share)).compile()
kernel = _whole_model_kernel(compiled, _initial_point(compiled, None))
entry = kernel.logp_cfunc
lib = entry._library
addresses = {}
for f in lib._final_module.functions:
    if not f.is_declaration:
        a = lib.get_pointer_to_function(f.name)
        if a:
            addresses[f.name] = a
if os.environ.get("NUMBA_DEBUGINFO") == "1":
    obj = lib._get_compiled_object() if lib._object_caching_enabled else None
    if obj is None:
        obj = lib._codegen._tm.emit_object(lib._final_module)
    open(os.path.join(folder, "entry.o"), "wb").write(obj)
args, grad, lp, x = entry_args(kernel.flat.x0, kernel.user_data.ctypes.data)
fn = entry.ctypes
with threadpool_limits(1, "blas"):
    for _ in range(200):
        fn(*args)
    json.dump(addresses, open(os.path.join(folder, "addresses.json"), "w"))
    t = time.perf_counter()
    n = 0
    while not os.path.exists(os.path.join(folder, "stop")):
        for _ in range(1000):
            fn(*args)
        n += 1000
    ms_per_call = 1e3 * (time.perf_counter() - t) / n
json.dump({"ms_per_call": ms_per_call}, open(os.path.join(folder, "done.json"), "w"))
"""


def _short(symbol: str) -> str:
    """A numba function's qualified name from its mangled symbol (``pymsem.compile...name``)."""
    parts, s = [], re.sub(r"^_ZN", "", symbol)
    while (m := re.match(r"(\d+)", s)) is not None:
        n = int(m.group(1))
        start = len(m.group(1))
        parts.append(s[start : start + n])
        s = s[start + n :]
    name = ".".join(p for p in parts if not p.startswith("_3c"))
    return re.sub(r"B\d+v\d+.*$", "", name) or symbol[:60]


def _line_table(obj: Path, symbol: str) -> tuple[list[int], list[str]]:
    """Each instruction's offset in ``symbol`` and its source line (``file:line``), from
    ``objdump -d -l`` of the object code ``obj``."""
    dump = subprocess.run(
        ["objdump", "-d", "-l", "--no-show-raw-insn", str(obj)], check=True, capture_output=True, text=True
    ).stdout
    offsets: list[int] = []
    where: list[str] = []
    inside, base, line = False, 0, "?"
    for text in dump.splitlines():
        if (m := re.match(r"^([0-9a-f]+) <(.+)>:$", text)) is not None:
            inside, base, line = m.group(2) == symbol, int(m.group(1), 16), "?"
        elif inside and (m := re.match(r"^(/\S+):(\d+)", text)) is not None:
            line = f"{Path(m.group(1)).name}:{m.group(2)}"
        elif inside and (m := re.match(r"^\s+([0-9a-f]+):", text)) is not None:
            offsets.append(int(m.group(1), 16) - base)
            where.append(line)
    return offsets, where


def _by_line(script: str, addresses: dict[str, int], obj: Path, name: str) -> list[tuple[str, float]]:
    """The shares of all samples charged to the source lines of the function named ``name``."""
    symbol = next(s for s in addresses if name in _short(s))
    start = addresses[symbol]
    end = min((a for a in addresses.values() if a > start), default=start + (1 << 30))
    offsets, where = _line_table(obj, symbol)
    counts: Counter[str] = Counter()
    total = 0
    for line in script.splitlines():
        fields = line.split(None, 1)
        if len(fields) < 2:
            continue
        total += 1
        ip = int(fields[0], 16)
        if start <= ip < end:
            i = bisect.bisect_right(offsets, ip - start) - 1
            counts[where[i] if i >= 0 else "?"] += 1
    return [(w, 100 * c / max(total, 1)) for w, c in counts.most_common()]


def profile(model: int, share: float, seconds: float, lines: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(folder, "numba"))
        if lines:
            env["NUMBA_DEBUGINFO"] = "1"
        env["PYTENSOR_FLAGS"] = f"base_compiledir={os.path.join(folder, 'pytensor')}"
        bench = str(Path(__file__).resolve().parent)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(model), str(share), folder, bench], env=env
        )
        addresses_file = Path(folder) / "addresses.json"
        while not addresses_file.exists():
            if child.poll() is not None:
                raise RuntimeError(f"the child for Model {model} ended before it compiled")
            time.sleep(0.5)
        time.sleep(0.5)
        data = os.path.join(folder, "perf.data")
        record = ["perf", "record", "-q", "-F", "4000", "-p", str(child.pid), "-o", data]
        subprocess.run([*record, "--", "sleep", str(seconds)], check=True, capture_output=True)
        (Path(folder) / "stop").touch()
        child.wait()
        ms_per_call = json.loads((Path(folder) / "done.json").read_text())["ms_per_call"]
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "ip,dso"], check=True, capture_output=True, text=True
        ).stdout
        addresses = json.loads(addresses_file.read_text())
        if lines:
            print(f"\nModel {model}: the lines of {lines} (percent of all samples)")
            for w, pct in _by_line(script, addresses, Path(folder) / "entry.o", lines)[:25]:
                print(f"{pct:5.1f}  {w}")
    items = sorted((a, n) for n, a in addresses.items())
    starts = [a for a, _ in items]
    counts: Counter[str] = Counter()
    for line in script.splitlines():
        fields = line.split(None, 1)
        if len(fields) < 2:
            continue
        ip, dso = int(fields[0], 16), fields[1].strip("() ")
        if "perf-" in dso or "JIT" in dso:
            i = bisect.bisect_right(starts, ip) - 1
            counts[_short(items[i][1]) if i >= 0 else "JIT, unmapped"] += 1
        else:
            counts[Path(dso).name] += 1
    total = sum(counts.values())
    return [
        {"model": model, "share": share, "where": w, "percent": round(100 * c / total, 1),
         "ms": round(ms_per_call * c / total, 4), "ms_per_call": round(ms_per_call, 4)}
        for w, c in counts.most_common()
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, nargs="+", default=[3, 4])
    p.add_argument("--share", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--out", default=str(OUT / "gradient_profile.csv"))
    p.add_argument("--lines", help="also charge one compiled function's samples to its source lines")
    args = p.parse_args()
    rows = [r for m in args.models for r in profile(m, args.share, args.seconds, args.lines)]
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    for m, part in df.groupby("model"):
        print(f"\nModel {m}: {part['ms_per_call'].iloc[0]} ms per call")
        print(part.head(15)[["where", "percent", "ms"]].to_markdown(index=False))


if __name__ == "__main__":
    main()
