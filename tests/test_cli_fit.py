"""``pymsem fit MODEL_FILE``: models other than the tutorial's from the command line."""

from __future__ import annotations

import pandas as pd
import pytest

import pymsem as ms
from pymsem.cli import OUT_COLUMNS, main

#: The tutorial's Model 1 as a whole Blimp input file (its basic settings and Model 1 blocks).
BLIMP_MODEL1 = """
DATA: school.csv;
VARIABLES: ACH INT REL schid;
CLUSTERID: schid;
MISSING: NA;
SEED: 46;
BURN: 10000;
ITERATIONS: 10000;
CHAINS: 2;
LATENT:
schid = ACH_b INT_b REL_b;
MODEL:
within_l1:
ACH_w = ACH - ACH_b;
INT_w = INT - INT_b;
REL_w = REL - REL_b;
ACH ~ 1@ACH_b INT_w@b_w REL_w@c_w;
INT ~ 1@INT_b REL_w@a_w;
REL ~ 1@REL_b;
between_l2:
ACH_bc = ACH_b - gm_ACH;
INT_bc = INT_b - gm_INT;
REL_bc = REL_b - gm_REL;
ACH_b ~ 1@gm_ACH INT_bc@b_b REL_bc@c_b;
INT_b ~ 1@gm_INT REL_bc@a_b;
REL_b ~ 1@gm_REL;
PARAMETERS:
med_w = a_w * b_w;
"""

LAVAAN_MODEL1 = """
level: 1
  INT ~ a_w*REL
  ACH ~ b_w*INT + c_w*REL
level: 2
  INT ~ a_b*REL
  ACH ~ b_b*INT + c_b*REL
med_w := a_w * b_w
"""


@pytest.fixture(scope="module")
def scale_scores(tmp_path_factory: pytest.TempPathFactory) -> str:
    df = ms.datasets.load_school()
    for f in ("ACH", "INT", "REL"):
        df[f] = df[[f"{f}{i}" for i in range(1, 5)]].mean(axis=1)
    path = tmp_path_factory.mktemp("cli") / "school.csv"
    df[["ACH", "INT", "REL", "schid"]].to_csv(path, index=False)
    return str(path)


def test_fit_blimp_file(tmp_path, scale_scores: str, capsys) -> None:
    """A Blimp input file fits with its CLUSTERID, SEED and CHAINS; the table has its labels."""
    model_file = tmp_path / "model1.imp"
    model_file.write_text(BLIMP_MODEL1)
    out = tmp_path / "summary.csv"
    args = ["fit", str(model_file), "--data", scale_scores, "--draws", "200", "--tune", "300"]
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model1.imp" in printed and "INT <- REL" in printed and "Chains x draws: 2 x 200" in printed
    s = pd.read_csv(out)
    assert list(s.columns) == OUT_COLUMNS
    assert {"a_w", "b_w", "c_w", "a_b", "b_b", "c_b", "med_w"} <= set(s["label"].dropna())
    # The same model written in lavaan syntax is the same parameter table (labels aside).
    data = pd.read_csv(scale_scores)
    lav = ms.MSEM.from_lavaan(LAVAAN_MODEL1, data, cluster="schid").parameters()
    blimp = ms.MSEM.from_blimp(data, file=BLIMP_MODEL1).parameters()
    cols = ["level", "lhs", "op", "rhs", "free"]
    key = lambda t: t[cols].sort_values(cols).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(lav[lav["op"] != ":="]), key(blimp[blimp["op"] != ":="]))


def test_fit_errors_name_the_problem(tmp_path, scale_scores: str, capsys) -> None:
    lav = tmp_path / "model.lav"
    lav.write_text(LAVAAN_MODEL1)
    assert main(["fit", str(lav), "--data", scale_scores]) == 2
    assert "needs --cluster" in capsys.readouterr().err
    odd = tmp_path / "model.txt"
    odd.write_text("INT ~ REL\n")
    assert main(["fit", str(odd), "--data", scale_scores, "--cluster", "schid"]) == 2
    assert "--syntax lavaan" in capsys.readouterr().err
    typo = tmp_path / "typo.lav"
    typo.write_text(LAVAAN_MODEL1.replace("c_w*REL", "c_w*RELL"))
    assert main(["fit", str(typo), "--data", scale_scores, "--cluster", "schid"]) == 2
    err = capsys.readouterr().err
    assert "'RELL'" in err and "Did you mean 'REL'" in err
    bad = tmp_path / "bad.lav"
    bad.write_text("level: 1\n  INT ~ \nlevel: 2\n  INT ~ REL\n")
    assert main(["fit", str(bad), "--data", scale_scores, "--cluster", "schid", "--syntax", "lavaan"]) == 2
    assert "line 2" in capsys.readouterr().err
