"""PyTensor settings that pymsem's compiled models rely on."""

from __future__ import annotations

__all__ = ["no_c_blas"]


def no_c_blas() -> None:
    """Tell PyTensor not to look for a BLAS library for its C backend, unless the user set one.

    pymsem's samplers run PyTensor's numba (or JAX) backend, which brings its own BLAS; the C
    backend compiles only PyMC's initial-point functions, where BLAS plays no part. Left
    unset, PyTensor's first C compilation probes the system for a BLAS library (several
    seconds) and, on a pip-installed PyTensor without one, warns that BLAS operations "will be
    severely degraded", which is not true of anything pymsem runs. A value the user gave in
    ``PYTENSOR_FLAGS`` or ``~/.pytensorrc`` is kept.
    """
    import pytensor
    import pytensor.link.c.cmodule  # registers the blas__ldflags option

    try:
        pytensor.config.fetch_val_for_key("blas__ldflags")
    except KeyError:
        pytensor.config.blas__ldflags = ""
