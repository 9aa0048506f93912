"""The kernel as a PyTensor operation: the parameter vector in, the log-likelihood and gradient out.

One node replaces the graph that built each level's matrices and factored them (about 200
nodes for tutorial Model 2, each compiled separately by PyTensor's numba backend: 20 s warm
and about two minutes with empty caches). The node's numba implementation calls the
compiled kernel of :mod:`pymsem.compile.kernel.numba_impl`, which numba compiles once and
caches for every model; its pull-back scales the gradient computed with the value (nutpie
always asks for both).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.kernel import numba_impl
from pymsem.compile.kernel.spec import decode_level, kernel_spec
from pymsem.compile.structure import ModelStructure

__all__ = ["CompleteKernel", "complete_kernel_logp", "complete_reduction", "kernel_arguments"]

#: Inputs after ``theta``, ``ispec`` and ``fspec``: the data reduction by cluster size.
DATA = ("within_scatter", "sizes", "counts", "means", "scatter", "totals")


class CompleteKernel(Op):
    """``(f, df/dtheta)`` of complete data, clusters reduced by size.

    Inputs: ``theta`` (the parameter groups concatenated, see
    :func:`pymsem.compile.kernel.spec.theta_layout`), the packed specification ``ispec``
    (int64) and ``fspec``, then :data:`DATA`: the pooled within scatter ``(p1, p1)``, the
    distinct cluster sizes and their counts ``(K,)``, the mean cluster vector and the scatter
    of the cluster vectors of each size ``(K, pb)``, ``(K, pb, pb)``, and ``(N - G, sum log n_g)``.
    """

    __props__ = ()

    def make_node(self, theta: Any, ispec: Any, fspec: Any, *data: Any) -> Apply:
        if len(data) != len(DATA):
            raise ValueError(f"CompleteKernel takes theta, ispec, fspec, {', '.join(DATA)}.")
        theta = pt.as_tensor_variable(theta).astype("float64")
        ins = [
            theta,
            pt.as_tensor_variable(ispec).astype("int64"),
            pt.as_tensor_variable(fspec).astype("float64"),
            *(pt.as_tensor_variable(x).astype("float64") for x in data),
        ]
        return Apply(self, ins, [pt.dscalar(), theta.type()])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        f, g = numba_impl.complete_value_and_grad(*kernel_arguments(*inputs))
        outputs[0][0] = np.asarray(f, dtype=np.float64)
        outputs[1][0] = g

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        return [(), shapes[0]]

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        # Only the parameters vary smoothly; the specification and the data are constants.
        return [[True, True]] + [[False, False]] * (len(node.inputs) - 1)

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        from pytensor.gradient import DisconnectedType, disconnected_type

        if not isinstance(output_grads[1].type, DisconnectedType):
            raise NotImplementedError("Second derivatives of the likelihood kernel are not implemented.")
        return [output_grads[0] * outputs[1]] + [disconnected_type() for _ in inputs[1:]]


def kernel_arguments(theta: np.ndarray, *rest: np.ndarray) -> list[np.ndarray]:
    """The arguments as nutpie passes them (a writeable ``theta``, read-only data).

    Numba compiles one specialization per combination of array flags; calling the kernel
    from Python the way nutpie calls it keeps that to one, compiled once on a machine.
    """
    out = [np.array(theta, dtype=np.float64, order="C")]
    for x in rest:
        x = np.array(x, order="C")
        x.flags.writeable = False
        out.append(x)
    return out


def complete_reduction(stats: Any) -> dict[str, np.ndarray]:
    """The kernel's data (:data:`DATA`) from NumPy :class:`~pymsem.compile.marginal.SufficientStatistics`."""
    R = np.asarray(stats.within_root)
    roots = np.asarray(stats.roots)
    return {
        "within_scatter": R @ R.T,
        "sizes": np.asarray(stats.sizes, float),
        "counts": np.asarray(stats.counts, float),
        "means": np.asarray(stats.means, float),
        "scatter": roots @ np.swapaxes(roots, 1, 2),
        "totals": np.asarray([stats.n_obs - stats.n_clusters, stats.log_n_sum], float),
    }


def complete_kernel_logp(structure: ModelStructure, stats: Any, params: dict[str, Any]) -> Any:
    """The collapsed log-likelihood of complete data without random slopes, as one kernel node.

    ``stats`` are NumPy sufficient statistics; their reduction is registered as ``pm.Data``
    (``kernel_<name>``), so the compiled function serves any data set of the same shape.
    """
    import pymc as pm

    spec = kernel_spec(structure)
    theta = pt.concatenate([pt.as_tensor_variable(params[g]).flatten() for g in spec.groups])
    data = [pm.Data(f"kernel_{k}", v) for k, v in complete_reduction(stats).items()]
    return CompleteKernel()(theta, spec.ispec, spec.fspec, *data)[0]


