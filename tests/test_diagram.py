"""Path diagrams: graph structure of the tutorial models, layout, files, DOT, and fitted estimates."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import pymsem as ms
from pymsem.effects.random_slopes import random_slope_quantities
from pymsem.effects.standardized import parameter_quantities
from pymsem.results.diagram import (
    FONT_LABEL,
    Diagram,
    _label_font,
    _text_size,
    fill_estimates,
    graph_from_structure,
)

FACTORS = ("ACH", "INT", "REL")
LEVELS = ("within", "between")


@pytest.fixture(scope="module")
def school() -> pd.DataFrame:
    return ms.datasets.load_school()


@pytest.fixture(scope="module")
def diagrams(school: pd.DataFrame) -> dict[int, Diagram]:
    return {i: ms.tutorial.tutorial_model(i, school).diagram() for i in range(1, 5)}


def node_set(dg: Diagram) -> set[tuple[str, str, str]]:
    return set(dg.nodes[["name", "level", "kind"]].itertuples(index=False, name=None))


def edge_set(dg: Diagram) -> set[tuple]:
    e = dg.edges
    return {
        (r["from"], r["to"], r["level"], r["kind"], r["label"], bool(r["random"]), r["slope"])
        for _, r in e.iterrows()
    }


def mediation_edges(random: bool = False) -> set[tuple]:
    """Both levels' a, b, c paths; with ``random``, the within a and b paths carry RSa and RSb."""
    out = set()
    for lvl in LEVELS:
        s = lvl[0]
        rnd = random and lvl == "within"
        out |= {
            ("REL", "INT", lvl, "path", f"a_{s}", rnd, "RSa" if rnd else None),
            ("INT", "ACH", lvl, "path", f"b_{s}", rnd, "RSb" if rnd else None),
            ("REL", "ACH", lvl, "path", f"c_{s}", False, None),
        }
    return out


def factor_nodes_and_loadings() -> tuple[set[tuple[str, str, str]], set[tuple]]:
    nodes, edges = set(), set()
    for lvl in LEVELS:
        for f in FACTORS:
            nodes.add((f, lvl, "latent"))
            for i in range(1, 5):
                nodes.add((f"{f}{i}", lvl, "observed"))
                edges.add((f, f"{f}{i}", lvl, "loading", None, False, None))
    return nodes, edges


def _none(x: object) -> object:
    return None if isinstance(x, float) and math.isnan(x) else x


# ------------------------------------------------------------ graph structure
def test_model1_observed_variables_at_both_levels(diagrams: dict[int, Diagram]) -> None:
    dg = diagrams[1]
    assert node_set(dg) == {(f, lvl, "observed") for f in FACTORS for lvl in LEVELS}
    assert {tuple(_none(v) for v in t) for t in edge_set(dg)} == mediation_edges()


def test_model2_factors_indicators_loadings(diagrams: dict[int, Diagram]) -> None:
    dg = diagrams[2]
    nodes, loadings = factor_nodes_and_loadings()
    assert node_set(dg) == nodes
    assert {tuple(_none(v) for v in t) for t in edge_set(dg)} == loadings | mediation_edges()
    # marker-variable scaling: the first loading of each factor is fixed to 1 and printed as "1"
    fixed = dg.edges[dg.edges["fixed"].notna()]
    assert sorted(fixed["to"]) == sorted(f"{f}1" for f in FACTORS for _ in LEVELS)
    assert set(fixed["text"]) == {"1"}


def test_model3_random_slopes(diagrams: dict[int, Diagram]) -> None:
    dg = diagrams[3]
    nodes, loadings = factor_nodes_and_loadings()
    assert node_set(dg) == nodes | {("RSa", "between", "slope"), ("RSb", "between", "slope")}
    expected = (
        loadings
        | mediation_edges(random=True)
        | {("RSa", "RSb", "between", "covariance", "rCor", False, None)}
    )
    assert {tuple(_none(v) for v in t) for t in edge_set(dg)} == expected


