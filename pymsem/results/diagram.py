"""Path diagrams of two-level models, drawn the way MSEM papers draw them.

The diagram has a *between* box on top and a *within* box below (the Blimp
tutorial's Figures 1-4 and Mplus' two-level figures): latent factors are
ellipses, observed variables rectangles, level-2 columns shaded rectangles.
Within clusters the factors sit in a row above their indicators; the between
box mirrors it (indicators on top), so that the factors of both levels face
each other across the boxes.  Ordinal observed variables are double-bordered
rectangles, and a note under the boxes lists their numbers of categories (their
estimates are on the latent-response, probit, scale).  A random slope is a filled dot on the within
arrow it modifies, named beside the dot, and a between-level ellipse of the
same name, placed right above the dot; cross-level moderators are arrows from
the level-2 variable to that ellipse.

The module has two parts:

* a pure part (:func:`graph_from_structure`, :func:`fill_estimates`,
  :func:`layout`, :func:`to_dot`) that reads a
  :class:`~pymsem.compile.structure.ModelStructure` into :class:`Node` and
  :class:`Edge` records and places them in plain coordinates, and
* a drawing part (:func:`draw`, :class:`Diagram`) that hands the placed
  records to matplotlib.

The layout is regular enough to be computed by hand: rows of nodes, arcs for
regressions that skip over a node, labels placed greedily where they collide
with nothing.  No Graphviz is needed; :meth:`Diagram.to_dot` writes DOT text for
those who want Graphviz's own layout.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pymsem.specification.objects import Level

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from pymsem.compile.structure import ModelStructure
    from pymsem.results.fit import MSEMFit
    from pymsem.specification.model import MSEM

__all__ = [
    "EDGE_KINDS",
    "NODE_KINDS",
    "Diagram",
    "Edge",
    "Node",
    "draw",
    "fill_estimates",
    "fit_diagram",
    "graph_from_structure",
    "layout",
    "model_diagram",
    "ordinal_note",
    "to_dot",
]

NODE_KINDS = ("latent", "observed", "level2", "slope")
EDGE_KINDS = ("loading", "path", "covariance", "residual_covariance", "slope_moderator")

# Geometry, in data units; SCALE inches per unit makes the figure size follow the layout, which
# is what lets the label placement estimate text extents without drawing.
SCALE = 0.42
IND_H = 0.52  # indicator rectangle height
IND_GAP = 0.28  # horizontal space between indicator rectangles
FAN = 2.3  # vertical distance between the factor row and the indicator row
LATENT_H = 0.82
OBSERVED_H = 0.62
SLOPE_H = 0.72
ARROW_ROOM = 2.7  # room left in a row slot for the arrow to the next node (label + dot)
SLOT_GAP = 0.4
PATH_RAD = 0.25  # curvature of a regression arc that skips over nodes of its row
COV_RAD = 0.4  # curvature of covariance arcs: more than PATH_RAD, so both can join one pair
RESID_RAD = 0.6  # neighbouring indicators are close: a deeper arc stays visible
LABEL_GAP = 0.1  # between a line and the label beside it
SLOPE_GAP = 0.9  # between a row's farthest arc and the next row out (covariates, random slopes)
BOX_PAD = 0.35
BOX_GAP = 0.55
TITLE_H = 0.55
FONT_NODE = 11.0
FONT_LABEL = 9.0
FONT_LOADING = 7.5
FONT_TITLE = 10.5
DOT_R = 0.09


# ----------------------------------------------------------------- records
@dataclass
class Node:
    """A variable drawn in one level's box.

    ``kind`` is ``"latent"`` (a factor), ``"observed"`` (an indicator, or an observed level-1
    variable used in regressions: at the between level its latent cluster mean), ``"level2"``
    (a column constant within clusters) or ``"slope"`` (a random slope, between level only).
    ``categories`` is the number of categories of an ordinal observed variable (at the between
    level: of the column whose latent cluster mean the node is), else None.
    """

    name: str
    level: str
    kind: str
    display: str = ""
    row: str = "structural"  # "structural", "indicator" or "slope"
    categories: int | None = None
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0

    @property
    def id(self) -> str:
        """Unique key: the level's initial and the name (``"w:INT"``)."""
        return f"{self.level[0]}:{self.name}"


@dataclass
class Edge:
    """An arrow of the diagram: a loading, regression, covariance or cross-level moderation.

    ``source`` and ``target`` are node names at ``level`` (the predictor and the outcome of a
    regression, the factor and the indicator of a loading).  A within regression whose slope
    varies over clusters has ``random=True`` and the slope's name in ``slope``.  ``parameter``
    names the row of :meth:`~pymsem.results.fit.MSEMFit.summary` that holds its estimate;
    ``fixed`` holds the value of a fixed parameter (a marker loading).
    """

    source: str
    target: str
    level: str
    kind: str
    label: str | None = None
    random: bool = False
    slope: str | None = None
    parameter: str | None = None
    fixed: float | None = None
    estimate: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    significant: bool = False
    text: str = ""
    # geometry (filled by layout)
    rad: float = 0.0
    label_xy: tuple[float, float] | None = None
    dot_xy: tuple[float, float] | None = None
    slope_label_xy: tuple[float, float] | None = None

    @property
    def directed(self) -> bool:
        return self.kind in ("loading", "path", "slope_moderator")


# ----------------------------------------------------------- graph building
def _display(name: str, level: str, suffix: bool) -> str:
    # "$" would start mathtext; names are column names, so escape it rather than refuse them.
    text = name.replace("$", r"\$")
    return f"{text}$_{{{level[0]}}}$" if suffix else text


def _loadings(structure: ModelStructure, level: Level) -> list[tuple[int, int, float | None, int | None]]:
    """A level's loadings as (indicator, factor, fixed value, free-parameter index).

    Sorted by factor, then in the order the factor lists its indicators (the user's order,
    not the data's).
    """
    ls = structure.level(level)
    single = set(ls.single_indicator)
    out: list[tuple[int, int, float | None, int | None]] = []
    for r, c in zip(*np.nonzero(ls.lambda_fixed)):
        if ls.latent[c] not in single:
            out.append((int(r), int(c), float(ls.lambda_fixed[r, c]), None))
    for r, c, k in ls.lambda_free:
        out.append((int(r), int(c), None, int(k)))

    def key(item: tuple[int, int, float | None, int | None]) -> tuple[int, int]:
        r, c = item[0], item[1]
        f = structure.factors.get(ls.latent[c])
        name = ls.observed[r]
        return c, f.indicators.index(name) if f is not None and name in f.indicators else r

    return sorted(out, key=key)


