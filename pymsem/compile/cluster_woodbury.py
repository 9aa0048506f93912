"""The random-slope Woodbury likelihood's per-cluster work as one operation, value and gradient together.

Given its slope deviations ``u_g``, cluster ``g``'s collapsed log-likelihood (see
:func:`pymsem.compile.marginal.random_slope_logp_woodbury`) needs two small factorizations:

* ``C_g = S_g^-1 + Lambda' Theta^-1 Lambda`` (within factors), with the cluster's latent
  precision ``S_g^-1 = (I - B_g)' Psi^-1 (I - B_g)`` and ``B_g`` the within regressions
  with the cluster's slopes;
* the capacitance ``K_g = UEU_k + n_g pad(S_g^-1)`` (between and within factors), where
  ``UEU_k`` depends on the cluster only through its size.

What depends on the cluster is

    f = sum_g [ -w_g/2 log|C_g| + 1/2 tr(C_g^-1 M_g)
                - 1/2 log|K_g| + 1/2 v_g' K_g^-1 v_g ]

with ``M_g = Lambda' Theta^-1 S_g Theta^-1 Lambda`` (``S_g`` the cluster's within scatter
matrix), ``v_g = U' E_g^-1 (z_g - nu)`` its mean vector projected on both levels' loadings
``U`` and ``w_g = n_g - 1``. Written as a PyTensor graph, ``f`` and its gradient were some
80 passes over cluster-sized arrays plus two GEMMs for the projections (at 10,000 clusters,
about 1.5 microseconds per cluster and gradient). Here one numba loop over the clusters
computes ``f`` and every gradient at once, with each cluster's matrices in registers and
the cache, and the projections use only the loadings' nonzeros (one factor per indicator
in the tutorial models) and the packed lower triangle of ``S_g``. The pull-back only scales
the stored gradients: nutpie always asks for the value and the gradient together, so
nothing is computed twice.

Conventions as in :mod:`pymsem.compile.logdet_quad`: symmetric inputs (``LtL``, ``UEU``) are
read through their lower triangle and get the symmetric gradient; a matrix that is not
positive definite makes ``f`` and the gradients ``nan``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pymsem.compile.linalg import numba_cache_salt

__all__ = ["ClusterWoodbury", "woodbury_op_logp"]

#: Inputs, in order; the gradient outputs follow ``GRAD_INPUTS``' order.
INPUTS = ("u", "IB0", "Psi_inv", "LtL", "LamD", "S", "w", "n", "size", "UEU", "z", "nu", "Einv", "U")
# ``S`` and ``z`` are data where the data are fixed, and graph nodes where missing cells or latent
# responses are sampled: their gradients let those formulations use this operation too.
GRAD_INPUTS = ("u", "IB0", "Psi_inv", "LtL", "LamD", "S", "UEU", "z", "nu", "Einv", "U")
_DATA = ("w", "n", "size")


def packed_lower(S: np.ndarray) -> np.ndarray:
    """The lower triangles of a batch of symmetric matrices (G, p, p), row by row: (G, p(p+1)/2)."""
    i, j = np.tril_indices(S.shape[-1])
    return np.ascontiguousarray(S[..., i, j])


def _unpack(Sp: np.ndarray, p: int) -> np.ndarray:
    i, j = np.tril_indices(p)
    S = np.zeros((*Sp.shape[:-1], p, p))
    S[..., i, j] = Sp
    S[..., j, i] = Sp
    return S


def _np_value_and_grad(op: ClusterWoodbury, *inputs: np.ndarray) -> list[Any]:
    """Reference implementation (NumPy, batched): the C/Python backend and the tests use it."""
    x = dict(zip(INPUTS, inputs, strict=True))
    u, IB0, Psi_inv, n, size, mb = x["u"], x["IB0"], x["Psi_inv"], x["n"], x["size"], op.mb
    G, m, p1 = u.shape[0], IB0.shape[0], x["LamD"].shape[0]
    LamD = x["LamD"] * _mask(op.lam_pattern, x["LamD"].shape)
    U = x["U"] * _mask(op.u_pattern, x["U"].shape)
    ri, ci, ji = np.asarray(op.r, int), np.asarray(op.c, int), np.asarray(op.j, int)
    IB = np.broadcast_to(IB0, (G, m, m)).copy()
    np.subtract.at(IB, (slice(None), ri, ci), u[:, ji])
    S = np.swapaxes(IB, 1, 2) @ Psi_inv @ IB
    S = np.tril(S) + np.swapaxes(np.tril(S, -1), 1, 2)
    C = S + np.tril(x["LtL"]) + np.tril(x["LtL"], -1).T
    K = x["UEU"][size].copy()
    K = np.tril(K) + np.swapaxes(np.tril(K, -1), 1, 2)
    K[:, mb:, mb:] += n[:, None, None] * S
    T = _unpack(x["S"], p1) @ LamD  # (G, p1, m)
    M = LamD.T @ T
    d = x["z"] - x["nu"]
    dE = d * x["Einv"][size]
    v = dE @ U
    try:
        Lc, Lk = np.linalg.cholesky(C), np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return [np.float64(np.nan), *(np.full(x[k].shape, np.nan) for k in GRAD_INPUTS)]
    Cinv, Kinv = np.linalg.inv(C), np.linalg.inv(K)
    b = np.einsum("gij,gj->gi", Kinv, v)
    logdet_C = 2 * np.log(np.diagonal(Lc, axis1=1, axis2=2)).sum(1)
    logdet_K = 2 * np.log(np.diagonal(Lk, axis1=1, axis2=2)).sum(1)
    quad_C = np.einsum("gab,gab->g", Cinv, M)
    f = np.sum(-0.5 * x["w"] * logdet_C + 0.5 * quad_C - 0.5 * logdet_K + 0.5 * (v * b).sum(1))
    G_C = -0.5 * (x["w"][:, None, None] * Cinv + Cinv @ M @ Cinv)
    G_K = -0.5 * (Kinv + b[:, :, None] * b[:, None, :])
    G_S = G_C + n[:, None, None] * G_K[:, mb:, mb:]
    gUEU = np.zeros_like(x["UEU"])
    np.add.at(gUEU, size, G_K)
    D = (Psi_inv + Psi_inv.T) @ IB @ G_S
    gu = np.zeros_like(u)
    np.subtract.at(gu, (slice(None), ji), D[:, ri, ci])
    gPsi = (IB @ G_S @ np.swapaxes(IB, 1, 2)).sum(0)
    gLamD = (T @ Cinv).sum(0) * _mask(op.lam_pattern, LamD.shape)
    gdE = b @ U.T
    gU = (dE.T @ b) * _mask(op.u_pattern, U.shape)
    gnu = -(gdE * x["Einv"][size]).sum(0)
    gEinv = np.zeros_like(x["Einv"])
    np.add.at(gEinv, size, gdE * d)
    # f holds S through tr(C^-1 M)/2; a packed off-diagonal entry stands for two.
    H = 0.5 * LamD @ Cinv @ LamD.T
    gS = packed_lower(2.0 * H - H * np.eye(p1))
    gz = gdE * x["Einv"][size]
    return [np.float64(f), gu, D.sum(0), gPsi, G_C.sum(0), gLamD, gS, gUEU, gz, gnu, gEinv, gU]


def _mask(pattern: tuple[tuple[int, int], ...], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape)
    for i, a in pattern:
        out[i, a] = 1.0
    return out


class ClusterWoodbury(Op):
    """``f`` of the module docstring and its gradients, for a batch of clusters.

    Parameters (static)
    -------------------
    r, c, j
        Where each cluster's slope deviations enter: ``(I - B_g)[r, c] -= u_g[j]``.
    mb, m
        The numbers of between and within factors (the capacitance is ``mb + m`` square and
        its within block starts at ``mb``).
    p1, pb
        The numbers of level-1 variables and of between variables (level-1 and level-2).
    lam_pattern, u_pattern
        The (row, column) entries of ``LamD`` and ``U`` that may be nonzero (the loadings'
        pattern); the other entries are taken as zero and not read.

    Inputs (see :data:`INPUTS`)
    ---------------------------
    ``u`` (G, k); ``IB0 = I - B``, ``Psi_inv``, ``LtL = Lambda' Theta^-1 Lambda`` (m, m);
    ``LamD = Theta^-1 Lambda`` (p, m); ``S`` (G, p(p+1)/2), each cluster's within scatter
    matrix packed by :func:`packed_lower`; ``w = n - 1`` and ``n`` (G,); ``size`` (G,), an
    integer index into ``UEU`` (K, q, q) and ``Einv`` (K, pb), the per-size capacitance and
    inverse diagonal covariance; ``z`` (G, pb) the cluster vectors, ``nu`` (pb,) their mean,
    ``U`` (pb, q) both levels' loadings. The cluster's between projection is
    ``v_g = U' diag(Einv_k) (z_g - nu)`` and ``M_g = LamD' S_g LamD`` replaces ``P_g P_g'``.

    Outputs: ``f`` (a scalar), then its gradient with respect to each of :data:`GRAD_INPUTS`.
    """

    __props__ = ("r", "c", "j", "mb", "m", "p1", "pb", "lam_pattern", "u_pattern")

    def __init__(
        self,
        r: tuple[int, ...],
        c: tuple[int, ...],
        j: tuple[int, ...],
        mb: int,
        m: int,
        p1: int,
        pb: int,
        lam_pattern: tuple[tuple[int, int], ...],
        u_pattern: tuple[tuple[int, int], ...],
    ) -> None:
        self.r, self.c, self.j = tuple(map(int, r)), tuple(map(int, c)), tuple(map(int, j))
        self.mb, self.m, self.p1, self.pb = int(mb), int(m), int(p1), int(pb)
        self.lam_pattern = tuple((int(a), int(b)) for a, b in lam_pattern)
        self.u_pattern = tuple((int(a), int(b)) for a, b in u_pattern)

    def make_node(self, *inputs: Any) -> Apply:
        if len(inputs) != len(INPUTS):
            raise ValueError(f"ClusterWoodbury takes {', '.join(INPUTS)}.")
        ins = [
            pt.as_tensor_variable(x).astype("int64" if name == "size" else "float64")
            for name, x in zip(INPUTS, inputs, strict=True)
        ]
        by_name = dict(zip(INPUTS, ins, strict=True))
        return Apply(self, ins, [pt.dscalar(), *(by_name[k].type() for k in GRAD_INPUTS)])

    def perform(self, node: Apply, inputs: list[np.ndarray], outputs: list[list[Any]]) -> None:
        for out, val in zip(outputs, _np_value_and_grad(self, *inputs), strict=True):
            out[0] = np.asarray(val, dtype=np.float64)

    def infer_shape(self, fgraph: Any, node: Apply, shapes: list[Any]) -> list[Any]:
        by_name = dict(zip(INPUTS, shapes, strict=True))
        return [(), *(by_name[k] for k in GRAD_INPUTS)]

    def connection_pattern(self, node: Apply) -> list[list[bool]]:
        # The integer size index only selects rows: no output varies smoothly with it.
        return [[name != "size"] * len(node.outputs) for name in INPUTS]

    def pullback(self, inputs: list[Any], outputs: list[Any], output_grads: list[Any]) -> list[Any]:
        from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented

        if any(not isinstance(g.type, DisconnectedType) for g in output_grads[1:]):
            raise NotImplementedError(
                "Second derivatives of the cluster Woodbury likelihood are not implemented."
            )
        g = output_grads[0]
        grads = dict(zip(GRAD_INPUTS, outputs[1:], strict=True))
        out = []
        for i, (name, x) in enumerate(zip(INPUTS, inputs, strict=True)):
            if name == "size":
                out.append(disconnected_type())
            elif name in _DATA:
                out.append(grad_not_implemented(self, i, x, f"{name} holds data"))
            else:
                out.append(g * grads[name])
        return out


def loading_pattern(ls: Any) -> np.ndarray:
    """Where a level's ``Lambda`` may be nonzero (fixed nonzero or free), as a boolean (p, m) array."""
    pattern = np.asarray(ls.lambda_fixed) != 0
    if len(ls.lambda_free):
        pattern[ls.lambda_free[:, 0], ls.lambda_free[:, 1]] = True
    return pattern


