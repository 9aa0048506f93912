"""The input side of ordinal variables: which columns are ordinal, their checks, and their codes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.specification.errors import MSEMDataError
from pymsem.specification.ordinal import MAX_CATEGORIES, OrdinalColumn, encode_ordinal, ordinal_columns


def _frame(**columns: object) -> pd.DataFrame:
    """Four clusters of three rows, and the given columns (twelve values each)."""
    return pd.DataFrame({"g": np.repeat([10, 20, 30, 40], 3), **columns})


# Every category in two clusters or more, and varying within clusters: no warning, no error.
LIKERT = [1, 2, 3, 2, 3, 1, 3, 1, 2, 1, 2, 3]
LEVELS = ["low", "mid", "high"]


def _quiet(data: pd.DataFrame, declared: list[str], used: list[str]) -> dict[str, OrdinalColumn]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ordinal_columns(data, declared, used, "g")


def _refused(data: pd.DataFrame, declared: list[str], used: list[str]) -> str:
    with pytest.raises(MSEMDataError) as info:
        ordinal_columns(data, declared, used, "g")
    return str(info.value)


# --------------------------------------------------------------------------------- declared names
def test_declared_column_not_in_the_data_suggests_the_closest_name() -> None:
    msg = _refused(_frame(item1=LIKERT), ["itme1"], ["item1"])
    assert "'itme1'" in msg and "not in the data" in msg and "Did you mean 'item1'" in msg


def test_declared_column_not_used_by_the_model() -> None:
    msg = _refused(_frame(item1=LIKERT, item2=LIKERT), ["item2"], ["item1"])
    assert "'item2'" in msg and "not in the model" in msg and "ordinal=" in msg


def test_declaring_the_cluster_column_says_so() -> None:
    assert "cluster id column" in _refused(_frame(u=LIKERT), ["g"], ["u"])


def test_keys_follow_the_used_order_and_continuous_columns_are_left_out() -> None:
    cat = pd.Categorical(["low", "mid", "high"] * 4, categories=LEVELS, ordered=True)
    data = _frame(a=LIKERT, b=cat, c=np.linspace(0, 1, 12), d=LIKERT)
    ords = _quiet(data, ["d", "a"], ["c", "d", "b", "a"])
    assert list(ords) == ["d", "b", "a"]


def test_nothing_declared_and_no_categorical_is_no_ordinal() -> None:
    assert _quiet(_frame(x=np.linspace(0, 1, 12), t=["a"] * 12), [], ["x", "t"]) == {}


def test_ordinal_none_declares_nothing() -> None:
    """``ordinal=None`` (what a wrapper passing its own default hands on) is no declaration."""
    data = _frame(x=np.linspace(0, 1, 12))
    assert ms.MSEM(data, cluster="g", ordinal=None).declared_ordinal == ()
    assert ms.MSEM(data, cluster="g", ordinal="x").declared_ordinal == ("x",)


def test_a_used_column_missing_from_the_data_is_left_to_prepare_data() -> None:
    assert list(_quiet(_frame(u=LIKERT), ["u"], ["u", "F_not_a_column"])) == ["u"]


def test_duplicated_column_name_is_refused() -> None:
    data = pd.concat([_frame(u=LIKERT), pd.DataFrame({"u": LIKERT})], axis=1)
    msg = _refused(data, ["u"], ["u"])
    assert "'u' (2 columns)" in msg


# -------------------------------------------------------------------------- ordered Categoricals
def test_ordered_categorical_keeps_its_declared_order_without_being_declared() -> None:
    values = ["high", "low", "mid", "mid", "high", "low", "low", "mid", "high", "mid", "low", "high"]
    data = _frame(q=pd.Categorical(values, categories=LEVELS, ordered=True))
    ords = _quiet(data, [], ["q"])
    assert ords["q"] == OrdinalColumn("q", ("low", "mid", "high"), (4, 4, 4))
    assert encode_ordinal(data, ords)["q"].tolist()[:3] == [2.0, 0.0, 1.0]


def test_ordered_categorical_not_used_is_not_ordinal() -> None:
    data = _frame(u=LIKERT, q=pd.Categorical(["low", "mid", "high"] * 4, categories=LEVELS, ordered=True))
    assert list(_quiet(data, [], ["u"])) == []


def test_ordered_categorical_with_an_unobserved_category() -> None:
    cats = ["never", "rarely", "sometimes", "often"]
    values = ["never", "often", "sometimes"] * 4
    msg = _refused(_frame(q=pd.Categorical(values, categories=cats, ordered=True)), [], ["q"])
    assert "'q'" in msg and "['rarely'] is observed in no row" in msg
    assert "'never', 'rarely', 'sometimes', 'often'" in msg
    assert ".cat.remove_unused_categories()" in msg


def test_unordered_categorical_declared_ordinal_asks_for_the_order() -> None:
    data = _frame(q=pd.Categorical(["low", "mid", "high"] * 4))
    msg = _refused(data, ["q"], ["q"])
    assert "'q'" in msg and "unordered Categorical" in msg and "order of its categories is unknown" in msg
    assert "ordered=True" in msg and "'high', 'low', 'mid'" in msg


def test_unordered_categorical_used_but_not_declared_is_nominal() -> None:
    data = _frame(q=pd.Categorical(["red", "green", "blue"] * 4))
    msg = _refused(data, [], ["q"])
    assert "'q'" in msg and "nominal variables are not supported yet" in msg
    assert "Dummy-code" in msg and "'blue', 'green', 'red'" in msg and "ordered=True" in msg


# ------------------------------------------------------------------------------- text and others
def test_text_column_declared_ordinal_asks_for_an_ordered_categorical() -> None:
    msg = _refused(_frame(q=["agree", "neutral", "disagree"] * 4), ["q"], ["q"])
    assert "'q'" in msg and "holds text" in msg and "ordered=True" in msg
    assert "'agree', 'disagree', 'neutral'" in msg and "pd.to_numeric" not in msg


def test_numbers_stored_as_text_also_suggest_to_numeric() -> None:
    msg = _refused(_frame(q=["1", "2", "3"] * 4), ["q"], ["q"])
    assert "ordered Categorical" in msg and "pd.to_numeric" in msg


def test_datetime_column_declared_ordinal() -> None:
    msg = _refused(_frame(d=pd.date_range("2020-01-01", periods=12)), ["d"], ["d"])
    assert "'d'" in msg and "datetime64" in msg and "integer codes" in msg


# ------------------------------------------------------------------------------- numeric codes
def test_integer_codes_are_their_sorted_distinct_values() -> None:
    data = _frame(u=[5 - v for v in LIKERT])  # 2, 3, 4
    ords = _quiet(data, ["u"], ["u"])
    assert ords["u"].categories == (2, 3, 4) and ords["u"].counts == (4, 4, 4)
    assert all(type(v) is int for v in ords["u"].categories)


def test_integer_gaps_are_allowed_and_coded_in_order() -> None:
    data = _frame(u=[{1: 1, 2: 2, 3: 4}[v] for v in LIKERT])
    ords = _quiet(data, ["u"], ["u"])
    assert ords["u"].categories == (1, 2, 4)
    codes = encode_ordinal(data, ords)["u"].to_numpy()
    np.testing.assert_array_equal(codes, np.array(LIKERT, float) - 1)


def test_float_integer_codes_with_missing_values() -> None:
    x = np.array(LIKERT, float)
    x[[0, 5]] = np.nan
    data = _frame(u=x)
    ords = _quiet(data, ["u"], ["u"])
    assert ords["u"].categories == (1, 2, 3) and ords["u"].counts == (2, 4, 4)
    out = encode_ordinal(data, ords)["u"]
    assert out.isna().tolist() == [i in (0, 5) for i in range(12)]


def test_non_integer_values_are_listed() -> None:
    msg = _refused(_frame(u=[1, 2, 2.5, 3, 3.25, 1] * 2), ["u"], ["u"])
    assert "'u'" in msg and "non-integer" in msg and "[2.5, 3.25]" in msg


def test_infinite_value_is_not_an_integer_code() -> None:
    msg = _refused(_frame(u=[1, 2, np.inf] * 4), ["u"], ["u"])
    assert "non-integer" in msg and "inf" in msg


@pytest.mark.parametrize("n", [MAX_CATEGORIES, MAX_CATEGORIES + 1])
def test_too_many_distinct_values_look_continuous(n: int) -> None:
    data = pd.DataFrame({"g": np.repeat([1, 2], n), "u": np.tile(np.arange(n), 2)})
    if n <= MAX_CATEGORIES:
        assert ordinal_columns(data, ["u"], ["u"], "g")["u"].n_categories == n
        return
    with pytest.raises(MSEMDataError) as info:
        ordinal_columns(data, ["u"], ["u"], "g")
    msg = str(info.value)
    assert "'u'" in msg and f"{n} distinct values" in msg and "continuous" in msg
    assert f"at most {MAX_CATEGORIES}" in msg


def test_nullable_integer_column() -> None:
    x = pd.array([*LIKERT[:-1], None], dtype="Int64")
    ords = _quiet(_frame(u=x), ["u"], ["u"])
    assert ords["u"].categories == (1, 2, 3) and ords["u"].counts == (4, 4, 3)
    assert np.isnan(encode_ordinal(_frame(u=x), ords)["u"].iloc[-1])


def test_complex_column_is_refused() -> None:
    assert "complex" in _refused(_frame(u=np.array(LIKERT) + 0j), ["u"], ["u"])


# -------------------------------------------------------------------------------------- booleans
def test_boolean_column_is_binary_false_then_true() -> None:
    b = [v == 2 for v in LIKERT]
    ords = _quiet(_frame(b=b), ["b"], ["b"])
    col = ords["b"]
    assert col.categories == (False, True) and col.binary and col.n_categories == 2
    assert col.counts == (8, 4)
    assert encode_ordinal(_frame(b=b), ords)["b"].tolist() == [float(v) for v in b]


def test_nullable_boolean_keeps_missing() -> None:
    b = pd.array([v == 2 if i else None for i, v in enumerate(LIKERT)], dtype="boolean")
    ords = _quiet(_frame(b=b), ["b"], ["b"])
    assert ords["b"].counts == (7, 4)
    out = encode_ordinal(_frame(b=b), ords)["b"]
    assert np.isnan(out.iloc[0]) and out.iloc[1] == 1.0


def test_boolean_observed_as_one_value_only() -> None:
    msg = _refused(_frame(b=[True] * 12), ["b"], ["b"])
    assert "'b'" in msg and "single observed category (True" in msg


# ---------------------------------------------------------------------------- fewer than 2 cats
def test_single_observed_category() -> None:
    msg = _refused(_frame(u=[3.0] * 11 + [np.nan]), ["u"], ["u"])
    assert "'u'" in msg and "single observed category (3, in 11 rows)" in msg and "at least two" in msg


def test_all_missing() -> None:
    msg = _refused(_frame(u=[np.nan] * 12), ["u"], ["u"])
    assert "'u'" in msg and "no observed value" in msg and "at least two" in msg


def test_ordered_categorical_with_one_observed_category() -> None:
    q = pd.Categorical(["low"] * 12, categories=LEVELS, ordered=True)
    msg = _refused(_frame(q=q), [], ["q"])
    assert "single observed category ('low'" in msg


# -------------------------------------------------------------------------------------- clusters
def test_category_in_one_cluster_warns_with_the_category_and_cluster() -> None:
    u = list(LIKERT)
    u[4] = 4  # cluster 20 only
    with pytest.warns(UserWarning, match=r"'u'.*4 only in g = 20.*one cluster") as record:
        ords = ordinal_columns(_frame(u=u), ["u"], ["u"], "g")
    assert len(record) == 1 and __file__ == record[0].filename  # points at the caller
    assert ords["u"].categories == (1, 2, 3, 4)


def test_string_cluster_ids_in_the_warning() -> None:
    data = _frame(u=[1, 2, 3] * 3 + [1, 2, 9])
    data["g"] = data["g"].map({10: "a", 20: "b", 30: "c", 40: "d"})
    with pytest.warns(UserWarning, match=r"9 only in g = 'd'"):
        ordinal_columns(data, ["u"], ["u"], "g")


def test_level2_ordinal_is_refused() -> None:
    u = np.repeat([1, 2, 1, 3], 3).astype(float)
    u[4] = np.nan  # missing values do not make it vary
    msg = _refused(_frame(u=u), ["u"], ["u"])
    assert "'u'" in msg and "constant within every cluster" in msg
    assert "ordinal level-2 variables are not supported yet" in msg and "continuous" in msg
    assert "[1, 2, 3]" in msg


def test_level2_ordered_categorical_is_refused_too() -> None:
    q = pd.Categorical(np.repeat(["low", "mid", "high", "mid"], 3), categories=LEVELS, ordered=True)
    assert "level-2" in _refused(_frame(q=q), [], ["q"])


def test_one_row_per_cluster_is_not_called_level2() -> None:
    data = pd.DataFrame({"g": range(6), "u": [1, 2, 3, 1, 2, 3]})
    ords = ordinal_columns(data, ["u"], ["u"], "g")
    assert ords["u"].categories == (1, 2, 3)


def test_category_seen_only_where_the_cluster_id_is_missing() -> None:
    data = _frame(u=LIKERT)
    data.loc[12] = [np.nan, 7]
    msg = _refused(data, ["u"], ["u"])
    assert "'u'" in msg and "[7]" in msg and "cluster id ('g') is missing" in msg


def test_rows_without_cluster_id_are_otherwise_counted_and_kept() -> None:
    data = _frame(u=LIKERT)
    data.loc[12] = [np.nan, 1]
    ords = _quiet(data, ["u"], ["u"])
    assert ords["u"].counts == (5, 4, 4)
    assert len(encode_ordinal(data, ords)) == 13


# ---------------------------------------------------------------------------------------- encode
def test_encode_returns_a_copy_with_every_row_index_and_column() -> None:
    q = pd.Categorical(["mid", "high", None, "low"] * 3, categories=LEVELS, ordered=True)
    data = _frame(q=q, u=LIKERT, x=np.arange(12.0))
    data.index = [f"r{i}" for i in range(12)]
    ords = _quiet(data, ["u"], ["q", "u", "x"])
    out = encode_ordinal(data, ords)
    assert list(out.columns) == list(data.columns) and list(out.index) == list(data.index)
    assert out["q"].dtype == float and out["u"].dtype == float
    np.testing.assert_array_equal(out["q"].to_numpy()[:4], [1.0, 2.0, np.nan, 0.0])
    assert out["u"].tolist() == [v - 1.0 for v in LIKERT]
    pd.testing.assert_series_equal(out["x"], data["x"])
    assert isinstance(data["q"].dtype, pd.CategoricalDtype)  # the user's frame is untouched


def test_encode_refuses_a_value_outside_the_categories() -> None:
    data = _frame(u=LIKERT)
    ords = {"u": OrdinalColumn("u", (1, 2), (4, 4))}
    with pytest.raises(MSEMDataError, match=r"'u' has value\(s\) \[3\].*\[1, 2\]"):
        encode_ordinal(data, ords)


def test_encode_nothing_is_a_plain_copy() -> None:
    data = _frame(u=LIKERT)
    out = encode_ordinal(data, {})
    pd.testing.assert_frame_equal(out, data)
    assert out is not data