def graph_from_structure(
    structure: ModelStructure, *, indicators: bool = True, labels: bool = True, suffixes: bool = True
) -> tuple[list[Node], list[Edge]]:
    """Read the lowered model into diagram nodes and edges (no geometry yet).

    Parameters
    ----------
    structure
        The lowered model (``model.structure()``).
    indicators
        Draw the indicators of the factors and their loadings; without them the diagram shows
        the structural model only.
    labels
        Print the parameters' labels (``a_w``) on their arrows, and ``1`` on marker loadings.
    suffixes
        Write the level as a subscript of factors and split observed variables (``INT_w``,
        ``INT_b``, as the tutorial names them); indicators, level-2 columns and slopes keep
        their names.

    Returns
    -------
    tuple of list of Node and list of Edge
    """
    nodes: list[Node] = []
    edges: list[Edge] = []
    level2 = set(structure.level2)

    def group_label(kind: str, level: Level, k: int) -> str | None:
        g = structure.groups.get(f"{kind}_{level.short}")
        return g.labels[k] if g is not None else None

    for level in (Level.WITHIN, Level.BETWEEN):
        ls = structure.level(level)
        lvl = str(level)
        single = set(ls.single_indicator)
        for v in ls.latent:
            if v in single:
                kind = "level2" if v in level2 else "observed"
                nodes.append(Node(v, lvl, kind, _display(v, lvl, suffixes and kind == "observed")))
            else:
                nodes.append(Node(v, lvl, "latent", _display(v, lvl, suffixes)))
        if indicators:
            seen: set[str] = set()
            for r, c, fixed, k in _loadings(structure, level):
                ind, factor = ls.observed[r], ls.latent[c]
                lab = group_label("loading", level, k) if k is not None else None
                if ind not in seen:
                    seen.add(ind)
                    kind = "level2" if ind in level2 else "observed"
                    nodes.append(Node(ind, lvl, kind, _display(ind, lvl, False), row="indicator"))
                edges.append(
                    Edge(factor, ind, lvl, "loading", label=lab, parameter=f"{ind} by {factor}", fixed=fixed)
                )
            for i, j, k in ls.resid_cor:
                a, b = ls.observed[i], ls.observed[j]
                edges.append(
                    Edge(a, b, lvl, "residual_covariance", group_label("resid_cor", level, int(k)),
                         parameter=f"{a} ~~ {b}")
                )  # fmt: skip
        slope_of = {(int(r), int(c)): structure.random_slopes[int(s)].name for r, c, s in ls.beta_random}
        for r, c, k in ls.beta_free:
            out, pred = ls.latent[r], ls.latent[c]
            slope = slope_of.get((int(r), int(c)))
            edges.append(
                Edge(pred, out, lvl, "path", group_label("path", level, int(k)), random=slope is not None,
                     slope=slope, parameter=f"{out} <- {pred}")
            )  # fmt: skip
        for i, j, k in ls.lv_cor:
            a, b = ls.latent[i], ls.latent[j]
            edges.append(
                Edge(a, b, lvl, "covariance", group_label("lv_cor", level, int(k)), parameter=f"{a} ~~ {b}")
            )

    rs = structure.random_slopes
    between = structure.between
    for r in rs:
        nodes.append(Node(r.name, "between", "slope", _display(r.name, "between", False), row="slope"))
    for r in rs:
        # A covariance with a between variable is estimated as a regression (see lowering); draw
        # what the user wrote.
        as_covariance = {lat for lat, _ in r.covariances}
        for lat, k in r.moderators:
            if lat not in as_covariance:
                var = between.latent[lat]
                edges.append(
                    Edge(var, r.name, "between", "slope_moderator", group_label("path", Level.BETWEEN, k),
                         parameter=f"{r.name} <- {var}")
                )  # fmt: skip
        for lat, lab in r.covariances:
            var = between.latent[lat]
            edges.append(
                Edge(r.name, var, "between", "covariance", lab or None, parameter=f"{r.name} ~~ {var}")
            )
        for lat, k in r.predicts:
            var = between.latent[lat]
            edges.append(
                Edge(r.name, var, "between", "path", group_label("path", Level.BETWEEN, k),
                     parameter=f"{var} <- {r.name}")
            )  # fmt: skip
        for lat, k in r.disturbance_cors:
            var = between.latent[lat]
            edges.append(
                Edge(r.name, var, "between", "covariance", group_label("lv_cor", Level.BETWEEN, k),
                     parameter=f"{r.name} ~~ {var}")
            )  # fmt: skip
    for i, a in enumerate(rs):
        for b in rs[i + 1 :]:
            # The slopes always covary (LKJ); a covariance statement only labels the pair.
            edges.append(
                Edge(a.name, b.name, "between", "covariance", a.cor_labels.get(b.name),
                     parameter=f"{a.name}, {b.name} covariance")
            )  # fmt: skip
    for e in edges:
        e.text = _spec_text(e) if labels else ""
    for n in nodes:
        if n.kind == "observed" and n.name in structure.ordinal:
            n.categories = structure.ordinal[n.name]
    return nodes, edges


def ordinal_note(nodes: list[Node]) -> str:
    """The legend line on ordinal variables (``""`` when the diagram has none)."""
    by_k: dict[int, list[str]] = {}
    for n in nodes:
        if n.categories is not None and n.name not in by_k.setdefault(n.categories, []):
            by_k[n.categories].append(n.name)
    if not by_k:
        return ""
    items = "; ".join(f"{k} categories: {', '.join(names)}" for k, names in by_k.items())
    return f"Double box: ordinal ({items}), on the latent-response (probit) scale"


def _spec_text(e: Edge) -> str:
    if e.fixed is not None:
        return f"{e.fixed:g}"
    return e.label or ""


