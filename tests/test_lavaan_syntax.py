"""The lavaan front end: parse_lavaan / to_lavaan on the tutorial's models, round trips, errors.

Pure parsing: nothing here compiles or samples a model.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

import pymsem as ms
from pymsem.specification.errors import MSEMSpecificationError, MSEMSyntaxError
from pymsem.specification.partable import ParameterTable, Statement
from pymsem.syntax.lavaan import lavaan_arguments, parse_lavaan, to_lavaan

MEASUREMENT = """
  ACH =~ ACH1 + ACH2 + ACH3 + ACH4
  INT =~ INT1 + INT2 + INT3 + INT4
  REL =~ REL1 + REL2 + REL3 + REL4
"""

MODEL2 = f"""
# Tutorial Model 2: three factors at both levels, 1-1-1 mediation within and between
level: 1
{MEASUREMENT}
  INT ~ a_w*REL
  ACH ~ b_w*INT + c_w*REL
level: 2
{MEASUREMENT}
  INT ~ a_b*REL
  ACH ~ b_b*INT + c_b*REL
"""

MODEL3 = f"""
# Tutorial Model 3: random slopes on the within a and b paths
level: within
{MEASUREMENT}
  RSa | INT ~ REL
  RSb | ACH ~ INT
  ACH ~ c_w*REL
level: between
{MEASUREMENT}
  INT ~ a_b*REL
  ACH ~ b_b*INT + c_b*REL
  RSa ~ a_w*1
  RSb ~ b_w*1
  RSa ~~ rCor*RSb
rCov := cov(RSa, RSb)
med_w := indirect(a_w, b_w)
med_b := indirect(a_b, b_b)
a_con := contextual(a_b, a_w)
b_con := contextual(b_b, b_w)
med_con := contextual(med_b, med_w)
"""

# Fixed values, NA*, comments of both kinds, ';', continued lines and several outcomes.
MIXED = """
! a header comment
level: 1
  F =~ NA*x1 + l1*x1 + 1*x2 +   # the marker is freed and labelled
       -0.5*x3 + 2.5e-1*x4
  F ~~ 1*F; y1 + y2 ~ F + k*z
  y1 ~~ r*y2
  RSa | y1 ~ a_w*w
  y2 ~ 1
level: 2
  F =~ x1 + x2 + x3 + x4
  x1 ~~ 0*x1 ; x2 ~~ 0*x2
  y1 ~ m*1 + F
  y2 ~ 0*1
  RSa ~ a_w*1 + s*SES
  RSa ~~ RSa
total_w := a_w * k +
   l1
