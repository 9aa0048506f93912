"""lavaan's two-level model syntax, read into and written from pymsem's parameter table.

:func:`parse_lavaan` turns lavaan model text into :class:`~pymsem.specification.partable.Statement`
rows (the layer every front end writes); :func:`to_lavaan` writes rows back as text that
:func:`parse_lavaan` reads to the same rows. The tokenizer and parser are written by hand so that
every error is an :class:`~pymsem.specification.errors.MSEMSyntaxError` naming the 1-based line
and column and what was expected there.

Supported
---------
- ``level: 1`` / ``level: within`` and ``level: 2`` / ``level: between`` blocks; every statement
  other than ``:=`` belongs to one.
- ``F =~ x1 + a*x2 + 1*x3 + NA*x4``: loadings with labels, fixed values and freed markers.
- ``y ~ x1 + b*x2``: regressions; ``y ~ 1``, ``y ~ m*1``, ``y ~ 0*1``: intercepts (means).
- ``a ~~ b``, ``a ~~ r*b``, ``a ~~ a``, ``x ~~ 0*x``: (residual) covariances and variances.
- ``name := expression``: defined quantities, in the expression language of
  :mod:`pymsem.effects.derived` (``indirect(a_w, b_w)``, ``a_b - a_w``, ...).
- Modifiers: a label (``a*x``, ``"a"*x``, ``label("a")*x``), a number (``1*x``, ``-0.5*x``,
  ``1e-3*x``) or ``NA*x``. As in lavaan, a term repeated in one statement merges its modifiers,
  so ``NA*x1 + l1*x1`` frees the marker loading and labels it.
- Several outcomes on the left, ``y1 + y2 ~ x``: one row per outcome, as in lavaan.
- Comments from ``#`` or ``!`` to the end of the line; statements separated by newlines or
  ``;``; a statement continues on the next line when its line ends with an operator (``+``,
  ``*``, ``=~``, ``~``, ``~~``, ``:=``, ...), inside open parentheses, or when the next line
  starts with ``+`` or ``*``.
- Random slopes, pymsem's extension (lavaan has none): in the ``level: 1`` block,
  ``RSa | INT ~ REL`` lets the slope of ``INT`` on ``REL`` vary over clusters and names it
  ``RSa``; ``RSa | INT ~ a_w*REL`` labels the slope's mean ``a_w``. One predictor per line. The
  slope's mean, moderators and covariances are ordinary level-2 statements: ``RSa ~ a_w*1``,
  ``RSa ~ m*SES``, ``RSa ~~ rCor*RSb``.
- Ordinal variables as lavaan declares them, outside the model text: ``ordered=["u1", "u2"]``
  (``MSEM.from_lavaan(text, data, cluster, ordered=[...])``), which :func:`lavaan_arguments`
  turns into :class:`~pymsem.specification.model.MSEM`'s ``ordinal=``. Their thresholds are
  estimated without being written.

Not supported yet (refused with a message naming the construct)
---------------------------------------------------------------
- ``group:`` blocks (multiple groups) and any block other than ``level:``.
- The operators ``<~`` (formative indicators), ``~*~`` (scaling factors), ``==``, ``<``, ``>``
  (constraints; equal labels make parameters equal) and ``|`` as thresholds (``u | t1 + t2``;
  declare the variable in ``ordered=`` instead, and its thresholds are estimated).
- ``ordered=True`` (lavaan: every observed variable is ordinal): name the columns.
- The modifiers ``start(...)``, ``c(...)`` (one value per group), ``equal("...")``,
  ``lower(...)`` / ``upper(...)``, ``prior(...)`` (blavaan), ``efa("...")`` and lavaan's
  ``0.5?x`` start values; more than one modifier chained on one term (``NA*a*x``; repeat the
  term instead: ``NA*x + a*x``).
- Interaction terms ``x1:x2`` and function calls in formulas (transform the data instead).
- The same element in two statements of one level (lavaan's "duplicate model element").

Round trip: ``parse_lavaan(to_lavaan(t))`` has the rows of ``t`` (``origin`` aside) in the order
level 1, level 2, ``:=``, each in the table's order; a table already in that order (such as one
read by :func:`parse_lavaan` from text in that order) comes back row for row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from pymsem.specification.errors import MSEMSpecificationError, MSEMSyntaxError
from pymsem.specification.partable import ParameterTable, Statement

__all__ = ["lavaan_arguments", "parse_lavaan", "to_lavaan"]

# Longest first: "~*~" must not be read as "~" followed by "*~".
_MULTI_OPS = ("~*~", "=~", "~~", ":=", "<~", "==", "<=", ">=")
#: Operators that relate a left-hand side to a right-hand side.
_RELATIONS = {"=~", "~", "~~", ":=", "<~", "~*~", "==", "<", ">", "<=", ">=", "|"}
#: A line ending in one of these continues on the next line.
_CONTINUES = _RELATIONS | {"+", "*", "-", "/", "^", ",", "("}
_DIGITS = "0123456789"
_LEVELS = {"1": 1, "within": 1, "2": 2, "between": 2}
_OPERATORS_HINT = "=~, ~, ~~ or :="

#: lavaan modifiers written as function calls that pymsem does not read yet, and why.
_REFUSED_MODIFIERS = {
    "start": "start values (start(...)*x) are not supported yet: NUTS starts from the priors",
    "c": (
        "c(...) modifiers (one value per group) are not supported yet: pymsem fits a single group; "
        "write one label or value, e.g. a*x"
    ),
    "equal": (
        'equal("...") modifiers are not supported yet: give the parameters the same label to make them equal'
    ),
    "lower": "bounds (lower(...)*x) are not supported yet; set a prior with MSEM.set_prior instead",
    "upper": "bounds (upper(...)*x) are not supported yet; set a prior with MSEM.set_prior instead",
    "prior": "prior(...) modifiers (blavaan) are not supported yet; use MSEM.set_prior instead",
    "efa": 'efa("...") blocks are not supported yet',
    "rv": "rv(...) modifiers are not supported yet",
}


# ---------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class _Token:
    """One token; ``kind`` is name, number, string, op, newline or eof."""

    kind: str
    text: str
    line: int
    column: int

    @property
    def end_column(self) -> int:
        return self.column + len(self.text)

    def is_op(self, *texts: str) -> bool:
        return self.kind == "op" and self.text in texts

    @property
    def terminates(self) -> bool:
        return self.kind in ("newline", "eof") or self.is_op(";")

    def describe(self) -> str:
        if self.kind == "newline":
            return "the end of the line"
        if self.kind == "eof":
            return "the end of the model text"
        return repr(self.text) if self.kind != "string" else self.text


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens, dropping comments and spaces but keeping newlines."""
    out: list[_Token] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        col = i - line_start + 1
        if ch == "\n":
            out.append(_Token("newline", "\n", line, col))
            line, line_start, i = line + 1, i + 1, i + 1
        elif ch in "#!":
            while i < n and text[i] != "\n":
                i += 1
        elif ch.isspace():
            i += 1
        elif ch.isalpha() or ch == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_."):
                j += 1
            out.append(_Token("name", text[i:j], line, col))
            i = j
        elif ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j < n and text[j] == ".":
                j += 1
                while j < n and text[j] in _DIGITS:
                    j += 1
            # An exponent only when digits follow, so that "2e" stays a number and a name.
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k] in _DIGITS:
                    while k < n and text[k] in _DIGITS:
                        k += 1
                    j = k
            out.append(_Token("number", text[i:j], line, col))
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 1
            if j >= n or text[j] != ch:
                raise MSEMSyntaxError(f"the string starting here has no closing {ch}", line, col)
            out.append(_Token("string", text[i : j + 1], line, col))
            i = j + 1
        else:
            op = next((m for m in _MULTI_OPS if text.startswith(m, i)), ch)
            out.append(_Token("op", op, line, col))
            i += len(op)
    out.append(_Token("eof", "", line, i - line_start + 1))
    return out


