"""Prior sensitivity by power-scaling (Kallioinen, Paananen, Bürkner & Vehtari 2024).

Raising the prior to a power ``alpha`` near 1 (``p(theta)^alpha p(y | theta)``) and seeing how
much each reported quantity's posterior moves tells whether a conclusion rests on the prior;
doing the same to the likelihood tells whether the data inform it at all. Both are estimated
from the draws already taken, by Pareto-smoothed importance sampling with weights
``p(theta)^(alpha - 1)`` (or ``p(y | theta)^(alpha - 1)``), without refitting. arviz-stats'
:func:`arviz_stats.psense` computes the sensitivity (the derivative of the cumulative
Jensen-Shannon distance between the perturbed and the actual posterior, with respect to
``log2 alpha``); a value above 0.05 is worth a look.

What is power-scaled, per posterior draw:

* **prior**: the model's priors on its parameters (paths, loadings, intercepts, SDs,
  correlations, random-slope SDs and correlations), on their natural scale (no Jacobian),
  as :meth:`pymsem.MSEM.priors` lists them. The population distribution of each cluster's
  random effects (random slopes, or latent values in the augmented formulation) is part of
  the model, not of the prior, and is not scaled, as priorsense recommends for hierarchical
  models.
* **likelihood**: the data's log density given the parameters (and given the clusters'
  random effects where the formulation samples them), the model's ``loglik`` term.

Diagnosis (the rules of :func:`arviz_stats.psense_summary`): prior and likelihood
sensitivity both at or above the threshold: *potential prior-data conflict*; prior above
and likelihood below: *potential strong prior / weak likelihood*; otherwise ``"✓"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["GUIDE", "log_density_draws", "sensitivity"]

#: What to do when a conclusion depends on the prior (also in ``docs/prior-sensitivity.md``).
GUIDE = """\
When a quantity is flagged:
- "potential strong prior / weak likelihood": the data say little about it, so the prior
  speaks. Usual suspects in multilevel SEM: between-level parameters with few clusters
  (under ~30-50), random-slope variances and correlations, between-level residual variances
  near 0. Report it with the prior stated, refit with a wider (or otherwise reasonable) prior
  (model.set_prior(...)) and show both results; or simplify that part of the model (fix a
  tiny variance, drop a random slope's correlation).
- "potential prior-data conflict": prior and data pull apart, the prior puts little mass where
  the data are. Check the prior's location and scale against the data's units
  (model.priors()); a default scaled from the data rarely conflicts, a hand-set one can.
- A quantity with no flag is driven by the data: changing a proper prior a little will not
  change it."""


def _reference_mode() -> Any:
    """PyTensor's Python linker: the prior and likelihood graphs are evaluated once per draw,
    so compiling them (tens of seconds with numba) would cost more than running them."""
    from pytensor.compile.mode import Mode

    return Mode(linker="py", optimizer="fast_compile")


def log_density_draws(fit: MSEMFit) -> tuple[np.ndarray, np.ndarray]:
    """The log prior and the log-likelihood of every posterior draw, each shaped (chain, draw).

    The prior is the sum of the parameters' prior densities on their natural scale (the
    model's free variables without a ``cluster`` dimension, and the priors added as
    potentials); the likelihood is the model's ``loglik`` term. Both are evaluated on a copy of
    the model without value transforms, so the posterior's values go in as they are.
    """
    import pytensor.tensor as pt
    from pymc.model.transform.conditioning import remove_value_transforms

    model = remove_value_transforms(fit.compiled.pymc_model)
    post = fit.posterior
    # Cluster-level variables (slopes, latent values) belong to the population model, not the prior.
    prior_rvs = [v for v in model.free_RVs if "cluster" not in (model.named_vars_to_dims.get(v.name) or ())]
    terms = [t.sum() for t in model.logp(vars=prior_rvs, jacobian=False, sum=False)] if prior_rvs else []
    lik = [p for p in model.potentials if p.name == "loglik"]
    if len(lik) != 1:
        raise NotImplementedError(
            f"The model has {len(lik)} log-likelihood terms named 'loglik'; prior sensitivity needs "
            f"exactly one (formulation {fit.compiled.formulation.name!r})."
        )
    other = [p for p in model.potentials if p.name != "loglik"]
    terms += [p.sum() for p in model.replace_rvs_by_values(other)]
    prior = pt.add(*terms) if terms else pt.as_tensor_variable(0.0)
    (loglik,) = model.replace_rvs_by_values([lik[0].sum()])
    fn = model.compile_fn(
        [prior, loglik], inputs=model.value_vars, mode=_reference_mode(), on_unused_input="ignore"
    )
    # A value variable can be named apart from its variable (an LKJ factor's is "<name>_cholesky").
    source = {value.name: rv.name for rv, value in model.rvs_to_values.items()}
    names = [v.name for v in model.value_vars]
    missing = [source.get(n, n) for n in names if source.get(n, n) not in post]
    if missing:
        raise KeyError(
            f"The posterior lacks the model's variable(s) {missing}; was it fitted with this model?"
        )
    values = {n: np.asarray(post[source.get(n, n)].values) for n in names}
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    lp, ll = np.empty((n_chain, n_draw)), np.empty((n_chain, n_draw))
    for c in range(n_chain):
        for d in range(n_draw):
            lp[c, d], ll[c, d] = fn({n: v[c, d] for n, v in values.items()})
    return lp, ll


def sensitivity(
    fit: MSEMFit,
    blocks: list[str] | str | None = None,
    threshold: float = 0.05,
    alphas: tuple[float, float] = (0.99, 1.01),
) -> pd.DataFrame:
    """Power-scaling prior and likelihood sensitivity of every reported quantity.

    Parameters
    ----------
    fit
        A fitted model.
    blocks
        Sections of the table to report (``["Regressions", "Derived"]``); ``None``: the
        table's default sections; ``"all"``: every quantity, variances and intercepts too.
    threshold
        Sensitivity at or above which a quantity is flagged (0.05, as arviz-stats).
    alphas
        The powers either side of 1 that the derivative is taken between.

    Returns
    -------
    pandas.DataFrame
        Indexed like :meth:`MSEMFit.summary` (``level``, ``parameter``), columns ``block``,
        ``label``, ``prior`` and ``likelihood`` (sensitivities) and ``diagnosis``. The
        DataFrame's ``attrs["guide"]`` holds :data:`GUIDE`.

    Raises
    ------
    NotImplementedError
        For a model with ordinal variables (see :mod:`pymsem.results.ordinal`).
    """
    import xarray as xr
    from arviz_stats import psense

    from pymsem.results.fit import PAPER_BLOCKS
    from pymsem.results.ordinal import refuse_ordinal

    refuse_ordinal(
        fit.structure,
        "fit.sensitivity()",
        "power-scaling the likelihood needs each draw's log-likelihood of the observed categories "
        "(a multivariate normal orthant probability per cluster, not available yet), and the "
        "complete-data likelihood the sampler used needs the per-cell latent responses, which are "
        "not stored",
        "Check the prior's influence by refitting with a wider prior (model.set_prior) and comparing "
        "the two tables (pymsem.compare_tables).",
    )

    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number, got {threshold!r}.")
    lo, hi = (float(a) for a in alphas)
    if not 0 < lo < 1 < hi:
        raise ValueError(f"alphas must be (below 1, above 1), e.g. (0.99, 1.01); got {alphas!r}.")
    qs = fit.quantities()
    present = list(dict.fromkeys(q.block for q in qs))
    if blocks is None:
        keep = [b for b in present if b in PAPER_BLOCKS]
    elif blocks == "all":
        keep = present
    else:
        keep = [blocks] if isinstance(blocks, str) else list(blocks)
        unknown = [b for b in keep if b not in present]
        if unknown:
            raise ValueError(f"No block(s) {unknown} in this model; blocks present: {present}.")
    qs = [q for q in qs if q.block in keep]
    if not qs:
        raise ValueError(f"No quantities in blocks {keep}.")
    cache = fit.__dict__.setdefault("_log_densities", {})
    if "draws" not in cache:
        cache["draws"] = log_density_draws(fit)
    lp, ll = cache["draws"]
    arr = np.stack([np.broadcast_to(q.draws, lp.shape) for q in qs], axis=-1)
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset({"quantity": (("chain", "draw", "row"), arr)}),
            "log_prior": xr.Dataset({"prior": (("chain", "draw"), lp)}),
            "log_likelihood": xr.Dataset({"loglik": (("chain", "draw"), ll)}),
        }
    )
    out = {}
    for group in ("prior", "likelihood"):
        ds = psense(tree, group=group, alphas=(lo, hi), sample_dims=["chain", "draw"])
        out[group] = np.asarray(ds["quantity"].values, dtype=float)

    def diagnose(p: float, lk: float) -> str:
        # arviz_stats.psense_summary's rules.
        if p >= threshold and lk >= threshold:
            return "potential prior-data conflict"
        if p > threshold > lk:
            return "potential strong prior / weak likelihood"
        return "✓"

    df = pd.DataFrame(
        {
            "level": [q.level for q in qs],
            "parameter": [q.parameter for q in qs],
            "block": [q.block for q in qs],
            "label": [q.label for q in qs],
            "prior": out["prior"],
            "likelihood": out["likelihood"],
            "diagnosis": [diagnose(p, lk) for p, lk in zip(out["prior"], out["likelihood"])],
        }
    ).set_index(["level", "parameter"])
    df.attrs["guide"] = GUIDE
    return df
