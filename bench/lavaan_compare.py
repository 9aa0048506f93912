"""pymsem's posterior against lavaan's ML estimates on tutorial Model 2, written in lavaan syntax.

Run: ``python bench/lavaan_compare.py [--clusters 300] [--size 20] [--draws 1000] [--chains 4]``.
Needs ``Rscript`` with lavaan (Debian: ``apt-get install r-base-core r-cran-lavaan``).

Simulates tutorial Model 2 (ACH, INT, REL with four indicators each at both levels, the
mediation paths a/b/c within and between) with :func:`pymsem.simulate`, fits the same lavaan
model text in lavaan (``sem(model, data, cluster = "schid")``, default ML, through
``Rscript``) and in pymsem (:meth:`pymsem.MSEM.from_lavaan`, NUTS), and matches every free
lavaan parameter to pymsem's summary row: loadings, regressions, factor (residual) variances,
indicator residual variances at both levels and the between-level intercepts (pymsem's grand
means; lavaan fixes the level-1 intercepts to 0 in two-level models). With a large sample the
posterior median should sit within half a posterior SD of the ML estimate.

Writes ``bench/results/lavaan_compare.csv`` (one row per matched parameter) and
``bench/results/lavaan_compare.md`` (table and summary). ``tests/test_lavaan_compare.py``
imports the helpers below for a smaller version of the same check.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import pymsem as ms
from pymsem.results.fit import MSEMFit

#: Tutorial Model 2 in lavaan's two-level syntax; the factors have the same names at both
#: levels, so pymsem reads each as one factor with a within and a between part.
MODEL2_LAVAAN = """
level: 1
  ACH =~ ACH1 + ACH2 + ACH3 + ACH4
  INT =~ INT1 + INT2 + INT3 + INT4
  REL =~ REL1 + REL2 + REL3 + REL4
  INT ~ a_w*REL
  ACH ~ b_w*INT + c_w*REL
level: 2
  ACH =~ ACH1 + ACH2 + ACH3 + ACH4
  INT =~ INT1 + INT2 + INT3 + INT4
  REL =~ REL1 + REL2 + REL3 + REL4
  INT ~ a_b*REL
  ACH ~ b_b*INT + c_b*REL
"""

#: Simulation truth (SDs for variance parameters): tests/conftest.py's ``MODEL2_TRUTH``.
TRUTH = {
    "a_w": 0.35, "b_w": 0.45, "c_w": 0.25, "a_b": 0.60, "b_b": 0.50, "c_b": 0.25,
    "loading_w": 1.0, "loading_w[ACH2 by ACH]": 0.8, "loading_w[INT3 by INT]": 1.2,
    "loading_b": 1.0, "loading_b[ACH3 by ACH]": 1.2, "loading_b[REL2 by REL]": 0.8,
    "lv_sd_w": 1.0, "lv_sd_b": 0.6, "resid_sd_w": 1.0, "resid_sd_b": 0.25,
    "intercept_b": 2.0, "intercept_b[ACH1]": 3.0,
}  # fmt: skip

#: The kinds of parameter compared, in table order.
KINDS = ("loading", "regression", "factor variance", "residual variance", "intercept")

_R_SCRIPT = r"""
suppressPackageStartupMessages(library(lavaan))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
model <- paste(readLines(file.path(dir, "model.lav")), collapse = "\n")
d <- read.csv(file.path(dir, "data.csv"))
t0 <- proc.time()[["elapsed"]]
fit <- sem(model, data = d, cluster = args[2])
seconds <- proc.time()[["elapsed"]] - t0
pe <- parameterEstimates(fit)
pt <- parTable(fit)
key <- function(x) paste(x$lhs, x$op, x$rhs, x$level)
pe$free <- pt$free[match(key(pe), key(pt))] > 0
write.csv(pe, file.path(dir, "estimates.csv"), row.names = FALSE)
info <- data.frame(
  seconds = seconds, converged = lavInspect(fit, "converged"),
  iterations = lavInspect(fit, "iterations"),
  version = as.character(packageVersion("lavaan")), r = as.character(getRversion())
)
write.csv(info, file.path(dir, "info.csv"), row.names = FALSE)
"""


def lavaan_available() -> bool:
    """Whether ``Rscript`` is on the path and loads lavaan."""
    if shutil.which("Rscript") is None:
        return False
    out = subprocess.run(
        ["Rscript", "-e", "suppressPackageStartupMessages(library(lavaan))"],
        capture_output=True,
        check=False,
    )
    return out.returncode == 0


def simulate_data(n_clusters: int, cluster_size: int, seed: int) -> pd.DataFrame:
    """Model 2 data from :data:`TRUTH`, simulated from the lavaan text itself.

    Parameters
    ----------
    n_clusters, cluster_size
        Clusters and students per cluster (balanced).
    seed
        Random seed of :func:`pymsem.simulate`.

    Returns
    -------
    pandas.DataFrame
        ``schid``, ``id`` and the twelve indicators.
    """
    spec = ms.MSEM.from_lavaan(MODEL2_LAVAAN, None, cluster="schid")
    return ms.simulate(spec, TRUTH, n_clusters=n_clusters, cluster_size=cluster_size, seed=seed)


def fit_lavaan(text: str, data: pd.DataFrame, cluster: str = "schid") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit ``text`` in lavaan (``sem(..., cluster=cluster)``, ML) through ``Rscript``.

    Parameters
    ----------
    text
        lavaan model text.
    data
        The data; written to a CSV in a temporary directory.
    cluster
        The cluster column.

    Returns
    -------
    estimates : pandas.DataFrame
        lavaan's ``parameterEstimates(fit)`` with a ``free`` column (from ``parTable``).
    info : dict
        ``seconds`` (``sem()`` alone, R's elapsed time), ``wall_seconds`` (the whole
        ``Rscript`` call: starting R, loading lavaan, reading the CSV), ``converged``,
        ``iterations``, ``version`` (lavaan) and ``r`` (R's version).
    """
    with tempfile.TemporaryDirectory(prefix="lavaan_compare_") as tmp:
        d = Path(tmp)
        (d / "model.lav").write_text(text)
        (d / "fit.R").write_text(_R_SCRIPT)
        data.to_csv(d / "data.csv", index=False)
        t0 = time.perf_counter()
        out = subprocess.run(
            ["Rscript", str(d / "fit.R"), str(d), cluster], capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"Rscript failed ({out.returncode}):\n{out.stderr}")
        est = pd.read_csv(d / "estimates.csv", keep_default_na=False, na_values=["NA"])
        info = pd.read_csv(d / "info.csv").iloc[0].to_dict()
    info["wall_seconds"] = wall
    info["converged"] = bool(info["converged"])
    return est, info


