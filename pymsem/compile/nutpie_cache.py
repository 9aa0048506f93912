"""nutpie's compiled model with C entry points that numba caches on disk.

nutpie calls a model's log density through two numba ``cfunc`` wrappers (log density with
gradient, and the expansion to traced values). nutpie builds them as closures over the
model's shared data, which numba refuses to cache ("uses dynamic globals"), so every
process compiles them again, and compiling a wrapper compiles the whole log density it
calls once more, from LLVM IR: about 10-15 s of the 11-16 s a warm compile of tutorial
Model 2 took, although PyTensor had the log density itself in its cache
(``bench/results/compile_time.md``).

Here the wrappers are generated source with no closure: the shared arrays are read from
nutpie's user-data record through byte offsets written into the source, and the source is
registered under a key made of PyTensor's key for the compiled graph, so numba's cache
(PyTensor's locator, in ``base_compiledir``) finds the wrapper in the next process and in
the next model whose graph is the same computation (new data of the same kind included).
The record, and so ``CompiledPyMCModel.with_data`` and :mod:`pymsem.reuse`, are nutpie's own.

Floating point is unchanged: the wrappers only copy values, and the log density they call
is the one PyTensor compiled (IEEE flags: :mod:`pymsem.compile.reproducible`).
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["available", "compile_nutpie"]

#: nutpie's functions the wrappers are built around (private API of nutpie 0.16).
_NUTPIE_API = ("_make_functions", "_prepare_dims_and_coords", "_wrap_with_lock", "make_user_data",
               "CompiledPyMCModel")  # fmt: skip

#: Bumped whenever the generated source changes, so that stale cache entries are not used.
_WRAPPER_VERSION = 2


@intrinsic
def _as_voidptr(typingctx: Any, address: Any) -> Any:
    """A ``void*`` from an integer address."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


def available() -> bool:
    """Whether the installed nutpie has the functions :func:`compile_nutpie` builds on."""
    try:
        import nutpie.compile_pymc as ncp
    except ImportError:
        return False
    return all(hasattr(ncp, name) for name in _NUTPIE_API)


def compile_nutpie(model: Any, initial_points: dict[str, np.ndarray]) -> Any:
    """nutpie's ``CompiledPyMCModel`` for ``model`` (numba backend), its wrappers cached on disk.

    Equivalent to ``nutpie.compile_pymc_model(model, backend="numba",
    initial_points=initial_points, jitter_rvs=set())``.
    """
    import nutpie.compile_pymc as ncp
    from pymc.initial_point import make_initial_point_fn

    point_fn = make_initial_point_fn(
        model=model,
        overrides=initial_points,
        default_strategy="support_point",
        jitter_rvs=set(),
        return_transformed=True,
    )
    point_fn = ncp._wrap_with_lock(point_fn)
    (n_dim, n_expanded, logp_fn_pt, expand_fn_pt, initial_point_fn, shape_info, reparameterized) = (
        ncp._make_functions(
            model,
            mode="NUMBA",
            compute_grad=True,
            join_expanded=True,
            pymc_initial_point_fn=point_fn,
            var_names=None,
        )
    )
    shared_data: dict[str, np.ndarray] = {}
    shared_var_keys: dict[Any, str] = {}
    for i, var in enumerate(dict.fromkeys([*logp_fn_pt.get_shared(), *expand_fn_pt.get_shared()])):
        # Keys name the record's fields; positional keys (not nutpie's random ones) keep the
        # record's layout, and so the wrappers' source, the same from one process to the next.
        key = f"s{i}"
        value = np.array(var.get_value(), order="C", copy=True)
        value.flags.writeable = False
        shared_data[key] = value
        shared_var_keys[var] = key
    user_data = ncp.make_user_data(shared_var_keys, shared_data)
    logp = _wrapper("logp", logp_fn_pt, shared_var_keys, shared_data, user_data.dtype)
    expand = _wrapper("expand", expand_fn_pt, shared_var_keys, shared_data, user_data.dtype)
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info, reparameterized)
    return ncp.CompiledPyMCModel(
        _n_dim=n_dim,
        dims=dims,
        _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
        compiled_logp_func=logp,
        compiled_expand_func=expand,
        initial_point_func=initial_point_fn,
        shared_data=shared_data,
        shared_var_keys=shared_var_keys,
        user_data=user_data,
        n_expanded=n_expanded,
        shape_info=shape_info,
        logp_func=logp_fn_pt,
        expand_func=expand_fn_pt,
        reparameterized_names=reparameterized,
    )


