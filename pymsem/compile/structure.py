"""Lowering: the specification becomes level matrices with free and fixed entries.

Each level is a LISREL-type model.  Within clusters the level-1 observed
variables are ``y_w = Lambda_w eta_w + eps_w`` with ``eta_w = B_w eta_w + zeta_w``;
between clusters the cluster means (and level-2 columns) are
``mu = nu + Lambda_b eta_b + eps_b`` with ``eta_b = B_b eta_b + zeta_b``.
An observed variable that enters a regression or covariance at a level becomes
a *single-indicator latent* there (loading 1, residual variance 0), which is
how latent mean centering works: its between part is the latent cluster mean,
its within part the deviation from it.  Between-level latent variables have
mean zero, so between-level predictors are grand-mean centered and the
intercepts ``nu`` are the grand means.

Free parameters are grouped by kind and level into :class:`ParamGroup`
vectors (``loading_w``, ``path_b``, ...), each becoming one PyMC variable with
a dimension named after its elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pymsem.specification.errors import MSEMSpecificationError, closest
from pymsem.specification.objects import Latent, Level
from pymsem.specification.partable import ParameterTable, Statement, level_number

__all__ = ["KINDS", "LevelStructure", "ModelStructure", "ParamGroup", "ParamRef", "lower"]

#: Parameter kinds, in the order tables list them.
KINDS = ("path", "loading", "intercept", "lv_sd", "lv_cor", "resid_sd", "resid_cor", "slope_sd")

#: Human-readable names of the kinds, used in prior tables and summaries.
KIND_TITLES = {
    "path": "regression slope",
    "loading": "factor loading",
    "intercept": "intercept (grand mean)",
    "lv_sd": "latent (residual) SD",
    "lv_cor": "latent (residual) correlation",
    "resid_sd": "indicator residual SD",
    "resid_cor": "indicator residual correlation",
    "slope_sd": "random slope SD",
}


@dataclass
class ParamGroup:
    """A vector of free parameters of one kind at one level (one PyMC variable)."""

    kind: str
    level: Level
    elements: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    #: For each element, ``(group name, index)`` of the parameter it equals (a shared label), or
    #: ``None`` where it is a free parameter of its own. Owners come first in group order.
    owners: list[tuple[str, int] | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The PyMC variable (and dimension) name, e.g. ``"loading_w"``."""
        return f"{self.kind}_{self.level.short}"

    @property
    def dim(self) -> str:
        """The PyMC dimension of the group, e.g. ``"path_w_param"``."""
        return f"{self.name}_param"

    def add(self, element: str, label: str | None = None, owner: tuple[str, int] | None = None) -> int:
        self.elements.append(element)
        self.labels.append(label)
        self.owners.append(owner)
        return len(self.elements) - 1

    @property
    def own(self) -> list[int]:
        """Positions of the elements that are free parameters of their own."""
        return [i for i, o in enumerate(self.owners) if o is None]

    def __len__(self) -> int:
        return len(self.elements)


@dataclass(frozen=True)
class ParamRef:
    """Where a single free parameter lives: group name and position."""

    group: str
    index: int
    element: str
    kind: str
    level: Level
    label: str | None