def fit_pymsem(
    text: str, data: pd.DataFrame, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 1
) -> tuple[MSEMFit, dict[str, Any]]:
    """Fit ``text`` with :meth:`pymsem.MSEM.from_lavaan` and NUTS (nutpie).

    Returns
    -------
    fit : MSEMFit
        The fit.
    info : dict
        ``compile_seconds``, ``sampling_seconds``, ``wall_seconds`` (building the model,
        compiling and sampling), ``max_rhat``, ``min_ess_bulk`` and ``divergences``.
    """
    t0 = time.perf_counter()
    model = ms.MSEM.from_lavaan(text, data, cluster="schid")
    fit = model.fit(draws=draws, tune=tune, chains=chains, seed=seed, progress=False, warn=False)
    wall = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diag = fit.diagnostics()
    return fit, {
        "compile_seconds": fit.run.compile_seconds,
        "sampling_seconds": fit.run.sampling_seconds,
        "wall_seconds": wall,
        "max_rhat": float(diag["max_rhat"]),
        "min_ess_bulk": float(diag["min_ess_bulk"]),
        "divergences": int(diag["divergences"]),
    }


def pymsem_key(lhs: str, op: str, rhs: str, level: int) -> tuple[str, str, str] | None:
    """The pymsem summary row (level, parameter) and kind of one lavaan parameter, or ``None``.

    ``F =~ x`` is ``x by F``, ``y ~ x`` is ``y <- x``, ``a ~~ a`` stays ``a ~~ a``, and the
    level-2 intercept ``x ~1`` is the between row ``x`` (pymsem's grand mean of ``x``).
    Level-1 intercepts (fixed to 0 by lavaan) have no pymsem row.
    """
    lvl = {1: "within", 2: "between"}[int(level)]
    if op == "=~":
        return lvl, f"{rhs} by {lhs}", "loading"
    if op == "~":
        return lvl, f"{lhs} <- {rhs}", "regression"
    if op == "~~":
        kind = "covariance" if lhs != rhs else "variance"
        return lvl, f"{lhs} ~~ {rhs}", kind
    if op == "~1" and lvl == "between":
        return lvl, lhs, "intercept"
    return None


