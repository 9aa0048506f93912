"""Wall seconds of ``pymsem tutorial N`` in a new process, cold and warm caches, against lavaan.

The number a user waits for: the whole command (Python start, imports, compile, sampling,
the table), first with empty compile caches (PyTensor's ``base_compiledir``, its numba cache
included, and ``NUMBA_CACHE_DIR`` in a fresh folder), then again on the folders the first run
filled. In the same run, lavaan's two-level ML fit of Model 2 on the same bundled data (the
whole ``Rscript`` call: R start, loading lavaan, reading the CSV, ``sem()``) is the yardstick
of issue 21 (targets: Model 2 at most 1.0x lavaan, Models 3 and 4 at most 1.5x).

    python bench/tutorial_wall.py --models 2 3 4        # bench/results/tutorial_wall.{csv,md}
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
    args = ap.parse_args()
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
                s = pymsem_wall(n, d, [])
                rows.append({"command": f"pymsem tutorial {n}", "caches": state, "wall_s": s})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if lavaan_s:
        table["x_lavaan"] = (table.wall_s / lavaan_s).round(2)
    table["wall_s"] = table.wall_s.round(1)
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "tutorial_wall.csv", index=False)
    text = [
        "# `pymsem tutorial N`, whole command in a new process, against lavaan's Model 2 fit",
        "",
        f"`python bench/tutorial_wall.py --models {' '.join(map(str, args.models))}`. {args.note}",
        "",
        table.to_markdown(index=False),
        "",
    ]
    (OUT / "tutorial_wall.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
