"""What numba's fastmath buys, and what it costs in reproducibility (tutorial Models 1-4).

Run: ``python bench/fastmath.py``. For each tutorial model on the bundled data (100 x 30), and
Model 3 on 1,000 clusters x 100 students, compiles the joint log density and gradient with numba twice, with
PyTensor's fastmath flags and without them (``numba__fastmath``), and times each (median of 200
evaluations, one BLAS thread). pymsem compiles without fastmath: with it, a function compiled
afresh and the same function loaded from PyTensor's on-disk numba cache round differently (one ulp
in a few gradient entries), and NUTS turns that into different draws for the same seed.
Writes ``bench/results/fastmath.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytensor
from scaling import TRUTH, spec, time_gradient

import pymsem as ms


def row(name: str, compiled) -> dict:
    out = {"model": name}
    for fastmath in (True, False):
        with pytensor.config.change_flags(numba__fastmath=fastmath):
            per_grad, compile_s = time_gradient(compiled)
        key = "fastmath" if fastmath else "ieee"
        out[f"ms_per_gradient_{key}"] = round(1000 * per_grad, 4)
        out[f"compile_s_{key}"] = round(compile_s, 1)
    out["ratio_ieee_to_fastmath"] = round(out["ms_per_gradient_ieee"] / out["ms_per_gradient_fastmath"], 3)
    print(out, flush=True)
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    data = ms.datasets.load_school()
    rows = [row(f"Model {n} (100 x 30)", build(data).compile()) for n, build in ms.tutorial.MODELS.items()]
    big = ms.simulate(spec(None), TRUTH, n_clusters=1000, cluster_size=100, seed=1)
    rows.append(row("Model 3 (1,000 x 100)", spec(big).compile()))
    df = pd.DataFrame(rows)
    out = Path(__file__).parent / "results" / "fastmath.csv"
    df.to_csv(out, index=False)
    print(df.to_markdown(index=False))


if __name__ == "__main__":
    main()
