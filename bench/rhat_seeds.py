"""Do the chains agree? Tutorial Model 2 on the bundled data, 4 chains x 1000 draws, over many seeds.

Run: ``python bench/rhat_seeds.py [--seeds 10] [--model 2]``. Writes
``bench/results/rhat_seeds_model{N}.csv`` and prints a markdown table. The
model is compiled once; each seed re-samples it.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

import pymsem as ms
from pymsem.results.fit import MSEMFit
from pymsem.sample import sample_compiled


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--model", type=int, default=2)
    p.add_argument("--sampler", default="nutpie")
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    args = p.parse_args()
    model = ms.tutorial.tutorial_model(args.model, ms.datasets.load_school())
    t0 = time.perf_counter()
    compiled = model.compile()
    rows = []
    for seed in range(1, args.seeds + 1):
        run = sample_compiled(
            compiled,
            draws=args.draws,
            tune=args.tune,
            chains=4,
            seed=seed,
            progress=False,
            sampler=args.sampler,
        )
        fit = MSEMFit(model, compiled, run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = fit.diagnostics()
        rows.append(
            {
                "seed": seed,
                "max_rhat": round(d["max_rhat"], 4),
                "min_ess_bulk": int(d["min_ess_bulk"]),
                "divergences": d["divergences"],
                "stuck_chains": len(d["stuck_chains"]),
                "compile_s": round(run.compile_seconds, 1),
                "sampling_s": round(run.sampling_seconds, 2),
                "worst": d["high_rhat"][0][0] if d["high_rhat"] else "",
            }
        )
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(__file__).parent / "results" / f"rhat_seeds_model{args.model}_tune{args.tune}.csv"
    out.parent.mkdir(exist_ok=True)
    df.to_csv(out, index=False)
    ok = int((df["max_rhat"] < 1.01).sum())
    print(
        f"\nModel {args.model}: R-hat < 1.01 on {ok} of {len(df)} seeds "
        f"(total {time.perf_counter() - t0:.0f} s)\n"
    )
    print("| seed | max R-hat | min bulk ESS | divergences | sampling s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['max_rhat']} | {r['min_ess_bulk']} | {r['divergences']} | {r['sampling_s']} |"
        )


if __name__ == "__main__":
    main()
