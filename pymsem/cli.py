"""Command line: ``pymsem tutorial MODEL`` fits a tutorial model, ``pymsem fit FILE`` any model.

``pymsem simulate ...`` runs a simulation study (power analysis; :mod:`pymsem.study.cli`).

``pymsem fit model.lav --data data.csv --cluster schid`` reads a model written in lavaan's
two-level syntax (or Blimp's, ``--syntax blimp`` or a Blimp input file), fits it and prints its
table.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import pandas as pd

__all__ = ["main"]

OUT_COLUMNS = ["level", "label", "parameter", "median", "sd", "lower", "upper", "rhat", "ess_bulk", "std"]


def _sampling_options(t: argparse.ArgumentParser, tune: int = 1500) -> None:
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
    t.add_argument("--tune", type=int, default=tune)
    t.add_argument("--chains", type=int, default=None, help="number of chains (default 4)")
    t.add_argument("--seed", type=int, default=None, help="random seed (default 46)")
    t.add_argument("--sampler", choices=["nutpie", "pymc", "numpyro", "blackjax"], default="nutpie")
    t.add_argument("--out", help="write the summary to this CSV file")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _parser() -> argparse.ArgumentParser:
    from pymsem.tutorial import MODELS

    p = argparse.ArgumentParser(prog="pymsem", description="Bayesian multilevel SEM on PyMC.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tutorial", help="Fit one of the tutorial's models and print its table.")
    t.add_argument("model", type=int, choices=sorted(MODELS), help="tutorial model number")
    t.add_argument("--data", help="CSV with the tutorial's columns (default: the bundled school data)")
    t.add_argument("--cluster", default="schid", help="cluster id column (default: schid)")
    _sampling_options(t)
    f = sub.add_parser(
        "fit",
        help="Fit a model written in lavaan or Blimp syntax and print its table.",
        description="Fit a model written in lavaan's two-level syntax (level: 1 / level: 2 blocks) "
        "or in Blimp's (rblimp's model block or a whole Blimp input file).",
    )
    f.add_argument("model_file", help="the model: a lavaan model (.lav) or a Blimp input file (.imp)")
    f.add_argument("--data", required=True, help="CSV with one row per level-1 unit")
    f.add_argument("--cluster", help="cluster id column (a Blimp file's CLUSTERID: is used otherwise)")
    f.add_argument(
        "--syntax",
        choices=["lavaan", "blimp"],
        help="the model's syntax (default: from the file: 'level:' lines are lavaan, 'MODEL:' Blimp)",
    )
    f.add_argument(
        "--level2",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column that is a level-2 (cluster) variable (repeatable; constant columns are found)",
    )
    _sampling_options(f)
    from pymsem.study.cli import add_simulate_parser

    add_simulate_parser(sub)
    return p


def _syntax(path: str, text: str, given: str | None) -> str:
    if given:
        return given
    if path.lower().endswith((".imp", ".blimp")):
        return "blimp"
    if path.lower().endswith((".lav", ".lavaan")):
        return "lavaan"
    import re

    if re.search(r"^\s*level\s*:", text, flags=re.MULTILINE | re.IGNORECASE):
        return "lavaan"
    if re.search(r"^\s*MODEL\s*:", text, flags=re.MULTILINE | re.IGNORECASE):
        return "blimp"
    from pymsem.specification.errors import MSEMSpecificationError

    raise MSEMSpecificationError(
        f"Cannot tell the syntax of {path}: it has no 'level:' lines (lavaan) and no 'MODEL:' "
        f"command (Blimp). Give --syntax lavaan or --syntax blimp."
    )


def _model_from_file(args: argparse.Namespace, data: pd.DataFrame) -> Any:
    from pathlib import Path

    from pymsem.specification.errors import MSEMSpecificationError
    from pymsem.specification.model import MSEM

    text = Path(args.model_file).read_text()
    kwargs = {"level2": args.level2, "drop_missing_cluster": args.drop_missing_cluster}
    if _syntax(args.model_file, text, args.syntax) == "lavaan":
        if not args.cluster:
            raise MSEMSpecificationError("A lavaan model needs --cluster COLUMN (the cluster id).")
        return MSEM.from_lavaan(text, data, cluster=args.cluster, **kwargs)
    if "MODEL:" in text.upper() or "LATENT:" in text.upper():
        model = MSEM.from_blimp(data, file=text, cluster=args.cluster, **kwargs)
    else:
        model = MSEM.from_blimp(data, text, clusterid=args.cluster, **kwargs)
    return model


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pymsem`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        from pymsem.study.cli import run_simulate

        return run_simulate(args)
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
        na = args.missing or None
        if args.command == "tutorial":
            data = pd.read_csv(args.data, na_values=na) if args.data else load_school()
            model = tutorial_model(
                args.model, data, cluster=args.cluster, drop_missing_cluster=args.drop_missing_cluster
            )
            title = f"Tutorial Model {args.model}"
        else:
            data = pd.read_csv(args.data, na_values=na)
            model = _model_from_file(args, data)
            title = args.model_file
        settings = getattr(model, "settings", {}) or {}
        if settings.get("burn") or settings.get("iterations"):
            print(
                "Blimp's BURN and ITERATIONS count Gibbs iterations and are not used: NUTS needs far "
                f"fewer draws (--tune {args.tune}, --draws {args.draws} per chain)."
            )
        seed = args.seed if args.seed is not None else int(settings.get("seed", 46))
        chains = args.chains if args.chains is not None else int(settings.get("chains", 4))
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = model.fit(
                draws=args.draws,
                tune=args.tune,
                chains=chains,
                seed=seed,
                sampler=args.sampler,
                progress=not args.no_progress,
            )
        elapsed = time.perf_counter() - t0
    except (MSEMDataError, MSEMSpecificationError, FileNotFoundError) as e:
        print(f"pymsem: error: {e}", file=sys.stderr)
        return 2
    print(model.missing() if model.missing().any else "Missing data: none")
    table = fit.table(title=title)
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
        fit.impute(m=args.impute, seed=seed).to_csv(args.impute_out, index=False)
        print(f"{args.impute} imputed data sets written to {args.impute_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
