"""Compile a lowered structure into a ``pm.Model``: priors, matrices, likelihood."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pymsem.compile.likelihood import Formulation, get_formulation
from pymsem.compile.matrices import level_matrices, pytensor_ops
from pymsem.compile.scales import Scales, initial_values
from pymsem.compile.slopes import SlopeSettings, centered_slopes
from pymsem.compile.structure import KIND_TITLES, ModelStructure, ParamGroup
from pymsem.priors import Prior, ResolvedPrior, default_prior
from pymsem.specification.data import ClusteredData
from pymsem.specification.errors import MSEMSpecificationError, closest

__all__ = ["CompiledModel", "build_pymc_model", "prior_table", "resolve_priors"]


def _override_keys(group: ParamGroup, i: int) -> list[str]:
    """Keys that can set this element's prior, most specific first."""
    keys = []
    if group.labels[i]:
        keys.append(group.labels[i])
    keys += [f"{group.name}[{group.elements[i]}]", group.name, group.kind]
    return keys


def valid_prior_keys(structure: ModelStructure) -> set[str]:
    keys: set[str] = set()
    for g in structure.groups.values():
        for i in range(len(g)):
            keys.update(_override_keys(g, i))
    from pymsem.compile.structure import KINDS

    if len(structure.random_slopes) > 1:
        keys.add("slope_cor")
    return keys | set(KINDS)


def resolve_priors(
    structure: ModelStructure, scales: Scales, overrides: dict[str, Prior]
) -> dict[str, list[ResolvedPrior]]:
    """The prior of every free parameter, by group, user overrides over data-scaled defaults."""
    valid = valid_prior_keys(structure)
    for key in overrides:
        if key not in valid:
            raise MSEMSpecificationError(
                f"set_prior: {key!r} names no parameter of this model. Use a label, a PyMC variable "
                f"name such as 'path_w', an element such as 'path_w[INT <- REL]', or a kind."
                + closest(key, valid)
            )
    out: dict[str, list[ResolvedPrior]] = {}
    for g in structure.groups.values():
        res = []
        for i, el in enumerate(g.elements):
            key = next((k for k in _override_keys(g, i) if k in overrides), None)
            if key is not None:
                res.append(ResolvedPrior(overrides[key], f"user: {key}"))
            else:
                scale, center = scales.element_scale(g.kind, g.level, el)
                prior, rule = default_prior(g.kind, scale, center)
                res.append(ResolvedPrior(prior, f"default: {rule}"))
        out[g.name] = res
    for g in structure.groups.values():
        ls = structure.level(g.level)
        for members, idx, _ in correlation_blocks(structure, g.name):
            if any(g.owners[k] is not None or not out[g.name][k].source.startswith("default") for k in idx):
                continue  # a user's prior or an equality constraint on one of them: element by element
            names = ", ".join(ls.latent[m] for m in members)
            for k in idx:
                out[g.name][k] = ResolvedPrior(
                    Prior("LKJCorr", eta=1.0), f"default: LKJ over ({names}), uniform and positive definite"
                )
    for g in structure.groups.values():
        for i, owner in enumerate(g.owners):
            if owner is not None:
                first = out[owner[0]][owner[1]]
                equal = structure.groups[owner[0]].elements[owner[1]]
                out[g.name][i] = ResolvedPrior(first.prior, f"equal to {g.labels[i]} ({equal})")
    if len(structure.random_slopes) > 1:
        from pymsem.compile.slopes import DEFAULT_SLOPE_CORR_PRIOR

        if "slope_cor" in overrides:
            if overrides["slope_cor"].distribution != "LKJCorr":
                raise MSEMSpecificationError(
                    "The prior of the random slope correlations must be an LKJCorr prior."
                )
            out["slope_cor"] = [ResolvedPrior(overrides["slope_cor"], "user: slope_cor")]
        else:
            out["slope_cor"] = [ResolvedPrior(DEFAULT_SLOPE_CORR_PRIOR, "default: mild shrinkage to 0")]
    return out