def _next_significant(tokens: list[_Token], i: int) -> int:
    while tokens[i].kind == "newline":
        i += 1
    return i


def _starts_statement(tokens: list[_Token], i: int) -> bool:
    """Whether the line at ``i`` reads as a statement of its own (has an operator or is a block line)."""
    if tokens[i].kind == "name" and tokens[i + 1].is_op(":"):
        return True
    while not tokens[i].terminates:
        if tokens[i].kind == "op" and tokens[i].text in _RELATIONS:
            return True
        i += 1
    return False


def _statements(tokens: list[_Token]) -> list[list[_Token]]:
    """Group tokens into statements, each ending with its terminator (newline, ``;`` or eof)."""
    out: list[list[_Token]] = []
    cur: list[_Token] = []
    depth = 0
    i = 0
    while True:
        tok = tokens[i]
        if tok.kind == "newline" and cur:
            nxt = _next_significant(tokens, i)
            # A trailing operator continues the statement, unless the next line is a statement
            # of its own: then the error is reported where the text stops, not a line later.
            trailing = cur[-1].kind == "op" and cur[-1].text in _CONTINUES
            if depth > 0 or (trailing and not _starts_statement(tokens, nxt)) or tokens[nxt].is_op("+", "*"):
                i = nxt
                continue
        if tok.terminates:
            if cur:
                out.append([*cur, tok])
                cur, depth = [], 0
            if tok.kind == "eof":
                return out
            i += 1
            continue
        if tok.is_op("("):
            depth += 1
        elif tok.is_op(")"):
            depth = max(depth - 1, 0)
        cur.append(tok)
        i += 1


