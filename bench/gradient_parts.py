"""Where a gradient's time goes: the log density alone, with its gradient, and the fused Woodbury operation.

Run: ``python bench/gradient_parts.py CLUSTERS SIZE MODEL`` (e.g. ``10000 100 4``). Simulates the
model of ``bench/scaling.py`` (3 or 4) and times, with the numba backend and one BLAS thread
(median of 20 calls at the model's starting point): the log density; the log density and its
gradient (what nutpie evaluates); the inputs of the fused ``ClusterWoodbury`` operation; and
those inputs plus the operation, which returns the likelihood's value and its own gradient
pieces. What the last leaves of the second is the reverse pass of the graph that builds the
operation's inputs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.traversal import ancestors
    from scaling import spec_and_truth
    from threadpoolctl import threadpool_limits

    import pymsem as ms

    clusters, size, model_number = (int(a) for a in sys.argv[1:4])
    make, truth = spec_and_truth(model_number)
    df = ms.simulate(make(None), truth, n_clusters=clusters, cluster_size=size, seed=1)
    m = make(df).compile().pymc_model
    values = m.value_vars
    logp = m.logp()
    point = m.initial_point()
    args = [point[v.name] for v in values]

    def ms_per_call(outs: list) -> float:
        fn = pytensor.function(values, outs, mode="NUMBA", on_unused_input="ignore")
        fn(*args)
        times = []
        with threadpool_limits(1, "blas"):
            for _ in range(20):
                t = time.perf_counter()
                fn(*args)
                times.append(time.perf_counter() - t)
        return 1e3 * float(np.median(times))

    print(f"model {model_number}, {clusters} x {size}")
    print(f"| part | ms |\n|---|---|\n| log density | {ms_per_call([logp]):.2f} |")
    print(f"| log density + gradient | {ms_per_call([logp, *pt.grad(logp, values)]):.2f} |")
    fused = [v.owner for v in ancestors([logp]) if v.owner and type(v.owner.op).__name__ == "ClusterWoodbury"]
    if fused:
        print(f"| Woodbury inputs | {ms_per_call(list(fused[0].inputs)):.2f} |")
        print(f"| Woodbury inputs + operation | {ms_per_call(list(fused[0].outputs)):.2f} |")


if __name__ == "__main__":
    main()