def test_model4_cross_level_moderation(diagrams: dict[int, Diagram]) -> None:
    dg = diagrams[4]
    nodes, loadings = factor_nodes_and_loadings()
    assert node_set(dg) == nodes | {
        ("RSa", "between", "slope"),
        ("RSb", "between", "slope"),
        ("SES", "within", "observed"),
        ("SES", "between", "observed"),
    }
    expected = (
        loadings
        | mediation_edges(random=True)
        | {
            ("RSa", "RSb", "between", "covariance", "rCor", False, None),
            ("SES", "RSa", "between", "slope_moderator", "SESb_a", False, None),
            ("SES", "RSb", "between", "slope_moderator", "SESb_b", False, None),
        }
    )
    for lvl in LEVELS:
        s = lvl[0]
        expected |= {
            ("SES", "INT", lvl, "path", f"ses_int_{s}", False, None),
            ("SES", "ACH", lvl, "path", f"ses_ach_{s}", False, None),
            ("REL", "SES", lvl, "covariance", None, False, None),
        }
    assert {tuple(_none(v) for v in t) for t in edge_set(dg)} == expected


def test_level2_columns_residual_covariances_and_slope_covariances(school: pd.DataFrame) -> None:
    d = school.copy()
    rng = np.random.default_rng(1)
    size = dict(zip(d["schid"].unique(), rng.normal(size=d["schid"].nunique())))
    d["SIZE"] = d["schid"].map(size)
    m = ms.MSEM(d, cluster="schid")
    m.latent("ACH", [f"ACH{i}" for i in range(1, 5)])
    m.latent("INT", [f"INT{i}" for i in range(1, 5)], levels=("within",))
    m.path("ACH", on="INT", level="within", random=ms.RandomSlope("RS1", "b1"))
    m.path("ACH", on="SIZE", level="between", label="g")
    m.covariance("ACH1", "ACH2", level="within", label="e12")
    m.covariance("RS1", "SIZE", level="between", label="rs_size")
    dg = m.diagram()
    nodes = node_set(dg)
    assert ("SIZE", "between", "level2") in nodes and ("RS1", "between", "slope") in nodes
    assert not any(n[0] == "INT" and n[1] == "between" for n in nodes)  # within-only factor
    edges = {tuple(_none(v) for v in t) for t in edge_set(dg)}
    assert ("ACH1", "ACH2", "within", "residual_covariance", "e12", False, None) in edges
    # a covariance of a slope with a level-2 variable is drawn as written, not as a regression
    assert ("RS1", "SIZE", "between", "covariance", "rs_size", False, None) in edges
    assert not any(e[3] == "slope_moderator" for e in edges)


def test_options_and_specification_without_data() -> None:
    m = ms.MSEM(None, cluster="schid")
    for f in ("A", "B"):
        m.latent(f, [f"{f}{i}" for i in range(1, 4)])
    m.path("B", on="A", level="within", label="bw")
    m.path("B", on="A", level="between")
    full = m.diagram()
    assert len(full.nodes) == 2 * (2 + 6)
    structural = m.diagram(indicators=False, labels=False, suffixes=False)
    assert set(structural.nodes["kind"]) == {"latent"} and set(structural.edges["kind"]) == {"path"}
    assert set(structural.edges["text"]) == {""}
    assert set(structural.nodes["display"]) == {"A", "B"}
    assert set(full.nodes.query("kind == 'latent'")["display"]) == {
        "A$_{w}$",
        "B$_{w}$",
        "A$_{b}$",
        "B$_{b}$",
    }


# --------------------------------------------------------------------- layout
def _label_boxes(dg: Diagram) -> list[tuple[str, float, float, float, float]]:
    out = []
    for e in dg.edge_records:
        for xy, text, font in ((e.label_xy, e.text, _label_font(e)), (e.slope_label_xy, e.slope, FONT_LABEL)):
            if xy is not None and text:
                w, h = _text_size(text, font)
                out.append((text, xy[0] - w / 2, xy[1] - h / 2, xy[0] + w / 2, xy[1] + h / 2))
    return out


def _overlap(a: tuple, b: tuple) -> bool:
    return not (a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2])


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_layout_boxes_rows_and_labels(diagrams: dict[int, Diagram], number: int) -> None:
    dg = diagrams[number]
    lay = dg.layout
    assert lay.boxes["between"][1] > lay.boxes["within"][3]  # the between box sits above the within box
    for n in dg.node_records:
        x0, y0, x1, y1 = lay.boxes[n.level]
        assert x0 <= n.x - n.width / 2 and n.x + n.width / 2 <= x1
        assert y0 <= n.y - n.height / 2 and n.y + n.height / 2 <= y1
    by_id = {n.id: n for n in dg.node_records}
    for e in dg.edge_records:
        if e.kind == "loading":
            f, ind = by_id[f"{e.level[0]}:{e.source}"], by_id[f"{e.level[0]}:{e.target}"]
            # indicators below their factors within, above them between (mirrored)
            assert (ind.y < f.y) if e.level == "within" else (ind.y > f.y)
        if e.random:
            slope = by_id[f"b:{e.slope}"]
            assert e.dot_xy is not None and slope.x == pytest.approx(e.dot_xy[0])
    labels = _label_boxes(dg)
    nodes = [(n.name, n.x - n.width / 2, n.y - n.height / 2, n.x + n.width / 2, n.y + n.height / 2)
             for n in dg.node_records]  # fmt: skip
    clashes = [(a[0], b[0]) for i, a in enumerate(labels) for b in labels[i + 1 :] if _overlap(a, b)]
    clashes += [(a[0], b[0]) for a in labels for b in nodes if _overlap(a, b)]
    assert not clashes
    if number >= 3:
        assert {"a_w", "b_w", "RSa", "RSb"} <= {t for t, *_ in labels}