# ---------------------------------------------------------------------------------------- parser
class _Cursor:
    """Reads one statement's tokens; the last token is always the terminator."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, k: int = 0) -> _Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def next(self) -> _Token:
        tok = self.peek()
        if not tok.terminates:
            self.i += 1
        return tok

    @property
    def previous(self) -> _Token | None:
        return self.tokens[self.i - 1] if self.i > 0 else None

    def error(self, message: str, tok: _Token | None = None) -> MSEMSyntaxError:
        """An error at ``tok`` (default: the next token); at a line's end, just after its last token."""
        tok = self.peek() if tok is None else tok
        if tok.kind in ("newline", "eof") and self.previous is not None:
            prev = self.previous
            return MSEMSyntaxError(message, prev.line, prev.end_column)
        return MSEMSyntaxError(message, tok.line, tok.column)

    def expected(self, what: str, after: _Token | None = None) -> MSEMSyntaxError:
        after = self.previous if after is None else after
        where = f" after {after.text!r}" if after is not None else ""
        return self.error(f"expected {what}{where}, found {self.peek().describe()}")


@dataclass
class _Modifiers:
    label: str | None = None
    fixed: float | None = None
    free: bool = False

    def merge(self, other: _Modifiers, cursor: _Cursor, tok: _Token, what: str) -> None:
        """Combine the modifiers of a term repeated in one statement (lavaan merges them)."""
        if other.label is not None:
            if self.label is not None and self.label != other.label:
                raise cursor.error(f"{what} has two labels, {self.label!r} and {other.label!r}", tok)
            self.label = other.label
        if other.fixed is not None:
            if self.fixed is not None and self.fixed != other.fixed:
                raise cursor.error(f"{what} is fixed to two values, {self.fixed:g} and {other.fixed:g}", tok)
            self.fixed = other.fixed
        self.free = self.free or other.free
        # Statement would refuse these too, but only the merge knows which term caused them.
        if self.fixed is not None and self.label is not None:
            raise cursor.error(
                f"{what} is both labelled {self.label!r} and fixed to {self.fixed:g}; a label makes "
                f"parameters equal to each other, a fixed value needs no label",
                tok,
            )
        if self.fixed is not None and self.free:
            raise cursor.error(f"{what} is both fixed to {self.fixed:g} and freed (NA*)", tok)


@dataclass
class _Term:
    """One right-hand-side term: a variable (``None`` for the intercept ``1``), its modifiers, its first token."""

    name: str | None
    mods: _Modifiers
    tok: _Token


