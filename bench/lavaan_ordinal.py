"""pymsem's ordinal model against lavaan's ordinal CFA (WLSMV, theta parameterization).

Run: ``python bench/lavaan_ordinal.py [--clusters 200] [--size 10] [--draws 1000] [--chains 4]``.
Needs ``Rscript`` with lavaan (Debian: ``apt-get install r-base-core r-cran-lavaan``).

lavaan refuses a two-level model with ordered variables, so the check is single-level: a
one-factor CFA of six probit items (three with 5 categories, three with 4) is simulated
without any between-cluster variation and its rows are put into clusters. lavaan fits the
single-level CFA, ``cfa(model, ordered = items, estimator = "WLSMV", parameterization =
"theta")``: theta fixes each latent response's residual variance at 1, pymsem's scale.
pymsem fits the same factor as a within factor (``level: 1`` only); the between part of each
latent response is then pymsem's default, a free between variance per item and no
covariances, which the data put near 0. With the between variance near 0 pymsem's model is
lavaan's, so the within loadings, the factor variance and the thresholds should agree.

Identification is the same in both: ``--scale marker`` (default lavaan, pymsem: first loading
1, factor variance free) or ``--scale std`` (``NA*u1`` and the factor variance 1; lavaan's
``std.lv``). The default is ``std``: with a marker every other loading is a ratio, whose
posterior is right-skewed and mixes slowly under the sampled latent responses.

Writes ``bench/results/lavaan_ordinal.csv`` (one row per compared parameter) and
``bench/results/lavaan_ordinal.md``. ``tests/test_lavaan_ordinal.py`` imports the helpers
below for a smaller run of the same check.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import pymsem as ms
from pymsem.results.fit import MSEMFit

ITEMS = [f"u{i}" for i in range(1, 7)]
#: True loadings (factor variance 1) on the latent responses, whose residual variance is 1.
LOADINGS = np.array([1.0, 0.8, 1.2, 0.6, 1.5, 0.9])
#: Thresholds in units of each latent response's total SD ``sqrt(1 + loading^2)``: items 1, 3, 5
#: have 5 categories, items 2, 4, 6 have 4.
STD_THRESHOLDS = {5: np.array([-1.5, -0.5, 0.3, 1.2]), 4: np.array([-1.0, 0.0, 0.9])}

_R_SCRIPT = r"""
suppressPackageStartupMessages(library(lavaan))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
model <- paste(readLines(file.path(dir, "model.lav")), collapse = "\n")
d <- read.csv(file.path(dir, "data.csv"))
items <- strsplit(args[2], ",")[[1]]
t0 <- proc.time()[["elapsed"]]
fit <- cfa(model, data = d, ordered = items, estimator = "WLSMV", parameterization = "theta")
seconds <- proc.time()[["elapsed"]] - t0
pe <- parameterEstimates(fit)
pt <- parTable(fit)
key <- function(x) paste(x$lhs, x$op, x$rhs)
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
    """Whether ``Rscript`` is on the path and loads lavaan (``bench/lavaan_compare.py``'s check)."""
    path = Path(__file__).resolve().parent / "lavaan_compare.py"
    spec = importlib.util.spec_from_file_location("lavaan_compare", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("lavaan_compare") or importlib.util.module_from_spec(spec)
    if "lavaan_compare" not in sys.modules:
        sys.modules["lavaan_compare"] = module
        spec.loader.exec_module(module)
    return bool(module.lavaan_available())


def true_thresholds() -> dict[str, np.ndarray]:
    """Each item's thresholds on its latent response (residual SD 1)."""
    return {
        c: STD_THRESHOLDS[5 if j % 2 == 0 else 4] * np.sqrt(1.0 + LOADINGS[j] ** 2)
        for j, c in enumerate(ITEMS)
    }


def simulate_data(n_clusters: int, cluster_size: int, seed: int) -> pd.DataFrame:
    """A single-level probit one-factor CFA, its rows put into clusters (no between variation).

    Returns
    -------
    pandas.DataFrame
        ``g`` (cluster id) and the integer-coded items ``u1`` .. ``u6``.
    """
    rng = np.random.default_rng(seed)
    n = n_clusters * cluster_size
    eta = rng.normal(size=n)
    out = pd.DataFrame({"g": np.repeat(np.arange(n_clusters), cluster_size)})
    for j, (c, tau) in enumerate(true_thresholds().items()):
        ystar = LOADINGS[j] * eta + rng.normal(size=n)
        out[c] = (ystar[:, None] > tau[None, :]).sum(1)
    return out


def model_texts(scale: str) -> tuple[str, str]:
    """(lavaan's single-level text, pymsem's within-level text) for ``scale`` ``marker`` or ``std``."""
    first = "NA*" if scale == "std" else ""
    factor = "F =~ " + first + " + ".join(ITEMS)
    lavaan = factor + ("\nF ~~ 1*F" if scale == "std" else "") + "\n"
    # pymsem fixes the factor variance to 1 by itself when no loading is fixed.
    return lavaan, "level: 1\n  " + factor + "\n"


def fit_lavaan(text: str, data: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """lavaan's ``cfa(text, ordered = ITEMS, estimator = "WLSMV", parameterization = "theta")``.

    Returns
    -------
    estimates : pandas.DataFrame
        ``parameterEstimates(fit)`` with a ``free`` column.
    info : dict
        ``seconds`` (``cfa()`` alone), ``wall_seconds`` (the whole ``Rscript`` call),
        ``converged``, ``iterations``, ``version``, ``r``.
    """
    with tempfile.TemporaryDirectory(prefix="lavaan_ordinal_") as tmp:
        d = Path(tmp)
        (d / "model.lav").write_text(text)
        (d / "fit.R").write_text(_R_SCRIPT)
        data.to_csv(d / "data.csv", index=False)
        t0 = time.perf_counter()
        out = subprocess.run(
            ["Rscript", str(d / "fit.R"), str(d), ",".join(ITEMS)],
            capture_output=True,
            text=True,
            check=False,
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
    text: str, data: pd.DataFrame, draws: int, tune: int, chains: int, seed: int
) -> tuple[MSEMFit, dict[str, Any]]:
    """``MSEM.from_lavaan(text, data, cluster="g", ordered=ITEMS)`` and NUTS (nutpie)."""
    t0 = time.perf_counter()
    model = ms.MSEM.from_lavaan(text, data, cluster="g", ordered=ITEMS)
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
        "formulation": fit.compiled.formulation.name,
    }


def compare(estimates: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """lavaan's free loadings, factor variance and thresholds against pymsem's summary rows.

    Returns
    -------
    pandas.DataFrame
        ``parameter``, ``kind`` (loading, factor variance, threshold), ``truth``,
        ``lavaan_est``, ``lavaan_se``, ``median``, ``post_sd``, ``z`` (``(median - est) /
        post_sd``), ``sd_ratio`` (``post_sd / se``), ``rhat``, ``ess_bulk``.
    """
    flat = summary.reset_index().set_index("parameter")
    tau = true_thresholds()
    rows = []
    for r in estimates[estimates["free"]].itertuples():
        if r.op == "=~":
            parameter, kind, truth = f"{r.rhs} by {r.lhs}", "loading", LOADINGS[ITEMS.index(r.rhs)]
        elif r.op == "~~" and r.lhs == r.rhs == "F":
            parameter, kind, truth = "F ~~ F", "factor variance", 1.0
        elif r.op == "|":
            parameter, kind = f"{r.lhs} | {r.rhs}", "threshold"
            truth = tau[r.lhs][int(r.rhs[1:]) - 1]
        else:
            continue
        s = flat.loc[parameter]
        if isinstance(s, pd.DataFrame):  # a name at both levels: the within row
            s = s[s["level"] == "within"].iloc[0]
        rows.append(
            {
                "parameter": parameter,
                "kind": kind,
                "truth": truth,
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
    return pd.DataFrame(rows)


def run_comparison(
    n_clusters: int,
    cluster_size: int,
    data_seed: int,
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    scale: str = "std",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate, fit in lavaan and in pymsem, and match the parameters.

    Returns
    -------
    table : pandas.DataFrame
        :func:`compare`'s table.
    info : dict
        lavaan's info prefixed ``lavaan_``, pymsem's prefixed ``pymsem_``, ``students``,
        ``clusters``, and ``between_variance_max`` (the largest posterior median of the
        items' between variances, which the data should put near 0).
    """
    data = simulate_data(n_clusters, cluster_size, data_seed)
    lavaan_text, pymsem_text = model_texts(scale)
    est, linfo = fit_lavaan(lavaan_text, data)
    fit, pinfo = fit_pymsem(pymsem_text, data, draws=draws, tune=tune, chains=chains, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = fit.summary()
    table = compare(est, summary)
    between = summary.reset_index()
    between = between[(between["level"] == "between") & (between["block"] == "Variances")]
    info = {f"lavaan_{k}": v for k, v in linfo.items()} | {f"pymsem_{k}": v for k, v in pinfo.items()}
    info |= {
        "students": len(data),
        "clusters": n_clusters,
        "between_variance_max": float(between["median"].max()),
        "between_variance_upper_max": float(between["upper"].max()),
    }
    return table, info


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def markdown_report(table: pd.DataFrame, info: dict[str, Any], args: argparse.Namespace) -> str:
    """The results file: setup, summary by kind, timing and the per-parameter table."""
    az = table["z"].abs()
    lines = [
        "# pymsem's ordinal model against lavaan's ordinal CFA (`python bench/lavaan_ordinal.py`)",
        "",
        f"{datetime.date.today()}, 2-core dev machine (shared). Data: a single-level probit one-factor "
        f"CFA of six items (u1, u3, u5: 5 categories; u2, u4, u6: 4), loadings "
        f"{', '.join(f'{v:g}' for v in LOADINGS)} with factor variance 1 and latent-response "
        f"residual variance 1, {info['students']} rows put into {args.clusters} clusters of "
        f"{args.size} with no between-cluster variation; data seed {args.data_seed}. Scale: "
        f"`{args.scale}` ({'factor variance 1, every loading free' if args.scale == 'std' else 'first loading 1, factor variance free'}) in both.",
        "",
        f"lavaan {info['lavaan_version']} (R {info['lavaan_r']}): `cfa(model, ordered = items, "
        f'estimator = "WLSMV", parameterization = "theta")`, converged: {info["lavaan_converged"]} '
        f'({info["lavaan_iterations"]} iterations). pymsem: `MSEM.from_lavaan("level: 1 ...", '
        f"ordered=items)` (the factor within; between: a free variance per item, pymsem's default), "
        f"{info['pymsem_formulation']} formulation, nutpie, {args.chains} chains x ({args.tune} + "
        f"{args.draws}), seed {args.seed}; max R-hat {info['pymsem_max_rhat']:.4f}, min bulk ESS "
        f"{info['pymsem_min_ess_bulk']:.0f}, {info['pymsem_divergences']} divergences. The items' "
        f"between variances: largest posterior median {info['between_variance_max']:.4f}, largest "
        f"97.5% bound {info['between_variance_upper_max']:.4f}.",
        "",
        "z = (posterior median - lavaan est) / posterior SD; sd ratio = posterior SD / lavaan SE.",
        "",
        "| kind | n | max abs z | mean z | within 0.5 SD | median sd ratio |",
        "|---|---|---|---|---|---|",
    ]
    for kind, g in table.groupby("kind", sort=False):
        lines.append(
            f"| {kind} | {len(g)} | {_fmt(g['z'].abs().max(), 2)} | {_fmt(g['z'].mean(), 2)} | "
            f"{int((g['z'].abs() <= 0.5).sum())}/{len(g)} | {_fmt(g['sd_ratio'].median(), 2)} |"
        )
    lines.append(
        f"| **all** | {len(table)} | {_fmt(az.max(), 2)} | {_fmt(table['z'].mean(), 2)} | "
        f"{int((az <= 0.5).sum())}/{len(table)} | {_fmt(table['sd_ratio'].median(), 2)} |"
    )
    lines += [
        "",
        "| | seconds |",
        "|---|---|",
        f"| lavaan `cfa()` | {_fmt(info['lavaan_seconds'], 2)} |",
        f"| lavaan whole `Rscript` call | {_fmt(info['lavaan_wall_seconds'], 2)} |",
        f"| pymsem compile | {_fmt(info['pymsem_compile_seconds'], 1)} |",
        f"| pymsem sampling | {_fmt(info['pymsem_sampling_seconds'], 1)} |",
        f"| pymsem whole fit | {_fmt(info['pymsem_wall_seconds'], 1)} |",
        "",
        "| parameter | kind | truth | lavaan est | lavaan se | pymsem median | posterior sd | z | bulk ESS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| `{r.parameter}` | {r.kind} | {_fmt(r.truth)} | {_fmt(r.lavaan_est)} | "
            f"{_fmt(r.lavaan_se)} | {_fmt(r.median)} | {_fmt(r.post_sd)} | {_fmt(r.z, 2)} | "
            f"{r.ess_bulk:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--data-seed", type=int, default=2024)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scale", choices=("std", "marker"), default="std")
    p.add_argument("--out", default="lavaan_ordinal", help="results file stem in bench/results/")
    args = p.parse_args()
    if not lavaan_available():
        raise SystemExit("Rscript with lavaan is needed (apt-get install r-base-core r-cran-lavaan).")
    table, info = run_comparison(
        args.clusters, args.size, args.data_seed, args.draws, args.tune, args.chains, args.seed, args.scale
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