@dataclass
class LevelStructure:
    """Fixed values and free-parameter positions of one level's matrices.

    Index arrays hold, for each free entry, its row (and column) and its
    position in the level's parameter group of the matching kind.
    """

    level: Level
    observed: list[str]
    latent: list[str]
    single_indicator: list[str]
    lambda_fixed: np.ndarray
    lambda_free: np.ndarray  # (k, 3): row, col, group index
    beta_free: np.ndarray  # (k, 3): row (outcome), col (predictor), group index
    lv_sd_fixed: np.ndarray
    lv_sd_free: np.ndarray  # (k, 2): latent, group index
    lv_cor: np.ndarray  # (k, 3): i, j, group index
    resid_sd_fixed: np.ndarray
    resid_sd_free: np.ndarray  # (k, 2): observed, group index
    resid_cor: np.ndarray  # (k, 3): i, j, group index
    intercept_free: np.ndarray  # (k, 2): observed, group index (between only)
    order: list[int]  # latents in topological order (predictors first)
    depth: int  # longest regression chain, for (I - B)^-1 = sum_k B^k
    beta_random: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    # (k, 3): row, col, random-slope index, for the within paths whose slope varies over clusters

    @property
    def n_obs(self) -> int:
        return len(self.observed)

    @property
    def n_lat(self) -> int:
        return len(self.latent)

    def correlation_blocks(self) -> list[tuple[list[int], list[int]]]:
        """Sets of three or more latents whose correlations are all free, with their ``lv_cor`` rows.

        Each is a connected component of the free-correlation graph that is complete (every
        pair correlated), as the covariances of a level's exogenous variables are by default.
        Such a block gets an LKJ prior (positive definite by construction); returns
        ``(latents, rows of lv_cor)`` per block.
        """
        pairs = [(int(i), int(j)) for i, j, _ in self.lv_cor]
        parent = list(range(self.n_lat))

        def root(a: int) -> int:
            while parent[a] != a:
                a = parent[a]
            return a

        for i, j in pairs:
            parent[root(i)] = root(j)
        comps: dict[int, list[int]] = {}
        for i, _ in pairs:
            comps.setdefault(root(i), [])
        for v in range(self.n_lat):
            if root(v) in comps:
                comps[root(v)].append(v)
        out = []
        for members in comps.values():
            rows = [r for r, (i, j) in enumerate(pairs) if root(i) == root(members[0])]
            if len(members) >= 3 and len(rows) == len(members) * (len(members) - 1) // 2:
                out.append((members, rows))
        return out

    def exogenous(self) -> list[str]:
        """Latent variables that are no regression's outcome."""
        outcomes = set(self.beta_free[:, 0].tolist()) if len(self.beta_free) else set()
        return [v for i, v in enumerate(self.latent) if i not in outcomes]


@dataclass(frozen=True)
class RandomSlopeInfo:
    """A random slope: its name, the within path it modifies and its mean's position in ``path_w``."""

    name: str
    outcome: str
    predictor: str
    mean_index: int
    mean_label: str
    cor_labels: dict[str, str] = field(default_factory=dict)  # other slope -> label of the correlation
    moderators: list[tuple[int, int]] = field(default_factory=list)  # (between latent, path_b index)
    covariances: list[tuple[int, str]] = field(default_factory=list)  # (between latent, label) asked for
    predicts: list[tuple[int, int]] = field(default_factory=list)  # (between outcome, path_b index)
    # (endogenous between latent, lv_cor_b index): correlation of the slope residual and its disturbance
    disturbance_cors: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ModelStructure:
    """The lowered model: both levels, the parameter groups and the label map."""

    within: LevelStructure
    between: LevelStructure
    groups: dict[str, ParamGroup]
    labels: dict[str, ParamRef]
    level1: list[str]  # observed level-1 columns (within observed order)
    level2: list[str]  # observed level-2 columns (after level1 in between order)
    factors: dict[str, Latent]
    random_slopes: list[RandomSlopeInfo] = field(default_factory=list)
    #: Ordinal level-1 columns and their number of categories (:mod:`pymsem.compile.ordinal`).
    ordinal: dict[str, int] = field(default_factory=dict)

    def level(self, level: Level) -> LevelStructure:
        return self.within if level is Level.WITHIN else self.between

    @property
    def slopes_in_between_model(self) -> bool:
        """Whether random slopes predict between-level outcomes or covary with their disturbances.

        Such models need the likelihood that conditions on each cluster's slopes
        (:func:`pymsem.compile.random_effects.conditioned_random_slope_logp`).
        """
        return any(r.predicts or r.disturbance_cors for r in self.random_slopes)

    def refs(self) -> list[ParamRef]:
        """Every free parameter, in group order."""
        out = []
        for g in self.groups.values():
            for i, (el, lab) in enumerate(zip(g.elements, g.labels)):
                out.append(ParamRef(g.name, i, el, g.kind, g.level, lab))
        return out

    @property
    def n_free(self) -> int:
        """Number of free parameters (parameters equal by a shared label count once)."""
        return sum(len(g.own) for g in self.groups.values())