@dataclass
class _Parser:
    level: int | None = None
    rows: list[Statement] = field(default_factory=list)
    #: (level, lhs, op, rhs) -> line, to refuse an element given in two statements.
    seen: dict[tuple[int, str, str, str], int] = field(default_factory=dict)
    slopes: dict[str, int] = field(default_factory=dict)
    defined: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ statements
    def statement(self, tokens: list[_Token]) -> None:
        c = _Cursor(tokens)
        first = c.peek()
        if first.kind == "name" and c.peek(1).is_op(":"):
            self.block(c)
            return
        lhs = self.lhs_names(c)
        op = c.peek()
        if op.is_op("=~", "~", "~~"):
            c.next()
            self.relation(c, lhs, op)
        elif op.is_op(":="):
            c.next()
            self.define(c, lhs, op)
        elif op.is_op("|"):
            c.next()
            self.random_slope(c, lhs, op)
        else:
            raise self.unknown_operator(c, op)

    def unknown_operator(self, c: _Cursor, op: _Token) -> MSEMSyntaxError:
        refused = {
            "<~": "formative indicators ('<~') are not supported yet",
            "~*~": "scaling factors ('~*~') are not supported yet",
            "=": "'=' is not a lavaan operator; did you mean '=~' (measured by) or ':=' (defined as)?",
            ":": "interaction terms (x1:x2) are not supported yet; compute the product in the data",
        }
        if op.kind == "op" and op.text in refused:
            return c.error(refused[op.text], op)
        if op.is_op("==", "<", ">", "<=", ">="):
            return c.error(
                f"constraints ('{op.text}') are not supported yet; give parameters the same label "
                f"to make them equal",
                op,
            )
        if op.kind == "op" and not op.terminates:
            return c.error(f"unknown operator {op.text!r}; lavaan statements use {_OPERATORS_HINT}", op)
        return c.expected(f"an operator ({_OPERATORS_HINT})")

    def block(self, c: _Cursor) -> None:
        name = c.next()
        colon = c.next()
        if name.text == "group":
            raise c.error("multiple groups ('group:' blocks) are not supported yet", name)
        if name.text != "level":
            raise c.error(
                f"unknown block '{name.text}:'; two-level syntax uses 'level: 1' (within) and "
                f"'level: 2' (between)",
                name,
            )
        value = c.peek()
        if value.terminates:
            raise c.expected("1, 2, within or between", colon)
        c.next()
        if value.text.lower() not in _LEVELS:
            raise c.error(
                f"level {value.text!r}: two-level models have level: 1 (within) and level: 2 (between)",
                value,
            )
        if not c.peek().terminates:
            raise c.expected("the end of the line", value)
        self.level = _LEVELS[value.text.lower()]

    def lhs_names(self, c: _Cursor) -> list[_Token]:
        names = [self.name(c, "a variable name at the start of the statement")]
        while c.peek().is_op("+"):
            c.next()
            names.append(self.name(c, "a variable name"))
        if c.peek().is_op("*"):
            raise c.error(
                f"modifiers such as '{names[-1].text}*' go on the right-hand side of the operator",
                names[-1],
            )
        return names

    def name(self, c: _Cursor, what: str) -> _Token:
        tok = c.peek()
        if tok.kind == "name" and c.peek(1).is_op("("):
            raise self.function_call(c, tok)
        if tok.kind != "name" or tok.text == "NA":
            raise c.expected(what)
        return c.next()

    def function_call(self, c: _Cursor, tok: _Token) -> MSEMSyntaxError:
        if tok.text in _REFUSED_MODIFIERS:
            return c.error(_REFUSED_MODIFIERS[tok.text], tok)
        return c.error(
            f"function calls such as '{tok.text}(...)' are not read in a formula; transform the "
            f"column in the data",
            tok,
        )

    def need_level(self, c: _Cursor, first: _Token) -> int:
        if self.level is None:
            text = " ".join(t.text for t in c.tokens[:-1])
            raise c.error(
                f"statement {text!r} comes before any 'level:' line; two-level syntax puts each "
                f"statement in a 'level: 1' (within) or 'level: 2' (between) block",
                first,
            )
        return self.level

    # ------------------------------------------------------------------ rows
    def add(self, c: _Cursor, tok: _Token, level: int, lhs: str, op: str, rhs: str, **kw: object) -> None:
        key = (level, lhs, op, rhs)
        # lavaan: a ~~ b and b ~~ a are one element.
        keys = [key, (level, rhs, op, lhs)] if op == "~~" else [key]
        for k in keys:
            if k in self.seen:
                shown = f"{lhs} ~ 1" if op == "~1" else f"{lhs} {op} {rhs}"
                raise c.error(
                    f"duplicate model element '{shown}' at level {level}: already given on line "
                    f"{self.seen[k]}; give each element once (in one statement, a repeated term "
                    f"merges its modifiers: NA*x + a*x)",
                    tok,
                )
        try:
            row = Statement(level, lhs, op, rhs, **kw)  # type: ignore[arg-type]
        except MSEMSpecificationError as e:
            raise c.error(str(e).rstrip("."), tok) from None
        self.seen[key] = tok.line
        self.rows.append(replace(row, origin=f"lavaan line {tok.line}"))

    def relation(self, c: _Cursor, lhs: list[_Token], op: _Token) -> None:
        level = self.need_level(c, lhs[0])
        terms = self.terms(c, op)
        for name in lhs:
            for t in terms:
                if op.text == "=~" and t.name == name.text:
                    raise c.error(f"factor {name.text!r} cannot be measured by itself", t.tok)
                row_op, rhs = ("~1", "") if t.name is None else (op.text, t.name)
                self.add(
                    c, t.tok, level, name.text, row_op, rhs,
                    label=t.mods.label, fixed=t.mods.fixed, free=t.mods.free,
                )  # fmt: skip

    def random_slope(self, c: _Cursor, names: list[_Token], bar: _Token) -> None:
        # After '|': an outcome and '~' make pymsem's random-slope form; anything else is
        # lavaan's thresholds.
        outcomes: list[_Token] = []
        j = c.i
        while c.peek().kind == "name" and not c.peek(1).is_op("("):
            outcomes.append(c.next())
            if not c.peek().is_op("+"):
                break
            c.next()
        if not outcomes or not c.peek().is_op("~"):
            c.i = j
            raise c.error(
                "thresholds ('y | t1 + t2', for ordinal variables) are not supported yet: declare "
                "ordinal variables with ordered=[...] and their thresholds are estimated; '|' is "
                "read only in pymsem's random-slope form 'RSa | y ~ x' in the level: 1 block",
                bar,
            )
        if len(names) > 1:
            raise c.error("one random slope name before '|': write 'RSa | y ~ x'", names[1])
        if len(outcomes) > 1:
            raise c.error(
                f"one outcome per random slope: write '{names[0].text} | {outcomes[0].text} ~ ...'; "
                f"give each outcome's slope its own line and name",
                outcomes[1],
            )
        slope, outcome = names[0], outcomes[0]
        tilde = c.next()
        level = self.need_level(c, slope)
        if level != 1:
            raise c.error(
                f"random slope {slope.text!r}: random slopes are declared in the level: 1 block "
                f"('{slope.text} | y ~ x'); at level 2 write the slope's mean and covariances as "
                f"'{slope.text} ~ 1' and '{slope.text} ~~ ...'",
                slope,
            )
        terms = self.terms(c, tilde)
        if len(terms) > 1:
            raise c.error(
                f"one predictor per random slope: '{slope.text} | {outcome.text} ~ {terms[0].tok.text}'; "
                f"give each random slope its own line and name",
                terms[1].tok,
            )
        term = terms[0]
        if term.name is None:
            raise c.error(f"random slope {slope.text!r} needs a predictor, not the intercept '1'", term.tok)
        if term.mods.fixed is not None or term.mods.free:
            raise c.error(
                f"random slope {slope.text!r}: the predictor takes only a label (the label of the "
                f"slope's mean, '{slope.text} | {outcome.text} ~ a*{term.name}')",
                term.tok,
            )
        if slope.text in self.slopes:
            raise c.error(
                f"random slope {slope.text!r} is already declared on line {self.slopes[slope.text]}",
                slope,
            )
        self.add(c, term.tok, 1, outcome.text, "~", term.name, label=term.mods.label, random=slope.text)
        self.slopes[slope.text] = slope.line

    def define(self, c: _Cursor, lhs: list[_Token], op: _Token) -> None:
        from pymsem.effects.derived import parse

        if len(lhs) > 1:
            raise c.error("a defined quantity has one name on the left of ':='", lhs[1])
        name = lhs[0]
        if not name.text.isidentifier():
            raise c.error(
                f"{name.text!r} is not a valid name for a defined quantity: use letters, digits "
                f"and underscores",
                name,
            )
        body = c.tokens[c.i : -1]
        if not body:
            raise c.expected("an expression", op)
        # The expression as written: the text between tokens on one line is only spaces.
        parts = [body[0].text]
        for prev, tok in pairwise(body):
            gap = " " * (tok.column - prev.end_column) if tok.line == prev.line else " "
            parts.append(gap + tok.text)
        expression = "".join(parts).strip()
        try:
            parse(expression, name.text)
        except MSEMSpecificationError as e:
            raise c.error(str(e).rstrip("."), body[0]) from None
        if name.text in self.defined:
            raise c.error(f"{name.text!r} is defined twice (first on line {self.defined[name.text]})", name)
        self.defined[name.text] = name.line
        self.rows.append(Statement(0, name.text, ":=", expression, origin=f"lavaan line {name.line}"))

    # ------------------------------------------------------------------ right-hand sides
    def terms(self, c: _Cursor, op: _Token) -> list[_Term]:
        """``term ('+' term)*`` up to the end of the statement; repeated terms are merged."""
        out: dict[str | None, _Term] = {}
        after = op
        while True:
            term = self.term(c, op, after)
            if term.name in out:
                what = f"'{term.name}'" if term.name is not None else "the intercept '1'"
                out[term.name].mods.merge(term.mods, c, term.tok, what)
            else:
                out[term.name] = term
            nxt = c.peek()
            if nxt.terminates:
                return list(out.values())
            if nxt.is_op("-"):
                raise c.error("terms are joined with '+'; a negative fixed value is written -0.5*x", nxt)
            if nxt.is_op(":"):
                raise c.error(
                    "interaction terms (x1:x2) are not supported yet; compute the product in the data",
                    nxt,
                )
            if not nxt.is_op("+"):
                raise c.expected("'+' or the end of the statement")
            after = c.next()

    def term(self, c: _Cursor, op: _Token, after: _Token) -> _Term:
        """``modifier '*' variable``, or a bare variable, or ``1`` (the intercept) after ``~``."""
        mods: list[tuple[_Token, _Modifiers]] = []
        start = c.peek()
        while True:
            tok, kind, value = self.element(c, op, after)
            if c.peek().is_op("?"):
                raise c.error("start values (0.5?x) are not supported yet", c.peek())
            if not c.peek().is_op("*"):
                break
            mods.append((tok, self.modifier(kind, value)))
            after = c.next()
        if len(mods) > 1:
            raise c.error(
                "one modifier per term; to free and label a parameter, repeat the term: NA*x + a*x",
                mods[1][0],
            )
        if kind == "name":
            name: str | None = value
        elif kind == "number" and float(value) == 1.0 and not value.startswith("-"):
            if op.text != "~":
                raise c.error(f"'1' (an intercept) is written 'y ~ 1', not after {op.text!r}", tok)
            name = None
        else:
            hint = " or 1 (the intercept)" if op.text == "~" else ""
            raise c.error(f"expected a variable name{hint} after {after.text!r}, found {tok.describe()}", tok)
        return _Term(name, mods[0][1] if mods else _Modifiers(), start)

    def element(self, c: _Cursor, op: _Token, after: _Token) -> tuple[_Token, str, str]:
        """One factor of a term: ``(tok, kind, value)`` with kind name, number, na or label."""
        tok = c.peek()
        hint = " or 1 (the intercept)" if op.text == "~" else ""
        if tok.is_op("-", "+") and c.peek(1).kind == "number":
            c.next()
            num = c.next()
            sign = "-" if tok.text == "-" else ""
            return tok, "number", sign + num.text
        if tok.kind == "number":
            return c.next(), "number", tok.text
        if tok.kind == "string":
            label = tok.text[1:-1]
            c.next()
            return tok, "label", label
        if tok.kind == "name":
            if c.peek(1).is_op("("):
                if tok.text == "label":
                    return tok, "label", self.label_call(c)
                raise self.function_call(c, tok)
            c.next()
            return tok, "na" if tok.text == "NA" else "name", tok.text
        raise c.error(f"expected a variable name{hint} after {after.text!r}, found {tok.describe()}", tok)

    def label_call(self, c: _Cursor) -> str:
        c.next()
        c.next()
        arg = c.peek()
        if arg.kind != "string" or not c.peek(1).is_op(")"):
            raise c.expected('one quoted label, label("a")')
        c.next()
        c.next()
        return arg.text[1:-1]

    @staticmethod
    def modifier(kind: str, value: str) -> _Modifiers:
        if kind == "number":
            return _Modifiers(fixed=float(value))
        if kind == "na":
            return _Modifiers(free=True)
        return _Modifiers(label=value)


