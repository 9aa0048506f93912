"""Estimates of several models side by side, as papers compare Model 1 with Model 2.

:func:`compare_tables` matches rows by level, block and parameter (``INT <- REL``
in the within regressions of each model) and puts each model's columns next to
the others'.  A row missing from a model is left blank there.  The table
renders like :class:`~pymsem.results.table.Table` (text, HTML, Markdown, LaTeX,
CSV) and marks, per model, estimates whose credible interval excludes 0.

Model-level statistics (information criteria such as LOO or WAIC) can be passed
as ``statistics`` and are printed in a final *Model fit* section;
``statistics="loo"`` (or ``"waic"``) computes leave-one-cluster-out elpd,
its SE, p and the IC for each fitted model (:func:`pymsem.results.loo.ic_statistics`).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pymsem.results.table import (
    _BY_NAME,
    _COLUMNS,
    _LEVEL_TITLES,
    _Column,
    _fmt,
    _fmt_meta,
    _latex_escape,
    _latex_number,
    _marked,
    _md_escape,
    _percent,
    _wrap_items,
)

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["ComparisonTable", "compare_tables"]

#: Summary columns of the machine-readable export, per model.
NUMERIC: tuple[str, ...] = ("median", "sd", "lower", "upper", "rhat", "ess_bulk", "std")
_KEY = ("level", "block", "parameter")
#: Footer facts of each fitted model.
_META_KEYS = ("Students", "Clusters", "Chains x draws", "Max R-hat", "Divergences")
_FIT_SECTION = "Model fit"


def compare_tables(
    fits: Mapping[str, MSEMFit | pd.DataFrame] | Sequence[MSEMFit | pd.DataFrame],
    ci_prob: float = 0.95,
    columns: Sequence[str] = ("median", "lower", "upper"),
    blocks: Sequence[str] | str | None = None,
    title: str = "Model comparison",
    digits: int = 3,
    statistics: pd.DataFrame | Mapping[str, Mapping[str, float]] | str | None = None,
) -> ComparisonTable:
    """Put the estimates of several models side by side.

    Parameters
    ----------
    fits
        Fitted models (or their ``summary()`` DataFrames) by column title, e.g.
        ``{"Model 1": fit1, "Model 2": fit2}``; a list is titled ``Model 1``, ``Model 2``, ...
    ci_prob
        Credible-interval probability (equal-tailed).
    columns
        Columns shown for each model, by summary column (``"median"``, ``"sd"``, ``"lower"``,
        ``"upper"``, ``"rhat"``, ``"ess_bulk"``, ``"std"``) or table header (``"Est."``, ...).
    blocks
        Sections to show; default those of a paper (as ``fit.table()``), ``"all"`` for every one.
    title
        Table title.
    digits
        Decimals.
    statistics
        Optional model-level statistics, one row per statistic and one column per model,
        shown in a final *Model fit* section. ``"loo"`` or ``"waic"`` computes them
        (leave-one-cluster-out ``elpd``, its SE, ``p``, ``LOOIC`` or ``WAIC``; models must
        be fitted to the same clusters and variables); or pass
        ``pymsem.results.loo.ic_statistics(fits, ic, thin=..., slope_draws=...)``.

    Returns
    -------
    ComparisonTable

    Examples
    --------
    >>> ms.compare_tables({"Model 1": fit1, "Model 2": fit2})  # doctest: +SKIP
    """
    from pymsem.results.fit import PAPER_BLOCKS

    if not isinstance(fits, Mapping):
        fits = {f"Model {i}": f for i, f in enumerate(fits, start=1)}
    if not fits:
        raise ValueError("compare_tables needs at least one model.")
    summaries: dict[str, pd.DataFrame] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name, f in fits.items():
        if isinstance(f, pd.DataFrame):
            summaries[str(name)] = f
        elif hasattr(f, "summary"):
            summaries[str(name)] = f.summary(ci_prob)
            if hasattr(f, "meta"):
                m = f.meta()
                meta[str(name)] = {k: m[k] for k in _META_KEYS if k in m}
        else:
            raise TypeError(
                f"{name!r}: expected a fitted model or a summary DataFrame, got {type(f).__name__}."
            )
    if isinstance(statistics, str):
        from pymsem.results.loo import ic_statistics

        if any(isinstance(f, pd.DataFrame) for f in fits.values()):
            raise TypeError(f"statistics={statistics!r} needs fitted models, not summary DataFrames.")
        statistics = ic_statistics({str(n): f for n, f in fits.items()}, ic=statistics)
    if blocks is None:
        present = {b for s in summaries.values() for b in _frame(s)["block"]}
        blocks = [b for b in PAPER_BLOCKS if b in present]
    elif blocks == "all":
        blocks = None
    return ComparisonTable(summaries, ci_prob, columns, blocks, title, digits, statistics, meta)


def _frame(summary: pd.DataFrame) -> pd.DataFrame:
    """A summary with ``level`` and ``parameter`` as columns, every numeric column present."""
    df = summary
    if any(c not in df.columns and c in (df.index.names or []) for c in _KEY):
        df = df.reset_index()
    missing = [c for c in (*_KEY, "median", "lower", "upper") if c not in df.columns]
    if missing:
        raise ValueError(f"summary lacks required column(s): {', '.join(missing)}")
    df = df.copy()
    if "label" not in df.columns:
        df["label"] = ""
    for c in ("level", "block", "label", "parameter"):
        df[c] = df[c].fillna("").astype(str)
    df["level"] = df["level"].str.strip().str.lower()
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float) if c in df.columns else np.nan
    return df


class ComparisonTable:
    """Posterior summaries of several models side by side, by level and block.

    Parameters
    ----------
    summaries
        One summary per model (as ``fit.summary()``), by column title.
    ci_prob
        Probability of the credible intervals, for the note.
    columns
        Columns shown per model (summary names or table headers).
    blocks
        Blocks to show; ``None`` shows all.
    title
        Table title.
    digits
        Decimals of estimates, SDs and bounds (R-hat always 3, ESS none).
    statistics
        Model-level statistics: rows are statistics, columns model titles.
    meta
        Footer facts per model, e.g. ``{"Model 1": {"Students": 3000}}``.

    Notes
    -----
    Rows are matched by level, block and parameter text, and appear in the order of the
    first model that has them (levels within, between, derived; blocks in order of first
    appearance).  An estimate is marked (``*`` in text, bold elsewhere) when that model's
    interval excludes 0; rows a model lacks are blank in its columns.
    """

    def __init__(
        self,
        summaries: Mapping[str, pd.DataFrame],
        ci_prob: float = 0.95,
        columns: Sequence[str] = ("median", "lower", "upper"),
        blocks: Sequence[str] | str | None = None,
        title: str = "Model comparison",
        digits: int = 3,
        statistics: pd.DataFrame | Mapping[str, Mapping[str, float]] | None = None,
        meta: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if not 0.0 < float(ci_prob) < 1.0:
            raise ValueError(f"ci_prob must be in (0, 1), got {ci_prob!r}")
        if int(digits) != digits or digits < 0:
            raise ValueError(f"digits must be a non-negative integer, got {digits!r}")
        if not summaries:
            raise ValueError("no models to compare")
        self.models = [str(m) for m in summaries]
        self.ci_prob = float(ci_prob)
        self.digits = int(digits)
        self.title = str(title or "")
        self.meta = {str(k): dict(v) for k, v in (meta or {}).items()}
        self._columns = self._choose_columns(columns)
        self._data = self._merge({str(k): _frame(v) for k, v in summaries.items()}, blocks)
        self._show_label = bool((self._data["label"] != "").any())
        self.statistics = self._statistics(statistics)

    # ------------------------------------------------------------ preparation
    @staticmethod
    def _choose_columns(columns: Sequence[str]) -> list[_Column]:
        if isinstance(columns, str):
            columns = [columns]
        chosen: list[_Column] = []
        for name in columns:
            if name not in _BY_NAME:
                valid = ", ".join(repr(c.source) for c in _COLUMNS)
                raise ValueError(f"unknown column {name!r}; choose from {valid} (or table headers)")
            if _BY_NAME[name] in chosen:
                raise ValueError(f"column {name!r} given twice")
            chosen.append(_BY_NAME[name])
        if not chosen:
            raise ValueError("no columns to show")
        return chosen

    def _merge(self, frames: dict[str, pd.DataFrame], blocks: Sequence[str] | str | None) -> pd.DataFrame:
        """One row per (level, block, parameter) over all models, in display order."""
        if isinstance(blocks, str):
            blocks = [blocks]
        keys = pd.concat([f[[*_KEY, "label"]] for f in frames.values()], ignore_index=True)
        if blocks is not None:
            present = sorted(set(keys["block"]))
            keys = keys[keys["block"].isin(list(blocks))]
            if keys.empty and present:
                raise ValueError(f"no rows in blocks {list(blocks)!r}; blocks present: {present}")
        labels = keys.groupby(list(_KEY), sort=False)["label"].agg(
            lambda s: "/".join(dict.fromkeys(lab for lab in s if lab))
        )
        # A row that only a later model has goes right after that model's previous row, so that
        # e.g. Model 2's loadings follow the regressions rather than Model 1's last block.
        merged: list[tuple[str, str, str]] = []
        for f in frames.values():
            sub = f[f["block"].isin(list(blocks))] if blocks is not None else f
            prev = -1
            for key in sub[list(_KEY)].itertuples(index=False, name=None):
                if key in merged:
                    prev = merged.index(key)
                else:
                    prev += 1
                    merged.insert(prev, key)
        rows = pd.DataFrame(merged, columns=list(_KEY))
        rows["label"] = [labels[k] for k in merged]
        # Known levels in paper order, then others as they come; blocks in order of first appearance.
        extra = [lv for lv in pd.unique(rows["level"]) if lv not in _LEVEL_TITLES]
        level_rank = {lv: i for i, lv in enumerate([*_LEVEL_TITLES, *extra])}
        block_rank = rows.groupby("level", sort=False)["block"].transform(
            lambda s: s.map({b: i for i, b in enumerate(pd.unique(s))})
        )
        rows = rows.assign(_lr=rows["level"].map(level_rank), _br=block_rank, _pos=np.arange(len(rows)))
        rows = rows.sort_values(["_lr", "_br", "_pos"], kind="mergesort").drop(columns=["_lr", "_br", "_pos"])
        rows = rows.reset_index(drop=True)
        for m, f in frames.items():
            f = f.drop_duplicates(list(_KEY)).set_index(list(_KEY))
            got = f.reindex(pd.MultiIndex.from_frame(rows[list(_KEY)]))
            for c in NUMERIC:
                rows[(m, c)] = got[c].to_numpy()
            rows[(m, "significant")] = [
                _marked(*r)
                for r in zip(rows["level"], rows["block"], rows["parameter"], got["lower"], got["upper"])
            ]
        return rows

    def _statistics(self, statistics: Any) -> pd.DataFrame:
        if statistics is None:
            return pd.DataFrame(columns=self.models, dtype=float)
        df = pd.DataFrame(statistics) if not isinstance(statistics, pd.DataFrame) else statistics
        unknown = [c for c in df.columns if str(c) not in self.models]
        if unknown:
            raise ValueError(f"statistics for unknown model(s) {unknown}; models: {self.models}")
        df = df.rename(columns=str).reindex(columns=self.models)
        return df.apply(pd.to_numeric, errors="coerce")

    # ----------------------------------------------------------------- layout
    def _cell(self, col: _Column, value: float) -> str:
        if col.kind == "rhat":
            return _fmt(value, 3)
        if col.kind == "ess":
            return _fmt(value, 0)
        return _fmt(value, self.digits)

    def _stat_cell(self, value: Any) -> str:
        """A model-level statistic: integers as such, other numbers to ``digits`` decimals."""
        if pd.isna(value):
            return ""
        return _fmt_meta(value, self.digits) if float(value).is_integer() else _fmt(value, self.digits)

    def _est_index(self) -> int | None:
        return next((i for i, c in enumerate(self._columns) if c.kind == "est"), None)

    def _lines(self) -> list[tuple[str, str, str, list[list[str]], list[bool]]]:
        """(kind, text, label, cells per model, marked per model) for every printed row."""
        out: list[tuple[str, str, str, list[list[str]], list[bool]]] = []
        none = [[] for _ in self.models], [False] * len(self.models)
        for level, by_level in self._data.groupby("level", sort=False):
            title = _LEVEL_TITLES.get(str(level), str(level).title())
            out.append(("level", title, "", *none))
            for block, by_block in by_level.groupby("block", sort=False):
                if block and str(block) != title:
                    out.append(("block", str(block), "", *none))
                for _, r in by_block.iterrows():
                    cells = [[self._cell(c, r[(m, c.source)]) for c in self._columns] for m in self.models]
                    marks = [bool(r[(m, "significant")]) for m in self.models]
                    out.append(("parameter", r["parameter"], r["label"], cells, marks))
        if len(self.statistics):
            out.append(("level", _FIT_SECTION, "", *none))
            k = len(self._columns)
            for stat, r in self.statistics.iterrows():
                # A statistic goes in each model's first column; the rest stay blank.
                cells = [[self._stat_cell(r[m])] + [""] * (k - 1) for m in self.models]
                out.append(("statistic", str(stat), "", cells, [False] * len(self.models)))
        return out

    def _headers(self) -> list[str]:
        return ["Parameter", *(["Label"] if self._show_label else [])]

    def _note(self, marker: str) -> str:
        return (
            f"CI = {_percent(self.ci_prob)} equal-tailed credible interval; {marker} interval excludes 0; "
            f"blank: not in the model."
        )

    def _meta_lines(self) -> list[str]:
        return [
            f"{m}: " + " | ".join(f"{k}: {_fmt_meta(v, self.digits)}" for k, v in self.meta[m].items())
            for m in self.models
            if self.meta.get(m)
        ]

    # ----------------------------------------------------------------- public
    def to_dataframe(self) -> pd.DataFrame:
        """Every model's estimates at full precision, one row per matched parameter.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``level`` and ``parameter``; columns ``block`` and ``label``,
            then per model ``(model, stat)`` for ``stat`` in ``median, sd, lower, upper,
            rhat, ess_bulk, std`` (NaN where the model lacks the row).  Model-level
            statistics are in :attr:`statistics`.
        """
        d = self._data
        out = pd.DataFrame(
            {("block", ""): d["block"].to_numpy(), ("label", ""): d["label"].to_numpy()}
            | {(m, c): d[(m, c)].to_numpy(dtype=float) for m in self.models for c in NUMERIC},
            index=pd.MultiIndex.from_arrays([d["level"], d["parameter"]], names=["level", "parameter"]),
        )
        out.columns = pd.MultiIndex.from_tuples(out.columns)
        return out

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write :meth:`to_dataframe` as CSV with one header row (``"Model 1 median"``, ...).

        Parameters
        ----------
        path
            File to write; ``None`` returns the text.

        Returns
        -------
        str or None
            The CSV text when ``path`` is ``None``.
        """
        df = self.to_dataframe()
        df.columns = [" ".join(p for p in c if p) for c in df.columns]
        df = df.reset_index()[["level", "block", "label", "parameter", *df.columns[2:]]]
        if path is None:
            return df.to_csv(index=False)
        df.to_csv(path, index=False)
        return None

    def __str__(self) -> str:
        lines = self._lines()
        n_text = 2 if self._show_label else 1
        est = self._est_index()
        k = len(self._columns)
        indent = {"level": 0, "block": 2, "parameter": 4, "statistic": 4}

        def numbers(cells: list[list[str]], marks: list[bool]) -> list[str]:
            # A blank where the asterisk would be keeps decimal points aligned.
            out: list[str] = []
            for row, mark in zip(cells, marks):
                row = list(row)
                if est is not None and row:
                    row[est] += "*" if mark else " "
                out += row
            return out

        body = [ln for ln in lines if ln[0] in ("parameter", "statistic")]
        col_headers = [
            c.header + (" " if i == est else "") for _ in self.models for i, c in enumerate(self._columns)
        ]
        widths = [max([len("Parameter")] + [indent[ln[0]] + len(ln[1]) for ln in lines])]
        if self._show_label:
            widths.append(max([len("Label")] + [len(ln[2]) for ln in body]))
        num = [numbers(ln[3], ln[4]) for ln in body]
        for j, h in enumerate(col_headers):
            widths.append(max([len(h)] + [len(r[j]) for r in num if j < len(r)]))
        sep, gap = "  ", "    "
        # Widen a model's columns when its title is longer than they are.
        for i, m in enumerate(self.models):
            span = widths[n_text + i * k : n_text + (i + 1) * k]
            short = len(m) - (sum(span) + len(sep) * (k - 1))
            if short > 0:
                widths[n_text + i * k] += short

        def join(text_cells: list[str], nums: list[str]) -> str:
            parts = [t.ljust(w) for t, w in zip(text_cells, widths[:n_text])]
            s = sep.join(parts)
            for i in range(len(self.models)):
                group = [
                    x.rjust(w)
                    for x, w in zip(nums[i * k : (i + 1) * k], widths[n_text + i * k : n_text + (i + 1) * k])
                ]
                s += gap + sep.join(group)
            return s.rstrip()

        def group_width(i: int) -> int:
            return sum(widths[n_text + i * k : n_text + (i + 1) * k]) + len(sep) * (k - 1)

        total = (
            sum(widths[:n_text])
            + len(sep) * (n_text - 1)
            + sum(len(gap) + group_width(i) for i in range(len(self.models)))
        )
        out: list[str] = []
        if self.title:
            out.append(self.title)
        out.append("-" * total)
        spanner = " " * (sum(widths[:n_text]) + len(sep) * (n_text - 1))
        rules = spanner
        for i, m in enumerate(self.models):
            spanner += gap + m.center(group_width(i))
            rules += gap + "-" * group_width(i)
        out += [spanner.rstrip(), rules.rstrip()]
        out.append(join(self._headers(), col_headers))
        out.append("-" * total)
        for kind, text, label, cells, marks in lines:
            if kind in ("parameter", "statistic"):
                text_cells = [" " * 4 + text] + ([label] if self._show_label else [])
                out.append(join(text_cells, numbers(cells, marks)))
            else:
                out.append(" " * indent[kind] + text)
        out.append("-" * total)
        out.append("Note. " + self._note("*"))
        for ln in self._meta_lines():
            out.extend(_wrap_items([ln], max(total, 60)))
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        """HTML table for Jupyter: model titles span their columns; marked estimates in ``<b>``."""
        e = html.escape
        n_text = 2 if self._show_label else 1
        k = len(self._columns)
        ncol = n_text + k * len(self.models)
        est = self._est_index()
        left, right = "text-align:left", "text-align:right"
        out = ['<table class="pymsem-table" style="border-collapse:collapse">']
        if self.title:
            out.append(f'<caption style="{left};font-weight:bold">{e(self.title)}</caption>')
        out.append('<thead style="border-top:1px solid;border-bottom:1px solid">')
        spans = "".join(
            f'<th colspan="{k}" style="text-align:center;border-bottom:1px solid;padding-left:1em">{e(m)}</th>'
            for m in self.models
        )
        out.append(f'<tr><th colspan="{n_text}"></th>{spans}</tr>')
        head = "".join(f'<th style="{left}">{e(h)}</th>' for h in self._headers())
        head += "".join(f'<th style="{right}">{e(c.header)}</th>' for _ in self.models for c in self._columns)
        out.append(f"<tr>{head}</tr></thead>")
        out.append('<tbody style="border-bottom:1px solid">')
        for kind, text, label, cells, marks in self._lines():
            if kind == "level":
                out.append(f'<tr><th colspan="{ncol}" scope="rowgroup" style="{left}">{e(text)}</th></tr>')
            elif kind == "block":
                out.append(
                    f'<tr><td colspan="{ncol}" style="{left};padding-left:1em;font-style:italic">{e(text)}</td></tr>'
                )
            else:
                row = [f'<td style="{left};padding-left:2em">{e(text)}</td>']
                if self._show_label:
                    row.append(f'<td style="{left}">{e(label)}</td>')
                for group, mark in zip(cells, marks):
                    for j, x in enumerate(group):
                        x = e(x)
                        if j == est and mark and x:
                            x = f"<b>{x}</b>"
                        row.append(f'<td style="{right}">{x}</td>')
                out.append(f"<tr>{''.join(row)}</tr>")
        out.append("</tbody><tfoot>")
        out.append(f'<tr><td colspan="{ncol}" style="{left}"><i>Note.</i> {e(self._note("bold:"))}</td></tr>')
        for ln in self._meta_lines():
            out.append(f'<tr><td colspan="{ncol}" style="{left}">{e(ln)}</td></tr>')
        out.append("</tfoot></table>")
        return "\n".join(out)

    def to_markdown(self) -> str:
        """GitHub Markdown pipe table; headers name the model (``"Model 1 Est."``), marked estimates in bold.

        Returns
        -------
        str
            The Markdown text.
        """
        n_text = 2 if self._show_label else 1
        est = self._est_index()
        headers = [*self._headers(), *(f"{m} {c.header}" for m in self.models for c in self._columns)]
        empty = [""] * (len(headers) - 1)
        grid: list[list[str]] = []
        for kind, text, label, cells, marks in self._lines():
            if kind == "level":
                grid.append([f"**{_md_escape(text)}**", *empty])
            elif kind == "block":
                # Leading spaces are stripped from cells, so indent with non-breaking spaces.
                grid.append([f"&nbsp;&nbsp;**{_md_escape(text)}**", *empty])
            else:
                row = [f"&nbsp;&nbsp;&nbsp;&nbsp;{_md_escape(text)}"]
                if self._show_label:
                    row.append(_md_escape(label))
                for group, mark in zip(cells, marks):
                    row += [f"**{x}**" if j == est and mark and x else x for j, x in enumerate(group)]
                grid.append(row)
        widths = [max([len(h), 3] + [len(r[j]) for r in grid]) for j, h in enumerate(headers)]

        def line(cells: list[str]) -> str:
            padded = [c.ljust(w) if j < n_text else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))]
            return "| " + " | ".join(padded) + " |"

        rule = ["-" * (w - 1) + ":" if j >= n_text else ":" + "-" * (w - 1) for j, w in enumerate(widths)]
        out: list[str] = []
        if self.title:
            out += [f"**{_md_escape(self.title)}**", ""]
        out += [line(headers), "| " + " | ".join(rule) + " |", *(line(r) for r in grid)]
        out += ["", f"*Note.* {_md_escape(self._note('bold:'))}"]
        for ln in self._meta_lines():
            out += ["", _md_escape(ln)]
        return "\n".join(out)

    def to_latex(self, float_env: bool = True) -> str:
        r"""LaTeX with booktabs rules, a spanner per model; marked estimates in ``\textbf{}``.

        Parameters
        ----------
        float_env
            Wrap the ``tabular`` in a ``table`` float with the title as ``\caption``.

        Returns
        -------
        str
            LaTeX source; needs ``\usepackage{booktabs}``.
        """
        n_text = 2 if self._show_label else 1
        k = len(self._columns)
        ncol = n_text + k * len(self.models)
        est = self._est_index()
        tab = [r"\begin{tabular}{" + "l" * n_text + "r" * (ncol - n_text) + "}", r"\toprule"]
        spans = [rf"\multicolumn{{{k}}}{{c}}{{{_latex_escape(m)}}}" for m in self.models]
        tab.append(" & ".join([""] * n_text + spans) + r" \\")
        tab.append(
            " ".join(
                rf"\cmidrule(lr){{{n_text + i * k + 1}-{n_text + (i + 1) * k}}}"
                for i in range(len(self.models))
            )
        )
        headers = [*self._headers(), *(c.latex for _ in self.models for c in self._columns)]
        tab += [" & ".join(headers) + r" \\", r"\midrule"]
        for i, (kind, text, label, cells, marks) in enumerate(self._lines()):
            if kind == "level":
                if i:
                    tab.append(r"\addlinespace")
                tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{_latex_escape(text)}}}}} \\")
            elif kind == "block":
                tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\hspace{{1em}}{_latex_escape(text)}}} \\")
            else:
                row = [r"\hspace{2em}" + _latex_escape(text)]
                if self._show_label:
                    row.append(_latex_escape(label))
                for group, mark in zip(cells, marks):
                    for j, x in enumerate(group):
                        x = _latex_number(x)
                        row.append(rf"\textbf{{{x}}}" if j == est and mark and x else x)
                tab.append(" & ".join(row) + r" \\")
        tab.append(r"\bottomrule")
        tab.append(
            rf"\multicolumn{{{ncol}}}{{l}}{{\footnotesize\textit{{Note.}} {_latex_escape(self._note('bold:'))}}} \\"
        )
        for ln in self._meta_lines():
            tab.append(rf"\multicolumn{{{ncol}}}{{l}}{{\footnotesize {_latex_escape(ln)}}} \\")
        tab.append(r"\end{tabular}")
        if not float_env:
            return "\n".join(tab)
        out = [r"\begin{table}[htbp]", r"\centering"]
        if self.title:
            out.append(rf"\caption{{{_latex_escape(self.title)}}}")
        return "\n".join([*out, *tab, r"\end{table}"])
