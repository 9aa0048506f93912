"""The Blimp front end: parse_blimp / parse_blimp_file on the tutorial's Blimp syntax, constructs, errors.

Pure parsing: nothing here compiles or samples a model. The tutorial's syntax (Kim, Lee, Kim &
Keller, Bayesian MSEM with Blimp) is pasted verbatim, comments and odd spacing included.
"""

from __future__ import annotations

from collections import Counter

import pytest

import pymsem as ms
from pymsem.effects.derived import parse as parse_derived
from pymsem.specification.errors import MSEMSyntaxError
from pymsem.specification.partable import ParameterTable, Statement
from pymsem.syntax.blimp import BlimpModel, parse_blimp, parse_blimp_file

SCHOOL_COLUMNS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)] + ["SES", "schid", "id"]
HAS_FROM_TABLE = hasattr(ms.MSEM, "from_table")

# ------------------------------------------------------------------------- the tutorial, verbatim
BASIC_SETTINGS = """
DATA: data.csv;                                #Read in data
VARIABLES: ACH1:ACH4 INT1:INT4 REL1:REL4 SES schid id; #List variables
LATENT: ACH_w schid = ACH_b;                  #Specify latent variables
CLUSTERID: schid;                             #Specify between-level identifier
MISSING: NA;                                  #Missing Data
SEED: 46;                                     #Set a seed
BURN: 10000;                                #Specify a number of burn-in iterations
ITERATIONS: 10000; #Specify number of iterations after burn-in period
CHAIN: 4;                                    #Specify number of chains
"""

MODEL1 = """
LATENT:
#Define between-school latent variables
schid = ACH_b INT_b REL_b;

MODEL:
within_l1:
#Define group mean-centered deviations
ACH_w = ACH - ACH_b;
INT_w = INT - INT_b;
REL_w = REL - REL_b;

#Fit within Models
ACH ~ 1@ACH_b INT_w REL_w;
INT ~ 1@INT_b REL_w;
REL ~ 1@REL_b;

between_l2:
#Define grand mean-centered deviations
ACH_bc = ACH_b - gm_ACH;
INT_bc = INT_b - gm_INT;
REL_bc = REL_b - gm_REL;

#Fit between Models
ACH_b ~ 1@gm_ACH INT_bc REL_bc;
INT_b ~ 1@gm_INT REL_bc;
REL_b ~ 1@gm_REL;
"""

MODEL2_LATENT = """
ACH_w INT_w REL_w ;           #Latent at the within-level
schid = ACH_b INT_b REL_b;    #Latent at the between-level
"""

MODEL2 = """
ACH_w -> ACH1:ACH4;           #Define latent factors
INT_w -> INT1:INT4;
REL_w -> REL1:REL4;

ACH_w ~ INT_w REL_w;          #Set regressions
INT_w ~ REL_w;

ACH_b -> ACH1:ACH4;           #Define latent variables

INT_b -> INT1:INT4;
REL_b -> REL1:REL4;

ACH_b ~ INT_b REL_b;           #Set regressions
INT_b ~ REL_b;
"""

MODEL3_LATENT = """
ACH_w INT_w REL_w;
schid = ACH_b INT_b REL_b RSa RSb;
"""

# As printed: the between model says MI_b where it means INT_b.
MODEL3_AS_PRINTED = """
ACH_w -> ACH1:ACH4;
INT_w -> INT1:INT4;
REL_w -> REL1:REL4;

ACH_w ~ INT_w@RSb REL_w;
INT_w ~ REL_w@RSa;

ACH_b -> ACH1:ACH4;
INT_b -> INT1:INT4;
REL_b -> REL1:REL4;

ACH_b ~ MI_b@b_b REL_b ;
INT_b ~ REL_b@a_b ;

RSb ~ 1@b_w;
RSa ~ 1@a_w;
RSa ~~ RSa;
RSb ~~ RSb;
RSa ~~ RSb@rCor;
"""
MODEL3 = MODEL3_AS_PRINTED.replace("MI_b@b_b", "INT_b@b_b")

MODEL3_PARAMETERS = """
#Covariance between two random slopes
rCov = rCor * sqrt(RSa.totalvar * RSb.totalvar);
#Mediation effects
med_w = a_w * b_w + rCov;
med_b = a_b * b_b;

#Contextual effects
a_con = a_b - a_w;
b_con = b_b - b_w;
med_con = med_b - med_w ;
"""

