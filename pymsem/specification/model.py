"""The user-facing builder: ``MSEM(data, cluster=...)`` with a fluent API.

The builder only records and validates the specification; it builds no
PyMC object until :meth:`MSEM.build` or :meth:`MSEM.fit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from pymsem.specification.data import ClusteredData, prepare_data, varying_clusters
from pymsem.specification.errors import MSEMDataError, MSEMSpecificationError, closest
from pymsem.specification.objects import Covariance, Derived, Latent, Level, Path, RandomSlope, as_level
from pymsem.specification.partable import ParameterTable, Statement, level_number

if TYPE_CHECKING:
    from pymsem.compile.build import CompiledModel
    from pymsem.compile.structure import ModelStructure
    from pymsem.priors import Prior
    from pymsem.results.diagram import Diagram
    from pymsem.results.fit import MSEMFit
    from pymsem.specification.missingness import MissingReport

__all__ = ["MSEM"]


def _as_tuple(x: str | Iterable[Any] | None) -> tuple:
    if x is None:
        return ()
    if isinstance(x, (str, RandomSlope)):
        return (x,)
    return tuple(x)


class MSEM:
    """A two-level structural equation model, built step by step.

    Parameters
    ----------
    data
        One row per level-1 unit (student), with a cluster id column.
    cluster
        Name of the cluster id column (e.g. ``"schid"``).
    level2
        Columns that are level-2 (cluster) variables. Columns constant within
        every cluster are recognized as level-2 without being listed; listing a
        column here checks that it is indeed constant within clusters.
    drop_missing_cluster
        Rows whose cluster id is missing cannot be placed and are refused with an
        error; with ``True`` they are left out instead, and the fit and its table
        report how many. (Missing values of the model's variables are never
        dropped: the likelihood models them, see :meth:`missing`.)
    ordinal
        Level-1 columns that are ordinal (Likert items; binary is the two-category case):
        integer codes or pandas ordered Categoricals. Ordered Categoricals the model uses are
        ordinal without being listed. Each is modeled through a continuous latent response
        (probit) with a within and a between part and ordered thresholds; see
        :mod:`pymsem.compile.ordinal`.

    Examples
    --------
    >>> import pymsem as ms
    >>> data = ms.datasets.load_school()
    >>> model = ms.MSEM(data, cluster="schid")
    >>> for f in ("ACH", "INT", "REL"):
    ...     _ = model.latent(f, [f"{f}{i}" for i in range(1, 5)])
    >>> _ = model.path("INT", on="REL", level="within", label="a_w")
    """

    def __init__(
        self,
        data: pd.DataFrame | None,
        cluster: str,
        level2: Sequence[str] = (),
        drop_missing_cluster: bool = False,
        ordinal: Sequence[str] | None = (),
    ) -> None:
        if data is None:  # a specification only, e.g. for ms.simulate
            data = pd.DataFrame(columns=[cluster])
        if not isinstance(data, pd.DataFrame):
            raise MSEMDataError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
        if cluster not in data.columns:
            raise MSEMDataError(
                f"Cluster column {cluster!r} is not in the data."
                + closest(cluster, list(map(str, data.columns)))
            )
        self.data = data
        self.cluster = cluster
        self.declared_level2 = tuple(level2 or ())
        self.drop_missing_cluster = bool(drop_missing_cluster)
        if ordinal is None:
            ordinal = ()
        elif isinstance(ordinal, str):
            ordinal = (ordinal,)
        self.declared_ordinal = tuple(ordinal)
        self.table = ParameterTable()
        #: Sampling settings read from a Blimp input file (seed, burn, iterations, chains).
        self.settings: dict[str, Any] = {}
        self.prior_overrides: dict[str, Prior] = {}
        self.auto_exogenous_covariances = True
        self._cache: dict[str, Any] = {}

    @classmethod
    def from_table(
        cls,
        table: ParameterTable | Iterable[Statement],
        data: pd.DataFrame | None,
        cluster: str,
        **kwargs: Any,
    ) -> MSEM:
        """A model from parameter-table rows (what the syntax front ends write).

        ``kwargs`` are those of :class:`MSEM` (``level2=``, ``drop_missing_cluster=``).
        """
        from pymsem.effects.derived import parse

        model = cls(data, cluster, **kwargs)
        rows = list(table)
        for r in rows:
            if r.op == ":=":
                parse(r.rhs, r.lhs)
        model.table = ParameterTable(rows)
        return model._changed()

    @classmethod
    def from_lavaan(cls, text: str, data: pd.DataFrame | None, cluster: str, **kwargs: Any) -> MSEM:
        """A model written in lavaan's two-level syntax (``level: 1`` / ``level: 2`` blocks).

        Random slopes, which lavaan lacks, are written ``RSa | INT ~ REL`` in the level-1
        block; see :mod:`pymsem.syntax.lavaan` for what is supported.

        Examples
        --------
        >>> import pymsem as ms
        >>> text = '''
        ... level: 1
        ...   INT ~ a_w*REL
        ... level: 2
        ...   INT ~ a_b*REL
        ... '''
        >>> model = ms.MSEM.from_lavaan(text, None, cluster="schid")
        """
        from pymsem.syntax.lavaan import lavaan_arguments, parse_lavaan

        return cls.from_table(parse_lavaan(text), data, cluster, **lavaan_arguments(kwargs))

    @classmethod
    def from_blimp(
        cls,
        data: pd.DataFrame | None,
        model: str | None = None,
        *,
        file: str | None = None,
        latent: str | None = None,
        center: str | None = None,
        parameters: str | None = None,
        clusterid: str | None = None,
        fixed: str | None = None,
        **kwargs: Any,
    ) -> MSEM:
        """A model written in Blimp's syntax: rblimp's arguments, or a whole input file (``file=``).

        ``file`` is the text of a Blimp input file (``MODEL:``, ``LATENT:``, ``CLUSTERID:`` ...);
        otherwise give rblimp's ``model``, ``latent``, ``center``, ``parameters`` and
        ``clusterid``. See :mod:`pymsem.syntax.blimp` for what is supported.
        """
        from pymsem.syntax.blimp import parse_blimp, parse_blimp_file

        columns = [str(c) for c in data.columns] if data is not None else None
        level2 = tuple(kwargs.get("level2", ()))
        ordinal = kwargs.pop("ordinal", None)  # Blimp syntax ("u1:u4 y") or a list of names
        if file is not None:
            parsed = parse_blimp_file(file, columns=columns, level2=level2, ordinal=ordinal)
        else:
            parsed = parse_blimp(
                model,
                latent=latent,
                center=center,
                parameters=parameters,
                clusterid=clusterid,
                fixed=fixed,
                columns=columns,
                level2=level2,
                ordinal=ordinal,
            )
        cluster = parsed.cluster or kwargs.pop("cluster", None)
        kwargs.pop("cluster", None)  # CLUSTERID in the file wins over a cluster= given as well
        if cluster is None:
            raise MSEMSpecificationError(
                "The Blimp model names no cluster id: give clusterid= (or CLUSTERID: in the file)."
            )
        out = cls.from_table(parsed.table, data, cluster, ordinal=parsed.ordinal, **kwargs)
        out.settings = dict(parsed.settings)
        return out

    def to_lavaan(self) -> str:
        """The model in lavaan syntax (with pymsem's random-slope extension); reads back the same."""
        from pymsem.syntax.lavaan import to_lavaan

        return to_lavaan(self.table)

    # ------------------------------------------------------------ table views
    @property
    def latents(self) -> list[Latent]:
        """The factors of the parameter table."""
        return self.table.latents()

    @property
    def paths(self) -> list[Path]:
        """The regressions of the parameter table, one per outcome and level."""
        return self.table.paths()

    @property
    def covariances(self) -> list[Covariance]:
        """The covariances of the parameter table."""
        return self.table.covariances()

    @property
    def derived_quantities(self) -> list[Derived]:
        """The defined quantities (``:=``) of the parameter table."""
        return [Derived(n, e) for n, e in self.table.derived()]

    def with_data(self, data: pd.DataFrame, ordinal: Sequence[str] | None = None) -> MSEM:
        """The same specification (rows, priors, settings) on other data, e.g. a simulated data set.

        The copy shares nothing mutable with ``self``: building on it leaves ``self`` unchanged.
        Simulation studies refit one specification to many data sets this way. ``ordinal``
        declares the copy's ordinal columns (default: those of ``self``), e.g. for data whose
        items were cut into categories.
        """
        import copy

        model = type(self)(
            data,
            self.cluster,
            level2=self.declared_level2,
            drop_missing_cluster=self.drop_missing_cluster,
            ordinal=self.declared_ordinal if ordinal is None else ordinal,
        )
        model.table = ParameterTable(list(self.table))
        model.settings = dict(self.settings)
        model.prior_overrides = dict(self.prior_overrides)
        model.auto_exogenous_covariances = self.auto_exogenous_covariances
        for k, v in self.__dict__.items():  # attributes a front end or subclass added
            if k not in model.__dict__:
                setattr(model, k, copy.deepcopy(v))
        return model

    # ----------------------------------------------------------------- builders
    def _changed(self) -> MSEM:
        self._cache.clear()
        return self

    def latent(
        self,
        name: str,
        indicators: Sequence[str],
        levels: Sequence[Level | str] | Level | str = ("within", "between"),
        *,
        fix: dict[str, float] | None = None,
        free: Sequence[str] = (),
        between_residuals: Any = "free",
        labels: dict[str, str] | dict[str, dict[str, str]] | None = None,
        equal_loadings: bool = False,
    ) -> MSEM:
        """Add a latent factor measured by ``indicators`` (lavaan ``name =~ indicators``).

        Parameters
        ----------
        name
            Factor name, used at every level listed in ``levels``.
        indicators
            Observed columns loading on the factor.
        levels
            ``"within"``, ``"between"`` or both (default).
        fix
            Loadings to fix, ``{indicator: value}``; by default the first
            indicator's loading is fixed to 1.
        free
            Indicators whose loading is freed (e.g. the marker; then the factor
            variance is fixed to 1).
        between_residuals
            ``"free"`` or ``0`` (Blimp's ``| 0``): between-level residual
            variances of the indicators.
        labels
            Labels of loadings, ``{indicator: label}`` for a factor at one level, or
            ``{"within": {...}, "between": {...}}``. Loadings that share a label are one
            parameter (an equality constraint).
        equal_loadings
            Cross-level invariance: each free loading is equal at both levels (labelled
            ``<factor>_<indicator>`` unless ``labels`` names it), as MSEM texts recommend before
            reading contextual effects of a latent variable.
        """
        if between_residuals not in ("free", 0):
            raise MSEMSpecificationError(
                f"Latent {name!r}: between_residuals must be 'free' or 0, got {between_residuals!r}."
            )
        lv = tuple(dict.fromkeys(as_level(v) for v in _as_tuple(levels)))
        if any(f.name == name for f in self.latents):
            raise MSEMSpecificationError(
                f"Latent variable {name!r} is defined twice; give it one definition."
            )
        indicators = list(indicators)
        if isinstance(indicators, str) or not all(isinstance(i, str) for i in indicators):
            raise MSEMSpecificationError(f"Latent {name!r}: indicators must be a list of column names.")
        if len(set(indicators)) != len(indicators):
            raise MSEMSpecificationError(f"Latent {name!r} lists an indicator twice.")
        fix = dict(fix or {})
        for ind in list(fix) + list(free):
            if ind not in indicators:
                raise MSEMSpecificationError(
                    f"Latent {name!r}: {ind!r} in fix/free is not one of its indicators {indicators}."
                )
        by_level = self._loading_labels(name, indicators, lv, labels, equal_loadings, fix, free)
        for level in lv:
            num = level_number(level)
            marker = not fix and indicators[0] not in free
            for k, ind in enumerate(indicators):
                value = fix.get(ind, 1.0 if marker and k == 0 else None)
                label = by_level[level].get(ind) if value is None else None
                self.table.add(Statement(num, name, "=~", ind, label=label, fixed=value, free=ind in free))
            if level is Level.BETWEEN and between_residuals == 0:
                for ind in indicators:
                    self.table.add(Statement(2, ind, "~~", ind, fixed=0.0))
        return self._changed()

    @staticmethod
    def _loading_labels(
        name: str,
        indicators: list[str],
        levels: tuple[Level, ...],
        labels: Any,
        equal: bool,
        fix: dict[str, float],
        free: Sequence[str],
    ) -> dict[Level, dict[str, str]]:
        out: dict[Level, dict[str, str]] = {lv: {} for lv in levels}
        labels = dict(labels or {})
        if labels and all(isinstance(v, dict) for v in labels.values()):
            for key, mapping in labels.items():
                level = as_level(key)
                if level not in out:
                    raise MSEMSpecificationError(
                        f"Latent {name!r}: labels for the {level} level, where the factor is not measured."
                    )
                out[level] = dict(mapping)
        elif labels:
            if len(levels) > 1 and not equal:
                raise MSEMSpecificationError(
                    f"Latent {name!r} is measured at both levels: give its loading labels per level, "
                    f"labels={{'within': {{...}}, 'between': {{...}}}}, or pass equal_loadings=True to "
                    f"make each loading equal at both levels."
                )
            for lv in levels:
                out[lv] = dict(labels)
        if equal:
            if len(levels) < 2:
                raise MSEMSpecificationError(
                    f"Latent {name!r}: equal_loadings=True needs a factor at both levels."
                )
            marker = indicators[0] if not fix and indicators[0] not in free else None
            for ind in indicators:
                if ind in fix or ind == marker:
                    continue
                shared = next((m[ind] for m in out.values() if ind in m), f"{name}_{ind}")
                for lv in levels:
                    out[lv][ind] = shared
        for mapping in out.values():
            for ind in mapping:
                if ind not in indicators:
                    raise MSEMSpecificationError(
                        f"Latent {name!r}: label for {ind!r}, which is not one of its indicators {indicators}."
                    )
        return out

    def path(
        self,
        outcome: str,
        on: str | Sequence[str],
        level: Level | str,
        label: str | Sequence[str | None] | None = None,
        random: RandomSlope | Sequence[RandomSlope | None] | None = None,
    ) -> MSEM:
        """Add the regression ``outcome ~ on`` at ``level`` (Blimp ``outcome ~ on``).

        Parameters
        ----------
        outcome
            Dependent variable (latent factor or observed column).
        on
            Predictor or predictors.
        level
            ``"within"`` or ``"between"``.
        label
            A label per predictor (e.g. ``"a_w"``), for tables and derived quantities.
            Coefficients sharing a label are one parameter (an equality constraint).
        random
            A :class:`RandomSlope` per predictor (within level only).
        """
        preds = _as_tuple(on)
        labels = _as_tuple(label) or (None,) * len(preds)
        rnd = _as_tuple(random) or (None,) * len(preds)
        if len(rnd) != len(preds):
            raise MSEMSpecificationError(
                f"Path {outcome} ~ {' + '.join(preds)}: give one random slope (or None) per predictor."
            )
        # The Path object checks the shapes and names the path in its errors.
        Path(outcome, preds, as_level(level), tuple(labels), tuple(rnd))
        num = level_number(level)
        for pred, lab, r in zip(preds, labels, rnd):
            if r is not None and not isinstance(r, RandomSlope):
                raise MSEMSpecificationError(
                    f"Path {outcome} <- {pred}: random= takes ms.RandomSlope objects."
                )
            if r is not None:
                if lab is not None and r.mean_label is not None and lab != r.mean_label:
                    raise MSEMSpecificationError(
                        f"Path {outcome} ~ {pred} has label {lab!r} and random slope {r.name!r} "
                        f"with mean label {r.mean_label!r}; give the label once (mean_label=)."
                    )
                self.table.add(Statement(num, outcome, "~", pred, random=r.name))
                self.table.add(Statement(2, r.name, "~1", label=lab or r.mean_name))
            else:
                self.table.add(Statement(num, outcome, "~", pred, label=lab))
        return self._changed()

    def covariance(self, a: str, b: str, level: Level | str, label: str | None = None) -> MSEM:
        """Add the (residual) covariance ``a ~~ b`` at ``level``, estimated as a correlation.

        Covariances sharing a label are one parameter (their correlations are equal).
        """
        self.table.add(Statement(level_number(level), a, "~~", b, label=label))
        return self._changed()

    def derived(self, name: str, expression: str) -> MSEM:
        """Add a quantity computed from the posterior draws (Blimp's ``PARAMETERS``).

        Parameters
        ----------
        name
            Label of the quantity, e.g. ``"med_w"``.
        expression
            Over labels and earlier derived names: ``+ - * / **``, ``sqrt exp log abs``,
            ``var totalvar sd cov cor`` of random slopes or latent variables, and the helpers
            ``indirect(a, b)``, ``contextual(b, w)``, ``total(ind, direct)`` (also available as
            :func:`pymsem.indirect` etc.). Parsed with :mod:`ast`, never evaluated as Python.
            Derived quantities are computed on the posterior draws, so adding one after
            fitting needs no new sampling: ``fit.summary()`` picks it up.
        """
        from pymsem.effects.derived import parse

        if not isinstance(name, str) or not name.isidentifier():
            raise MSEMSpecificationError(f"Derived quantity name {name!r} must be a valid identifier.")
        if any(d.name == name for d in self.derived_quantities):
            raise MSEMSpecificationError(f"Derived quantity {name!r} is defined twice.")
        parse(expression, name)
        self.table.add(Statement(0, name, ":=", expression))
        return self

    def drop_derived(self, *names: str) -> MSEM:
        """Remove defined quantities by name (they need no resampling to add or remove)."""
        known = {d.name for d in self.derived_quantities}
        for n in names:
            if n not in known:
                raise MSEMSpecificationError(f"No derived quantity {n!r}." + closest(n, known))
        self.table = self.table.without(lambda r: r.op == ":=" and r.lhs in names)
        return self

    def set_prior(self, key: str, prior: Prior) -> MSEM:
        """Override the prior of a label, a PyMC variable (``"path_w"``), an element or a kind.

        The key is checked against the model when it is built; see
        :meth:`priors` for the keys and the resulting table.
        """
        from pymsem.priors import Prior as _Prior

        if not isinstance(prior, _Prior):
            raise TypeError(f"set_prior({key!r}, ...): pass a pymsem.Prior, got {type(prior).__name__}.")
        self.prior_overrides[key] = prior
        return self._changed()

    # ------------------------------------------------------------- validation
    def used_columns(self) -> list[str]:
        """Observed columns the model uses, in data order."""
        names = {f.name for f in self.latents}
        used: set[str] = set()
        for f in self.latents:
            used.update(f.indicators)
        slopes = {r.name for p in self.paths for r in p.random if r is not None}
        for p in self.paths:
            used.update(v for v in (p.outcome, *p.predictors) if v not in names and v not in slopes)
        for r in self.table.select("~~"):  # variances too: a random-intercept model has only those
            used.update(v for v in (r.lhs, r.rhs) if v not in names and v not in slopes)
        cols = [str(c) for c in self.data.columns]
        unknown = sorted(used - set(cols))
        if unknown:
            v = unknown[0]
            raise MSEMSpecificationError(
                f"{v!r} is used in the model but is neither a column of the data nor a latent variable."
                + closest(v, cols + sorted(names))
            )
        return [c for c in cols if c in used]

    def _validate_spec_names_only(self) -> None:
        """Checks that need no data: every non-latent name is taken to be a column."""
        names = {f.name for f in self.latents}
        cols = {i for f in self.latents for i in f.indicators}
        slopes = {r.name for p in self.paths for r in p.random if r is not None}
        cols |= {
            v for p in self.paths for v in (p.outcome, *p.predictors) if v not in names and v not in slopes
        }
        cols |= {v for c in self.covariances for v in (c.a, c.b) if v not in names and v not in slopes}
        self._validate_spec(cols - names)

    def _validate_spec(self, cols: set[str] | None = None) -> None:
        if not self.latents and not self.paths and not self.table.select("~~"):
            raise MSEMSpecificationError(
                "The model is empty: add latent variables (latent), paths (path) or, for a "
                "random-intercept (null) model, a variance: covariance('y', 'y', level='within')."
            )
        if cols is None:
            cols = set(map(str, self.data.columns))
        for f in self.latents:
            if f.name in cols:
                raise MSEMSpecificationError(
                    f"Latent variable {f.name!r} has the name of a data column; rename the latent "
                    f"(e.g. {f.name + '_f'!r})."
                )
            if f.name == self.cluster:
                raise MSEMSpecificationError(
                    f"Latent variable {f.name!r} has the name of the cluster column."
                )
            if len(set(f.indicators)) != len(f.indicators):
                raise MSEMSpecificationError(f"Latent {f.name!r} lists an indicator twice.")
            for ind in f.indicators:
                if ind == self.cluster:
                    raise MSEMSpecificationError(
                        f"Latent {f.name!r}: the cluster column cannot be an indicator."
                    )
            for ind in list(dict(f.fix)) + list(f.free):
                if ind not in f.indicators:
                    raise MSEMSpecificationError(
                        f"Latent {f.name!r}: {ind!r} in fix/free is not one of its indicators {list(f.indicators)}."
                    )
            structural = (
                any(f.name in (p.outcome, *p.predictors) for p in self.paths)
                or any(f.name in (c.a, c.b) for c in self.covariances)
                or len(self.latents) > 1
            )
            need = 2 if structural else 3
            if len(f.indicators) < need:
                raise MSEMSpecificationError(
                    f"Latent {f.name!r} has {len(f.indicators)} indicator(s) but needs at least {need} to be "
                    f"identified{' (3 when it is unrelated to any other variable)' if need == 3 else ''}. "
                    f"Add indicators, or use the observed variable itself in the paths."
                )
        names = {f.name for f in self.latents}
        slope_names = {r.name for p in self.paths for r in p.random if r is not None}
        for p in self.paths:
            if p.outcome in p.predictors:
                raise MSEMSpecificationError(
                    f"Path {p.outcome} ~ {p.outcome}: a variable cannot predict itself."
                )
            if len(set(p.predictors)) != len(p.predictors):
                raise MSEMSpecificationError(f"Path {p.outcome} ~ ...: a predictor is listed twice.")
            for v in (p.outcome, *p.predictors):
                if v in slope_names:
                    continue
                if v in names:
                    f = next(f for f in self.latents if f.name == v)
                    if p.level not in f.levels:
                        raise MSEMSpecificationError(
                            f"Path {p.outcome} ~ {' + '.join(p.predictors)} at the {p.level} level uses "
                            f"{v!r}, which has no {p.level} part. Add {p.level!s} to its levels: "
                            f"latent({v!r}, ..., levels=('within', 'between'))."
                        )
                elif v not in cols:
                    raise MSEMSpecificationError(
                        f"Path {p.outcome} ~ {' + '.join(p.predictors)} ({p.level}): unknown variable {v!r}."
                        + closest(v, sorted(cols | names))
                    )
        seen: dict[str, str] = {}
        slopes: dict[str, str] = {}
        for p in self.paths:
            for pred, lab, rnd in zip(p.predictors, p.labels, p.random):
                if rnd is not None:
                    where = f"{p.outcome} <- {pred}"
                    if not isinstance(rnd, RandomSlope):
                        raise MSEMSpecificationError(f"Path {where}: random= takes ms.RandomSlope objects.")
                    if rnd.name in cols or rnd.name in names or rnd.name == self.cluster:
                        raise MSEMSpecificationError(
                            f"Random slope {rnd.name!r} (on {where}) has the name of an existing "
                            f"{'column' if rnd.name in cols else 'latent variable'}; give it another name."
                        )
                    if rnd.name in slopes:
                        raise MSEMSpecificationError(
                            f"Random slope name {rnd.name!r} is used for {slopes[rnd.name]} and for {where}."
                        )
                    if p.level is not Level.WITHIN:
                        raise MSEMSpecificationError(
                            f"Random slope {rnd.name!r} on the between-level path {where}: only within-level "
                            f"slopes can vary over clusters."
                        )
                    slopes[rnd.name] = where
                    lab = lab or rnd.mean_name
                self._claim_label(seen, lab, f"{p.outcome} <- {pred} ({p.level})")
        for c in self.covariances:
            self._claim_label(seen, c.label, f"{c.a} ~~ {c.b} ({c.level})")
            for v in (c.a, c.b):
                if v not in names and v not in cols and v not in slopes:
                    raise MSEMSpecificationError(
                        f"Covariance {c.a} ~~ {c.b} ({c.level}): unknown variable {v!r}."
                        + closest(v, sorted(cols | names))
                    )

    @staticmethod
    def _claim_label(seen: dict[str, str], label: str | None, what: str) -> None:
        if label is None:
            return
        if not isinstance(label, str) or not label.isidentifier():
            raise MSEMSpecificationError(
                f"Label {label!r} for {what} is not a valid name: use letters, digits and underscores."
            )
        # A label shared by several parameters makes them one (an equality constraint); whether
        # they are of one kind is checked when the table is lowered.
        seen.setdefault(label, what)

    # --------------------------------------------------------------- lowering
    def clustered_data(self) -> ClusteredData:
        """The validated data (used columns sorted by cluster), cached until the model changes."""
        if "data" not in self._cache:
            self._validate_spec()
            cols = self.used_columns()
            for c in self.declared_level2:
                if c not in self.data.columns:
                    raise MSEMDataError(
                        f"level2 column {c!r} is not in the data." + closest(c, list(self.data.columns))
                    )
            from pymsem.specification.ordinal import encode_ordinal, ordinal_columns

            ords = ordinal_columns(self.data, self.declared_ordinal, cols, self.cluster)
            cd = prepare_data(
                encode_ordinal(self.data, ords) if ords else self.data,
                self.cluster,
                list(dict.fromkeys(cols + list(self.declared_level2))),
                drop_missing_cluster=self.drop_missing_cluster,
            )
            for c in self.declared_level2:
                if c not in cd.level2:
                    varying = varying_clusters(cd.frame[c].to_numpy(float), cd.cluster_index, cd.n_clusters)
                    ids = [cd.cluster_ids[i] for i in varying[:5]]
                    raise MSEMDataError(
                        f"Column {c!r} is declared level-2 but varies within {len(varying)} cluster(s) "
                        f"(e.g. {self.cluster} = {ids}). A level-2 variable must be constant within each "
                        f"cluster: fix the data, or drop it from level2= to treat it as a level-1 variable "
                        f"(split into a latent cluster mean and a within deviation)."
                    )
            if ords:
                cd = replace(cd, ordinal=ords)
            self._cache["data"] = cd
        return self._cache["data"]

    def structure(self) -> ModelStructure:
        """The lowered model (level matrices with free and fixed entries)."""
        from pymsem.compile.structure import lower

        if "structure" not in self._cache:
            cd = self.clustered_data()
            used = self.used_columns()
            level2 = [c for c in used if c in cd.level2]
            level1 = [c for c in used if c not in cd.level2]
            for f in self.latents:
                if Level.WITHIN in f.levels:
                    l2 = [i for i in f.indicators if i in cd.level2]
                    if l2:
                        raise MSEMSpecificationError(
                            f"Latent {f.name!r} has a within part, but its indicator(s) {l2} are level-2 "
                            f"(constant within clusters). Use levels=('between',) for this factor."
                        )
            for p in self.paths:
                if p.level is Level.WITHIN:
                    for v in (p.outcome, *p.predictors):
                        if v in cd.level2:
                            raise MSEMSpecificationError(
                                f"Path {p.outcome} ~ {' + '.join(p.predictors)}: {v!r} is a level-2 variable "
                                f"(constant within clusters) and has no within part; use it at the "
                                f"between level."
                            )
            ordinal = {c: o.n_categories for c, o in cd.ordinal.items()}
            self._cache["structure"] = lower(
                self.table, level1, level2, self.auto_exogenous_covariances, ordinal
            )
        return self._cache["structure"]

    # ------------------------------------------------------------- inspection
    def parameters(self) -> pd.DataFrame:
        """The parameter table: every parameter of the model, fixed and free, with the defaults.

        One row per loading (``=~``), regression (``~``), variance and covariance (``~~``),
        grand mean (``~1``) and random-slope parameter, at each level, as lavaan's
        ``parTable()``: ``label``, ``free``, ``id`` (rows sharing an id are one parameter: a
        shared label), ``value`` (of fixed rows), ``start``, the PyMC ``variable`` and its
        ``prior``. Variances are estimated as SDs and covariances as correlations, which is the
        scale of ``value``, ``start`` and ``prior``. :attr:`table` holds what was written,
        before the defaults.
        """
        from pymsem.compile.build import resolve_priors
        from pymsem.compile.parameters import parameter_frame
        from pymsem.compile.scales import Scales, initial_values

        st = self.structure()
        scales = Scales(st, self.clustered_data())
        priors = resolve_priors(st, scales, self.prior_overrides)
        return parameter_frame(st, priors, initial_values(st, scales), self.table.derived())

    def priors(self) -> pd.DataFrame:
        """The prior of every free parameter, defaults and overrides, as a table."""
        from pymsem.compile.build import prior_table, resolve_priors
        from pymsem.compile.scales import Scales

        st = self.structure()
        return prior_table(st, resolve_priors(st, Scales(st, self.clustered_data()), self.prior_overrides))

    def missing(self) -> MissingReport:
        """The missing values of the columns the model uses: by column, patterns, clusters affected.

        Missing values are modeled (assumed missing at random given the model's
        variables), never dropped; rows without a cluster id are refused unless
        ``drop_missing_cluster=True``, and then counted here.
        """
        from pymsem.specification.missingness import missing_report

        st = self.structure()
        return missing_report(self.clustered_data(), st.level1, st.level2)

    def icc(self) -> pd.Series:
        """Intraclass correlation of each level-1 variable the model uses (one-way ANOVA estimate)."""
        cd = self.clustered_data()
        out = {}
        for c in self.structure().level1:
            w, b = cd.variance_components(c)
            out[c] = b / (b + w)
        return pd.Series(out, name="ICC")

    def diagram(
        self,
        labels: bool = True,
        indicators: bool = True,
        suffixes: bool = True,
        title: str | None = None,
        ax: Any = None,
    ) -> Diagram:
        """The path diagram of the specification, drawn as the tutorial's Figures 1-4.

        A between box on top, a within box below; factors are ellipses, observed variables
        rectangles (level-2 columns shaded); a random slope is a dot on the within arrow it
        modifies and an ellipse of its name in the between box, where cross-level moderators
        point to it. Needs no sampling.

        Parameters
        ----------
        labels
            Print parameter labels (``a_w``) on the arrows, and ``1`` on marker loadings.
        indicators
            Draw the indicators and loadings; ``False`` shows the structural model only.
        suffixes
            Subscript the level on factors and split observed variables (``INT_w``, ``INT_b``).
        title
            Figure title.
        ax
            Draw on these matplotlib axes instead of a new figure.

        Returns
        -------
        pymsem.results.diagram.Diagram
            Shows itself in notebooks; ``.nodes`` and ``.edges`` (DataFrames), ``.figure``,
            ``.save("model.svg")`` (SVG, PNG or PDF by extension) and ``.to_dot()`` (Graphviz).
        """
        from pymsem.results.diagram import model_diagram

        return model_diagram(
            self, labels=labels, indicators=indicators, suffixes=suffixes, title=title, ax=ax
        )

    # ----------------------------------------------------------- compile & fit
    def prior_predictive(self, draws: int = 500, seed: int | None = 0) -> Any:
        """What the priors imply: ICCs, R-squared, derived quantities and slope SDs, per prior draw.

        Samples the priors (data-scaled defaults and :meth:`set_prior` overrides) of the
        compiled model, so it needs the data; see :mod:`pymsem.results.prior_predictive`.

        Returns
        -------
        pymsem.results.prior_predictive.PriorPredictive
            ``.draws`` (a DataFrame), ``.summary()``, ``.plot()``, ``.data_set(i)``.
        """
        from pymsem.results.prior_predictive import prior_predictive

        return prior_predictive(self, draws=draws, seed=seed)

    def compile(self, formulation: str = "auto", slopes: str = "auto") -> CompiledModel:
        """Build the PyMC model and keep what sampling needs (cached per formulation and slopes)."""
        from pymsem.compile.build import build_pymc_model

        key = f"compiled:{formulation}:{slopes}"
        if key not in self._cache:
            self._cache[key] = build_pymc_model(
                self.structure(), self.clustered_data(), self.prior_overrides, formulation, slopes
            )
        return self._cache[key]

    def build(self, formulation: str = "auto", slopes: str = "auto") -> Any:
        """The ``pm.Model`` that :meth:`fit` will sample (built once and cached).

        Add terms or priors to it inside ``with model.build():``; the next :meth:`fit` with the
        same formulation samples the modified model. Changing the specification (or a prior via
        :meth:`set_prior`) rebuilds it from scratch.
        """
        return self.compile(formulation, slopes).pymc_model

    def fit(
        self,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        seed: int | None = None,
        cores: int | None = None,
        sampler: str = "nutpie",
        formulation: str = "auto",
        progress: bool = True,
        target_accept: float = 0.8,
        warn: bool = True,
        slopes: str = "auto",
        save_warmup: bool = False,
        backend: str = "numba",
    ) -> MSEMFit:
        """Sample the posterior with NUTS.

        Parameters
        ----------
        draws, tune, chains
            Kept draws, warm-up draws and chains.
        seed
            Random seed; the same seed (and sampler) gives the same draws.
        cores
            Chains run in parallel on this many cores (default: all).
        sampler
            ``"nutpie"`` (default, fast on CPU), ``"pymc"`` (PyMC's NUTS), or PyMC's JAX samplers
            ``"numpyro"`` / ``"blackjax"`` (install ``pymsem[jax]``; for GPUs).
        formulation
            ``"auto"`` (the collapsed likelihood where it applies), ``"marginal"``
            or ``"augmented"`` (every latent variable sampled, non-centered).
        progress
            Show a progress bar.
        target_accept
            NUTS target acceptance rate.
        warn
            Warn about R-hat > 1.01, bulk ESS < 400, divergences and disagreeing chains.
        slopes
            Parametrization of the random slopes: ``"auto"`` (centered when the median
            cluster has 50 or more units, else non-centered), ``"centered"`` or
            ``"noncentered"``. The posterior is the same; the speed of sampling differs
            (see :mod:`pymsem.compile.slopes`).
        save_warmup
            Keep the warm-up draws and their sampler statistics (``warmup_posterior``,
            ``warmup_sample_stats``). Off by default, as in PyMC: they double the trace's
            memory (1.3 GB at 10,000 clusters with random slopes) and serve only diagnosis
            of the sampler itself.
        backend
            nutpie's compiler: ``"numba"`` (default: slower to compile, faster per gradient on
            CPU) or ``"jax"`` (install ``pymsem[jax]``; compiles in seconds).
        """
        from pymsem.results.fit import MSEMFit
        from pymsem.sample import sample_compiled

        compiled = self.compile(formulation, slopes)
        run = sample_compiled(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=seed,
            cores=cores,
            sampler=sampler,
            progress=progress,
            target_accept=target_accept,
            save_warmup=save_warmup,
            backend=backend,
        )
        fit = MSEMFit(self, compiled, run)
        if warn:
            fit.check(warn=True)
        return fit

    def __repr__(self) -> str:
        lines = [f"MSEM(cluster={self.cluster!r}, rows={len(self.data)})"]
        for f in self.latents:
            lines.append(f"  {f.name} by {', '.join(f.indicators)}  [{', '.join(map(str, f.levels))}]")
        for p in self.paths:
            preds = " + ".join(
                f"{v}" + (f"@{lab}" if lab else "") + (f" (random {r.name})" if r else "")
                for v, lab, r in zip(p.predictors, p.labels, p.random)
            )
            lines.append(f"  {p.outcome} ~ {preds}  [{p.level}]")
        for c in self.covariances:
            lines.append(f"  {c.a} ~~ {c.b}{'@' + c.label if c.label else ''}  [{c.level}]")
        for d in self.derived_quantities:
            lines.append(f"  {d.name} := {d.expression}")
        return "\n".join(lines)
