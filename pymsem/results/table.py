"""Paper-style results tables: terminal text, HTML, Markdown, LaTeX and CSV.

The layout follows the tables of applied multilevel SEM papers (e.g. the
Blimp tutorial, Tables 1-2): one section per level (*Within Level*,
*Between Level*, *Derived*), block sub-headers inside each level
(*Regressions*, *Loadings*, ...), one row per parameter with the posterior
median, SD, the equal-tailed credible interval, R-hat and, where available,
the standardized estimate.  Estimates whose interval excludes 0 are marked
(``*`` in text, bold elsewhere), and a footer carries the note and facts
about the data and the run.

The input is a summary with one row per parameter (see :class:`Table`).
Nothing here depends on PyMC, so tables can be rebuilt from a saved CSV.
"""

from __future__ import annotations

import ast
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Table"]

#: Columns of the machine-readable export, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "level",
    "block",
    "label",
    "parameter",
    "median",
    "sd",
    "lower",
    "upper",
    "rhat",
    "ess_bulk",
    "std",
)
_REQUIRED = ("level", "block", "parameter", "median", "lower", "upper")

_LEVEL_TITLES = {"within": "Within Level", "between": "Between Level", "derived": "Derived"}


@dataclass(frozen=True)
class _Column:
    """A numeric column: where its values come from and how they are printed."""

    source: str  # column of the summary
    header: str  # header in text, HTML and Markdown
    latex: str  # header in LaTeX (already escaped)
    kind: str  # "est", "num", "rhat" or "ess"; chooses the number format


_COLUMNS: tuple[_Column, ...] = (
    _Column("median", "Est.", "Est.", "est"),
    _Column("sd", "SD", "SD", "num"),
    _Column("lower", "Lower", "Lower", "num"),
    _Column("upper", "Upper", "Upper", "num"),
    _Column("rhat", "R-hat", r"$\hat{R}$", "rhat"),
    _Column("ess_bulk", "ESS", "ESS", "ess"),
    _Column("std", "Std.Est.", "Std.Est.", "num"),
)
# Users may name a column by its header or by its summary column.
_BY_NAME: dict[str, _Column] = {c.header: c for c in _COLUMNS} | {c.source: c for c in _COLUMNS}


@dataclass(frozen=True)
class _Line:
    """One row of the layout shared by all renderers."""

    kind: str  # "level", "block" or "parameter"
    text: str  # section title or parameter text
    label: str = ""
    cells: tuple[str, ...] = ()  # formatted numbers, one per shown column
    significant: bool = False


def _excludes_zero(lower: float, upper: float) -> bool:
    """Whether a credible interval excludes 0.

    A degenerate interval (``lower == upper``) is a fixed parameter, such as
    a marker loading of 1; it was not estimated, so it is never marked.
    """
    if not (np.isfinite(lower) and np.isfinite(upper)) or lower == upper:
        return False
    return bool(lower > 0 or upper < 0)


#: Blocks of quantities that are positive by construction: their interval always excludes 0, so a
#: mark there would say nothing (and papers do not star variances).
POSITIVE_BLOCKS = frozenset(
    {"Variances", "Residual variances", "Indicator residual variances", "Intraclass correlations"}
)
#: Row texts of positive quantities in other blocks (random-slope variances, ICCs, R-squared, SDs).
_POSITIVE_TEXT = re.compile(r"(?<![cC]o)variance$|^ICC\b|^R2\b|^R-squared\b|\bSD$")
#: Functions of the derived-expression language whose value is never negative.
_POSITIVE_FUNCS = frozenset({"var", "totalvar", "sd", "sqrt", "exp", "abs"})


def _positive_expression(node: ast.AST) -> bool:
    """Whether a derived expression is positive by its form: positive functions and constants
    combined by ``+ * /`` (e.g. ``var(s_a) / (var(s_a) + 1)``, an R-squared); names are unknown."""
    if isinstance(node, ast.Expression):
        return _positive_expression(node.body)
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool) and node.value > 0
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _POSITIVE_FUNCS
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return _positive_expression(node.left)
        if isinstance(node.op, ast.Add | ast.Mult | ast.Div):
            return _positive_expression(node.left) and _positive_expression(node.right)
    return False


