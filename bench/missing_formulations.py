"""Missing cells sampled or integrated out: gradient cost, compile time and ESS per second.

Two exact formulations of the same posterior (issue 21's missing-data targets):

* ``marginal`` (the default): every missing cell is a free variable (data augmentation); the
  completed data's likelihood is collapsed, its statistics computed in the graph, so a gradient
  costs one pass over the students;
* ``patterns``: the missing cells are integrated out as well, students grouped by (cluster,
  missingness pattern); a gradient factors each pair's observed block.

Run: ``python bench/missing_formulations.py [--models 2 3 4] [--shares 0.3]``. Cells of the twelve
indicators of the bundled data (100 schools x 30) are deleted MAR on SES (seed 1, as
``bench/missing_gradient.py``). For each model and share: ms per log density and gradient (median
of 200, one BLAS thread, numba), then one fit (2 chains x (500 + 500), seed 1): compile and
sampling seconds, leapfrog steps per draw, the lowest bulk ESS of the parameters and ESS per
sampling second. The complete data of each model are the baseline of the same run.
Appends to ``bench/results/missing_formulations.csv``; ``--timeout`` bounds each fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

OUT = Path(__file__).parent / "results" / "missing_formulations.csv"


def one(model: int, share: float, formulation: str) -> dict:
    """Gradient timing and a fit, in this process (a new one per row: compile is cold-ish)."""
    from missing_gradient import _data
    from scaling import time_gradient

    import pymsem as ms

    m = ms.tutorial.MODELS[model](_data(share))
    per_grad, _ = time_gradient(m.compile(formulation))
    fit = m.fit(formulation=formulation, draws=500, tune=500, chains=2, seed=1, progress=False, warn=False)
    ss = fit.idata["sample_stats"]
    d = fit.diagnostics()
    return {
        "model": model,
        "missing_share": share,
        "formulation": formulation if share else "complete",
        "ms_per_gradient": round(1000 * per_grad, 3),
        "compile_s": round(fit.run.compile_seconds, 1),
        "sampling_s": round(fit.run.sampling_seconds, 1),
        "steps_per_draw": round(float(ss["n_steps"].mean()), 1),
        "min_ess_bulk": round(d["min_ess_bulk"]),
        "max_rhat": round(d["max_rhat"], 3),
        "ess_per_s": round(d["min_ess_bulk"] / fit.run.sampling_seconds, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--shares", type=float, nargs="+", default=[0.3])
    p.add_argument("--formulations", nargs="+", default=["marginal", "patterns"])
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--note", default="", help="a line on the machine and its load")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: one row, printed as JSON
    a = p.parse_args()
    if a.row:
        model, share, form = a.row.split(",")
        print(json.dumps(one(int(model), float(share), form)))
        return
    rows = []
    for model in a.models:
        for share in [0.0, *a.shares]:
            for form in a.formulations if share else ["marginal"]:
                t = time.perf_counter()
                try:
                    res = subprocess.run(
                        [sys.executable, __file__, "--row", f"{model},{share},{form}"],
                        capture_output=True, text=True, timeout=a.timeout, check=True,
                    )  # fmt: skip
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                except subprocess.TimeoutExpired:
                    row = {"model": model, "missing_share": share, "formulation": form,
                           "sampling_s": f"> {a.timeout:.0f} (stopped)"}  # fmt: skip
                row["wall_s"] = round(time.perf_counter() - t, 1)
                row["date"], row["note"] = time.strftime("%Y-%m-%d"), a.note
                rows.append(row)
                print(row, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(OUT, mode="a", header=not OUT.exists(), index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
