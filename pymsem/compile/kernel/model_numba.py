"""The whole model's log density in one compiled call: transforms, priors and the likelihood.

:mod:`pymsem.compile.kernel.numba_impl` computes the collapsed likelihood from the parameter
groups (``theta``); this module adds what PyMC's graph adds around it, so that nutpie can
sample a model with no PyTensor function compiled at all:

- each unconstrained coordinate ``x_i`` is mapped to its constrained value by PyMC's default
  transform (log-Jacobian included), gets its prior and is written into ``theta``;
- grand means sampled whitened (``v = c + R z``, :func:`pymsem.compile.build._whitened_group`)
  get their priors on ``v``;
- correlation blocks with an LKJ prior are PyMC's ``LKJCorr`` Cholesky factors on its
  ``CholeskyCorrTransform`` (rows of a unit-diagonal lower-triangular matrix filled from the
  vector and normalized), whose correlations ``L L'`` are written into ``theta``;
- parameters equal to another by a shared label copy it.

Everything model-specific is in two arrays, built by
:func:`pymsem.compile.kernel.flat_model.flat_model`, so numba compiles this once per machine.

With missing cells (sampled, as :class:`pymsem.compile.marginal.MarginalLikelihood` samples
them: flat priors, their draws the imputations) the data's reduction is computed from the
completed data at every call, and the gradient reaches the cells through it.

Layout of the integer array ``pi``::

    n_theta, n_x, n_white, n_copy, n_lkj, n_aux, y_off, n_y_cells, z_off, n_z_cells, s_off, n_s,
    (transform, family, theta position or -1) * n_x,
    per whitened group: x offset, k, (family, theta position) * k,
    per LKJ block: x offset, n, n_pairs, (row, col) * n(n-1)/2, (a, b, theta position) * n_pairs,
    (destination, source) * n_copy

and of the float array ``pf``: ``(a, b, h0, h1, h2) * n_x`` (transform bounds and prior
hyperparameters), per whitened group its centre ``c`` (k), ``R`` (k x k, row-major) and
``(h0, h1, h2) * k``, then per LKJ block ``eta`` and the log normalizing constant. The values
the trace reads are ``theta`` followed by ``n_aux`` more: each LKJ block's factor ``L``
(row-major). The missing cells' rows and columns come in their own array (``cells``: level-1
cells, then level-2 cells), their values at ``x[y_off:]`` and ``x[z_off:]``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pymsem.compile.kernel.moderated_numba import moderated_value_and_grad, moderator_values
from pymsem.compile.kernel.numba_impl import _range_sum, complete_core
from pymsem.compile.kernel.priors import prior_logp, transform
from pymsem.compile.kernel.slopes_numba import slopes_value_and_grad

__all__ = ["model_expand", "model_value_and_grad", "moderated_expand", "slopes_model_value_and_grad"]

_jit = numba.njit(cache=True, fastmath=False, nogil=True)
#: The entry points' outer layers, inlined into their callers in numba's IR. numba optimizes each
#: compiled function's module again with all its callees linked in, so every layer between the C
#: entry point and the cluster loop re-optimizes the kernel's whole code: a cold compile pays for
#: each (``bench/compile_breakdown.py``). Large functions stay compiled on their own, where inlining
#: would cost numba's front end what it saves in LLVM (the moderated slopes' likelihood).
_inline = numba.njit(cache=True, fastmath=False, nogil=True, inline="always")
_HEADER = 12


@_jit
def _sections(pi: np.ndarray) -> tuple[int, int, int]:
    """Where the whitened groups, the LKJ blocks and the copies start in ``pi``."""
    n_x, n_white, n_lkj = pi[1], pi[2], pi[4]
    cw = _HEADER + 3 * n_x
    c = cw
    for _ in range(n_white):
        c += 2 + 2 * pi[c + 1]
    cl = c
    for _ in range(n_lkj):
        n = pi[c + 1]
        c += 3 + n * (n - 1) + 3 * pi[c + 2]
    return cw, cl, c


@_jit
def _lkj_factor(x: np.ndarray, pi: np.ndarray, c: int, L: np.ndarray) -> np.ndarray:
    """The block's factor ``L`` (into ``L``) from ``x``; returns the row norms before normalizing."""
    off, n = pi[c], pi[c + 1]
    L[:, :] = 0.0
    for i in range(n):
        L[i, i] = 1.0
    for k in range(n * (n - 1) // 2):
        L[pi[c + 3 + 2 * k], pi[c + 4 + 2 * k]] = x[off + k]
    s = np.empty(n)
    for i in range(n):
        t = 0.0
        for j in range(i + 1):
            t += L[i, j] * L[i, j]
        s[i] = math.sqrt(t)
        for j in range(i + 1):
            L[i, j] /= s[i]
    return s


@_jit
def _completed_reduction(
    x: np.ndarray,
    pi: np.ndarray,
    Y: np.ndarray,
    Z2: np.ndarray,
    size_index: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    cells: np.ndarray,
):
    """The data's reduction (pooled within scatter, each size's mean and scatter of the cluster
    vectors) from the data completed with the sampled cells.

    Rows are sorted by cluster. The within scatter is ``Yc'Yc - sum_g s_g s_g' / n_g`` with
    ``Yc`` the completed level-1 columns centred and ``s_g`` the clusters' sums: one BLAS
    product over the students (plain loops cannot vectorize a sum without fast-math). Also
    returns the cluster vectors, ``Yc`` and the centre.
    """
    y_off, n_y, z_off, n_z = pi[6], pi[7], pi[8], pi[9]
    N, p1 = Y.shape
    G, q = Z2.shape
    pb = p1 + q
    # Two passes over the students: copy (the column sums on the way), then centre (the
    # clusters' sums on the way).
    Yc = np.empty((N, p1))
    centre = np.zeros(p1)
    for i in range(N):
        for j in range(p1):
            v = Y[i, j]
            Yc[i, j] = v
            centre[j] += v
    for c in range(n_y):  # Y holds 0 in a missing cell
        v = x[y_off + c]
        Yc[cells[c, 0], cells[c, 1]] = v
        centre[cells[c, 1]] += v
    for j in range(p1):
        centre[j] /= N
    s = np.zeros((G, p1))
    start = 0
    for g in range(G):
        n = int(sizes[size_index[g]])
        for i in range(start, start + n):
            for j in range(p1):
                v = Yc[i, j] - centre[j]
                Yc[i, j] = v
                s[g, j] += v
        start += n
    ws = np.dot(Yc.T, Yc)
    for g in range(G):
        rn = 1.0 / sizes[size_index[g]]
        for j in range(p1):
            sj = s[g, j] * rn
            for m in range(p1):
                ws[j, m] -= sj * s[g, m]
    z = np.empty((G, pb))
    for g in range(G):
        n = sizes[size_index[g]]
        for j in range(p1):
            z[g, j] = s[g, j] / n + centre[j]
        for j in range(q):
            z[g, p1 + j] = Z2[g, j]
    for c in range(n_z):
        z[cells[n_y + c, 0], p1 + cells[n_y + c, 1]] = x[z_off + c]
    K = sizes.shape[0]
    means = np.zeros((K, pb))
    for g in range(G):
        for j in range(pb):
            means[size_index[g], j] += z[g, j]
    for k in range(K):
        for j in range(pb):
            means[k, j] /= counts[k]
    scatter = np.zeros((K, pb, pb))
    e = np.empty(pb)
    for g in range(G):
        k = size_index[g]
        for j in range(pb):
            e[j] = z[g, j] - means[k, j]
        for j in range(pb):
            for m in range(pb):
                scatter[k, j, m] += e[j] * e[m]
    return ws, means, scatter, z, Yc, centre


@_jit
def _cells_gradient(
    pi: np.ndarray,
    gx: np.ndarray,
    Winv: np.ndarray,
    Vinvs: np.ndarray,
    nu: np.ndarray,
    z: np.ndarray,
    Yc: np.ndarray,
    centre: np.ndarray,
    idx: np.ndarray,
    size_index: np.ndarray,
    sizes: np.ndarray,
    cells: np.ndarray,
) -> None:
    """Add the likelihood's gradient in each missing cell to ``gx``.

    In cluster ``g`` of size ``k``: ``-V_k^-1 (z_g - nu)`` for the cluster vector, and for a
    student's row ``-W^-1 (y_i - ybar_g)`` plus ``1/n_g`` of the cluster vector's (through the
    mean; the deviations' own dependence on the mean sums to zero). ``Yc`` holds the completed
    level-1 columns centred at ``centre``.
    """
    y_off, n_y, z_off, n_z = pi[6], pi[7], pi[8], pi[9]
    G, pb = z.shape
    p1 = Yc.shape[1]
    gz = np.zeros((G, pb))
    for g in range(G):
        k = size_index[g]
        for j in range(pb):
            v = 0.0
            for m in range(pb):
                v += Vinvs[k, j, m] * (z[g, m] - nu[m])
            gz[g, j] = -v
    if n_y:
        # Row i of Yc W^-1 minus its cluster's row of (s_g / n_g) W^-1 is W^-1 (y_i - ybar_g)'
        # (W^-1 symmetric): one BLAS product over the students.
        R = np.dot(Yc, Winv)
        M = np.empty((G, p1))  # per cluster: its mean's share, less its row of (s_g / n_g) W^-1
        for g in range(G):
            rn = 1.0 / sizes[size_index[g]]
            for j in range(p1):
                v = 0.0
                for m in range(p1):
                    v += (z[g, m] - centre[m]) * Winv[m, j]
                M[g, j] = gz[g, j] * rn + v
        for c in range(n_y):
            i, j = cells[c, 0], cells[c, 1]
            gx[y_off + c] += M[idx[i], j] - R[i, j]
    for c in range(n_z):
        gx[z_off + c] += gz[cells[n_y + c, 0], p1 + cells[n_y + c, 1]]


@_jit
def _skip_cells(pi: np.ndarray, i: int) -> int:
    """The first coordinate from ``i`` on that is neither a sampled missing cell nor a cluster's
    slope (three contiguous blocks, thousands of coordinates that the priors' loops jump over:
    the likelihood and the slopes' own prior read them)."""
    for _ in range(3):
        if pi[7] > 0 and i == pi[6]:
            i += pi[7]
        if pi[9] > 0 and i == pi[8]:
            i += pi[9]
        if pi[11] > 0 and i == pi[10]:
            i += pi[11]
    return i


@_jit
def _forward(x: np.ndarray, pi: np.ndarray, pf: np.ndarray):
    """``theta`` (with the LKJ factors after it), the log density of priors and Jacobians, and
    the pieces the reverse pass reads."""
    n_theta, n_x, n_white, n_copy, n_lkj, n_aux = pi[0], pi[1], pi[2], pi[3], pi[4], pi[5]
    theta = np.zeros(n_theta + n_aux)
    dv = np.empty(n_x)  # dv/dx
    gx = np.zeros(n_x)  # d(prior + log-Jacobian)/dx (0 in the missing cells: flat)
    gv = np.empty(n_x)  # d prior / dv
    lp = 0.0
    i = _skip_cells(pi, 0)
    while i < n_x:
        t, fam, pos = pi[_HEADER + 3 * i], pi[_HEADER + 1 + 3 * i], pi[_HEADER + 2 + 3 * i]
        if t == 0 and fam == 0 and pos < 0:  # a whitened coordinate: read below
            dv[i], gv[i] = 1.0, 0.0
        else:
            v, dvi, lj, dlj = transform(t, x[i], pf[5 * i], pf[5 * i + 1])
            lpv, gvi = prior_logp(fam, v, pf[5 * i + 2], pf[5 * i + 3], pf[5 * i + 4])
            lp += lj + lpv
            dv[i] = dvi
            gv[i] = gvi
            gx[i] = dlj
            if pos >= 0:
                theta[pos] = v
        i = _skip_cells(pi, i + 1)
    cw, _, cc = _sections(pi)
    n_wv = 0
    c = cw
    for _ in range(n_white):
        n_wv += pi[c + 1]
        c += 2 + 2 * pi[c + 1]
    gu = np.empty(n_wv)  # d prior / dv of the whitened groups' values
    c, cf, w = cw, 5 * n_x, 0
    for _ in range(n_white):
        off, k = pi[c], pi[c + 1]
        for j in range(k):
            u = pf[cf + j]
            for r in range(k):
                u += pf[cf + k + j * k + r] * x[off + r]
            h = cf + k + k * k + 3 * j
            lpu, gui = prior_logp(pi[c + 2 + 2 * j], u, pf[h], pf[h + 1], pf[h + 2])
            gu[w + j] = gui
            lp += lpu
            theta[pi[c + 3 + 2 * j]] = u
        c += 2 + 2 * k
        cf += k + k * k + 3 * k
        w += k
    aux = n_theta
    for _ in range(n_lkj):
        n, n_pairs = pi[c + 1], pi[c + 2]
        L = np.empty((n, n))
        s = _lkj_factor(x, pi, c, L)
        eta = pf[cf]
        lp += pf[cf + 1]
        for i in range(n):
            # LKJ's density of the factor and the transform's Jacobian, both powers of L_ii = 1/s_i.
            lp -= (2.0 * eta - 2.0 + n - (i + 1) + (i + 2)) * math.log(s[i])
            for j in range(n):
                theta[aux + i * n + j] = L[i, j]
        cp = c + 3 + n * (n - 1)
        for p in range(n_pairs):
            a, b = pi[cp + 3 * p], pi[cp + 3 * p + 1]
            r = 0.0
            for k in range(n):
                r += L[a, k] * L[b, k]
            theta[pi[cp + 3 * p + 2]] = r
        c = cp + 3 * n_pairs
        cf += 2
        aux += n * n
    for k in range(n_copy):
        theta[pi[cc + 2 * k]] = theta[pi[cc + 2 * k + 1]]
    return theta, lp, dv, gv, gx, gu


@_inline
def model_value_and_grad(
    x: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    within_scatter: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    means: np.ndarray,
    scatter: np.ndarray,
    totals: np.ndarray,
    Y: np.ndarray,
    idx: np.ndarray,
    Z2: np.ndarray,
    size_index: np.ndarray,
    cells: np.ndarray,
):
    """The log density at the unconstrained point ``x`` of a model without random slopes, and its
    gradient.

    ``(ispec, fspec, within_scatter, ...)`` are the likelihood kernel's arguments
    (:func:`pymsem.compile.kernel.numba_impl.complete_value_and_grad`); with missing cells the
    reduction is computed from ``Y`` (students' level-1 values, missing cells 0), ``idx`` (their
    clusters), ``Z2`` (level-2 values), ``size_index`` (each cluster's size in ``sizes``) and the
    sampled cells instead. The value is ``nan`` where a covariance is not positive definite,
    ``-inf`` outside a prior's support.
    """
    ext, lp, dv, gv, gx, gu = _forward(x, pi, pf)
    theta = ext[: pi[0]].copy()
    completed = pi[7] + pi[9] > 0
    z, Yc, centre = np.empty((0, 0)), np.empty((0, 0)), np.empty(0)
    if completed:
        ws_c, means_c, scatter_c, z, Yc, centre = _completed_reduction(
            x, pi, Y, Z2, size_index, sizes, counts, cells
        )
        f, gt, Winv, Vinvs, nu = complete_core(
            theta, ispec, fspec, ws_c, sizes, counts, means_c, scatter_c, totals
        )
    else:
        f, gt, Winv, Vinvs, nu = complete_core(
            theta, ispec, fspec, within_scatter, sizes, counts, means, scatter, totals
        )
    if not np.isfinite(lp) or np.isnan(f):
        gx[:] = np.nan
        return lp + f, gx
    if completed:
        _cells_gradient(pi, gx, Winv, Vinvs, nu, z, Yc, centre, idx, size_index, sizes, cells)
    _priors_backward(x, pi, pf, gt, np.zeros(ext.shape[0]), dv, gv, gx, gu)
    return lp + f, gx


@_jit
def _place_moderated(
    gx: np.ndarray, pi: np.ndarray, si: np.ndarray, gxs: np.ndarray, graw: np.ndarray
) -> None:
    """The moderated slopes' gradients in ``gx``: the slopes' coordinates', then the latent
    moderators' (where the moderation table says they start)."""
    gx[pi[10] : pi[10] + gxs.shape[0]] = gxs
    raw_off = si[si[si.shape[0] - 1] + 2]
    gx[raw_off : raw_off + graw.shape[0]] = graw


@_inline
def _slopes_likelihood(x, theta, ext, gx, pi, lik, data, want, fixed, moderated):  # type: ignore[no-untyped-def]
    """The slopes' likelihood and prior, their gradient in the slopes' (and moderators')
    coordinates and, with sampled missing cells (``want``), in the cells, added to ``gx``;
    returns ``(f, gtheta, gext)``. ``lik`` is ``(ispec, fspec, sizes, counts, totals,
    size_index, si, sf, S, z)``, ``data`` ``(Y, idx, Z2, cells)``. Moderated slopes
    (:mod:`pymsem.compile.kernel.moderated_numba`) read each cluster's packed within scatter
    (``S``) and vector (``z``) with complete data, and with sampled cells the students'
    deviations from their cluster means, computed from the completed data.

    Inlined into the C entry point, where ``want`` and ``moderated`` are its closure's
    constants: numba prunes the branches not taken before typing, so an entry point compiles
    only its own variant (it does not prune on a compiled function's constant arguments)."""
    ispec, fspec, sizes, counts, totals, size_index, si, sf, S, z = lik
    Y, _, Z2, cells = data  # the cells' positions stand in for the students' clusters
    if moderated:
        zc, D, sampled = z, S, False
        if want:  # pruned where the data are complete: the cells' statistics are not compiled
            sampled = pi[7] + pi[9] > 0
            if sampled:
                zc, D = _cluster_statistics(x, pi, Y, Z2, size_index, sizes, cells)
        f, gt, gxs, graw, gext, gD, gz = moderated_value_and_grad(
            theta, ext, x, si, sf, ispec, fspec, sizes, counts, totals, size_index, D, zc, want, fixed,
            moderated,
        )  # fmt: skip
        if not np.isnan(f):
            _place_moderated(gx, pi, si, gxs, graw)
            if want and sampled:
                _cells_gradient_slopes(pi, gx, gD, gz, size_index, sizes, cells)
        return f, gt, gext
    zc, DT = z, S
    if want:
        zc, DT = _cluster_statistics(x, pi, Y, Z2, size_index, sizes, cells)
    f, gt, gxs, gext, gDT, gz = slopes_value_and_grad(
        theta, ext, x, si, sf, ispec, fspec, sizes, counts, totals, size_index, DT, zc, want, fixed
    )
    if not np.isnan(f):
        gx[pi[10] : pi[10] + gxs.shape[0]] = gxs
        if want:
            _cells_gradient_slopes(pi, gx, gDT, gz, size_index, sizes, cells)
    return f, gt, gext


@_inline
def slopes_model_value_and_grad(
    x: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    Y: np.ndarray,
    idx: np.ndarray,
    Z2: np.ndarray,
    size_index: np.ndarray,
    cells: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
    S: np.ndarray,
    z: np.ndarray,
    want: bool,
    fixed: int,
    moderated: int,
):
    """:func:`model_value_and_grad` for a model with random slopes: the likelihood is the
    Woodbury form given the clusters' slopes (``si``, ``sf``: see
    :mod:`pymsem.compile.kernel.slopes_numba`), from each cluster's packed within scatter ``S``
    and vector ``z``, or, with sampled missing cells (``want``), from the data completed with
    them. ``want``, ``fixed`` (the cluster loop's factor count,
    :func:`~pymsem.compile.kernel.slopes_numba.loop_size`) and ``moderated`` (slopes regressed on
    between-level variables: 0 for none, else one more than the count of level-1 covariates
    measured without error) are compile-time constants, so that each entry point compiles only
    the code its models run."""
    ext, lp, dv, gv, gx, gu = _forward(x, pi, pf)
    theta = ext[: pi[0]].copy()
    lik = (ispec, fspec, sizes, counts, totals, size_index, si, sf, S, z)
    f, gt, gext = _slopes_likelihood(x, theta, ext, gx, pi, lik, (Y, idx, Z2, cells), want, fixed, moderated)
    if not np.isfinite(lp) or np.isnan(f):
        gx[:] = np.nan
        return lp + f, gx
    _priors_backward(x, pi, pf, gt, gext, dv, gv, gx, gu)
    return lp + f, gx


@_jit
def _cluster_statistics(
    x: np.ndarray,
    pi: np.ndarray,
    YT: np.ndarray,
    Z2: np.ndarray,
    size_index: np.ndarray,
    sizes: np.ndarray,
    cells: np.ndarray,
):
    """Each cluster's vector from the data completed with the sampled cells, and the students'
    deviations from their cluster means. The data ``YT`` and the deviations are item-major (p1,
    N; students sorted by cluster): each item's pass over a cluster is contiguous."""
    y_off, n_y, z_off, n_z = pi[6], pi[7], pi[8], pi[9]
    p1 = YT.shape[0]
    G, q = Z2.shape
    DT = YT.copy()
    flat = DT.ravel()
    for c in range(n_y):
        flat[cells[c, 2]] = x[y_off + c]
    z = np.empty((G, p1 + q))
    start = 0
    for g in range(G):
        end = start + int(sizes[size_index[g]])
        rn = 1.0 / (end - start)
        for j in range(p1):
            row = DT[j, start:end]
            mu = _range_sum(row) * rn
            z[g, j] = mu
            for r in range(row.shape[0]):
                row[r] -= mu
        for j in range(q):
            z[g, p1 + j] = Z2[g, j]
        start = end
    for c in range(n_z):
        z[cells[n_y + c, 0], p1 + cells[n_y + c, 1]] = x[z_off + c]
    return z, DT


@_jit
def _cells_gradient_slopes(
    pi: np.ndarray,
    gx: np.ndarray,
    gDT: np.ndarray,
    gz: np.ndarray,
    size_index: np.ndarray,
    sizes: np.ndarray,
    cells: np.ndarray,
) -> None:
    """Add each missing cell's gradient through its student's deviation and its cluster's vector.

    ``gDT`` (p1, N) is the gradient in the deviations as if the cluster means were fixed (their
    own share sums to zero over a cluster's students), so a level-1 cell gets ``gDT[j, i]`` plus
    ``1/n_g`` of its cluster vector's gradient; a level-2 cell its cluster vector's.
    """
    y_off, n_y, z_off, n_z = pi[6], pi[7], pi[8], pi[9]
    G, pb = gz.shape
    gmean = np.empty(G * pb)  # through the cluster mean, flat as the cells' positions index it
    for g in range(G):
        r = 1.0 / sizes[size_index[g]]
        for j in range(pb):
            gmean[g * pb + j] = gz[g, j] * r
    gflat = gDT.ravel()
    out = gx[y_off : y_off + n_y]
    for c in range(n_y):
        out[c] += gflat[cells[c, 2]] + gmean[cells[c, 3]]
    gzf = gz.ravel()
    for c in range(n_z):
        gx[z_off + c] += gzf[cells[n_y + c, 3]]


@_jit
def _priors_backward(
    x: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    gt: np.ndarray,
    gext: np.ndarray,
    dv: np.ndarray,
    gv: np.ndarray,
    gx: np.ndarray,
    gu: np.ndarray,
) -> None:
    """Add to ``gx`` the gradient through ``theta`` (``gt``, the likelihood's), the LKJ factors
    (``gext``, their uses besides the correlations), the transforms and the priors."""
    n_theta, n_x, n_white, n_copy, n_lkj = pi[0], pi[1], pi[2], pi[3], pi[4]
    cw, _, cc = _sections(pi)
    for k in range(n_copy - 1, -1, -1):  # a copy's gradient flows to its source
        gt[pi[cc + 2 * k + 1]] += gt[pi[cc + 2 * k]]
    i = _skip_cells(pi, 0)
    while i < n_x:
        pos = pi[_HEADER + 2 + 3 * i]
        g = gv[i] + (gt[pos] if pos >= 0 else 0.0)
        gx[i] += g * dv[i]
        i = _skip_cells(pi, i + 1)
    c, cf, w = cw, 5 * n_x, 0
    for _ in range(n_white):
        off, k = pi[c], pi[c + 1]
        for j in range(k):
            g = gu[w + j] + gt[pi[c + 3 + 2 * j]]
            for r in range(k):
                gx[off + r] += pf[cf + k + j * k + r] * g
        c += 2 + 2 * k
        cf += k + k * k + 3 * k
        w += k
    aux = n_theta
    for _ in range(n_lkj):
        off, n, n_pairs = pi[c], pi[c + 1], pi[c + 2]
        L = np.empty((n, n))
        s = _lkj_factor(x, pi, c, L)
        eta = pf[cf]
        gL = np.zeros((n, n))
        for i in range(n):  # the factor's own uses (the random slopes' covariance)
            for j in range(n):
                gL[i, j] = gext[aux + i * n + j]
        aux += n * n
        cp = c + 3 + n * (n - 1)
        for p in range(n_pairs):
            a, b, g = pi[cp + 3 * p], pi[cp + 3 * p + 1], gt[pi[cp + 3 * p + 2]]
            for k in range(n):
                gL[a, k] += g * L[b, k]
                gL[b, k] += g * L[a, k]
        # Through L = M / s (row-wise), then the log density's -c_i log s_i.
        gM = np.zeros((n, n))
        for i in range(n):
            ci = 2.0 * eta - 2.0 + n - (i + 1) + (i + 2)
            dot = 0.0
            for j in range(i + 1):
                dot += gL[i, j] * L[i, j]
            for j in range(i + 1):
                gM[i, j] = (gL[i, j] - L[i, j] * dot) / s[i] - ci * L[i, j] / s[i]
        for k in range(n * (n - 1) // 2):
            gx[off + k] += gM[pi[c + 3 + 2 * k], pi[c + 4 + 2 * k]]
        c = cp + 3 * n_pairs
        cf += 2


@_jit
def model_expand(x: np.ndarray, pi: np.ndarray, pf: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """The traced values: ``x`` itself, then ``theta[index]`` (with the LKJ factors after ``theta``)."""
    theta = _forward(x, pi, pf)[0]
    n_x = x.shape[0]
    out[:n_x] = x
    for j in range(index.shape[0]):
        out[n_x + j] = theta[index[j]]


@_jit
def moderated_expand(
    x: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    index: np.ndarray,
    out: np.ndarray,
    ispec: np.ndarray,
    fspec: np.ndarray,
    si: np.ndarray,
    Y: np.ndarray,
    Z2: np.ndarray,
    cells: np.ndarray,
) -> None:
    """:func:`model_expand` for moderated slopes: an index ``-1 - t`` is the moderators' value
    ``t`` (cluster-major, :func:`~pymsem.compile.kernel.moderated_numba.moderator_values`);
    ``Y`` is the data item-major (p1, N)."""
    theta = _forward(x, pi, pf)[0]
    eta = moderator_values(theta, x, ispec, fspec, si, pi, Z2, cells, Y.shape[0]).ravel()
    n_x = x.shape[0]
    out[:n_x] = x
    for j in range(index.shape[0]):
        out[n_x + j] = theta[index[j]] if index[j] >= 0 else eta[-1 - index[j]]