def is_positive_quantity(level: str, block: str, parameter: str) -> bool:
    """Whether a row is a variance, SD, ICC or other quantity that cannot be negative.

    Such rows are never marked "interval excludes 0": the interval of a positive quantity
    always excludes 0. Derived quantities (whose row text is their expression) count when
    the expression is positive by its form (``var``, ``sd``, ``sqrt`` ... combined by
    ``+ * /``).
    """
    if block in POSITIVE_BLOCKS:
        return True
    # Paths, loadings and covariances name variables, which may be called anything ("SD").
    relation = any(op in parameter for op in (" <- ", " by ", " ~~ "))
    if not relation and _POSITIVE_TEXT.search(parameter.strip()):
        return True
    if level == "derived":
        try:
            return _positive_expression(ast.parse(parameter.strip(), mode="eval"))
        except (SyntaxError, ValueError):
            return False
    return False


def _marked(level: str, block: str, parameter: str, lower: float, upper: float) -> bool:
    """Whether a row's estimate gets the "interval excludes 0" mark."""
    return _excludes_zero(lower, upper) and not is_positive_quantity(level, block, parameter)


def _fmt(value: Any, decimals: int) -> str:
    """Format a number to fixed decimals; missing values print as empty."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    if math.isnan(x):
        return ""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    # Adding 0.0 turns the -0.0 that rounding small negatives gives into 0.0,
    # so a table never shows "-0.000".
    return f"{round(x, decimals) + 0.0:.{decimals}f}"


def _fmt_meta(value: Any, digits: int) -> str:
    """Format a footer value: integers as such, other floats without trailing zeros."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isfinite(x) and x.is_integer():
            return str(int(x))
        # At least 3 decimals so that e.g. a maximum R-hat of 1.004 survives digits=2.
        s = _fmt(x, max(digits, 3))
        return s.rstrip("0").rstrip(".") if "." in s else s
    return str(value)


