"""What missing cells cost: tutorial Model 3 on the bundled data, complete and with 10% / 30% missing.

Run: ``python bench/missing_cost.py [--shares 0 0.1 0.3] [--draws 1000] [--tune 1000] [--chains 4]``.
Cells of the twelve indicators are deleted completely at random (seed 1). Each run compiles
and samples with the default (collapsed) formulation and reports compile and sampling
seconds, the number of (cluster, pattern) pairs the likelihood visits, min bulk ESS over
the structural parameters and all parameters, ESS per second, max R-hat and divergences,
and the ratio of ESS/s to the complete data in the same run. Writes
``bench/results/missing_cost.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import pymsem as ms
from pymsem.compile.missing import pattern_statistics

ITEMS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)]


def run(share: float, draws: int, tune: int, chains: int) -> dict:
    df = ms.datasets.load_school()
    if share:
        rng = np.random.default_rng(1)
        for c in ITEMS:
            df.loc[rng.random(len(df)) < share, c] = np.nan
    model = ms.tutorial.model3(df)
    pairs = pattern_statistics(model.structure(), model.clustered_data()).n_pairs if share else 100
    t0 = time.perf_counter()
    fit = model.fit(draws=draws, tune=tune, chains=chains, seed=46, progress=False, warn=False)
    total = time.perf_counter() - t0
    s = fit.summary()
    structural = s[s["block"].isin(["Regressions", "Random slopes"])]
    d = fit.diagnostics()
    return {
        "missing_share": share,
        "cells_missing": round(float(df[ITEMS].isna().to_numpy().mean()), 3),
        "pairs": pairs,
        "compile_s": round(fit.run.compile_seconds, 1),
        "sampling_s": round(fit.run.sampling_seconds, 1),
        "total_s": round(total, 1),
        "min_ess_structural": int(structural["ess_bulk"].min()),
        "min_ess_all": int(s["ess_bulk"].min()),
        "ess_per_s": round(float(structural["ess_bulk"].min()) / fit.run.sampling_seconds, 2),
        "max_rhat": round(float(s["rhat"].max()), 4),
        "divergences": d["divergences"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    a = p.parse_args()
    rows = []
    for share in a.shares:
        rows.append(run(share, a.draws, a.tune, a.chains))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    base = df["ess_per_s"].iloc[0]
    df["ess_per_s_ratio"] = (df["ess_per_s"] / base).round(3)
    out = Path(__file__).parent / "results" / "missing_cost.csv"
    out.parent.mkdir(exist_ok=True)
    df.to_csv(out, index=False)
    print()
    print(df.to_markdown(index=False) if hasattr(df, "to_markdown") else df.to_string(index=False))


if __name__ == "__main__":
    main()