def parse_lavaan(text: str) -> ParameterTable:
    """Read lavaan's two-level model syntax into pymsem's parameter table.

    Parameters
    ----------
    text
        lavaan model text with ``level: 1`` and ``level: 2`` blocks (and pymsem's random slopes,
        ``RSa | y ~ x``); see the module docstring for what is supported.

    Returns
    -------
    ParameterTable
        One row per element, in the order written; each row's ``origin`` is ``"lavaan line n"``.

    Raises
    ------
    MSEMSyntaxError
        For text that cannot be read or uses a construct not supported yet, with the line and
        column and what was expected there.

    Examples
    --------
    >>> t = parse_lavaan('''
    ... level: 1
    ...   INT ~ a_w*REL
    ... level: 2
    ...   INT ~ a_b*REL
    ... ''')
    >>> [r.text() for r in t]
    ['INT ~ REL', 'INT ~ REL']
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_lavaan takes the model text as a string, got {type(text).__name__}.")
    parser = _Parser()
    for statement in _statements(_tokenize(text)):
        parser.statement(statement)
    return ParameterTable(parser.rows)


def lavaan_arguments(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~pymsem.specification.model.MSEM`'s keyword arguments from lavaan-style ones.

    lavaan declares ordinal variables with ``ordered=``; pymsem's name is ``ordinal=``. Other
    arguments pass through unchanged.

    Parameters
    ----------
    kwargs
        Keyword arguments given to ``MSEM.from_lavaan``: ``ordered`` (a column name or a list of
        them) and any of :class:`~pymsem.specification.model.MSEM`'s.

    Returns
    -------
    dict
        A copy of ``kwargs`` with ``ordered`` merged into ``ordinal`` (names in order, each once).

    Raises
    ------
    MSEMSpecificationError
        For ``ordered=True`` (lavaan's "every observed variable"), or ``ordered`` that is not a
        name or a list of names.

    Examples
    --------
    >>> lavaan_arguments({"ordered": ["u1", "u2"], "level2": ["w"]})
    {'level2': ['w'], 'ordinal': ('u1', 'u2')}
    """
    out = dict(kwargs)
    if "ordered" not in out:
        return out
    ordered = out.pop("ordered")
    if ordered is None or ordered is False:
        return out
    if ordered is True:
        raise MSEMSpecificationError(
            "ordered=True (lavaan's 'every observed variable is ordinal') is not supported: name the "
            "ordinal columns, ordered=['u1', 'u2', ...]."
        )
    if isinstance(ordered, str):
        ordered = [ordered]
    try:
        names = list(ordered)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise MSEMSpecificationError(
            f"ordered= takes the names of the ordinal columns, a list of strings such as "
            f"['u1', 'u2'], not {ordered!r}."
        )
    earlier = out.pop("ordinal", ())
    earlier = [earlier] if isinstance(earlier, str) else list(earlier)
    out["ordinal"] = tuple(dict.fromkeys([*earlier, *names]))
    return out


