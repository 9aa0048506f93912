"""Tests of the paper-style results table and its exports."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from pymsem.results.table import CSV_COLUMNS, Table

META = {
    "Students": 3000,
    "Clusters": 100,
    "Chains x draws": "4 x 1000",
    "Seed": 46,
    "Sampler": "nutpie",
    "Max R-hat": 1.004,
    "Divergences": 0,
}


def _summary(with_std: bool = True) -> pd.DataFrame:
    """Rows deliberately out of paper order (between and derived first) to test sorting."""
    rows = [
        # level, block, label, parameter, median, sd, lower, upper, rhat, ess_bulk, std
        ("between", "Regressions", "b_b", "INT <- REL", -0.300, 0.100, -0.500, -0.100, 1.004, 900.0, -0.30),
        ("within", "Regressions", "a_w", "INT <- REL", 0.512, 0.041, 0.430, 0.590, 1.001, 2400.0, 0.45),
        ("within", "Loadings", "", "ACH2 by ACH", 0.874, 0.052, 0.770, 0.980, 1.002, 1800.0, 0.81),
        ("within", "Regressions", "", "INT <- SES", 0.020, 0.050, -0.080, 0.120, 1.000, 2100.0, 0.02),
        (
            "derived",
            "Indirect effects",
            "ind",
            "a_w*b_b",
            -0.154,
            0.060,
            -0.270,
            -0.040,
            1.003,
            1500.0,
            np.nan,
        ),
    ]
    df = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    if not with_std:
        df["std"] = np.nan
    return df


@pytest.fixture
def table() -> Table:
    return Table(_summary(), META, title="Table 1. Two-level model", ci_prob=0.95)


def _param_line(text: str, parameter: str, label: str = "") -> str:
    """The text line of a parameter, found by its text and label (parameter text repeats across levels)."""
    (line,) = [
        ln
        for ln in text.splitlines()
        if ln.strip().startswith(parameter + " ") and (not label or label in ln.split())
    ]
    return line


# --------------------------------------------------------------------- layout
def test_rows_order_levels_and_blocks(table: Table) -> None:
    r = table.rows()
    assert list(r["kind"]) == [
        "level", "block", "parameter", "parameter", "block", "parameter",
        "level", "block", "parameter",
        "level", "block", "parameter",
    ]  # fmt: skip
    assert list(r["text"]) == [
        "Within Level", "Regressions", "INT <- REL", "INT <- SES", "Loadings", "ACH2 by ACH",
        "Between Level", "Regressions", "INT <- REL",
        "Derived", "Indirect effects", "a_w*b_b",
    ]  # fmt: skip
    assert list(r.columns[5:]) == ["Est.", "SD", "Lower", "Upper", "R-hat", "Std.Est.", "excludes_zero"]
    p = r[r["kind"] == "parameter"].set_index("label")
    assert p.loc["a_w", "Est."] == pytest.approx(0.512)
    assert p.loc["b_b", "Lower"] == pytest.approx(-0.5)
    assert list(p["excludes_zero"]) == [True, False, True, True, True]
    assert r.loc[r["kind"] != "parameter", "Est."].isna().all()


def test_text_sections_and_columns_in_order(table: Table) -> None:
    text = str(table)
    lines = text.splitlines()
    assert lines[0] == "Table 1. Two-level model"
    header = next(ln for ln in lines if ln.startswith("Parameter"))
    assert header.split() == ["Parameter", "Label", "Est.", "SD", "Lower", "Upper", "R-hat", "Std.Est."]
    sections = [ln for ln in lines if ln in ("Within Level", "Between Level", "Derived")]
    assert sections == ["Within Level", "Between Level", "Derived"]
    assert "  Regressions" in lines and "  Loadings" in lines
    assert text.index("Within Level") < text.index("  Loadings") < text.index("Between Level")
    assert repr(table) == text


def test_text_numbers_and_asterisks(table: Table) -> None:
    text = str(table)
    sig = _param_line(text, "INT <- REL", "a_w")
    assert sig.split()[3:] == ["a_w", "0.512*", "0.041", "0.430", "0.590", "1.001", "0.450"]
    neg = _param_line(text, "INT <- REL", "b_b")
    assert "-0.300*" in neg.split()
    nonsig = _param_line(text, "INT <- SES")
    assert "*" not in nonsig
    assert nonsig.split()[3:] == ["0.020", "0.050", "-0.080", "0.120", "1.000", "0.020"]
    # Decimal points line up even though only some estimates carry a star.
    assert sig.index("0.512") + 5 == sig.index("*")
    assert nonsig.index("0.020") == sig.index("0.512")


def test_text_footer(table: Table) -> None:
    text = str(table)
    assert "Note. CI = 95% equal-tailed credible interval; * interval excludes 0." in text
    assert "95% CI" in text
    footer = " | ".join(text.split("Note.")[1].splitlines()[1:])
    for item in ("Students: 3000", "Clusters: 100", "Chains x draws: 4 x 1000", "Seed: 46",
                 "Sampler: nutpie", "Max R-hat: 1.004", "Divergences: 0"):  # fmt: skip
        assert item in footer
    assert footer.index("Students") < footer.index("Divergences")


def test_digits_and_rhat_decimals() -> None:
    text = str(Table(_summary(), META, digits=2))
    line = _param_line(text, "INT <- REL", "a_w")
    # Estimates to 2 decimals, R-hat stays at 3.
    assert line.split()[3:] == ["a_w", "0.51*", "0.04", "0.43", "0.59", "1.001", "0.45"]


def test_ci_prob_shows_in_note() -> None:
    t = Table(_summary(), META, ci_prob=0.90)
    assert "CI = 90% equal-tailed" in str(t)
    assert "90% CI" in t._repr_html_()
    assert "90\\% equal-tailed" in t.to_latex()
    assert "CI = 90% equal-tailed" in t.to_markdown()
    assert "97.5%" in str(Table(_summary(), META, ci_prob=0.975))


def test_fixed_parameter_is_not_marked() -> None:
    s = _summary()
    s.loc[len(s)] = ["within", "Loadings", "", "ACH1 by ACH", 1.0, 0.0, 1.0, 1.0, np.nan, np.nan, 0.8]
    t = Table(s, META)
    line = _param_line(str(t), "ACH1 by ACH")
    assert "*" not in line
    assert line.split()[3:] == ["1.000", "0.000", "1.000", "1.000", "0.800"]


# -------------------------------------------------------------------- filters
def test_columns_filter() -> None:
    t = Table(_summary(), META, columns=["Est.", "Lower", "Upper"])
    header = next(ln for ln in str(t).splitlines() if ln.startswith("Parameter"))
    assert header.split() == ["Parameter", "Label", "Est.", "Lower", "Upper"]
    assert list(t.rows().columns[5:]) == ["Est.", "Lower", "Upper", "excludes_zero"]
    assert _param_line(str(t), "INT <- REL", "a_w").split()[3:] == ["a_w", "0.512*", "0.430", "0.590"]
    # Summary column names work too, and order is the caller's.
    t2 = Table(_summary(), META, columns=["std", "median", "ess_bulk"])
    assert list(t2.rows().columns[5:8]) == ["Std.Est.", "Est.", "ESS"]
    assert _param_line(str(t2), "INT <- REL", "a_w").split()[3:] == ["a_w", "0.450", "0.512*", "2400"]


def test_columns_filter_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown column"):
        Table(_summary(), META, columns=["Est.", "Mean"])


def test_blocks_filter() -> None:
    t = Table(_summary(), META, blocks=["Regressions"])
    r = t.rows()
    assert list(r.loc[r["kind"] == "level", "text"]) == ["Within Level", "Between Level"]
    assert set(r.loc[r["kind"] == "block", "text"]) == {"Regressions"}
    assert "Loadings" not in str(t) and "Derived" not in str(t)
    assert len(t.to_dataframe()) == 3
    with pytest.raises(ValueError, match="no rows in blocks"):
        Table(_summary(), META, blocks=["Regresions"])


def test_std_column_absent_when_all_nan() -> None:
    t = Table(_summary(with_std=False), META)
    assert "Std.Est." not in str(t)
    assert "Std.Est." not in t.rows().columns
    assert "Std.Est." not in t._repr_html_()
    # ...and shown when any row has one.
    assert "Std.Est." in str(Table(_summary(), META))


def test_label_column_absent_when_no_labels() -> None:
    s = _summary()
    s["label"] = ""
    header = next(ln for ln in str(Table(s, META)).splitlines() if ln.startswith("Parameter"))
    assert "Label" not in header


def test_indexed_summary_is_accepted() -> None:
    # Fit.summary() returns level and parameter as the index.
    indexed = _summary().set_index(["level", "parameter"])
    pd.testing.assert_frame_equal(Table(indexed, META).to_dataframe(), Table(_summary(), META).to_dataframe())


def test_missing_required_column() -> None:
    with pytest.raises(ValueError, match="median"):
        Table(_summary().drop(columns="median"), META)


# -------------------------------------------------------------------- formats
def test_html_bolds_exactly_significant_estimates(table: Table) -> None:
    h = table._repr_html_()
    assert re.findall(r"<b>(.*?)</b>", h) == ["0.512", "0.874", "-0.300", "-0.154"]
    assert "<b>0.020</b>" not in h
    # Sections span the whole row, in order.
    assert h.count('colspan="8"') >= 3 + 3
    assert h.index("Within Level") < h.index("Between Level") < h.index("Derived")
    # Text is escaped.
    assert "INT &lt;- REL" in h and "INT <- REL" not in h
    assert "Table 1. Two-level model" in h


def test_html_escapes_hostile_text() -> None:
    s = _summary()
    s.loc[0, "parameter"] = "<script>x</script>"
    h = Table(s, {"Note": "a & b"}, title="<i>t</i>")._repr_html_()
    assert "<script>" not in h and "&lt;script&gt;" in h
    assert "&lt;i&gt;t&lt;/i&gt;" in h
    assert "a &amp; b" in h


def test_markdown_pipe_rows_and_bold_cells(table: Table) -> None:
    md = table.to_markdown()
    pipe_rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(pipe_rows) == 2 + len(table.rows())  # header, alignment, one per table row
    ncells = {ln.count(" | ") for ln in pipe_rows}
    assert ncells == {7}  # 8 columns on every row
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in pipe_rows[2:]]
    est = [row[2] for row in cells if row[2]]
    # Exactly the estimates whose interval excludes 0 are bold (the loading's does too).
    assert est == ["**0.512**", "0.020", "**0.874**", "**-0.300**", "**-0.154**"]
    assert sum(ln.count("**") for ln in pipe_rows[2:]) == 2 * (4 + 7)  # 4 estimates, 7 section rows
    # Section rows: bold text in the first cell, the rest empty.
    sections = [row for row in cells if not any(row[1:])]
    assert [row[0] for row in sections][:2] == ["**Within Level**", "&nbsp;&nbsp;**Regressions**"]
    assert all(row[0].count("**") == 2 for row in sections)
    assert "a\\_w" in md  # underscore escaped
    assert "Note." in md and "Students: 3000" in md


def test_latex_booktabs_escaping_and_bold(table: Table) -> None:
    tex = table.to_latex()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{tabular}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"a\_w" in tex and "a_w" not in tex.replace(r"a\_w", "")
    assert r"\caption{Table 1. Two-level model}" in tex
    assert re.findall(r"\\textbf\{(.*?)\}", tex) == ["0.512", "0.874", "$-$0.300", "$-$0.154"]
    assert r"\multicolumn{8}{l}{\textit{Within Level}}" in tex
    assert r"95\% equal-tailed" in tex
    bare = table.to_latex(float_env=False)
    assert bare.startswith(r"\begin{tabular}") and r"\begin{table}" not in bare


def test_latex_escapes_specials() -> None:
    s = _summary()
    s.loc[1, "parameter"] = "A & B 50% #1 $x ~ {y}"
    tex = Table(s, META).to_latex()
    assert r"A \& B 50\% \#1 \$x \textasciitilde{} \{y\}" in tex


def test_csv_round_trip(table: Table, tmp_path) -> None:
    text = table.to_csv()
    assert isinstance(text, str)
    back = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(CSV_COLUMNS)
    expected = table.to_dataframe()
    assert list(back["parameter"]) == ["INT <- REL", "INT <- SES", "ACH2 by ACH", "INT <- REL", "a_w*b_b"]
    assert list(back["level"]) == ["within", "within", "within", "between", "derived"]
    assert back["label"].fillna("").tolist() == ["a_w", "", "", "b_b", "ind"]
    for c in ("median", "sd", "lower", "upper", "rhat", "ess_bulk", "std"):
        np.testing.assert_array_equal(back[c].to_numpy(float), expected[c].to_numpy(float))
    assert np.isnan(back["std"].iloc[-1])

    path = tmp_path / "t.csv"
    assert table.to_csv(path) is None
    pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(io.StringIO(text)))


def test_to_dataframe_is_a_copy(table: Table) -> None:
    df = table.to_dataframe()
    df.loc[0, "median"] = 99.0
    assert table.to_dataframe().loc[0, "median"] == pytest.approx(0.512)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="ci_prob"):
        Table(_summary(), META, ci_prob=95)
    with pytest.raises(ValueError, match="digits"):
        Table(_summary(), META, digits=-1)


# ------------------------------------------------- positive quantities are not marked
def _positive_summary() -> pd.DataFrame:
    rows = [
        # Every interval excludes 0; only the rows that could have been negative are marked.
        ("within", "Regressions", "a_w", "INT <- REL", 0.5, 0.1, 0.3, 0.7, 1.0, 900.0, 0.4),
        ("within", "Covariances", "", "REL ~~ SES", 0.2, 0.05, 0.1, 0.3, 1.0, 900.0, 0.3),
        ("within", "Variances", "", "REL ~~ REL", 0.9, 0.05, 0.8, 1.0, 1.0, 900.0, 1.0),
        ("within", "Residual variances", "", "INT ~~ INT", 0.7, 0.05, 0.6, 0.8, 1.0, 900.0, 0.8),
        ("within", "Indicator residual variances", "", "ACH1 ~~ ACH1", 0.3, 0.05, 0.2, 0.4, 1.0, 900.0, 0.3),
        ("between", "Random slopes", "a_w", "RSa mean", 0.5, 0.1, 0.3, 0.7, 1.0, 900.0, np.nan),
        ("between", "Random slopes", "", "RSa variance", 0.05, 0.01, 0.03, 0.07, 1.0, 900.0, np.nan),
        ("between", "Random slopes", "", "RSa residual variance", 0.04, 0.01, 0.02, 0.06, 1.0, 900.0, np.nan),
        ("between", "Random slopes", "", "RSa, RSb covariance", 0.02, 0.01, 0.01, 0.03, 1.0, 900.0, 0.3),
        ("between", "Random slopes", "", "RSa, RSb correlation", 0.3, 0.1, 0.1, 0.5, 1.0, 900.0, np.nan),
        ("between", "Intraclass correlations", "", "ICC INT", 0.2, 0.03, 0.15, 0.26, 1.0, 900.0, np.nan),
        ("derived", "Derived", "sd_a", "sd(RSa)", 0.22, 0.02, 0.18, 0.26, 1.0, 900.0, np.nan),
        (
            "derived",
            "Derived",
            "r2",
            "var(RSa) / (var(RSa) + 0.5)",
            0.1,
            0.02,
            0.05,
            0.14,
            1.0,
            900.0,
            np.nan,
        ),
        ("derived", "Derived", "ind", "a_w * b_w", 0.2, 0.05, 0.1, 0.3, 1.0, 900.0, np.nan),
        ("derived", "Derived", "diff", "var(RSa) - var(RSb)", 0.1, 0.02, 0.05, 0.14, 1.0, 900.0, np.nan),
    ]
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def test_variances_sds_and_iccs_get_no_mark() -> None:
    t = Table(_positive_summary())
    p = t.rows().query("kind == 'parameter'").set_index("text")["excludes_zero"]
    marked = {"INT <- REL", "REL ~~ SES", "RSa mean", "RSa, RSb covariance", "RSa, RSb correlation"}
    # A difference of variances and a product of paths can be negative: they keep their mark.
    marked |= {"a_w * b_w", "var(RSa) - var(RSb)"}
    assert set(p.index[p]) == marked
    text = str(t)
    for parameter in p.index:
        assert ("*" in _param_line(text, parameter)) == (parameter in marked), parameter
    md, tex, htm = t.to_markdown(), t.to_latex(), t._repr_html_()
    assert "**0.900**" not in md and "**0.200**" in md  # REL ~~ REL unmarked, REL ~~ SES marked
    assert r"\textbf{0.050}" not in tex and "<b>0.050</b>" not in htm  # RSa variance


def test_is_positive_quantity_reads_derived_expressions_by_form() -> None:
    from pymsem.results.table import is_positive_quantity

    assert is_positive_quantity("derived", "Derived", "sqrt(var(RSa))")
    assert is_positive_quantity("derived", "Derived", "var(RSa, between) / totalvar(ACH)")
    assert not is_positive_quantity("derived", "Derived", "a_w * b_w")  # a name may be negative
    assert not is_positive_quantity("derived", "Derived", "-var(RSa)")
    assert not is_positive_quantity("derived", "Derived", "log(var(RSa))")  # log of a variance < 1 is < 0
    assert not is_positive_quantity("within", "Regressions", "INT <- REL")
    assert not is_positive_quantity("within", "Regressions", "INT <- SD")  # a variable named SD
    assert not is_positive_quantity("between", "Random slopes", "variance <- W")
    assert is_positive_quantity("between", "Random slopes", "RSa residual variance")
    assert not is_positive_quantity("between", "Random slopes", "RSa, RSb covariance")


def test_non_indicator_variances_are_not_indicator_residuals(model2_data: pd.DataFrame) -> None:
    """A level-1 variable used only in the within model has a between part that loads on nothing:
    its variance there is listed under "Variances", while factor indicators keep theirs."""
    import pymsem as ms
    from pymsem.effects.standardized import parameter_quantities

    m = ms.MSEM(model2_data, cluster="schid")
    m.latent("ACH", ["ACH1", "ACH2", "ACH3", "ACH4"])
    m.path("INT1", on="REL1", level="within")
    st = m.structure()
    rng = np.random.default_rng(0)
    vals = {}
    for name, g in st.groups.items():
        x = rng.normal(0.3, 0.1, size=(1, 20, len(g)))
        vals[name] = np.abs(x) + 0.5 if g.kind.endswith("sd") else np.clip(x, -0.9, 0.9)
    blocks = {(q.level, q.parameter): q.block for q in parameter_quantities(st, vals)}
    assert blocks[("between", "INT1 ~~ INT1")] == blocks[("between", "REL1 ~~ REL1")] == "Variances"
    for level in ("within", "between"):
        for i in range(1, 5):
            assert blocks[(level, f"ACH{i} ~~ ACH{i}")] == "Indicator residual variances"
