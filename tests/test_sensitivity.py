"""Power-scaling prior sensitivity: a prior that decides a parameter is flagged, the data's parameters not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.results.sensitivity import GUIDE, log_density_draws
from tests.conftest import MODEL1_TRUTH, model1_spec

FIT = {"draws": 400, "tune": 400, "chains": 2, "seed": 1, "progress": False, "warn": False}
#: A prior far tighter than what 8 clusters can tell about the between-level a path.
TIGHT = ms.Prior("Normal", mu=0.6, sigma=0.02)


@pytest.fixture(scope="module")
def few_clusters() -> pd.DataFrame:
    """8 schools of 30 students: 240 students inform the within paths, 8 cluster means the between ones."""
    return ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=8, cluster_size=30, seed=2)


@pytest.fixture(scope="module")
def tight_fit(few_clusters: pd.DataFrame) -> ms.results.fit.MSEMFit:
    m = model1_spec(few_clusters).set_prior("a_b", TIGHT)
    m.derived("ind_b", "a_b * b_b")
    return m.fit(**FIT)


@pytest.fixture(scope="module")
def default_fit(few_clusters: pd.DataFrame, tight_fit: ms.results.fit.MSEMFit) -> ms.results.fit.MSEMFit:
    return model1_spec(few_clusters).fit(**FIT)  # the whole-model kernel: nothing to compile


def test_a_tight_prior_with_few_clusters_is_flagged(tight_fit) -> None:
    s = tight_fit.sensitivity()
    assert list(s.index) == list(tight_fit.summary().query("block in @s.block.unique()").index)
    by = s.reset_index().set_index("label")
    assert by.loc["a_b", "prior"] > 0.05
    assert by.loc["a_b", "diagnosis"] == "potential strong prior / weak likelihood"
    # 240 students pin the within paths down: the prior has no say, the likelihood all of it.
    for lab in ("a_w", "b_w", "c_w"):
        assert by.loc[lab, "prior"] < 0.05 < by.loc[lab, "likelihood"], lab
        assert by.loc[lab, "diagnosis"] == "✓"
    assert "ind_b" in by.index and by.loc["ind_b", "block"] == "Derived"  # derived effects reported
    assert s.attrs["guide"] == GUIDE and "few clusters" in GUIDE


def test_the_flag_comes_from_the_prior(tight_fit, default_fit) -> None:
    tight = tight_fit.sensitivity(blocks="Regressions").reset_index().set_index("label")
    default = default_fit.sensitivity(blocks="Regressions").reset_index().set_index("label")
    # Same data, the default (data-scaled, wide) prior: a_b is less prior-sensitive, and the
    # likelihood has its say again (over seeds 1-5: prior 0.086-0.105 tight, 0.025-0.071 default;
    # likelihood 0.029-0.049 tight, 0.089-0.146 default).
    assert tight.loc["a_b", "prior"] > default.loc["a_b", "prior"]
    assert tight.loc["a_b", "likelihood"] < 0.05 < default.loc["a_b", "likelihood"]


def test_log_prior_is_the_priors_table_and_adds_up_to_the_sampled_density(tight_fit) -> None:
    """The log prior is, by hand, the sum of every listed prior's density at the draws; with the
    likelihood and the transforms' log-Jacobians it is the density the sampler saw."""
    from scipy.stats import halfnorm, norm

    lp, ll = log_density_draws(tight_fit)
    by_hand = np.zeros_like(lp)
    n = 0
    for g in tight_fit.structure.groups.values():
        for i, el in enumerate(g.elements):
            prior, x = tight_fit.compiled.priors[g.name][i].prior, tight_fit.draws(f"{g.name}[{el}]")
            d, n = prior.params, n + 1
            if prior.distribution == "Normal":
                by_hand += norm(d["mu"], d["sigma"]).logpdf(x)
            else:
                assert prior.distribution == "HalfNormal"
                by_hand += halfnorm(scale=d["sigma"]).logpdf(x)
    assert n == 15 and tight_fit.compiled.priors["path_b"][0].prior == TIGHT  # a_b's prior is the tight one
    np.testing.assert_allclose(lp, by_hand, rtol=1e-10)
    post = tight_fit.posterior
    jac = sum(np.log(post[n].values).sum(-1) for n in ("lv_sd_w", "lv_sd_b"))  # log-transformed SDs
    stats = tight_fit.idata["sample_stats"].to_dataset()
    np.testing.assert_allclose(lp + ll + jac, stats["logp"].values, rtol=1e-8, atol=1e-6)


def test_bad_arguments(tight_fit) -> None:
    with pytest.raises(ValueError, match="threshold"):
        tight_fit.sensitivity(threshold=0)
    with pytest.raises(ValueError, match="alphas"):
        tight_fit.sensitivity(alphas=(1.01, 0.99))
    with pytest.raises(ValueError, match="Loadings"):
        tight_fit.sensitivity(blocks=["Loadings"])


def _prior_by_hand(fit: ms.results.fit.MSEMFit) -> np.ndarray:
    """Sum of every parameter's prior log density at the draws, from the resolved priors."""
    from scipy.stats import beta, halfnorm, norm

    out = 0.0
    for g in fit.structure.groups.values():
        for i, el in enumerate(g.elements):
            prior, x = fit.compiled.priors[g.name][i].prior, fit.draws(f"{g.name}[{el}]")
            d = prior.params
            if prior.distribution == "Normal":
                out = out + norm(d["mu"], d["sigma"]).logpdf(x)
            elif prior.distribution == "HalfNormal":
                out = out + halfnorm(scale=d["sigma"]).logpdf(x)
            else:
                raise AssertionError(f"no hand density for {prior!r}")
    if "slope_cor" in fit.compiled.priors:
        # Two slopes: LKJ(eta) on their correlation r is (r + 1) / 2 ~ Beta(eta, eta).
        eta = fit.compiled.priors["slope_cor"][0].prior.params["eta"]
        L = fit.posterior["slope_corr_chol"].values
        r = L[..., 1, 0] * L[..., 0, 0]
        out = out + beta(eta, eta).logpdf((r + 1) / 2) - np.log(2)
    return out


def test_random_slopes_population_is_not_prior(model3_fit) -> None:
    """With random slopes the prior is the hyperparameters' (slope SDs, their LKJ correlation),
    not the clusters' slopes, which follow their population distribution."""
    lp, ll = log_density_draws(model3_fit)
    assert "slope_raw" in model3_fit.posterior  # sampled per cluster, left out of the prior
    np.testing.assert_allclose(lp, _prior_by_hand(model3_fit), rtol=1e-9)
    assert np.all(np.isfinite(ll))
    s = model3_fit.sensitivity()
    assert {"RSa variance", "RSb variance", "RSa, RSb correlation"} <= set(
        s.index.get_level_values("parameter")
    )
    assert s[["prior", "likelihood"]].notna().all().all()