# ---------------------------------------------------------------------------------------- writer
def _is_name(s: str) -> bool:
    return (
        bool(s)
        and (s[0].isalpha() or s[0] == "_")
        and all(ch.isalnum() or ch in "_." for ch in s)
        and s != "NA"
    )


def _number(x: float, row: Statement) -> str:
    if not math.isfinite(x):
        raise MSEMSpecificationError(
            f"{row.text()}: a fixed value of {x} cannot be written in lavaan syntax."
        )
    # Integers as lavaan users write them (1*x); other values by repr, which reads back exactly.
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _term(row: Statement) -> list[str]:
    var = "1" if row.op == "~1" else row.rhs
    if row.fixed is not None:
        return [f"{_number(row.fixed, row)}*{var}"]
    if row.free:
        return [f"NA*{var}"] + ([f"{row.label}*{var}"] if row.label else [])
    return [f"{row.label}*{var}" if row.label else var]


def _check_writable(rows: list[Statement]) -> None:
    """Refuse rows that the parser would read back differently."""
    seen: set[tuple[int, str, str, str]] = set()
    slopes: set[str] = set()
    defined: set[str] = set()
    for r in rows:
        where = f"{r.text()}{f' ({r.origin})' if r.origin else ''}"
        if r.op == ":=":
            bad = any(ch in r.rhs for ch in "\n;#!") or not r.rhs.strip()
            if r.level != 0 or r.label or r.fixed is not None or r.free or r.random or bad:
                raise MSEMSpecificationError(
                    f"{where}: a defined quantity is level 0 with a one-line expression and no modifiers."
                )
            if r.lhs in defined:
                raise MSEMSpecificationError(f"{where}: {r.lhs!r} is defined twice.")
            defined.add(r.lhs)
            continue
        if r.level not in (1, 2):
            raise MSEMSpecificationError(f"{where}: level {r.level}; lavaan rows are at level 1 or 2.")
        if r.label == "NA":
            raise MSEMSpecificationError(f"{where}: the label 'NA' would read back as a freed parameter.")
        names = [r.lhs] + ([r.rhs] if r.op != "~1" else [])
        if not all(_is_name(s) for s in names) or (r.op == "~1" and r.rhs):
            raise MSEMSpecificationError(f"{where}: not a variable name lavaan syntax can write.")
        if r.op == "=~" and r.lhs == r.rhs:
            raise MSEMSpecificationError(f"{where}: a factor cannot be measured by itself.")
        if r.random is not None:
            if r.op != "~" or r.level != 1 or not _is_name(r.random) or r.fixed is not None or r.free:
                raise MSEMSpecificationError(
                    f"{where}: a random slope is a level-1 regression with at most a label."
                )
            if r.random in slopes:
                raise MSEMSpecificationError(f"{where}: random slope {r.random!r} is used twice.")
            slopes.add(r.random)
        key = (r.level, r.lhs, r.op, r.rhs)
        if key in seen or (r.op == "~~" and (r.level, r.rhs, r.op, r.lhs) in seen):
            raise MSEMSpecificationError(f"{where}: the element is given twice at level {r.level}.")
        seen.add(key)