def _offset(record: np.dtype, *path: str) -> int:
    """Byte offset of a (nested) field of nutpie's user-data record."""
    offset = 0
    dtype = record
    for name in path:
        dtype, at = dtype.fields[name][:2]
        offset += at
    return offset


def _wrapper(
    kind: str,
    fn_pt: Any,
    shared_var_keys: dict[Any, str],
    shared_data: dict[str, np.ndarray],
    record: np.dtype,
) -> Any:
    """The ``cfunc`` nutpie calls for ``fn_pt`` (``kind``: ``"logp"`` or ``"expand"``)."""
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS, compile_numba_function_src

    jit_fn = fn_pt.vm.jit_fn
    # Every field of the record is 8 bytes wide, so offsets index a uint64 view of it.
    assert record.itemsize % 8 == 0
    lines, args = [], []
    for var in fn_pt.get_shared():
        key = shared_var_keys[var]
        value = shared_data[key]
        data = _offset(record, "shared", "data", key) // 8
        if value.ndim:
            shape_at = _offset(record, "shared", "shape", key) // 8
            shape = "(" + "".join(f"int(meta[{shape_at + d}]), " for d in range(value.ndim)) + ")"
        else:
            shape = "()"
        lines.append(f"        {key} = carray(as_voidptr(meta[{data}]), {shape}, np.{value.dtype.name})")
        args.append(key)
    call = ", ".join(["x", *args])
    graph_key = CACHED_SRC_FUNCTIONS.get(jit_fn.py_func)
    signature = repr(
        (kind, _WRAPPER_VERSION, graph_key, str(record), [shared_data[a].dtype.str for a in args])
    )
    name = f"nutpie_{kind}_{sha256(signature.encode()).hexdigest()[:32]}"
    if kind == "logp":
        sig = types.int64(
            types.uint64, types.CPointer(types.double), types.CPointer(types.double),
            types.CPointer(types.double), types.voidptr,
        )  # fmt: skip
        src = "\n".join(
            [
                f"def {name}(dim, x_, out_, logp_, user_data_):",
                "    try:",
                "        x = carray(x_, (dim,))",
                "        out = carray(out_, (dim,))",
                "        logp = carray(logp_, ())",
                f"        meta = carray(user_data_, ({record.itemsize // 8},), np.uint64)",
                *lines,
                f"        logp_val, grad = jit_fn({call})",
                "        if grad.shape[0] != dim:",
                "            return -1",
                "        logp[()] = logp_val",
                "        out[...] = grad",
                "        if not np.all(np.isfinite(out)):",
                "            return 3",
                "        if not np.isfinite(logp_val):",
                "            return 4",
                "    except Exception:",
                "        return 1",
                "    return 0",
            ]
        )
    else:
        sig = types.int64(
            types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
            types.voidptr,
        )  # fmt: skip
        src = "\n".join(
            [
                f"def {name}(dim, expanded, x_, out_, user_data_):",
                "    try:",
                "        x = carray(x_, (dim,))",
                "        out = carray(out_, (expanded,))",
                f"        meta = carray(user_data_, ({record.itemsize // 8},), np.uint64)",
                *lines,
                f"        (values,) = jit_fn({call})",
                "        if values.shape[0] != expanded:",
                "            return -1",
                "        out[...] = values",
                "    except Exception:",
                "        return -2",
                "    return 0",
            ]
        )
    # numba rebuilds a cached function's environment from the module named here.
    env = {
        "__name__": __name__,
        "np": np,
        "carray": numba.carray,
        "as_voidptr": _as_voidptr,
        "jit_fn": jit_fn,
    }
    # Without PyTensor's key for the graph (an Op without a cache key) nothing identifies the
    # computation across processes: compile the wrapper here, uncached.
    py_func = compile_numba_function_src(src, name, global_env=env, cache_key=name if graph_key else None)
    return numba.cfunc(sig, cache=graph_key is not None)(py_func)