MODEL4_LATENT = """
ACH_w INT_w REL_w ;
schid = ACH_b INT_b REL_b SES_b RSa RSb;
"""

MODEL4 = """
SES_w = SES - SES_b;
SES ~ 1@SES_b;

ACH_w -> ACH1:ACH4;
INT_w -> INT1:INT4;
REL_w -> REL1:REL4;

ACH_w ~ INT_w@RSb REL_w SES_w;
INT_w ~ REL_w@RSa SES_w;
REL_w ~~ SES;

SES_bc = SES_b - gm_SES;
SES_b ~ 1@gm_SES ;

ACH_b -> ACH1:ACH4;
INT_b -> INT1:INT4;
REL_b -> REL1:REL4;

ACH_b ~ INT_b@b_b REL_b SES_bc;

INT_b ~ REL_b@a_b SES_bc;

REL_b ~~ SES_b ;

RSb ~ 1@b_w SES_bc@SESb_b;
RSa ~ 1@a_w SES_bc@SESb_a;

RSb ~~ RSb;
RSa ~~ RSa;
RSb ~~ RSa@rCor;
"""

MODEL4_PARAMETERS = """
rCov = rCor * sqrt(RSa.totalvar * RSb.totalvar);
#Moderated mediation effects
mome_p1 = (a_w + SESb_a*sqrt(SES_b.totalvar)) * (b_w +
SESb_b*sqrt(SES_b.totalvar)) + rCov;
mome_m1 = (a_w - SESb_a*sqrt(SES_b.totalvar)) * (b_w -
SESb_b*sqrt(SES_b.totalvar)) + rCov;
"""


# ----------------------------------------------------------------------------------- helpers
def _key(r: Statement) -> tuple:
    lhs, rhs = sorted((r.lhs, r.rhs)) if r.op == "~~" else (r.lhs, r.rhs)
    return (r.level, lhs, r.op, rhs, r.label, r.fixed, r.free, r.random)


def _rows(table: ParameterTable | list[Statement], ops: tuple[str, ...] = ("=~", "~", "~~", "~1")) -> Counter:
    return Counter(_key(r) for r in table if r.op in ops)


def _builder_rows(model: ms.MSEM, unlabel: set[str]) -> Counter:
    """The builder's rows, less the labels that the Blimp text does not give."""
    rows = [
        Statement(
            r.level, r.lhs, r.op, r.rhs, None if r.label in unlabel else r.label, r.fixed, r.free, r.random
        )
        for r in model.table
    ]
    return _rows(rows)


