"""A built ``pm.Model`` as the arrays the whole-model kernel reads, where the kernel can take it.

The kernel (:mod:`pymsem.compile.kernel.model_numba`) covers the collapsed likelihood without
random slopes (tutorial Models 1 and 2, random-intercept, MIMIC and two-level factor models),
with random slopes in the Woodbury form (tutorial Model 3: free uncorrelated residuals) and with
slopes regressed on between-level variables, latent or level-2 columns (tutorial Model 4,
through :func:`~pymsem.compile.slope_woodbury.moderated_woodbury_plan`), each of complete data and of
data whose missing cells are sampled (the default), under priors of
:data:`pymsem.compile.kernel.priors.FAMILIES` and LKJ priors on correlation blocks.
:func:`flat_model` reads the model pymsem built (its free variables in nutpie's order, their
transforms, the traced variables) and returns a :class:`FlatModel`, or the reason it cannot
(random slopes outside those forms, ordinal variables, missing cells integrated out, another
prior family, or variables a user added to the ``pm.Model``): such models keep PyTensor's
compiled graph.
Nothing here compiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pymsem.compile.kernel.op import DATA, CompleteKernel
from pymsem.compile.kernel.priors import INTERVAL, LOG, encode_prior, transform_bounds
from pymsem.compile.kernel.spec import kernel_spec

__all__ = ["FlatModel", "flat_model"]

_HEADER = 10


@dataclass(frozen=True)
class FlatModel:
    """Everything the compiled whole-model kernel needs, as arrays, and the trace's layout."""

    pi: np.ndarray  # int64 table (see pymsem.compile.kernel.model_numba)
    pf: np.ndarray  # float64 table
    #: ispec, fspec, the data reduction (DATA), then the data whose cells are sampled (Y:
    #: item-major (p1, N) with random slopes, else row-major; the rows' clusters, the level-2
    #: values, each cluster's size index and the cells), then the random slopes' tables (si, sf) and each cluster's within scatter (its entries in the order
    #: the cluster loop reads them, then its diagonal) and vector.
    likelihood: tuple[np.ndarray, ...]
    expand_index: np.ndarray  # position in (theta, LKJ factors) of each traced value after x
    names: list[str]  # traced variables: the free variables' values, then the others
    shapes: list[tuple[int, ...]]
    n_dim: int
    x0: np.ndarray  # the starting point, unconstrained
    reparameterized: list[str]  # value variables sampled through a transform
    moderated: bool = False  # random slopes regressed on between-level variables

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The kernel's arguments after ``x``: ``pi``, ``pf`` and the likelihood's."""
        return (self.pi, self.pf, *self.likelihood)

    @property
    def slopes(self) -> bool:
        """Whether the model has random slopes (their own compiled entry point)."""
        return bool(self.likelihood[13][0] > 0)

    @property
    def slopes_variant(self) -> tuple[bool, int, int]:
        """The slopes entry point's compile-time constants: sampled missing cells, the cluster
        loop's factor count (:func:`~pymsem.compile.kernel.slopes_numba.loop_size`) and, for
        moderated slopes, one more than the count of level-1 covariates measured without error
        (0: no moderated slopes; the moderated kernel's loops over them are then unrolled)."""
        from pymsem.compile.kernel.slopes_numba import loop_size

        si = self.likelihood[13]
        moderated = 1 + int(si[si[-1] + 3]) if self.moderated else 0
        return bool(self.pi[7] + self.pi[9] > 0), loop_size(si), moderated

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The log density (PyMC's, Jacobians included) and its gradient at ``x``, through the
        C entry point nutpie calls (:mod:`pymsem.compile.nutpie_kernel`)."""
        from pymsem.compile.nutpie_kernel import value_and_grad

        f, g, code = value_and_grad(self, x)
        if code == 1:  # the kernel raised (an index or shape error): a bug, not a point outside the support
            raise RuntimeError("the whole-model kernel raised an exception at this point (return code 1)")
        return f, g

    def expand(self, x: np.ndarray) -> np.ndarray:
        """The traced values at ``x``, in :attr:`names` order, concatenated."""
        from pymsem.compile.kernel.model_numba import model_expand, moderated_expand

        out = np.empty(self.n_dim + len(self.expand_index))
        x = np.asarray(x, dtype=np.float64)
        if self.moderated:
            lik = self.likelihood
            moderated_expand(
                x, self.pi, self.pf, self.expand_index, out, lik[0], lik[1], lik[13], lik[8], lik[10], lik[12]
            )
        else:
            model_expand(x, self.pi, self.pf, self.expand_index, out)
        return out


@dataclass
class _Tables:
    """The kernel's tables as they are filled, section by section."""

    n_theta: int
    x: list[int] = field(default_factory=list)  # (transform, family, position) per coordinate
    xf: list[float] = field(default_factory=list)  # (a, b, h0, h1, h2) per coordinate
    white: list[int] = field(default_factory=list)
    white_f: list[float] = field(default_factory=list)
    lkj: list[int] = field(default_factory=list)
    lkj_f: list[float] = field(default_factory=list)
    n_white: int = 0
    n_lkj: int = 0
    n_aux: int = 0
    #: y_off, n_y, z_off, n_z (missing cells), s_off, n_s (clusters' slopes)
    cells: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0])

    def arrays(self, copies: list[int]) -> tuple[np.ndarray, np.ndarray]:
        head = [self.n_theta, len(self.x) // 3, self.n_white, len(copies) // 2, self.n_lkj, self.n_aux]
        head += self.cells
        pi = np.asarray(head + self.x + self.white + self.lkj + copies, dtype=np.int64)
        return pi, np.asarray(self.xf + self.white_f + self.lkj_f, dtype=np.float64)


def _members(compiled: Any) -> dict[str, tuple[str, list[int], str, Any]]:
    """Each PyMC variable a group is made of: ``name -> (group, element positions, role, block)``.

    Roles: ``"group"`` (the whole group is one variable), ``"part"`` (a prior family's own
    elements, :func:`pymsem.compile.build.part_names`), ``"white"`` (whitened grand means),
    ``"lkj"`` (an LKJ block's Cholesky factor; ``block`` is ``(latents, elements, pairs)``),
    ``"value"`` (the group's deterministic value) and ``"cells"`` (sampled missing cells).
    """
    from pymsem.compile.build import correlation_blocks, part_names

    k = len(compiled.structure.random_slopes)
    out: dict[str, tuple[str, list[int], str, Any]] = {
        "y_missing": ("", [], "cells", 0),
        "level2_missing": ("", [], "cells", 1),
        "slope_raw": ("", [], "slopes", None),
        "slope": ("", [], "slopes", None),
        "slope_corr_chol": ("", [], "lkj", (list(range(k)), [], [])),
        "moderator_raw": ("", [], "moderators", None),
        "moderator_values": ("", [], "moderator_values", None),
    }
    for name, g in compiled.structure.groups.items():
        parts = part_names(g, compiled.priors[name])
        out[name] = (name, list(range(len(g))), "value" if parts else "group", None)
        for part, idx in parts.items():
            out[part] = (name, list(idx), "part", None)
        out[f"{name}_white"] = (name, list(range(len(g))), "white", None)
        for b, block in enumerate(correlation_blocks(compiled.structure, name)):
            out[f"{name}_chol_{b}"] = (name, list(block[1]), "lkj", block)
    return out


def _lkj_constant(eta: float, n: int) -> float:
    """The log normalizing constant of PyMC's LKJCorr density."""
    return (n - 1) * math.lgamma(eta + 0.5 * (n - 1)) - sum(
        0.5 * k * math.log(math.pi) + math.lgamma(eta + 0.5 * (n - 1 - k)) for k in range(1, n)
    )


def _spiral(n: int) -> list[int]:
    """``(row, col)`` of each coordinate of PyMC's CholeskyCorrTransform (its "spiral" fill)."""
    n1 = n - 1
    k = np.arange(n1 * (n1 + 1) // 2)
    fill = np.concatenate([k[n1:], k[::-1]]).reshape(n1, n1)
    where = {int(fill[i, j]): (i + 1, j) for i in range(n1) for j in range(i + 1)}
    return [v for c in range(len(k)) for v in where[c]]


def _cells(Y: np.ndarray, Z2: np.ndarray, cluster_index: np.ndarray, item_major: bool) -> np.ndarray:
    """The missing cells, one row each: the level-1 cells (sorted by student), then the level-2
    cells (by cluster). Columns: the row (student or cluster), the column, the cell's position in
    the completed data as the kernel stores it (flat ``Y``, item-major or not, or flat ``Z2``), and
    its cluster vector's entry in the flat (G, p1 + q) cluster vectors. The positions are
    computed here once, not per cell in every gradient: the cells' passes are a sizeable part
    of the gradient with many of them."""
    (N, p1), q = Y.shape, Z2.shape[1]
    pb = p1 + q
    one, two = np.argwhere(np.isnan(Y)), np.argwhere(np.isnan(Z2))
    i, j = one[:, 0], one[:, 1]
    at = j * N + i if item_major else i * p1 + j
    level1 = np.column_stack([i, j, at, cluster_index[i] * pb + j])
    g, j2 = two[:, 0], two[:, 1]
    level2 = np.column_stack([g, j2, g * q + j2, g * pb + p1 + j2])
    return np.ascontiguousarray(np.concatenate([level1, level2]).reshape(-1, 4), dtype=np.int64)


def _completed_data(compiled: Any, item_major: bool = False) -> list[np.ndarray]:
    """The likelihood's data where missing cells are sampled: placeholders for the fixed
    reduction (computed per call from the completed data), then the data with their cells
    (``item_major``: p1 x N, as the random slopes' passes over the students read them)."""
    structure, data = compiled.structure, compiled.data
    Y = data.frame[structure.level1].to_numpy(float)
    Z2 = data.level2_values(structure.level2)
    uniq, size_index = np.unique(data.sizes, return_inverse=True)
    p1, pb, K = Y.shape[1], Y.shape[1] + Z2.shape[1], len(uniq)
    cells = _cells(Y, Z2, np.asarray(data.cluster_index), item_major)
    totals = [data.n_obs - data.n_clusters, float(np.log(data.sizes).sum())]
    return [
        np.zeros((p1, p1)),
        uniq.astype(np.float64),
        np.bincount(size_index).astype(np.float64),
        np.zeros((K, pb)),
        np.zeros((K, pb, pb)),
        np.asarray(totals, dtype=np.float64),
        np.ascontiguousarray(np.nan_to_num(Y.T if item_major else Y)),
        np.asarray(data.cluster_index, dtype=np.int64),
        np.ascontiguousarray(np.nan_to_num(Z2)),
        size_index.astype(np.int64),
        cells,
    ]


def _moderators(structure: Any) -> tuple[list[int], list[int]]:
    """The between latents moderating a random slope: level-2 columns, and the others."""
    lb = structure.between
    mods = sorted({lat for r in structure.random_slopes for lat, _ in r.moderators})
    known = [lat for lat in mods if lb.latent[lat] in set(structure.level2)]
    return known, [lat for lat in mods if lat not in known]


def _slopes_unsupported(compiled: Any) -> str | None:
    """Why the kernel cannot take this model's random slopes (None where it can: Model 3's kind,
    and Model 4's: slopes moderated by between-level variables, in the Woodbury form)."""
    from pymsem.compile.marginal import woodbury_applies
    from pymsem.compile.slope_woodbury import moderated_woodbury_plan

    structure = compiled.structure
    if structure.slopes_in_between_model:
        return "its random slopes enter the between-level model"
    if any(r.moderators for r in structure.random_slopes):
        known, latent = _moderators(structure)
        if moderated_woodbury_plan(structure, known, latent) is None:
            return "its moderated random slopes' likelihood is not the Woodbury form"
    elif not woodbury_applies(structure):
        return "its random slopes' likelihood is not the Woodbury form (fixed or correlated residuals)"
    if compiled.data.has_missing and not getattr(compiled.formulation, "samples_missing", False):
        return "its missing cells are integrated out (formulation 'patterns'), not sampled"
    return None


def _slope_data(compiled: Any) -> list[np.ndarray]:
    """The likelihood's data for random slopes: the complete kernel's reduction by size, and each
    cluster's size, packed within scatter and vector (the slopes' tables are filled in later).
    With missing cells, the data with their cells instead (the clusters' statistics are then
    computed at each call from the completed data), the data item-major (p1, N: the kernel's
    passes over the students are contiguous)."""
    from pymsem.compile.kernel.op import complete_reduction
    from pymsem.compile.marginal import sufficient_statistics

    structure = compiled.structure
    if compiled.data.has_missing:
        p1, pb = len(structure.level1), len(structure.level1) + len(structure.level2)
        no_stats = [np.zeros((0, p1 * (p1 + 1) // 2)), np.zeros((0, pb))]
        return [*_completed_data(compiled, item_major=True), np.zeros(1, np.int64), np.zeros(0), *no_stats]
    stats = sufficient_statistics(structure, compiled.data, per_cluster=True)
    red = complete_reduction(stats)
    p1 = len(structure.level1)
    return [
        *(np.ascontiguousarray(red[key], dtype=np.float64) for key in DATA),
        np.zeros((p1, 0)),
        np.zeros(0, np.int64),
        np.zeros((0, 0)),
        np.asarray(stats.cluster_size_index, dtype=np.int64),
        np.zeros((0, 2), np.int64),
        np.zeros(1, np.int64),
        np.zeros(0),
        np.ascontiguousarray(stats.cluster_scatter, dtype=np.float64),
        np.ascontiguousarray(stats.cluster_vectors, dtype=np.float64),
    ]


def _moderated_data(compiled: Any) -> list[np.ndarray]:
    """The likelihood's data for moderated random slopes: the data with their cells, then the
    slopes' tables' places and, with complete data, each cluster's packed within scatter (all
    level-1 variables; :func:`flat_model` keeps the columns the kernel reads) and vector (else
    computed per call from the completed data). The data are item-major (p1, N), as
    :func:`_slope_data`'s."""
    from pymsem.compile.marginal import sufficient_statistics

    base = _completed_data(compiled, item_major=True)
    p1, pb = base[6].shape[0], base[6].shape[0] + base[8].shape[1]
    if compiled.data.has_missing:
        S, z = np.zeros((0, p1 * (p1 + 1) // 2)), np.zeros((0, pb))
    else:
        stats = sufficient_statistics(compiled.structure, compiled.data, per_cluster=True)
        S, z = stats.cluster_scatter, stats.cluster_vectors
    return [*base, np.zeros(1, np.int64), np.zeros(0), np.ascontiguousarray(S, dtype=np.float64),
            np.ascontiguousarray(z, dtype=np.float64)]  # fmt: skip


def _scatter_in_term_order(scatter: np.ndarray, t_e: np.ndarray, p1: int) -> np.ndarray:
    """Each cluster's packed within scatter as the cluster loop reads it: the entries of
    ``LamD' S_g LamD``'s terms (``t_e``, from :func:`_slope_tables`) in their order, then the
    diagonal (contiguous reads in place of gathers)."""
    diag = [i * (i + 1) // 2 + i for i in range(p1)]
    return np.ascontiguousarray(np.concatenate([scatter[:, t_e], scatter[:, diag]], axis=1))


def _slope_tables(
    compiled: Any,
    offsets: dict[str, int],
    s_off: int,
    centered: bool,
    l_pos: int,
    reduced: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``si`` and ``sf`` of :mod:`pymsem.compile.kernel.slopes_numba`, and the terms' packed
    scatter entries ``t_e`` (the order in which the cluster loop reads each cluster's scatter).

    ``reduced`` (moderated slopes): the loadings' patterns at both levels and the slopes'
    ``(r, c, j)`` entries of the items the Woodbury core sees, in place of the model's.
    """
    from pymsem.compile.cluster_woodbury import loading_pattern, scatter_terms, term_groups

    structure = compiled.structure
    ls, lb = structure.within, structure.between
    if reduced is None:
        pat_w, pat_b = loading_pattern(ls), loading_pattern(lb)
        entries = np.asarray(ls.beta_random, dtype=np.int64).reshape(-1, 3)
    else:
        pat_w, pat_b, entries = reduced
    p1, m = pat_w.shape
    pb, mb = pat_b.shape
    pat_u = np.zeros((pb, mb + m), dtype=bool)
    pat_u[:, :mb] = pat_b
    pat_u[:p1, mb:] = pat_w
    t_e, t_a, t_b, t_i, t_k, t_mult = scatter_terms(tuple(map(tuple, np.argwhere(pat_w).tolist())))
    grp_a, grp_b, grp_ptr = term_groups(t_a, t_b, m)
    u_nz = np.argwhere(pat_u)
    slopes = structure.random_slopes
    si = [len(slopes), p1, m, mb, pb, int(centered), s_off, offsets["slope_sd_b"], l_pos, len(entries)]
    si += entries.ravel().tolist() + [offsets["path_w"] + r.mean_index for r in slopes]
    si += [len(t_e), *t_e, *t_a, *t_b, *t_i, *t_k]
    si += [len(grp_a), *grp_a, *grp_b, *grp_ptr]
    si += [len(u_nz), *u_nz[:, 0], *u_nz[:, 1]]
    sf = [*t_mult, *np.where(t_a == t_b, 0.5, 1.0)]
    return np.asarray(si, dtype=np.int64), np.asarray(sf, dtype=np.float64), t_e


def _moderated_tables(
    compiled: Any, offsets: dict[str, int], s_off: int, centered: bool, l_pos: int, raw_off: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``si`` (the Woodbury core's table for the items, then the moderation table of
    :mod:`pymsem.compile.kernel.moderated_numba`, then where that starts), ``sf``, and the
    columns of the packed within scatter that the kernel reads with complete data, in its order:
    the items' entries at the core's terms, the items' diagonal, then ``s_XI`` and ``S_XX``
    (row-major; ``X`` the covariates measured without error)."""
    from pymsem.compile.cluster_woodbury import loading_pattern
    from pymsem.compile.slope_woodbury import _packed, moderated_woodbury_plan

    structure = compiled.structure
    ls, lb = structure.within, structure.between
    known, latent = _moderators(structure)
    plan = moderated_woodbury_plan(structure, known, latent)
    assert plan is not None  # _slopes_unsupported checked it
    pos_I = {a: i for i, a in enumerate(plan.item_lat)}
    pos_X = {a: i for i, a in enumerate(plan.exact_lat)}
    br = np.asarray(ls.beta_random, dtype=np.int64).reshape(-1, 3)
    entries = np.array([[pos_I[r], pos_I[c], j] for r, c, j in br if c in pos_I], dtype=np.int64)
    ix = [v for r, c, j in br if c in pos_X for v in (pos_I[r], pos_X[c], j)]
    pat_w = loading_pattern(ls)[plan.items][:, plan.item_lat]
    pat_b = loading_pattern(lb)[plan.rows][:, plan.between_lat]
    si, sf, t_e = _slope_tables(
        compiled, offsets, s_off, centered, l_pos, (pat_w, pat_b, entries.reshape(-1, 3))
    )
    mods = sorted(known + latent)
    gamma = [
        v
        for j, r in enumerate(structure.random_slopes)
        for lat, k in r.moderators
        for v in (j, mods.index(lat), offsets["path_b"] + k)
    ]
    table = [len(mods), len(known), raw_off, len(plan.exact), len(plan.items), len(plan.item_lat)]
    table += [len(plan.rows), len(plan.between_lat), ls.depth, lb.depth, len(gamma) // 3, len(ix) // 3]
    table += [compiled.data.n_clusters, *mods, *plan.exact, *plan.exact_lat, *plan.items]
    table += [*plan.item_lat, *plan.rows, *plan.between_lat, *gamma, *ix]
    p1 = len(structure.level1)
    table += [p1 + structure.level2.index(lb.latent[lat]) if lat in known else -1 for lat in mods]
    items, exact = list(plan.items), list(plan.exact)
    ra, rb = np.tril_indices(len(items))  # the items' packed entries t_e, as (row, column)
    pairs = [(items[ra[e]], items[rb[e]]) for e in t_e] + [(i, i) for i in items]
    pairs += [(x, i) for x in exact for i in items] + [(x, y) for x in exact for y in exact]
    cols = np.array([_packed(a, b) for a, b in pairs], dtype=np.int64)
    si = np.concatenate([si, np.asarray(table, dtype=np.int64), [len(si)]]).astype(np.int64)
    return si, sf, cols


def flat_model(compiled: Any, init: dict[str, np.ndarray]) -> FlatModel | str:
    """The kernel's tables for ``compiled`` (a :class:`~pymsem.compile.build.CompiledModel`).

    ``init`` holds the starting values of the free variables (constrained, by name); variables
    it lacks start where PyMC starts them (an LKJ factor at the identity). Returns the reason,
    as a string, where the kernel cannot evaluate this model.
    """
    model = compiled.pymc_model
    structure = compiled.structure
    if model.observed_RVs:
        return "the model has observed variables"
    if structure.ordinal:
        return "it has ordinal variables"
    pots = {p.name: p for p in model.potentials}
    loglik = pots.pop("loglik", None)
    spec = kernel_spec(structure)
    # Parameters the likelihood kernel does not read (the slopes' SDs) get places after its own.
    offsets = dict(spec.offsets)
    for gname, g in structure.groups.items():
        if gname not in offsets:
            if g.kind != "slope_sd":
                return f"it has parameters ({gname}) the likelihood kernel does not read"
            offsets[gname] = spec.n_theta + sum(
                len(structure.groups[o]) for o in offsets if o not in spec.offsets
            )
    n_theta = spec.n_theta + sum(len(structure.groups[o]) for o in offsets if o not in spec.offsets)
    p1 = len(structure.level1)
    moderated = False
    raw_off = -1
    no_slopes: list[np.ndarray] = [np.zeros(1, np.int64), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))]
    if structure.random_slopes:
        why = _slopes_unsupported(compiled)
        if why:
            return why
        moderated = any(r.moderators for r in structure.random_slopes)
        data = _moderated_data(compiled) if moderated else _slope_data(compiled)
    elif compiled.data.has_missing:
        if not getattr(compiled.formulation, "samples_missing", False):
            return "its missing cells are integrated out (formulation 'patterns'), not sampled"
        data = _completed_data(compiled) + no_slopes
    else:
        if loglik is None or loglik.owner is None or not isinstance(loglik.owner.op, CompleteKernel):
            return "its likelihood is not the complete-data kernel"
        if not np.array_equal(spec.ispec, loglik.owner.inputs[1].data):
            return "its likelihood's specification differs from the structure's"
        data = []
        for key in DATA:
            var = model.named_vars.get(f"kernel_{key}")
            if var is None:
                return f"its likelihood's data kernel_{key} is missing"
            data.append(np.ascontiguousarray(var.get_value(), dtype=np.float64))
        data += [np.zeros((0, p1)), np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros(0, np.int64)]
        data += [np.zeros((0, 2), np.int64), *no_slopes]
    members = _members(compiled)
    tables = _Tables(n_theta)
    slope_rv: str | None = None
    x0: list[np.ndarray] = []
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    reparameterized: list[str] = []
    aux: dict[str, int] = {}  # LKJ factor -> its first position after theta
    offset = 0
    for rv in model.free_RVs:
        if rv.name not in members or members[rv.name][2] == "value":
            return f"it has a variable {rv.name!r} that pymsem did not create"
        gname, idx, role, block = members[rv.name]
        value = model.rvs_to_values[rv]
        if role == "cells":
            # Flat, untransformed: their density is the likelihood's. They start where PyMC does.
            start = np.array(model.rvs_to_initial_values[rv], dtype=np.float64).ravel()
            tables.cells[2 * block : 2 * block + 2] = [offset, start.size]
            tables.x += [0, 0, -1] * start.size
            tables.xf += [0.0] * (5 * start.size)
            names.append(value.name)
            shapes.append(start.shape)
            x0.append(start)
            offset += start.size
            continue
        if role == "slopes":
            # Each cluster's slopes (non-centered: standard normal; centered: the slopes), whose
            # prior the slopes' part of the kernel evaluates.
            start = np.array(init[rv.name], dtype=np.float64)
            tables.cells[4:6] = [offset, start.size]
            tables.x += [0, 0, -1] * start.size
            tables.xf += [0.0] * (5 * start.size)
            slope_rv = rv.name
            names.append(value.name)
            shapes.append(start.shape)
            x0.append(start.ravel())
            offset += start.size
            continue
        if role == "moderators":
            # The latent moderators' standard normal coordinates (their prior is the kernel's).
            start = np.array(init.get(rv.name, np.zeros(0)), dtype=np.float64)
            if start.size == 0:
                start = np.array(model.rvs_to_initial_values[rv], dtype=np.float64)
            raw_off = offset
            tables.x += [0, 0, -1] * start.size
            tables.xf += [0.0] * (5 * start.size)
            names.append(value.name)
            shapes.append(start.shape)
            x0.append(start.ravel())
            offset += start.size
            continue
        priors = [compiled.priors[gname][i].prior for i in idx]
        if rv.name == "slope_corr_chol":
            priors = [compiled.priors["slope_cor"][0].prior]
        encoded = [encode_prior(p.distribution, p.params) for p in priors] if role != "lkj" else []
        bad = next((e for e in encoded if isinstance(e, str)), None)
        if bad is not None:
            return bad
        if role == "lkj":
            n = len(block[0])
            where = {m: a for a, m in enumerate(block[0])}
            eta = float(priors[0].params["eta"])
            pairs = [v for (i, j), el in zip(block[2], block[1], strict=True)
                     for v in (where[i], where[j], offsets[gname] + el)]  # fmt: skip
            tables.lkj += [offset, n, len(block[1]), *_spiral(n), *pairs]
            tables.lkj_f += [eta, _lkj_constant(eta, n)]
            tables.x += [0, 0, -1] * (n * (n - 1) // 2)
            tables.xf += [0.0] * (5 * n * (n - 1) // 2)
            aux[rv.name] = n_theta + tables.n_aux
            tables.n_lkj += 1
            tables.n_aux += n * n
            start = np.zeros(n * (n - 1) // 2)
        elif rv.name not in init:
            return f"it has no starting value for {rv.name!r}"
        elif role == "white":
            start = np.array(init[rv.name], dtype=np.float64).ravel()
            white = model.named_vars[f"white_{gname}"].get_value()
            tables.white += [offset, len(idx)]
            for (fam, _), i in zip(encoded, idx, strict=True):
                tables.white += [fam.code, offsets[gname] + i]
            tables.white_f += [*white[:, 0], *white[:, 1:].ravel(), *[v for _, h in encoded for v in h]]
            tables.x += [0, 0, -1] * len(idx)
            tables.xf += [0.0] * (5 * len(idx))
            tables.n_white += 1
            pots.pop(f"{gname}_prior", None)
        else:
            start = np.array(init[rv.name], dtype=np.float64).ravel()  # a copy: transformed below
            trans = model.rvs_to_transforms.get(rv)
            for j, ((fam, h), i, prior) in enumerate(zip(encoded, idx, priors, strict=True)):
                if (None if trans is None else type(trans).__name__) != fam.transform_name:
                    return f"{rv.name}'s transform is not PyMC's default for {prior.distribution}"
                a, b = transform_bounds(prior.distribution, prior.params)
                tables.x += [fam.transform, fam.code, offsets[gname] + i]
                tables.xf += [a, b, *h]
                v = start[j]
                start[j] = (
                    np.log(v)
                    if fam.transform == LOG
                    else (np.log((v - a) / (b - v)) if fam.transform == INTERVAL else v)
                )
        if model.rvs_to_transforms.get(rv) is not None:
            reparameterized.append(value.name)
        names.append(value.name)
        shapes.append(start.shape)
        x0.append(start)
        offset += start.size
    if pots:
        return f"it has potentials pymsem did not create ({', '.join(sorted(pots))})"
    copies = [
        v
        for gname, g in structure.groups.items()
        for i, owner in enumerate(g.owners)
        if owner is not None
        for v in (offsets[gname] + i, offsets[owner[0]] + owner[1])
    ]
    joined = set(names)
    expand: list[int] = []
    for var in model.unobserved_value_vars:
        if var.name in joined:
            continue
        if var.name not in members:
            return f"it traces a variable {var.name!r} that pymsem did not create"
        gname, idx, role, block = members[var.name]
        if role == "moderator_values":
            if not moderated:
                return "it traces moderators' values the kernel does not compute"
            n_mods = sum(len(group) for group in _moderators(structure))
            shapes.append((compiled.data.n_clusters, n_mods))
            expand += [-1 - t for t in range(compiled.data.n_clusters * n_mods)]
        elif role == "lkj":
            n = len(block[0])
            shapes.append((n, n))
            expand += list(range(aux[var.name], aux[var.name] + n * n))
        else:
            shapes.append((len(idx),))
            expand += [offsets[gname] + i for i in idx]
        names.append(var.name)
    if structure.random_slopes:
        if slope_rv is None:
            return "its random slopes are not among its variables"
        args = (compiled, offsets, tables.cells[4], slope_rv == "slope", aux.get("slope_corr_chol", -1))
        if moderated:
            if raw_off < 0 and _moderators(structure)[1]:
                return "its moderators' coordinates are not among its variables"
            data[-4], data[-3], cols = _moderated_tables(*args, max(raw_off, 0))
            if not compiled.data.has_missing:
                data[-2] = np.ascontiguousarray(data[-2][:, cols])
        else:
            data[-4], data[-3], t_e = _slope_tables(*args)
            if not compiled.data.has_missing:
                data[-2] = _scatter_in_term_order(data[-2], t_e, len(structure.level1))
    pi, pf = tables.arrays(copies)
    return FlatModel(
        pi=pi,
        pf=pf,
        likelihood=(spec.ispec, spec.fspec, *data),
        expand_index=np.asarray(expand, dtype=np.int64),
        names=names,
        shapes=shapes,
        n_dim=offset,
        x0=np.concatenate(x0) if x0 else np.zeros(0),
        reparameterized=reparameterized,
        moderated=moderated,
    )