def _topological_order(
    latent: list[str], edges: list[tuple[int, int]], level: Level
) -> tuple[list[int], int]:
    """Order latents so predictors come before outcomes; raise naming a cycle if there is one."""
    n = len(latent)
    preds: dict[int, set[int]] = {i: set() for i in range(n)}
    for out, pred in edges:
        preds[out].add(pred)
    order: list[int] = []
    depth = [0] * n
    state = [0] * n  # 0 new, 1 on stack, 2 done

    def visit(i: int, stack: list[int]) -> None:
        if state[i] == 2:
            return
        if state[i] == 1:
            cyc = [*stack[stack.index(i) :], i]
            chain = " <- ".join(latent[j] for j in cyc)
            raise MSEMSpecificationError(
                f"The {level} regressions contain a cycle: {chain}. Recursive (acyclic) models "
                f"only: remove one of these paths."
            )
        state[i] = 1
        stack.append(i)
        for p in sorted(preds[i]):
            visit(p, stack)
            depth[i] = max(depth[i], depth[p] + 1)
        stack.pop()
        state[i] = 2
        order.append(i)

    for i in range(n):
        visit(i, [])
    return order, max(depth, default=0)


def _idx(rows: list[tuple[int, ...]], width: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1, width)


def _check_rows(table: ParameterTable) -> None:
    """Refuse, naming the row, what the table can say but the model cannot estimate yet."""
    factors = {r.lhs for r in table.select("=~")}
    slopes = set(table.random_slopes())
    for r in table:
        where = f"{r.text()}" + (f" ({r.origin})" if r.origin else f" (level {r.level})")
        if r.op == "~" and r.fixed is not None:
            raise MSEMSpecificationError(
                f"{where}: fixed regression coefficients are not supported yet; drop the path to fix "
                f"it at 0, or label it to make it equal to another."
            )
        if r.op == "~" and r.random is not None and r.level != 1:
            raise MSEMSpecificationError(
                f"{where}: random slope {r.random!r} on a between-level path; only within-level "
                f"(level-1) slopes can vary over clusters."
            )
        if r.op == "~~" and r.lhs != r.rhs and r.fixed is not None and r.fixed != 0:
            raise MSEMSpecificationError(
                f"{where}: covariances can be free or fixed to 0 (no covariance); fixing one to "
                f"{r.fixed:g} is not supported yet."
            )
        if r.op == "~~" and r.lhs == r.rhs and r.lhs in slopes and r.fixed is not None:
            raise MSEMSpecificationError(
                f"{where}: a random slope's variance is estimated; to make the slope fixed, drop "
                f"its random slope instead."
            )
        if r.op == "~1":
            if r.level == 1:
                raise MSEMSpecificationError(
                    f"{where}: within-cluster intercepts are the latent cluster means, a between-level "
                    f"variable; write the intercept (grand mean) at the between level (level 2)."
                )
            if r.lhs in factors and not (r.fixed == 0.0 and r.label is None):
                raise MSEMSpecificationError(
                    f"{where}: factor means are 0 in this model (between-level variables are centered at "
                    f"the grand means, which the indicators' intercepts hold); estimating one is not "
                    f"supported yet."
                )
            if r.lhs not in factors and r.fixed is not None:
                raise MSEMSpecificationError(
                    f"{where}: fixed intercepts are not supported yet; grand means are estimated."
                )


def _fix_ordinal_variances(variances: dict[str, Statement], ordinal: dict[str, int]) -> None:
    """Fix the within (residual) variance of each ordinal variable's latent response at 1.

    The probit scale: the latent response's within residual has unit variance, as in Mplus's
    and Blimp's ordinal models, so thresholds and loadings are in those units.
    """
    for v in ordinal:
        r = variances.get(v)
        if r is not None and not (r.fixed == 1.0 and r.label is None):
            raise MSEMSpecificationError(
                f"{r.text()} (within{', ' + r.origin if r.origin else ''}): {v!r} is ordinal, and the "
                f"within residual variance of its latent response is fixed at 1 (probit scale); drop "
                f"this statement."
            )
        variances[v] = Statement(1, v, "~~", v, fixed=1.0, origin="ordinal variable")