def fill_estimates(
    edges: list[Edge],
    summary: pd.DataFrame,
    *,
    standardized: bool = False,
    digits: int = 2,
    labels: bool = False,
    fixed_std: dict[tuple[str, str], float] | None = None,
) -> None:
    """Put posterior medians (or standardized estimates) and their printed text on the edges.

    Parameters
    ----------
    edges
        Edges from :func:`graph_from_structure`; changed in place.
    summary
        ``fit.summary()``: indexed by (level, parameter), with ``median``, ``lower``, ``upper``
        and ``std`` columns.
    standardized
        Print the level-specific standardized estimate (``std``: correlations for covariances).
        Cross-level moderators have none and print no number then.
    digits
        Decimals.
    labels
        Print ``label = estimate`` where the parameter has a label.
    fixed_std
        Standardized values of fixed loadings, by (level, parameter).
    """
    for e in edges:
        if e.fixed is not None:
            e.lower = e.upper = e.fixed
            e.significant = False
            std = (fixed_std or {}).get((e.level, e.parameter or ""), math.nan)
            e.estimate = std if standardized else e.fixed
            if not standardized:
                number = f"{e.fixed:g}"
            else:
                number = "" if math.isnan(e.estimate) else f"{e.estimate:.{digits}f}"
        else:
            key = (e.level, e.parameter)
            if key not in summary.index:
                raise KeyError(f"No summary row for {e.kind} {e.source} -> {e.target} ({e.level}): {key}.")
            row = summary.loc[key]
            e.lower, e.upper = float(row["lower"]), float(row["upper"])
            # Bold for an interval that excludes zero, as fit.table() stars it.
            e.significant = bool(e.lower > 0 or e.upper < 0)
            e.estimate = float(row["std"]) if standardized else float(row["median"])
            number = "" if math.isnan(e.estimate) else f"{e.estimate:.{digits}f}"
        if labels and e.label and number:
            e.text = f"{e.label} = {number}"
        elif labels and e.label:
            e.text = e.label
        else:
            e.text = number


# ------------------------------------------------------------------ layout
def _text_size(text: str, fontsize: float, scale: float = SCALE) -> tuple[float, float]:
    """Approximate extent of a text in data units (average glyph ~0.6 em; subscripts ~0.4 em)."""
    if not text:
        return 0.0, 0.0
    plain, sub = text, 0
    if "$_{" in text:
        plain, rest = text.split("$_{", 1)
        sub = len(rest.split("}$", 1)[0])
    em = fontsize / 72.0 / scale
    return (len(plain) * 0.6 + sub * 0.45) * em, 1.3 * em


def _node_size(node: Node) -> tuple[float, float]:
    w, _ = _text_size(node.display, FONT_NODE)
    if node.kind == "latent":
        return max(1.35, w + 0.75), LATENT_H
    if node.kind == "slope":
        return max(1.05, w + 0.75), SLOPE_H
    if node.row == "indicator":
        return max(0.85, w + 0.25), IND_H
    return max(1.1, w + 0.4), OBSERVED_H


def _order_row(
    names: list[str],
    paths: list[tuple[str, str, bool]],
    covs: list[tuple[str, str]],
    reference: dict[str, int],
) -> list[str]:
    """Predictors left of outcomes (by regression depth); ties ordered to keep arrows short.

    Among orders of nodes of equal depth, pick the one with the smallest total span of arrows
    (random-slope arrows count double, so their dots sit on short, straight arrows); the
    reference order wins ties, so the between row repeats the within row's order.
    """
    preds: dict[str, set[str]] = {v: set() for v in names}
    for src, dst, _ in paths:
        preds[dst].add(src)
    depth: dict[str, int] = {}

    def d(v: str) -> int:
        if v not in depth:
            depth[v] = 0  # acyclic by validation; the guard only stops a runaway recursion
            depth[v] = max((d(p) + 1 for p in preds[v]), default=0)
        return depth[v]

    default = sorted(names, key=lambda v: (d(v), reference.get(v, len(reference) + names.index(v))))
    groups = [list(g) for _, g in itertools.groupby(default, key=d)]
    if math.prod(math.factorial(len(g)) for g in groups) > 5040:
        return default
    weighted = [(s, t, 2.0 if rnd else 1.0) for s, t, rnd in paths] + [(a, b, 1.0) for a, b in covs]

    def cost(order: list[str]) -> float:
        pos = {v: i for i, v in enumerate(order)}
        return sum(w * abs(pos[a] - pos[b]) for a, b, w in weighted)

    best, best_cost = default, cost(default)
    for combo in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [v for g in combo for v in g]
        c = cost(order)
        if c < best_cost - 1e-9:
            best, best_cost = order, c
    return best