def prior_table(structure: ModelStructure, priors: dict[str, list[ResolvedPrior]]) -> pd.DataFrame:
    """The priors as a DataFrame: level, kind, parameter, label, variable, prior, source."""
    rows = []
    for g in structure.groups.values():
        for i, el in enumerate(g.elements):
            rp = priors[g.name][i]
            rows.append(
                {
                    "level": str(g.level),
                    "kind": KIND_TITLES[g.kind],
                    "parameter": el,
                    "label": g.labels[i] or "",
                    "variable": f"{g.name}[{el}]",
                    "prior": repr(rp.prior),
                    "source": rp.source,
                }
            )
    if "slope_cor" in priors:
        rp = priors["slope_cor"][0]
        names = ", ".join(r.name for r in structure.random_slopes)
        rows.append(
            {
                "level": "between",
                "kind": "random slope correlations",
                "parameter": f"cor({names})",
                "label": "",
                "variable": "slope_corr_chol",
                "prior": repr(rp.prior),
                "source": rp.source,
            }
        )
    return pd.DataFrame(rows)


def _parts(priors: list[ResolvedPrior], own: list[int] | None = None) -> dict[tuple, list[int]]:
    """Elements grouped by prior family and parameter names, in first-seen order.

    ``own`` restricts them to the elements that are parameters of their own (not equal by a
    shared label to an earlier one).
    """
    parts: dict[tuple, list[int]] = {}
    for i in range(len(priors)) if own is None else own:
        rp = priors[i]
        parts.setdefault((rp.prior.distribution, tuple(rp.prior.params)), []).append(i)
    return parts


def part_names(g: ParamGroup, priors: list[ResolvedPrior]) -> dict[str, list[int]]:
    """The PyMC variables holding a group's own elements, when the group is not one variable.

    A group is one variable when all its elements are its own and share a prior family;
    otherwise each family is a variable (``loading_w_normal``) or, with one family, the own
    elements are ``<group>_free``, and the group is a ``pm.Deterministic`` over them.
    """
    parts = _parts(priors, g.own)
    if len(g.own) == len(g) and len(parts) <= 1 and all(d != "LKJCorr" for d, _ in parts):
        return {}
    if len(parts) == 1 and len(g.own) < len(g):
        return {f"{g.name}_free": next(iter(parts.values()))}
    return {f"{g.name}_{dist.lower()}": idx for (dist, _), idx in parts.items()}


class _Hyperparameters:
    """Every prior hyperparameter in one ``pm.Data`` vector, handed out in creation order.

    Data, not constants: the default priors scale with the data, and as constants they would
    tie the compiled log density to one data set. One vector, not one ``pm.Data`` each: every
    shared variable adds to nutpie's compiled wrapper, which is never cached.
    """

    def __init__(self, structure: ModelStructure, priors: dict[str, list[ResolvedPrior]]) -> None:
        import pymc as pm

        flat = [
            np.asarray([priors[name][i].prior.params[k] for i in idx], float)
            for name, g in structure.groups.items()
            for (_, keys), idx in _parts(priors[name], g.own).items()
            for k in keys
        ]
        self.data = pm.Data("prior_hyperparameters", np.concatenate(flat) if flat else np.zeros(0))
        self.pos = 0

    def take(self, idx: list[int], keys: tuple[str, ...]) -> dict[str, Any]:
        out = {}
        for k in keys:
            out[k] = self.data[self.pos : self.pos + len(idx)]
            self.pos += len(idx)
        return out