def _lines(rows: list[Statement]) -> list[str]:
    out: list[str] = []
    group: list[Statement] = []

    def key(r: Statement) -> tuple[str, str]:
        return r.lhs, "~" if r.op == "~1" else r.op

    def flush() -> None:
        if group:
            op = key(group[0])[1]
            out.append(f"{group[0].lhs} {op} {' + '.join(t for r in group for t in _term(r))}")
            group.clear()

    # Only consecutive rows share a line, so the rows read back in the table's order.
    for r in rows:
        if r.random is not None:
            flush()
            out.append(f"{r.random} | {r.lhs} ~ {' + '.join(_term(r))}")
            continue
        if group and key(group[-1]) != key(r):
            flush()
        group.append(r)
    flush()
    return out


def to_lavaan(table: ParameterTable) -> str:
    """Write the parameter table as lavaan two-level syntax that :func:`parse_lavaan` reads back.

    Parameters
    ----------
    table
        The rows to write (e.g. ``model.table`` or the result of :func:`parse_lavaan`).

    Returns
    -------
    str
        A header comment, the ``level: 1`` block, the ``level: 2`` block and the ``:=`` lines;
        consecutive rows with the same left-hand side and operator share a line
        (``F =~ x1 + x2``), random slopes are written ``RSa | y ~ x``.

    Raises
    ------
    MSEMSpecificationError
        For rows the syntax cannot express so as to read back the same (a level other than 1 or
        2, a name with spaces, an element given twice, a non-finite fixed value, ...).
    """
    rows = list(table)
    _check_writable(rows)
    lines = ["# pymsem model in lavaan syntax; 'RSa | y ~ x' is pymsem's random slope"]
    for level in (1, 2):
        block = [r for r in rows if r.op != ":=" and r.level == level]
        if block:
            lines.append(f"level: {level}")
            lines.extend(f"  {line}" for line in _lines(block))
    lines.extend(f"{r.lhs} := {r.rhs.strip()}" for r in rows if r.op == ":=")
    return "\n".join(lines) + "\n"