def _cache_salt() -> int:
    """A hash of the kernel's sources: PyTensor's cache key covers only the Op's class and props."""
    h = hashlib.sha256()
    for f in (Path(numba_impl.__file__), Path(__file__)):
        h.update(f.read_bytes())
    return int(h.hexdigest()[:12], 16)


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    kernel = numba_impl.complete_value_and_grad

    @register_funcify_default_op_cache_key(CompleteKernel)
    def _funcify(op: CompleteKernel, node: Any = None, **kwargs: Any) -> Any:
        @numba_njit
        def value_and_grad(theta, ispec, fspec, within_scatter, sizes, counts, means, scatter, totals):
            f, g = kernel(theta, ispec, fspec, within_scatter, sizes, counts, means, scatter, totals)
            out = np.empty(())  # a scalar is a 0-d array in PyTensor's numba backend
            out[()] = f
            return out, g

        return value_and_grad, _cache_salt()


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # jax not installed: the JAX samplers are not available anyway
        return

    @jax_funcify.register(CompleteKernel)
    def _jax(op: CompleteKernel, node: Any = None, **kwargs: Any) -> Any:
        import jax
        import jax.numpy as jnp
        from pytensor.graph.basic import Constant

        ispec, fspec = node.inputs[1], node.inputs[2]
        if not (isinstance(ispec, Constant) and isinstance(fspec, Constant)):
            raise NotImplementedError("The JAX kernel needs the model specification as constants.")
        lw, io, fo = decode_level(ispec.data, fspec.data, 0, 0)
        lb, _, _ = decode_level(ispec.data, fspec.data, io, fo)
        log2pi = float(np.log(2 * np.pi))

        def cov(theta, sd0, sds, cors, n):
            sd = jnp.asarray(sd0).at[sds[:, 0]].set(theta[sds[:, 1]])
            R = jnp.eye(n).at[cors[:, 0], cors[:, 1]].set(theta[cors[:, 2]])
            R = R.at[cors[:, 1], cors[:, 0]].set(theta[cors[:, 2]])
            return sd[:, None] * R * sd[None, :]

        def level(theta, d):
            p, m = d["p"], d["m"]
            lam, path = d["loading"], d["path"]
            Lam = jnp.asarray(d["lambda_fixed"]).at[lam[:, 0], lam[:, 1]].set(theta[lam[:, 2]])
            B = jnp.zeros((m, m)).at[path[:, 0], path[:, 1]].set(theta[path[:, 2]])
            A = jnp.linalg.inv(jnp.eye(m) - B)
            Psi = cov(theta, d["lv_sd_fixed"], d["lv_sd"], d["lv_cor"], m)
            Theta = cov(theta, d["resid_sd_fixed"], d["resid_sd"], d["resid_cor"], p)
            ic = d["intercept"]
            nu = jnp.zeros(p).at[ic[:, 0]].set(theta[ic[:, 1]])
            return Lam @ A @ Psi @ A.T @ Lam.T + Theta, nu

        def value(theta, ws, sizes, counts, means, scatter, totals):
            W, _ = level(theta, lw)
            SB, nu = level(theta, lb)
            p1, pb = W.shape[0], SB.shape[0]
            Lw = jnp.linalg.cholesky(W)
            ldW = 2 * jnp.sum(jnp.log(jnp.diagonal(Lw)))
            f = -0.5 * totals[0] * (p1 * log2pi + ldW)
            f -= 0.5 * jnp.trace(jax.scipy.linalg.cho_solve((Lw, True), ws)) + 0.5 * p1 * totals[1]
            V = SB[None] + jnp.zeros((pb, pb)).at[:p1, :p1].set(W)[None] / sizes[:, None, None]
            L = jnp.linalg.cholesky(V)
            ldV = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
            d = means - nu[None]
            M = scatter + counts[:, None, None] * d[:, :, None] * d[:, None, :]
            tr = jnp.trace(jax.scipy.linalg.cho_solve((L, True), M), axis1=1, axis2=2)
            return f + jnp.sum(-0.5 * counts * (pb * log2pi + ldV) - 0.5 * tr)

        vg = jax.value_and_grad(value)

        def value_and_grad(theta, ispec, fspec, ws, sizes, counts, means, scatter, totals):
            return vg(theta, ws, sizes, counts, means, scatter, totals)

        return value_and_grad


_register_numba()
_register_jax()