def _bezier(a: tuple[float, float], b: tuple[float, float], rad: float, t: float) -> np.ndarray:
    """Point at ``t`` on matplotlib's ``arc3`` curve from ``a`` to ``b`` (a quadratic Bezier)."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    dx, dy = b_ - a_
    c = (a_ + b_) / 2 + rad * np.array([dy, -dx])
    return (1 - t) ** 2 * a_ + 2 * t * (1 - t) * c + t**2 * b_


def _bulge(rad: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """How far the middle of an ``arc3`` curve lies from the straight line."""
    return 0.5 * abs(rad) * math.dist(a, b)


@dataclass
class Layout:
    """Where everything goes: box rectangles, and the extent of the drawing, in data units."""

    #: level -> (x0, y0, x1, y1)
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)
    titles: dict[str, str] = field(default_factory=dict)
    #: The legend line under the boxes (ordinal variables), and where it goes.
    note: str = ""
    note_xy: tuple[float, float] | None = None


def _label_font(e: Edge) -> float:
    return FONT_LOADING if e.kind in ("loading", "residual_covariance") else FONT_LABEL


def layout(nodes: list[Node], edges: list[Edge], cluster: str | None = None) -> Layout:
    """Place nodes, arcs, dots and labels (fills the geometry fields in place).

    Each level is laid out around its *row* of structural variables (factors, split observed
    variables) at ``y = 0``; then the between level is shifted above the within level.  The
    indicators sit on the side of the row away from the other box; toward the other box come
    the arcs of regressions that skip a node, then the *outer* row of exogenous observed
    covariates (from there, arrows reach every factor without crossing one), and, in the
    between box, the random slopes, right above the dots on their within arrows.

    Parameters
    ----------
    nodes, edges
        From :func:`graph_from_structure` (and :func:`fill_estimates`).
    cluster
        Name of the cluster column, for the between box's title.
    """
    for n in nodes:
        n.width, n.height = _node_size(n)
    by_id = {n.id: n for n in nodes}
    out = Layout()
    spans: dict[str, tuple[float, float, float, float]] = {}
    reference: dict[str, int] = {}
    for lvl in ("within", "between"):
        reference = _layout_level(nodes, edges, lvl, by_id, reference)
        _place_labels(nodes, edges, lvl, by_id)
        spans[lvl] = _extent(nodes, edges, lvl, by_id)
    present = [lvl for lvl in ("within", "between") if any(n.level == lvl for n in nodes)] or ["within"]

    # Boxes: a common width; the between box above the within box; a level with nothing drawn
    # (e.g. a model with factors at one level only and no split variables) gets no box.
    x0 = min(spans[lvl][0] for lvl in present) - BOX_PAD
    x1 = max(spans[lvl][1] for lvl in present) + BOX_PAD
    wy0, wy1 = spans["within"][2] - BOX_PAD, spans["within"][3] + BOX_PAD + TITLE_H
    by0, by1 = spans["between"][2] - BOX_PAD, spans["between"][3] + BOX_PAD + TITLE_H
    if "within" not in present:
        wy0 = wy1 = by0 - BOX_GAP
    shift = wy1 + BOX_GAP - by0
    for n in nodes:
        if n.level == "between":
            n.y += shift
    for e in edges:
        if e.level == "between":
            for attr in ("label_xy", "dot_xy", "slope_label_xy"):
                xy = getattr(e, attr)
                if xy is not None:
                    setattr(e, attr, (xy[0], xy[1] + shift))
    boxes = {"within": (x0, wy0, x1, wy1), "between": (x0, by0 + shift, x1, by1 + shift)}
    out.boxes = {lvl: boxes[lvl] for lvl in present}
    out.titles = {
        "within": "Within level",
        "between": f"Between level ({cluster})" if cluster else "Between level",
    }
    out.xlim = (x0 - 0.1, x1 + 0.1)
    out.ylim = (out.boxes[present[0]][1] - 0.1, out.boxes[present[-1]][3] + 0.1)
    out.note = ordinal_note(nodes)
    if out.note:
        w, h = _text_size(out.note, FONT_LABEL)
        out.note_xy = (x0, out.ylim[0] - 0.1 - h / 2)
        # A note wider than the boxes widens the figure rather than being cut off.
        out.xlim = (out.xlim[0], max(out.xlim[1], x0 + w + 0.1))
        out.ylim = (out.ylim[0] - h - 0.3, out.ylim[1])
    return out


def _layout_level(
    nodes: list[Node], edges: list[Edge], lvl: str, by_id: dict[str, Node], reference: dict[str, int]
) -> dict[str, int]:
    """Place one level's nodes in local coordinates (row at y = 0); returns the row order."""
    o = 1.0 if lvl == "within" else -1.0  # toward the other box: up within, down between
    p = lvl[0]
    structural = [n for n in nodes if n.level == lvl and n.row == "structural"]
    mine = [e for e in edges if e.level == lvl]
    inds: dict[str, list[Node]] = {n.name: [] for n in structural}
    claimed: set[str] = set()
    for e in mine:
        if e.kind == "loading" and e.target not in claimed:
            claimed.add(e.target)
            inds[e.source].append(by_id[f"{p}:{e.target}"])
    targets = {e.target for e in mine if e.kind == "path"}
    # Exogenous observed covariates (SES in Model 4) move to the outer row when factors remain
    # in the main row; a model of observed variables only (Model 1) keeps one row.
    outer = [n for n in structural if n.kind != "latent" and n.name not in targets]
    if not any(n.kind == "latent" for n in structural if n not in outer):
        outer = []
    row = [n for n in structural if n not in outer]
    names = [n.name for n in row]
    row_edges = [e for e in mine if e.source in names and e.target in names]
    order = _order_row(
        names,
        [(e.source, e.target, e.random) for e in row_edges if e.kind == "path"],
        [(e.source, e.target) for e in row_edges if e.kind == "covariance"],
        reference,
    )
    spacing = max([m.width for ms in inds.values() for m in ms], default=0.0) + IND_GAP
    x = 0.0
    for v in order:
        n = by_id[f"{p}:{v}"]
        slot = max(len(inds[v]) * spacing, n.width + ARROW_ROOM)
        n.x, n.y = x + slot / 2, 0.0
        for i, m in enumerate(inds[v]):
            m.x, m.y = n.x + (i - (len(inds[v]) - 1) / 2) * spacing, -o * FAN
        x += slot + SLOT_GAP
    pos = {v: i for i, v in enumerate(order)}
    label_h = _text_size("Ag", FONT_LABEL)[1]
    reach = LATENT_H / 2
    for e in row_edges:
        a, b = by_id[f"{p}:{e.source}"], by_id[f"{p}:{e.target}"]
        if e.kind == "covariance" or abs(pos[e.source] - pos[e.target]) > 1:
            # Arcs for regressions that skip over a node (a straight line would run through it)
            # and for covariances; arc3 bends toward rad * (dy, -dx): the sign picks the side.
            e.rad = -o * math.copysign(COV_RAD if e.kind == "covariance" else PATH_RAD, b.x - a.x)
        reach = max(reach, _bulge(e.rad, (a.x, a.y), (b.x, b.y)) + LABEL_GAP + label_h)
    for e in mine:
        if e.kind == "residual_covariance":
            a, b = by_id[f"{p}:{e.source}"], by_id[f"{p}:{e.target}"]
            e.rad = o * math.copysign(RESID_RAD, b.x - a.x)  # away from the factors
    y_next = reach + SLOPE_GAP  # distance from the row of the next row out
    slopes = [n for n in nodes if n.level == lvl and n.row == "slope"]
    for s in slopes:
        # Right above the dot on its within arrow (the within level is laid out first).
        e = next((e for e in edges if e.slope == s.name and e.level == "within"), None)
        s.x = e.dot_xy[0] if e is not None and e.dot_xy is not None else 0.0
    _spread(slopes)
    if outer:
        # Exogenous covariates without indicators: at the mean x of what they point to.
        h = max(n.height for n in outer)
        for n in outer:
            nb = [by_id[f"{p}:{e.target if e.source == n.name else e.source}"] for e in mine
                  if n.name in (e.source, e.target) and e.kind != "loading"]  # fmt: skip
            nb = [m for m in nb if m not in outer]
            n.x = float(np.mean([m.x for m in nb])) if nb else 0.0
            n.y = o * (y_next + h / 2)
        _spread(outer, gap=1.6)
        reach_outer = h / 2
        for e in mine:
            if e.kind == "covariance" and {e.source, e.target} <= {n.name for n in outer}:
                a, b = by_id[f"{p}:{e.source}"], by_id[f"{p}:{e.target}"]
                e.rad = -o * math.copysign(COV_RAD, b.x - a.x)
                reach_outer = max(reach_outer, _bulge(e.rad, (a.x, a.y), (b.x, b.y)) + LABEL_GAP + label_h)
        y_next += h / 2 + reach_outer + SLOPE_GAP
    for s in slopes:
        s.y = o * (y_next + SLOPE_H / 2)
    # Edges off the row are straight, except covariances between nodes of one outer row.
    for e in mine:
        if e in row_edges or e.kind in ("loading", "residual_covariance"):
            continue
        a, b = by_id[f"{p}:{e.source}"], by_id[f"{p}:{e.target}"]
        if e.kind == "covariance" and abs(a.y - b.y) < 1e-9 and e.rad == 0.0:
            e.rad = -o * math.copysign(COV_RAD, b.x - a.x)
    return {v: i for i, v in enumerate(order)}


