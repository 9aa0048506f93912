"""Prior predictive distributions of the quantities users reason about: ICCs, R-squared, effects.

``model.prior_predictive(draws=500)`` samples the model's priors (the data-scaled defaults and
any ``set_prior`` overrides) with :func:`pymc.sample_prior_predictive` on the compiled PyMC
model, then reads every draw as if it were a posterior draw: the same code that reports a
fit reports what the priors imply, so the two cannot disagree:

- ``ICC x``: each level-1 variable's model-implied intraclass correlation;
- ``R2 within y`` / ``R2 between y``: the share of each regression outcome's variance its
  predictors explain at that level, ``1 - Psi_yy / Sigma_eta_yy``;
- the model's derived quantities (``model.derived``: indirect, contextual, ... effects);
- ``slope SD s``: each random slope's SD (its total SD where slopes are regressed on
  between-level variables).

Since the default priors are scaled by the data (see :mod:`pymsem.priors`), the model needs
its data. :meth:`PriorPredictive.data_set` draws a whole data set (observed cluster sizes)
from one prior draw, with :func:`pymsem.simulate.draw_data`.

Ordinal variables: ICCs and R-squared are those of the latent responses (within residual
variance 1, the probit scale), as in a fit's table. The thresholds' prior is the ordered
``Normal(0, THRESHOLD_SD)`` of :mod:`pymsem.compile.ordinal`, a normal density restricted to
increasing vectors, which is the distribution of sorted independent normal draws: the draws
of each threshold vector are sorted. ``data_set`` cuts the latent responses at the draw's
thresholds and returns the user's category values.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymsem.compile.build import CompiledModel
    from pymsem.specification.model import MSEM

__all__ = ["PriorPredictive", "prior_predictive"]


@dataclass
class PriorPredictive:
    """Prior draws of the implied quantities.

    Attributes
    ----------
    draws
        One row per prior draw, one column per quantity.
    kinds
        Each column's kind: ``ICC``, ``R2 within``, ``R2 between``, ``derived``, ``slope SD``.
    """

    draws: pd.DataFrame
    kinds: dict[str, str]
    model: MSEM
    compiled: CompiledModel
    parameters: dict[str, np.ndarray]  # group name -> (draws, n)
    slope_cov: np.ndarray | None  # (draws, k, k) or None
    seed: int | None = None
    thresholds: dict[str, np.ndarray] | None = None  # ordinal column -> (draws, K - 1)

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Mean, SD, median and equal-tailed interval of each quantity's prior distribution."""
        lo, hi = (1 - ci_prob) / 2, 1 - (1 - ci_prob) / 2
        d = self.draws
        out = pd.DataFrame(
            {
                "kind": pd.Series(self.kinds),
                "mean": d.mean(),
                "sd": d.std(ddof=1),
                "median": d.median(),
                f"{100 * lo:g}%": d.quantile(lo),
                f"{100 * hi:g}%": d.quantile(hi),
            }
        )
        return out.loc[list(d.columns)]

    def __repr__(self) -> str:
        return f"Prior predictive ({len(self.draws)} draws)\n" + self.summary().to_string(
            float_format=lambda v: f"{v:.3f}"
        )

    def data_set(self, i: int = 0, seed: int | None = None) -> pd.DataFrame:
        """A data set drawn from prior draw ``i`` with the observed cluster sizes.

        Ordinal columns hold categories: the drawn latent responses cut at draw ``i``'s
        thresholds, as the user's category values.
        """
        from pymsem.results.ordinal import category_values, cut_columns
        from pymsem.simulate import draw_data

        st = self.compiled.structure
        cd = self.compiled.data
        sizes = np.asarray(cd.sizes, dtype=int)
        vec = {k: v[i] for k, v in self.parameters.items()}
        d = draw_data(
            st, vec, None if self.slope_cov is None else self.slope_cov[i], sizes, np.random.default_rng(seed)
        )
        cl = np.repeat(np.arange(len(sizes)), sizes)
        level1 = d.level1
        if st.ordinal:
            level1 = cut_columns(st, level1, {c: t[i] for c, t in (self.thresholds or {}).items()})
        df = pd.DataFrame(level1, columns=st.level1)
        for c in st.ordinal:
            like = self.model.data[c] if c in self.model.data else None
            df[c] = category_values(df[c].to_numpy(), cd.ordinal[c], like=like)
        for j, c in enumerate(st.level2):
            df[c] = d.level2[cl, j]
        df[cd.cluster] = np.asarray(cd.cluster_ids)[cl]
        return df

    def plot(self, quantities: list[str] | str | None = None, max_panels: int = 12) -> Any:
        """Histogram of each quantity's prior distribution, with its median and 95% interval.

        Parameters
        ----------
        quantities
            Column names or kinds (``"ICC"``, ``"derived"``...); default all.
        max_panels
            At most this many panels.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        cols = list(self.draws.columns)
        if quantities is not None:
            wanted = [quantities] if isinstance(quantities, str) else list(quantities)
            cols = [c for c in cols if c in wanted or self.kinds[c] in wanted]
            if not cols:
                raise KeyError(
                    f"No quantity or kind {wanted!r}; quantities: {', '.join(self.draws.columns)}."
                )
        cols = cols[:max_panels]
        if not cols:
            raise ValueError("The model implies no ICC, R-squared, derived quantity or slope SD to plot.")
        ncol = min(3, len(cols))
        nrow = -(-len(cols) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.8 * nrow), squeeze=False)
        for ax, c in zip(axes.flat, cols):
            x = self.draws[c].to_numpy()
            x = x[np.isfinite(x)]
            lo, med, hi = np.quantile(x, [0.025, 0.5, 0.975])
            # Heavy-tailed priors (slopes, products) would squeeze the histogram: clip the view.
            ax.hist(x[(x >= lo) & (x <= hi)], bins=40, color="C0", alpha=0.7)
            ax.axvline(med, color="k", lw=1.5)
            ax.set_title(f"{c}\nmedian {med:.2f}, 95% [{lo:.2f}, {hi:.2f}]", fontsize=9)
            ax.set_yticks([])
        for ax in list(axes.flat)[len(cols) :]:
            ax.set_visible(False)
        fig.suptitle("Prior predictive", fontsize=10)
        fig.tight_layout()
        return fig


def _r_squared(compiled: CompiledModel, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pymsem.compile.matrices import level_matrices

    st = compiled.structure
    out = {}
    for ls, name in ((st.within, "within"), (st.between, "between")):
        if not len(ls.beta_free):
            continue
        M = level_matrices(ls, params)
        for i in sorted(set(ls.beta_free[:, 0].tolist())):
            total = M.Sigma_eta[..., i, i]
            out[f"R2 {name} {ls.latent[i]}"] = 1.0 - M.Psi[..., i, i] / total
    return out


def prior_predictive(model: MSEM, draws: int = 500, seed: int | None = 0) -> PriorPredictive:
    """Sample the priors and report the implied ICCs, R-squared, derived quantities and slope SDs.

    Parameters
    ----------
    model
        The specification, with its data (the default priors are scaled by it).
    draws
        Prior draws.
    seed
        Random seed.

    Returns
    -------
    PriorPredictive
        ``.draws`` (a DataFrame), ``.summary()``, ``.plot()``, ``.data_set(i)``.
    """
    import pymc as pm
    import xarray as xr

    from pymsem.results.fit import MSEMFit
    from pymsem.sample import SamplingRun

    if int(draws) != draws or draws < 2:
        raise ValueError(f"draws must be an integer of at least 2, got {draws!r}.")
    from pymsem.compile.build import build_pymc_model

    # Not model.compile(): that samples several grand means through a whitening map (a Flat
    # variable with the prior as a Potential), which has no prior to draw from. The graph
    # without it has the same priors as ordinary random variables.
    compiled = build_pymc_model(
        model.structure(), model.clustered_data(), model.prior_overrides, whiten=False
    )
    st = compiled.structure
    pmodel = compiled.pymc_model
    names = [n for n in st.groups if n in pmodel.named_vars]
    missing = [n for n in st.groups if n not in pmodel.named_vars]
    if missing:
        raise RuntimeError(f"The compiled model has no variable for {missing}: cannot sample its prior.")
    if st.random_slopes and "slope_corr_chol" in pmodel.named_vars:
        names.append("slope_corr_chol")
    from pymsem.compile.ordinal import threshold_name

    names += [threshold_name(c) for c in st.ordinal]
    log = logging.getLogger("pymc")
    level = log.level
    log.setLevel(logging.WARNING)  # PyMC logs the variables it samples: noise here
    try:
        with warnings.catch_warnings():
            # The likelihood is a Potential: it is meant to be ignored when sampling the prior.
            warnings.filterwarnings("ignore", message=re.escape("The effect of Potentials"))
            prior = pm.sample_prior_predictive(
                draws=int(draws), model=pmodel, var_names=names, random_seed=seed, return_inferencedata=True
            )
    finally:
        log.setLevel(level)
    ds = prior["prior"]
    ds = ds.to_dataset() if hasattr(ds, "to_dataset") else ds
    for c in st.ordinal:
        # Forward sampling ignores the ordered transform; sorting gives the ordered prior exactly.
        name = threshold_name(c)
        ds[name] = ds[name].copy(data=np.sort(ds[name].values, axis=-1))
    # Read the prior draws as a one-chain posterior: the fit's reporting code does the rest.
    run = SamplingRun(
        idata=xr.DataTree.from_dict({"posterior": ds}),
        sampler="prior",
        draws=int(draws),
        tune=0,
        chains=1,
        seed=seed,
        compile_seconds=0.0,
        sampling_seconds=0.0,
    )
    pseudo = MSEMFit(model, compiled, run)
    params = pseudo.parameter_draws()
    cols: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for q in pseudo.base_quantities():
        if q.block == "Intraclass correlations":
            cols[q.parameter] = q.draws
            kinds[q.parameter] = "ICC"
    for k, v in _r_squared(compiled, params).items():
        cols[k] = v
        kinds[k] = k.rsplit(" ", 1)[0]
    for q in pseudo.derived_quantities():
        cols[q.label] = q.draws
        kinds[q.label] = "derived"
    slope_cov = None
    if st.random_slopes:
        from pymsem.compile.slopes import slope_covariance

        total = slope_covariance(st, pseudo.posterior, total=True)
        for i, r in enumerate(st.random_slopes):
            cols[f"slope SD {r.name}"] = np.sqrt(total[..., i, i])
            kinds[f"slope SD {r.name}"] = "slope SD"
        k = len(st.random_slopes)
        slope_cov = slope_covariance(st, pseudo.posterior).reshape(-1, k, k)
    df = pd.DataFrame({c: np.asarray(v).reshape(-1) for c, v in cols.items()})
    flat = {n: v.reshape(-1, v.shape[-1]) for n, v in params.items()}
    tau = {c: t.reshape(-1, t.shape[-1]) for c, t in pseudo.threshold_draws().items()} if st.ordinal else None
    return PriorPredictive(df, kinds, model, compiled, flat, slope_cov, seed, tau)
