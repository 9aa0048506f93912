"""A compiled log density is reused for new data of the same shape, and gives the same draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem import reuse
from tests.conftest import MODEL1_TRUTH, model1_spec

FIT = {"draws": 200, "tune": 300, "chains": 2, "progress": False, "warn": False}


@pytest.fixture(autouse=True)
def graph_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model 1 on PyTensor's compiled graph, the route that compiles and so reuses.

    The whole-model kernel (tests/test_model_kernel.py) covers Model 1 and compiles nothing per
    model; the models it does not cover (missing data, random slopes) are compiled, and reused.
    """
    from pymsem import sample

    monkeypatch.setattr(sample, "_whole_model_kernel", lambda compiled, init: None)


@pytest.fixture(scope="module")
def same_shape_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two data sets with the same clusters and sizes, different values."""
    sizes = np.random.default_rng(8).integers(5, 30, size=40)
    spec = model1_spec(None)
    a, b = (ms.simulate(spec, MODEL1_TRUTH, n_clusters=40, cluster_size=sizes, seed=s) for s in (31, 32))
    return a, b


def _logp_func(fit: ms.results.fit.MSEMFit) -> object:
    (nut,) = [v for k, v in fit.compiled.sampler_cache.items() if k[0] == "nutpie"]
    return nut.compiled_logp_func


def test_new_data_of_the_same_shape_reuses_the_compiled_function(
    same_shape_data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    a, b = same_shape_data
    fit_a = model1_spec(a).fit(seed=1, **FIT)
    fit_b = model1_spec(b).fit(seed=2, **FIT)
    assert fit_b.run.reused_compiled
    assert _logp_func(fit_b) is _logp_func(fit_a)

    # The reused function sees the new data and the new data's starting values and priors:
    # its draws are those of a fresh compile, number for number.
    reuse.clear()
    fresh = model1_spec(b).fit(seed=2, **FIT)
    assert not fresh.run.reused_compiled
    assert _logp_func(fresh) is not _logp_func(fit_a)
    for name in ("path_w", "path_b", "lv_sd_w", "intercept_b"):
        np.testing.assert_array_equal(
            fit_b.posterior[name].to_numpy(), fresh.posterior[name].to_numpy(), err_msg=name
        )
    # And the data did change: the two data sets' posteriors differ.
    assert not np.allclose(fit_a.posterior["path_w"].mean(), fit_b.posterior["path_w"].mean())


def test_prior_values_travel_as_data_and_a_new_prior_family_recompiles(
    same_shape_data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    a, b = same_shape_data
    base = model1_spec(a).fit(seed=1, **FIT)
    # Same family, new values: reused, and the tight prior pins the paths near 0.5.
    tight = model1_spec(b).set_prior("path", ms.Prior("Normal", mu=0.5, sigma=0.01)).fit(seed=3, **FIT)
    assert tight.run.reused_compiled
    post = tight.posterior["path_w"].to_numpy()
    assert np.all(np.abs(post.mean(axis=(0, 1)) - 0.5) < 0.02)
    assert np.all(post.std(axis=(0, 1)) < 0.015)
    # A different family is a different graph: compiled afresh, never reused by mistake.
    student = model1_spec(b).set_prior("path", ms.Prior("StudentT", nu=3, mu=0, sigma=1)).fit(seed=3, **FIT)
    assert not student.run.reused_compiled
    assert _logp_func(student) is not _logp_func(base)


def test_different_cluster_sizes_are_not_the_same_shape(
    same_shape_data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    a, _ = same_shape_data
    model_a = model1_spec(a)
    model_a.fit(seed=1, **FIT)
    other = ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=41, cluster_size=10, seed=33)
    compiled = model1_spec(other).compile()
    from pymsem.sample import _initial_point

    assert reuse.find(compiled.pymc_model, _initial_point(compiled, None)) is None
