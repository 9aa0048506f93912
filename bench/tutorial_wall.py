"""Wall seconds of ``pymsem tutorial N`` in a new process, cold and warm caches, against lavaan.

The number a user waits for: the whole command (Python start, imports, compile, sampling,
the table), first with empty compile caches (PyTensor's ``base_compiledir``, its numba cache
included, and ``NUMBA_CACHE_DIR`` in a fresh folder), then again on the folders the first run
filled. In the same run, lavaan's two-level ML fit of Model 2 on the same bundled data (the
whole ``Rscript`` call: R start, loading lavaan, reading the CSV, ``sem()``) is the yardstick
of issue 21 (targets: Model 2 at most 1.0x lavaan, Models 3 and 4 at most 1.5x).

    python bench/tutorial_wall.py --models 2 3 4        # bench/results/tutorial_wall.{csv,md}

``--cluster-size 300`` runs the commands on the bundled data's process drawn with 300 students
per school instead of 30 (``pymsem.datasets._make_school``, seed 11) and writes
``tutorial_wall_300.{csv,md}``: issue 21 asks ``pymsem tutorial 3`` on 100 x 300 to take at most
1.5x its time on 100 x 30, both cold.
"""

from __future__ import annotations

import argparse
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


def pymsem_wall(model: int, folder: str, extra: list[str]) -> float:
    """Seconds of one ``pymsem tutorial`` command in a new process on the caches in ``folder``."""
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={folder}/pt"
    env["NUMBA_CACHE_DIR"] = f"{folder}/nb"
    t = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "pymsem"), "tutorial", str(model), *extra],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--note", default="", help="a line on the machine and its load, for the report")
    ap.add_argument(
        "--cluster-size", type=int, default=None, help="students per school (default: the bundled 30)"
    )
    args = ap.parse_args()
    extra, stem = [], "tutorial_wall"
    if args.cluster_size:
        from pymsem.datasets import _make_school

        _make_school.CLUSTER_SIZE = args.cluster_size
        data, _ = _make_school.make_school()
        csv = Path(tempfile.mkdtemp()) / f"school_{args.cluster_size}.csv"
        data.to_csv(csv, index=False)
        extra, stem = ["--data", str(csv)], f"tutorial_wall_{args.cluster_size}"
    rows = []
    if lavaan_available():
        from pymsem.datasets import load_school

        _, info = fit_lavaan(MODEL2_LAVAAN, load_school())
        rows.append(
            {"command": "lavaan sem() of Model 2 (Rscript)", "caches": "-", "wall_s": info["wall_seconds"]}
        )
        print(rows[-1], flush=True)
    lavaan_s = rows[0]["wall_s"] if rows else None
    for n in args.models:
        with tempfile.TemporaryDirectory() as d:
            for state in ("cold", "warm"):
                s = pymsem_wall(n, d, extra)
                rows.append({"command": f"pymsem tutorial {n}", "caches": state, "wall_s": s})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if lavaan_s:
        table["x_lavaan"] = (table.wall_s / lavaan_s).round(2)
    table["wall_s"] = table.wall_s.round(1)
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / f"{stem}.csv", index=False)
    text = [
        "# `pymsem tutorial N`, whole command in a new process, against lavaan's Model 2 fit",
        "",
        f"`python bench/tutorial_wall.py --models {' '.join(map(str, args.models))}"
        + (f" --cluster-size {args.cluster_size}" if args.cluster_size else "")
        + f"`. {args.note}",
        "",
        table.to_markdown(index=False),
        "",
    ]
    (OUT / f"{stem}.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
