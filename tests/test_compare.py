"""Model comparison tables: each model's column is that model's summary, rows matched by parameter."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.results.compare import ComparisonTable
from pymsem.results.table import _excludes_zero, _fmt

SHARED = [
    ("within", "INT <- REL"),
    ("within", "ACH <- INT"),
    ("within", "ACH <- REL"),
    ("between", "INT <- REL"),
    ("between", "ACH <- INT"),
    ("between", "ACH <- REL"),
]


@pytest.fixture(scope="module")
def fits(model1_fit, model2_fit):
    return {"Model 1": model1_fit, "Model 2": model2_fit}


@pytest.fixture(scope="module")
def table(fits) -> ComparisonTable:
    return ms.compare_tables(fits)


# ----------------------------------------------------------- fitted models
def test_columns_are_each_models_summary(fits, table) -> None:
    df = table.to_dataframe()
    for name, fit in fits.items():
        s = fit.summary()
        for col in ("median", "lower", "upper", "sd", "rhat"):
            np.testing.assert_allclose(df.loc[SHARED, (name, col)], s.loc[SHARED, col])
    assert list(df.loc[SHARED, "label"]) == ["a_w", "b_w", "c_w", "a_b", "b_b", "c_b"]
    # Loadings exist in Model 2 only: blank (NaN) for Model 1.
    loadings = df[df["block"] == "Loadings"]
    assert len(loadings) == 18
    assert loadings[("Model 1", "median")].isna().all()
    np.testing.assert_allclose(
        loadings[("Model 2", "median")], fits["Model 2"].summary().loc[loadings.index, "median"]
    )


def test_rows_follow_the_models_order(table) -> None:
    df = table.to_dataframe().reset_index()
    blocks = list(dict.fromkeys(zip(df["level"], df["block"])))
    # Model 2's loadings sit after the regressions they follow in Model 2, before Model 1's ICCs.
    assert blocks == [
        ("within", "Regressions"),
        ("within", "Loadings"),
        ("between", "Regressions"),
        ("between", "Loadings"),
        ("between", "Intraclass correlations"),
    ]


def test_text_shows_both_models_numbers_and_marks(fits, table) -> None:
    text = str(table)
    s1, s2 = (fits[m].summary() for m in ("Model 1", "Model 2"))
    assert re.search(r"^\s+Model 1\s+Model 2$", text, re.M)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("INT <- REL") and "a_w" in ln)
    numbers = re.findall(r"-?\d+\.\d+\*?", line)
    expected = []
    for s in (s1, s2):
        r = s.loc[("within", "INT <- REL")]
        star = "*" if _excludes_zero(r["lower"], r["upper"]) else ""
        expected += [_fmt(r["median"], 3) + star, _fmt(r["lower"], 3), _fmt(r["upper"], 3)]
    assert numbers == expected
    # A Model-2-only row has Model 2's three numbers and nothing under Model 1.
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("ACH2 by ACH"))
    assert len(re.findall(r"-?\d+\.\d+", line)) == 3
    est = _fmt(s2.loc[("within", "ACH2 by ACH"), "median"], 3)
    a_w = next(ln for ln in text.splitlines() if "a_w" in ln)
    model2_est = _fmt(s2.loc[("within", "INT <- REL"), "median"], 3)
    # Right-aligned under Model 2's estimates, not Model 1's.
    assert line.index(est) + len(est) == a_w.rindex(model2_est) + len(model2_est)
    assert "blank: not in the model" in text
    assert "Model 1: Students: " in text and "Model 2: Students: " in text


def test_markdown_latex_html_csv_carry_the_numbers_and_bold(fits, table) -> None:
    md, tex, htm = table.to_markdown(), table.to_latex(), table._repr_html_()
    labels = ["a_w", "b_w", "c_w", "a_b", "b_b", "c_b"]
    for key, label in zip(SHARED, labels):
        escaped = label.replace("_", r"\_")  # both Markdown and LaTeX escape the underscore
        md_cells = next(ln for ln in md.splitlines() if f"| {escaped} " in ln)
        md_cells = [c.strip() for c in md_cells.split("|")[1:-1]]
        tex_cells = next(ln for ln in tex.splitlines() if f" & {escaped} & " in ln)
        tex_cells = tex_cells.removesuffix(r" \\").split(" & ")
        htm_row = next(ln for ln in htm.splitlines() if f">{label}<" in ln)
        for i, fit in enumerate(fits.values()):
            r = fit.summary().loc[key]
            med, lo = _fmt(r["median"], 3), _fmt(r["lower"], 3)
            bold = _excludes_zero(r["lower"], r["upper"])
            # Columns: Parameter, Label, then Est., Lower, Upper per model.
            assert md_cells[2 + 3 * i] == (f"**{med}**" if bold else med), (key, i)
            assert md_cells[3 + 3 * i] == lo
            tex_med = med.replace("-", "$-$")
            assert tex_cells[2 + 3 * i] == (rf"\textbf{{{tex_med}}}" if bold else tex_med), (key, i)
            assert tex_cells[3 + 3 * i] == lo.replace("-", "$-$")
            assert (f"<b>{med}</b>" in htm_row) == bold
    assert "Model 1 Est." in md and "Model 2 Upper" in md
    assert r"\multicolumn{3}{c}{Model 1}" in tex and r"\cmidrule(lr){3-5} \cmidrule(lr){6-8}" in tex
    csv = pd.read_csv(io.StringIO(table.to_csv()))
    assert list(csv.columns[:4]) == ["level", "block", "label", "parameter"]
    csv = csv.set_index(["level", "parameter"])
    for name, fit in fits.items():
        np.testing.assert_allclose(csv.loc[SHARED, f"{name} median"], fit.summary().loc[SHARED, "median"])


def test_columns_blocks_and_list_input(model1_fit, model2_fit) -> None:
    t = ms.compare_tables([model1_fit, model2_fit], columns=("Est.", "SD", "rhat"), blocks=["Regressions"])
    text = str(t)
    assert "Model 1" in text and "Model 2" in text and "Loadings" not in text
    header = next(ln for ln in text.splitlines() if ln.startswith("Parameter"))
    assert header.split() == ["Parameter", "Label", "Est.", "SD", "R-hat", "Est.", "SD", "R-hat"]
    assert len(t.to_dataframe()) == 6


# ------------------------------------------------------------ synthetic
def _summary(rows: list[tuple]) -> pd.DataFrame:
    cols = ["level", "block", "label", "parameter", "median", "lower", "upper"]
    return pd.DataFrame(rows, columns=cols).set_index(["level", "parameter"])


@pytest.fixture
def two() -> dict[str, pd.DataFrame]:
    a = _summary(
        [
            ("within", "Regressions", "a", "Y <- X", 0.5, 0.2, 0.8),
            ("between", "Regressions", "", "Y <- X", -0.05, -0.4, 0.3),
        ]
    )
    b = _summary(
        [
            ("within", "Regressions", "a", "Y <- X", 0.45, -0.1, 0.9),
            ("within", "Regressions", "", "Y <- Z", -0.3, -0.5, -0.1),
            ("between", "Regressions", "", "Y <- X", 0.2, 0.05, 0.35),
        ]
    )
    return {"A": a, "B": b}


def test_blanks_and_marks_on_known_numbers(two) -> None:
    t = ms.compare_tables(
        two, statistics={"A": {"elpd_loo": -1234.5678, "p_loo": 12}, "B": {"elpd_loo": -1200.0}}
    )
    lines = str(t).splitlines()
    row = next(ln for ln in lines if "Y <- X" in ln)
    assert re.findall(r"-?\d+\.\d+\*?", row) == ["0.500*", "0.200", "0.800", "0.450", "-0.100", "0.900"]
    row = next(ln for ln in lines if "Y <- Z" in ln)
    assert re.findall(r"-?\d+\.\d+\*?", row) == ["-0.300*", "-0.500", "-0.100"]
    # Y <- Z sits under B only: its estimate lines up with B's estimate of Y <- X.
    row_x = next(ln for ln in lines if "Y <- X" in ln)
    assert row.index("-0.300*") + len("-0.300*") == row_x.index("0.450") + len("0.450 ")
    md = t.to_markdown()
    assert "**0.500**" in md and "**-0.300**" in md and "**0.200**" in md
    assert "**0.450**" not in md and "**-0.050**" not in md
    # The hook for model-level statistics: a final section with one value per model.
    assert "Model fit" in str(t)
    row = next(ln for ln in str(t).splitlines() if "elpd_loo" in ln)
    assert re.findall(r"-?\d+(?:\.\d+)?", row) == ["-1234.568", "-1200"]
    row = next(ln for ln in str(t).splitlines() if "p_loo" in ln)
    assert re.findall(r"-?\d+(?:\.\d+)?", row) == ["12"]
    assert r"$-$1234.568" in t.to_latex(float_env=False)
    df = t.to_dataframe()
    assert np.isnan(df.loc[("within", "Y <- Z"), ("A", "median")])
    assert t.statistics.loc["elpd_loo", "B"] == -1200.0


def test_bad_input(two) -> None:
    with pytest.raises(ValueError, match="unknown column 'est'"):
        ms.compare_tables(two, columns=["est"])
    with pytest.raises(ValueError, match="no rows in blocks"):
        ms.compare_tables(two, blocks=["Loadings"])
    with pytest.raises(ValueError, match="unknown model"):
        ms.compare_tables(two, statistics={"C": {"elpd_loo": 1.0}})
    with pytest.raises(TypeError, match="fitted model or a summary"):
        ms.compare_tables({"A": 3})
    with pytest.raises(ValueError, match="at least one"):
        ms.compare_tables({})
    with pytest.raises(ValueError, match="lacks required"):
        ms.compare_tables({"A": pd.DataFrame({"level": ["within"], "median": [1.0]})})


def test_positive_quantities_are_not_marked_in_compared_tables() -> None:
    rows = [
        ("within", "Regressions", "", "Y <- X", 0.5, 0.2, 0.8),
        ("within", "Variances", "", "X ~~ X", 0.9, 0.7, 1.1),
        ("between", "Intraclass correlations", "", "ICC Y", 0.21, 0.15, 0.28),
        ("between", "Random slopes", "", "s variance", 0.04, 0.01, 0.09),
        ("between", "Random slopes", "", "s, t covariance", 0.03, 0.01, 0.05),
    ]
    t = ms.compare_tables({"A": _summary(rows), "B": _summary(rows)}, blocks="all")
    lines = str(t).splitlines()

    def stars(parameter: str) -> int:
        return next(ln for ln in lines if ln.strip().startswith(parameter)).count("*")

    # Both models' intervals exclude 0 everywhere; only the regression and the covariance say so.
    assert stars("Y <- X") == 2 and stars("s, t covariance") == 2
    assert stars("X ~~ X") == stars("ICC Y") == stars("s variance") == 0
    md = t.to_markdown()
    assert "**0.500**" in md and "**0.900**" not in md and "**0.210**" not in md and "**0.040**" not in md
