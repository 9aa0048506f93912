"""``pymsem tutorial 4`` on unbalanced clusters with MAR missing indicator cells: the wall time a user waits.

Run: ``python bench/tutorial4_unbalanced.py [--share 0.2] [--cold]``. Data: tutorial Model 4
simulated from tests/test_moderation.py's MODEL4_TRUTH on 100 clusters of 6-54 students (sizes
uniform, seed 4), then a share of the twelve indicator cells deleted MAR on SES (as
``bench/missing_gradient._data``). The whole ``pymsem tutorial 4 --data file.csv`` command runs
in a new process with the defaults (4 chains, 1000 + 1000 draws unless ``--tune`` says
otherwise); ``--cold`` gives it empty compile caches. Issue 21's target: under 3 minutes on 2
cores. Prints the wall seconds and the command's own compile and sampling lines, and appends
them to ``bench/results/tutorial4_unbalanced.csv``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ITEMS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)]


def data(share: float, seed: int = 4) -> pd.DataFrame:
    """Model 4 data on 100 unbalanced clusters with ``share`` of the indicator cells missing (MAR on SES)."""
    sys.path.insert(0, str(HERE.parent))
    import pymsem as ms
    from tests.test_moderation import MODEL4_TRUTH

    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 55, size=100)
    spec = ms.tutorial.model4(ms.datasets.load_school())
    truth = {k: v for k, v in MODEL4_TRUTH.items()}
    df = ms.simulate(spec, truth, n_clusters=100, cluster_size=sizes, seed=seed)
    ses = (df["SES"] - df["SES"].mean()) / df["SES"].std()
    prob = share * 2 / (1 + np.exp(-ses))
    for c in ITEMS:
        df.loc[rng.random(len(df)) < prob, c] = np.nan
    return df


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--share", type=float, default=0.2)
    p.add_argument("--cold", action="store_true")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    df = data(args.share)
    missing = float(df[ITEMS].isna().to_numpy().mean())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model4_unbalanced.csv"
        df.to_csv(path, index=False)
        env = dict(os.environ)
        if args.cold:
            env["PYTENSOR_FLAGS"] = f"base_compiledir={folder}/pt"
            env["NUMBA_CACHE_DIR"] = f"{folder}/nb"
        cmd = [
            str(Path(sys.executable).parent / "pymsem"),
            "tutorial",
            "4",
            "--data",
            str(path),
            "--no-progress",
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    lines = [ln for ln in out.stdout.splitlines() + out.stderr.splitlines() if ln.strip()]
    timing = [ln for ln in lines if "compile" in ln.lower() or "sampling" in ln.lower() or "R-hat" in ln]
    print(f"rows {len(df)}, sizes {df.groupby('schid').size().min()}-{df.groupby('schid').size().max()}, "
          f"missing {missing:.3f}: wall {wall:.1f} s ({'cold' if args.cold else 'warm'} caches)")  # fmt: skip
    print("\n".join(timing))
    row = pd.DataFrame([{
        "tag": args.tag, "share": args.share, "missing": round(missing, 3), "rows": len(df),
        "cold": args.cold, "wall_s": round(wall, 1), "timing": " | ".join(timing),
    }])  # fmt: skip
    out_csv = HERE / "results" / "tutorial4_unbalanced.csv"
    row.to_csv(out_csv, mode="a", header=not out_csv.exists(), index=False)


if __name__ == "__main__":
    main()
