"""Command line: ``pymsem tutorial MODEL`` fits a tutorial model and prints its table."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import pandas as pd

__all__ = ["main"]

OUT_COLUMNS = ["level", "label", "parameter", "median", "sd", "lower", "upper", "rhat", "ess_bulk", "std"]


def _parser() -> argparse.ArgumentParser:
    from pymsem.tutorial import MODELS

    p = argparse.ArgumentParser(prog="pymsem", description="Bayesian multilevel SEM on PyMC.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tutorial", help="Fit one of the tutorial's models and print its table.")
    t.add_argument("model", type=int, choices=sorted(MODELS), help="tutorial model number")
    t.add_argument("--data", help="CSV with the tutorial's columns (default: the bundled school data)")
    t.add_argument("--cluster", default="schid", help="cluster id column (default: schid)")
    t.add_argument(
        "--missing",
        action="append",
        default=[],
        metavar="CODE",
        help="a value that marks a missing cell, e.g. -999 (repeatable; empty cells and NA always do)",
    )
    t.add_argument(
        "--drop-missing-cluster",
        action="store_true",
        help="leave out rows without a cluster id (reported) instead of stopping with an error",
    )
    t.add_argument(
        "--impute", type=int, metavar="M", help="also write M imputed data sets (needs --impute-out)"
    )
    t.add_argument("--impute-out", help="CSV for the stacked imputations (column 'imputation' = 1..M)")
    t.add_argument("--draws", type=int, default=1000)
    # 1500: at 1000 a between residual SD near 0 (Model 2, resid_sd_b[REL2]) can end at R-hat 1.015.
    t.add_argument("--tune", type=int, default=1500)
    t.add_argument("--chains", type=int, default=4)
    t.add_argument("--seed", type=int, default=46)
    t.add_argument("--sampler", choices=["nutpie", "pymc", "numpyro", "blackjax"], default="nutpie")
    t.add_argument("--out", help="write the summary to this CSV file")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pymsem`` console script."""
    args = _parser().parse_args(argv)
    if args.sampler != "pymc":
        # PyTensor's C backend (used only by PyMC's own sampler) warns about BLAS on pip installs;
        # nutpie and the JAX samplers do not use it, so the warning would only confuse.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
    from pymsem.datasets import load_school
    from pymsem.specification.errors import MSEMDataError, MSEMSpecificationError
    from pymsem.tutorial import tutorial_model

    try:
        if args.impute and not args.impute_out:
            raise MSEMDataError("--impute M needs --impute-out FILE.csv to write the imputations to.")
        data = pd.read_csv(args.data, na_values=args.missing or None) if args.data else load_school()
        model = tutorial_model(
            args.model, data, cluster=args.cluster, drop_missing_cluster=args.drop_missing_cluster
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = model.fit(
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                seed=args.seed,
                sampler=args.sampler,
                progress=not args.no_progress,
            )
        elapsed = time.perf_counter() - t0
    except (MSEMDataError, MSEMSpecificationError, FileNotFoundError) as e:
        print(f"pymsem: error: {e}", file=sys.stderr)
        return 2
    print(model.missing() if model.missing().any else "Missing data: none")
    table = fit.table(title=f"Tutorial Model {args.model}")
    print(table)
    print(
        f"\nCompile {fit.run.compile_seconds:.1f} s, sampling {fit.run.sampling_seconds:.1f} s, "
        f"total {elapsed:.1f} s."
    )
    from pymsem.results.fit import SamplingWarning

    for w in caught:
        if issubclass(w.category, SamplingWarning):
            print(f"Warning: {w.message}", file=sys.stderr)
    if args.out:
        s = fit.summary().reset_index()[OUT_COLUMNS]
        s.to_csv(args.out, index=False)
        print(f"Summary written to {args.out}")
    if args.impute:
        fit.impute(m=args.impute, seed=args.seed).to_csv(args.impute_out, index=False)
        print(f"{args.impute} imputed data sets written to {args.impute_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