# ------------------------------------------------------------- files and DOT
def test_save_png_svg_pdf(diagrams: dict[int, Diagram], tmp_path: Path) -> None:
    dg = diagrams[4]
    png, svg, pdf = (dg.save(tmp_path / f"m4.{ext}", dpi=80) for ext in ("png", "svg", "pdf"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    text = svg.read_text()
    for name in ("ACH", "INT", "REL", "SES", "ACH1", "REL4", "RSa", "RSb", "a_w", "SESb_a", "rCor"):
        assert name in text, name
    assert "Between level (schid)" in text and "Within level" in text
    assert dg._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"\.svg, \.png or \.pdf"):
        dg.save(tmp_path / "m4.jpg")


def test_draw_on_given_axes(school: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        dg = ms.tutorial.model1(school).diagram(ax=ax)
        assert dg.ax is ax and dg.figure is fig
        assert {t.get_text() for t in ax.texts} >= {"a_w", "b_w", "c_w", "a_b", "Within level"}
    finally:
        plt.close(fig)


def test_dot_text(diagrams: dict[int, Diagram]) -> None:
    dot = diagrams[4].to_dot()
    assert dot.startswith("digraph MSEM {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    assert "subgraph cluster_between" in dot and "subgraph cluster_within" in dot
    assert '"w:REL" [shape=ellipse, label=<REL<SUB>w</SUB>>];' in dot
    assert '"w:SES" [shape=box, label=<SES<SUB>w</SUB>>];' in dot
    assert '"b:ACH1" [shape=box, label=<ACH1>];' in dot
    assert '"b:RSa" [shape=ellipse, label=<RSa>];' in dot
    # the random slope is a point on the arrow, named like the between-level slope
    assert '"w:REL" -> "w:RSa@dot" [arrowhead=none, label=<a_w>];' in dot
    assert '"w:RSa@dot" -> "w:INT";' in dot
    assert "xlabel=<<I>RSa</I>>" in dot
    assert '"b:SES" -> "b:RSa" [label=<SESb_a>];' in dot
    assert '"b:RSa" -> "b:RSb" [dir=both, constraint=false, label=<rCor>];' in dot
    assert '"b:REL1" -> "b:REL" [dir=back, label=<1>];' in dot  # indicators above, between


# ------------------------------------------------------------ fitted models
def _printed(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def test_fit_diagram_prints_posterior_medians(model1_fit: ms.results.fit.MSEMFit) -> None:
    s = model1_fit.summary()
    dg = model1_fit.diagram()
    e = dg.edges
    assert len(e) == 6 and set(e["kind"]) == {"path"}
    for _, r in e.iterrows():
        row = s.loc[(r["level"], r["parameter"])]
        assert r["label"] == row["label"]
        assert r["estimate"] == row["median"]
        assert r["text"] == _printed(row["median"])
        assert r["significant"] == bool(row["lower"] > 0 or row["upper"] < 0)
    # significant estimates are drawn bold, the others not
    drawn = {(t.get_text(), *np.round(t.get_position(), 6)): t.get_fontweight() for t in dg.ax.texts}
    for rec in dg.edge_records:
        assert (drawn[(rec.text, *np.round(rec.label_xy, 6))] == "bold") == rec.significant
    labelled = model1_fit.diagram(labels=True, digits=3).edges.set_index(["level", "parameter"])
    a_w = s.loc[("within", "INT <- REL")]
    assert labelled.loc[("within", "INT <- REL"), "text"] == f"a_w = {a_w['median']:.3f}"


def test_fit_diagram_standardized(model2_fit: ms.results.fit.MSEMFit) -> None:
    s = model2_fit.summary()
    raw = model2_fit.diagram().edges
    free = raw[raw["fixed"].isna()]
    for _, r in free.iterrows():
        assert r["text"] == _printed(s.loc[(r["level"], r["parameter"]), "median"])
    assert set(raw.loc[raw["fixed"].notna(), "text"]) == {"1"}

    std = model2_fit.diagram(standardized=True).edges
    for _, r in std[std["fixed"].isna()].iterrows():
        assert r["text"] == _printed(s.loc[(r["level"], r["parameter"]), "std"])
    # A marker loading's standardized value has no summary row; for an indicator of one factor it
    # is sqrt(1 - the standardized residual variance) (a monotone map, so medians agree).
    for _, r in std[std["fixed"].notna()].iterrows():
        resid = s.loc[(r["level"], f"{r['to']} ~~ {r['to']}"), "std"]
        assert r["estimate"] == pytest.approx(math.sqrt(1 - resid), rel=1e-3)


def test_fit_diagram_random_slopes(model3_fit: ms.results.fit.MSEMFit) -> None:
    s = model3_fit.summary()
    e = model3_fit.diagram(labels=True).edges.set_index(["level", "parameter"])
    a = e.loc[("within", "INT <- REL")]
    assert a["random"] and a["slope"] == "RSa"
    # the random path carries the slope's mean, the same number as the "RSa mean" row
    assert (
        a["estimate"] == s.loc[("within", "INT <- REL"), "median"] == s.loc[("between", "RSa mean"), "median"]
    )
    assert a["text"] == f"a_w = {_printed(a['estimate'])}"
    cov = e.loc[("between", "RSa, RSb covariance")]
    assert cov["text"] == f"rCor = {_printed(s.loc[('between', 'RSa, RSb covariance'), 'median'])}"
    std = model3_fit.diagram(standardized=True).edges.set_index(["level", "parameter"])
    cor = s.loc[("between", "RSa, RSb correlation"), "median"]
    assert std.loc[("between", "RSa, RSb covariance"), "estimate"] == pytest.approx(cor, rel=1e-12)


# ----------------------------- estimates of random-slope models, without sampling
def _fake_summary(structure: ms.compile.structure.ModelStructure, seed: int = 0) -> pd.DataFrame:
    """A summary built the way MSEMFit.summary builds it, from made-up draws (no sampling)."""
    rng = np.random.default_rng(seed)
    vals, data = {}, {}
    for name, g in structure.groups.items():
        x = rng.normal(0.3, 0.1, size=(1, 40, len(g)))
        if g.kind.endswith("sd"):
            x = np.abs(x) + 0.5
        elif g.kind.endswith("cor"):
            x = np.clip(x, -0.9, 0.9)
        vals[name] = x
        data[name] = (("chain", "draw", g.dim), x)
    qs = parameter_quantities(structure, vals) + random_slope_quantities(structure, xr.Dataset(data))
    flat = np.stack([q.draws.ravel() for q in qs])
    lo, med, hi = np.quantile(flat, [0.025, 0.5, 0.975], axis=1)
    return pd.DataFrame(
        {
            "level": [q.level for q in qs],
            "parameter": [q.parameter for q in qs],
            "label": [q.label for q in qs],
            "median": med,
            "lower": lo,
            "upper": hi,
            "std": [np.median(q.std) if q.std is not None else np.nan for q in qs],
        }
    ).set_index(["level", "parameter"])


def test_random_slope_estimates_map_to_summary_rows(school: pd.DataFrame) -> None:
    st = ms.tutorial.model4(school).structure()
    summary = _fake_summary(st)
    nodes, edges = graph_from_structure(st)
    fill_estimates(edges, summary, digits=3)
    by_param = {(e.level, e.parameter): e for e in edges}
    for key in [("between", "RSa <- SES"), ("between", "RSa, RSb covariance"), ("within", "REL ~~ SES")]:
        e = by_param[key]
        assert e.text == f"{summary.loc[key, 'median']:.3f}"
    fill_estimates(edges, summary, standardized=True, labels=True)
    # moderators have no standardized value: the label alone is printed
    assert by_param[("between", "RSa <- SES")].text == "SESb_a"
    cor = summary.loc[("between", "RSa, RSb covariance"), "std"]
    assert by_param[("between", "RSa, RSb covariance")].text == f"rCor = {cor:.2f}"
    dg = Diagram(nodes, edges, cluster="schid")
    free = dg.edges[dg.edges["fixed"].isna()]
    assert not free["text"].eq("").any() and not dg.edges["text"].str.contains("nan").any()
