"""Sampling: NUTS through nutpie (default) or PyMC, started in the main mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pymsem import reuse
from pymsem.compile.build import CompiledModel
from pymsem.compile.reproducible import ieee_numba

__all__ = ["SAMPLERS", "SamplingRun", "sample_compiled"]

#: ``nutpie`` (default, numba on CPU), ``pymc`` (PyMC's NUTS), and PyMC's JAX samplers
#: ``numpyro`` / ``blackjax`` (optional extra ``pymsem[jax]``; the path for GPUs).
SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")


@dataclass
class SamplingRun:
    """The posterior and how it was obtained."""

    idata: Any  # xarray.DataTree
    sampler: str
    draws: int
    tune: int
    chains: int
    seed: int | None
    compile_seconds: float
    sampling_seconds: float
    #: The compiled log density came from an earlier model of the same shape (see pymsem.reuse).
    reused_compiled: bool = False
    #: What nutpie called: ``"kernel"`` (the whole-model kernel, compiled once per machine for
    #: every model it covers, :mod:`pymsem.compile.nutpie_kernel`), ``"graph"`` (PyTensor's
    #: compiled log density of this model) or ``""`` (another sampler).
    log_density: str = ""


def _initial_point(compiled: CompiledModel, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """Data-based starting values; with ``rng``, jittered slightly (not enough to flip a sign)."""
    model = compiled.pymc_model
    free = {v.name for v in model.free_RVs}
    out = {}
    for name, val in compiled.initial_values.items():
        if name not in free:
            continue
        val = np.asarray(val, dtype=float)
        if rng is not None:
            kind = name.rsplit("_", 1)[0]
            if kind in ("lv_sd", "resid_sd"):
                val = val * np.exp(rng.uniform(-0.2, 0.2, val.shape))
            elif kind in ("path", "lv_cor", "resid_cor"):
                val = val + rng.uniform(-0.1, 0.1, val.shape)
            elif kind == "loading":
                val = val * np.exp(rng.uniform(-0.1, 0.1, val.shape))
        out[name] = val
    # Non-centered standard-normal variables (cluster slopes, latent scores) start near, not at, 0:
    # at exactly 0 the gradient with respect to their scales and correlations vanishes, and nutpie
    # refuses an initial point with a zero gradient entry.
    fixed = np.random.default_rng(20260101)
    # Centered cluster slopes likewise start near their mean's starting value.
    raw = [
        rv for rv in model.free_RVs if (rv.name.endswith("_raw") or rv.name == "slope") and rv.name not in out
    ]
    if raw:
        for rv in raw:
            shape = _value_shape(model, rv)
            noise = (rng or fixed).standard_normal(shape)
            if rv.name == "slope":
                idx = [r.mean_index for r in compiled.structure.random_slopes]
                mean = np.asarray(out["path_w"])[idx] if "path_w" in out else 0.0
                out[rv.name] = mean + 0.02 * noise
            else:
                out[rv.name] = 0.1 * noise
    return out


def _drop_untraced(compiled: CompiledModel, idata: Any) -> Any:
    """The trace without the per-cell latent responses of ordinal data.

    nutpie keeps every free variable's draws (its ``var_names`` selects among the others
    only), and results never read these: one value per ordinal cell and draw. Dropping them
    keeps the fit object, and what users save of it, small.
    """
    skip = [v for v in getattr(compiled.formulation, "untraced", ()) if v in idata.posterior]
    if skip:
        post = idata.posterior.to_dataset()
        dims = {d for v in skip for d in post[v].dims} - {"chain", "draw"}
        idata["posterior"] = post.drop_dims(sorted(dims))
    return idata


def _value_shape(model: Any, rv: Any) -> tuple[int, ...]:
    """The shape of a variable, from its dimensions' coordinates.

    Not from ``model.initial_point()``: that compiles a C function (a scan, for LKJ priors),
    which costs seconds and makes PyTensor look for a BLAS library it then warns about.
    """
    dims = model.named_vars_to_dims.get(rv.name)
    if dims and all(d in model.coords for d in dims):
        return tuple(len(model.coords[d]) for d in dims)
    return tuple(model.initial_point()[model.rvs_to_values[rv].name].shape)


def sample_compiled(
    compiled: CompiledModel,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    cores: int | None = None,
    sampler: str = "nutpie",
    progress: bool = True,
    target_accept: float = 0.8,
    save_warmup: bool = False,
    backend: str = "numba",
) -> SamplingRun:
    """Run NUTS on a compiled model.

    Chains start from data-based values (see :func:`pymsem.compile.scales.initial_values`)
    with a small jitter, so that all chains begin in the main mode of the
    marker-identified model. Warm-up draws are kept only with ``save_warmup``. ``backend``
    (``"numba"`` or ``"jax"``) is the compiler of nutpie's log density: JAX compiles in
    seconds but each gradient costs more on CPU.
    """
    if backend not in ("numba", "jax"):
        raise ValueError(f"Unknown backend {backend!r}; use 'numba' or 'jax'.")
    if backend == "jax" and sampler == "nutpie":
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise ImportError("backend='jax' needs jax: pip install 'pymsem[jax]'.")
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}.")
    for name, v in (("draws", draws), ("tune", tune), ("chains", chains)):
        if not isinstance(v, (int, np.integer)) or v < (1 if name != "tune" else 0):
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    model = compiled.pymc_model
    if sampler == "nutpie":
        import nutpie

        from pymsem.compile import nutpie_cache

        t0 = time.perf_counter()
        init = _initial_point(compiled, None)
        # The model's variables are in the key: terms a user adds to ``model.build()`` after a
        # fit (a potential, a deterministic) make it a different model to compile.
        key = ("nutpie", backend, tuple(sorted(init)), tuple(sorted(model.named_vars)))
        cache = compiled.sampler_cache
        reused = False
        if key not in cache and backend == "numba":
            cache[key] = _whole_model_kernel(compiled, init)
        if key not in cache or cache[key] is None:
            # pymsem.reuse swaps the data of numba-compiled functions only.
            cache[key] = reuse.find(model, init) if backend == "numba" else None
            reused = cache[key] is not None
            if not reused:
                with ieee_numba():
                    if backend == "numba" and nutpie_cache.available():
                        cache[key] = nutpie_cache.compile_nutpie(model, init)
                    else:
                        cache[key] = nutpie.compile_pymc_model(
                            model,
                            backend=backend,
                            initial_points=init,
                            jitter_rvs=set(),
                        )
                if backend == "numba":
                    reuse.remember(model, init, cache[key])
        nut = cache[key]
        t1 = time.perf_counter()
        # nutpie runs one chain per thread; each chain's gradient calls BLAS (numba's dot), and
        # OpenBLAS's own thread pool on top of that oversubscribed the cores: 2 chains on 2 cores
        # cost 4.8 instead of 1.2 ms per gradient at 1,000 clusters (bench/results/parallel_chains.md).
        with (
            threadpool_limits(limits=1, user_api="blas"),
            _posterior_rows_only(not save_warmup),
            ieee_numba(),
        ):
            idata = nutpie.sample(
                nut,
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores or min(chains, _n_cores()),
                seed=seed,
                progress_bar=progress,
                target_accept=target_accept,
                adaptation=_adaptation(compiled),
                save_warmup=save_warmup,
            )
        t2 = time.perf_counter()
        idata = _drop_untraced(compiled, idata)
        route = "kernel" if getattr(nut, "flat", None) is not None else "graph"
        return SamplingRun(idata, sampler, draws, tune, chains, seed, t1 - t0, t2 - t1, reused, route)
    else:
        import importlib.util

        import pymc as pm

        jax = sampler != "pymc"
        missing = [m for m in ("jax", sampler) if jax and importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(
                f"sampler={sampler!r} needs {' and '.join(missing)}: pip install 'pymsem[jax]' "
                f"(GPU users: a CUDA build of jax)."
            )
        # PyMC's own NUTS takes one jittered start per chain; its JAX samplers one start for all.
        rng = np.random.default_rng(seed)
        inits = (
            _initial_point(compiled, None) if jax else [_initial_point(compiled, rng) for _ in range(chains)]
        )
        # Chain processes start from a fresh interpreter ("spawn"), not a fork: a fork copies
        # whatever nutpie or numba threads left behind. Spawned, not forked from a forkserver that
        # may have started before ieee_numba, so that each chain reads the flags its compile needs
        # from the environment (pymsem.compile.reproducible).
        extra = (
            {}
            if jax
            else {"cores": cores or min(chains, _n_cores()), "init": "adapt_diag", "mp_ctx": "spawn"}
        )
        t0 = t1 = time.perf_counter()
        with model, ieee_numba():
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                random_seed=seed,
                initvals=inits,
                progressbar=progress,
                target_accept=target_accept,
                nuts_sampler=sampler,
                compute_convergence_checks=False,
                discard_tuned_samples=not save_warmup,
                **extra,
            )
        t2 = time.perf_counter()
    return SamplingRun(_drop_untraced(compiled, idata), sampler, draws, tune, chains, seed, t1 - t0, t2 - t1)


def _whole_model_kernel(compiled: CompiledModel, init: dict[str, np.ndarray]) -> Any:
    """nutpie's model on the whole-model kernel (nothing compiled per model), where it covers the model.

    ``None`` for the models it does not cover (:func:`pymsem.compile.kernel.flat_model.flat_model`
    says why), which PyTensor's compiled graph samples instead.
    """
    from pymsem.compile.kernel.flat_model import FlatModel, flat_model

    flat = flat_model(compiled, init)
    if not isinstance(flat, FlatModel):
        return None
    from pymsem.compile import nutpie_kernel  # compiles (or loads) its C entry points on import

    if not nutpie_kernel.available():
        return None
    return nutpie_kernel.kernel_model(compiled.pymc_model, flat)


@contextmanager
def _posterior_rows_only(active: bool) -> Iterator[None]:
    """Convert only the kept draws of nutpie's trace to ArviZ.

    nutpie stores the warm-up draws in its Arrow trace whatever ``save_warmup`` says, and its
    conversion to ArviZ allocates a NumPy array for them before dropping them: with 20,000
    parameters (10,000 clusters' slopes) that was 0.64 GB of a 2.6 GB peak. The warm-up rows
    are sliced off (no copy) before nutpie's own conversion runs. If a nutpie version lacks the
    private converter this wraps, sampling runs unchanged.
    """
    import sys

    import nutpie  # noqa: F401  (registers the submodule; ``nutpie.sample`` is the function)

    nutpie_sample = sys.modules["nutpie.sample"]
    original = getattr(nutpie_sample, "_arrow_to_arviz", None)
    if not active or original is None:
        yield
        return

    def convert(draw_batches: list, stat_batches: list, *args: Any, **kwargs: Any) -> Any:
        draws, stats = [], []
        for d, st in zip(draw_batches, stat_batches, strict=True):
            n_tune = int(np.asarray(st.column("tuning").to_numpy()).sum())
            draws.append(d.slice(n_tune))
            stats.append(st.slice(n_tune))
        return original(draws, stats, *args, **kwargs)

    nutpie_sample._arrow_to_arviz = convert
    try:
        yield
    finally:
        nutpie_sample._arrow_to_arviz = original


def _adaptation(compiled: CompiledModel) -> str:
    """nutpie's mass-matrix adaptation for this model.

    The grand means are strongly correlated a posteriori (they share the between-level
    factors); a low-rank mass matrix takes that correlation out (on Model 2 it lifted the
    intercepts' bulk ESS and brought R-hat below 1.01 where diag did not). Its warm-up cost
    grows with the dimension, so models with per-cluster or per-student variables use diag.
    """
    cache = compiled.sampler_cache
    if "adaptation" not in cache:  # the initial point compiles a function: do it once
        n = sum(int(np.prod(v.shape)) for v in compiled.pymc_model.initial_point().values())
        cache["adaptation"] = "low_rank" if n <= 150 else "diag"
    return cache["adaptation"]


def _n_cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
