"""Cost of a gradient when chains run in parallel, with and without a one-thread BLAS.

Run: ``python bench/parallel_chains.py [CLUSTERS SIZE]`` (default 1,000 x 100, Model 3 as in
``bench/scaling.py``). Compiles the collapsed model once with nutpie, then samples 200 + 200
iterations with 1 chain on 1 core, 2 chains on 2 cores and 4 chains on 2 cores, each with
OpenBLAS's own thread pool left as it is and limited to one thread (what
:func:`pymsem.sample.sample_compiled` does). Reports milliseconds per gradient per core
(sampling seconds x cores used / leapfrog steps). Writes ``bench/results/parallel_chains.csv``
and prints a markdown table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nutpie
import pandas as pd
from threadpoolctl import threadpool_limits

import pymsem as ms
from pymsem.sample import _initial_point

sys.path.insert(0, str(Path(__file__).parent))
from scaling import TRUTH, spec


def main() -> None:
    clusters, size = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (1000, 100)
    df = ms.simulate(spec(None), TRUTH, n_clusters=clusters, cluster_size=size, seed=1)
    compiled = spec(df).compile()
    init = _initial_point(compiled, None)
    nut = nutpie.compile_pymc_model(
        compiled.pymc_model, backend="numba", initial_points=init, jitter_rvs=set()
    )
    rows = []
    for blas in ("default", "1 thread"):
        for chains, cores in ((1, 1), (2, 2), (4, 2)):
            limit = threadpool_limits(limits=1, user_api="blas") if blas != "default" else None
            t0 = time.perf_counter()
            idata = nutpie.sample(
                nut, draws=200, tune=200, chains=chains, cores=cores, seed=1, progress_bar=False
            )
            secs = time.perf_counter() - t0
            if limit is not None:
                limit.restore_original_limits()
            steps = float(
                idata["sample_stats"]["n_steps"].values.sum()
                + idata["warmup_sample_stats"]["n_steps"].values.sum()
            )
            rows.append(
                {
                    "clusters": clusters,
                    "students_per_cluster": size,
                    "blas_threads": blas,
                    "chains": chains,
                    "cores": cores,
                    "sampling_s": round(secs, 1),
                    "gradients": int(steps),
                    "ms_per_gradient_per_core": round(1000 * secs * min(chains, cores) / steps, 3),
                }
            )
            print(rows[-1], flush=True)
    out = Path(__file__).parent / "results" / "parallel_chains.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    print("\n| BLAS threads | chains | cores | sampling s | gradients | ms per gradient per core |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['blas_threads']} | {r['chains']} | {r['cores']} | {r['sampling_s']} | "
            f"{r['gradients']} | {r['ms_per_gradient_per_core']} |"
        )


if __name__ == "__main__":
    main()
