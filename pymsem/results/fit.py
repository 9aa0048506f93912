"""The fitted model: posterior draws, summaries, paper-style tables and diagnostics."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pymsem.effects.standardized import QuantityDraws, parameter_quantities

if TYPE_CHECKING:
    from pymsem.compile.build import CompiledModel
    from pymsem.results.diagram import Diagram
    from pymsem.results.table import Table
    from pymsem.sample import SamplingRun
    from pymsem.specification.model import MSEM

__all__ = ["MSEMFit", "SamplingWarning"]

#: Bulk ESS below this gets a warning (Vehtari et al. 2021 recommend 100 per chain, 400 for 4 chains).
MIN_ESS = 400
MAX_RHAT = 1.01
#: Sections that ``fit.table()`` shows by default, as methods papers report them.
PAPER_BLOCKS = (
    "Regressions",
    "Loadings",
    "Covariances",
    "Random slopes",
    "Derived",
    "Intraclass correlations",
    "Thresholds",
)


class SamplingWarning(UserWarning):
    """R-hat, ESS, divergences or disagreeing chains suggest the draws are not trustworthy yet."""


def _stats(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-hat, bulk ESS and tail ESS (arviz-stats) of an array shaped (n, chain, draw)."""
    from arviz_stats.base import array_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = array_stats.rhat(draws, chain_axis=-2, draw_axis=-1)
        bulk = array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk")
        tail = array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="tail", prob=(0.05, 0.95))
    return np.asarray(rhat), np.asarray(bulk), np.asarray(tail)


def ctx_shape(ctx: Any) -> tuple[int, ...]:
    """(chain, draw) shape of the draws in a derived-expression context."""
    return next(iter(ctx.values.values())).shape


