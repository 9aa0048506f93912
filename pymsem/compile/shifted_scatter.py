"""Each cluster's packed within scatter of items shifted by their regression on exact covariates.

With slopes moderated by a sampled latent mean (tutorial Model 4), the items' within scatter the
Woodbury likelihood reads is that of ``y~_i = y_I,i - C_g' x_i`` (``C_g``, (k, p), from the
cluster's slopes), packed over the item pairs ``(a, b)``, ``a >= b``:

``S~_g[ab] = S_g[ab] - sum_t (C_ta s_tb + s_ta C_tb) + sum_tu X_tu C_ta C_ub``

with ``s_t`` the items' scatter with covariate ``t`` and ``X`` the covariates' scatter. As a
PyTensor graph this was a few dozen (clusters, pairs)-sized nodes whose reverse pass cost about
23 ms per gradient at 10,000 clusters (4x the whole fused likelihood, ``bench/results/
model_classes.md``); here the forward pass and the pull-back are each one loop over the
clusters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.linalg import numba_cache_salt

__all__ = ["shifted_scatter"]


def _pairs(p: int) -> tuple[np.ndarray, np.ndarray]:
    """The packed lower triangle's (row, column) pairs, row by row."""
    return np.tril_indices(p)


def _np_forward(S: np.ndarray, C: np.ndarray, s: np.ndarray, X: np.ndarray) -> np.ndarray:
    a, b = _pairs(C.shape[2])
    cross = np.einsum("gta,gtb->gab", C, s)
    quad = np.einsum("gta,gtu,gub->gab", C, X, C)
    return S - cross[:, a, b] - cross[:, b, a] + quad[:, a, b]


def _np_backward(
    S: np.ndarray, C: np.ndarray, s: np.ndarray, X: np.ndarray, gO: np.ndarray
) -> tuple[np.ndarray, ...]:
    G, _, p = C.shape
    a, b = _pairs(p)
    H = np.zeros((G, p, p))
    H[:, a, b] = gO  # H[g, a, b]: the gradient of pair (a, b), a >= b
    Hs = H + np.swapaxes(H, 1, 2)
    dC = -np.einsum("gab,gtb->gta", Hs, s) + np.einsum("gab,gtu,gub->gta", H, X, C)
    dC += np.einsum("gab,gta,gtu->gub", H, C, X)
    ds = -np.einsum("gab,gta->gtb", Hs, C)
    dX = np.einsum("gab,gta,gub->gtu", H, C, C)
    return gO.copy(), dC, ds, dX


class ShiftedScatter(Op):
    """``S~`` (G, p(p+1)/2) from the packed scatter ``S``, ``C`` and ``s`` (G, k, p) and ``X`` (G, k, k)."""

    __props__ = ()

    def make_node(self, S: Any, C: Any, s: Any, X: Any) -> Apply:
        S, C, s, X = (pt.as_tensor_variable(v).astype("float64") for v in (S, C, s, X))
        return Apply(self, [S, C, s, X], [S.type()])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        outputs[0][0] = _np_forward(*inputs)

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [shapes[0]]

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        return ShiftedScatterGrad()(*inputs, output_grads[0])


class ShiftedScatterGrad(Op):
    """The vector-Jacobian products of :class:`ShiftedScatter` with respect to its four inputs."""

    __props__ = ()

    def make_node(self, S: Any, C: Any, s: Any, X: Any, gO: Any) -> Apply:
        ins = [pt.as_tensor_variable(v).astype("float64") for v in (S, C, s, X, gO)]
        return Apply(self, ins, [v.type() for v in ins[:4]])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        for out, value in zip(outputs, _np_backward(*inputs), strict=True):
            out[0] = value

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return shapes[:4]


