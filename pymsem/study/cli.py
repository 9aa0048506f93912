"""``pymsem simulate``: a simulation study from the command line (resumable with the same --out).

    pymsem simulate --tutorial 3 --clusters 30,50,100 --cluster-size 20 --reps 100 \\
        --labels med_w --out study_m3 --workers 2

or a model file in lavaan syntax with a JSON file of true values::

    pymsem simulate --model model.lav --cluster schid --truth truth.json --clusters 50,100 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_simulate_parser", "run_simulate"]


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _size(text: str) -> Any:
    """``20``, ``20,30`` (two designs) or ``uniform:6:54`` / ``poisson:20``."""
    out: list[Any] = []
    for part in text.split(","):
        if ":" in part:
            kind, *args = part.split(":")
            out.append((kind, *(float(a) if "." in a else int(a) for a in args)))
        else:
            out.append(int(part))
    return out


def add_simulate_parser(sub: Any) -> None:
    """Add the ``simulate`` subcommand to the ``pymsem`` parser."""
    s = sub.add_parser(
        "simulate",
        help="Run a simulation study (power analysis) and print its summary.",
        description="Simulate data from known values, fit each replication, and report power, "
        "coverage and bias per design. Results are written to --out as they finish; rerun the "
        "same command to resume an interrupted study.",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--tutorial", type=int, choices=[1, 2, 3, 4], help="a tutorial model (true values built in)"
    )
    src.add_argument("--model", help="a model file in lavaan's two-level syntax (needs --truth, --cluster)")
    s.add_argument("--truth", help="JSON file of true values (labels, group[element], group names)")
    s.add_argument("--cluster", default="schid", help="cluster id column name (default: schid)")
    s.add_argument("--level2", action="append", default=[], metavar="COLUMN", help="a level-2 variable")
    s.add_argument("--clusters", type=_ints, required=True, help="numbers of clusters, e.g. 30,50,100")
    s.add_argument("--cluster-size", type=_size, default=[20], help="e.g. 20, or 10,20, or uniform:6:54")
    s.add_argument("--missing", type=float, default=0.0, help="share of missing cells (default 0)")
    s.add_argument("--mechanism", choices=["MCAR", "MAR"], default="MCAR")
    s.add_argument("--mar-on", help="the always-observed column MAR missingness depends on")
    s.add_argument("--reps", type=int, default=100, help="replications per design (default 100)")
    s.add_argument("--labels", default=None, help="comma-separated labels to report (default: all)")
    s.add_argument("--out", required=True, help="directory for the results (resumable)")
    s.add_argument(
        "--workers", type=int, default=None, help="local worker processes (default cores // chains)"
    )
    s.add_argument("--dask", metavar="ADDRESS", help="a dask.distributed scheduler address")
    s.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    s.add_argument("--draws", type=int, default=500)
    s.add_argument("--tune", type=int, default=500)
    s.add_argument("--chains", type=int, default=2)
    s.add_argument("--target", type=float, default=0.8, help="power target for the smallest design")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_simulate(args: argparse.Namespace) -> int:
    """Run the study ``args`` describe; print the summary and the smallest design reaching --target."""
    import pandas as pd

    from pymsem.specification.errors import MSEMDataError, MSEMSpecificationError
    from pymsem.study import SimulationStudy, grid
    from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

    try:
        if args.tutorial:
            spec = tutorial_spec(args.tutorial)
            truth = dict(TUTORIAL_TRUTH[args.tutorial])
            if args.truth:
                truth.update(json.loads(Path(args.truth).read_text()))
        else:
            from pymsem.specification.model import MSEM

            if not args.truth:
                raise MSEMSpecificationError("--model needs --truth FILE.json with the true values.")
            truth = json.loads(Path(args.truth).read_text())
            spec = MSEM.from_lavaan(
                Path(args.model).read_text(), None, cluster=args.cluster, level2=args.level2
            )
        designs = grid(args.clusters, cluster_size=args.cluster_size, missing=args.missing,
                       mechanism=args.mechanism, mar_on=args.mar_on)  # fmt: skip
        study = SimulationStudy(
            spec, truth, designs, reps=args.reps, seed=args.seed, out=args.out, workers=args.workers,
            client=args.dask, fit_options={"draws": args.draws, "tune": args.tune, "chains": args.chains},
        )  # fmt: skip
        study.run(progress=not args.no_progress)
        labels = [x for x in args.labels.split(",") if x] if args.labels else None
        summary = study.summary(labels)
    except (MSEMDataError, MSEMSpecificationError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"pymsem: error: {e}", file=sys.stderr)
        return 2
    cols = ["design_name", "label", "parameter", "truth", "reps", "power", "coverage", "bias", "rmse",
            "mean_sd", "sd_estimates", "converged", "failed"]  # fmt: skip
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(summary[cols].round(3).to_string(index=False))
    fails = study.failures()
    if len(fails):
        print(f"\n{len(fails)} replication(s) failed or did not converge (see {args.out}):")
        print(
            fails[["design", "rep", "error", "max_rhat", "min_ess_bulk", "divergences"]].to_string(
                index=False
            )
        )
    if labels:
        found = study.power(labels, args.target)
        print(f"\nSmallest design with power >= {args.target} for {', '.join(labels)}: "
              f"{found.design.label if found.design else 'none of these'}")  # fmt: skip
    run = study.last_run
    if run.get("replications"):
        print(
            f"{run['replications']} replications in {run['seconds']:.0f} s ({run['per_hour']:.0f} per hour)."
        )
    print(f"Results: {args.out}")
    return 0