def woodbury_op_logp(
    slope_entries: np.ndarray, pat_w: np.ndarray, pat_u: np.ndarray, mb: int, **inputs: Any
) -> Any:
    """``f`` for explicit patterns: ``slope_entries`` (k, 3) rows ``(r, c, j)`` of the slopes in
    ``I - B``, ``pat_w`` (p1, m) and ``pat_u`` (pb, mb + m) the possible nonzeros of ``LamD`` and
    ``U``; ``mb`` between factors. Used where the variables and factors are a subset of a level's.
    """
    br = np.asarray(slope_entries, dtype=np.int64).reshape(-1, 3)
    op = ClusterWoodbury(
        tuple(br[:, 0].tolist()),
        tuple(br[:, 1].tolist()),
        tuple(br[:, 2].tolist()),
        mb,
        pat_w.shape[1],
        pat_w.shape[0],
        pat_u.shape[0],
        tuple(map(tuple, np.argwhere(pat_w).tolist())),
        tuple(map(tuple, np.argwhere(pat_u).tolist())),
    )
    return op(*(inputs[k] for k in INPUTS))[0]


def scatter_terms(lam_pattern: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, ...]:
    """``M[a, b] = sum_t S[e_t] mult_t LamD[i_t, a_t] LamD[k_t, b_t]`` for ``a >= b``.

    ``e`` indexes the packed lower triangle of ``S``; every pair of nonzero loadings
    (``lam_pattern``) contributes one term (78 for three factors of four indicators), so the
    projection costs what the loadings' pattern needs and no more. Returns ``e, a, b, i, k``
    (int64) and ``mult`` (float64).
    """
    rows: list[tuple[int, int, int, int, int, float]] = []
    for i, a in lam_pattern:
        for k, b in lam_pattern:
            if a < b or (a == b and i < k):
                continue
            hi, lo = max(i, k), min(i, k)
            mult = 2.0 if (a == b and i != k) else 1.0
            rows.append((hi * (hi + 1) // 2 + lo, a, b, i, k, mult))
    # Sorted by (a, b): each entry of M is then one run of terms summed in a register
    # (accumulating into M in memory serialized the adds through store-to-load forwarding).
    rows.sort(key=lambda r: (r[1], r[2], r[0]))
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    ints = arr[:, :5].astype(np.int64)
    return (
        ints[:, 0].copy(),
        ints[:, 1].copy(),
        ints[:, 2].copy(),
        ints[:, 3].copy(),
        ints[:, 4].copy(),
        arr[:, 5].copy(),
    )


def term_groups(t_a: np.ndarray, t_b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of :func:`scatter_terms` per entry ``(a, b)`` of ``M``'s lower triangle:
    ``grp_a``, ``grp_b`` and ``grp_ptr`` (terms ``grp_ptr[h]:grp_ptr[h + 1]``)."""
    grp_a = np.asarray([a for a in range(m) for b in range(a + 1)], dtype=np.int64)
    grp_b = np.asarray([b for a in range(m) for b in range(a + 1)], dtype=np.int64)
    grp_ptr = np.zeros(len(grp_a) + 1, dtype=np.int64)
    for h in range(len(grp_a)):
        grp_ptr[h + 1] = grp_ptr[h] + int(np.sum((t_a == grp_a[h]) & (t_b == grp_b[h])))
    return grp_a, grp_b, grp_ptr


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

    @numba_njit(inline="always")
    def _factor(A: np.ndarray, L: np.ndarray, dinv: np.ndarray, k: int) -> bool:
        """Cholesky ``L`` of ``A``'s lower triangle, and ``1 / diag(L)``; False if not PD."""
        for jj in range(k):
            d = A[jj, jj]
            for mm in range(jj):
                d -= L[jj, mm] * L[jj, mm]
            if not d > 0.0:
                return False
            L[jj, jj] = np.sqrt(d)
            r = 1.0 / L[jj, jj]
            dinv[jj] = r
            for i in range(jj + 1, k):
                x = A[i, jj]
                for mm in range(jj):
                    x -= L[i, mm] * L[jj, mm]
                L[i, jj] = x * r
        return True

    @numba_njit(inline="always")
    def _matmul(X: np.ndarray, Y: np.ndarray, out: np.ndarray, k: int) -> None:
        """``out = X Y`` for k x k matrices (``X`` or ``Y`` may be a transposed view)."""
        for i in range(k):
            for t in range(k):
                x = 0.0
                for mm in range(k):
                    x += X[i, mm] * Y[mm, t]
                out[i, t] = x

    @numba_njit(inline="always")
    def _inverse(L: np.ndarray, dinv: np.ndarray, Linv: np.ndarray, Ainv: np.ndarray, k: int) -> float:
        """``A^-1`` from ``A = L L'`` into ``Ainv`` (full); returns ``log|A|``."""
        for col in range(k):
            for i in range(col, k):
                x = 1.0 if i == col else 0.0
                for mm in range(col, i):
                    x -= L[i, mm] * Linv[mm, col]
                Linv[i, col] = x * dinv[i]
        det = 1.0  # one log per matrix, not one per diagonal entry
        for i in range(k):
            det *= L[i, i]
            for jj in range(i + 1):
                x = 0.0
                for mm in range(i, k):
                    x += Linv[mm, i] * Linv[mm, jj]
                Ainv[i, jj] = x
                Ainv[jj, i] = x
        return 2.0 * np.log(det)

    @register_funcify_default_op_cache_key(ClusterWoodbury)
    def _funcify(op: Any, node: Any = None, **kwargs: Any) -> Any:
        # Every size is a compile-time constant, so LLVM unrolls the factor-sized loops.
        rr = np.asarray(op.r, dtype=np.int64)
        cc = np.asarray(op.c, dtype=np.int64)
        js = np.asarray(op.j, dtype=np.int64)
        mb, m, pb = op.mb, op.m, op.pb
        q = mb + m
        n_cells = len(op.r)
        t_e, t_a, t_b, t_i, t_k, t_mult = scatter_terms(op.lam_pattern)
        n_terms = len(t_e)
        # d quad_C / d M[a, b] over the lower triangle: C^-1[a, b], halved on the diagonal.
        t_half = np.where(t_a == t_b, 0.5, 1.0)
        grp_a, grp_b, grp_ptr = term_groups(t_a, t_b, m)
        n_grp = len(grp_a)
        u_i = np.asarray([i for i, _ in op.u_pattern], dtype=np.int64)
        u_a = np.asarray([a for _, a in op.u_pattern], dtype=np.int64)
        n_u = len(u_i)

        @numba_njit
        def value_and_grad(u, IB0, Psi_inv, LtL, LamD, S, w, n, size, UEU, z, nu, Einv, U):
            G = u.shape[0]
            gu = np.zeros(u.shape)
            gIB0 = np.zeros((m, m))
            gPsi = np.zeros((m, m))
            gLtL = np.zeros((m, m))
            gLamD = np.zeros(LamD.shape)
            gS = np.zeros(S.shape)
            gUEU = np.zeros(UEU.shape)
            gz = np.zeros(z.shape)
            gnu = np.zeros(nu.shape)
            gEinv = np.zeros(Einv.shape)
            gU = np.zeros(U.shape)
            IB = np.empty((m, m))
            A = np.empty((m, m))
            Sg = np.empty((m, m))
            Cm = np.empty((m, m))
            Lc = np.zeros((m, m))
            Li = np.zeros((m, m))
            Cinv = np.empty((m, m))
            M = np.empty((m, m))
            CM = np.empty((m, m))
            GS = np.empty((m, m))
            K = np.empty((q, q))
            Lk = np.zeros((q, q))
            Lki = np.zeros((q, q))
            Kinv = np.empty((q, q))
            v = np.empty(q)
            b = np.empty(q)
            dc = np.empty(m)
            dk = np.empty(q)
            dE = np.empty(pb)
            gdE = np.empty(pb)
            # Per-call coefficients: the loadings' products and values at their nonzeros.
            coef = np.empty(n_terms)
            gcoef = np.zeros(n_terms)
            for t in range(n_terms):
                coef[t] = t_mult[t] * LamD[t_i[t], t_a[t]] * LamD[t_k[t], t_b[t]]
            uval = np.empty(n_u)
            guval = np.zeros(n_u)
            for t in range(n_u):
                uval[t] = U[u_i[t], u_a[t]]
            Psym = Psi_inv + Psi_inv.T
            f = 0.0
            for g in range(G):
                ng = n[g]
                sz = size[g]
                # (I - B_g) and S_g^-1 = (I - B_g)' Psi^-1 (I - B_g), through A = Psi^-1 (I - B_g)
                for i in range(m):
                    for t in range(m):
                        IB[i, t] = IB0[i, t]
                for s in range(n_cells):
                    IB[rr[s], cc[s]] -= u[g, js[s]]
                _matmul(Psi_inv, IB, A, m)
                _matmul(IB.T, A, Sg, m)
                for i in range(m):
                    for t in range(i + 1):
                        Cm[i, t] = Sg[i, t] + LtL[i, t]
                for i in range(q):
                    for t in range(i + 1):
                        K[i, t] = UEU[sz, i, t]
                for i in range(m):
                    for t in range(i + 1):
                        K[mb + i, mb + t] += ng * Sg[i, t]
                # Both factors before one test: a short-circuit ``and`` here left numba's
                # reference counts of the work arrays inside the loop (kernel_gradient.md,
                # session 34; the whole-model kernel's loop had the same).
                ok_c = _factor(Cm, Lc, dc, m)
                ok_k = _factor(K, Lk, dk, q)
                if not (ok_c and ok_k):
                    f = np.nan
                    break
                logdet_C = _inverse(Lc, dc, Li, Cinv, m)
                logdet_K = _inverse(Lk, dk, Lki, Kinv, q)
                # M_g = LamD' S_g LamD (lower triangle), then its full symmetric form.
                for h in range(n_grp):
                    x = 0.0
                    for t in range(grp_ptr[h], grp_ptr[h + 1]):
                        x += S[g, t_e[t]] * coef[t]
                    M[grp_a[h], grp_b[h]] = x
                quad_C = 0.0
                for a in range(m):
                    quad_C += Cinv[a, a] * M[a, a]
                    for t in range(a):
                        M[t, a] = M[a, t]
                        quad_C += 2.0 * Cinv[a, t] * M[a, t]
                # v_g = U' diag(Einv_k) (z_g - nu)
                for i in range(pb):
                    dE[i] = (z[g, i] - nu[i]) * Einv[sz, i]
                    gdE[i] = 0.0
                for a in range(q):
                    v[a] = 0.0
                for t in range(n_u):
                    v[u_a[t]] += uval[t] * dE[u_i[t]]
                quad_v = 0.0
                for a in range(q):
                    x = 0.0
                    for k in range(q):
                        x += Kinv[a, k] * v[k]
                    b[a] = x
                    quad_v += x * v[a]
                wg = w[g]
                f += -0.5 * wg * logdet_C + 0.5 * quad_C - 0.5 * logdet_K + 0.5 * quad_v

                # Gradients. dK = -(K^-1 + b b')/2, dC = -(w C^-1 + C^-1 M C^-1)/2,
                # dS_g^-1 = dC + n dK[within], dM = C^-1/2, dv = b.
                for i in range(q):
                    for t in range(q):
                        x = -0.5 * (Kinv[i, t] + b[i] * b[t])
                        gUEU[sz, i, t] += x
                        K[i, t] = x
                _matmul(Cinv, M, CM, m)
                _matmul(CM, Cinv, GS, m)
                for i in range(m):
                    for t in range(m):
                        x = -0.5 * (wg * Cinv[i, t] + GS[i, t])
                        gLtL[i, t] += x
                        GS[i, t] = x + ng * K[mb + i, mb + t]
                for h in range(n_grp):
                    c_ab = Cinv[grp_a[h], grp_b[h]]
                    for t in range(grp_ptr[h], grp_ptr[h + 1]):
                        gcoef[t] += c_ab * S[g, t_e[t]]
                        gS[g, t_e[t]] += c_ab * t_half[t] * coef[t]
                for t in range(n_u):
                    i, a = u_i[t], u_a[t]
                    guval[t] += dE[i] * b[a]
                    gdE[i] += uval[t] * b[a]
                for i in range(pb):
                    gz[g, i] = gdE[i] * Einv[sz, i]
                    gnu[i] -= gdE[i] * Einv[sz, i]
                    gEinv[sz, i] += gdE[i] * (z[g, i] - nu[i])
                # d/dPsi_inv = IB dS IB' and d/dIB = (Psi_inv + Psi_inv') IB dS, via A = IB dS
                _matmul(IB, GS, A, m)
                _matmul(A, IB.T, CM, m)
                for i in range(m):
                    for t in range(m):
                        gPsi[i, t] += CM[i, t]
                _matmul(Psym, A, CM, m)
                for i in range(m):
                    for t in range(m):
                        gIB0[i, t] += CM[i, t]
                for s in range(n_cells):
                    gu[g, js[s]] -= CM[rr[s], cc[s]]
            for t in range(n_terms):
                x = gcoef[t] * t_mult[t] * t_half[t]
                gLamD[t_i[t], t_a[t]] += x * LamD[t_k[t], t_b[t]]
                gLamD[t_k[t], t_b[t]] += x * LamD[t_i[t], t_a[t]]
            for t in range(n_u):
                gU[u_i[t], u_a[t]] += guval[t]
            if np.isnan(f):
                gu[:] = np.nan
                gIB0[:] = np.nan
                gPsi[:] = np.nan
                gLtL[:] = np.nan
                gLamD[:] = np.nan
                gS[:] = np.nan
                gUEU[:] = np.nan
                gz[:] = np.nan
                gnu[:] = np.nan
                gEinv[:] = np.nan
                gU[:] = np.nan
            # A scalar tensor is a 0-d array in PyTensor's numba backend.
            out = np.empty(())
            out[()] = f
            return out, gu, gIB0, gPsi, gLtL, gLamD, gS, gUEU, gz, gnu, gEinv, gU

        return value_and_grad, numba_cache_salt(__file__)


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # jax not installed: the JAX samplers are not available anyway
        return

    @jax_funcify.register(ClusterWoodbury)
    def _jax(op: Any, **kwargs: Any) -> Any:
        import jax
        import jax.numpy as jnp

        ri, ci, ji, mb = np.asarray(op.r), np.asarray(op.c), np.asarray(op.j), op.mb
        diff = [INPUTS.index(k) for k in GRAD_INPUTS]

        def value(*args):
            x = dict(zip(INPUTS, args, strict=True))
            u, size, n = x["u"], x["size"], x["n"]
            LamD = x["LamD"] * _mask(op.lam_pattern, x["LamD"].shape)
            U = x["U"] * _mask(op.u_pattern, x["U"].shape)
            IB = jnp.broadcast_to(x["IB0"], (u.shape[0], *x["IB0"].shape)).at[:, ri, ci].add(-u[:, ji])
            S = jnp.swapaxes(IB, 1, 2) @ x["Psi_inv"] @ IB
            S = jnp.tril(S) + jnp.swapaxes(jnp.tril(S, -1), 1, 2)
            C = S + jnp.tril(x["LtL"]) + jnp.tril(x["LtL"], -1).T
            K = x["UEU"][size]
            K = jnp.tril(K) + jnp.swapaxes(jnp.tril(K, -1), 1, 2)
            K = K.at[:, mb:, mb:].add(n[:, None, None] * S)
            p1 = LamD.shape[0]
            i, j = np.tril_indices(p1)
            Sw = jnp.zeros((u.shape[0], p1, p1)).at[:, i, j].set(x["S"]).at[:, j, i].set(x["S"])
            M = LamD.T @ Sw @ LamD
            v = ((x["z"] - x["nu"]) * x["Einv"][size]) @ U
            Lc, Lk = jnp.linalg.cholesky(C), jnp.linalg.cholesky(K)
            ld_C = 2 * jnp.sum(jnp.log(jnp.diagonal(Lc, axis1=1, axis2=2)), 1)
            ld_K = 2 * jnp.sum(jnp.log(jnp.diagonal(Lk, axis1=1, axis2=2)), 1)
            quad_C = jnp.sum(jax.scipy.linalg.cho_solve((Lc, True), M) * jnp.eye(M.shape[-1]), (1, 2))
            yk = jax.scipy.linalg.solve_triangular(Lk, v[:, :, None], lower=True)
            return jnp.sum(-0.5 * x["w"] * ld_C + 0.5 * quad_C - 0.5 * ld_K + 0.5 * jnp.sum(yk**2, (1, 2)))

        vg = jax.value_and_grad(value, argnums=tuple(diff))

        def value_and_grad(*args):
            f, grads = vg(*args)
            return (f, *grads)

        return value_and_grad


_register_numba()
_register_jax()