def _spread(row: list[Node], gap: float = 0.8) -> None:
    """Push nodes of one row apart (keeping their order) so that none overlap."""
    placed: list[Node] = []
    for n in sorted(row, key=lambda n: n.x):
        if placed:
            last = placed[-1]
            n.x = max(n.x, last.x + (last.width + n.width) / 2 + gap)
        placed.append(n)


def _endpoints(e: Edge, by_id: dict[str, Node]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where an edge's curve starts and ends: node centres (the drawing clips it at the outlines).

    Residual covariances join neighbouring indicators whose outlines almost touch, so they run
    from the middle of the indicators' outer sides instead.
    """
    p = e.level[0]
    a, b = by_id[f"{p}:{e.source}"], by_id[f"{p}:{e.target}"]
    if e.kind == "residual_covariance":
        o = 1.0 if e.level == "within" else -1.0
        return (a.x, a.y - o * a.height / 2), (b.x, b.y - o * b.height / 2)
    return (a.x, a.y), (b.x, b.y)


def _in_row(e: Edge, by_id: dict[str, Node]) -> bool:
    """Whether both ends lie in one horizontal row (labels go beside such arrows, not on them)."""
    a, b = _endpoints(e, by_id)
    return abs(a[1] - b[1]) < 1e-9


def _place_labels(nodes: list[Node], edges: list[Edge], lvl: str, by_id: dict[str, Node]) -> None:
    """Greedy placement: each label takes the first candidate spot that collides with nothing.

    Obstacles are the nodes, the labels already placed and, where possible, the lines of the
    other arrows (sampled points); a label that fits nowhere takes its first choice.
    """
    o = 1.0 if lvl == "within" else -1.0
    mine = [e for e in edges if e.level == lvl]
    boxes: list[tuple[float, float, float, float]] = [
        (n.x - n.width / 2, n.y - n.height / 2, n.x + n.width / 2, n.y + n.height / 2)
        for n in nodes
        if n.level == lvl
    ]
    for e in mine:
        if e.random:
            a, b = _endpoints(e, by_id)
            e.dot_xy = tuple(float(v) for v in _bezier(a, b, e.rad, 0.5))
            boxes.append((e.dot_xy[0] - DOT_R, e.dot_xy[1] - DOT_R, e.dot_xy[0] + DOT_R, e.dot_xy[1] + DOT_R))
    line_pts: list[np.ndarray] = []
    line_owner: list[np.ndarray] = []
    for k, e in enumerate(mine):
        a, b = _endpoints(e, by_id)
        n_pts = max(4, int(math.dist(a, b) / 0.2))
        pts = np.array([_bezier(a, b, e.rad, t) for t in np.linspace(0.0, 1.0, n_pts)])
        line_pts.append(pts)
        line_owner.append(np.full(len(pts), k))
    lines = np.concatenate(line_pts) if line_pts else np.zeros((0, 2))
    owner = np.concatenate(line_owner) if line_owner else np.zeros(0, dtype=int)

    def free(c: np.ndarray, w: float, h: float, k: int, use_lines: bool) -> bool:
        x0, y0, x1, y1 = c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2
        pad = 0.04
        if boxes:
            bx = np.asarray(boxes)
            hit = ~(
                (x1 + pad <= bx[:, 0])
                | (bx[:, 2] + pad <= x0)
                | (y1 + pad <= bx[:, 1])
                | (bx[:, 3] + pad <= y0)
            )
            if hit.any():
                return False
        if use_lines and len(lines):
            inside = (
                (lines[:, 0] > x0 - pad)
                & (lines[:, 0] < x1 + pad)
                & (lines[:, 1] > y0 - pad)
                & (lines[:, 1] < y1 + pad)
            )
            if (inside & (owner != k)).any():
                return False
        return True

    def place(text: str, font: float, candidates: list[np.ndarray], k: int) -> tuple[float, float]:
        w, h = _text_size(text, font)
        chosen = candidates[0]
        for use_lines in (True, False):
            spot = next((c for c in candidates if free(c, w, h, k, use_lines)), None)
            if spot is not None:
                chosen = spot
                break
        boxes.append((chosen[0] - w / 2, chosen[1] - h / 2, chosen[0] + w / 2, chosen[1] + h / 2))
        return float(chosen[0]), float(chosen[1])

    priority = {"path": 0, "covariance": 1, "slope_moderator": 2, "residual_covariance": 3, "loading": 4}
    for k, e in sorted(enumerate(mine), key=lambda ke: priority[ke[1].kind]):
        a, b = _endpoints(e, by_id)
        if e.random and e.slope and e.dot_xy is not None:
            w, h = _text_size(e.slope, FONT_LABEL)
            dot = np.asarray(e.dot_xy)
            inward = np.array([0.0, -o * (DOT_R + LABEL_GAP + h / 2)])
            side = np.array([DOT_R + LABEL_GAP + w / 2, 0.0])
            cands = [dot + inward, dot - inward, dot + side + inward / 2, dot - side + inward / 2]
            e.slope_label_xy = place(e.slope, FONT_LABEL, cands, k)
        if not e.text:
            continue
        font = _label_font(e)
        w, h = _text_size(e.text, font)
        if e.kind == "loading":
            cands = [_bezier(a, b, 0.0, t) for t in (0.6, 0.7, 0.5, 0.78, 0.42)]
        elif not _in_row(e, by_id):
            cands = [_bezier(a, b, e.rad, t) for t in (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)]
        else:
            # Beside the line, on the outer side of arcs (away from the nodes they skip).
            if e.rad != 0.0:
                n_ = _bezier(a, b, e.rad, 0.5) - (np.asarray(a) + np.asarray(b)) / 2
                n_ = n_ / (np.linalg.norm(n_) or 1.0)
            else:
                n_ = np.array([0.0, -o if e.kind == "residual_covariance" else o])
            # Clear of the slope's dot, so that the label can sit right above it.
            off = LABEL_GAP + (DOT_R + 0.05 if e.random else 0.0) + (abs(n_[0]) * w + abs(n_[1]) * h) / 2
            ts = (0.5, 0.38, 0.62, 0.28, 0.72)
            cands = [_bezier(a, b, e.rad, t) + n_ * off for t in ts]
            if not e.random:
                cands += [_bezier(a, b, e.rad, t) - n_ * off for t in ts[:3]]
            cands += [_bezier(a, b, e.rad, t) for t in (0.3, 0.7)]
        e.label_xy = place(e.text, font, cands, k)


def _extent(
    nodes: list[Node], edges: list[Edge], lvl: str, by_id: dict[str, Node]
) -> tuple[float, float, float, float]:
    """Bounding box (x0, x1, y0, y1) of a level's nodes, arcs and labels."""
    xs: list[float] = []
    ys: list[float] = []
    for n in nodes:
        if n.level == lvl:
            xs += [n.x - n.width / 2, n.x + n.width / 2]
            ys += [n.y - n.height / 2, n.y + n.height / 2]
    for e in edges:
        if e.level != lvl:
            continue
        if e.rad != 0.0:
            a, b = _endpoints(e, by_id)
            for t in (0.25, 0.5, 0.75):
                p = _bezier(a, b, e.rad, t)
                xs.append(p[0])
                ys.append(p[1])
        for xy, text in ((e.label_xy, e.text), (e.slope_label_xy, e.slope or "")):
            if xy is not None:
                w, h = _text_size(text, _label_font(e) if text == e.text else FONT_LABEL)
                xs += [xy[0] - w / 2, xy[0] + w / 2]
                ys += [xy[1] - h / 2, xy[1] + h / 2]
    if not xs:
        return 0.0, 1.0, 0.0, 1.0
    return min(xs), max(xs), min(ys), max(ys)


# -------------------------------------------------------------------- DOT
def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _dot_label(node: Node, suffixes: bool) -> str:
    name = _html(node.name)
    if suffixes and node.display.endswith("$"):
        return f"<{name}<SUB>{node.level[0]}</SUB>>"
    return f"<{name}>"


def to_dot(nodes: list[Node], edges: list[Edge], title: str | None = None, cluster: str | None = None) -> str:
    """Graphviz DOT text of the diagram: a cluster per level, random slopes as points on arrows.

    Parameters
    ----------
    nodes, edges
        From :func:`graph_from_structure`.
    title
        Graph label.
    cluster
        Name of the cluster column, for the between cluster's title.

    Returns
    -------
    str
        Render with ``dot -Tpng model.dot -o model.png``.
    """
    suffixes = any(n.display.endswith("$") for n in nodes)
    shape = {"latent": "ellipse", "slope": "ellipse", "observed": "box", "level2": "box"}
    lines = [
        "digraph MSEM {",
        "  graph [newrank=true, rankdir=TB, nodesep=0.3, ranksep=0.6, fontname=Helvetica];",
    ]
    lines.append("  node [fontname=Helvetica];")
    lines.append("  edge [fontname=Helvetica, fontsize=10, arrowsize=0.7];")
    if title:
        lines.append(f"  label=<{_html(title)}>; labelloc=t;")
    between_title = f"Between level ({cluster})" if cluster else "Between level"
    for lvl, heading in (("between", between_title), ("within", "Within level")):
        p = lvl[0]
        lines.append(f"  subgraph cluster_{lvl} {{")
        lines.append(f'    label=<{_html(heading)}>; style="rounded"; color=gray40; labeljust=l;')
        row: list[str] = []
        for n in nodes:
            if n.level != lvl:
                continue
            style = ', style=filled, fillcolor="#e6e6e6"' if n.kind == "level2" else ""
            if n.categories is not None:
                style += f', peripheries=2, tooltip="ordinal ({n.categories} categories)"'
            lines.append(
                f"    {_dot_id(n.id)} [shape={shape[n.kind]}, label={_dot_label(n, suffixes)}{style}];"
            )
            if n.row == "structural":
                row.append(_dot_id(n.id))
        for e in edges:
            if e.level == lvl and e.random:
                pid = _dot_id(f"{p}:{e.slope}@dot")
                lines.append(f"    {pid} [shape=point, width=0.09, xlabel=<<I>{_html(e.slope or '')}</I>>];")
                row.append(pid)
        if row:
            lines.append(f"    {{rank=same; {'; '.join(row)};}}")
        lines.append("  }")
    for e in edges:
        p = e.level[0]
        src, dst = _dot_id(f"{p}:{e.source}"), _dot_id(f"{p}:{e.target}")
        text = _html(e.text)
        label = (
            f", label=<<B>{text}</B>>" if text and e.significant else (f", label=<{text}>" if text else "")
        )
        if e.random:
            pid = _dot_id(f"{p}:{e.slope}@dot")
            lines.append(f"  {src} -> {pid} [arrowhead=none{label}];")
            lines.append(f"  {pid} -> {dst};")
        elif e.kind == "loading" and e.level == "between":
            # Indicators above their factors in the between box, as in the drawing.
            lines.append(f"  {dst} -> {src} [dir=back{label}];")
        elif e.directed:
            lines.append(f"  {src} -> {dst}" + (f" [{label.lstrip(', ')}];" if label else ";"))
        else:
            lines.append(f"  {src} -> {dst} [dir=both, constraint=false{label}];")
    # Invisible edges keep random slopes below the between row, and the between cluster above
    # the within cluster.
    row_b = [n for n in nodes if n.level == "between" and n.row == "structural"]
    moderated = {e.target for e in edges if e.kind == "slope_moderator"}
    lowest = []
    for n in nodes:
        if n.kind == "slope":
            lowest.append(n)
            if row_b and n.name not in moderated:
                lines.append(f"  {_dot_id(row_b[0].id)} -> {_dot_id(n.id)} [style=invis];")
    lowest = lowest or row_b
    row_w = [n for n in nodes if n.level == "within" and n.row == "structural"]
    if lowest and row_w:
        lines.append(f"  {_dot_id(lowest[0].id)} -> {_dot_id(row_w[0].id)} [style=invis];")
    note = ordinal_note(nodes)
    if note:
        lines.append(f'  "legend:ordinal" [shape=plaintext, fontsize=10, label=<{_html(note)}>];')
        if row_w:  # below the within box
            lines.append(f'  {_dot_id(row_w[0].id)} -> "legend:ordinal" [style=invis];')
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- drawing
def draw(nodes: list[Node], edges: list[Edge], lay: Layout, ax: Axes, title: str | None = None) -> Axes:
    """Draw placed nodes and edges on ``ax`` (matplotlib)."""
    from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle

    fills = {"within": "#f7f7f7", "between": "#eef3f8"}
    for lvl, (x0, y0, x1, y1) in lay.boxes.items():
        ax.add_patch(
            FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.25",
                           facecolor=fills[lvl], edgecolor="0.35", lw=1.0, zorder=0)
        )  # fmt: skip
        ax.text(x0 + 0.25, y1 - TITLE_H / 2 - 0.05, lay.titles[lvl], ha="left", va="center",
                fontsize=FONT_TITLE, fontweight="bold", color="0.25", zorder=1)  # fmt: skip
    patches = {}
    by_id = {n.id: n for n in nodes}
    for n in nodes:
        if n.kind in ("latent", "slope"):
            p = Ellipse((n.x, n.y), n.width, n.height, facecolor="white", edgecolor="black", lw=1.3, zorder=3)
        else:
            fc = "#e3e3e3" if n.kind == "level2" else "white"
            p = Rectangle((n.x - n.width / 2, n.y - n.height / 2), n.width, n.height, facecolor=fc,
                          edgecolor="black", lw=1.1, zorder=3)  # fmt: skip
        ax.add_patch(p)
        if n.categories is not None:
            # The inner outline of the double box (an ordinal variable), over the filled outer one.
            inset = 0.07
            ax.add_patch(
                Rectangle((n.x - n.width / 2 + inset, n.y - n.height / 2 + inset), n.width - 2 * inset,
                          n.height - 2 * inset, facecolor="none", edgecolor="black", lw=0.8, zorder=3,
                          gid=f"ordinal:{n.id}")
            )  # fmt: skip
        patches[n.id] = p
        font = FONT_NODE if n.row != "indicator" else FONT_NODE - 1.5
        ax.text(n.x, n.y, n.display, ha="center", va="center", fontsize=font, zorder=4,
                style="italic" if n.kind == "slope" else "normal")  # fmt: skip
    for e in edges:
        p = e.level[0]
        a, b = patches[f"{p}:{e.source}"], patches[f"{p}:{e.target}"]
        pos_a, pos_b = _endpoints(e, by_id)
        clip = e.kind != "residual_covariance"  # those start on the outlines already
        style = "-|>" if e.directed else "<|-|>"
        lw = 0.9 if e.kind in ("loading", "residual_covariance") else 1.2
        arrow = FancyArrowPatch(
            posA=pos_a, posB=pos_b, arrowstyle=style, connectionstyle=f"arc3,rad={e.rad}",
            patchA=a if clip else None, patchB=b if clip else None, shrinkA=1.5, shrinkB=1.5,
            mutation_scale=11 if lw < 1 else 13, lw=lw, color="black", zorder=2,
        )  # fmt: skip
        ax.add_patch(arrow)
        if e.dot_xy is not None:
            ax.add_patch(Circle(e.dot_xy, DOT_R, facecolor="black", edgecolor="black", zorder=5))
        if e.slope_label_xy is not None:
            ax.text(*e.slope_label_xy, e.slope, ha="center", va="center", fontsize=FONT_LABEL,
                    style="italic", zorder=6)  # fmt: skip
        if e.label_xy is not None and e.text:
            ax.text(*e.label_xy, e.text, ha="center", va="center", fontsize=_label_font(e),
                    fontweight="bold" if e.significant else "normal", zorder=6,
                    bbox={"boxstyle": "square,pad=0.08", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})  # fmt: skip
    if lay.note and lay.note_xy is not None:
        ax.text(*lay.note_xy, lay.note, ha="left", va="center", fontsize=FONT_LABEL, color="0.2", zorder=6)
    if title:
        ax.set_title(title)
    ax.set_xlim(*lay.xlim)
    ax.set_ylim(*lay.ylim)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