def _create_group(
    g: ParamGroup,
    priors: list[ResolvedPrior],
    hyperparameters: _Hyperparameters,
    white: np.ndarray | None = None,
    created: dict[str, Any] | None = None,
    blocks: list[tuple[list[int], list[int]]] | None = None,
) -> Any:
    """One PyMC variable per group; elements whose prior family differs get their own variable.

    With ``white`` (a matrix ``R``), the group is sampled as ``center + R z`` instead; see
    :func:`_whitened_group`. Elements equal to an earlier parameter (a shared label) are taken
    from ``created``, the groups made so far.
    """
    import pymc as pm
    import pytensor.tensor as pt

    hyper = hyperparameters.take
    parts = _parts(priors, g.own)
    if white is not None and len(g.own) == len(g):
        return _whitened_group(g, parts, hyper, white)
    names = part_names(g, priors)
    if len(g.own) == len(g) and len(parts) == 1 and next(iter(parts))[0] != "LKJCorr":
        ((dist, keys),) = parts
        return getattr(pm, dist)(g.name, **hyper(list(range(len(g))), keys), dims=g.dim)
    vec = pt.zeros(len(g))
    model = pm.modelcontext(None)
    for ((dist, keys), idx), name in zip(parts.items(), names):
        if dist == "LKJCorr":
            vec = _lkj_blocks(g, idx, hyper(idx, keys), vec, blocks or [])
            continue
        dim = f"{name}_dim"
        model.add_coord(dim, [g.elements[i] for i in idx])
        rv = getattr(pm, dist)(name, **hyper(idx, keys), dims=dim)
        vec = pt.set_subtensor(vec[np.asarray(idx)], rv)
    for i, owner in enumerate(g.owners):
        if owner is not None:
            vec = pt.set_subtensor(vec[i], (created or {})[owner[0]][owner[1]])
    return pm.Deterministic(g.name, vec, dims=g.dim)


def _lkj_blocks(g: ParamGroup, idx: list[int], hyper: dict[str, Any], vec: Any, blocks: list[Any]) -> Any:
    """Correlations of complete blocks from LKJ-distributed correlation matrices.

    Independent priors on the correlations of three or more variables admit matrices that are
    not positive definite; an LKJ Cholesky factor per block cannot. ``blocks`` holds, for each
    block, its latents, its element positions in ``g`` and each element's pair of latents.
    """
    import pymc as pm
    import pytensor.tensor as pt

    eta = hyper["eta"]
    for b, (members, elems, pairs) in enumerate(blocks):
        if not set(elems) <= set(idx):
            continue
        L = pm.LKJCorr(f"{g.name}_chol_{b}", n=len(members), eta=eta[idx.index(elems[0])])
        R = pt.dot(L, L.T)
        where = {m: a for a, m in enumerate(members)}
        rows = np.asarray([where[i] for i, _ in pairs])
        cols = np.asarray([where[j] for _, j in pairs])
        vec = pt.set_subtensor(vec[np.asarray(elems)], R[rows, cols])
    return vec


def correlation_blocks(structure: ModelStructure, group: str) -> list[Any]:
    """``(latents, element positions, latent pairs)`` of the complete correlation blocks of a group."""
    g = structure.groups.get(group)
    if g is None or g.kind != "lv_cor":
        return []
    ls = structure.level(g.level)
    out = []
    for members, rows in ls.correlation_blocks():
        elems = [int(ls.lv_cor[r, 2]) for r in rows]
        pairs = [(int(ls.lv_cor[r, 0]), int(ls.lv_cor[r, 1])) for r in rows]
        out.append((members, elems, pairs))
    return out


def _whitened_group(g: ParamGroup, parts: dict[tuple, list[int]], hyper: Any, white: np.ndarray) -> Any:
    """The grand means as ``center + R z``, with ``R R'`` the data's covariance of cluster means / G.

    The grand means of indicators of one between factor are strongly correlated a posteriori
    (their posterior covariance is about ``Cov(cluster means) / G``), a ridge that a diagonal
    mass matrix crosses slowly. ``z`` (``<name>_white``) is nearly uncorrelated. The map is
    linear with a constant Jacobian, so the priors, added on the grand means themselves as a
    ``pm.Potential``, and the posterior are unchanged.
    """
    import pymc as pm
    import pytensor.tensor as pt

    white_data = pm.Data(f"white_{g.name}", white)  # [center | R]
    center, root = white_data[:, 0], white_data[:, 1:]
    z = pm.Flat(f"{g.name}_white", dims=g.dim)
    value = pm.Deterministic(g.name, center + pt.dot(root, z), dims=g.dim)
    logp = 0.0
    for (dist, keys), idx in parts.items():
        rv = getattr(pm, dist).dist(**hyper(idx, keys))
        logp = logp + pm.logp(rv, value[np.asarray(idx)]).sum()
    pm.Potential(f"{g.name}_prior", logp)
    return value