"""

TEXTS = {"model2": MODEL2, "model3": MODEL3, "mixed": MIXED}


def _bare(rows: ParameterTable | list[Statement]) -> list[Statement]:
    return [dataclasses.replace(r, origin="") for r in rows]


def _rows(rows: list[Statement], *, level: int, op: str, lhs: str) -> list[Statement]:
    return [r for r in _bare(rows) if r.level == level and r.op == op and r.lhs == lhs]


def _canonical(table: ParameterTable) -> list[Statement]:
    """The order to_lavaan writes: level 1, level 2, then the defined quantities."""
    return sorted(_bare(table), key=lambda r: {1: 0, 2: 1}.get(r.level, 2) if r.op != ":=" else 2)


# ------------------------------------------------------------------------ the tutorial models
def test_model2_rows() -> None:
    t = parse_lavaan(MODEL2)
    assert len(t) == 2 * (12 + 3)
    assert _rows(t.rows, level=2, op="=~", lhs="ACH") == [
        Statement(2, "ACH", "=~", f"ACH{i}") for i in range(1, 5)
    ]
    assert _rows(t.rows, level=1, op="~", lhs="ACH") == [
        Statement(1, "ACH", "~", "INT", label="b_w"),
        Statement(1, "ACH", "~", "REL", label="c_w"),
    ]
    assert _rows(t.rows, level=2, op="~", lhs="INT") == [Statement(2, "INT", "~", "REL", label="a_b")]
    assert t.rows[0].origin == "lavaan line 5"
    assert {r.origin for r in t if r.lhs == "ACH" and r.op == "~" and r.level == 2} == {"lavaan line 18"}
    assert not t.select(":=")


def test_model3_rows() -> None:
    t = parse_lavaan(MODEL3)
    assert t.random_slopes() == {
        "RSa": Statement(1, "INT", "~", "REL", random="RSa", origin="lavaan line 9"),
        "RSb": Statement(1, "ACH", "~", "INT", random="RSb", origin="lavaan line 10"),
    }
    assert _bare(t.select("~1")) == [
        Statement(2, "RSa", "~1", "", label="a_w"),
        Statement(2, "RSb", "~1", "", label="b_w"),
    ]
    assert _bare(t.select("~~")) == [Statement(2, "RSa", "~~", "RSb", label="rCor")]
    assert _rows(t.rows, level=2, op="=~", lhs="REL") == [
        Statement(2, "REL", "=~", f"REL{i}") for i in range(1, 5)
    ]
    assert t.derived()[:2] == [("rCov", "cov(RSa, RSb)"), ("med_w", "indirect(a_w, b_w)")]
    assert {r.level for r in t.select(":=")} == {0}
    # The views compile reads: the slope means carry the tutorial's labels.
    within = {(p.outcome, p.level.value): p for p in t.paths()}
    assert [s.mean_label if s else None for s in within[("ACH", "within")].random] == ["b_w", None]


def test_mixed_rows() -> None:
    t = parse_lavaan(MIXED)
    assert _rows(t.rows, level=1, op="=~", lhs="F") == [
        Statement(1, "F", "=~", "x1", label="l1", free=True),
        Statement(1, "F", "=~", "x2", fixed=1.0),
        Statement(1, "F", "=~", "x3", fixed=-0.5),
        Statement(1, "F", "=~", "x4", fixed=0.25),
    ]
    # y1 + y2 ~ F + k*z: one row per outcome and predictor, outcome by outcome as in lavaan.
    assert [(r.lhs, r.rhs, r.label) for r in t.select("~", 1) if r.random is None] == [
        ("y1", "F", None),
        ("y1", "z", "k"),
        ("y2", "F", None),
        ("y2", "z", "k"),
    ]
    assert _bare(t.select("~1", 1)) == [Statement(1, "y2", "~1")]
    assert _bare(t.select("~1", 2)) == [
        Statement(2, "y1", "~1", label="m"),
        Statement(2, "y2", "~1", fixed=0.0),
        Statement(2, "RSa", "~1", label="a_w"),
    ]
    assert _rows(t.rows, level=1, op="~", lhs="y1")[-1] == Statement(
        1, "y1", "~", "w", label="a_w", random="RSa"
    )
    assert _rows(t.rows, level=2, op="~~", lhs="x2") == [Statement(2, "x2", "~~", "x2", fixed=0.0)]
    assert t.derived() == [("total_w", "a_w * k + l1")]
    assert [r.origin for r in t if r.lhs == "F" and r.op == "=~" and r.level == 1] == [
        "lavaan line 4", "lavaan line 4", "lavaan line 5", "lavaan line 5",
    ]  # fmt: skip


def test_statement_forms() -> None:
    t = parse_lavaan(
        'level: 1\n  y ~ label("a")*x + "b"*z + NA*1\n  f =~ +1*u + v\n  y ~~ y\nlevel: 2\n  y ~ 1 + x'
    )
    assert _bare(t) == [
        Statement(1, "y", "~", "x", label="a"),
        Statement(1, "y", "~", "z", label="b"),
        Statement(1, "y", "~1", free=True),
        Statement(1, "f", "=~", "u", fixed=1.0),
        Statement(1, "f", "=~", "v"),
        Statement(1, "y", "~~", "y"),
        Statement(2, "y", "~1"),
        Statement(2, "y", "~", "x"),
    ]
    # Defined quantities need no level block; an empty text is an empty table.
    assert _bare(parse_lavaan("d := 2 * a")) == [Statement(0, "d", ":=", "2 * a")]
    assert len(parse_lavaan("# nothing\n\n")) == 0


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_round_trip(name: str) -> None:
    first = parse_lavaan(TEXTS[name])
    text = to_lavaan(first)
    assert _bare(parse_lavaan(text)) == _bare(first)
    # Writing again gives the same text: the writer is deterministic and canonical.
    assert to_lavaan(parse_lavaan(text)) == text


def test_writer_layout() -> None:
    text = to_lavaan(parse_lavaan(MODEL3))
    lines = [ln.strip() for ln in text.splitlines()]
    assert lines[0].startswith("#")
    assert lines[1] == "level: 1" and "level: 2" in lines
    assert lines.index("level: 1") < lines.index("level: 2") < lines.index("rCov := cov(RSa, RSb)")
    assert "ACH =~ ACH1 + ACH2 + ACH3 + ACH4" in lines
    assert "RSa | INT ~ REL" in lines
    assert "ACH ~ b_b*INT + c_b*REL" in lines
    assert "RSa ~ a_w*1" in lines
    mixed = [ln.strip() for ln in to_lavaan(parse_lavaan(MIXED)).splitlines()]
    assert "F =~ NA*x1 + l1*x1 + 1*x2 + -0.5*x3 + 0.25*x4" in mixed
    assert "RSa | y1 ~ a_w*w" in mixed
    assert "y1 ~ m*1 + F" in mixed


@pytest.mark.parametrize("number", [2, 3, 4])
def test_builder_tables_round_trip(number: int) -> None:
    # The builder interleaves levels (a random slope adds its level-2 mean next to its path);
    # to_lavaan writes level 1, level 2 and := in turn, each in the table's order.
    model = ms.tutorial.tutorial_model(number, ms.datasets.load_school())
    assert _bare(parse_lavaan(to_lavaan(model.table))) == _canonical(model.table)


def test_fixed_values_read_back_exactly() -> None:
    values = [1.0, 0.0, -0.5, 0.1, 1 / 3, 1e-12, -2.5e8, 123456789.125]
    table = ParameterTable([Statement(1, "F", "=~", f"x{i}", fixed=v) for i, v in enumerate(values)])
    assert [r.fixed for r in parse_lavaan(to_lavaan(table))] == values


@pytest.mark.parametrize(
    "row",
    [
        Statement(3, "y", "~", "x"),
        Statement(1, "y", "~", "x 1"),
        Statement(2, "y", "~", "x", random="RSa"),
        Statement(1, "y", "~", "x", fixed=float("nan")),
        Statement(1, "d", ":=", "a; b"),
    ],
    ids=["level-3", "space-in-name", "random-at-level-2", "nan", "semicolon"],
)
def test_writer_refuses_rows_that_would_read_back_differently(row: Statement) -> None:
    with pytest.raises(MSEMSpecificationError):
        to_lavaan(ParameterTable([row]))


def test_writer_refuses_duplicate_elements() -> None:
    table = ParameterTable([Statement(1, "a", "~~", "b"), Statement(1, "b", "~~", "a", label="r")])
    with pytest.raises(MSEMSpecificationError, match="twice"):
        to_lavaan(table)


# ------------------------------------------------------------------------ errors
ERRORS = {
    "missing rhs": (
        "level: 1\n  F =~ x1 + x2\n  G =~\n  y ~ x\n",
        3, 7, "expected a variable name after '=~', found the end of the line",
    ),
    "missing term after +": (
        "level: 1\n  F =~ x1 + x2 +\nlevel: 2\n", 2, 17, "expected a variable name after '+'",
    ),
    "unknown operator <~": ("level: 1\n  F <~ x1 + x2\n", 2, 5, "'<~'"),
    "group values c()": ("level: 1\n  y ~ c(a,b)*x\n", 2, 7, "c(...)"),
    "before level": ("F =~ x1 + x2\nlevel: 1\n", 1, 1, "before any 'level:' line"),
    "bad := expression": ("level: 1\n  y ~ x\nm := foo(a)\n", 3, 6, "unknown function 'foo'"),
    "two predictors in |": ("level: 1\n  RSa | y ~ x1 + x2\n", 2, 18, "one predictor per random slope"),
    "constraint": ("level: 1\n  a == b\n", 2, 5, "constraints ('==') are not supported yet"),
    "thresholds": ("level: 1\n  u | t1 + t2\n", 2, 5, "declare ordinal variables with ordered=[...]"),
    "scaling factor": ("level: 1\n  y ~*~ y\n", 2, 5, "'~*~'"),
    "start values": ("level: 1\n  y ~ start(.5)*x\n", 2, 7, "start values"),
    "equal()": ('level: 1\n  y ~ equal("a")*x\n', 2, 7, "equal"),
    "chained modifiers": ("level: 1\n  F =~ NA*l1*x1\n", 2, 11, "repeat the term"),
    "group block": ("group: 1\n  y ~ x\n", 1, 1, "'group:'"),
    "level 3": ("level: 3\n", 1, 8, "level: 1 (within) and level: 2 (between)"),
    "random slope at level 2": ("level: 2\n  RSa | y ~ x\n", 2, 3, "level: 1 block"),
    "two labels": ("level: 1\n  y ~ a*x + b*x\n", 2, 13, "two labels"),
    "duplicate element": ("level: 1\n  y ~ x\n  y ~ a*x\n", 3, 7, "already given on line 2"),
    "label and value": ("level: 1\n  y ~ 1*x + a*x\n", 2, 13, "both labelled 'a' and fixed to 1"),
    "fixed and freed": ("level: 1\n  y ~ NA*x + 0*x\n", 2, 14, "both fixed to 0 and freed"),
    "not a number": ("level: 1\n  y ~ 2\n", 2, 7, "expected a variable name or 1 (the intercept)"),
    "no operator": ("level: 1\n  y x\n", 2, 5, "expected an operator"),
    "interaction": ("level: 1\n  y ~ x1:x2\n", 2, 9, "interaction terms"),
    "open string": ("level: 1\n  y ~ 'a*x\n", 2, 7, "no closing"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_line_and_column(case: str) -> None:
    text, line, column, words = ERRORS[case]
    with pytest.raises(MSEMSyntaxError) as info:
        parse_lavaan(text)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"line {line}, column {column}: ")
    assert words in str(err)


def test_error_message_in_full() -> None:
    with pytest.raises(MSEMSyntaxError) as info:
        parse_lavaan("level: 1\n  F =~ x1\n  G =~ + y1\n")
    assert str(info.value) == "line 3, column 8: expected a variable name after '=~', found '+'"


# ------------------------------------------------------------------------ through MSEM
@pytest.mark.skipif(not hasattr(ms.MSEM, "from_lavaan"), reason="MSEM.from_lavaan is not there yet")
@pytest.mark.parametrize("number, text", [(2, MODEL2), (3, MODEL3)])
def test_from_lavaan_matches_the_tutorial_builder(number: int, text: str) -> None:
    data = ms.datasets.load_school()
    ours = ms.MSEM.from_lavaan(text, data, cluster="schid").structure()
    theirs = ms.tutorial.tutorial_model(number, data).structure()
    assert {n: g.elements for n, g in ours.groups.items()} == {
        n: g.elements for n, g in theirs.groups.items()
    }
    assert {n: g.labels for n, g in ours.groups.items()} == {n: g.labels for n, g in theirs.groups.items()}


def _random_text(rng: random.Random) -> str:
    """A random model: well-formed statements, sometimes with a random piece inserted."""
    names, labels = ["F", "G", "x1", "x2", "y", "RSa"], ["a", "b", "l1"]
    mods = ["", "", "NA*", "1*", "-0.5*", "1e-3*", "a*", "b*", '"l1"*']
    ops = ["=~", "~", "~~"]
    lines = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.2:
            lines.append(f"level: {rng.choice(['1', '2', 'within', 'between'])}")
        elif kind < 0.3:
            lines.append(f"d{rng.randint(0, 2)} := {rng.choice(labels)} * {rng.choice(labels)}")
        elif kind < 0.4:
            lines.append(
                f"RS{rng.randint(0, 2)} | {rng.choice(names)} ~ {rng.choice(mods)}{rng.choice(names)}"
            )
        else:
            lhs = " + ".join(rng.sample(names, rng.randint(1, 2)))
            rhs = " + ".join(rng.choice(mods) + rng.choice([*names, "1"]) for _ in range(rng.randint(1, 3)))
            lines.append(f"{lhs} {rng.choice(ops)} {rhs}")
    text = rng.choice(["\n", "; ", " ;\n  # c\n"]).join(lines)
    if rng.random() < 0.3:
        junk = ["+", "*", "~", "<~", "==", "|", "(", ")", "c(a,b)*", ":", "NA", "?", "@", "'", "\n", "1"]
        k = rng.randint(0, len(text))
        text = text[:k] + rng.choice(junk) + text[k:]
    return text


def test_any_text_parses_and_round_trips_or_fails_with_a_position() -> None:
    # The parser never fails with anything but a positioned MSEMSyntaxError, and whatever it
    # reads, the writer writes back to the same rows.
    rng = random.Random(0)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        text = _random_text(rng)
        try:
            table = parse_lavaan(text)
        except MSEMSyntaxError as err:
            assert err.line is not None and err.column is not None, text
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        assert _bare(parse_lavaan(to_lavaan(table))) == _canonical(table), text
    assert min(outcomes.values()) > 300, outcomes


# ------------------------------------------------------------------------------ ordered= (ordinal)
def test_ordered_becomes_ordinal() -> None:
    assert lavaan_arguments({"ordered": ["u1", "u2"], "level2": ["w"]}) == {
        "level2": ["w"],
        "ordinal": ("u1", "u2"),
    }
    assert lavaan_arguments({"ordered": "u1"}) == {"ordinal": ("u1",)}
    assert lavaan_arguments({"ordered": ("u2", "u1", "u2"), "ordinal": ["u1", "u3"]}) == {
        "ordinal": ("u1", "u3", "u2")
    }
    assert lavaan_arguments({"level2": ["w"]}) == {"level2": ["w"]}
    assert lavaan_arguments({"ordered": None}) == lavaan_arguments({"ordered": False}) == {}
    given = {"ordered": ["u1"]}
    lavaan_arguments(given)
    assert given == {"ordered": ["u1"]}  # the caller's dict is left alone


@pytest.mark.parametrize(
    ("ordered", "words"),
    [(True, "ordered=True"), (3, "not 3"), (["u1", 2], "a list of strings")],
)
def test_ordered_takes_names_only(ordered: object, words: str) -> None:
    with pytest.raises(MSEMSpecificationError) as info:
        lavaan_arguments({"ordered": ordered})
    assert words in str(info.value) and "ordered=" in str(info.value)


def test_from_lavaan_takes_ordered() -> None:
    text = "level: 1\n  u1 ~ u2\nlevel: 2\n  u1 ~ u2\n"
    model = ms.MSEM.from_lavaan(text, None, cluster="g", ordered=["u1", "u2"])
    assert model.declared_ordinal == ("u1", "u2")
    with pytest.raises(MSEMSpecificationError, match="ordered=True"):
        ms.MSEM.from_lavaan(text, None, cluster="g", ordered=True)