class Diagram:
    """A path diagram: graph structure, its layout, and a lazily drawn matplotlib figure.

    Attributes
    ----------
    nodes
        DataFrame with one row per node: ``name``, ``level``, ``kind`` (``"latent"``,
        ``"observed"``, ``"level2"``, ``"slope"``), ``display``, ``categories`` (the number of
        categories of an ordinal variable, else None), ``x``, ``y``.
    edges
        DataFrame with one row per arrow: ``from``, ``to``, ``level``, ``kind`` (``"loading"``,
        ``"path"``, ``"covariance"``, ``"residual_covariance"``, ``"slope_moderator"``),
        ``label``, ``random``, ``slope``, ``parameter``, ``fixed``, ``estimate``, ``lower``,
        ``upper``, ``significant``, ``text`` (what is printed on the arrow).
    figure, ax
        The matplotlib figure and axes (drawn on first access).

    Notes
    -----
    In a notebook the diagram shows itself (PNG). ``save("model.svg")`` writes SVG, PNG or PDF
    by extension; ``to_dot()`` gives Graphviz DOT text.
    """

    def __init__(
        self,
        nodes: list[Node],
        edges: list[Edge],
        *,
        title: str | None = None,
        cluster: str | None = None,
        ax: Axes | None = None,
    ) -> None:
        self.node_records = nodes
        self.edge_records = edges
        self.title = title
        self.cluster = cluster
        self.layout = layout(nodes, edges, cluster)
        self._ax = ax
        self._drawn = False

    # ----------------------------------------------------------- structure
    @property
    def nodes(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "name": n.name,
                    "level": n.level,
                    "kind": n.kind,
                    "display": n.display,
                    "categories": n.categories,
                    "x": n.x,
                    "y": n.y,
                }
                for n in self.node_records
            ],
            columns=["name", "level", "kind", "display", "categories", "x", "y"],
        ).astype({"categories": "Int64"})

    @property
    def edges(self) -> pd.DataFrame:
        cols = ["from", "to", "level", "kind", "label", "random", "slope", "parameter", "fixed", "estimate",
                "lower", "upper", "significant", "text"]  # fmt: skip
        rows = [
            {"from": e.source, "to": e.target, "level": e.level, "kind": e.kind, "label": e.label,
             "random": e.random, "slope": e.slope, "parameter": e.parameter, "fixed": e.fixed,
             "estimate": e.estimate, "lower": e.lower, "upper": e.upper, "significant": e.significant,
             "text": e.text}
            for e in self.edge_records
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------- drawing
    def _ensure_drawn(self) -> None:
        if self._drawn:
            return
        if self._ax is None:
            # A bare Figure, not pyplot's: no second copy shows up in notebooks, no open-figure leak.
            from matplotlib.figure import Figure

            (x0, x1), (y0, y1) = self.layout.xlim, self.layout.ylim
            extra = 0.45 if self.title else 0.0
            fig = Figure(figsize=((x1 - x0) * SCALE, (y1 - y0) * SCALE + extra))
            self._ax = fig.add_axes((0.0, 0.0, 1.0, (y1 - y0) * SCALE / ((y1 - y0) * SCALE + extra)))
        draw(self.node_records, self.edge_records, self.layout, self._ax, self.title)
        self._drawn = True

    @property
    def ax(self) -> Axes:
        self._ensure_drawn()
        assert self._ax is not None
        return self._ax

    @property
    def figure(self) -> Figure:
        return self.ax.figure  # type: ignore[return-value]

    def save(self, path: str | os.PathLike[str], dpi: int = 150, **kwargs: Any) -> FilePath:
        """Write the diagram to ``path``; the format follows the extension (``.svg``, ``.png``, ``.pdf``).

        SVG keeps its text as text (searchable, editable) rather than outlines.
        """
        import matplotlib as mpl

        path = FilePath(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("svg", "png", "pdf"):
            raise ValueError(f"Cannot save a diagram as {path.name!r}: use a .svg, .png or .pdf file name.")
        with mpl.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            self.figure.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white", **kwargs)
        return path

    def to_dot(self) -> str:
        """Graphviz DOT text of the diagram (render it with ``dot -Tsvg``)."""
        return to_dot(self.node_records, self.edge_records, self.title, self.cluster)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
        return buf.getvalue()

    def __repr__(self) -> str:
        kinds = self.edges["kind"].value_counts()
        parts = ", ".join(f"{v} {k}" for k, v in kinds.items())
        return f"Diagram({len(self.node_records)} nodes; {parts})"


# --------------------------------------------------------------- entry points
def _structure(model: MSEM) -> ModelStructure:
    if len(model.data) == 0:
        # A specification without data (MSEM(None, ...)): columns named in level2= are level-2.
        from pymsem.simulate import spec_structure

        return spec_structure(model)
    return model.structure()


def model_diagram(
    model: MSEM,
    *,
    labels: bool = True,
    indicators: bool = True,
    suffixes: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
) -> Diagram:
    """The path diagram of a specification (see :meth:`pymsem.MSEM.diagram`)."""
    nodes, edges = graph_from_structure(
        _structure(model), indicators=indicators, labels=labels, suffixes=suffixes
    )
    return Diagram(nodes, edges, title=title, cluster=model.cluster, ax=ax)


def _fixed_loading_std(fit: MSEMFit, edges: list[Edge]) -> dict[tuple[str, str], float]:
    """Median standardized value of each fixed loading: ``lambda * sd(factor) / sd(indicator)``."""
    from pymsem.compile.random_effects import posterior_level_matrices

    st = fit.structure
    vals = fit.parameter_draws()
    out: dict[tuple[str, str], float] = {}
    for level in (Level.WITHIN, Level.BETWEEN):
        todo = [e for e in edges if e.level == str(level) and e.fixed is not None]
        if not todo:
            continue
        ls = st.level(level)
        M = posterior_level_matrices(st, ls, vals, fit.posterior)
        sd_eta = np.sqrt(np.clip(np.diagonal(M.Sigma_eta, axis1=-2, axis2=-1), 1e-300, None))
        sd_obs = np.sqrt(np.clip(np.diagonal(M.Sigma, axis1=-2, axis2=-1), 1e-300, None))
        for e in todo:
            r, c = ls.observed.index(e.target), ls.latent.index(e.source)
            std = float(e.fixed or 0.0) * sd_eta[..., c] / sd_obs[..., r]
            out[(e.level, e.parameter or "")] = float(np.median(std))
    return out


def fit_diagram(
    fit: MSEMFit,
    *,
    standardized: bool = False,
    ci_prob: float = 0.95,
    digits: int = 2,
    labels: bool = False,
    indicators: bool = True,
    suffixes: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
) -> Diagram:
    """The path diagram with posterior estimates on the arrows (see :meth:`MSEMFit.diagram`)."""
    nodes, edges = graph_from_structure(
        fit.structure, indicators=indicators, labels=labels, suffixes=suffixes
    )
    fixed_std = _fixed_loading_std(fit, edges) if standardized else None
    fill_estimates(edges, fit.summary(ci_prob), standardized=standardized, digits=digits, labels=labels,
                   fixed_std=fixed_std)  # fmt: skip
    return Diagram(nodes, edges, title=title, cluster=fit.model.cluster, ax=ax)
