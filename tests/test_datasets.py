"""Tests for the bundled ``school`` data set and its generator."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pymsem.datasets import load_school
from pymsem.datasets._make_school import make_school

COLUMNS = [
    *(f"{f}{j}" for f in ("ACH", "INT", "REL") for j in range(1, 5)),
    "SES",
    "schid",
    "id",
]


@pytest.fixture(scope="module")
def school() -> tuple[pd.DataFrame, dict[str, Any]]:
    """The bundled data and truth, loaded once."""
    return load_school(return_truth=True)


def _icc1(df: pd.DataFrame, col: str) -> float:
    """ANOVA ICC(1) of ``col`` for balanced clusters in ``schid``."""
    g = df.groupby("schid")[col]
    k = int(g.size().iloc[0])
    msb = k * g.mean().var()
    msw = g.var().mean()
    return float((msb - msw) / (msb + (k - 1) * msw))


def test_shape_and_columns(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, _ = school
    assert df.shape == (3000, 15)
    assert list(df.columns) == COLUMNS
    assert df["schid"].dtype == np.int64 and df["id"].dtype == np.int64
    sizes = df.groupby("schid").size()
    assert len(sizes) == 100 and (sizes == 30).all()
    assert sorted(df["schid"].unique()) == list(range(1, 101))
    assert df["id"].tolist() == list(range(1, 3001))
    assert not df.isna().any().any()


def test_load_without_truth_is_dataframe() -> None:
    df = load_school()
    assert isinstance(df, pd.DataFrame)
    assert df.shape == (3000, 15)


def test_ses_varies_within_schools(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, _ = school
    within_sd = df.groupby("schid")["SES"].std()
    assert (within_sd > 0.5).all()
    assert 0.05 < _icc1(df, "SES") < 0.5  # SES has a between-school part too


def test_csv_matches_generator(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, truth = school
    gen, gen_truth = make_school(truth["seed"])
    pd.testing.assert_frame_equal(df, gen, check_exact=False, atol=1e-9, rtol=0)
    assert gen_truth.keys() == truth.keys()


def test_truth_keys(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    _, t = school
    scalars = [
        "a_w", "b_w", "c_w", "a_b", "b_b", "c_b", "SESb_a", "SESb_b", "RSa_var", "RSb_var",
        "rCor", "rCov", "SES_b_var", "med_w", "med_b", "a_con", "b_con", "med_con", "mome_p1", "mome_m1",
    ]  # fmt: skip
    for key in scalars:
        assert isinstance(t[key], float), key
    for key in ("loadings_within", "loadings_between", "intercepts", "within_ses_paths", "between_ses_paths"):
        assert isinstance(t[key], dict), key
    assert isinstance(t["description"], str) and "Model 4" in t["description"]
    assert len(t["loadings_within"]) == 9 and len(t["loadings_between"]) == 9
    assert t["loadings_within"]["ACH2 by ACH"] == 1.02
    assert t["loadings_between"]["REL4 by REL"] == 0.90
    assert "ACH1 by ACH" not in t["loadings_within"]
    assert set(t["intercepts"]) == set(COLUMNS[:12])
    assert t["intercepts"]["ACH1"] == 3.0
    assert t["within_ses_paths"] == {"INT <- SES": 0.2, "ACH <- SES": 0.0}
    assert t["between_ses_paths"] == {"INT <- SES": 0.3, "ACH <- SES": 0.0}


def test_derived_truth_formulas(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    _, t = school
    approx = pytest.approx
    assert t["rCov"] == approx(t["rCor"] * math.sqrt(t["RSa_var"] * t["RSb_var"]))
    assert t["rCov"] == approx(0.05 * math.sqrt(0.30 * 0.20))
    assert t["med_w"] == approx(t["a_w"] * t["b_w"] + t["rCov"])
    assert t["med_b"] == approx(t["a_b"] * t["b_b"])
    assert t["a_con"] == approx(t["a_b"] - t["a_w"])
    assert t["b_con"] == approx(t["b_b"] - t["b_w"])
    assert t["med_con"] == approx(t["med_b"] - t["med_w"])
    sd = math.sqrt(t["SES_b_var"])
    assert sd == approx(0.5)
    assert t["mome_p1"] == approx((t["a_w"] + t["SESb_a"] * sd) * (t["b_w"] + t["SESb_b"] * sd) + t["rCov"])
    assert t["mome_m1"] == approx((t["a_w"] - t["SESb_a"] * sd) * (t["b_w"] - t["SESb_b"] * sd) + t["rCov"])
    paths = {"a_w": 0.33, "b_w": 0.46, "c_w": 0.25, "a_b": 0.60, "b_b": 0.58, "c_b": 0.22}
    assert {k: t[k] for k in paths} == paths


def test_moments_consistent_with_truth(school: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    df, t = school
    for col in ("ACH1", "INT1", "REL1"):
        assert 0.05 < _icc1(df, col) < 0.5, col

    def centred_mean(prefix: str) -> pd.Series:
        comp = df[[f"{prefix}{j}" for j in range(1, 5)]].mean(axis=1)
        return comp - comp.groupby(df["schid"]).transform("mean")

    int_c, rel_c, ach_c = centred_mean("INT"), centred_mean("REL"), centred_mean("ACH")
    # Within-school slope of the INT composite on the REL composite: positive, attenuated below a_w.
    slope = float((int_c * rel_c).sum() / (rel_c * rel_c).sum())
    assert 0.1 < slope < t["a_w"]
    # Within-school ACH on INT and REL (composites): both positive, b-type slope attenuated below b_w.
    x = np.column_stack([int_c, rel_c])
    coef, *_ = np.linalg.lstsq(x, ach_c.to_numpy(), rcond=None)
    assert 0.1 < coef[0] < t["b_w"]
    assert coef[1] > 0.0
    # SES has no direct effect on ACH and is independent of REL: tiny within-school correlations.
    ses_c = df["SES"] - df.groupby("schid")["SES"].transform("mean")
    assert abs(np.corrcoef(ses_c, rel_c)[0, 1]) < 0.08
