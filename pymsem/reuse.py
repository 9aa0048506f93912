"""Reuse a compiled log density for new data of the same shape.

Compiling a model's log density costs tens of seconds; sampling Model 3 costs
about twenty. Simulation studies and bootstrap-style reruns fit the same
specification to many data sets of the same shape (same clusters, same
missingness patterns), and for those the compiled function is the same: every
data-dependent value, including the data-scaled default priors, enters the
PyMC model as ``pm.Data``.

Reuse is decided by comparing graphs, never by trusting a key: a new model
reuses a compiled function only when its log density and deterministics are
the same computation as the cached model's, with the data (``pm.Data``) and
the parameter values as the only inputs (``pytensor.graph.basic.equal_computations``).
Anything else that differs (a prior family, a term added with ``model.build()``,
a constant) makes the graphs differ, and the model is compiled afresh.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["clear", "find", "remember"]

#: Compiled nutpie functions kept for reuse (most recently used last).
MAX_ENTRIES = 4


@dataclasses.dataclass
class _Entry:
    model: Any  # the pm.Model the function was compiled from
    outputs: list[Any]  # its log density and deterministics, in terms of value variables
    compiled: Any  # nutpie's compiled model


_CACHE: OrderedDict[tuple, _Entry] = OrderedDict()


def _fingerprint(model: Any, init_names: tuple[str, ...]) -> tuple:
    """Names and shapes that must match before the graphs are compared."""
    data = tuple((v.name, np.shape(v.get_value()), str(v.dtype)) for v in model.data_vars)
    dims = tuple((rv.name, model.named_vars_to_dims.get(rv.name)) for rv in model.free_RVs)
    coords = tuple((k, int(v.get_value())) for k, v in sorted(model.dim_lengths.items()))
    dets = tuple(d.name for d in model.deterministics)
    return (data, dims, coords, dets, init_names)


def _outputs(model: Any) -> list[Any]:
    return [model.logp(), *model.replace_rvs_by_values(model.deterministics)]


def _same_computation(a: _Entry, model: Any, outputs: list[Any]) -> bool:
    from pytensor.graph.basic import equal_computations

    return equal_computations(a.outputs, outputs, in_xs=_inputs(a.model), in_ys=_inputs(model))


def _inputs(model: Any) -> list[Any]:
    """The graph's inputs: parameter values, data, and dimension lengths (equal by fingerprint)."""
    values = [model.rvs_to_values[rv] for rv in model.free_RVs]
    dims = [model.dim_lengths[k] for k in sorted(model.dim_lengths)]
    return [*values, *model.data_vars, *dims]


def find(model: Any, initial_point: dict[str, np.ndarray]) -> Any | None:
    """A compiled function for ``model``, with its data and starting values, if one can be reused."""
    key = _fingerprint(model, tuple(sorted(initial_point)))
    entry = _CACHE.get(key)
    if entry is None:
        return None
    if entry.model is model:
        return entry.compiled
    outputs = _outputs(model)
    if not _same_computation(entry, model, outputs):
        return None
    _CACHE.move_to_end(key)
    # Data the rewrites removed from the compiled function are not among its inputs.
    used = {var.name for var in entry.compiled.shared_var_keys}
    data = {v.name: v.get_value() for v in model.data_vars if v.name in used}
    return dataclasses.replace(
        entry.compiled.with_data(**data), initial_point_func=_initial_point_func(model, initial_point)
    )


def remember(model: Any, initial_point: dict[str, np.ndarray], compiled: Any) -> None:
    """Keep ``compiled`` (nutpie's compiled ``model``) for later models of the same shape."""
    key = _fingerprint(model, tuple(sorted(initial_point)))
    _CACHE[key] = _Entry(model, _outputs(model), compiled)
    _CACHE.move_to_end(key)
    while len(_CACHE) > MAX_ENTRIES:
        _CACHE.popitem(last=False)


def clear() -> None:
    """Forget every compiled function (the next fit compiles afresh)."""
    _CACHE.clear()


def _initial_point_func(model: Any, initial_point: dict[str, np.ndarray]) -> Any:
    """nutpie's starting-point function for ``model``: the flat transformed initial point."""
    from pymc.initial_point import make_initial_point_fn

    fn = make_initial_point_fn(
        model=model, overrides=initial_point, jitter_rvs=set(), return_transformed=True
    )
    names = [model.rvs_to_values[rv].name for rv in model.free_RVs]
    lock = threading.Lock()  # nutpie starts chains from several threads

    def flat(seed: Any = None) -> np.ndarray:
        with lock:
            point = fn(seed)
        return np.concatenate([np.asarray(point[n], dtype="float64").ravel() for n in names])

    return flat
