"""Compiling for reproducible draws: the same seed gives the same draws, whatever the cache state.

PyTensor compiles numba functions with fastmath by default (reassociation, contraction into
fused multiply-adds, approximate functions). Under those flags the rounding of a compiled function
depends on how LLVM sees it: a graph compiled afresh inlines its kernels and contracts across
them, while the same graph assembled from PyTensor's on-disk numba cache does not. The two agree
to one ulp in a few gradient entries, and NUTS, a chaotic map over hundreds of warm-up steps,
turns one ulp into different draws: the same seed gave different PyMC-NUTS draws on a machine
whose compile caches were empty than on one whose caches were warm.

Without fastmath every operation rounds as IEEE 754 says, so inlining cannot change a result, and a
compiled function gives the same bits whether it was compiled now or loaded from the cache
(``tests/test_reproducible.py`` checks this in new processes with empty and warm caches). The cost
in gradient time is measured in ``bench/fastmath.py`` (``bench/results/fastmath.csv``).

What is promised: the same seed, sampler, data, package versions and machine give the same draws,
in any process and whatever the cache state. Across machines, BLAS kernels chosen for a different
processor (OpenBLAS picks them at run time) may round differently; there the promise is the same
posterior within Monte Carlo error, not the same bits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["IEEE_FLAGS", "ieee_numba"]

#: PyTensor flags under which pymsem compiles every function it samples or evaluates, its own
#: fused kernels (``logdet_quad``, ``cluster_woodbury``) included: with fast-math flags on the
#: kernels alone, Model 3's draws still differed between a cold and a warm cache.
IEEE_FLAGS = {"numba__fastmath": False}


@contextmanager
def ieee_numba() -> Iterator[None]:
    """Compile PyTensor functions without fastmath, in this process and in chain processes.

    PyMC's NUTS runs chains in new processes that unpickle the step method and compile its
    functions again; they read PyTensor's flags from the environment when they import it, so
    ``PYTENSOR_FLAGS`` carries the flags for processes started inside this block (later entries
    override earlier ones, so a user's own flags are kept).
    """
    import pytensor

    before = os.environ.get("PYTENSOR_FLAGS")
    ours = ",".join(f"{k}={v}" for k, v in IEEE_FLAGS.items())
    os.environ["PYTENSOR_FLAGS"] = f"{before},{ours}" if before else ours
    try:
        with pytensor.config.change_flags(**IEEE_FLAGS):
            yield
    finally:
        if before is None:
            os.environ.pop("PYTENSOR_FLAGS", None)
        else:
            os.environ["PYTENSOR_FLAGS"] = before
