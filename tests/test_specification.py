"""Bad input gets a clear error naming the column, variable or label (no sampling here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.specification.errors import MSEMDataError, MSEMSpecificationError


@pytest.fixture
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame(rng.normal(size=(n, 6)), columns=["X1", "X2", "X3", "Y1", "Y2", "Y3"])
    df["cl"] = np.repeat(np.arange(10), 6)
    df["size"] = np.repeat(rng.normal(size=10), 6)
    return df


def two_factor(df: pd.DataFrame) -> ms.MSEM:
    m = ms.MSEM(df, cluster="cl")
    m.latent("X", ["X1", "X2", "X3"]).latent("Y", ["Y1", "Y2", "Y3"])
    return m.path("Y", on="X", level="within", label="b")


def test_valid_model_lowers(data: pd.DataFrame) -> None:
    st = two_factor(data).structure()
    assert st.within.latent == ["X", "Y"]
    assert st.groups["loading_w"].elements == ["X2 by X", "X3 by X", "Y2 by Y", "Y3 by Y"]
    assert st.labels["b"].group == "path_w"


def test_variable_not_in_data(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").latent("X", ["X1", "X2", "X4"])
    with pytest.raises(MSEMSpecificationError, match=r"'X4'.*Did you mean"):
        m.structure()


def test_cluster_column_missing(data: pd.DataFrame) -> None:
    with pytest.raises(MSEMDataError, match=r"Cluster column 'school'"):
        ms.MSEM(data, cluster="school")


def test_cluster_with_missing_values(data: pd.DataFrame) -> None:
    data.loc[[3, 7], "cl"] = np.nan
    with pytest.raises(MSEMDataError, match=r"'cl' has 2 missing value\(s\) \(rows with index \[3, 7\]\)"):
        two_factor(data).structure()


def test_non_numeric_indicator(data: pd.DataFrame) -> None:
    data["X2"] = data["X2"].astype(str)
    data.loc[0, "X2"] = "high"
    with pytest.raises(MSEMDataError, match=r"'X2' is not numeric.*'high'"):
        two_factor(data).structure()


def test_too_few_indicators(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").latent("X", ["X1"]).latent("Y", ["Y1", "Y2", "Y3"])
    with pytest.raises(MSEMSpecificationError, match=r"Latent 'X' has 1 indicator"):
        m.structure()
    alone = ms.MSEM(data, cluster="cl").latent("X", ["X1", "X2"])
    with pytest.raises(MSEMSpecificationError, match=r"needs at least 3"):
        alone.structure()


def test_shared_label_is_one_parameter(data: pd.DataFrame) -> None:
    """A label on two paths makes them one parameter (an equality constraint), as in lavaan."""
    free = two_factor(data).path("Y", on="X", level="between", label="b_b").structure()
    st = two_factor(data).path("Y", on="X", level="between", label="b").structure()
    assert st.n_free == free.n_free - 1
    assert st.groups["path_b"].owners == [("path_w", 0)]
    assert st.labels["b"].group == "path_w"


def test_label_on_parameters_of_two_kinds(data: pd.DataFrame) -> None:
    m = two_factor(data).covariance("X1", "X2", level="within", label="b")
    with pytest.raises(
        MSEMSpecificationError, match=r"Label 'b' names a regression slope .* indicator residual"
    ):
        m.structure()


def test_path_to_unknown_variable(data: pd.DataFrame) -> None:
    m = two_factor(data).path("Z", on="X", level="within")
    with pytest.raises(MSEMSpecificationError, match=r"unknown variable 'Z'"):
        m.structure()


def test_level2_variable_varies_within(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl", level2=["X1"]).latent("Y", ["Y1", "Y2", "Y3"])
    m.path("Y", on="X1", level="between")
    with pytest.raises(MSEMDataError, match=r"'X1' is declared level-2 but varies within 10 cluster"):
        m.structure()


def test_level2_variable_at_within_level(data: pd.DataFrame) -> None:
    m = two_factor(data).path("Y", on="size", level="within")
    with pytest.raises(MSEMSpecificationError, match=r"'size' is a level-2 variable"):
        m.structure()


def test_level2_variable_at_between_level_is_fine(data: pd.DataFrame) -> None:
    st = two_factor(data).path("Y", on="size", level="between").structure()
    assert st.level2 == ["size"]
    assert "size" in st.between.single_indicator
    assert "size" not in st.within.observed


def test_cycle(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").latent("X", ["X1", "X2", "X3"]).latent("Y", ["Y1", "Y2", "Y3"])
    m.path("Y", on="X", level="within").path("X", on="Y", level="within")
    with pytest.raises(MSEMSpecificationError, match=r"within regressions contain a cycle: .*X.*Y"):
        m.structure()


def test_fewer_than_two_clusters(data: pd.DataFrame) -> None:
    data["cl"] = 1
    with pytest.raises(MSEMDataError, match=r"at least 2 clusters"):
        two_factor(data).structure()


def test_missing_values_kept_not_dropped(data: pd.DataFrame) -> None:
    data.loc[5, "Y2"] = np.nan
    m = two_factor(data)
    assert m.clustered_data().n_obs == len(data)
    assert m.missing().by_column.loc["Y2", "n_missing"] == 1


def test_latent_named_like_column(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").latent("X1", ["X2", "X3", "Y1"])
    with pytest.raises(MSEMSpecificationError, match=r"'X1' has the name of a data column"):
        m.structure()


def test_factor_without_part_at_level(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").latent("X", ["X1", "X2", "X3"], levels="within")
    m.latent("Y", ["Y1", "Y2", "Y3"]).path("Y", on="X", level="between")
    with pytest.raises(MSEMSpecificationError, match=r"'X', which has no between part"):
        m.structure()


def test_unknown_level(data: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"Unknown level 'school'"):
        two_factor(data).path("Y", on="X", level="school")


def test_between_residuals_zero_and_free_marker(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl")
    m.latent("X", ["X1", "X2", "X3"], between_residuals=0, free=["X1"])
    st = m.structure()
    assert "resid_sd_b" not in st.groups  # Blimp's | 0: no between residual variances
    assert st.groups["loading_w"].elements == ["X1 by X", "X2 by X", "X3 by X"]
    assert "lv_sd_w" not in st.groups  # factor variance fixed to 1 instead of the marker


def test_observed_variables_are_split_into_within_and_between_parts(data: pd.DataFrame) -> None:
    m = ms.MSEM(data, cluster="cl").path("Y1", on="X1", level="within").path("Y1", on="X1", level="between")
    st = m.structure()
    for ls in (st.within, st.between):
        assert ls.single_indicator == ["Y1", "X1"]
        assert np.all(ls.resid_sd_fixed == 0)
    assert st.groups["intercept_b"].elements == ["X1", "Y1"]


def test_complete_correlation_blocks_get_an_lkj_prior(data: pd.DataFrame) -> None:
    """Three exogenous variables' correlations: one LKJ matrix, positive definite in every draw."""
    import pymc as pm

    m = ms.MSEM(data, cluster="cl").path("Y1", on=["X1", "X2", "X3"], level="within")
    priors = m.priors()
    cors = priors[(priors["level"] == "within") & priors["kind"].str.contains("correlation")]
    assert len(cors) == 3 and cors["prior"].str.startswith('Prior("LKJCorr"').all()
    with m.build():
        draws = pm.sample_prior_predictive(draws=200, var_names=["lv_cor_w"], random_seed=1)
    st = m.structure()
    R = np.broadcast_to(np.eye(4), (200, 4, 4)).copy()
    vals = draws.prior["lv_cor_w"].values[0]
    for i, j, k in st.within.lv_cor:
        R[:, i, j] = R[:, j, i] = vals[:, k]
    block = [st.within.latent.index(v) for v in ("X1", "X2", "X3")]
    assert np.linalg.eigvalsh(R[:, block][:, :, block]).min() > 0
    # Two exogenous variables keep their uniform prior (LKJ with eta=1 is the same for one pair).
    two = ms.MSEM(data, cluster="cl").path("Y1", on=["X1", "X2"], level="within").priors()
    assert two[two["kind"].str.contains("correlation")]["prior"].str.startswith('Prior("Uniform"').all()


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_parameter_table_of_each_tutorial_model(number: int) -> None:
    """``parameters()``: one id per free parameter, the defaults visible, and a lavaan round trip."""
    model = ms.tutorial.tutorial_model(number, ms.datasets.load_school())
    table = model.parameters()
    st = model.structure()
    free = table[table["free"] & (table["op"] != ":=")]
    slope_cor = free["kind"] == "random slope correlation"
    assert free.loc[~slope_cor, "id"].nunique() == st.n_free
    assert (table.loc[~table["free"] & (table["op"] != ":="), "value"].notna()).all()
    by = table.set_index(["level", "lhs", "op", "rhs"])
    assert by.loc[("within", "INT", "~", "REL"), "label"] == "a_w"
    assert by.loc[("between", "ACH", "~", "INT"), "label"] == "b_b"
    if number > 1:
        assert by.loc[("within", "ACH", "=~", "ACH1"), "value"] == 1.0  # the marker
        assert by.loc[("between", "ACH", "=~", "ACH2"), "free"]
        assert by.loc[("between", "ACH1", "~1", ""), "kind"] == "intercept (grand mean)"
    if number >= 3:
        assert by.loc[("within", "INT", "~", "REL"), "random"] == "RSa"
        assert by.loc[("between", "RSa", "~~", "RSb"), "label"] == "rCor"
    if number == 4:
        assert by.loc[("between", "RSa", "~", "SES"), "label"] == "SESb_a"
    again = ms.MSEM.from_lavaan(model.to_lavaan(), model.data, cluster="schid").parameters()
    pd.testing.assert_frame_equal(again, table)