def whitening(structure: ModelStructure, scales: Scales) -> dict[str, np.ndarray]:
    """``[center | R]`` for each intercept group with two or more grand means (see ``_whitened_group``)."""
    out = {}
    for name, g in structure.groups.items():
        if g.kind == "intercept" and len(g) > 1 and len(g.own) == len(g):
            cols = list(g.elements)
            center = np.asarray([scales.mean[c] for c in cols])
            out[name] = np.column_stack([center, scales.cluster_mean_root(cols)])
    return out


@dataclass
class CompiledModel:
    """A built ``pm.Model`` with what sampling and post-processing need."""

    pymc_model: Any
    structure: ModelStructure
    data: ClusteredData
    formulation: Formulation
    priors: dict[str, list[ResolvedPrior]]
    initial_values: dict[str, np.ndarray] = field(default_factory=dict)
    #: What :mod:`pymsem.sample` derives from this model once and keeps for its next fits
    #: (compiled sampler functions by sampler and backend, the mass-matrix adaptation).
    sampler_cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


def build_pymc_model(
    structure: ModelStructure,
    data: ClusteredData,
    overrides: dict[str, Prior] | None = None,
    formulation: str = "auto",
    slopes: str = "auto",
    whiten: bool = True,
) -> CompiledModel:
    """Compile the structure and data into a ``pm.Model``.

    Parameters are vectors named after their kind and level (``path_w``,
    ``loading_b``, ``lv_sd_w``, ...), with dimensions whose coordinates are
    the parameters (``"INT <- REL"``, ``"ACH2 by ACH"``). ``slopes`` chooses the random
    slopes' parametrization (``"auto"``, ``"centered"``, ``"noncentered"``; see
    :mod:`pymsem.compile.slopes`). ``whiten`` samples the grand means through a data-based
    linear map (see ``_whitened_group``; the posterior is the same either way).
    """
    import pymc as pm

    from pymsem.compile.pytensor_config import no_c_blas

    no_c_blas()
    scales = Scales(structure, data)
    priors = resolve_priors(structure, scales, overrides or {})
    form = get_formulation(formulation, structure)
    coords = {g.dim: list(g.elements) for g in structure.groups.values()}
    coords["cluster"] = [str(c) for c in data.cluster_ids]
    centered = centered_slopes(
        slopes,
        data.sizes,
        any(r.moderators for r in structure.random_slopes) or structure.slopes_in_between_model,
    )
    if structure.random_slopes:
        corr = priors["slope_cor"][0].prior if "slope_cor" in priors else SlopeSettings.corr_prior
        form.slopes = SlopeSettings(corr, centered)  # type: ignore[attr-defined]
    white = whitening(structure, scales) if whiten else {}
    inits = initial_values(structure, scales)
    for name, w in white.items():
        inits[f"{name}_white"] = np.linalg.solve(w[:, 1:], inits[name] - w[:, 0])
    for name, g in structure.groups.items():
        for part, idx in part_names(g, priors[name]).items():
            inits[part] = np.asarray(inits[name])[idx]
    with pm.Model(coords=coords) as model:
        hyperparameters = _Hyperparameters(structure, priors)
        params: dict[str, Any] = {}
        for name, g in structure.groups.items():
            blocks = correlation_blocks(structure, name)
            params[name] = _create_group(g, priors[name], hyperparameters, white.get(name), params, blocks)
        ops = pytensor_ops()
        within = level_matrices(structure.within, params, ops)
        between = level_matrices(structure.between, params, ops)
        form.add(structure, data, within, between, params)
    return CompiledModel(model, structure, data, form, priors, inits)
