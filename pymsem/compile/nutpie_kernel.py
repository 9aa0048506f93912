"""nutpie sampling the whole-model kernel through fixed C entry points: nothing to compile per model.

nutpie's numba backend calls a model through two C functions, the log density with its gradient
and the expansion to traced values, each given a pointer to the model's data. For models the
whole-model kernel covers (:func:`pymsem.compile.kernel.flat_model.flat_model`), those functions
are the same for every model of a kind: :func:`_logp` (no random slopes), :func:`_logp_slopes`
(one per cluster-loop variant) and :func:`_expand` read the model's tables and data through the
pointer. Each is compiled on first use, once per machine, and cached on disk, so a new model,
or new data, costs no compilation at all (PyTensor's route compiles a log density per model:
about 25 s for a new Model 2-sized model on a warm machine, ``bench/results/compile_kernel.md``),
and a model waits only for the entry point it runs.

Uses nutpie's private sampler classes (``nutpie._lib``, as ``nutpie.compile_pymc`` does);
:func:`available` says whether the installed nutpie has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numba
import numpy as np
from numba import carray, types
from nutpie.sample import CompiledModel

from pymsem.compile.kernel.flat_model import FlatModel
from pymsem.compile.kernel.model_numba import (
    model_expand,
    model_value_and_grad,
    moderated_expand,
    slopes_model_value_and_grad,
)
from pymsem.compile.nutpie_cache import _as_voidptr

__all__ = ["KernelModel", "available", "entry_point", "kernel_model", "value_and_grad"]

#: Arrays passed through the data pointer: the kernel's (FlatModel.arrays), then expand_index.
_N_ARRAYS = 20
#: Per array: address and three dimensions (unused ones 1).
_META = 4 * _N_ARRAYS

_LOGP_SIG = types.int64(
    types.uint64, types.CPointer(types.double), types.CPointer(types.double),
    types.CPointer(types.double), types.voidptr,
)  # fmt: skip
_EXPAND_SIG = types.int64(
    types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double), types.voidptr
)


@numba.njit(cache=True, fastmath=False, nogil=True)
def _arrays(meta: np.ndarray):
    """The tables and data from the metadata record (see :func:`_record`)."""
    pi = carray(_as_voidptr(meta[0]), (int(meta[1]),), np.int64)
    pf = carray(_as_voidptr(meta[4]), (int(meta[5]),), np.float64)
    ispec = carray(_as_voidptr(meta[8]), (int(meta[9]),), np.int64)
    fspec = carray(_as_voidptr(meta[12]), (int(meta[13]),), np.float64)
    ws = carray(_as_voidptr(meta[16]), (int(meta[17]), int(meta[18])), np.float64)
    sizes = carray(_as_voidptr(meta[20]), (int(meta[21]),), np.float64)
    counts = carray(_as_voidptr(meta[24]), (int(meta[25]),), np.float64)
    means = carray(_as_voidptr(meta[28]), (int(meta[29]), int(meta[30])), np.float64)
    scatter = carray(_as_voidptr(meta[32]), (int(meta[33]), int(meta[34]), int(meta[35])), np.float64)
    totals = carray(_as_voidptr(meta[36]), (int(meta[37]),), np.float64)
    Y = carray(_as_voidptr(meta[40]), (int(meta[41]), int(meta[42])), np.float64)
    idx = carray(_as_voidptr(meta[44]), (int(meta[45]),), np.int64)
    Z2 = carray(_as_voidptr(meta[48]), (int(meta[49]), int(meta[50])), np.float64)
    size_index = carray(_as_voidptr(meta[52]), (int(meta[53]),), np.int64)
    cells = carray(_as_voidptr(meta[56]), (int(meta[57]), int(meta[58])), np.int64)
    si = carray(_as_voidptr(meta[60]), (int(meta[61]),), np.int64)
    sf = carray(_as_voidptr(meta[64]), (int(meta[65]),), np.float64)
    S = carray(_as_voidptr(meta[68]), (int(meta[69]), int(meta[70])), np.float64)
    z = carray(_as_voidptr(meta[72]), (int(meta[73]), int(meta[74])), np.float64)
    index = carray(_as_voidptr(meta[76]), (int(meta[77]),), np.int64)
    return (
        pi, pf, ispec, fspec, ws, sizes, counts, means, scatter, totals, Y, idx, Z2, size_index, cells,
        si, sf, S, z, index,
    )  # fmt: skip


@numba.njit(cache=True, fastmath=False, nogil=True)
def _store(f: float, g: np.ndarray, out: np.ndarray, logp: np.ndarray) -> int:
    """Write the log density and gradient for nutpie; its return code (3: a gradient entry is
    not finite, 4: the value is not, 0: fine)."""
    logp[()] = f
    # One pass, four lanes: g * 0 is 0 where g is finite and NaN where it is not, so the sums
    # say whether every entry is finite. numba's ``out[:] = g`` and an early-exit check cost
    # 7x as much on the missing cells' thousands of entries (bench/results/kernel_gradient.md).
    n = g.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    i = 0
    while i + 4 <= n:
        a, b, c, d = g[i], g[i + 1], g[i + 2], g[i + 3]
        out[i], out[i + 1], out[i + 2], out[i + 3] = a, b, c, d
        s0 += a * 0.0
        s1 += b * 0.0
        s2 += c * 0.0
        s3 += d * 0.0
        i += 4
    while i < n:
        out[i] = g[i]
        s0 += g[i] * 0.0
        i += 1
    if not np.isfinite(s0 + s1 + s2 + s3):
        return 3
    if not np.isfinite(f):
        return 4
    return 0


@numba.njit(cache=True, fastmath=False, nogil=True)
def _views(dim, x_, out_, logp_, user_data_):  # type: ignore[no-untyped-def]
    """An entry point's arguments as arrays: the point, the gradient's and the value's outputs,
    and the model's tables and data (:func:`_arrays`)."""
    x = carray(x_, (dim,))
    out = carray(out_, (dim,))
    logp = carray(logp_, ())
    return x, out, logp, _arrays(carray(user_data_, (_META,), np.uint64))


