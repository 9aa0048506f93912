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
    t.add_argument("--draws", type=int, default=1000)
    t.add_argument("--tune", type=int, default=1000)
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
        data = pd.read_csv(args.data) if args.data else load_school()
        model = tutorial_model(args.model, data, cluster=args.cluster)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
