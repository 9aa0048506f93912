"""The observed-cells kernel as a PyTensor operation: ``(W, V, mu)`` in, log-likelihood and gradient out.

The within covariance ``W`` (one, or one per cluster when slopes are random), the cluster
vector's covariance ``V`` and its mean ``mu`` (one, or one per cluster) are built by the
model graph; everything per cluster and per missingness pattern (:mod:`pymsem.compile.missing`)
happens inside one compiled call of :mod:`pymsem.compile.kernel.missing_numba`, which returns
the gradient with the value. The pull-back scales that gradient, so PyTensor differentiates
only the small graph that builds ``W``, ``V`` and ``mu``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.kernel import missing_numba

__all__ = ["MissingKernel", "missing_arguments", "missing_kernel_logp", "missing_reduction"]

#: The data reduction after ``W``, ``V`` and ``mu``, in the kernel's argument order.
DATA = (
    "pair_start",
    "pair_pattern",
    "patterns",
    "pair_n",
    "pair_mean",
    "scatter_index",
    "pair_scatter",
    "level2",
    "level2_mask",
)
_INTS = {"pair_start", "pair_pattern", "scatter_index"}


class MissingKernel(Op):
    """``(f, df/dW, df/dV, df/dmu)`` of the observed cells, students reduced by (cluster, pattern).

    Inputs: ``W`` ``(1 or G, p1, p1)``, ``V`` ``(pb, pb)``, ``mu`` ``(1 or G, pb)``, then
    :data:`DATA` (see :func:`missing_reduction`).
    """

    __props__ = ()

    def make_node(self, W: Any, V: Any, mu: Any, *data: Any) -> Apply:
        if len(data) != len(DATA):
            raise ValueError(f"MissingKernel takes W, V, mu, {', '.join(DATA)}.")
        params = [pt.as_tensor_variable(x).astype("float64") for x in (W, V, mu)]
        rest = [
            pt.as_tensor_variable(x).astype("int64" if name in _INTS else "float64")
            for name, x in zip(DATA, data, strict=True)
        ]
        return Apply(self, params + rest, [pt.dscalar()] + [x.type() for x in params])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        f, *grads = missing_numba.missing_value_and_grad(*missing_arguments(*inputs))
        outputs[0][0] = np.asarray(f, dtype=np.float64)
        for out, g in zip(outputs[1:], grads, strict=True):
            out[0] = g

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [(), *shapes[:3]]

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        n_out = 4
        return [[True] * n_out] * 3 + [[False] * n_out] * len(DATA)

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        from pytensor.gradient import DisconnectedType, disconnected_type

        if not all(isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            raise NotImplementedError("Second derivatives of the likelihood kernel are not implemented.")
        return [output_grads[0] * g for g in outputs[1:]] + [disconnected_type() for _ in DATA]


def missing_arguments(W: Any, V: Any, mu: Any, *data: Any) -> list[np.ndarray]:
    """The arguments with the flags of the compiled model's call: writeable parameters, read-only data.

    Numba compiles one specialization per combination of array flags (see
    :func:`pymsem.compile.kernel.op.kernel_arguments`).
    """
    out = [np.array(x, dtype=np.float64, order="C") for x in (W, V, mu)]
    for x in data:
        x = np.array(x, order="C")
        x.flags.writeable = False
        out.append(x)
    return out


def missing_reduction(ps: Any, level2_cols: list[int] | None = None) -> dict[str, np.ndarray]:
    """The kernel's data (:data:`DATA`) from NumPy :class:`~pymsem.compile.missing.PatternStatistics`.

    ``level2_cols`` picks the level-2 columns the cluster vector holds (all by default).
    """
    G = ps.n_clusters
    cl = np.asarray(ps.pair_cluster)
    if np.any(np.diff(cl) < 0):
        raise ValueError("The pattern statistics' pairs must be sorted by cluster.")
    start = np.searchsorted(cl, np.arange(G + 1)).astype(np.int64)
    where = np.full(len(cl), -1, dtype=np.int64)
    where[np.asarray(ps.scatter_pairs, dtype=np.int64)] = np.arange(len(ps.scatter_pairs))
    cols = list(range(np.asarray(ps.level2).shape[1])) if level2_cols is None else list(level2_cols)
    scatter = np.asarray(ps.pair_scatter, float)
    if not len(scatter):
        scatter = np.zeros((0, ps.p1, ps.p1))
    return {
        "pair_start": start,
        "pair_pattern": np.asarray(ps.pair_pattern, dtype=np.int64),
        "patterns": np.asarray(ps.patterns, float),
        "pair_n": np.asarray(ps.pair_n, float),
        "pair_mean": np.asarray(ps.pair_mean, float),
        "scatter_index": where,
        "pair_scatter": scatter,
        "level2": np.asarray(ps.level2, float)[:, cols].reshape(G, len(cols)),
        "level2_mask": np.asarray(ps.level2_mask, float)[:, cols].reshape(G, len(cols)),
    }


def missing_kernel_logp(ps: Any, W: Any, V: Any, mu: Any, level2_cols: list[int] | None = None) -> Any:
    """The summed log-likelihood of the observed cells, as one kernel node.

    ``ps`` are NumPy pattern statistics; their reduction is registered as ``pm.Data``
    (``missing_<name>``), so the compiled function serves any data set of the same shape.
    ``W`` is ``(p1, p1)`` or ``(G, p1, p1)``, ``mu`` ``(pb,)`` or ``(G, pb)``.
    """
    import pymc as pm

    W = pt.as_tensor_variable(W)
    mu = pt.as_tensor_variable(mu)
    W = W[None] if W.ndim == 2 else W
    mu = mu[None] if mu.ndim == 1 else mu
    data = [pm.Data(f"missing_{k}", v) for k, v in missing_reduction(ps, level2_cols).items()]
    return MissingKernel()(W, V, mu, *data)[0]


def _cache_salt() -> int:
    """A hash of the kernel's sources: PyTensor's cache key covers only the Op's class and props."""
    h = hashlib.sha256()
    for f in (Path(missing_numba.__file__), Path(__file__)):
        h.update(f.read_bytes())
    return int(h.hexdigest()[:12], 16)


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    kernel = missing_numba.missing_value_and_grad

    @register_funcify_default_op_cache_key(MissingKernel)
    def _funcify(op: MissingKernel, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def value_and_grad(W, V, mu, start, pattern, patterns, n, mean, sidx, scatter, level2, mask):
            f, dW, dV, dmu = kernel(W, V, mu, start, pattern, patterns, n, mean, sidx, scatter, level2, mask)
            out = np.empty(())  # a scalar is a 0-d array in PyTensor's numba backend
            out[()] = f
            return out, dW, dV, dmu

        return value_and_grad, _cache_salt()


_register_numba()
