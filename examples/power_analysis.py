"""Power analysis for the tutorial's Model 3 and Model 4 (a Monte Carlo study).

How many schools of 20 students does it take to detect

* Model 3's within indirect effect ``med_w = a_w*b_w + cov(RSa, RSb)`` of about 0.10, and
* Model 4's cross-level moderation of the b slope by school SES (``SESb_b`` = 0.2)?

Each replication simulates a data set from the true values (``pymsem.study.TUTORIAL_TRUTH``),
fits the model (2 chains x (500 + 500) draws) and records whether the 95% interval excludes 0
and covers the truth. Results go to ``power_study/model3`` and ``power_study/model4`` as they
finish; rerunning the script resumes (add replications with a larger ``--reps``).

Run::

    python examples/power_analysis.py --reps 200               # the study (hours on 2 cores)
    python examples/power_analysis.py --reps 3 --models 3      # a quick look
    python examples/power_analysis.py --reps 3 --dask tcp://scheduler:8786   # on a Dask cluster
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pymsem as ms
from pymsem.study import TUTORIAL_TRUTH, grid, tutorial_spec

LABELS = {3: ["med_w"], 4: ["SESb_b", "SESb_a"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=200, help="replications per design")
    p.add_argument("--clusters", default="30,50,100,200", help="numbers of schools")
    p.add_argument("--cluster-size", type=int, default=20)
    p.add_argument("--models", default="3,4")
    p.add_argument("--workers", type=int, default=None, help="local processes (default cores // chains)")
    p.add_argument("--dask", default=None, help="a dask.distributed scheduler address")
    p.add_argument("--out", default="power_study")
    args = p.parse_args()

    for number in (int(m) for m in args.models.split(",")):
        study = ms.SimulationStudy(
            tutorial_spec(number),
            TUTORIAL_TRUTH[number],
            designs=grid([int(c) for c in args.clusters.split(",")], cluster_size=args.cluster_size),
            reps=args.reps,
            seed=2026,
            out=Path(args.out) / f"model{number}",
            workers=args.workers,
            client=args.dask,
            parameters=[*LABELS[number], "a_w", "b_w"],  # keep the files small
        )
        study.run()
        s = study.summary(LABELS[number])
        cols = ["design_name", "label", "truth", "reps", "power", "power_se", "coverage", "bias", "rmse",
                "mean_sd", "sd_estimates", "converged", "failed"]  # fmt: skip
        print(f"\nTutorial Model {number}: {', '.join(LABELS[number])}")
        print(s[cols].round(3).to_string(index=False))
        found = study.power(LABELS[number][:1], target=0.8)
        print(f"Smallest design with power >= 0.8 for {LABELS[number][0]}: "
              f"{found.design.label if found.design else 'none of these'}")  # fmt: skip
        fails = study.failures()  # never dropped silently: listed with their diagnostics
        if len(fails):
            cols = ["design", "rep", "error", "max_rhat", "min_ess_bulk", "divergences"]
            print(f"Failed or not converged ({len(fails)}):\n{fails[cols].round(3).to_string(index=False)}")
        run = study.last_run
        if run.get("replications"):
            print(f"This run: {run['replications']} replications in {run['seconds']:.0f} s "
                  f"({run['per_hour']:.0f} per hour, {run['workers']} worker(s)).")  # fmt: skip
        ax = study.plot_power(LABELS[number])
        ax.set_title(f"Model {number}: power, schools of {args.cluster_size}")
        ax.figure.savefig(Path(args.out) / f"model{number}_power.png", dpi=120)


if __name__ == "__main__":  # local worker processes are spawned: they import this file
    main()