def _logp_py(dim, x_, out_, logp_, user_data_):  # type: ignore[no-untyped-def]
    try:
        x, out, logp, a = _views(dim, x_, out_, logp_, user_data_)
        f, g = model_value_and_grad(
            x, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
            a[14],
        )  # fmt: skip
        return _store(f, g, out, logp)
    except Exception:
        return 1


@cache
def _logp() -> Any:
    """The entry point for models without random slopes, compiled (or loaded) on first use."""
    return numba.cfunc(_LOGP_SIG, cache=True)(_logp_py)


def _slopes_entry(want: bool, fixed: int, moderated: int) -> Any:
    """The Python source of a slopes entry point; ``want``, ``fixed`` and ``moderated`` are its
    closure's constants, which numba compiles in (and keys its cache on). The kernel's outer
    layers are inlined here, so numba prunes the other variants' branches before typing."""

    def logp_slopes(dim, x_, out_, logp_, user_data_):  # type: ignore[no-untyped-def]
        try:
            x, out, logp, a = _views(dim, x_, out_, logp_, user_data_)
            f, g = slopes_model_value_and_grad(
                x, a[0], a[1], a[2], a[3], a[5], a[6], a[9], a[10], a[11], a[12], a[13], a[14], a[15],
                a[16], a[17], a[18], want, fixed, moderated,
            )  # fmt: skip
            return _store(f, g, out, logp)
        except Exception:
            return 1

    return logp_slopes


def _logp_slopes(want: bool, fixed: int, moderated: int = 0) -> Any:
    """The entry point for models with random slopes, with sampled missing cells or not
    (``want``), the cluster loop's factor count ``fixed``
    (:func:`~pymsem.compile.kernel.slopes_numba.loop_size`) and ``moderated``
    (:attr:`~pymsem.compile.kernel.flat_model.FlatModel.slopes_variant`: 0 for slopes without
    moderators), compiled (or loaded) on first use: models without slopes do not wait for the
    slopes' code, and a model compiles only the one cluster loop it runs."""
    return _slopes_cfunc(bool(want), int(fixed), int(moderated))


@cache
def _slopes_cfunc(want: bool, fixed: int, moderated: int) -> Any:
    """One compiled slopes entry point per variant (normalized arguments: one cache key each)."""
    return numba.cfunc(_LOGP_SIG, cache=True)(_slopes_entry(want, fixed, moderated))


def entry_point(flat: FlatModel) -> Any:
    """The compiled C entry point of ``flat``'s log density and gradient."""
    return _logp_slopes(*flat.slopes_variant) if flat.slopes else _logp()


def _expand_py(dim, expanded, x_, out_, user_data_):  # type: ignore[no-untyped-def]
    try:
        x = carray(x_, (dim,))
        out = carray(out_, (expanded,))
        meta = carray(user_data_, (_META,), np.uint64)
        arrays = _arrays(meta)
        model_expand(x, arrays[0], arrays[1], arrays[19], out)
    except Exception:
        return -2
    return 0


def _expand_moderated_py(dim, expanded, x_, out_, user_data_):  # type: ignore[no-untyped-def]
    try:
        x = carray(x_, (dim,))
        out = carray(out_, (expanded,))
        meta = carray(user_data_, (_META,), np.uint64)
        a = _arrays(meta)
        moderated_expand(x, a[0], a[1], a[19], out, a[2], a[3], a[15], a[10], a[12], a[14])
    except Exception:
        return -2
    return 0


def _expand(moderated: bool = False) -> Any:
    """The entry point that expands a point to the traced values (the moderators' values
    computed where slopes are moderated), compiled (or loaded) on first use."""
    return _expand_cfunc(bool(moderated))


@cache
def _expand_cfunc(moderated: bool) -> Any:
    """One compiled expansion per kind (normalized argument: one cache key each)."""
    return numba.cfunc(_EXPAND_SIG, cache=True)(_expand_moderated_py if moderated else _expand_py)


