"""How the cost of a gradient grows with students per cluster and with clusters (tutorial Model 3).

Run: ``python bench/scaling.py [--big]``. Simulates Model 3 (3 factors x 4 indicators at both
levels, random a and b slopes) at 100 clusters x 30, 100 and 300 students, and with ``--big``
10,000 clusters x 100 students (1,000,000 rows); compiles the collapsed model for each and
times the numba-compiled log density and gradient (1 core and one BLAS thread, median of 200
evaluations).
Writes ``bench/results/scaling.csv`` and prints a markdown table.

``python bench/scaling.py --fit 10000 100 [--chains 4 --draws 1000 --tune 1000 --slopes auto
--target-accept 0.8 --save-warmup]``
instead samples Model 3 end to end on that many rows and appends wall time, peak memory,
leapfrog steps (after and during warm-up), step size, ESS and R-hat to
``bench/results/scaling_fit.csv``. ``--model 4`` does either for tutorial Model 4 (slopes
moderated by the latent school mean of SES; true values: tests/test_moderation.py's MODEL4_TRUTH).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import pymsem as ms
from pymsem.sample import _initial_point

TRUTH = {
    "a_w": 0.35, "b_w": 0.45, "c_w": 0.25, "a_b": 0.6, "b_b": 0.5, "c_b": 0.25, "loading_w": 1.0,
    "loading_b": 1.0, "lv_sd_w": 1.0, "lv_sd_b": 0.6, "resid_sd_w": 1.0, "resid_sd_b": 0.25,
    "intercept_b": 2.0, "slope_sd_b[RSa]": 0.3**0.5, "slope_sd_b[RSb]": 0.2**0.5, "rCor": 0.1,
}  # fmt: skip


def spec(data: pd.DataFrame | None) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in ("ACH", "INT", "REL"):
        m.latent(f, [f"{f}{i}" for i in range(1, 5)])
    m.path("INT", on="REL", level="within", random=ms.RandomSlope("RSa", "a_w"))
    m.path(
        "ACH",
        on=["INT", "REL"],
        level="within",
        label=[None, "c_w"],
        random=[ms.RandomSlope("RSb", "b_w"), None],
    )
    m.covariance("RSa", "RSb", level="between", label="rCor")
    m.path("INT", on="REL", level="between", label="a_b")
    m.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])
    return m


def spec_and_truth(model: int) -> tuple:
    """The specification (a function of the data) and true values of Model 3, or of tutorial Model 4."""
    if model == 3:
        return spec, TRUTH
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.test_moderation import MODEL4_TRUTH

    def spec4(data: pd.DataFrame | None) -> ms.MSEM:
        return ms.tutorial.model4(ms.datasets.load_school() if data is None else data)

    return spec4, MODEL4_TRUTH


def time_gradient(compiled, evaluations: int = 200) -> tuple[float, float]:
    """Seconds per log density and gradient (median), and seconds to compile them with numba.

    The same joint log density and gradient nutpie differentiates, evaluated at the data-based
    starting point with one BLAS thread, as in sampling (pymsem.sample): OpenBLAS's pool would
    otherwise time a second core that the chains use themselves.
    """
    import pytensor
    import pytensor.tensor as pt

    pm_model = compiled.pymc_model
    t0 = time.perf_counter()
    values = pm_model.value_vars
    logp = pm_model.logp()
    fn = pytensor.function(values, [logp, *pt.grad(logp, values)], mode="NUMBA")
    compile_s = time.perf_counter() - t0
    init = _initial_point(compiled, None)
    point = pm_model.initial_point()
    for rv in pm_model.free_RVs:
        if rv.name in init:
            vv = pm_model.rvs_to_values[rv]
            tr = pm_model.rvs_to_transforms.get(rv)
            val = init[rv.name]
            point[vv.name] = tr.forward(val, *rv.owner.inputs).eval() if tr is not None else val
    args = [point[v.name] for v in values]
    fn(*args)
    times = []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(evaluations):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
    return float(np.median(times)), compile_s


def gradient_seconds(clusters: int, size: int, slopes: str = "auto", model_number: int = 3) -> dict:
    make, truth = spec_and_truth(model_number)
    t0 = time.perf_counter()
    df = ms.simulate(make(None), truth, n_clusters=clusters, cluster_size=size, seed=1)
    sim_s = time.perf_counter() - t0
    model = make(df)
    t0 = time.perf_counter()
    compiled = model.compile(slopes=slopes)
    build_s = time.perf_counter() - t0
    pm_model = compiled.pymc_model
    per_grad, compile_s = time_gradient(compiled)
    return {
        "model": model_number,
        "clusters": clusters,
        "students_per_cluster": size,
        "rows": clusters * size,
        "slopes": "centered" if "slope" in pm_model.named_vars else "noncentered",
        "simulate_s": round(sim_s, 1),
        "build_s": round(build_s, 1),
        "compile_s": round(compile_s, 1),
        "ms_per_gradient": round(1000 * per_grad, 3),
        "free_parameters": int(sum(np.prod(v.shape) for v in compiled.pymc_model.initial_point().values())),
    }


def full_fit(
    clusters: int,
    size: int,
    chains: int,
    draws: int,
    tune: int,
    slopes: str,
    target_accept: float = 0.8,
    save_warmup: bool = False,
    model_number: int = 3,
) -> dict:
    """Simulate, compile and sample Model 3 (or 4) end to end; wall time, peak memory and diagnostics."""
    import resource
    import warnings

    make, truth = spec_and_truth(model_number)
    t0 = time.perf_counter()
    df = ms.simulate(make(None), truth, n_clusters=clusters, cluster_size=size, seed=1)
    t1 = time.perf_counter()
    fit = make(df).fit(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=1,
        slopes=slopes,
        progress=False,
        warn=False,
        target_accept=target_accept,
        save_warmup=save_warmup,
    )
    t2 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = fit.diagnostics()
        s = fit.summary()
    steps = fit.idata["sample_stats"]["n_steps"].values
    # Warm-up statistics exist only with --save-warmup (which doubles the trace's memory).
    warm = fit.idata["warmup_sample_stats"]["n_steps"].values if save_warmup else None
    structural = s[s["block"].isin(["Regressions", "Random slopes"])]
    return {
        "model": model_number,
        "clusters": clusters,
        "students_per_cluster": size,
        "rows": clusters * size,
        "slopes": "centered" if "slope" in fit.posterior else "noncentered",
        "chains": chains,
        "draws": draws,
        "tune": tune,
        "simulate_s": round(t1 - t0, 1),
        "compile_s": round(fit.run.compile_seconds, 1),
        "sampling_s": round(fit.run.sampling_seconds, 1),
        "wall_s": round(t2 - t1, 1),
        "target_accept": target_accept,
        "mean_leapfrog_steps": round(float(steps.mean()), 1),
        # The first warm-up window is where a poor start costs most (153 steps at 10,000 x 100).
        "warmup_steps_first100": round(float(warm[:, :100].mean()), 1) if warm is not None else None,
        "warmup_steps_rest": round(float(warm[:, 100:].mean()), 1)
        if warm is not None and warm.shape[1] > 100
        else None,
        "step_size": round(float(fit.idata["sample_stats"]["step_size"].values.mean()), 3),
        "min_ess_structural": round(float(structural["ess_bulk"].min())),
        "min_ess_all": round(d["min_ess_bulk"]),
        "max_rhat": round(d["max_rhat"], 4),
        "divergences": d["divergences"],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--big", action="store_true", help="also 10,000 clusters x 100 students")
    p.add_argument(
        "--fit",
        nargs=2,
        type=int,
        metavar=("CLUSTERS", "SIZE"),
        help="instead: sample Model 3 end to end on CLUSTERS x SIZE rows (e.g. 10000 100)",
    )
    p.add_argument("--model", type=int, default=3, choices=[3, 4], help="Model 3, or tutorial Model 4")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--slopes", default="auto", choices=["auto", "centered", "noncentered"])
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--save-warmup", action="store_true", help="keep warm-up draws (reports warm-up steps)")
    args = p.parse_args()
    if args.fit:
        row = full_fit(
            *args.fit, args.chains, args.draws, args.tune, args.slopes, args.target_accept, args.save_warmup,
            args.model,
        )  # fmt: skip
        print(row, flush=True)
        out = Path(__file__).parent / "results" / "scaling_fit.csv"
        pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
        return
    sizes = [(100, 30), (100, 100), (100, 300)] + ([(10_000, 100)] if args.big else [])
    rows = []
    for clusters, size in sizes:
        rows.append(gradient_seconds(clusters, size, args.slopes, args.model))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    suffix = ("" if args.slopes == "auto" else f"_{args.slopes}") + (
        "" if args.model == 3 else f"_model{args.model}"
    )
    out = Path(__file__).parent / "results" / f"scaling{suffix}.csv"
    out.parent.mkdir(exist_ok=True)
    df.to_csv(out, index=False)
    base = rows[0]["ms_per_gradient"]
    print(
        "\n| clusters | students/cluster | rows | slopes | ms/gradient | ratio to 100x30 | free params | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clusters']} | {r['students_per_cluster']} | {r['rows']} | {r['slopes']} | {r['ms_per_gradient']} | "
            f"{r['ms_per_gradient'] / base:.2f} | {r['free_parameters']} | {r['compile_s']} |"
        )


if __name__ == "__main__":
    main()
