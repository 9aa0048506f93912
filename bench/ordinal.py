"""Ordinal indicators: tutorial Models 2 and 3 with their 12 items cut into 5 categories.

For each seed: simulate the model at ``--clusters`` x ``--size`` (within residual SD 1, grand
means 0, so the latent responses are on the probit scale), cut every item at
``TAU`` and fit it with the items declared ordinal; report compile and sampling seconds, the
minimum bulk ESS over paths, loadings and thresholds, ESS per second and the maximum R-hat.
Once per model, the milliseconds per log-density gradient of the ordinal model against the
continuous model on the same (uncut) data, in the same run.

    python bench/ordinal.py --models 3 --seeds 5            # bench/results/ordinal.md
    python bench/ordinal.py --models 3 --seeds 1 --tau 0.25 --no-gradient   # binary items

Each fit's row is appended to ``bench/results/ordinal_fits.csv`` as soon as it finishes (a run
that stops keeps what it finished; ``--first-seed`` continues a series).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import time_gradient

import pymsem as ms
from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

ITEMS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)]
TAU = np.array([-1.5, -0.5, 0.4, 1.3])
OUT = Path(__file__).resolve().parent / "results"


def _data(
    model: int, clusters: int, size: int, seed: int, tau: np.ndarray = TAU
) -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = {**TUTORIAL_TRUTH[model], "resid_sd_w": 1.0, "intercept_b": 0.0}
    latent = ms.simulate(tutorial_spec(model), truth, n_clusters=clusters, cluster_size=size, seed=seed)
    cut = latent.copy()
    for c in ITEMS:
        cut[c] = (latent[c].to_numpy()[:, None] > tau[None, :]).sum(1)
    return latent, cut


def fit_row(
    model: int, clusters: int, size: int, seed: int, draws: int, tune: int, tau: np.ndarray = TAU
) -> dict:
    _, cut = _data(model, clusters, size, seed, tau)
    m = tutorial_spec(model).with_data(cut, ordinal=ITEMS)
    fit = m.fit(draws=draws, tune=tune, chains=2, seed=seed, progress=False, warn=False)
    s = fit.summary().reset_index()
    keep = s[s.block.isin(["Regressions", "Loadings", "Thresholds", "Random slopes"])]
    sampling = fit.run.sampling_seconds
    truth = _truth(fit, model, tau)
    rows = s.set_index(["level", "parameter"]).loc[list(truth)]
    t = np.array(list(truth.values()))
    covered = (rows.lower.to_numpy() <= t) & (t <= rows.upper.to_numpy())
    z = np.abs(rows["median"].to_numpy() - t) / rows["sd"].to_numpy()
    return {
        "model": model,
        "categories": len(tau) + 1,
        "seed": seed,
        "students": len(cut),
        "draws": draws,
        "tune": tune,
        "formulation": fit.compiled.formulation.name,
        "compile_s": round(fit.run.compile_seconds, 1),
        "sampling_s": round(sampling, 1),
        "min_bulk_ess": int(keep.ess_bulk.min()),
        "lowest_ess": " ".join(str(keep.loc[keep.ess_bulk.idxmin(), k]) for k in ("level", "parameter")),
        "ess_per_s": round(float(keep.ess_bulk.min()) / sampling, 2),
        "max_rhat": round(float(keep.rhat.max()), 3),
        "divergences": int(fit.diagnostics()["divergences"]),
        "checked": len(t),
        "covered": round(float(covered.mean()), 3),
        "within_2sd": round(float((z < 2).mean()), 3),
    }


def _truth(fit: ms.results.fit.MSEMFit, model: int, tau: np.ndarray = TAU) -> dict[tuple[str, str], float]:
    """True values of the paths, loadings and thresholds, keyed as the summary's index."""
    values = TUTORIAL_TRUTH[model]
    out = {}
    for ref in fit.structure.refs():
        if ref.kind in ("path", "loading"):
            level = "within" if ref.group.endswith("_w") else "between"
            key = ref.label if ref.label in values else ref.group
            out[(level, ref.element)] = values.get(f"{ref.group}[{ref.element}]", values.get(key))
    for c in ITEMS:
        for k, t in enumerate(tau):
            out[("between", f"{c} | t{k + 1}")] = float(t)
    return out


def gradient_rows(model: int, clusters: int, size: int) -> list[dict]:
    latent, cut = _data(model, clusters, size, 0)
    rows = []
    for kind, m in (
        ("continuous", tutorial_spec(model).with_data(latent)),
        ("ordinal", tutorial_spec(model).with_data(cut, ordinal=ITEMS)),
    ):
        compiled = m.compile()
        per_grad, compile_s = time_gradient(compiled)
        rows.append(
            {
                "model": model,
                "data": kind,
                "formulation": compiled.formulation.name,
                "free_values": int(
                    sum(np.prod(v.shape) for v in compiled.pymc_model.initial_point().values())
                ),
                "ms_per_gradient": round(1000 * per_grad, 3),
                "gradient_compile_s": round(compile_s, 1),
            }
        )
    rows[1]["ratio"] = round(rows[1]["ms_per_gradient"] / rows[0]["ms_per_gradient"], 1)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, nargs="+", default=[3])
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--size", type=int, default=30)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--tau", type=float, nargs="+", default=list(TAU), help="cut points (one: binary items)")
    p.add_argument("--no-gradient", action="store_true", help="skip the per-gradient comparison")
    a = p.parse_args()
    tau = np.sort(np.asarray(a.tau, dtype=float))
    grads, fits = [], []
    OUT.mkdir(exist_ok=True)
    for model in a.models:
        if not a.no_gradient:
            grads += gradient_rows(model, a.clusters, a.size)
            print(pd.DataFrame(grads).to_string(index=False), flush=True)
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            t = time.perf_counter()
            fits.append(fit_row(model, a.clusters, a.size, seed, a.draws, a.tune, tau))
            print(fits[-1], f"({time.perf_counter() - t:.0f} s)", flush=True)
            # Rewritten whole, not appended: rows of earlier runs may lack a newer column.
            csv = OUT / "ordinal_fits.csv"
            before = [pd.read_csv(csv)] if csv.exists() else []
            pd.concat([*before, pd.DataFrame([fits[-1]])]).to_csv(csv, index=False)
    text = [
        "# Ordinal indicators (5 categories): tutorial models on simulated data",
        "",
        f"Generated by `bench/ordinal.py` ({a.clusters} clusters x {a.size}, 2 chains x {a.draws} draws, "
        f"{a.tune} tuning; 2 cores, shared with other work, so seconds are indicative). ESS and R-hat "
        "over paths, loadings, thresholds and random-slope moments.",
        "",
        "## Cost per gradient against the continuous model on the same data",
        "",
        pd.DataFrame(grads).to_markdown(index=False) if grads else "(not measured: --no-gradient)",
        "",
        "## Fits",
        "",
        pd.DataFrame(fits).to_markdown(index=False),
        "",
    ]
    (OUT / "ordinal.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