def available() -> bool:
    """Whether the installed nutpie has the classes :class:`KernelModel` builds on."""
    try:
        from nutpie import _lib
        from nutpie.compile_pymc import _prepare_dims_and_coords  # noqa: F401
    except ImportError:
        return False
    return all(hasattr(_lib, n) for n in ("LogpFunc", "ExpandFunc", "PyMcModel", "PySampler", "PyVariable"))


def _record(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """Each array's address and dimensions, as :func:`_arrays` reads them."""
    meta = np.ones(_META, dtype=np.uint64)
    for k, a in enumerate(arrays):
        meta[4 * k] = a.ctypes.data
        meta[4 * k + 1 : 4 * k + 1 + a.ndim] = a.shape
    return meta


def _contiguous(flat: FlatModel) -> tuple[np.ndarray, ...]:
    """The arrays the record points into: contiguous, read-only."""
    arrays = tuple(
        np.ascontiguousarray(a, dtype=np.int64 if a.dtype.kind in "iu" else np.float64)
        for a in (*flat.arrays, flat.expand_index)
    )
    for a in arrays:
        a.flags.writeable = False
    return arrays


def value_and_grad(flat: FlatModel, x: np.ndarray) -> tuple[float, np.ndarray, int]:
    """The log density and gradient at ``x`` through the entry point nutpie calls, and its
    return code (0: fine)."""
    import ctypes

    arrays = _contiguous(flat)
    meta = _record(arrays)
    x = np.ascontiguousarray(x, dtype=np.float64)
    grad, lp = np.full_like(x, np.nan), np.full(1, np.nan)
    ptr = ctypes.POINTER(ctypes.c_double)
    code = entry_point(flat).ctypes(
        len(x), x.ctypes.data_as(ptr), grad.ctypes.data_as(ptr), lp.ctypes.data_as(ptr),
        ctypes.c_void_p(meta.ctypes.data),
    )  # fmt: skip
    return float(lp[0]), grad, int(code)


def kernel_model(model: Any, flat: FlatModel) -> Any:
    """nutpie's compiled model for ``flat`` (from the ``pm.Model`` ``model``, for dims and coords)."""
    from nutpie.compile_pymc import _prepare_dims_and_coords

    slices, o = [], 0
    for s in flat.shapes:
        n = int(np.prod(s))
        slices.append(slice(o, o + n))
        o += n
    dims, coords = _prepare_dims_and_coords(model, (flat.names, slices, flat.shapes), flat.reparameterized)
    arrays = _contiguous(flat)
    entry_point(flat)  # compiled (or loaded) now, with the model, not when sampling starts
    _expand(flat.moderated)
    return KernelModel(
        flat=flat,
        arrays=arrays,
        user_data=_record(arrays),
        _coords=coords,
        dims=dims,
        reparameterized_names=flat.reparameterized,
    )


@dataclass(frozen=True)
class KernelModel(CompiledModel):
    """A nutpie compiled model whose log density is the whole-model kernel."""

    flat: FlatModel
    arrays: tuple[np.ndarray, ...]  # kept alive: the record points into them
    user_data: np.ndarray
    _coords: dict[str, Any]
    _transform_adapt_args: dict | None = None

    @property
    def n_dim(self) -> int:
        return self.flat.n_dim

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(zip(self.flat.names, self.flat.shapes, strict=True))

    @property
    def coords(self) -> dict[str, Any]:
        return self._coords

    @property
    def logp_cfunc(self) -> Any:
        """The C entry point nutpie calls for the log density and gradient of this model."""
        return entry_point(self.flat)

    def _initial_point(self, seed: Any = None) -> np.ndarray:
        return self.flat.x0.copy()

    def _make_sampler(self, settings: Any, init_mean: Any, cores: int, progress_type: Any, *args: Any) -> Any:
        from nutpie import _lib

        return _lib.PySampler.from_pymc(settings, cores, self._make_model(init_mean), progress_type, *args)

    def _make_model(self, init_mean: Any) -> Any:
        from nutpie import _lib

        n_expanded = self.flat.n_dim + len(self.flat.expand_index)
        address = self.user_data.ctypes.data
        expand_fn = _lib.ExpandFunc(
            self.n_dim, n_expanded, _expand(self.flat.moderated).address, address, self
        )
        logp_fn = _lib.LogpFunc(self.logp_cfunc.address, address, self)
        coords = dict(self._coords)
        dim_sizes = {name: len(vals) for name, vals in coords.items()}
        dims = dict(self.dims or {})
        variables = _lib.PyVariable.new_variables(
            self.flat.names, ["float64"] * len(self.flat.names), self.flat.shapes, dim_sizes, dims
        )
        outer = self._transform_adapt_args or {}

        def make_adapter(*args: Any, **kwargs: Any) -> Any:
            from nutpie.transform_adapter import make_transform_adapter

            return make_transform_adapter(**outer)(*args, **kwargs, logp_fn=None)

        return _lib.PyMcModel(
            logp_fn, expand_fn, variables, self.n_dim, dim_sizes, coords, self._initial_point, make_adapter
        )