def compare(estimates: pd.DataFrame, summary: pd.DataFrame, factors: set[str]) -> pd.DataFrame:
    """Match lavaan's free parameters to pymsem's summary rows.

    Parameters
    ----------
    estimates
        :func:`fit_lavaan`'s table.
    summary
        :meth:`MSEMFit.summary` (indexed by level and parameter).
    factors
        The factor names, to tell factor variances from indicator residual variances.

    Returns
    -------
    pandas.DataFrame
        One row per matched parameter: ``level``, ``parameter``, ``kind``, ``label``,
        ``lavaan_est``, ``lavaan_se``, ``median``, ``post_sd``, ``z`` (``(median - est) /
        post_sd``), ``sd_ratio`` (``post_sd / se``), ``rhat`` and ``ess_bulk``. Free lavaan
        parameters pymsem has no row for raise a ``KeyError``.
    """
    rows = []
    for r in estimates[estimates["free"]].itertuples():
        key = pymsem_key(r.lhs, r.op, r.rhs, r.level)
        if key is None:
            continue
        level, parameter, kind = key
        if kind == "variance":
            kind = "factor variance" if r.lhs in factors else "residual variance"
        if (level, parameter) not in summary.index:
            raise KeyError(f"lavaan's {r.lhs} {r.op} {r.rhs} (level {r.level}): no pymsem row {parameter!r}")
        s = summary.loc[(level, parameter)]
        rows.append(
            {
                "level": level,
                "parameter": parameter,
                "kind": kind,
                "label": r.label or "",
                "lavaan_est": r.est,
                "lavaan_se": r.se,
                "median": s["median"],
                "post_sd": s["sd"],
                "z": (s["median"] - r.est) / s["sd"],
                "sd_ratio": s["sd"] / r.se,
                "rhat": s["rhat"],
                "ess_bulk": s["ess_bulk"],
            }
        )
    out = pd.DataFrame(rows)
    order = {k: i for i, k in enumerate(KINDS)}
    out["_k"] = out["kind"].map(lambda k: order.get(k, len(order)))
    out["_l"] = out["level"].map({"within": 0, "between": 1})
    return out.sort_values(["_l", "_k"], kind="stable").drop(columns=["_k", "_l"]).reset_index(drop=True)