def shifted_scatter(S: Any, C: Any, s: Any, X: Any) -> Any:
    """The packed scatter ``S`` (G, p(p+1)/2) of items shifted by ``C`` (G, k, p); see the module text."""
    return ShiftedScatter()(S, C, s, X)


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    @register_funcify_default_op_cache_key(ShiftedScatter)
    def _funcify_forward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def forward(S: np.ndarray, C: np.ndarray, s: np.ndarray, X: np.ndarray) -> np.ndarray:
            G, k, p = C.shape
            out = np.empty_like(S)
            XC = np.empty((k, p))
            for g in range(G):
                for t in range(k):  # (X C)_t = sum_u X_tu C_u
                    for b in range(p):
                        v = 0.0
                        for u in range(k):
                            v += X[g, t, u] * C[g, u, b]
                        XC[t, b] = v
                e = 0
                for a in range(p):
                    for b in range(a + 1):
                        v = S[g, e]
                        for t in range(k):
                            v += C[g, t, a] * (XC[t, b] - s[g, t, b]) - s[g, t, a] * C[g, t, b]
                        out[g, e] = v
                        e += 1
            return out

        return forward, numba_cache_salt(__file__)

    @register_funcify_default_op_cache_key(ShiftedScatterGrad)
    def _funcify_backward(op: Any, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def backward(
            S: np.ndarray, C: np.ndarray, s: np.ndarray, X: np.ndarray, gO: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            G, k, p = C.shape
            dC = np.zeros_like(C)
            ds = np.zeros_like(s)
            dX = np.zeros_like(X)
            XC = np.empty((k, p))
            XtC = np.empty((k, p))
            for g in range(G):
                for t in range(k):
                    for b in range(p):
                        v = 0.0
                        w = 0.0
                        for u in range(k):
                            v += X[g, t, u] * C[g, u, b]
                            w += X[g, u, t] * C[g, u, b]
                        XC[t, b] = v
                        XtC[t, b] = w
                e = 0
                for a in range(p):
                    for b in range(a + 1):
                        h = gO[g, e]
                        e += 1
                        for t in range(k):
                            dC[g, t, a] += h * (XC[t, b] - s[g, t, b])
                            dC[g, t, b] += h * (XtC[t, a] - s[g, t, a])
                            ds[g, t, b] -= h * C[g, t, a]
                            ds[g, t, a] -= h * C[g, t, b]
                            for u in range(k):
                                dX[g, t, u] += h * C[g, t, a] * C[g, u, b]
            return gO.copy(), dC, ds, dX

        return backward, numba_cache_salt(__file__)


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # jax not installed: the JAX samplers are not available anyway
        return

    @jax_funcify.register(ShiftedScatter)
    def _jax_forward(op: Any, **kwargs: Any) -> Any:
        import jax.numpy as jnp

        def forward(S: Any, C: Any, s: Any, X: Any) -> Any:
            a, b = _pairs(C.shape[2])
            cross = jnp.einsum("gta,gtb->gab", C, s)
            quad = jnp.einsum("gta,gtu,gub->gab", C, X, C)
            return S - cross[:, a, b] - cross[:, b, a] + quad[:, a, b]

        return forward

    @jax_funcify.register(ShiftedScatterGrad)
    def _jax_backward(op: Any, **kwargs: Any) -> Any:
        import jax.numpy as jnp

        def backward(S: Any, C: Any, s: Any, X: Any, gO: Any) -> Any:
            G, _, p = C.shape
            a, b = _pairs(p)
            H = jnp.zeros((G, p, p)).at[:, a, b].set(gO)
            Hs = H + jnp.swapaxes(H, 1, 2)
            dC = -jnp.einsum("gab,gtb->gta", Hs, s) + jnp.einsum("gab,gtu,gub->gta", H, X, C)
            dC = dC + jnp.einsum("gab,gta,gtu->gub", H, C, X)
            ds = -jnp.einsum("gab,gta->gtb", Hs, C)
            dX = jnp.einsum("gab,gta,gub->gtu", H, C, C)
            return gO, dC, ds, dX

        return backward


_register_numba()
_register_jax()