def _find(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` in ``text``."""
    before = text[: text.index(needle)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


@pytest.fixture(scope="module")
def school():
    return ms.datasets.load_school()


@pytest.fixture(scope="module")
def scale_scores(school):
    """Model 1's data: the school data with the ACH, INT and REL scale scores model1 computes."""
    return ms.tutorial.model1(school).data


def _groups(model: ms.MSEM) -> dict[str, list[str]]:
    """Parameter groups by name, their elements sorted (their order follows the statements')."""
    return {name: sorted(g.elements) for name, g in model.structure().groups.items()}


def _model2() -> BlimpModel:
    return parse_blimp(MODEL2, latent=MODEL2_LATENT, columns=SCHOOL_COLUMNS)


def _model3() -> BlimpModel:
    return parse_blimp(MODEL3, latent=MODEL3_LATENT, parameters=MODEL3_PARAMETERS, columns=SCHOOL_COLUMNS)


def _model4() -> BlimpModel:
    return parse_blimp(MODEL4, latent=MODEL4_LATENT, parameters=MODEL4_PARAMETERS, columns=SCHOOL_COLUMNS)


# ------------------------------------------------------------------------------- Model 1
def test_model1_rows_match_the_builder(scale_scores):
    parsed = parse_blimp_file(MODEL1, columns=list(scale_scores.columns))
    assert parsed.cluster == "schid"
    expected = _builder_rows(ms.tutorial.model1(scale_scores), {"a_w", "b_w", "c_w", "a_b", "b_b", "c_b"})
    # Blimp's x_bc = x_b - gm_x labels the grand means, which the builder leaves unlabelled.
    expected.update(_key(Statement(2, v, "~1", label=f"gm_{v}")) for v in ("ACH", "INT", "REL"))
    assert _rows(parsed.table) == expected


def test_model1_levels_and_origins():
    parsed = parse_blimp_file(MODEL1)
    rows = [(r.level, r.text()) for r in parsed.table]
    assert rows == [
        (1, "ACH ~ INT"),
        (1, "ACH ~ REL"),
        (1, "INT ~ REL"),
        (2, "ACH ~ 1"),
        (2, "ACH ~ INT"),
        (2, "ACH ~ REL"),
        (2, "INT ~ 1"),
        (2, "INT ~ REL"),
        (2, "REL ~ 1"),
    ]
    # Origins name the line of the file (ACH ~ 1@ACH_b ... is on line 14).
    assert parsed.table.rows[0].origin == "Blimp MODEL line 14"


@pytest.mark.skipif(not HAS_FROM_TABLE, reason="MSEM.from_table is not available")
def test_model1_structure_matches_the_builder(scale_scores):
    parsed = parse_blimp_file(MODEL1, columns=list(scale_scores.columns))
    model = ms.MSEM.from_table(parsed.table, scale_scores, cluster="schid")
    assert _groups(model) == _groups(ms.tutorial.model1(scale_scores))


# ------------------------------------------------------------------------------- Model 2
def test_model2_rows_match_the_builder(school):
    parsed = _model2()
    assert parsed.cluster == "schid"
    assert _rows(parsed.table) == _builder_rows(
        ms.tutorial.model2(school), {"a_w", "b_w", "c_w", "a_b", "b_b", "c_b"}
    )
    # ACH_w and ACH_b measure ACH1-ACH4: one factor ACH at both levels, as the builder writes it.
    latents = {f.name: f for f in parsed.table.latents()}
    assert set(latents) == {"ACH", "INT", "REL"}
    assert [str(lv) for lv in latents["ACH"].levels] == ["within", "between"]


@pytest.mark.skipif(not HAS_FROM_TABLE, reason="MSEM.from_table is not available")
def test_model2_structure_matches_the_builder(school):
    model = ms.MSEM.from_table(_model2().table, school, cluster="schid")
    assert _groups(model) == _groups(ms.tutorial.model2(school))


# ------------------------------------------------------------------------------- Model 3
def test_model3_as_printed_suggests_int_b():
    with pytest.raises(MSEMSyntaxError, match="Did you mean 'INT_b'") as info:
        parse_blimp(MODEL3_AS_PRINTED, latent=MODEL3_LATENT, columns=SCHOOL_COLUMNS)
    assert (info.value.line, info.value.column) == _find(MODEL3_AS_PRINTED, "MI_b")
    assert "'MI_b'" in str(info.value)


def test_model3_as_printed_in_a_file_checks_names_against_variables():
    text = BASIC_SETTINGS + "LATENT:" + MODEL3_LATENT + "MODEL:" + MODEL3_AS_PRINTED
    with pytest.raises(MSEMSyntaxError, match="Did you mean 'INT_b'") as info:
        parse_blimp_file(text)
    assert (info.value.line, info.value.column) == _find(text, "MI_b")


def test_model3_rows_match_the_builder(school):
    parsed = _model3()
    expected = _builder_rows(ms.tutorial.model3(school), {"c_w", "c_b"})
    # The Blimp text also states the slopes' variances, which are the builder's defaults.
    expected.update([_key(Statement(2, "RSa", "~~", "RSa")), _key(Statement(2, "RSb", "~~", "RSb"))])
    assert _rows(parsed.table) == expected
    random = {r.random: (r.level, r.lhs, r.rhs) for r in parsed.table if r.random}
    assert random == {"RSa": (1, "INT", "REL"), "RSb": (1, "ACH", "INT")}
    assert parsed.table.slope_mean_label("RSa", None) == "a_w"


def test_model3_parameters(school):
    derived = dict(_model3().table.derived())
    # The builder's derived quantities, by name (its expressions use indirect() and cov()).
    assert list(derived) == [name for name, _ in ms.tutorial.model3(school).table.derived()]
    assert derived == {
        "rCov": "rCor * sqrt(var(RSa) * var(RSb))",
        "med_w": "a_w * b_w + rCov",
        "med_b": "a_b * b_b",
        "a_con": "a_b - a_w",
        "b_con": "b_b - b_w",
        "med_con": "med_b - med_w",
    }
    for name, expr in derived.items():
        parse_derived(expr, name)


@pytest.mark.skipif(not HAS_FROM_TABLE, reason="MSEM.from_table is not available")
def test_model3_structure_matches_the_builder(school):
    model = ms.MSEM.from_table(_model3().table, school, cluster="schid")
    assert _groups(model) == _groups(ms.tutorial.model3(school))


# ------------------------------------------------------------------------------- Model 4
def test_model4_rows_match_the_builder(school):
    parsed = _model4()
    unlabel = {"ses_int_w", "c_w", "ses_ach_w", "ses_int_b", "c_b", "ses_ach_b"}
    expected = _builder_rows(ms.tutorial.model4(school), unlabel)
    expected.update(
        [
            _key(Statement(2, "SES", "~1", label="gm_SES")),
            _key(Statement(2, "RSa", "~~", "RSa")),
            _key(Statement(2, "RSb", "~~", "RSb")),
        ]
    )
    assert _rows(parsed.table) == expected
    # SES_w is SES's within part, SES_bc (and SES_b) its cluster mean.
    assert (1, "REL", "~~", "SES") in {(r.level, r.lhs, r.op, r.rhs) for r in parsed.table}
    assert (2, "REL", "~~", "SES") in {(r.level, r.lhs, r.op, r.rhs) for r in parsed.table}


def test_model4_parameters_span_lines_and_translate_totalvar():
    derived = dict(_model4().table.derived())
    assert derived == {
        "rCov": "rCor * sqrt(var(RSa) * var(RSb))",
        "mome_p1": "(a_w + SESb_a * sqrt(var(SES, between))) * (b_w + SESb_b * sqrt(var(SES, between))) + rCov",
        "mome_m1": "(a_w - SESb_a * sqrt(var(SES, between))) * (b_w - SESb_b * sqrt(var(SES, between))) + rCov",
    }
    for name, expr in derived.items():
        parse_derived(expr, name)


@pytest.mark.skipif(not HAS_FROM_TABLE, reason="MSEM.from_table is not available")
def test_model4_structure_matches_the_builder(school):
    model = ms.MSEM.from_table(_model4().table, school, cluster="schid")
    assert _groups(model) == _groups(ms.tutorial.model4(school))


@pytest.mark.skipif(not hasattr(ms.MSEM, "from_blimp"), reason="MSEM.from_blimp is not available")
def test_from_blimp_reads_model3(school):
    model = ms.MSEM.from_blimp(school, MODEL3, latent=MODEL3_LATENT, parameters=MODEL3_PARAMETERS)
    assert model.cluster == "schid"
    assert _groups(model) == _groups(ms.tutorial.model3(school))


# ------------------------------------------------------------------------------ whole files
def test_whole_file_basic_settings_and_model2():
    text = BASIC_SETTINGS + "LATENT:" + MODEL2_LATENT + "MODEL:\n" + MODEL2
    parsed = parse_blimp_file(text)
    assert parsed.cluster == "schid"
    assert parsed.settings == {
        "data": "data.csv",
        "variables": SCHOOL_COLUMNS,
        "missing": "NA",
        "seed": 46,
        "burn": 10000,
        "iterations": 10000,
        "chains": 4,
    }
    assert _rows(parsed.table) == _rows(_model2().table)


def test_whole_file_other_settings():
    text = """
    data: C:\\data\\my school.csv;
    variables: y x schid;
    clusterid: schid;
    missing: -99;
    ITER: 5000;
    chains: 2 processors 2;
    nimps: 20; thin: 5;
    options: labels hov;
    fixed: x;
    center: groupmean = x;
    model: y ~ x;
    save: stacked = imps.dat;
    """
    parsed = parse_blimp_file(text)
    assert parsed.settings == {
        "data": "C:\\data\\my school.csv",
        "variables": ["y", "x", "schid"],
        "missing": -99,
        "iterations": 5000,
        "chains": 2,
        "processors": 2,
        "nimps": 20,
        "thin": 5,
        "options": ["labels", "hov"],
        "fixed": ["x"],
        "center": {"groupmean": ["x"]},
        "save": "stacked = imps.dat",
    }
    assert [(r.level, r.text()) for r in parsed.table] == [(1, "y ~ x")]


@pytest.mark.parametrize(
    ("command", "construct"),
    [
        ("NOMINAL: y;", "nominal"),
        ("COUNT: y;", "count"),
        ("FCS: y x;", "FCS"),
        ("SIMPLE: x | y;", "SIMPLE"),
        ("TRANSFORM: z = x*2;", "TRANSFORM"),
    ],
)
def test_whole_file_refuses_unsupported_commands(command, construct):
    text = f"VARIABLES: y x schid;\nCLUSTERID: schid;\n{command}\nMODEL: y ~ x;"
    with pytest.raises(MSEMSyntaxError, match=construct) as info:
        parse_blimp_file(text)
    assert (info.value.line, info.value.column) == (3, 1)


def test_whole_file_accepts_empty_ordinal_and_names_unknown_commands():
    assert len(parse_blimp_file("ORDINAL: ;\nMODEL: y ~ x;").table) == 1
    with pytest.raises(MSEMSyntaxError, match=r"unknown command ITERATONS.*ITERATIONS") as info:
        parse_blimp_file("SEED: 1;\nITERATONS: 100;\nMODEL: y ~ x;")
    assert (info.value.line, info.value.column) == (2, 1)
    with pytest.raises(MSEMSyntaxError, match="expected a command"):
        parse_blimp_file("y ~ x;")
    with pytest.raises(MSEMSyntaxError, match="SEED is given twice"):
        parse_blimp_file("SEED: 1;\nSEED: 2;")
    with pytest.raises(MSEMSyntaxError, match="whole number"):
        parse_blimp_file("BURN: many;")


# ------------------------------------------------------------------------------ constructs
def test_ranges():
    parsed = parse_blimp(
        "F_w -> x1_i:x3_i; G_w -> y08:y10; H_w -> z1 : z2;",
        latent="F_w G_w H_w",
    )
    assert [(r.lhs, r.rhs, r.fixed) for r in parsed.table] == [
        ("F_w", "x1_i", 1.0),
        ("F_w", "x2_i", None),
        ("F_w", "x3_i", None),
        ("G_w", "y08", 1.0),
        ("G_w", "y09", None),
        ("G_w", "y10", None),
        ("H_w", "z1", 1.0),
        ("H_w", "z2", None),
    ]
    with pytest.raises(MSEMSyntaxError, match="not a variable range") as info:
        parse_blimp("F_w -> x1:y4;", latent="F_w")
    assert (info.value.line, info.value.column) == (1, 8)
    with pytest.raises(MSEMSyntaxError, match="backwards"):
        parse_blimp("y ~ x4:x1;")


def test_between_residuals_fixed_to_zero():
    model = "ACH_w -> ACH1:ACH4 | 0;\nACH_b -> ACH1:ACH4;"
    parsed = parse_blimp(model, latent="ACH_w; schid = ACH_b")
    zero = [(r.level, r.lhs, r.rhs, r.fixed) for r in parsed.table if r.op == "~~"]
    assert zero == [(2, f"ACH{i}", f"ACH{i}", 0.0) for i in range(1, 5)]
    assert parsed.table.latents()[0].between_residuals == 0
    with pytest.raises(MSEMSyntaxError, match="within-level factor only"):
        parse_blimp("ACH_w -> ACH1:ACH4 | 0;", latent="ACH_w")


def test_left_arrow_and_equals_tilde():
    a = parse_blimp("INT_w <- REL_w; INT_w =~ INT1:INT4; REL_w -> REL1:REL4", latent="INT_w REL_w")
    b = parse_blimp("INT_w ~ REL_w; INT_w -> INT1:INT4; REL_w -> REL1:REL4", latent="INT_w REL_w")
    assert _rows(a.table) == _rows(b.table)


def test_dot_mean_center_and_generated_random_slope():
    parsed = parse_blimp(
        "y_i ~ x_i@beta_w x_i.mean@beta_b | x_i",
        clusterid="level2id",
        center="groupmean = x_i;\n   grandmean = x_i.mean",
        parameters="contextual_effect = beta_b - beta_w",
    )
    assert parsed.cluster == "level2id"
    assert parsed.settings["center"] == {"groupmean": ["x_i"], "grandmean": ["x_i.mean"]}
    rows = [(r.level, r.lhs, r.op, r.rhs, r.label, r.random) for r in parsed.table]
    assert rows == [
        (1, "y_i", "~", "x_i", None, "RS_y_i_x_i"),
        (2, "RS_y_i_x_i", "~1", "", "beta_w", None),
        (2, "y_i", "~", "x_i", "beta_b", None),
        (0, "contextual_effect", ":=", "beta_b - beta_w", None, None),
    ]


def test_dot_mean_in_a_between_regression_and_level2_columns():
    parsed = parse_blimp("ACH ~ 1@ACH_b; ACH_b ~ SES.mean; y ~ w2 x;", latent="schid = ACH_b", level2=["w2"])
    parsed_rows = [(r.level, r.text()) for r in parsed.table]
    assert parsed_rows == [(2, "ACH ~ SES"), (2, "y ~ w2"), (1, "y ~ x")]


def test_random_intercepts_and_slopes_as_between_latents():
    # rblimp's Ex6.4 style: the random intercept beta0_j is y's cluster mean.
    parsed = parse_blimp(
        "level2.model:\n beta0_j ~ 1 x3_j;\n beta1_j ~ 1@g10;\n beta0_j ~~ beta1_j;\n"
        "level1.model:\n y_i ~ 1@beta0_j x1_i@beta1_j x2_i",
        latent="level2id = beta0_j beta1_j",
    )
    assert [(r.level, r.text(), r.label, r.random) for r in parsed.table] == [
        (2, "y_i ~ x3_j", None, None),
        (2, "beta1_j ~ 1", "g10", None),
        (2, "y_i ~~ beta1_j", None, None),
        (1, "y_i ~ x1_i", None, "beta1_j"),
        (1, "y_i ~ x2_i", None, None),
    ]


def test_inline_deviations_and_means():
    # rblimp's style for 1-1-1 mediation with random slopes: cluster means named in LATENT,
    # within parts written inline as (x - x_mean).
    parsed = parse_blimp(
        "between.part:\n mbar ~ xbar@a_b;\n 1 -> xbar mbar sa;\n sa ~ 1@a_mean;\n"
        "within.part:\n x ~ 1@xbar;\n m ~ 1@mbar (x - xbar)@sa",
        latent="cl = xbar mbar sa",
        parameters="con = a_b - a_mean",
    )
    assert parsed.cluster == "cl"
    assert [(r.level, r.text(), r.label, r.random) for r in parsed.table] == [
        (2, "m ~ x", "a_b", None),
        (2, "sa ~ 1", "a_mean", None),
        (1, "m ~ x", None, "sa"),
        (0, "con := a_b - a_mean", None, None),
    ]
    with pytest.raises(MSEMSyntaxError, match="'mbar' is already the cluster mean of 'm', not of 'x'"):
        parse_blimp("x ~ 1@xbar; m ~ 1@mbar (x - mbar)", latent="cl = xbar mbar")


def test_fixed_values_labels_and_case():
    parsed = parse_blimp(
        "f_W -> ach1@1 ach2@lam ach3 ach4@0.5;\ny ~ x@0.5 z@B1;\ny ~~ z@0;",
        latent="F_w",
        columns=["ACH1", "ACH2", "ACH3", "ACH4", "y", "x", "z"],
    )
    rows = [(r.level, r.lhs, r.op, r.rhs, r.label, r.fixed) for r in parsed.table]
    assert rows == [
        (1, "F_w", "=~", "ACH1", None, 1.0),
        (1, "F_w", "=~", "ACH2", "lam", None),
        (1, "F_w", "=~", "ACH3", None, None),
        (1, "F_w", "=~", "ACH4", None, 0.5),
        (1, "y", "~", "x", None, 0.5),
        (1, "y", "~", "z", "B1", None),
        (1, "y", "~~", "z", None, 0.0),
    ]


def test_parameters_translation_and_checks():
    model = "ACH_w -> ACH1:ACH2; ACH_b -> ACH1:ACH2; y ~ x@b; RS ~ 1@m; y ~ z@RS;"
    latent = "ACH_w; schid = ACH_b RS"
    parsed = parse_blimp(
        model,
        latent=latent,
        parameters="v1 = ACH_w.totalvar; v2 = ach_b.TOTALVAR; v3 = y.totalvar;\nv4 = b^2 + RS.totalvar; v5 = M*v4",
    )
    derived = dict(parsed.table.derived())
    assert derived == {
        "v1": "var(ACH, within)",
        "v2": "var(ACH, between)",
        "v3": "(var(y, within) + var(y, between))",
        "v4": "b ** 2 + var(RS)",
        "v5": "m * v4",
    }
    with pytest.raises(MSEMSyntaxError, match=r"'bb' is not a label.*Did you mean 'b'") as info:
        parse_blimp(model, latent=latent, parameters="ok = b;\nbad = 2 * bb")
    assert (info.value.line, info.value.column) == (2, 11)
    with pytest.raises(MSEMSyntaxError, match=r"'\.sd' is not supported in PARAMETERS"):
        parse_blimp(model, latent=latent, parameters="s = y.sd")
    with pytest.raises(MSEMSyntaxError, match="not a label of the model or an earlier parameter"):
        parse_blimp(model, latent=latent, parameters="p = q; q = b")
    with pytest.raises(MSEMSyntaxError, match="priors and other statements"):
        parse_blimp(model, latent=latent, parameters="b ~ normal(0, 1)")


# ------------------------------------------------------------------------------ errors
def test_unknown_variable_names_line_column_and_closest():
    model = "y ~ x1;\ny ~ xl2;"
    with pytest.raises(MSEMSyntaxError, match=r"'xl2' is neither a column.*Did you mean 'x12'") as info:
        parse_blimp(model, columns=["y", "x1", "x12"])
    assert (info.value.line, info.value.column) == (2, 5)
    assert str(info.value).startswith("line 2, column 5: model: ")
    # Without columns an unknown name is taken to be a column.
    assert len(parse_blimp(model).table) == 2


@pytest.mark.parametrize(
    ("model", "construct", "column"),
    [
        ("y ~ x*z;", "interaction terms", 6),
        ("y ~ poly(x, 2);", r"functions in model equations \(poly", 5),
        ("y ~ x^2;", "powers", 6),
        ("xz = x*z;", "variables defined by expressions", 1),
        ("y ~ x + z;", "separates predictors", 7),
        ("y ~ x.lag;", r"'\.lag' is not supported", 5),
        ("y ~ (x + z);", "the expression", 5),
        ("y x;", "expected a regression", 1),
        ("y ~ x $ z;", "unexpected character", 7),
    ],
)
def test_unsupported_constructs_are_named(model, construct, column):
    with pytest.raises(MSEMSyntaxError, match=construct) as info:
        parse_blimp("\n" + model)
    assert (info.value.line, info.value.column) == (2, column)


def test_latent_errors():
    with pytest.raises(MSEMSyntaxError, match="not a declared latent"):
        parse_blimp("F -> x1:x3;")
    with pytest.raises(MSEMSyntaxError, match="does not say what it is"):
        parse_blimp("y ~ u_j;", latent="cid = u_j")
    with pytest.raises(MSEMSyntaxError, match="has no indicators"):
        parse_blimp("y1 ~ F@1;", latent="F")
    with pytest.raises(MSEMSyntaxError, match="both as a factor and as a random slope"):
        parse_blimp("B -> x1:x3; y ~ x@B;", latent="cid = B")
    with pytest.raises(MSEMSyntaxError, match="three-level models"):
        parse_blimp("y ~ x;", latent="l2 = u", clusterid="l3")
    with pytest.raises(MSEMSyntaxError, match="cannot predict the within-level"):
        parse_blimp("F_w -> x1:x3; F_w ~ w_b; y ~ 1@w_b;", latent="F_w; cid = w_b")
    with pytest.raises(MSEMSyntaxError, match="random slope on the between-level path"):
        parse_blimp("F_b -> x1:x3; F_b ~ w@RS;", latent="cid = F_b RS")


def test_centering_checks():
    with pytest.raises(MSEMSyntaxError, match="CENTER latentmean is not supported"):
        parse_blimp("y ~ x;", center="latentmean = x")
    with pytest.raises(MSEMSyntaxError, match="'q' is neither a column") as info:
        parse_blimp("y ~ x;", center="groupmean = x q", columns=["y", "x"])
    assert (info.value.line, info.value.column) == (1, 15)
    with pytest.raises(MSEMSyntaxError, match="intercept is labelled"):
        parse_blimp("x ~ 1@x_b; x_bc = x_b - gm; x_b ~ 1@other; y ~ x_bc;", latent="c = x_b")


def test_an_element_stated_twice():
    parsed = parse_blimp(
        "ACH_w -> ACH1:ACH4 | 0; ACH_b -> ACH1:ACH4 | 0; y ~ x@b; y ~ x@b;", latent="ACH_w; s = ACH_b"
    )
    assert sum(r.op == "~~" for r in parsed.table) == 4
    assert sum(r.op == "~" for r in parsed.table) == 1
    with pytest.raises(
        MSEMSyntaxError, match=r"x ~~ y \(level 1\) is already stated \(Blimp model line 1\)"
    ) as info:
        parse_blimp("y ~~ x@r;\nx ~~ y@s;")
    assert (info.value.line, info.value.column) == (2, 6)


def test_a_misspelled_command_in_a_model_block():
    with pytest.raises(MSEMSyntaxError, match=r"unknown command PARAMETRS:\. Did you mean 'PARAMETERS'"):
        parse_blimp_file("MODEL:\n y ~ x@b;\nPARAMETRS: p = b;")
    # Block labels in lower case, or not close to a command, are labels.
    assert len(parse_blimp_file("MODEL:\nstructural:\n y ~ x;\nWITHIN:\n z ~ x;").table) == 2


def test_model_as_list_or_blocks():
    a = parse_blimp(["INT_w ~ REL_w", "INT_w -> INT1:INT4; REL_w -> REL1:REL4"], latent="INT_w REL_w")
    b = parse_blimp({"structural": "INT_w ~ REL_w", "measurement": "INT_w -> INT1:INT4; REL_w -> REL1:REL4"},
                    latent="INT_w REL_w")  # fmt: skip
    c = parse_blimp("INT_w ~ REL_w; INT_w -> INT1:INT4; REL_w -> REL1:REL4", latent="INT_w REL_w")
    assert _rows(a.table) == _rows(b.table) == _rows(c.table)


# ---------------------------------------------------------------------------------------- ORDINAL
def test_ordinal_command_lists_columns_with_ranges_and_blimp_case():
    text = (
        "VARIABLES: schid U1 U2 U3 y x;\nCLUSTERID: schid;\nLATENT: F_w;\n"
        "ORDINAL: u1:u3\n  Y;\nORDINAL: u2;\nMODEL: F_w -> U1:U3; y ~ x;"
    )
    parsed = parse_blimp_file(text)
    assert parsed.ordinal == ("U1", "U2", "U3", "y")  # the columns' spelling, each once
    assert "ordinal" not in parsed.settings
    assert parse_blimp_file("MODEL: y ~ x;").ordinal == ()
    assert parse_blimp_file("ORDINAL: ;\nMODEL: y ~ x;").ordinal == ()
    assert parse_blimp_file(text, ordinal="x Y").ordinal == ("U1", "U2", "U3", "y", "x")


def test_ordinal_command_checks_names_against_the_columns():
    text = "VARIABLES: schid u1 u2 y;\nORDINAL: u1 uu2;\nMODEL: y ~ u1 u2;"
    with pytest.raises(MSEMSyntaxError, match=r"'uu2' is neither a column.*Did you mean 'u2'") as info:
        parse_blimp_file(text)
    assert (info.value.line, info.value.column) == (2, 13)
    with pytest.raises(MSEMSyntaxError, match=r"not a variable range"):
        parse_blimp_file("ORDINAL: u1:y;\nMODEL: y ~ u1;")


def test_ordinal_command_refuses_latents():
    text = "CLUSTERID: schid;\nLATENT: F_w;\nORDINAL: F_w;\nMODEL: F_w -> u1:u3;"
    with pytest.raises(MSEMSyntaxError, match=r"'F_w' is a latent variable; ORDINAL lists observed") as info:
        parse_blimp_file(text)
    assert (info.value.line, info.value.column) == (3, 10)


def test_rblimp_ordinal_argument():
    a = parse_blimp("F_w -> u1:u4; y ~ x", latent="F_w", clusterid="schid", ordinal="u1:u3 u4")
    assert a.ordinal == ("u1", "u2", "u3", "u4")
    b = parse_blimp("y ~ x", clusterid="schid", ordinal=["y", "x"], columns=["schid", "Y", "X"])
    assert b.ordinal == ("Y", "X")
    with pytest.raises(MSEMSyntaxError, match=r"'z' is neither a column") as info:
        parse_blimp("y ~ x", ordinal="y z", columns=["y", "x"])
    assert str(info.value).startswith("line 1, column 3")


def test_nominal_and_count_are_still_refused_with_what_to_do():
    with pytest.raises(MSEMSyntaxError, match=r"NOMINAL\) are not supported yet; dummy-code"):
        parse_blimp_file("NOMINAL: y;\nMODEL: y ~ x;")
    with pytest.raises(MSEMSyntaxError, match=r"COUNT\) are not supported yet; model them as continuous"):
        parse_blimp_file("COUNT: y;\nMODEL: y ~ x;")


def test_from_blimp_declares_the_ordinal_columns():
    text = "CLUSTERID: schid;\nORDINAL: u1:u2;\nMODEL: u1 ~ u2 x;"
    assert ms.MSEM.from_blimp(None, file=text).declared_ordinal == ("u1", "u2")
    model = ms.MSEM.from_blimp(None, "u1 ~ u2 x", clusterid="schid", ordinal="u1:u2")
    assert model.declared_ordinal == ("u1", "u2")