def run_comparison(
    n_clusters: int, cluster_size: int, data_seed: int, draws: int, tune: int, chains: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate, fit in lavaan and in pymsem, and match the parameters.

    Returns
    -------
    table : pandas.DataFrame
        :func:`compare`'s table.
    info : dict
        lavaan's info with keys prefixed ``lavaan_``, pymsem's prefixed ``pymsem_``, and
        ``unmatched_pymsem`` (summary rows no free lavaan parameter maps to).
    """
    data = simulate_data(n_clusters, cluster_size, data_seed)
    est, linfo = fit_lavaan(MODEL2_LAVAAN, data)
    fit, pinfo = fit_pymsem(MODEL2_LAVAAN, data, draws=draws, tune=tune, chains=chains, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = fit.summary()
    factors = {f.name for f in fit.model.latents}
    table = compare(est, summary, factors)
    matched = set(zip(table["level"], table["parameter"]))
    unmatched = [f"{lv}: {p}" for lv, p in summary.index if (lv, p) not in matched]
    info = {f"lavaan_{k}": v for k, v in linfo.items()} | {f"pymsem_{k}": v for k, v in pinfo.items()}
    info["unmatched_pymsem"] = unmatched
    info["students"] = len(data)
    info["clusters"] = n_clusters
    return table, info


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _summary(table: pd.DataFrame, info: dict[str, Any]) -> str:
    """The results in words: agreement, posterior SD against SE, boundary cases, timing."""
    az = table["z"].abs()
    worst = table.loc[az.idxmax()]
    structural = table[table["kind"].isin(["loading", "regression"])]
    n_ok = int((az <= 0.5).sum())
    verdict = "every one" if n_ok == len(table) else f"{n_ok} of them"
    out = [
        f"**Summary.** {len(table)} free lavaan parameters matched; {verdict} within 0.5 posterior "
        f"SD of the ML estimate (max |z| {worst['z']:.2f}, {worst['level']} `{worst['parameter']}`; "
        f"loadings and regressions max |z| {structural['z'].abs().max():.2f}). Posterior SD / ML SE "
        f"ranges {table['sd_ratio'].min():.2f}-{table['sd_ratio'].max():.2f}.",
    ]
    var = table[table["kind"].str.contains("variance")]
    near = var[var["lavaan_est"] < 2 * var["lavaan_se"]]
    if len(near):
        names = ", ".join(f"{r.level} `{r.parameter}`" for r in near.itertuples())
        out.append(
            f"Within 2 SE of the boundary (0), where posterior median and ML mode may differ: {names}."
        )
    else:
        out.append("No variance is within 2 SE of 0, so the boundary plays no part here.")
    lavaan_s = info["lavaan_wall_seconds"]
    pym_s = info["pymsem_compile_seconds"] + info["pymsem_sampling_seconds"]
    out.append(
        f"lavaan takes {lavaan_s:.1f} s for the whole Rscript call; pymsem "
        f"{pym_s:.0f} s (compile {info['pymsem_compile_seconds']:.0f} s + sampling "
        f"{info['pymsem_sampling_seconds']:.0f} s), {pym_s / lavaan_s:.0f}x, compiling dominating."
    )
    icc = [u for u in info["unmatched_pymsem"] if u.split(": ", 1)[1].startswith("ICC ")]
    other = [u for u in info["unmatched_pymsem"] if u not in icc]
    if icc:
        out.append(f"pymsem's {len(icc)} derived ICC rows have no lavaan parameter and are not compared.")
    if other:
        out.append(f"pymsem rows with no lavaan parameter: {', '.join(other)}.")
    return " ".join(out)


def markdown_report(table: pd.DataFrame, info: dict[str, Any], args: argparse.Namespace) -> str:
    """The results file: setup, summary by kind, timing and the per-parameter table."""
    az = table["z"].abs()
    lines = [
        "# pymsem against lavaan ML on tutorial Model 2 (`python bench/lavaan_compare.py`)",
        "",
        f"{datetime.date.today()}, 2-core dev machine. Data: `pymsem.simulate` from the lavaan text "
        f"(truth as tests/conftest.py's `MODEL2_TRUTH`), {args.clusters} clusters x {args.size} "
        f"students ({info['students']} rows), data seed {args.data_seed}. lavaan "
        f'{info["lavaan_version"]} (R {info["lavaan_r"]}): `sem(model, data, cluster = "schid")`, '
        f"default ML, converged: {info['lavaan_converged']} ({info['lavaan_iterations']} iterations). "
        f"pymsem: `MSEM.from_lavaan` on the same text, nutpie, {args.chains} chains x "
        f"({args.tune} + {args.draws}), seed {args.seed}; max R-hat {info['pymsem_max_rhat']:.4f}, "
        f"min bulk ESS {info['pymsem_min_ess_bulk']:.0f}, {info['pymsem_divergences']} divergences.",
        "",
        "z = (posterior median - lavaan est) / posterior SD; sd ratio = posterior SD / lavaan SE.",
        "",
        "| kind | level | n | max abs z | within 0.5 SD | median sd ratio |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, level), g in table.groupby(["kind", "level"], sort=False):
        lines.append(
            f"| {kind} | {level} | {len(g)} | {_fmt(g['z'].abs().max(), 2)} | "
            f"{int((g['z'].abs() <= 0.5).sum())}/{len(g)} | {_fmt(g['sd_ratio'].median(), 2)} |"
        )
    lines.append(
        f"| **all** | | {len(table)} | {_fmt(az.max(), 2)} | {int((az <= 0.5).sum())}/{len(table)} | "
        f"{_fmt(table['sd_ratio'].median(), 2)} |"
    )
    lines += [
        "",
        "| | seconds |",
        "|---|---|",
        f"| lavaan `sem()` | {_fmt(info['lavaan_seconds'], 2)} |",
        f"| lavaan whole `Rscript` call (R start, library, CSV, fit) | {_fmt(info['lavaan_wall_seconds'], 2)} |",
        f"| pymsem compile | {_fmt(info['pymsem_compile_seconds'], 1)} |",
        f"| pymsem sampling | {_fmt(info['pymsem_sampling_seconds'], 1)} |",
        f"| pymsem whole fit (build, compile, sample) | {_fmt(info['pymsem_wall_seconds'], 1)} |",
        "",
    ]
    lines += [_summary(table, info), ""]
    lines += [
        "| level | parameter | kind | label | lavaan est | lavaan se | pymsem median | posterior sd | z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.level} | `{r.parameter}` | {r.kind} | {r.label} | {_fmt(r.lavaan_est)} | "
            f"{_fmt(r.lavaan_se)} | {_fmt(r.median)} | {_fmt(r.post_sd)} | {_fmt(r.z, 2)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clusters", type=int, default=300)
    p.add_argument("--size", type=int, default=20)
    p.add_argument("--data-seed", type=int, default=2024)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="lavaan_compare", help="results file stem in bench/results/")
    args = p.parse_args()
    if not lavaan_available():
        raise SystemExit("Rscript with lavaan is needed (apt-get install r-base-core r-cran-lavaan).")
    table, info = run_comparison(
        args.clusters, args.size, args.data_seed, args.draws, args.tune, args.chains, args.seed
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    table.round(5).to_csv(out / f"{args.out}.csv", index=False)
    report = markdown_report(table, info, args)
    (out / f"{args.out}.md").write_text(report)
    print(report)
    az = np.abs(table["z"].to_numpy())
    print(f"max |z| {az.max():.2f}; within 0.5 SD: {(az <= 0.5).sum()}/{len(az)}")


if __name__ == "__main__":
    main()
