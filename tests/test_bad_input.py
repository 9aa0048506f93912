"""Bad data and bad priors are refused early, with a message naming the column or parameter.

Complements ``test_specification.py`` (missing columns, text in a numeric column,
missing cluster ids, fewer than two clusters) and ``test_missing.py`` (an
all-missing column). Nothing here samples: building ``clustered_data()`` is
where data preparation runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.specification.errors import MSEMDataError
from pymsem.tutorial import model2


@pytest.fixture
def school() -> pd.DataFrame:
    """200 rows of the tutorial data, with row labels that are not positions.

    Labels ``r0, r1, ...`` show that messages give the user's index, not row numbers.
    """
    df = ms.datasets.load_school().iloc[:200].copy()
    df.index = [f"r{i}" for i in range(len(df))]
    return df


# ------------------------------------------------------------------- values
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_value_is_refused(school: pd.DataFrame, value: float) -> None:
    school.loc[["r3", "r5"], "ACH1"] = value
    with pytest.raises(
        MSEMDataError,
        match=r"'ACH1' has 2 infinite value\(s\) \(rows with index \['r3', 'r5'\]\).*Replace them with NaN",
    ):
        model2(school).clustered_data()


@pytest.mark.parametrize("value", [1e300, -1e160])
def test_huge_value_is_refused(school: pd.DataFrame, value: float) -> None:
    school.loc["r7", "INT2"] = value
    with pytest.raises(MSEMDataError, match=r"'INT2' has 1 value\(s\) too large.*\['r7'\].*NaN"):
        model2(school).clustered_data()


def test_many_bad_rows_are_listed_in_part(school: pd.DataFrame) -> None:
    school.iloc[:8, school.columns.get_loc("REL3")] = np.inf
    with pytest.raises(
        MSEMDataError, match=r"'REL3' has 8 infinite.*\['r0', 'r1', 'r2', 'r3', 'r4'\] \.\.\."
    ):
        model2(school).clustered_data()


def test_large_but_representable_values_are_kept(school: pd.DataFrame) -> None:
    # A change of units (e.g. cents) is not an error: only magnitudes whose squares overflow are.
    school["ACH1"] = school["ACH1"] * 1e100
    assert model2(school).clustered_data().frame["ACH1"].abs().max() > 1e100


def test_row_labels_survive_dropping_rows_without_cluster(school: pd.DataFrame) -> None:
    school["schid"] = school["schid"].astype(float)
    school.loc["r0", "schid"] = np.nan  # dropping it shifts positions, not labels
    school.loc["r9", "ACH2"] = np.inf
    with pytest.raises(MSEMDataError, match=r"'ACH2' has 1 infinite value\(s\) \(rows with index \['r9'\]\)"):
        model2(school, drop_missing_cluster=True).clustered_data()


def test_constant_column_is_refused(school: pd.DataFrame) -> None:
    school["ACH1"] = 3.0
    with pytest.raises(
        MSEMDataError, match=r"'ACH1' is constant: all 200 observed values are 3.*no variance"
    ):
        model2(school).clustered_data()


def test_column_with_a_single_observed_value_is_refused(school: pd.DataFrame) -> None:
    school["SES"] = np.nan
    school.loc["r4", "SES"] = 1.5
    m = ms.MSEM(school, cluster="schid").latent("ACH", ["ACH1", "ACH2", "ACH3"])
    m.path("ACH", on="SES", level="within")
    with pytest.raises(
        MSEMDataError, match=r"'SES' has a single observed value \(1.5, row with index \['r4'\]\)"
    ):
        m.clustered_data()


# ------------------------------------------------------------------ columns
def test_duplicated_used_column_is_refused(school: pd.DataFrame) -> None:
    doubled = pd.concat([school, school[["ACH1"]]], axis=1)
    with pytest.raises(MSEMDataError, match=r"several columns with the same name: 'ACH1' \(2 columns\)"):
        model2(doubled).clustered_data()


def test_duplicated_cluster_column_is_refused(school: pd.DataFrame) -> None:
    doubled = pd.concat([school, school[["schid"]]], axis=1)
    with pytest.raises(MSEMDataError, match=r"'schid' \(2 columns\)"):
        model2(doubled).clustered_data()


def test_duplicated_unused_column_is_ignored(school: pd.DataFrame) -> None:
    # The model never selects 'id', so its copy is not ambiguous.
    doubled = pd.concat([school, school[["id"]]], axis=1)
    assert model2(doubled).clustered_data().n_obs == len(school)


def test_boolean_column_is_refused_with_the_conversion(school: pd.DataFrame) -> None:
    school["ACH1"] = school["ACH1"] > 3
    with pytest.raises(MSEMDataError, match=r"'ACH1' is boolean.*astype\(float\)"):
        model2(school).clustered_data()


def test_numbers_stored_as_text_get_the_conversion(school: pd.DataFrame) -> None:
    school["INT1"] = school["INT1"].astype(str)
    with pytest.raises(MSEMDataError, match=r"'INT1' is not numeric.*read as numbers.*pd.to_numeric"):
        model2(school).clustered_data()


def test_complex_column_is_refused(school: pd.DataFrame) -> None:
    school["REL1"] = school["REL1"].astype(complex)
    with pytest.raises(MSEMDataError, match=r"'REL1' holds complex numbers"):
        model2(school).clustered_data()


# ------------------------------------------------------------------ clusters
def test_every_cluster_id_missing_is_refused(school: pd.DataFrame) -> None:
    school["schid"] = np.nan
    with pytest.raises(MSEMDataError, match=r"'schid' is missing in every row \(200\)"):
        model2(school, drop_missing_cluster=True).clustered_data()


def test_row_id_as_cluster_warns(school: pd.DataFrame) -> None:
    m = ms.MSEM(school, cluster="id").latent("ACH", ["ACH1", "ACH2", "ACH3"], levels="between")
    with pytest.warns(UserWarning, match=r"Every cluster of 'id' has a single row \(200 clusters\)"):
        cd = m.clustered_data()
    assert cd.level2 == {"ACH1", "ACH2", "ACH3"}  # the model can still run, between only


# -------------------------------------------------------------------- priors
@pytest.mark.parametrize(
    ("distribution", "params", "message"),
    [
        (
            "Normal",
            {"mu": 0, "sigma": -1},
            r'Prior\("Normal", mu=0, sigma=-1\) is invalid: sigma must be > 0',
        ),
        ("HalfNormal", {"sigma": 0}, r"HalfNormal.*sigma must be > 0 \(got 0\)"),
        ("Normal", {"mu": 0, "tau": -2.0}, r"Normal.*tau must be > 0"),
        ("Uniform", {"lower": 1, "upper": 0}, r"Uniform.*lower must be < upper \(got lower=1, upper=0\)"),
        ("TruncatedNormal", {"mu": 0, "sigma": 1, "lower": 2, "upper": 2}, r"TruncatedNormal.*lower must be"),
        ("TruncatedNormal", {"mu": 0, "sigma": -1, "lower": 0, "upper": 2}, r"TruncatedNormal.*sigma must"),
        ("StudentT", {"nu": 0, "mu": 0, "sigma": 1}, r"StudentT.*nu must be > 0"),
        ("HalfCauchy", {"beta": -1}, r"HalfCauchy.*beta must be > 0"),
        ("Gamma", {"alpha": 0, "beta": 1}, r"Gamma.*alpha must be > 0"),
        ("InverseGamma", {"alpha": 1, "beta": -1}, r"InverseGamma.*beta must be > 0"),
        ("Exponential", {"lam": 0}, r"Exponential.*lam must be > 0"),
        ("Beta", {"alpha": 1, "beta": 0}, r"Beta.*beta must be > 0"),
        ("LKJCorr", {"eta": 0}, r"LKJCorr.*eta must be > 0"),
        ("Normal", {"mu": 0, "sigma": np.inf}, r"Normal.*sigma must be a finite number \(got inf\)"),
        ("Normal", {"mu": np.nan, "sigma": 1}, r"Normal.*mu must be a finite number"),
        ("Normal", {"mu": 0, "sigma": "1"}, r"Normal.*sigma must be a number \(got str '1'\)"),
        ("Normal", {"mu": 0, "sigma": True}, r"Normal.*sigma must be a number"),
    ],
)
def test_invalid_prior_is_refused_when_built(distribution: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ms.Prior(distribution, **params)


def test_saved_prior_is_checked_on_load() -> None:
    with pytest.raises(ValueError, match=r"HalfNormal.*sigma must be > 0"):
        ms.Prior.from_dict({"distribution": "HalfNormal", "sigma": -0.5})


@pytest.mark.parametrize(
    ("prior", "text"),
    [
        (ms.Prior("Normal", mu=-3, sigma=np.float64(0.5)), 'Prior("Normal", mu=-3, sigma=0.5)'),
        (ms.Prior("Uniform", lower=-1, upper=1), 'Prior("Uniform", lower=-1, upper=1)'),
        (ms.Prior("Cauchy", alpha=-2, beta=1), 'Prior("Cauchy", alpha=-2, beta=1)'),  # alpha: a location
        (ms.Prior("LKJCorr", eta=2.0), 'Prior("LKJCorr", eta=2)'),
    ],
)
def test_valid_prior_is_kept_with_its_repr(prior: ms.Prior, text: str) -> None:
    assert repr(prior) == text