def test_unidentified_factor_scale_says_how_to_fix(data: pd.DataFrame) -> None:
    text = "level: 1\n  X =~ NA*X1 + X2 + X3\n  X ~~ X\nlevel: 2\n  X =~ X1 + X2 + X3\n"
    with pytest.raises(MSEMSpecificationError, match=r"not identified.*1\*X1.*X ~~ 1\*X"):
        ms.MSEM.from_lavaan(text, data, cluster="cl").structure()
    ok = ms.MSEM.from_lavaan(text.replace("X ~~ X", "X ~~ 1*X"), data, cluster="cl").parameters()
    row = ok[(ok["level"] == "within") & (ok["lhs"] == "X") & (ok["op"] == "~~")].iloc[0]
    assert not row["free"] and row["value"] == 1.0


def test_fixed_variance_of_an_observed_predictor(data: pd.DataFrame) -> None:
    """``X1 ~~ 1*X1`` on a variable used in a regression fixes its latent part's variance."""
    text = "level: 1\n  Y1 ~ X1\n  X1 ~~ 1*X1\nlevel: 2\n  Y1 ~ X1\n"
    p = ms.MSEM.from_lavaan(text, data, cluster="cl").parameters()
    row = p[(p["level"] == "within") & (p["lhs"] == "X1") & (p["op"] == "~~")].iloc[0]
    assert not row["free"] and row["value"] == 1.0