class MSEMFit:
    """A fitted :class:`~pymsem.MSEM`: the posterior and what can be read off it.

    Attributes
    ----------
    idata
        The posterior as an ``xarray.DataTree`` (ArviZ 1.x), with groups
        ``posterior`` and ``sample_stats``.
    model
        The specification that was fitted.
    """

    def __init__(self, model: MSEM, compiled: CompiledModel, run: SamplingRun) -> None:
        self.model = model
        self.compiled = compiled
        self.run = run
        self.idata = run.idata
        self.structure = compiled.structure
        self._quantities: list[QuantityDraws] | None = None

    # ------------------------------------------------------------------ draws
    @property
    def posterior(self) -> Any:
        """The posterior group as an ``xarray.Dataset``."""
        if "_posterior" not in self.__dict__:
            self.__dict__["_posterior"] = self.idata["posterior"].to_dataset()
        return self.__dict__["_posterior"]

    def parameter_draws(self) -> dict[str, np.ndarray]:
        """Free-parameter vectors by group name, shaped (chain, draw, n)."""
        if "_param_draws" not in self.__dict__:
            post = self.posterior
            self.__dict__["_param_draws"] = {
                name: np.asarray(post[name].values, dtype=float) for name in self.structure.groups
            }
        return self.__dict__["_param_draws"]

    def threshold_draws(self) -> dict[str, np.ndarray]:
        """Each ordinal column's thresholds, shaped (chain, draw, categories - 1)."""
        from pymsem.compile.ordinal import threshold_name

        post = self.posterior
        return {c: np.asarray(post[threshold_name(c)].values, dtype=float) for c in self.structure.ordinal}

    def draws(self, name: str) -> np.ndarray:
        """Draws (chain, draw) of one parameter, by label (``"a_w"``) or ``"group[element]"``."""
        st = self.structure
        if name in st.labels:
            ref = st.labels[name]
            return self.parameter_draws()[ref.group][..., ref.index]
        for g in st.groups.values():
            for i, el in enumerate(g.elements):
                if name == f"{g.name}[{el}]":
                    return self.parameter_draws()[g.name][..., i]
        rs = st.random_slopes
        names = [r.name for r in rs]
        cor_labels = {lab: (i, names.index(b)) for i, r in enumerate(rs) for b, lab in r.cor_labels.items()}
        if name in cor_labels:  # a random-slope correlation's label (e.g. rCor)
            from pymsem.compile.slopes import slope_covariance

            i, j = cor_labels[name]
            T = slope_covariance(st, self.posterior)
            return T[..., i, j] / np.sqrt(T[..., i, i] * T[..., j, j])
        from pymsem.specification.errors import closest

        known = (
            list(st.labels)
            + list(cor_labels)
            + [f"{g.name}[{el}]" for g in st.groups.values() for el in g.elements]
        )
        raise KeyError(f"No parameter {name!r}." + closest(name, known))

    def quantities(self) -> list[QuantityDraws]:
        """Every reported quantity with its draws: parameters, random slopes, ICCs, derived."""
        return self.base_quantities() + self.derived_quantities()

    def base_quantities(self) -> list[QuantityDraws]:
        """Parameters, random-slope moments and ICCs (cached: they do not change after sampling)."""
        from pymsem.effects.random_slopes import random_slope_quantities

        if self._quantities is None:
            st = self.structure
            slope_cov = None
            if st.slopes_in_between_model:
                from pymsem.compile.slopes import slope_covariance

                slope_cov = slope_covariance(st, self.posterior)  # the slopes' part of between moments
            qs = parameter_quantities(st, self.parameter_draws(), slope_cov, self.threshold_draws())
            qs += random_slope_quantities(self.structure, self.posterior)
            self._quantities = qs
        return list(self._quantities)

    # ------------------------------------------------------------- derived
    def derived_context(self) -> Any:
        """Labelled draws and model-implied moments for derived expressions."""
        from pymsem.effects.derived import DerivedContext
        from pymsem.effects.moments import moments_function

        values = {lab: self.draws(lab) for lab in self.structure.labels}
        for q in self.base_quantities():
            if q.label and q.label not in values:
                values[q.label] = q.draws
        from pymsem.effects.conditional import conditional_indirect

        slope_of_mean = {r.mean_label: r.name for r in self.structure.random_slopes}
        return DerivedContext(
            values,
            moments_function(self),
            slope_of_mean,
            lambda a, b, mod, w: conditional_indirect(self, a, b, mod, w),
        )

    def derived_quantities(self) -> list[QuantityDraws]:
        """The model's derived quantities (``model.derived``) evaluated on the draws, in order."""
        from pymsem.effects.derived import evaluate

        if not self.model.derived_quantities:
            return []
        ctx = self.derived_context()
        out = []
        for d in self.model.derived_quantities:
            draws = np.broadcast_to(evaluate(d.expression, ctx, d.name), ctx_shape(ctx)).copy()
            ctx.values[d.name] = draws
            out.append(QuantityDraws("derived", "Derived", d.name, d.expression, draws, None))
        return out

    def conditional_indirect(
        self,
        a: str,
        b: str,
        moderator: str,
        at: list[float | str] | tuple = ("-1sd", "mean", "+1sd"),
        labels: list[str] | None = None,
    ) -> Any:
        """The within-cluster indirect effect ``E[a_g b_g | moderator]`` at chosen moderator values.

        Parameters
        ----------
        a, b
            Labels of the a and b paths (e.g. the random-slope means ``"a_w"``, ``"b_w"``).
        moderator
            The between-level variable the slopes are regressed on (e.g. ``"SES"``).
        at
            Numbers on the moderator's own scale, or ``"mean"``, ``"+1sd"``, ``"-1sd"``,
            ``"+2sd"``, ``"-2sd"`` (the model-implied between-level SD).
        labels
            Names for the values, e.g. ``["mome_p1", "mome_m1"]``.

        Returns
        -------
        xarray.DataArray
            Draws with dims (chain, draw, at); summarize with :func:`summarize_draws`.
        """
        from pymsem.effects.conditional import conditional_indirect_table

        return conditional_indirect_table(self, a, b, moderator, list(at), labels)

    def index_of_moderated_mediation(self, a: str, b: str, moderator: str) -> np.ndarray:
        """Draws of Hayes' index of moderated mediation (when exactly one of the paths is moderated)."""
        from pymsem.effects.conditional import index_of_moderated_mediation

        return index_of_moderated_mediation(self, a, b, moderator)

    def johnson_neyman(
        self,
        a: str,
        b: str | None,
        moderator: str,
        ci_prob: float = 0.95,
        sd_range: float = 2.0,
        points: int = 201,
    ) -> Any:
        """Johnson-Neyman regions: where the conditional (indirect) effect's interval excludes 0.

        Over ``points`` fixed values of the between-level ``moderator``, ``sd_range``
        model-implied SDs either side of its grand mean, the equal-tailed ``ci_prob``
        credible interval of the conditional indirect effect ``E[a_g b_g | moderator]``
        (``b=None``: of the path ``a`` alone, ``a0 + a1 w``), and the ranges where it lies
        wholly above or below 0, with their boundaries interpolated between grid points (as
        rblimp's ``jn_plot``).

        Returns
        -------
        pymsem.effects.conditional.JohnsonNeyman
            ``regions`` (``start``, ``end`` on the moderator's scale, ``start_sd``,
            ``end_sd``, ``sign``; ``open_start`` / ``open_end`` where a region runs past the
            range), ``boundaries`` (``value``, ``sd``, ``bound``) and the ``curve``.
        """
        from pymsem.effects.conditional import johnson_neyman

        return johnson_neyman(self, a, b, moderator, ci_prob=ci_prob, sd_range=sd_range, points=points)

    def plot_conditional_indirect(
        self,
        a: str,
        b: str | None,
        moderator: str,
        sd_range: float = 2.0,
        ci_prob: float = 0.95,
        ax: Any = None,
        johnson_neyman: bool = True,
        points: int = 201,
    ) -> Any:
        """Plot the conditional indirect effect over the moderator with its credible band; returns the axes.

        With ``johnson_neyman`` the moderator ranges where the band excludes 0 are shaded and
        their boundaries marked (see :meth:`johnson_neyman`; ``b=None`` plots the path ``a``'s
        conditional effect). The x axis is in model-implied SDs from the grand mean.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        jn = self.johnson_neyman(a, b, moderator, ci_prob=ci_prob, sd_range=sd_range, points=points)
        c = jn.curve
        ax.fill_between(c["sd"], c["lower"], c["upper"], alpha=0.3, label=f"{ci_prob:.0%} credible band")
        ax.plot(c["sd"], c["median"], lw=2, label="posterior median")
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        if johnson_neyman:
            for i, r in enumerate(jn.regions.itertuples(index=False)):
                span = ax.axvspan(
                    r.start_sd, r.end_sd, color="tab:green", alpha=0.12, lw=0,
                    label="interval excludes 0 (Johnson-Neyman)" if i == 0 else None,
                )  # fmt: skip
                span.set_gid("johnson-neyman-region")
            for r in jn.boundaries.itertuples(index=False):
                line = ax.axvline(r.sd, color="tab:green", lw=1, ls=":")
                line.set_gid("johnson-neyman-boundary")
                ax.annotate(
                    f"{r.value:.2f}", (r.sd, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", ha="left", va="top",
                    fontsize="small", color="tab:green",
                )  # fmt: skip
        ax.set_xlabel(f"{moderator} (between level, SDs from the grand mean)")
        ax.set_ylabel(f"indirect effect {a} x {b}" if b is not None else f"conditional effect {a}")
        ax.legend(frameon=False)
        return ax

    # ------------------------------------------------------------------ plots
    def plot_forest(
        self,
        blocks: list[str] | str | None = None,
        parameters: list[str] | None = None,
        standardized: bool = False,
        ci_prob: float = 0.95,
        by: str = "path",
        ax: Any = None,
    ) -> Any:
        """Forest plot of the effects at each level: posterior median and credible interval.

        Parameters
        ----------
        blocks
            Sections to show, in order; default regressions and derived quantities (indirect,
            contextual effects), ``"all"`` for every block.
        parameters
            Only these rows, by parameter text (``"INT <- REL"``) or label (``"a_w"``).
        standardized
            Plot level-specific standardized estimates (rows without one are left out).
        ci_prob
            Probability of the equal-tailed interval.
        by
            ``"path"``: each path's within and between estimates side by side;
            ``"level"``: one section per level.
        ax
            Matplotlib axes to draw on.

        Returns
        -------
        matplotlib.axes.Axes
        """
        from pymsem.results.plots import interval_frame, plot_forest

        if standardized:
            df, xlabel = (
                interval_frame(self.quantities(), ci_prob, standardized=True),
                "Standardized estimate",
            )
        else:
            df, xlabel = self.summary(ci_prob), "Estimate"
        return plot_forest(df, blocks, parameters, by=by, ci_prob=ci_prob, xlabel=xlabel, ax=ax)

    def plot_posterior(
        self, names: list[str] | str | None = None, ci_prob: float = 0.95, ax: Any = None
    ) -> Any:
        """Posterior densities with the credible interval shaded and the median marked.

        Parameters
        ----------
        names
            Derived quantities or parameter labels; default every derived quantity
            (``model.derived``), else the labelled regression paths.
        ci_prob
            Probability of the equal-tailed interval.
        ax
            One matplotlib axes per name.

        Returns
        -------
        numpy.ndarray
            The axes, one per quantity.
        """
        from pymsem.results.plots import plot_densities

        derived = self.derived_quantities()
        by_name = {q.label: q for q in derived}
        if names is None:
            names = list(by_name) or [
                q.label for q in self.base_quantities() if q.label and q.block == "Regressions"
            ]
            if not names:
                raise ValueError("The model has no derived quantities or labelled paths; pass names=[...].")
        elif isinstance(names, str):
            names = [names]
        for q in self.base_quantities():
            if q.label:
                by_name.setdefault(q.label, q)
        draws, titles = {}, {}
        for n in names:
            if n in by_name:
                draws[n] = by_name[n].draws
                expr = by_name[n].parameter
                titles[n] = n if expr == n else f"{n} = {expr}"
            else:
                draws[n] = self.draws(n)  # "group[element]"; raises with the known names otherwise
        return plot_densities(draws, ci_prob, titles, ax=ax)

    def plot_caterpillar(
        self,
        kind: str = "slopes",
        slopes: list[str] | str | None = None,
        a: str | None = None,
        b: str | None = None,
        ci_prob: float = 0.95,
        ax: Any = None,
    ) -> Any:
        """Caterpillar plot of each cluster's random slopes or indirect effect, sorted by median.

        Parameters
        ----------
        kind
            ``"slopes"``: one panel per random slope (:meth:`cluster_slopes`), with the slope's
            mean as the average line; ``"indirect"``: each cluster's ``a_g * b_g``
            (:meth:`cluster_indirect`) with the average indirect effect ``indirect(a, b)``.
        slopes
            For ``"slopes"``: random slopes by name (``"RSa"``) or mean label (``"a_w"``);
            default all.
        a, b
            For ``"indirect"``: mean labels of the two random slopes; default the model's two.
        ci_prob
            Probability of the equal-tailed intervals.
        ax
            One axes per panel.

        Returns
        -------
        numpy.ndarray or matplotlib.axes.Axes
            ``"slopes"``: an array of axes, one per slope; ``"indirect"``: the axes.
        """
        from pymsem.results.plots import plot_caterpillar

        rs = self.structure.random_slopes
        if not rs:
            raise ValueError("The model has no random slopes: nothing varies over clusters.")
        if kind == "indirect":
            if a is None and b is None and len(rs) == 2:
                a, b = rs[0].mean_label, rs[1].mean_label
            if a is None or b is None:
                raise ValueError(
                    f"Name the paths: a=..., b=... (mean labels of random slopes: {[r.mean_label for r in rs]})."
                )
            from pymsem.effects.derived import evaluate, indirect

            draws = self.cluster_indirect(a, b)
            avg = evaluate(indirect(a, b), self.derived_context())
            return plot_caterpillar(
                draws,
                avg,
                ci_prob,
                ylabel=f"indirect({a}, {b})",
                title="Cluster-specific indirect effects",
                ax=ax,
            )
        if kind != "slopes":
            raise ValueError(f"kind must be 'slopes' or 'indirect', got {kind!r}.")
        chosen = list(rs)
        if slopes is not None:
            wanted = [slopes] if isinstance(slopes, str) else list(slopes)
            known = {r.name: r for r in rs} | {r.mean_label: r for r in rs if r.mean_label}
            bad = [s for s in wanted if s not in known]
            if bad:
                raise KeyError(f"No random slope(s) {bad}; known: {sorted(known)}.")
            chosen = [known[s] for s in wanted]
        from pymsem.results.plots import _axes_grid

        axes = _axes_grid(len(chosen), ax, panel=(6.0, 3.8), ncols=1)
        ds = self.cluster_slopes()
        for axis, r in zip(axes, chosen):
            avg = self.draws(r.mean_label) if r.mean_label else None
            name = f"{r.name} ({r.mean_label})" if r.mean_label else r.name
            plot_caterpillar(
                ds[r.name], avg, ci_prob, ylabel=name, title=f"Cluster-specific slopes {name}", ax=axis
            )
        return axes

    def plot_trace(
        self, var_names: list[str] | str | None = None, compact: bool = True, **kwargs: Any
    ) -> Any:
        """Trace and density of each chain (``arviz_plots.plot_trace_dist``).

        Parameters
        ----------
        var_names
            Labels, ``"group[element]"`` names, parameter groups (``"loading_w"``) or derived
            quantities; default the regression paths and random-slope SDs.
        compact
            Passed to ArviZ.
        **kwargs
            Passed to ``arviz_plots.plot_trace_dist`` (e.g. ``backend=``).

        Returns
        -------
        arviz_plots.PlotCollection
        """
        import arviz_plots as azp

        from pymsem.results.plots import diagnostic_tree

        return azp.plot_trace_dist(diagnostic_tree(self, var_names), compact=compact, **kwargs)

    def plot_rank(self, var_names: list[str] | str | None = None, **kwargs: Any) -> Any:
        """Rank plots of the chains (``arviz_plots.plot_rank``): flat, overlapping ECDF bands mean the chains mix.

        Parameters
        ----------
        var_names
            As in :meth:`plot_trace`.
        **kwargs
            Passed to ``arviz_plots.plot_rank``.

        Returns
        -------
        arviz_plots.PlotCollection
        """
        import arviz_plots as azp

        from pymsem.results.plots import diagnostic_tree

        return azp.plot_rank(diagnostic_tree(self, var_names), **kwargs)

    def latent_scores(self, draw: bool = True, seed: int | None = None) -> Any:
        """Each cluster's between-level latent variables (latent cluster means, between factors).

        Drawn, for every posterior draw, from their exact conditional distribution given the
        cluster's data (they were integrated out during sampling, not lost); ``draw=False``
        gives the conditional means. An ``xarray.Dataset`` with dims (chain, draw, cluster),
        one variable per between-level latent, centered at the grand mean. Models with ordinal
        variables raise ``NotImplementedError`` (their latent responses are not stored).
        """
        from pymsem.effects.scores import between_scores

        return between_scores(self, draw=draw, seed=seed)

    def within_scores(self) -> Any:
        """Each student's within-level latent variables: posterior means and SDs.

        From each draw's exact Gaussian conditional given the student's observed values, the
        cluster's data and (with random slopes) the cluster's slopes; the SD adds the spread
        of the conditional means over draws. An ``xarray.Dataset`` with ``mean`` and ``sd``,
        dims (student, latent); see :func:`pymsem.effects.within_scores.within_scores`.
        Models with ordinal variables raise ``NotImplementedError``.
        """
        from pymsem.effects.within_scores import within_scores

        return within_scores(self)

    def cluster_slopes(self) -> Any:
        """Each cluster's random slopes, ``xarray.Dataset`` with dims (chain, draw, cluster)."""
        from pymsem.effects.random_slopes import cluster_slopes

        if not self.structure.random_slopes:
            raise ValueError("The model has no random slopes.")
        return cluster_slopes(
            self.structure, self.posterior, [str(c) for c in self.compiled.data.cluster_ids]
        )

    def cluster_indirect(self, a: str, b: str) -> Any:
        """Each cluster's indirect effect ``a_g * b_g`` for two random-slope mean labels, per draw."""
        by_label = {r.mean_label: r.name for r in self.structure.random_slopes}
        for lab in (a, b):
            if lab not in by_label:
                raise KeyError(f"{lab!r} is not the mean label of a random slope; known: {sorted(by_label)}.")
        ds = self.cluster_slopes()
        out = ds[by_label[a]] * ds[by_label[b]]
        out.name = f"indirect({a}, {b})"
        return out

    def diagram(
        self,
        standardized: bool = False,
        ci_prob: float = 0.95,
        digits: int = 2,
        labels: bool = False,
        indicators: bool = True,
        suffixes: bool = True,
        title: str | None = None,
        ax: Any = None,
    ) -> Diagram:
        """The path diagram with posterior medians on the arrows (see :meth:`MSEM.diagram`).

        Parameters
        ----------
        standardized
            Print level-specific standardized estimates (correlations for covariances);
            cross-level moderators of random slopes have none and print no number then.
        ci_prob
            Interval probability: an estimate whose equal-tailed interval excludes 0 is bold.
        digits
            Decimals.
        labels
            Print ``a_w = 0.34`` instead of ``0.34`` on labelled arrows.
        indicators, suffixes, title, ax
            As in :meth:`MSEM.diagram`.

        Returns
        -------
        pymsem.results.diagram.Diagram
            ``edges`` holds ``estimate``, ``lower``, ``upper``, ``significant`` and the printed
            ``text``; ``save("fit.svg")`` writes SVG, PNG or PDF.
        """
        from pymsem.results.diagram import fit_diagram

        return fit_diagram(
            self, standardized=standardized, ci_prob=ci_prob, digits=digits, labels=labels,
            indicators=indicators, suffixes=suffixes, title=title, ax=ax,
        )  # fmt: skip

    # ------------------------------------------------------- model comparison
    def cluster_loglik(self, **kwargs: Any) -> Any:
        """Each cluster's log-likelihood per draw, latent variables integrated out (dims chain, draw, cluster).

        See :func:`pymsem.results.loo.cluster_loglik` (``thin``, ``slope_draws``, ``seed``, ``slope_proposal``).
        Models with ordinal variables raise ``NotImplementedError`` (the probability of a
        cluster's categories is a multivariate normal orthant probability, not available yet).
        """
        from pymsem.results.loo import cluster_loglik

        return cluster_loglik(self, **kwargs)

    def loo(self, pointwise: bool = False, **kwargs: Any) -> Any:
        """Leave-one-cluster-out PSIS-LOO: how well the model predicts a new cluster (school).

        The unit is a whole cluster, all its students and level-2 values together, with its
        latent means (and random slopes) integrated out; see :mod:`pymsem.results.loo`.
        Warns naming the clusters whose Pareto k is too high. ``kwargs``: ``thin``,
        ``slope_draws``, ``seed``, ``slope_proposal``. Returns ``arviz_stats.ELPDDataLOO``.
        Models with ordinal variables raise ``NotImplementedError``; check them with :meth:`ppc`.
        """
        from pymsem.results.loo import loo

        return loo(self, pointwise=pointwise, **kwargs)

    def waic(self, pointwise: bool = False, **kwargs: Any) -> Any:
        """WAIC with clusters as the unit (see :func:`pymsem.results.loo.waic`); prefer :meth:`loo`.

        Models with ordinal variables raise ``NotImplementedError``, as :meth:`loo`.
        """
        from pymsem.results.loo import waic

        return waic(self, pointwise=pointwise, **kwargs)

    # ------------------------------------------------------ prior sensitivity
    def sensitivity(
        self,
        blocks: list[str] | str | None = None,
        threshold: float = 0.05,
        alphas: tuple[float, float] = (0.99, 1.01),
    ) -> pd.DataFrame:
        """Power-scaling prior and likelihood sensitivity of each reported quantity.

        How much each quantity's posterior would move if the prior (or the likelihood) were
        raised to a power near 1 (Kallioinen et al. 2024, arviz-stats' ``psense``), estimated
        by importance sampling from the draws, without refitting; see
        :mod:`pymsem.results.sensitivity`. Rows as in :meth:`summary` (``blocks`` as in
        :meth:`table`: the table's sections by default, ``"all"`` for every quantity).

        Returns
        -------
        pandas.DataFrame
            Indexed by ``level`` and ``parameter``; columns ``block``, ``label``, ``prior``,
            ``likelihood`` and ``diagnosis``: ``"potential strong prior / weak likelihood"``
            (prior sensitivity above ``threshold``, likelihood below: the prior decides),
            ``"potential prior-data conflict"`` (both above) or ``"✓"``.

        Notes
        -----
        When a conclusion depends on the prior (few clusters and random-slope variances are
        the usual suspects): state the prior, refit with a wider reasonable one
        (``model.set_prior``) and report both, or simplify that part of the model. For a
        conflict, check the prior's location and scale against the data
        (``model.priors()``). The guide is in ``docs/prior-sensitivity.md`` and in the
        result's ``attrs["guide"]``. Models with ordinal variables raise
        ``NotImplementedError`` (power-scaling needs the categories' log-likelihood).
        """
        from pymsem.results.sensitivity import sensitivity

        return sensitivity(self, blocks=blocks, threshold=threshold, alphas=alphas)

    # ---------------------------------------------------------------- summary
    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior summary of every parameter, by level.

        Columns: ``block``, ``label``, ``median``, ``sd``, ``lower``, ``upper``
        (equal-tailed ``ci_prob`` interval), ``rhat``, ``ess_bulk``, ``ess_tail``
        (arviz-stats, rank-normalized) and ``std`` (median of the
        level-specific standardized estimate). Variances are reported as
        variances (``X ~~ X``), covariances as covariances (``std`` holds the
        correlation). Indexed by ``level`` and ``parameter``.
        """
        if not 0 < ci_prob < 1:
            raise ValueError(f"ci_prob must be between 0 and 1, got {ci_prob}.")
        qs = self.quantities()
        arr = np.stack([q.draws for q in qs])  # (n, chain, draw)
        rhat, bulk, tail = _stats(arr)
        flat = arr.reshape(len(qs), -1)
        lo, med, hi = np.quantile(flat, [(1 - ci_prob) / 2, 0.5, (1 + ci_prob) / 2], axis=1)
        std = [np.median(q.std) if q.std is not None else np.nan for q in qs]
        df = pd.DataFrame(
            {
                "level": [q.level for q in qs],
                "parameter": [q.parameter for q in qs],
                "block": [q.block for q in qs],
                "label": [q.label for q in qs],
                "median": med,
                "sd": flat.std(axis=1, ddof=1),
                "lower": lo,
                "upper": hi,
                "rhat": rhat,
                "ess_bulk": bulk,
                "ess_tail": tail,
                "std": std,
            }
        )
        return df.set_index(["level", "parameter"])

    def meta(self) -> dict[str, Any]:
        """Facts about the data and the run, for table footers."""
        cd = self.compiled.data
        diag = self.diagnostics()
        return {
            "Students": cd.n_obs,
            "Clusters": cd.n_clusters,
            "Chains x draws": f"{self.run.chains} x {self.run.draws} (tune {self.run.tune})",
            "Seed": self.run.seed,
            "Sampler": f"{self.run.sampler} NUTS, {self._likelihood_line()}",
            "Max R-hat": round(diag["max_rhat"], 4),
            "Min bulk ESS": int(diag["min_ess_bulk"]),
            "Divergences": diag["divergences"],
            "Missing data": self.missing().line(),
            **self._ordinal_line(),
        }

    def _ordinal_line(self) -> dict[str, str]:
        """The footer's line on ordinal variables (none when there are none)."""
        ords = self.structure.ordinal
        if not ords:
            return {}
        cols = ", ".join(f"{c} ({k})" for c, k in ords.items())
        return {"Ordinal (categories)": f"{cols}; probit, latent responses with within residual variance 1"}

    def missing(self) -> Any:
        """The missing-data report of the data this model was fitted to (see ``MSEM.missing``)."""
        return self.model.missing()

    def impute(self, m: int = 20, seed: int | None = None, stacked: bool = True) -> Any:
        """``m`` completed data sets drawn from the posterior predictive of the missing cells.

        Each imputation uses one posterior draw (spread evenly over chains and draws): the
        clusters' latent means and missing level-2 values are drawn given everything observed
        in the cluster, then each student's missing values given those and the student's
        observed values (as Blimp's imputation output). Analyse them elsewhere and pool with
        Rubin's rules. A missing cell of an ordinal column is its sampled latent response cut at
        the draw's thresholds: one of the column's categories, in the user's values.

        Parameters
        ----------
        m
            Number of imputations.
        seed
            Seed of the imputation draws.
        stacked
            ``True``: one DataFrame with an ``imputation`` column (1..m); ``False``: a list.

        Returns
        -------
        pandas.DataFrame or list of pandas.DataFrame
            The user's data in its original row order with the model's missing cells filled.
        """
        from pymsem.effects.imputation import impute

        return impute(self, m=m, seed=seed, stacked=stacked)

    def table(
        self,
        ci_prob: float = 0.95,
        blocks: list[str] | str | None = None,
        title: str | None = None,
        digits: int = 3,
        ppp: bool = False,
    ) -> Table:
        """A paper-style table (Within Level / Between Level), printable and exportable.

        Parameters
        ----------
        ci_prob
            Credible-interval probability (equal-tailed), 0.95 by default.
        blocks
            Sections to show, e.g. ``["Regressions", "Loadings"]``; ``"all"`` adds intercepts and
            (residual) variances. The default shows what papers report: regressions, loadings,
            covariances, random slopes, derived quantities and intraclass correlations.
        title
            Table title.
        digits
            Decimals.
        ppp
            Show the posterior predictive p-value in the footer (runs :meth:`ppc` if it has not
            been run; once run, the PPP is shown anyway).
        """
        from pymsem.results.table import Table

        s = self.summary(ci_prob).reset_index()
        if blocks is None:
            blocks = [b for b in s["block"].unique() if b in PAPER_BLOCKS]
        elif blocks == "all":
            blocks = None
        meta = self.meta()
        if ppp or "_ppc" in self.__dict__:
            res = self.__dict__.get("_ppc") or self.ppc()
            # With ordinal variables the chi-square is taken against simulated moments of the codes.
            key = "PPP (chi-square vs simulated moments)" if res.simulated_reference else "PPP (chi-square)"
            meta[key] = round(res.ppp, 3)
        return Table(
            s,
            meta,
            title=title or "Parameter estimates",
            ci_prob=ci_prob,
            blocks=blocks,
            digits=digits,
        )

    def ppc(self, draws: int = 200, seed: int | None = 0) -> Any:
        """Posterior predictive checks at both levels, with the chi-square PPP (Mplus, blavaan).

        Replicated data sets from ``draws`` posterior draws (new clusters, the observed cluster
        sizes and missing cells) against the data: within and between covariances, ICCs,
        per-cluster slopes of random-slope paths, ordinal columns' category shares and a
        two-level chi-square discrepancy; see :mod:`pymsem.results.ppc`. Ordinal columns are
        compared as categories, and their chi-square against simulated moments of the codes.
        The last result is kept and its PPP shown in :meth:`table`.

        Returns
        -------
        pymsem.results.ppc.PPCResult
            ``.table()`` (a DataFrame: observed, replicated, PPP, flag), ``.ppp``, ``.plot()``.
        """
        from pymsem.results.ppc import ppc

        self.__dict__["_ppc"] = ppc(self, draws=draws, seed=seed)
        return self.__dict__["_ppc"]

    def icc(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Model-implied intraclass correlations of the level-1 variables."""
        s = self.summary(ci_prob)
        s = s[s["block"] == "Intraclass correlations"]
        return s[["median", "sd", "lower", "upper"]].droplevel("level")

    # ------------------------------------------------------------ diagnostics
    def diagnostics(self) -> dict[str, Any]:
        """R-hat, bulk ESS and divergences over the free parameters, and disagreeing chains."""
        if "_diag" in self.__dict__:
            return self.__dict__["_diag"]
        names, arrays = [], []
        for gname, a in self.parameter_draws().items():
            g = self.structure.groups[gname]
            for i, el in enumerate(g.elements):
                names.append(g.labels[i] or f"{gname}[{el}]")
                arrays.append(a[..., i])
        arr = np.stack(arrays)
        rhat, bulk, _ = _stats(arr)
        stats = self.idata["sample_stats"].to_dataset()
        div = int(np.asarray(stats["diverging"]).sum()) if "diverging" in stats else 0
        lp_name = next((n for n in ("logp", "lp") if n in stats), None)
        stuck: list[int] = []
        if lp_name is not None and arr.shape[1] > 1:
            lp = np.asarray(stats[lp_name]).mean(axis=1)
            spread = np.asarray(stats[lp_name]).std(axis=1).mean()
            # A chain whose average log density sits far below the best chain's is in a minor mode.
            stuck = [int(c) for c in np.flatnonzero(lp < lp.max() - max(10.0, 4 * spread))]
        worst = np.argsort(-np.nan_to_num(rhat, nan=np.inf))
        diag = {
            # R-hat is undefined (NaN) for one chain: report NaN without NumPy's all-NaN warning.
            "max_rhat": float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan"),
            "min_ess_bulk": float(np.nanmin(bulk)) if np.isfinite(bulk).any() else float("nan"),
            "divergences": div,
            "high_rhat": [(names[i], float(rhat[i])) for i in worst if rhat[i] > MAX_RHAT],
            "low_ess": [(names[i], float(bulk[i])) for i in np.argsort(bulk) if bulk[i] < MIN_ESS],
            "stuck_chains": stuck,
            "chain_means": {names[i]: arr[i].mean(axis=1) for i in worst[:3]},
        }
        self.__dict__["_diag"] = diag
        return diag

    def check(self, warn: bool = True) -> list[str]:
        """Convergence messages (empty when all is well); with ``warn``, also issue them as warnings."""
        d = self.diagnostics()
        msgs = []
        if d["stuck_chains"]:
            parts = ", ".join(
                f"{n}: " + "/".join(f"{m:.2f}" for m in means) for n, means in d["chain_means"].items()
            )
            msgs.append(
                f"Chain(s) {d['stuck_chains']} sit in a lower-probability mode than the others (per-chain "
                f"means {parts}). Typically a factor's loadings flipped sign. Refit with another seed, more "
                f"tuning, or check the marker indicators."
            )
        if d["high_rhat"]:
            top = ", ".join(f"{n} ({r:.3f})" for n, r in d["high_rhat"][:6])
            msgs.append(
                f"R-hat > {MAX_RHAT} for {len(d['high_rhat'])} parameter(s): {top}. The chains disagree: "
                f"run more draws and tuning (e.g. tune=2000, draws=2000) before trusting these."
            )
        if d["low_ess"]:
            top = ", ".join(f"{n} ({e:.0f})" for n, e in d["low_ess"][:6])
            msgs.append(f"Bulk ESS < {MIN_ESS} for {len(d['low_ess'])} parameter(s): {top}. Run more draws.")
        if d["divergences"]:
            msgs.append(
                f"{d['divergences']} divergent transition(s) after tuning: the posterior may be biased. "
                f"Raise target_accept (e.g. 0.95) or simplify the model."
            )
        if warn:
            for m in msgs:
                warnings.warn(m, SamplingWarning, stacklevel=3)
        return msgs

    def _likelihood_line(self) -> str:
        """``"marginal likelihood"``, with the slopes' parametrization when the model has random slopes."""
        line = f"{self.compiled.formulation.name} likelihood"
        if self.structure.random_slopes:
            line += ", centered slopes" if "slope" in self.posterior else ", non-centered slopes"
        return line

    def __repr__(self) -> str:
        d = self.diagnostics()
        return (
            f"MSEMFit({self.run.chains} chains x {self.run.draws} draws, {self.run.sampler}, "
            f"{self._likelihood_line()}; max R-hat {d['max_rhat']:.3f}, "
            f"min bulk ESS {d['min_ess_bulk']:.0f}, {d['divergences']} divergences; "
            f"missing data: {self.missing().line()})"
        )