def _percent(prob: float) -> str:
    """``0.95 -> "95%"``, ``0.975 -> "97.5%"``; rounding hides float noise such as 90.00000000000001."""
    return f"{round(prob * 100, 6):g}%"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # In the default OT1 font encoding a bare < or > prints as ¡ or ¿.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def _latex_escape(text: str) -> str:
    """Escape LaTeX special characters in one pass, so replacements are not re-escaped."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def _latex_number(cell: str) -> str:
    """A number for LaTeX, with a true minus sign rather than a hyphen."""
    return "$-$" + cell[1:] if cell.startswith("-") else cell


_MD_RE = re.compile(r"([\\`*_~|\[\]])")


def _md_escape(text: str) -> str:
    """Escape characters that GitHub Markdown would read as emphasis, code or cell breaks.

    ``~~`` (as in ``ACH1 ~~ ACH1``) would otherwise be taken for strikethrough.
    """
    return _MD_RE.sub(r"\\\1", text)


def _wrap_items(items: list[str], width: int, sep: str = " | ") -> list[str]:
    """Join footer items with ``sep``, breaking lines between items to fit ``width``."""
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = item if not current else current + sep + item
        if current and len(candidate) > width:
            lines.append(current)
            current = item
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


class Table:
    """A paper-style table of posterior summaries, by level and block.

    Parameters
    ----------
    summary
        One row per parameter with columns ``level`` (``"within"``,
        ``"between"`` or ``"derived"``), ``block`` (section title within the
        level), ``label``, ``parameter`` (row text), ``median``, ``sd``,
        ``lower``, ``upper`` (the credible interval), ``rhat``, ``ess_bulk``
        and ``std`` (standardized estimate).  ``label``, ``sd``, ``rhat``,
        ``ess_bulk`` and ``std`` may be missing or NaN.  ``level`` and
        ``parameter`` may also be index levels.
    meta
        Footer items, e.g. ``{"Students": 3000, "Clusters": 100}``, printed
        in order as ``"Students: 3000 | Clusters: 100"``.
    title
        Table title; omitted when empty.
    ci_prob
        Probability of the credible interval, for the footer note.
    columns
        Numeric columns to show, in order, by header (``"Est."``, ``"SD"``,
        ``"Lower"``, ``"Upper"``, ``"R-hat"``, ``"ESS"``, ``"Std.Est."``) or
        by summary column (``"median"``, ``"sd"``, ...).  Default: Est., SD,
        Lower, Upper, R-hat, and Std.Est. if any shown row has one.
    blocks
        Blocks to show (e.g. ``["Regressions"]``); ``None`` shows all.
    digits
        Decimals of estimates, SDs and interval bounds.  R-hat always has 3
        and ESS none.

    Notes
    -----
    Levels appear in the order within, between, derived (other levels
    after them, in order of first appearance); blocks within a level, and
    parameters within a block, in the order they first appear in
    ``summary``.  The Label column is shown only if some shown row has a
    label.  An estimate is marked when its interval excludes 0; a
    degenerate interval (a fixed parameter) is never marked, nor are
    variances, SDs, ICCs and other quantities that cannot be negative
    (see :func:`is_positive_quantity`).

    Examples
    --------
    >>> t = Table(summary, {"Students": 3000}, title="Model 1")  # doctest: +SKIP
    >>> print(t)  # doctest: +SKIP
    >>> t.to_latex()  # doctest: +SKIP
    """

    def __init__(
        self,
        summary: pd.DataFrame,
        meta: Mapping[str, Any] | None = None,
        title: str = "",
        ci_prob: float = 0.95,
        columns: Sequence[str] | None = None,
        blocks: Sequence[str] | None = None,
        digits: int = 3,
    ) -> None:
        if not 0.0 < float(ci_prob) < 1.0:
            raise ValueError(f"ci_prob must be in (0, 1), got {ci_prob!r}")
        if int(digits) != digits or digits < 0:
            raise ValueError(f"digits must be a non-negative integer, got {digits!r}")
        self.meta: dict[str, Any] = dict(meta or {})
        self.title = str(title or "")
        self.ci_prob = float(ci_prob)
        self.digits = int(digits)
        self._data = self._prepare(summary, blocks)
        self._columns = self._choose_columns(columns)
        self._show_label = bool((self._data["label"] != "").any())

    # ------------------------------------------------------------ preparation
    @staticmethod
    def _prepare(summary: pd.DataFrame, blocks: Sequence[str] | None) -> pd.DataFrame:
        """Validate, fill optional columns, filter blocks and sort into display order."""
        df = summary
        # Fit.summary() indexes by level and parameter; accept that as is.
        if any(c not in df.columns and c in (df.index.names or []) for c in _REQUIRED):
            df = df.reset_index()
        missing = [c for c in _REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"summary lacks required column(s): {', '.join(missing)}")
        df = df.copy()
        if "label" not in df.columns:
            df["label"] = ""
        for c in ("sd", "rhat", "ess_bulk", "std"):
            if c not in df.columns:
                df[c] = np.nan
        for c in ("level", "block", "label", "parameter"):
            df[c] = df[c].fillna("").astype(str)
        df["level"] = df["level"].str.strip().str.lower()
        for c in ("median", "sd", "lower", "upper", "rhat", "ess_bulk", "std"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)

        if blocks is not None:
            if isinstance(blocks, str):
                # A lone string would otherwise be read as a list of characters.
                blocks = [blocks]
            present = sorted(set(df["block"]))
            df = df[df["block"].isin(list(blocks))]
            # A typo would otherwise give an empty table without complaint.
            if df.empty and present:
                raise ValueError(f"no rows in blocks {list(blocks)!r}; blocks present: {present}")

        # Known levels first, in paper order; unknown ones after, as they come.
        known = list(_LEVEL_TITLES)
        extra = [lv for lv in pd.unique(df["level"]) if lv not in _LEVEL_TITLES]
        level_rank = {lv: i for i, lv in enumerate(known + extra)}
        first_block = df.groupby("level", sort=False)["block"].transform(
            lambda s: s.map({b: i for i, b in enumerate(pd.unique(s))})
        )
        df = df.assign(_lr=df["level"].map(level_rank), _br=first_block, _pos=np.arange(len(df)))
        df = df.sort_values(["_lr", "_br", "_pos"], kind="mergesort")
        df["significant"] = [
            _marked(*row) for row in zip(df["level"], df["block"], df["parameter"], df["lower"], df["upper"])
        ]
        return df.drop(columns=["_lr", "_br", "_pos"]).reset_index(drop=True)

    def _choose_columns(self, columns: Sequence[str] | None) -> list[_Column]:
        """Resolve ``columns`` to column specs, or pick the defaults."""
        if columns is None:
            chosen = [_BY_NAME[n] for n in ("Est.", "SD", "Lower", "Upper", "R-hat")]
            if self._data["std"].notna().any():
                chosen.append(_BY_NAME["Std.Est."])
            return chosen
        if isinstance(columns, str):
            columns = [columns]
        chosen = []
        for name in columns:
            if name not in _BY_NAME:
                valid = ", ".join(repr(c.header) for c in _COLUMNS)
                raise ValueError(f"unknown column {name!r}; choose from {valid} (or summary column names)")
            if _BY_NAME[name] in chosen:
                raise ValueError(f"column {name!r} given twice")
            chosen.append(_BY_NAME[name])
        return chosen

    # ----------------------------------------------------------------- layout
    def _cell(self, col: _Column, value: float) -> str:
        if col.kind == "rhat":
            return _fmt(value, 3)
        if col.kind == "ess":
            return _fmt(value, 0)
        return _fmt(value, self.digits)

    def _lines(self) -> list[_Line]:
        """The rows of the table, shared by every renderer."""
        lines: list[_Line] = []
        for level, by_level in self._data.groupby("level", sort=False):
            lines.append(_Line("level", _LEVEL_TITLES.get(str(level), str(level).title())))
            for block, by_block in by_level.groupby("block", sort=False):
                # Rows without a block, or whose block repeats the level's title, sit directly
                # under their level.
                if block and str(block) != _LEVEL_TITLES.get(str(level), str(level).title()):
                    lines.append(_Line("block", str(block)))
                for r in by_block.itertuples(index=False):
                    cells = tuple(self._cell(c, getattr(r, c.source)) for c in self._columns)
                    lines.append(_Line("parameter", r.parameter, r.label, cells, bool(r.significant)))
        return lines

    def _headers(self) -> list[str]:
        return ["Parameter", *(["Label"] if self._show_label else []), *(c.header for c in self._columns)]

    def _ci_span(self) -> int | None:
        """Index (among numeric columns) of Lower when Upper directly follows it, for a "95% CI" spanner."""
        sources = [c.source for c in self._columns]
        for i in range(len(sources) - 1):
            if sources[i] == "lower" and sources[i + 1] == "upper":
                return i
        return None

    def _meta_items(self) -> list[str]:
        return [f"{k}: {_fmt_meta(v, self.digits)}" for k, v in self.meta.items()]

    def _est_index(self) -> int | None:
        for i, c in enumerate(self._columns):
            if c.kind == "est":
                return i
        return None

    # ----------------------------------------------------------------- public
    def rows(self) -> pd.DataFrame:
        """What the table shows, one row per printed line.

        Returns
        -------
        pandas.DataFrame
            Columns ``kind`` (``"level"``, ``"block"`` or ``"parameter"``),
            ``level``, ``block``, ``text`` (section title or parameter),
            ``label``, one float column per shown numeric column (named by
            its header, e.g. ``"Est."``; NaN on section rows) and
            ``excludes_zero`` (whether the estimate is marked).
        """
        records: list[dict[str, Any]] = []
        nan_cells = {c.header: np.nan for c in self._columns}
        for level, by_level in self._data.groupby("level", sort=False):
            title = _LEVEL_TITLES.get(str(level), str(level).title())
            records.append(
                {
                    "kind": "level",
                    "level": level,
                    "block": "",
                    "text": title,
                    "label": "",
                    **nan_cells,
                    "excludes_zero": False,
                }
            )
            for block, by_block in by_level.groupby("block", sort=False):
                if block and str(block) != _LEVEL_TITLES.get(str(level), str(level).title()):
                    records.append(
                        {
                            "kind": "block",
                            "level": level,
                            "block": block,
                            "text": block,
                            "label": "",
                            **nan_cells,
                            "excludes_zero": False,
                        }
                    )
                for r in by_block.itertuples(index=False):
                    records.append(
                        {
                            "kind": "parameter",
                            "level": level,
                            "block": block,
                            "text": r.parameter,
                            "label": r.label,
                            **{c.header: float(getattr(r, c.source)) for c in self._columns},
                            "excludes_zero": bool(r.significant),
                        }
                    )
        cols = ["kind", "level", "block", "text", "label", *nan_cells, "excludes_zero"]
        return pd.DataFrame.from_records(records, columns=cols)

    def to_dataframe(self) -> pd.DataFrame:
        """The shown parameters, machine-readable, in display order.

        Returns
        -------
        pandas.DataFrame
            Columns ``level, block, label, parameter, median, sd, lower,
            upper, rhat, ess_bulk, std`` at full precision; all of them,
            whatever ``columns`` chose to print.
        """
        return self._data[list(CSV_COLUMNS)].copy()

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write :meth:`to_dataframe` as CSV.

        Parameters
        ----------
        path
            File to write.  ``None`` returns the CSV text instead.

        Returns
        -------
        str or None
            The CSV text when ``path`` is ``None``.
        """
        df = self.to_dataframe()
        if path is None:
            return df.to_csv(index=False)
        df.to_csv(path, index=False)
        return None

    # -------------------------------------------------------------- renderers
    def _note(self, marker: str) -> str:
        return f"CI = {_percent(self.ci_prob)} equal-tailed credible interval; {marker} interval excludes 0."

    def __str__(self) -> str:
        lines = self._lines()
        headers = self._headers()
        n_text = 2 if self._show_label else 1
        est = self._est_index()
        indent = {"level": 0, "block": 2, "parameter": 4}

        # Non-significant estimates get a blank where the asterisk would be,
        # so decimal points line up down the column.
        def num_cells(line: _Line) -> list[str]:
            cells = list(line.cells)
            if est is not None:
                cells[est] += "*" if line.significant else " "
            return cells

        body = [ln for ln in lines if ln.kind == "parameter"]
        num_headers = headers[n_text:]
        if est is not None:
            num_headers[est] += " "
        widths = [len("Parameter")] + ([len("Label")] if self._show_label else [])
        widths[0] = max([widths[0]] + [indent[ln.kind] + len(ln.text) for ln in lines])
        if self._show_label:
            widths[1] = max([widths[1]] + [len(ln.label) for ln in body])
        for j, h in enumerate(num_headers):
            widths.append(max([len(h)] + [len(num_cells(ln)[j]) for ln in body]))
        sep = "  "
        total = sum(widths) + len(sep) * (len(widths) - 1)

        def join(text_cells: list[str], numbers: list[str]) -> str:
            parts = [t.ljust(w) for t, w in zip(text_cells, widths[:n_text])]
            parts += [x.rjust(w) for x, w in zip(numbers, widths[n_text:])]
            return sep.join(parts).rstrip()

        out: list[str] = []
        if self.title:
            out.append(self.title)
        out.append("-" * total)
        span = self._ci_span()
        if span is not None:
            # Spanner over Lower and Upper, as in printed tables, so "CI" in the note has a referent.
            start = sum(widths[: n_text + span]) + len(sep) * (n_text + span)
            width = widths[n_text + span] + len(sep) + widths[n_text + span + 1]
            out.append((" " * start + f"{_percent(self.ci_prob)} CI".center(width)).rstrip())
        out.append(join(headers[:n_text], num_headers))
        out.append("-" * total)
        for ln in lines:
            if ln.kind == "parameter":
                text_cells = [" " * 4 + ln.text] + ([ln.label] if self._show_label else [])
                out.append(join(text_cells, num_cells(ln)))
            else:
                out.append(" " * indent[ln.kind] + ln.text)
        out.append("-" * total)
        out.append("Note. " + self._note("*"))
        out.extend(_wrap_items(self._meta_items(), max(total, 60)))
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        """HTML table for Jupyter; significant estimates in ``<b>``."""
        e = html.escape
        headers = self._headers()
        n_text = 2 if self._show_label else 1
        ncol = len(headers)
        est = self._est_index()
        span = self._ci_span()
        left = "text-align:left"
        right = "text-align:right"
        out = ['<table class="pymsem-table" style="border-collapse:collapse">']
        if self.title:
            out.append(f'<caption style="{left};font-weight:bold">{e(self.title)}</caption>')
        out.append('<thead style="border-top:1px solid;border-bottom:1px solid">')
        if span is not None:
            before = n_text + span
            after = ncol - before - 2
            cells = f'<th colspan="{before}"></th>' if before else ""
            cells += f'<th colspan="2" style="text-align:center;border-bottom:1px solid">{e(_percent(self.ci_prob))} CI</th>'
            cells += f'<th colspan="{after}"></th>' if after else ""
            out.append(f"<tr>{cells}</tr>")
        head = "".join(
            f'<th style="{left if j < n_text else right}">{e(h)}</th>' for j, h in enumerate(headers)
        )
        out.append(f"<tr>{head}</tr></thead>")
        out.append('<tbody style="border-bottom:1px solid">')
        for ln in self._lines():
            if ln.kind == "level":
                out.append(f'<tr><th colspan="{ncol}" scope="rowgroup" style="{left}">{e(ln.text)}</th></tr>')
            elif ln.kind == "block":
                out.append(
                    f'<tr><td colspan="{ncol}" style="{left};padding-left:1em;font-style:italic">{e(ln.text)}</td></tr>'
                )
            else:
                cells = [f'<td style="{left};padding-left:2em">{e(ln.text)}</td>']
                if self._show_label:
                    cells.append(f'<td style="{left}">{e(ln.label)}</td>')
                for j, x in enumerate(ln.cells):
                    x = e(x)
                    if j == est and ln.significant:
                        x = f"<b>{x}</b>"
                    cells.append(f'<td style="{right}">{x}</td>')
                out.append(f"<tr>{''.join(cells)}</tr>")
        out.append("</tbody><tfoot>")
        out.append(f'<tr><td colspan="{ncol}" style="{left}"><i>Note.</i> {e(self._note("bold:"))}</td></tr>')
        items = self._meta_items()
        if items:
            out.append(f'<tr><td colspan="{ncol}" style="{left}">{e(" | ".join(items))}</td></tr>')
        out.append("</tfoot></table>")
        return "\n".join(out)

    def to_markdown(self) -> str:
        """GitHub Markdown: a pipe table, significant estimates in ``**bold**``.

        Level rows are bold in the first cell and block rows are indented
        bold; the title precedes the table and the note and footer items
        follow it as paragraphs.

        Returns
        -------
        str
            The Markdown text.
        """
        headers = self._headers()
        n_text = 2 if self._show_label else 1
        est = self._est_index()
        empty = [""] * (len(headers) - 1)
        grid: list[list[str]] = []
        for ln in self._lines():
            if ln.kind == "level":
                grid.append([f"**{_md_escape(ln.text)}**", *empty])
            elif ln.kind == "block":
                # Leading spaces are stripped from cells, so indent with non-breaking spaces.
                grid.append([f"&nbsp;&nbsp;**{_md_escape(ln.text)}**", *empty])
            else:
                row = [f"&nbsp;&nbsp;&nbsp;&nbsp;{_md_escape(ln.text)}"]
                if self._show_label:
                    row.append(_md_escape(ln.label))
                for j, x in enumerate(ln.cells):
                    row.append(f"**{x}**" if j == est and ln.significant and x else x)
                grid.append(row)
        # Padding only makes the raw text readable; GitHub ignores it.
        widths = [max([len(h), 3] + [len(r[j]) for r in grid]) for j, h in enumerate(headers)]

        def line(cells: list[str]) -> str:
            padded = [c.ljust(w) if j < n_text else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))]
            return "| " + " | ".join(padded) + " |"

        rule = ["-" * (w - 1) + ":" if j >= n_text else ":" + "-" * (w - 1) for j, w in enumerate(widths)]
        out: list[str] = []
        if self.title:
            out += [f"**{_md_escape(self.title)}**", ""]
        out.append(line(headers))
        out.append("| " + " | ".join(rule) + " |")
        out += [line(r) for r in grid]
        # Blank lines keep the footer out of the table.
        out += ["", f"*Note.* {_md_escape(self._note('bold:'))}"]
        items = self._meta_items()
        if items:
            # Pipes are safe here: a lone line after a blank line is never read as a table row.
            out += ["", " | ".join(_md_escape(it) for it in items)]
        return "\n".join(out)

    def to_latex(self, float_env: bool = True) -> str:
        r"""LaTeX with booktabs rules; significant estimates in ``\textbf{}``.

        Parameters
        ----------
        float_env
            Wrap the ``tabular`` in a ``table`` float with the title as
            ``\caption``.  ``False`` returns the bare ``tabular`` (the title
            is then left out), to ``\input`` into a float of one's own.

        Returns
        -------
        str
            LaTeX source; needs ``\usepackage{booktabs}``.
        """
        n_text = 2 if self._show_label else 1
        ncol = n_text + len(self._columns)
        est = self._est_index()
        span = self._ci_span()
        tab: list[str] = [r"\begin{tabular}{" + "l" * n_text + "r" * len(self._columns) + "}", r"\toprule"]
        if span is not None:
            first = n_text + span + 1  # 1-based column of Lower
            cells = [""] * (first - 1) + [
                rf"\multicolumn{{2}}{{c}}{{{_latex_escape(_percent(self.ci_prob))} CI}}"
            ]
            cells += [""] * (ncol - first - 1)
            tab.append(" & ".join(cells) + r" \\")
            tab.append(rf"\cmidrule(lr){{{first}-{first + 1}}}")
        headers = ["Parameter", *(["Label"] if self._show_label else []), *(c.latex for c in self._columns)]
        tab.append(" & ".join(headers) + r" \\")
        tab.append(r"\midrule")
        for i, ln in enumerate(self._lines()):
            if ln.kind == "level":
                if i:
                    tab.append(r"\addlinespace")
                tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{_latex_escape(ln.text)}}}}} \\")
            elif ln.kind == "block":
                tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\hspace{{1em}}{_latex_escape(ln.text)}}} \\")
            else:
                cells = [r"\hspace{2em}" + _latex_escape(ln.text)]
                if self._show_label:
                    cells.append(_latex_escape(ln.label))
                for j, x in enumerate(ln.cells):
                    x = _latex_number(x)
                    cells.append(rf"\textbf{{{x}}}" if j == est and ln.significant and x else x)
                tab.append(" & ".join(cells) + r" \\")
        tab.append(r"\bottomrule")
        tab.append(
            rf"\multicolumn{{{ncol}}}{{l}}{{\footnotesize\textit{{Note.}} {_latex_escape(self._note('bold:'))}}} \\"
        )
        items = self._meta_items()
        if items:
            tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\footnotesize {_latex_escape(' | '.join(items))}}} \\")
        tab.append(r"\end{tabular}")
        if not float_env:
            return "\n".join(tab)
        out = [r"\begin{table}[htbp]", r"\centering"]
        if self.title:
            out.append(rf"\caption{{{_latex_escape(self.title)}}}")
        return "\n".join([*out, *tab, r"\end{table}"])
