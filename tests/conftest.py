"""Shared fixtures: simulated data with known truth, and fitted models compiled once per session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms

FACTORS = ("ACH", "INT", "REL")

#: Truth for the Model-2 recovery data (SDs for variance parameters).
MODEL2_TRUTH = {
    "a_w": 0.35, "b_w": 0.45, "c_w": 0.25, "a_b": 0.60, "b_b": 0.50, "c_b": 0.25,
    "loading_w": 1.0, "loading_w[ACH2 by ACH]": 0.8, "loading_w[INT3 by INT]": 1.2,
    "loading_b": 1.0, "loading_b[ACH3 by ACH]": 1.2, "loading_b[REL2 by REL]": 0.8,
    "lv_sd_w": 1.0, "lv_sd_b": 0.6, "resid_sd_w": 1.0, "resid_sd_b": 0.25,
    "intercept_b": 2.0, "intercept_b[ACH1]": 3.0,
}  # fmt: skip

#: Truth for the Model-1 (observed variables at both levels) recovery data.
MODEL1_TRUTH = {
    "a_w": 0.30, "b_w": 0.40, "c_w": 0.20, "a_b": 0.60, "b_b": 0.50, "c_b": 0.30,
    "lv_sd_w": 1.0, "lv_sd_b": 0.5, "intercept_b": 1.0,
}  # fmt: skip


def mediation_paths(model: ms.MSEM) -> ms.MSEM:
    for level, s in (("within", "w"), ("between", "b")):
        model.path("INT", on="REL", level=level, label=f"a_{s}")
        model.path("ACH", on=["INT", "REL"], level=level, label=[f"b_{s}", f"c_{s}"])
    return model


def model2_spec(data: pd.DataFrame | None) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in FACTORS:
        m.latent(f, [f"{f}{i}" for i in range(1, 5)])
    return mediation_paths(m)


def model1_spec(data: pd.DataFrame | None) -> ms.MSEM:
    return mediation_paths(ms.MSEM(data, cluster="schid"))


@pytest.fixture(scope="session")
def model2_data() -> pd.DataFrame:
    return ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=100, cluster_size=20, seed=14)


@pytest.fixture(scope="session")
def model1_data() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    sizes = rng.integers(5, 30, size=80)  # unbalanced clusters
    return ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=80, cluster_size=sizes, seed=12)


@pytest.fixture(scope="session")
def model2_fit(model2_data: pd.DataFrame) -> ms.results.fit.MSEMFit:
    return model2_spec(model2_data).fit(draws=500, tune=500, chains=2, seed=3, progress=False, warn=False)


@pytest.fixture(scope="session")
def model1_fit(model1_data: pd.DataFrame) -> ms.results.fit.MSEMFit:
    return model1_spec(model1_data).fit(draws=500, tune=500, chains=2, seed=4, progress=False, warn=False)


@pytest.fixture(scope="session")
def model3_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tutorial Model 3 data (random slopes) and each cluster's drawn values."""
    from tests.test_random_slopes import MODEL3_TRUTH, model3_spec

    return ms.simulate(
        model3_spec(None), MODEL3_TRUTH, n_clusters=150, cluster_size=20, seed=23, return_cluster_values=True
    )


@pytest.fixture(scope="session")
def model3_fit(model3_data: tuple[pd.DataFrame, pd.DataFrame]) -> ms.results.fit.MSEMFit:
    from tests.test_random_slopes import model3_spec

    return model3_spec(model3_data[0]).fit(draws=600, tune=600, chains=2, seed=5, progress=False, warn=False)
