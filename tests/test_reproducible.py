"""Same seed, same draws: in a new process, with empty compile caches and with warm ones.

A function compiled afresh and the same function loaded from PyTensor's on-disk numba cache
rounded differently under fastmath, and NUTS turned one ulp into different draws
(pymsem.compile.reproducible). Each run here is a new interpreter with its own PyTensor and numba
cache folders: the first finds them empty, the second finds what the first wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import hashlib, sys
import numpy as np
import pymsem as ms

truth = {"a_w": 0.3, "b_w": 0.4, "c_w": 0.2, "a_b": 0.6, "b_b": 0.5, "c_b": 0.3,
         "lv_sd_w": 1.0, "lv_sd_b": 0.5, "intercept_b": 1.0}
def spec(data):
    m = ms.MSEM(data, cluster="schid")
    for level, s in (("within", "w"), ("between", "b")):
        m.path("INT", on="REL", level=level, label=f"a_{s}")
        m.path("ACH", on=["INT", "REL"], level=level, label=[f"b_{s}", f"c_{s}"])
    return m
if __name__ == "__main__":  # PyMC's chain processes import this file again
    sizes = np.random.default_rng(5).integers(5, 30, size=60)
    data = ms.simulate(spec(None), truth, n_clusters=60, cluster_size=sizes, seed=12)
    from pymsem import sample
    from pymsem.compile import nutpie_kernel

    kernel = sample._whole_model_kernel
    # nutpie on the whole-model kernel (this model's default), nutpie on PyTensor's compiled
    # graph (the route of models the kernel does not cover), and PyMC's NUTS.
    for route, sampler in (("kernel", "nutpie"), ("graph", "nutpie"), ("pymc", "pymc")):
        sample._whole_model_kernel = kernel if route == "kernel" else (lambda compiled, init: None)
        fit = spec(data).fit(draws=150, tune=150, chains=2, seed=3, sampler=sampler, progress=False, warn=False)
        draws = np.ascontiguousarray(fit.posterior["path_w"].values)
        print("DRAWS", route, hashlib.sha256(draws.tobytes()).hexdigest(), flush=True)
        if sampler == "nutpie":
            nut = next(v for k, v in fit.compiled.sampler_cache.items() if k[0] == "nutpie")
            assert isinstance(nut, nutpie_kernel.KernelModel) == (route == "kernel")
            fns = (
                (nutpie_kernel.entry_point(nut.flat), nutpie_kernel._expand())
                if route == "kernel"
                else (nut.compiled_logp_func, nut.compiled_expand_func)
            )
            print("DRAWS", f"{route}-from-cache", sum(f.cache_hits for f in fns), flush=True)
"""


def _run(script: Path, caches: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={caches / 'pytensor'}"
    env["NUMBA_CACHE_DIR"] = str(caches / "numba")
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("DRAWS")]
    return {sampler: digest for _, sampler, digest in lines}


@pytest.mark.slow
def test_same_seed_same_draws_with_cold_and_warm_caches(tmp_path: Path) -> None:
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    cold = _run(script, tmp_path / "caches")
    assert (tmp_path / "caches" / "pytensor" / "numba").is_dir()  # the first run filled the cache
    warm = _run(script, tmp_path / "caches")
    # nutpie's two C entry points, the kernel's (pymsem.compile.nutpie_kernel) and the graph's
    # wrappers (pymsem.compile.nutpie_cache), compile in the first process and load from the
    # cache in the second.
    for route in ("kernel", "graph"):
        assert cold.pop(f"{route}-from-cache") == "0" and warm.pop(f"{route}-from-cache") == "2"
    assert set(cold) == {"kernel", "graph", "pymc"}
    assert cold == warm
    # Two routes to the same posterior, not the same bits: their floating-point operations differ.
    assert cold["kernel"] != cold["graph"]


def test_cached_wrappers_give_the_draws_of_nutpies_own() -> None:
    """pymsem's cacheable wrappers call the same compiled log density as nutpie's closures."""
    import numpy as np
    import nutpie

    import pymsem as ms
    from pymsem.compile.nutpie_cache import compile_nutpie
    from pymsem.compile.reproducible import ieee_numba
    from pymsem.sample import _initial_point

    data = ms.datasets.load_school().query("schid <= 20")
    compiled = ms.tutorial.model1(data).compile()
    init = _initial_point(compiled, None)
    with ieee_numba():
        ours = compile_nutpie(compiled.pymc_model, init)
        theirs = nutpie.compile_pymc_model(
            compiled.pymc_model, backend="numba", initial_points=init, jitter_rvs=set()
        )
        a, b = (
            nutpie.sample(n, draws=60, tune=60, chains=1, seed=4, progress_bar=False) for n in (ours, theirs)
        )
    assert set(a.posterior.data_vars) == set(b.posterior.data_vars)
    for v in a.posterior.data_vars:
        assert np.array_equal(a.posterior[v].values, b.posterior[v].values), v
    # New data of the same kind is a change of the record, which both wrappers read the same way.
    x = ours.with_data(**{k.name: k.get_value() for k in ours.shared_var_keys})
    assert x.user_data.dtype == ours.user_data.dtype
