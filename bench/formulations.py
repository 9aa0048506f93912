"""Collapsed (``marginal``) against data-augmentation (``augmented``) likelihood, in the same run.

Run: ``python bench/formulations.py [--models 2 3 4] [--draws 1000] [--tune 1000]``. For each
tutorial model on the bundled data (100 schools x 30 students), both formulations are compiled and
sampled with nutpie (4 chains) one after the other in this process, so their ratio is meaningful
on any machine. Reports build and compile seconds, sampling seconds, min bulk ESS over the
structural parameters (regressions and random slope parameters), ESS per second, max R-hat, and
the ratio of ESS per second (marginal / augmented). Writes ``bench/results/formulations.csv`` and
``bench/results/formulations.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from compare_samplers import markdown_table, run  # bench/ is on sys.path when run as a script


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--seed", type=int, default=46)
    args = p.parse_args()
    rows = []
    for m in args.models:
        for form in ("marginal", "augmented"):
            rows.append(run(m, "nutpie", args.draws, args.tune, args.seed, formulation=form))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    ratio = df.pivot(index="model", columns="formulation", values="ess_per_s")
    df["ess_per_s_ratio"] = df["model"].map(ratio["marginal"] / ratio["augmented"]).round(1)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    df.to_csv(out / "formulations.csv", index=False)
    text = markdown_table(df)
    (out / "formulations.md").write_text(
        f"# Collapsed vs augmented likelihood (tutorial models, bundled data, nutpie, 4 chains x "
        f"{args.draws} draws, tune {args.tune}, seed {args.seed})\n\n{text}\n"
    )
    print("\n" + text)


if __name__ == "__main__":
    main()