def lower(
    table: ParameterTable,
    level1: list[str],
    level2: list[str],
    auto_exogenous_covariances: bool = True,
    ordinal: dict[str, int] | None = None,
) -> ModelStructure:
    """Lower a parameter table to a :class:`ModelStructure`, adding the defaults.

    Parameters
    ----------
    table
        The model's statements (:mod:`pymsem.specification.partable`).
    level1, level2
        The observed columns the model uses that vary within clusters, and
        those that are constant within clusters, each in data order.
    auto_exogenous_covariances
        Free the covariances among exogenous latent variables of a level
        (lavaan's default); otherwise only the covariances the user names.
    ordinal
        Level-1 columns that are ordinal, with their number of categories. Each is the
        observed category of a continuous latent response (probit): its within residual
        variance (or, in a regression, its within disturbance variance) is fixed at 1 and
        its grand mean at 0, since the thresholds carry its location
        (:mod:`pymsem.compile.ordinal`).

    Notes
    -----
    Defaults, as lavaan and Mplus users expect: the first loading of each factor at
    each level is fixed to 1 unless a loading is fixed or the marker is freed (then
    the factor's variance is fixed to 1); every indicator has a residual variance at
    each level; an observed variable used in a regression or covariance at a level is
    its part at that level (the latent cluster mean between, the deviation from it
    within); the exogenous variables of a level covary; level-2 variables have a
    free grand mean. Parameters sharing a label are one parameter.
    """
    latents = table.latents()
    paths = table.paths()
    covariances = table.covariances()
    _check_rows(table)
    for r in table.select("~1", 2):
        if r.lhs in (ordinal or {}):
            raise MSEMSpecificationError(
                f"{r.text()}{' (' + r.origin + ')' if r.origin else ''}: {r.lhs!r} is ordinal; its "
                f"location is carried by its thresholds (the latent response's grand mean is 0), so "
                f"it has no intercept to set; drop this statement."
            )
    slope_rows = table.random_slopes()
    intercept_labels = {r.lhs: r.label for r in table.select("~1", 2) if r.lhs not in slope_rows and r.label}
    factors = {f.name: f for f in latents}
    groups: dict[str, ParamGroup] = {}
    random_slopes: list[RandomSlopeInfo] = []
    slope_names = {r.name for p in paths for r in p.random if r is not None}
    slope_regressions: list[tuple[str, int, int]] = []  # slope name, between latent, path_b index
    # Slope covariances are estimated (LKJ); a covariance statement between two slopes only labels it.
    slope_cor_labels: dict[frozenset[str], str | None] = {}
    kept = []
    # Regressions of random slopes on between-level variables (cross-level moderation) are kept
    # apart: the slopes are not latent variables of the between model.
    slope_paths = [p for p in paths if p.outcome in slope_names]
    for p in slope_paths:
        if p.level is not Level.BETWEEN:
            raise MSEMSpecificationError(
                f"Path {p.outcome} ~ {' + '.join(p.predictors)}: a random slope is a between-level variable; "
                f"regress it at level='between'."
            )
        for v in p.predictors:
            if v in slope_names:
                raise MSEMSpecificationError(
                    f"Path {p.outcome} ~ {v}: a random slope cannot predict another."
                )
    from pymsem.specification.objects import Path as _Path

    # Random slopes predicting between-level outcomes are kept apart, like their moderators:
    # the likelihood conditions on each cluster's slopes (see pymsem.compile.random_effects).
    slope_predictors: list[tuple[str, str, str | None]] = []  # slope, outcome, label
    trimmed = []
    for p in [p for p in paths if p.outcome not in slope_names]:
        keep = [(v, lab, r) for v, lab, r in zip(p.predictors, p.labels, p.random) if v not in slope_names]
        for v, lab in zip(p.predictors, p.labels):
            if v in slope_names:
                if p.level is not Level.BETWEEN:
                    raise MSEMSpecificationError(
                        f"Path {p.outcome} ~ {v}: a random slope is a between-level variable (one value "
                        f"per cluster); use it as a predictor at level='between'."
                    )
                slope_predictors.append((v, p.outcome, lab))
        if keep:
            v_, l_, r_ = zip(*keep)
            trimmed.append(_Path(p.outcome, v_, p.level, l_, r_))
        else:
            trimmed.append(_Path(p.outcome, (), p.level))  # keeps the outcome in the between model
    paths = trimmed
    slope_outcomes = {o for _, o, _ in slope_predictors}
    between_outcomes = {p.outcome for p in paths if p.level is Level.BETWEEN and p.predictors}
    between_outcomes |= slope_outcomes
    slope_latent_covs: list[tuple[str, str, str | None]] = []  # slope, between variable, label
    for c in covariances:
        if c.a in slope_names or c.b in slope_names:
            if c.level is not Level.BETWEEN:
                raise MSEMSpecificationError(
                    f"Covariance {c.a} ~~ {c.b} ({c.level}): random slopes are between-level variables; "
                    f"their covariances are specified at level='between'."
                )
            if c.a in slope_names and c.b in slope_names:
                slope_cor_labels[frozenset((c.a, c.b))] = c.label
            else:
                slope, other = (c.a, c.b) if c.a in slope_names else (c.b, c.a)
                slope_latent_covs.append((slope, other, c.label))
        else:
            kept.append(c)
    covariances = kept
    # A slope's covariance with an exogenous between variable is estimated as the slope's
    # regression on it (the same model: u_g splits into a part proportional to the variable and
    # an independent rest), so the collapsed likelihood for moderators applies unchanged. With an
    # endogenous variable it is the correlation of the slope's residual and that variable's
    # disturbance (e.g. a random intercept regressed on level-2 predictors).
    disturbance_covs = [(s_, o, lab) for s_, o, lab in slope_latent_covs if o in between_outcomes]
    slope_latent_covs = [(s_, o, lab) for s_, o, lab in slope_latent_covs if o not in between_outcomes]
    for slope, other, _ in slope_latent_covs:
        slope_paths.append(_Path(slope, (other,), Level.BETWEEN))

    def group(kind: str, level: Level) -> ParamGroup:
        g = ParamGroup(kind, level)
        return groups.setdefault(g.name, g)

    owner_of: dict[str, tuple[str, int, str]] = {}  # label -> (group, index, element)

    def free(kind: str, level: Level, element: str, label: str | None = None) -> int:
        """Add a free parameter; a label seen before makes it equal to that parameter."""
        g = group(kind, level)
        if label is None:
            return g.add(element)
        if label in owner_of:
            gname, idx, first = owner_of[label]
            other = groups[gname]
            if other.kind != kind:
                raise MSEMSpecificationError(
                    f"Label {label!r} names a {KIND_TITLES[other.kind]} ({first}, {other.level}) and a "
                    f"{KIND_TITLES[kind]} ({element}, {level}). A shared label makes parameters equal, "
                    f"which needs parameters of one kind; rename one of them."
                )
            return g.add(element, label, owner=(gname, idx))
        k = g.add(element, label)
        owner_of[label] = (g.name, k, element)
        return k

    levels = {}
    for level in (Level.WITHIN, Level.BETWEEN):
        lv_paths = [p for p in paths if p.level is level]
        lv_covs = [c for c in covariances if c.level is level]
        observed = list(level1) + (list(level2) if level is Level.BETWEEN else [])
        level_factors = [f for f in latents if level in f.levels]
        indicator_of = {ind: f.name for f in level_factors for ind in f.indicators}
        # Observed variables named in regressions or latent covariances become
        # single-indicator latents; indicator-pair covariances stay residual.
        structural: list[str] = []
        for p in lv_paths + ([q for q in slope_paths] if level is Level.BETWEEN else []):
            for v in (p.outcome, *p.predictors):
                if v not in factors and v not in structural and v not in slope_names:
                    structural.append(v)
        for c in lv_covs:
            if not (c.a in indicator_of and c.b in indicator_of):
                for v in (c.a, c.b):
                    if v not in factors and v not in structural:
                        structural.append(v)
        for v in structural:
            if v in indicator_of:
                raise MSEMSpecificationError(
                    f"{v!r} is an indicator of factor {indicator_of[v]!r} and also a variable in a "
                    f"{level} regression or covariance. Regress the factor instead, or drop {v!r} "
                    f"from the factor's indicators."
                )
            if v not in observed:
                raise MSEMSpecificationError(
                    f"{v!r} appears in a {level} regression or covariance but is neither a latent "
                    f"variable at the {level} level nor an observed column available there."
                    + closest(v, observed + [f.name for f in level_factors])
                )
        latent = [f.name for f in level_factors] + structural
        lat_ix = {v: i for i, v in enumerate(latent)}
        obs_ix = {v: i for i, v in enumerate(observed)}
        lam = np.zeros((len(observed), len(latent)))
        lam_free, beta_free, lv_sd_free, lv_cor, rsd_free, rcor, icpt = [], [], [], [], [], [], []
        resid_fixed = np.full(len(observed), np.nan)
        lv_fixed = np.full(len(latent), np.nan)

        num = level_number(level)
        variances = {r.lhs: r for r in table.select("~~", num) if r.lhs == r.rhs}
        if num == 1:
            _fix_ordinal_variances(variances, ordinal or {})
        for f in level_factors:
            rows = [r for r in table.select("=~", num) if r.lhs == f.name]
            fixed = {r.rhs: float(r.fixed) for r in rows if r.fixed is not None}
            if not fixed and not rows[0].free:
                fixed[rows[0].rhs] = 1.0  # marker-variable scaling
            for r in rows:
                if r.rhs in fixed:
                    lam[obs_ix[r.rhs], lat_ix[f.name]] = fixed[r.rhs]
                else:
                    k = free("loading", level, f"{r.rhs} by {f.name}", r.label)
                    lam_free.append((obs_ix[r.rhs], lat_ix[f.name], k))
            var = variances.get(f.name)
            if var is not None and var.fixed is not None:
                lv_fixed[lat_ix[f.name]] = np.sqrt(var.fixed)
            elif not fixed:
                if var is not None:
                    raise MSEMSpecificationError(
                        f"Factor {f.name!r} ({level}) has no fixed loading and a free variance "
                        f"({var.text()}), so its scale is not identified. Fix one loading (lavaan "
                        f"'{f.name} =~ 1*{rows[0].rhs} + ...') or its variance ('{f.name} ~~ 1*{f.name}')."
                    )
                lv_fixed[lat_ix[f.name]] = 1.0
        for v, r in variances.items():
            if r.fixed is not None and v in obs_ix and v not in factors:
                if r.fixed < 0:
                    raise MSEMSpecificationError(
                        f"{r.text()} ({level}): a variance cannot be fixed to {r.fixed:g} (< 0)."
                    )
                resid_fixed[obs_ix[v]] = np.sqrt(r.fixed)
        for v in structural:
            lam[obs_ix[v], lat_ix[v]] = 1.0
            resid_fixed[obs_ix[v]] = 0.0
            # An observed variable in a regression is its own latent part at this level: a fixed
            # variance (x ~~ 1*x) is that part's (residual) variance.
            if v in variances and variances[v].fixed is not None:
                lv_fixed[lat_ix[v]] = np.sqrt(variances[v].fixed)

        edges = []
        beta_random = []
        for p in lv_paths:
            for pred, lab, rnd in zip(p.predictors, p.labels, p.random):
                if rnd is not None:
                    if level is not Level.WITHIN:
                        raise MSEMSpecificationError(
                            f"Random slope {rnd.name!r} on the between-level path {p.outcome} ~ {pred}: "
                            f"slopes can vary over clusters only for within-level paths."
                        )
                    if lab is not None and lab != rnd.mean_name:
                        raise MSEMSpecificationError(
                            f"Path {p.outcome} ~ {pred} has label {lab!r} and random slope {rnd.name!r} "
                            f"with mean label {rnd.mean_name!r}; give the label once (mean_label=)."
                        )
                    lab = rnd.mean_name
                k = free("path", level, f"{p.outcome} <- {pred}", lab)
                beta_free.append((lat_ix[p.outcome], lat_ix[pred], k))
                edges.append((lat_ix[p.outcome], lat_ix[pred]))
                if rnd is not None:
                    beta_random.append((lat_ix[p.outcome], lat_ix[pred], len(random_slopes)))
                    random_slopes.append(RandomSlopeInfo(rnd.name, p.outcome, pred, k, lab))
        if level is Level.BETWEEN:
            for p in slope_paths:
                for pred, lab in zip(p.predictors, p.labels):
                    if pred not in lat_ix:
                        raise MSEMSpecificationError(
                            f"{p.outcome} ~ {pred}: {pred!r} has no between-level part; random slopes relate "
                            f"to between-level variables (latent cluster means, between factors, level-2 "
                            f"columns) only."
                        )
                    k = free("path", level, f"{p.outcome} <- {pred}", lab)
                    slope_regressions.append((p.outcome, lat_ix[pred], k))
        order, depth = _topological_order(latent, edges, level)

        for i, v in enumerate(latent):
            if np.isnan(lv_fixed[i]):
                lab = variances[v].label if v in variances else None
                lv_sd_free.append((i, free("lv_sd", level, v, lab)))
        cov_pairs: dict[tuple[int, int], str | None] = {}
        for c in lv_covs:
            if c.a in indicator_of and c.b in indicator_of:
                i, j = sorted((obs_ix[c.a], obs_ix[c.b]))
                if i == j:
                    raise MSEMSpecificationError(f"Covariance {c.a} ~~ {c.b}: a variance, not a covariance.")
                rcor.append((i, j, free("resid_cor", level, f"{observed[i]} ~~ {observed[j]}", c.label)))
            else:
                i, j = sorted((lat_ix[c.a], lat_ix[c.b]))
                if i == j:
                    raise MSEMSpecificationError(f"Covariance {c.a} ~~ {c.b}: a variance, not a covariance.")
                cov_pairs[(i, j)] = c.label
        if auto_exogenous_covariances:
            outcomes = {e[0] for e in edges}
            if level is Level.BETWEEN:
                outcomes |= {lat_ix[o] for o in slope_outcomes}
            exo = [i for i in range(len(latent)) if i not in outcomes]
            zero = table.fixed_zero_covariances(num)
            for a_ in range(len(exo)):
                for b_ in range(a_ + 1, len(exo)):
                    if frozenset((latent[exo[a_]], latent[exo[b_]])) not in zero:
                        cov_pairs.setdefault((exo[a_], exo[b_]), None)
        for (i, j), lab in sorted(cov_pairs.items()):
            lv_cor.append((i, j, free("lv_cor", level, f"{latent[i]} ~~ {latent[j]}", lab)))

        for i, v in enumerate(observed):
            if np.isnan(resid_fixed[i]):
                lab = variances[v].label if v in variances and v not in lat_ix else None
                rsd_free.append((i, free("resid_sd", level, v, lab)))
        if level is Level.BETWEEN:
            for i, v in enumerate(observed):
                if v not in (ordinal or {}):  # an ordinal variable's location is its thresholds
                    icpt.append((i, free("intercept", level, v, intercept_labels.get(v))))

        levels[level] = LevelStructure(
            level=level,
            observed=observed,
            latent=latent,
            single_indicator=structural,
            lambda_fixed=lam,
            lambda_free=_idx(lam_free, 3),
            beta_free=_idx(beta_free, 3),
            lv_sd_fixed=np.nan_to_num(lv_fixed, nan=0.0),
            lv_sd_free=_idx(lv_sd_free, 2),
            lv_cor=_idx(lv_cor, 3),
            resid_sd_fixed=np.nan_to_num(resid_fixed, nan=0.0),
            resid_sd_free=_idx(rsd_free, 2),
            resid_cor=_idx(rcor, 3),
            intercept_free=_idx(icpt, 2),
            order=order,
            depth=depth,
            beta_random=_idx(beta_random, 3),
        )

    for name, lat, k in slope_regressions:
        r = next(r for r in random_slopes if r.name == name)
        r.moderators.append((lat, k))
    between_latent = levels[Level.BETWEEN].latent
    for slope, other, label in slope_latent_covs:
        lat = between_latent.index(other)
        r = next(r for r in random_slopes if r.name == slope)
        r.covariances.append((lat, label or ""))
    for slope, outcome, label in slope_predictors:
        r = next(r for r in random_slopes if r.name == slope)
        k = free("path", Level.BETWEEN, f"{outcome} <- {slope}", label)
        r.predicts.append((between_latent.index(outcome), k))
    for slope, other, label in disturbance_covs:
        if other not in between_latent:
            raise MSEMSpecificationError(
                f"Covariance {slope} ~~ {other}: {other!r} has no between-level part; random slopes "
                f"covary with between-level variables only."
            )
        r = next(r for r in random_slopes if r.name == slope)
        k = free("lv_cor", Level.BETWEEN, f"{slope} ~~ {other}", label)
        r.disturbance_cors.append((between_latent.index(other), k))
    if random_slopes:
        slope_var = {r.lhs: r for r in table.select("~~", 2) if r.lhs == r.rhs}
        for r in random_slopes:
            free("slope_sd", Level.BETWEEN, r.name, slope_var[r.name].label if r.name in slope_var else None)
        for r in random_slopes:
            for other in random_slopes:
                lab = slope_cor_labels.get(frozenset((r.name, other.name)))
                if other.name != r.name and lab:
                    r.cor_labels[other.name] = lab
    labels: dict[str, ParamRef] = {}
    ordered = {
        k: groups[k] for k in sorted(groups, key=lambda n: (KINDS.index(groups[n].kind), n[-1] == "b"))
    }
    structure = ModelStructure(
        within=levels[Level.WITHIN],
        between=levels[Level.BETWEEN],
        groups=ordered,
        labels=labels,
        level1=list(level1),
        level2=list(level2),
        factors=factors,
        random_slopes=random_slopes,
        ordinal=dict(ordinal or {}),
    )
    for ref in structure.refs():
        if ref.label is not None:
            labels.setdefault(ref.label, ref)  # the owner: group order puts it first
    for name in [n for n, g in ordered.items() if not len(g)]:
        del ordered[name]
    return structure
