"""Each cluster's within scatter matrix of data that are graph nodes, as one operation.

Where missing cells or latent responses are sampled, the random-slope likelihoods read each
cluster's scatter ``S_g = sum_i (y_i - ybar_g)(y_i - ybar_g)'`` (packed lower triangle, as
:func:`pymsem.compile.cluster_woodbury.packed_lower`) computed from the sampled data in every
gradient. As a PyTensor graph that is an outer product per student and an indexed increment
over a (students, p(p+1)/2) array, whose column indexing alone cost 6-7 ms per gradient at
3,000 students in the numba backend; here the forward pass and the pull-back are each one
loop over the students.

The pull-back of a gradient ``H`` with respect to the packed scatter is, per student,
``(H_g + H_g') (y_i - ybar_g)`` with ``H_g`` the lower-triangular matrix holding it: the cluster
mean's own dependence on ``y_i`` drops out because the deviations sum to zero in each cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.linalg import numba_cache_salt

__all__ = ["cluster_scatter"]


def _np_deviations(Y: np.ndarray, idx: np.ndarray, G: int) -> np.ndarray:
    sums = np.zeros((G, Y.shape[1]))
    np.add.at(sums, idx, Y)
    n = np.bincount(idx, minlength=G).astype(float)
    return Y - (sums / np.maximum(n, 1.0)[:, None])[idx]


def _np_forward(Y: np.ndarray, idx: np.ndarray, G: int) -> tuple[np.ndarray, np.ndarray]:
    dev = _np_deviations(Y, idx, G)
    i, j = np.tril_indices(Y.shape[1])
    out = np.zeros((G, len(i)))
    np.add.at(out, idx, dev[:, i] * dev[:, j])
    means = np.zeros((G, Y.shape[1]))
    np.add.at(means, idx, Y)
    n = np.bincount(idx, minlength=G).astype(float)
    return means / np.maximum(n, 1.0)[:, None], out


def _np_backward(Y: np.ndarray, idx: np.ndarray, g_means: np.ndarray, gS: np.ndarray) -> np.ndarray:
    G, p = gS.shape[0], Y.shape[1]
    i, j = np.tril_indices(p)
    H = np.zeros((G, p, p))
    H[:, i, j] = gS
    M = H + np.swapaxes(H, 1, 2)
    dev = _np_deviations(Y, idx, G)
    n = np.bincount(idx, minlength=G).astype(float)
    return np.einsum("rab,rb->ra", M[idx], dev) + (g_means / np.maximum(n, 1.0)[:, None])[idx]


class ClusterScatter(Op):
    """Cluster means (G, p) and packed within scatter (G, p(p+1)/2) of ``Y`` (N, p), rows in clusters ``idx``."""

    __props__ = ("n_clusters",)

    def __init__(self, n_clusters: int) -> None:
        self.n_clusters = int(n_clusters)

    def make_node(self, Y: Any, idx: Any) -> Apply:
        Y = pt.as_tensor_variable(Y).astype("float64")
        idx = pt.as_tensor_variable(idx).astype("int64")
        p = Y.type.shape[1]
        packed = None if p is None else p * (p + 1) // 2
        means = pt.tensor(dtype="float64", shape=(self.n_clusters, p))
        return Apply(self, [Y, idx], [means, pt.tensor(dtype="float64", shape=(self.n_clusters, packed))])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        outputs[0][0], outputs[1][0] = _np_forward(inputs[0], inputs[1], self.n_clusters)

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        p = shapes[0][1]
        return [(self.n_clusters, p), (self.n_clusters, p * (p + 1) // 2)]

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        return [[True, True], [False, False]]

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        from pytensor.gradient import DisconnectedType, disconnected_type

        Y, idx = inputs
        g_means, gS = (
            pt.zeros_like(out) if isinstance(g.type, DisconnectedType) else g
            for g, out in zip(output_grads, outputs, strict=True)
        )
        return [ClusterScatterGrad()(Y, idx, g_means, gS), disconnected_type()]


class ClusterScatterGrad(Op):
    """The vector-Jacobian product of :class:`ClusterScatter` with respect to ``Y``."""

    __props__ = ()

    def make_node(self, Y: Any, idx: Any, g_means: Any, gS: Any) -> Apply:
        Y = pt.as_tensor_variable(Y).astype("float64")
        idx = pt.as_tensor_variable(idx).astype("int64")
        g_means = pt.as_tensor_variable(g_means).astype("float64")
        gS = pt.as_tensor_variable(gS).astype("float64")
        return Apply(self, [Y, idx, g_means, gS], [Y.type()])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        outputs[0][0] = _np_backward(*inputs)

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [shapes[0]]


def cluster_scatter(Y: Any, idx: np.ndarray, n_clusters: int) -> tuple[Any, Any]:
    """Each cluster's mean (G, p) and within scatter of ``Y`` (rows in clusters ``idx``), packed lower: (G, p(p+1)/2)."""
    means, scatter = ClusterScatter(n_clusters)(Y, np.asarray(idx, dtype=np.int64))
    return means, scatter


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    @numba_njit
    def _groups(idx: np.ndarray, G: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows by cluster (a counting sort): cluster g's rows are order[start[g]:start[g + 1]]."""
        start = np.zeros(G + 1, dtype=np.int64)
        for r in range(idx.shape[0]):
            start[idx[r] + 1] += 1
        for g in range(G):
            start[g + 1] += start[g]
        fill = start[:-1].copy()
        order = np.empty(idx.shape[0], dtype=np.int64)
        for r in range(idx.shape[0]):
            g = idx[r]
            order[fill[g]] = r
            fill[g] += 1
        return order, start

    @numba_njit
    def _mean(Y: np.ndarray, order: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        p = Y.shape[1]
        for a in range(p):
            out[a] = 0.0
        for t in range(lo, hi):
            for a in range(p):
                out[a] += Y[order[t], a]
        if hi > lo:
            for a in range(p):
                out[a] /= hi - lo

    @register_funcify_default_op_cache_key(ClusterScatter)
    def _funcify_forward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        G = op.n_clusters

        @numba_njit
        def forward(Y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = Y.shape[1]
            order, start = _groups(idx, G)
            out = np.zeros((G, p * (p + 1) // 2))
            means = np.zeros((G, p))
            mean = np.empty(p)
            d = np.empty(p)
            # The full square, not the triangle: its inner loop runs over contiguous memory and
            # vectorizes, which made it faster than the packed loop's half of the products.
            acc = np.empty((p, p))
            for g in range(G):
                _mean(Y, order, start[g], start[g + 1], mean)
                means[g, :] = mean
                acc[:] = 0.0
                for t in range(start[g], start[g + 1]):
                    r = order[t]
                    for a in range(p):
                        d[a] = Y[r, a] - mean[a]
                    for a in range(p):
                        da = d[a]
                        for b in range(p):
                            acc[a, b] += da * d[b]
                e = 0
                for a in range(p):
                    for b in range(a + 1):
                        out[g, e] = acc[a, b]
                        e += 1
            return means, out

        return forward, numba_cache_salt(__file__)

    @register_funcify_default_op_cache_key(ClusterScatterGrad)
    def _funcify_backward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def backward(Y: np.ndarray, idx: np.ndarray, g_means: np.ndarray, gS: np.ndarray) -> np.ndarray:
            N, p = Y.shape
            G = gS.shape[0]
            order, start = _groups(idx, G)
            M = np.empty((p, p))
            mean = np.empty(p)
            d = np.empty(p)
            out = np.empty((N, p))
            for g in range(G):
                e = 0
                for a in range(p):
                    for b in range(a + 1):
                        M[a, b] = gS[g, e]
                        M[b, a] = gS[g, e]
                        e += 1
                    M[a, a] *= 2.0
                _mean(Y, order, start[g], start[g + 1], mean)
                inv_n = 1.0 / max(start[g + 1] - start[g], 1)
                for t in range(start[g], start[g + 1]):
                    r = order[t]
                    for a in range(p):
                        d[a] = Y[r, a] - mean[a]
                    for a in range(p):
                        v = g_means[g, a] * inv_n
                        for b in range(p):
                            v += M[a, b] * d[b]
                        out[r, a] = v
            return out

        return backward, numba_cache_salt(__file__)


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # jax not installed: the JAX samplers are not available anyway
        return

    def _means_and_deviations(Y: Any, idx: Any, G: int) -> tuple[Any, Any, Any]:
        import jax
        import jax.numpy as jnp

        n = jnp.maximum(jax.ops.segment_sum(jnp.ones(Y.shape[0]), idx, num_segments=G), 1.0)
        means = jax.ops.segment_sum(Y, idx, num_segments=G) / n[:, None]
        return means, Y - means[idx], n

    @jax_funcify.register(ClusterScatter)
    def _jax_forward(op: Any, **kwargs: Any) -> Any:
        import jax

        G = op.n_clusters

        def forward(Y: Any, idx: Any) -> Any:
            i, j = np.tril_indices(Y.shape[1])
            means, dev, _ = _means_and_deviations(Y, idx, G)
            return means, jax.ops.segment_sum(dev[:, i] * dev[:, j], idx, num_segments=G)

        return forward

    @jax_funcify.register(ClusterScatterGrad)
    def _jax_backward(op: Any, **kwargs: Any) -> Any:
        import jax.numpy as jnp

        def backward(Y: Any, idx: Any, g_means: Any, gS: Any) -> Any:
            G, p = gS.shape[0], Y.shape[1]
            i, j = np.tril_indices(p)
            H = jnp.zeros((G, p, p)).at[:, i, j].set(gS)
            M = H + jnp.swapaxes(H, 1, 2)
            _, dev, n = _means_and_deviations(Y, idx, G)
            return jnp.einsum("rab,rb->ra", M[idx], dev) + (g_means / n[:, None])[idx]

        return backward


_register_numba()
_register_jax()
