"""Blimp's model syntax (rblimp's arguments or a whole input file), read into pymsem's parameter table.

:func:`parse_blimp` takes rblimp's arguments (``model``, ``latent``, ``center``, ``parameters``,
``clusterid``, ``fixed``); :func:`parse_blimp_file` takes the text of a Blimp input file. Both
write :class:`~pymsem.specification.partable.Statement` rows, the layer every front end writes,
and return them in a :class:`BlimpModel` with the cluster id and the sampler settings. The parser
is written by hand so that every error is an :class:`~pymsem.specification.errors.MSEMSyntaxError`
naming the 1-based line and column (of the file, or of the rblimp argument) and the construct.

How Blimp's names become pymsem's
---------------------------------
pymsem gives a variable one name at every level and splits every level-1 column into a latent
cluster mean (level 2) and the deviation from it (level 1). Blimp spells those parts out, so
the parser maps them back:

- ``LATENT: F_w; schid = F_b RSa;`` declares level-1 (``F_w``) and level-2 latents (after
  ``clusterid =``). A within factor ``X_w`` and a between factor ``X_b`` with the same
  indicators are one pymsem factor ``X`` (unless ``X`` is already a column or another name);
  a factor at one level keeps its name.
- ``x ~ 1@x_b`` makes the level-2 latent ``x_b`` the latent cluster mean of the column ``x``:
  ``x_b`` is ``x`` in level-2 rows, and the statement itself writes no row (pymsem's default).
  ``x_w = x - x_b`` (or ``(x - x_b)`` inline) is the within part: ``x`` in level-1 rows.
  ``x_bc = x_b - gm_x`` with ``x_b ~ 1@gm_x`` is the grand-mean-centered cluster mean: ``x`` in
  level-2 rows, and ``gm_x`` labels the grand mean, ``Statement(2, "x", "~1", label="gm_x")``.
- ``x.mean`` is the latent cluster mean of ``x`` (level 2).
- A plain column is its within part in a level-1 row and its cluster mean in a level-2 row.
- Levels: a statement whose variables are level-2 (between latents, cluster means, ``_bc``
  aliases, ``.mean``, the ``level2`` columns) is level 2; one on within latents, within aliases
  or columns is level 1. In a regression of a level-1 column ``y``, level-2 predictors
  (``y ~ x x.mean``, ``y ~ 1@y_b w2``) become level-2 rows of ``y``'s cluster mean. Without data
  the parser cannot tell that a column is constant within clusters: pass ``level2=`` for
  level-2 columns used on their own.
- Blimp is case-insensitive: a name matches a column, latent, alias or label whatever its case,
  and the rows use the column's (else the first) spelling.

Supported
---------
- Commands (case-insensitive, ending at ``;``, ``#`` comments): ``DATA``, ``VARIABLES``,
  ``CLUSTERID``, ``MISSING``, ``SEED``, ``BURN``, ``ITERATIONS`` (``ITER``), ``CHAINS``
  (``CHAIN``, ``4 processors 4``), ``NIMPS``, ``THIN``, ``FIXED``, ``LATENT``, ``CENTER``,
  ``MODEL``, ``PARAMETERS``, ``OPTIONS``, ``OUTPUT``, ``SAVE``; the settings are returned in
  :attr:`BlimpModel.settings`. ``NOMINAL`` and ``COUNT`` are accepted when empty.
- ``ORDINAL: x1:x4 y;`` (rblimp's ``ordinal=``): ordinal columns, in :attr:`BlimpModel.ordinal`,
  for :class:`~pymsem.specification.model.MSEM`'s ``ordinal=`` (probit thresholds on a latent
  response, Blimp's model for ordinal variables; binary is the two-category case).
- Variable ranges with a common prefix and suffix and a numeric part: ``ACH1:ACH4``,
  ``x1_i:x3_i``, ``y01:y12``.
- Block labels in ``MODEL`` (``within_l1:``, ``level2.models:``): names only.
- Regressions ``y ~ x1 x2`` and ``y <- x1 x2`` (several outcomes ``y1 y2 ~ x``); ``x@label``
  labels a coefficient, ``x@0.5`` fixes it (the row carries the value; the model decides whether
  it can be fixed). Intercepts: ``1`` (estimated by default), ``1@x_b`` (the cluster mean,
  above) and ``1@0`` on a factor (whose mean is 0 in pymsem) write no row; ``1@label`` writes
  ``Statement(2, y, "~1", label=...)``, the grand mean of ``y`` or a random slope's mean;
  ``1@2.5`` writes the fixed value at level 2 (the model refuses fixed grand means for now).
- Random slopes: ``y ~ x@RSa`` with ``RSa`` a level-2 latent: ``Statement(1, y, "~", x,
  random="RSa")``; ``RSa ~ 1@a_w W@m`` labels its mean and regresses it on a level-2 ``W``
  (cross-level moderation); ``RSa ~~ RSa``, ``RSa ~~ RSb@r``. rblimp's ``y ~ x | x`` gives the
  slope the name ``RS_<y>_<x>`` (pymsem names, e.g. ``RS_y_x``; ``y ~ x@b | x`` labels its mean
  ``b``).
- Loadings ``F -> x1:x4`` (also ``F =~ ...``), with ``x@0.8`` (fixed), ``x@lam`` (labelled); the
  first loading is fixed to 1 unless one is fixed (Blimp's and pymsem's default, written
  explicitly as the builder does). ``F -> x1:x4 | 0`` fixes the indicators' between-level
  residual variances to 0 (the factor must exist at both levels).
- ``1 -> x_b RSa`` (rblimp: estimate these means): pymsem estimates them anyway; no rows.
- Covariances and variances ``a ~~ b``, ``a <-> b``, ``a ~~ b@label``, ``a ~~ b@0``,
  ``x ~~ x``, ``x ~~ x@v``.
- ``CENTER: groupmean = x; grandmean = z x.mean;``: accepted and recorded; pymsem's defaults
  already are latent group-mean centering of level-1 predictors and grand-mean centering of
  level-2 ones, so no rows are written (see the difference below).
- The same element stated twice (``y ~ x@b`` in two statements) is one row when the statements
  agree, and an error naming the first when they do not.
- ``PARAMETERS: name = expression;`` -> ``:=`` rows, checked by
  :func:`pymsem.effects.derived.parse`: ``X.totalvar`` becomes ``var(RSa)`` for a random slope,
  ``var(X, within)`` / ``var(X, between)`` for a variable of one level and
  ``(var(x, within) + var(x, between))`` for a level-1 column; ``^`` becomes ``**``. Other names
  are labels (``a_w``, ``b_b``) or earlier parameters, and must exist.

Not supported yet (refused with a message naming the construct)
-----------------------------------------------------------------
- ``NOMINAL`` / ``COUNT`` variables, ``TRANSFORM``, ``BYGROUP``, ``RANDOMEFFECT``,
  ``SIMPLE``, ``TEST`` / ``WALDTEST``, ``FCS``, ``TIMEID``, ``WEIGHT``, ``DROPOUT``, ``FILTER``;
  three-level models (two cluster ids).
- Interactions ``x*z``, powers ``x^2``, functions in equations (``poly(x, 2)``, ``log(x)``), and
  variables defined by expressions other than the two centerings above (``xz = x*z``).
- ``x.lag`` and other ``.`` attributes in model equations except ``.mean``; ``.mean`` and other
  attributes except ``.totalvar`` in ``PARAMETERS``.
- A level-2 latent that is none of a factor, a cluster mean or a random slope; a latent
  measured by regressions (``y ~ F@1``) instead of loadings; second-order factors.
- Intercepts of within-level variables other than ``1`` and ``1@0`` (their means are 0 in
  pymsem), and estimated factor means (``1@m`` on a factor, ``1 -> F``).
- Priors and other statements in ``PARAMETERS`` than ``name = expression``.

Known differences from Blimp
----------------------------
- A level-1 column in a level-1 regression is always its within-cluster part (latent
  group-mean centering); Blimp uses the raw (or grand-mean-centered) column unless told
  otherwise, which mixes its within and between effects. pymsem has no such conflated effect.
- Level-2 latents have mean zero in pymsem, so ``x_b`` and ``x_bc`` are the same variable;
  only the intercepts' meaning differs.
- ``FIXED`` variables are recorded but still modeled (that matters only with missing values).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pymsem.specification.errors import MSEMSpecificationError, MSEMSyntaxError, closest
from pymsem.specification.partable import ParameterTable, Statement

__all__ = ["BlimpModel", "parse_blimp", "parse_blimp_file"]


@dataclass
class BlimpModel:
    """What a Blimp script says: the parameter table, the cluster id, the settings, the ordinal columns.

    Attributes
    ----------
    table
        The model's statements.
    cluster
        The cluster id (``CLUSTERID``, or the name left of ``=`` in ``LATENT``), or ``None``.
    settings
        What a fit or the command line may use: ``data`` (path), ``variables``, ``missing`` (the
        missing-value code, a number or a string such as ``"NA"``), ``seed``, ``burn``,
        ``iterations``, ``chains``, ``processors``, ``nimps``, ``thin``, ``options``,
        ``output``, ``save``, ``fixed``, ``center`` (``{"groupmean": [...], "grandmean": [...]}``),
        each present only when given.
    ordinal
        The columns declared ordinal (``ORDINAL``, rblimp's ``ordinal=``), each once, in the
        order given; for :class:`~pymsem.specification.model.MSEM`'s ``ordinal=``.
    """

    table: ParameterTable
    cluster: str | None
    settings: dict[str, object] = field(default_factory=dict)
    ordinal: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(
    r"""
     (?P<ws>\s+)
    |(?P<comment>\#[^\n]*)
    |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<op><->|->|<-|~~|=~|\*\*|[~@|=:()\-+*/^,;])
    """,
    re.X,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # name, number or op
    text: str
    line: int
    col: int
    start: int  # offsets in the source text, to tell "a:b" from "label: b"
    end: int
    where: str  # the command or argument, for messages

    def is_op(self, *texts: str) -> bool:
        return self.kind == "op" and self.text in texts

    @property
    def origin(self) -> str:
        return f"Blimp {self.where} line {self.line}"


def _err(tok: _Tok, message: str) -> MSEMSyntaxError:
    return MSEMSyntaxError(f"{tok.where}: {message}", tok.line, tok.col)


class _Source:
    """A text with its line starts, so that offsets become 1-based lines and columns."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.starts = [0] + [m.end() for m in re.finditer(r"\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self.starts[lo] + 1

    def error(self, offset: int, message: str, where: str | None = None) -> MSEMSyntaxError:
        line, col = self.position(offset)
        return MSEMSyntaxError(f"{where or self.where}: {message}", line, col)

    def tokens(self, start: int = 0, end: int | None = None, where: str | None = None) -> list[_Tok]:
        end = len(self.text) if end is None else end
        where = where or self.where
        out: list[_Tok] = []
        i = start
        while i < end:
            m = _TOKEN.match(self.text, i, end)
            if m is None:
                raise self.error(i, f"unexpected character {self.text[i]!r}", where)
            kind = m.lastgroup
            if kind in ("name", "number", "op"):
                line, col = self.position(i)
                out.append(_Tok(kind, m.group(), line, col, i, m.end(), where))
            i = m.end()
        return out


def _split(tokens: list[_Tok]) -> list[list[_Tok]]:
    """Statements end at ``;`` (the last may omit it, as rblimp's strings do)."""
    out: list[list[_Tok]] = []
    cur: list[_Tok] = []
    for t in tokens:
        if t.is_op(";"):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        out.append(cur)
    return out


def _is_block_label(stmt: list[_Tok], i: int) -> bool:
    """``name:`` followed by a space or newline; ``x1:x4`` (no space) is a range."""
    if i + 1 >= len(stmt) or stmt[i].kind != "name" or not stmt[i + 1].is_op(":"):
        return False
    return i + 2 >= len(stmt) or stmt[i + 2].start != stmt[i + 1].end or stmt[i + 2].kind == "op"


# ---------------------------------------------------------------------------------------- ranges
def _expand(first: _Tok, last: _Tok) -> list[str]:
    """``ACH1:ACH4`` -> ACH1 ... ACH4: the same prefix and suffix around a numeric part."""
    a, b = first.text, last.text
    for m in reversed(list(re.finditer(r"\d+", a))):
        prefix, suffix = a[: m.start()], a[m.end() :]
        if not (b.lower().startswith(prefix.lower()) and b.lower().endswith(suffix.lower())):
            continue
        middle = b[len(prefix) : len(b) - len(suffix)]
        if not middle.isdigit():
            continue
        lo, hi = int(m.group()), int(middle)
        if hi < lo:
            raise _err(first, f"the range {a}:{b} runs backwards; write {b}:{a}.")
        width = len(m.group()) if m.group().startswith("0") else 0
        return [f"{prefix}{str(k).zfill(width)}{suffix}" for k in range(lo, hi + 1)]
    raise _err(
        first,
        f"{a}:{b} is not a variable range: a range joins two names with the same prefix and "
        f"suffix around a number, e.g. ACH1:ACH4 or x1_i:x3_i.",
    )


# ------------------------------------------------------------------------------ model statements
@dataclass
class _Term:
    """One item of a statement side: a variable, a range, ``1``, or ``(x - x_b)``."""

    tok: _Tok
    names: list[_Tok]  # the names (a range expanded into synthetic tokens at its position)
    intercept: bool = False
    deviation: tuple[_Tok, _Tok] | None = None
    at: _Tok | None = None  # what follows '@': a name or a number
    value: float | None = None  # the number after '@'


@dataclass
class _Stmt:
    kind: str  # alias, regression, loading, covariance, means
    first: _Tok
    op: _Tok
    lhs: list[_Term]
    rhs: list[_Term]
    random: list[_Term] = field(default_factory=list)
    zero: bool = False  # '| 0' on loadings
    alias: tuple[_Tok, _Tok] | None = None  # alias: (A, B) of 'name = A - B'


_RELATION_OPS = ("~", "<-", "->", "=~", "~~", "<->")


def _parse_terms(toks: list[_Tok]) -> list[_Term]:
    out: list[_Term] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "number":
            if float(t.text) != 1.0 or not re.fullmatch(r"1(\.0*)?", t.text):
                raise _err(t, f"a number ({t.text}) where a variable or 1 (the intercept) was expected.")
            term = _Term(t, [], intercept=True)
            i += 1
        elif t.kind == "name":
            if i + 1 < len(toks) and toks[i + 1].is_op("("):
                raise _err(
                    t,
                    f"functions in model equations ({t.text}(...)) are not supported yet; "
                    f"transform the data instead.",
                )
            if i + 2 < len(toks) and toks[i + 1].is_op(":") and toks[i + 2].kind == "name":
                names = [replace(t, text=n) for n in _expand(t, toks[i + 2])]
                i += 3
            else:
                names = [t]
                i += 1
            term = _Term(t, names)
        elif t.is_op("("):
            depth, j = 0, i
            while j < len(toks):
                depth += 1 if toks[j].is_op("(") else -1 if toks[j].is_op(")") else 0
                if depth == 0:
                    break
                j += 1
            if j >= len(toks):
                raise _err(t, "this parenthesis is never closed.")
            inner = toks[i + 1 : j]
            if not (
                len(inner) == 3
                and inner[0].kind == "name"
                and inner[1].is_op("-")
                and inner[2].kind == "name"
            ):
                shown = " ".join(x.text for x in inner)
                raise _err(
                    t,
                    f"the expression ({shown}) is not supported; in parentheses pymsem reads only a "
                    f"within-cluster deviation (x - x_b), with x_b the cluster mean of x.",
                )
            term = _Term(t, [], deviation=(inner[0], inner[2]))
            i = j + 1
        elif t.is_op("+"):
            raise _err(t, "'+' between terms: Blimp separates predictors and indicators with spaces.")
        elif t.is_op("*", "/"):
            raise _err(t, f"'{t.text}' in a model equation is not supported.")
        else:
            raise _err(t, f"unexpected {t.text!r}; expected a variable name.")
        if i < len(toks) and toks[i].is_op("*"):
            other = toks[i + 1].text if i + 1 < len(toks) else ""
            raise _err(
                toks[i],
                f"interaction terms ({t.text}*{other}) are not supported yet; pymsem fits linear "
                f"models (random slopes model cross-level interactions: y ~ x@RS; RS ~ w).",
            )
        if i < len(toks) and toks[i].is_op("^", "**"):
            raise _err(toks[i], f"powers ({t.text}^...) are not supported yet.")
        if i < len(toks) and toks[i].is_op("@"):
            if i + 1 >= len(toks):
                raise _err(toks[i], "'@' must be followed by a label or a number.")
            sign = 1.0
            j = i + 1
            if toks[j].is_op("-", "+") and j + 1 < len(toks) and toks[j + 1].kind == "number":
                sign = -1.0 if toks[j].text == "-" else 1.0
                j += 1
            a = toks[j]
            if a.kind == "number":
                term.value = sign * float(a.text)
            elif a.kind != "name":
                raise _err(a, f"'@' must be followed by a label or a number, not {a.text!r}.")
            term.at = a
            i = j + 1
        out.append(term)
    return out


def _parse_statement(stmt: list[_Tok]) -> _Stmt:
    first = stmt[0]
    if first.kind == "name" and len(stmt) > 1 and stmt[1].is_op("="):
        rest = stmt[2:]
        if len(rest) == 3 and rest[0].kind == "name" and rest[1].is_op("-") and rest[2].kind == "name":
            return _Stmt("alias", first, stmt[1], [_Term(first, [first])], [], alias=(rest[0], rest[2]))
        shown = " ".join(t.text for t in rest)
        raise _err(
            first,
            f"{first.text} = {shown}: variables defined by expressions are not supported yet; pymsem "
            f"reads only within-cluster deviations (x_w = x - x_b) and centered cluster means "
            f"(x_bc = x_b - gm_x).",
        )
    depth = 0
    op_i = None
    for i, t in enumerate(stmt):
        depth += 1 if t.is_op("(") else -1 if t.is_op(")") else 0
        if depth == 0 and t.kind == "op" and t.text in _RELATION_OPS:
            op_i = i
            break
    if op_i is None:
        raise _err(
            first,
            "expected a regression (y ~ x), a covariance (a ~~ b) or loadings (F -> x1:x4).",
        )
    op = stmt[op_i]
    if op_i == 0:
        raise _err(op, f"'{op.text}' has nothing on its left.")
    left, right = stmt[:op_i], stmt[op_i + 1 :]
    if not right:
        raise _err(op, f"'{op.text}' has nothing on its right.")
    for t in right:
        if t.kind == "op" and t.text in _RELATION_OPS:
            raise _err(t, f"a second '{t.text}' in one statement; end each statement with ';'.")
    bar = next((k for k, t in enumerate(right) if t.is_op("|")), None)
    after: list[_Tok] = []
    if bar is not None:
        right, after = right[:bar], right[bar + 1 :]
        if not after:
            raise _err(op, "'|' must be followed by the predictors with random slopes (or 0 for loadings).")
    if op.text in ("->", "=~"):
        if len(left) == 1 and left[0].kind == "number" and left[0].text == "1":
            if bar is not None:
                raise _err(after[0], "'|' is not supported after '1 -> ...'.")
            return _Stmt("means", first, op, [], _parse_terms(right))
        if len(left) != 1 or left[0].kind != "name":
            raise _err(first, f"'{op.text}' needs one latent variable on its left (F -> x1:x4).")
        zero = False
        if bar is not None:
            if len(after) == 1 and after[0].kind == "number" and float(after[0].text) == 0.0:
                zero = True
            else:
                raise _err(
                    after[0],
                    "after '|' loadings take only 0 (between-level residual variances fixed to 0).",
                )
        rhs = _parse_terms(right)
        return _Stmt("loading", first, op, _parse_terms(left), rhs, zero=zero)
    lhs = _parse_terms(left)
    for term in lhs:
        if term.intercept or term.deviation is not None or term.at is not None:
            raise _err(term.tok, f"the left of '{op.text}' takes variable names only.")
    if op.text in ("~~", "<->"):
        if bar is not None:
            raise _err(op, "'|' is not supported in covariances.")
        return _Stmt("covariance", first, op, lhs, _parse_terms(right))
    random = _parse_terms(after) if after else []
    for term in random:
        if term.intercept or term.deviation is not None or term.at is not None or len(term.names) != 1:
            raise _err(term.tok, "after '|' list the predictors whose slopes vary over clusters.")
    return _Stmt("regression", first, op, lhs, _parse_terms(right), random=random)


# ------------------------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class _Var:
    """What a Blimp name means in pymsem: a name and the levels it exists at."""

    name: str
    levels: frozenset[int]
    kind: str  # column, factor, slope, mean, alias, deviation, dotmean

    @property
    def within_only(self) -> bool:
        return self.levels == frozenset({1})

    @property
    def between_only(self) -> bool:
        return self.levels == frozenset({2})


_L1, _L2, _L12 = frozenset({1}), frozenset({2}), frozenset({1, 2})
_LEVEL_WORD = {1: "within", 2: "between"}


class _Parser:
    def __init__(self, columns: Sequence[str] | None, level2: Sequence[str]) -> None:
        self.columns = [str(c) for c in columns] if columns is not None else None
        self.level2 = {str(c) for c in level2}
        self.cluster: str | None = None
        self.within: dict[str, _Tok] = {}  # declared level-1 latents, canonical name -> declaration
        self.between: dict[str, _Tok] = {}
        self.settings: dict[str, object] = {}
        self.model: list[_Stmt] = []
        self.parameters: list[list[_Tok]] = []
        self.center: list[list[_Tok]] = []
        self.ordinal: list[str] = []
        self._vars: dict[str, str] = {}  # lower-case -> spelling, for Blimp's case-insensitivity
        self._labels: dict[str, str] = {}
        if self.columns is not None:
            for c in self.columns:
                self._vars.setdefault(c.lower(), c)

    # ------------------------------------------------------------------ names
    def var(self, text: str) -> str:
        return self._vars.get(text.lower(), text) if text not in (self.columns or ()) else text

    def register(self, text: str) -> str:
        return self._vars.setdefault(text.lower(), text)

    def label(self, text: str) -> str:
        return self._labels.setdefault(text.lower(), text)

    # --------------------------------------------------------------- commands
    def add_latent(self, tokens: list[_Tok]) -> None:
        for stmt in _split(tokens):
            eq = next((k for k, t in enumerate(stmt) if t.is_op("=")), None)
            names, between = stmt, []
            if eq is not None:
                if eq == 0 or stmt[eq - 1].kind != "name":
                    raise _err(stmt[eq], "write the between-level latents as 'clusterid = names'.")
                cid = stmt[eq - 1]
                names, between = stmt[: eq - 1], stmt[eq + 1 :]
                self.set_cluster(cid)
                if not between:
                    raise _err(cid, f"'{cid.text} =' names no latent variables.")
            for group, target in ((names, self.within), (between, self.between)):
                for term in _parse_terms(group):
                    if term.intercept or term.deviation is not None or term.at is not None:
                        raise _err(term.tok, "LATENT lists latent variable names only.")
                    for n in term.names:
                        name = self.register(n.text)
                        other = self.between if target is self.within else self.within
                        if name in other:
                            raise _err(
                                n, f"{name!r} is declared a latent at both levels; give each its own name."
                            )
                        target.setdefault(name, n)

    def set_cluster(self, tok: _Tok) -> None:
        name = self.var(tok.text)
        if self.cluster is not None and self.cluster.lower() != name.lower():
            raise _err(
                tok,
                f"cluster id {name!r} differs from {self.cluster!r}; three-level models (two cluster "
                f"ids) are not supported yet.",
            )
        if self.cluster is None:
            self.cluster = name

    def add_clusterid(self, tokens: list[_Tok]) -> None:
        names = [t for t in tokens if not t.is_op(";")]
        if not names:
            return
        if len(names) > 1 or names[0].kind != "name":
            raise _err(names[-1], "CLUSTERID takes one name; three-level models are not supported yet.")
        self.set_cluster(names[0])

    def add_model(self, tokens: list[_Tok]) -> None:
        for stmt in _split(tokens):
            i = 0
            while _is_block_label(stmt, i):
                word = stmt[i].text
                commands = sorted(c.upper() for c in _ACCEPTED | set(_REFUSED))
                near = difflib.get_close_matches(word, commands, n=1, cutoff=0.85)
                if word.isupper() and word.isalpha() and near:
                    # A block label in capitals this close to a command is most likely a misspelled one.
                    raise _err(stmt[i], f"unknown command {word}:. Did you mean {near[0]!r}?")
                i += 2
            if i < len(stmt):
                self.model.append(_parse_statement(stmt[i:]))

    def add_names(self, tokens: list[_Tok]) -> list[_Tok]:
        out: list[_Tok] = []
        for term in _parse_terms([t for t in tokens if not t.is_op(";")]):
            if term.intercept or term.deviation is not None or term.at is not None:
                raise _err(term.tok, "expected variable names.")
            out.extend(term.names)
        return out

    def add_ordinal(self, tokens: list[_Tok]) -> None:
        """``ORDINAL: names`` (ranges allowed): observed columns, checked once the latents are known."""
        for t in self.add_names(tokens):
            name = self.var(t.text)
            if name in self.within or name in self.between:
                raise _err(
                    t,
                    f"{name!r} is a latent variable; ORDINAL lists observed columns (ordinal indicators "
                    f"or outcomes), whose latent responses pymsem adds itself.",
                )
            self.ordinal.append(self.column(t).name)

    # ------------------------------------------------------------------ roles
    def roles(self) -> None:
        """What each level-2 latent is (factor, cluster mean, slope) and what the aliases mean."""
        self.indicators: dict[str, list[str]] = {}
        self.mean_of: dict[str, str] = {}  # level-2 latent -> the column whose cluster mean it is
        self.slopes: set[str] = set()
        self.aliases: dict[str, tuple[_Var, _Tok]] = {}
        self.center_label: dict[str, tuple[str, _Tok]] = {}  # column -> grand mean label of x_bc
        used: set[str] = set()

        def bind(latent_tok: _Tok, column_tok: _Tok) -> None:
            lat, col = self.var(latent_tok.text), self.var(column_tok.text)
            if col in self.within or col in self.between:
                raise _err(
                    column_tok,
                    f"{col!r} is a latent variable; '1@{lat}' (or '{col} - {lat}') makes {lat!r} the "
                    f"cluster mean of an observed variable.",
                )
            prev = self.mean_of.get(lat)
            if prev is not None and prev != col:
                raise _err(latent_tok, f"{lat!r} is already the cluster mean of {prev!r}, not of {col!r}.")
            self.mean_of[lat] = col

        for s in self.model:
            for term in s.lhs + s.rhs + s.random:
                used.update(self.var(n.text).lower() for n in term.names)
            if s.kind == "loading":
                f = self.var(s.lhs[0].tok.text)
                if f not in self.within and f not in self.between:
                    raise _err(
                        s.lhs[0].tok,
                        f"{f!r} is not a declared latent variable: list it in LATENT (within) or as "
                        f"'clusterid = {f}' (between)." + self._hint(f),
                    )
                inds = self.indicators.setdefault(f, [])
                for term in s.rhs:
                    if term.intercept or term.deviation is not None:
                        raise _err(term.tok, "loadings take indicator names only.")
                    inds.extend(self.var(n.text) for n in term.names)
            elif s.kind == "regression":
                for term in s.rhs:
                    if term.intercept and term.at is not None and term.value is None:
                        lab = self.var(term.at.text)
                        if lab in self.between:
                            if len(s.lhs) != 1 or len(s.lhs[0].names) != 1:
                                raise _err(term.at, f"'1@{lab}' needs a single variable on the left.")
                            bind(term.at, s.lhs[0].names[0])
                    if term.at is not None and term.value is None and not term.intercept:
                        lab = self.var(term.at.text)
                        if lab in self.between:
                            self.slopes.add(lab)
                    if term.deviation is not None:
                        a, b = term.deviation
                        if self.var(b.text) in self.between:
                            bind(b, a)
        for s in self.model:
            if s.kind == "alias" and s.alias is not None:
                a, _b = s.alias
                if self.var(a.text) not in self.between:
                    b = s.alias[1]
                    if self.var(b.text) in self.between:
                        bind(b, a)
        for lat, decl in self.between.items():
            roles = [
                r
                for r, on in (
                    ("factor", lat in self.indicators),
                    ("cluster mean", lat in self.mean_of),
                    ("random slope", lat in self.slopes),
                )
                if on
            ]
            if len(roles) > 1:
                raise _err(
                    decl, f"{lat!r} is used both as a {roles[0]} and as a {roles[1]}; give each its own name."
                )
        self.used = used
        self.factor_name = self._merge_factors()
        for s in self.model:
            if s.kind == "alias":
                self._alias(s)

    def _merge_factors(self) -> dict[str, str]:
        """``X_w`` and ``X_b`` with the same indicators are pymsem's one factor ``X``."""
        names = {f: f for f in self.indicators}
        taken = {c.lower() for c in self.columns or ()} | {n.lower() for n in self.within | self.between}
        taken |= self.used
        for w in self.within:
            if w not in self.indicators or not w.lower().endswith("_w"):
                continue
            stem = w[:-2]
            b = next((x for x in self.between if x.lower() == stem.lower() + "_b"), None)
            if b is None or b not in self.indicators:
                continue
            if set(self.indicators[w]) != set(self.indicators[b]) or stem.lower() in taken:
                continue
            names[w] = names[b] = stem
        return names

    def _alias(self, s: _Stmt) -> None:
        name_tok = s.first
        name = self.register(name_tok.text)
        assert s.alias is not None
        a_tok, b_tok = s.alias
        a, b = self.var(a_tok.text), self.var(b_tok.text)
        if name in self.within or name in self.between or name in (self.columns or ()):
            raise _err(
                name_tok, f"{name!r} is already a latent variable or a column; name the alias otherwise."
            )
        if name in self.aliases:
            raise _err(name_tok, f"{name!r} is defined twice.")
        if a in self.between:
            if a not in self.mean_of:
                raise _err(
                    a_tok,
                    f"{name} = {a} - {b}: centering is supported for cluster means only "
                    f"({a!r} must be the intercept of a column: 'x ~ 1@{a}').",
                )
            if b in self.within or b in self.between:
                raise _err(b_tok, f"{name} = {a} - {b}: {b!r} must be the label of {a}'s intercept.")
            col = self.mean_of[a]
            self.aliases[name] = (_Var(col, _L2, "alias"), name_tok)
            self.center_label[col] = (self.label(b_tok.text), b_tok)
            return
        if a in self.within:
            raise _err(a_tok, f"{name} = {a} - {b}: deviations of latent variables are not supported.")
        if b not in self.between:
            raise _err(
                b_tok,
                f"{name} = {a} - {b}: {b!r} must be a between-level latent, declared in LATENT "
                f"('{self.cluster or 'clusterid'} = {b}'), that is the cluster mean of {a!r}.",
            )
        col = self.column(a_tok)
        self.aliases[name] = (_Var(col.name, _L1, "alias"), name_tok)

    def _hint(self, name: str) -> str:
        return closest(name, self.known()) if self.known() else ""

    def known(self) -> list[str]:
        out = list(self.columns or []) + list(self.within) + list(self.between)
        return out + list(getattr(self, "aliases", {}))

    def column(self, tok: _Tok) -> _Var:
        name = self.var(tok.text)
        if self.columns is not None and name not in self.columns:
            raise _err(
                tok,
                f"{tok.text!r} is neither a column of the data nor a declared latent variable, alias or "
                f"random slope." + closest(tok.text, self.known()),
            )
        self.register(name)
        return _Var(name, _L2 if name in self.level2 else _L12, "column")

    def resolve(self, tok: _Tok) -> _Var:
        text = tok.text
        if "." in text:
            base, attr = text.rsplit(".", 1)
            if attr.lower() != "mean":
                raise _err(
                    tok, f"'.{attr}' is not supported in model equations (only x.mean, the cluster mean)."
                )
            v = self.resolve(replace(tok, text=base))
            if v.kind != "column":
                raise _err(tok, f"'{text}': .mean takes an observed column, and {base!r} is not one.")
            return _Var(v.name, _L2, "dotmean")
        name = self.var(text)
        if name in self.aliases:
            return self.aliases[name][0]
        if name in self.within:
            if name not in self.indicators:
                raise _err(
                    tok,
                    f"latent {name!r} has no indicators: give them as '{name} -> y1 y2 ...' (measurement "
                    f"by regressions such as 'y ~ {name}@1' is not supported yet).",
                )
            return _Var(self.factor_name[name], _L1, "factor")
        if name in self.between:
            if name in self.indicators:
                return _Var(self.factor_name[name], _L2, "factor")
            if name in self.mean_of:
                return _Var(self.mean_of[name], _L2, "mean")
            if name in self.slopes:
                return _Var(name, _L2, "slope")
            raise _err(
                tok,
                f"{name!r} is a between-level latent (LATENT: {self.cluster or 'clusterid'} = {name}) but "
                f"the model does not say what it is: give it indicators ({name} -> ...), make it a cluster "
                f"mean (x ~ 1@{name}) or a random slope (y ~ x@{name}).",
            )
        return self.column(tok)

    def resolve_term(self, term: _Term) -> list[tuple[_Var, _Tok]]:
        if term.deviation is not None:
            a, b = term.deviation
            col = self.column(a)
            if self.mean_of.get(self.var(b.text)) != col.name:
                raise _err(
                    b,
                    f"({a.text} - {b.text}): {b.text!r} must be the cluster mean of {a.text!r} (x ~ 1@x_b).",
                )
            return [(_Var(col.name, _L1, "deviation"), term.tok)]
        return [(self.resolve(n), n) for n in term.names]

    # ------------------------------------------------------------------- rows
    def rows(self) -> ParameterTable:
        self.roles()
        self.table = ParameterTable()
        self.elements: dict[tuple[object, ...], Statement] = {}
        self.generated: set[str] = set()
        for s in self.model:
            if s.kind == "regression":
                self._regression(s)
            elif s.kind == "loading":
                self._loading(s)
            elif s.kind == "covariance":
                self._covariance(s)
            elif s.kind == "means":
                self._means(s)
        self._markers()
        self._centering()
        return self.table

    def _add(self, tok: _Tok, level: int, lhs: str, op: str, rhs: str = "", **kw: object) -> None:
        try:
            row = Statement(level, lhs, op, rhs, origin=tok.origin, **kw)  # type: ignore[arg-type]
        except MSEMSpecificationError as e:
            raise _err(tok, str(e)) from None
        # One element stated twice is one row when the statements agree, and an error when not.
        key = (level, op, *(sorted((lhs, rhs)) if op == "~~" else (lhs, rhs)))
        prev = self.elements.get(key)
        if prev is not None:
            if _same(prev, row):
                return
            raise _err(tok, f"{row.text()} (level {level}) is already stated ({prev.origin}) differently.")
        self.elements[key] = row
        self.table.add(row)

    def _regression(self, s: _Stmt) -> None:
        random_on = {self.var(t.names[0].text).lower(): t for t in s.random}
        for lterm in s.lhs:
            for y, ytok in self.resolve_term(lterm):
                self._one_regression(s, y, ytok, random_on)

    def _one_regression(self, s: _Stmt, y: _Var, ytok: _Tok, random_on: dict[str, _Term]) -> None:
        seen_random: set[str] = set()
        for term in s.rhs:
            if term.intercept:
                self._intercept(term, y, ytok)
                continue
            for x, xtok in self.resolve_term(term):
                level = self._level(y, ytok, x, xtok)
                key = self.var(xtok.text).lower() if term.deviation is None else ""
                rnd_term = random_on.get(key) if key else None
                slope = None
                label = None
                fixed = None
                if term.at is not None and term.value is not None:
                    fixed = term.value
                elif term.at is not None:
                    lab = self.var(term.at.text)
                    if lab in self.between:
                        slope = lab
                    elif lab in self.within:
                        raise _err(
                            term.at, f"{lab!r} is a within-level latent, not a label or a random slope."
                        )
                    else:
                        label = self.label(term.at.text)
                if rnd_term is not None:
                    seen_random.add(key)
                    if slope is not None:
                        raise _err(rnd_term.tok, f"{xtok.text} has the random slope {slope!r} already ('@').")
                    slope = self._generated_slope(y.name, x.name)
                if slope is not None:
                    if level != 1:
                        raise _err(
                            term.at or xtok,
                            f"random slope on the between-level path {ytok.text} ~ {xtok.text}: only "
                            f"within-level slopes can vary over clusters.",
                        )
                    if fixed is not None:
                        raise _err(xtok, "a random slope cannot be fixed.")
                    self._add(xtok, 1, y.name, "~", x.name, random=slope)
                    if label is not None:
                        self._add(xtok, 2, slope, "~1", label=label)
                else:
                    self._add(xtok, level, y.name, "~", x.name, label=label, fixed=fixed)
        for key, t in random_on.items():
            if key not in seen_random:
                raise _err(t.tok, f"{t.tok.text!r} after '|' is not a predictor of this regression.")

    def _generated_slope(self, y: str, x: str) -> str:
        base = f"RS_{y}_{x}"
        name, k = base, 2
        taken = {n.lower() for n in self.known()} | {g.lower() for g in self.generated}
        while name.lower() in taken:
            name, k = f"{base}_{k}", k + 1
        self.generated.add(name)
        return name

    def _level(self, y: _Var, ytok: _Tok, x: _Var, xtok: _Tok) -> int:
        if y.between_only:
            if x.within_only:
                raise _err(
                    xtok,
                    f"{xtok.text!r} is a within-level variable and {ytok.text!r} a between-level one; "
                    f"a between-level regression takes between-level predictors (cluster means, "
                    f"between factors, level-2 columns).",
                )
            return 2
        if y.within_only:
            if x.between_only:
                raise _err(
                    xtok,
                    f"{xtok.text!r} is a between-level variable and cannot predict the within-level "
                    f"{ytok.text!r}; regress {ytok.text}'s between-level counterpart on it instead.",
                )
            return 1
        # A level-1 column: level-2 predictors explain its cluster mean.
        return 2 if x.between_only else 1

    def _intercept(self, term: _Term, y: _Var, ytok: _Tok) -> None:
        if term.at is None:
            return  # 'y ~ 1': intercepts are estimated by default
        if term.value is not None:
            if y.kind == "factor" and term.value == 0.0:
                return  # Blimp's default for factors, and pymsem's
            if y.within_only:
                raise _err(
                    term.at,
                    f"fixed intercepts of within-level variables (1@{term.at.text}) are not supported.",
                )
            self._add(term.at, 2, y.name, "~1", fixed=term.value)
            return
        lab = self.var(term.at.text)
        if lab in self.between:
            return  # the cluster mean (bound in roles); pymsem's default, no row
        if lab in self.within:
            raise _err(
                term.at, f"{lab!r} is a within-level latent; an intercept takes a label or a cluster mean."
            )
        if y.within_only:
            raise _err(
                term.at,
                f"1@{term.at.text}: within-level variables have mean 0 in pymsem (the cluster means carry "
                f"the means); label the intercept of the between-level variable instead.",
            )
        if y.kind == "factor":
            raise _err(
                term.at,
                f"1@{term.at.text}: factor means are 0 in pymsem (the indicators' intercepts hold the "
                f"grand means); estimating one is not supported yet.",
            )
        self._add(term.at, 2, y.name, "~1", label=self.label(term.at.text))

    def _loading(self, s: _Stmt) -> None:
        ftok = s.lhs[0].tok
        f = self.var(ftok.text)
        level = 1 if f in self.within else 2
        name = self.factor_name[f]
        inds: list[str] = []
        for term in s.rhs:
            for n in term.names:
                v = self.resolve(n)
                if v.kind != "column":
                    raise _err(
                        n,
                        f"{n.text!r} is not an observed column; factors are measured by observed "
                        f"indicators (second-order factors are not supported yet).",
                    )
                kw: dict[str, object] = {}
                if term.value is not None:
                    kw["fixed"] = term.value
                elif term.at is not None:
                    lab = self.var(term.at.text)
                    if lab in self.within or lab in self.between:
                        raise _err(
                            term.at, f"{lab!r} is a latent variable; a loading takes a label or a number."
                        )
                    kw["label"] = self.label(term.at.text)
                self._add(n, level, name, "=~", v.name, **kw)
                inds.append(v.name)
        if s.zero:
            other = next(
                (g for g, n in self.factor_name.items() if n == name and g != f),
                None,
            )
            if level == 1 and other is None:
                stem = ftok.text[:-2] if ftok.text.lower().endswith("_w") else ftok.text
                raise _err(
                    s.op,
                    f"'| 0' fixes the between-level residual variances of the indicators of {name!r}, but "
                    f"{name!r} is a within-level factor only; declare a between-level factor with the "
                    f"same indicators ({self.cluster or 'clusterid'} = {stem}_b; {stem}_b -> ...).",
                )
            for ind in inds:
                self._add(s.op, 2, ind, "~~", ind, fixed=0.0)

    def _covariance(self, s: _Stmt) -> None:
        lefts = [v for term in s.lhs for v in self.resolve_term(term)]
        pairs: set[frozenset[str]] = set()
        for term in s.rhs:
            if term.intercept:
                raise _err(term.tok, "'1' in a covariance.")
            for b, btok in self.resolve_term(term):
                for a, atok in lefts:
                    if a.name == b.name and len(lefts) > 1:
                        continue
                    if (a.between_only and b.within_only) or (a.within_only and b.between_only):
                        raise _err(
                            btok,
                            f"{atok.text} ~~ {btok.text}: a within-level and a between-level variable "
                            f"do not covary in a two-level model.",
                        )
                    level = 2 if (a.between_only or b.between_only) else 1
                    key = frozenset((a.name, b.name, str(level)))
                    if key in pairs:
                        continue
                    pairs.add(key)
                    kw: dict[str, object] = {}
                    if term.value is not None:
                        kw["fixed"] = term.value
                    elif term.at is not None:
                        lab = self.var(term.at.text)
                        if lab in self.within or lab in self.between:
                            raise _err(term.at, f"{lab!r} is a latent variable, not a label.")
                        kw["label"] = self.label(term.at.text)
                    self._add(btok, level, a.name, "~~", b.name, **kw)

    def _means(self, s: _Stmt) -> None:
        for term in s.rhs:
            for v, tok in self.resolve_term(term):
                if v.kind == "factor":
                    raise _err(
                        tok,
                        f"1 -> {tok.text}: factor means are 0 in pymsem (the indicators' intercepts hold "
                        f"the grand means); estimating one is not supported yet.",
                    )
                if v.within_only:
                    raise _err(tok, f"1 -> {tok.text}: within-level variables have mean 0 in pymsem.")
                # Grand means of cluster means and slope means are estimated by default.

    def _markers(self) -> None:
        """The first loading of each factor and level is fixed to 1 unless one is fixed."""
        rows = self.table.rows
        firsts: dict[tuple[int, str], int] = {}
        fixed: set[tuple[int, str]] = set()
        for i, r in enumerate(rows):
            if r.op == "=~":
                firsts.setdefault((r.level, r.lhs), i)
                if r.fixed is not None:
                    fixed.add((r.level, r.lhs))
        for key, i in firsts.items():
            if key not in fixed and rows[i].label is None and not rows[i].free:
                rows[i] = replace(rows[i], fixed=1.0)

    def _centering(self) -> None:
        """``x_bc = x_b - gm`` labels x's grand mean ``gm``; the intercept row, if any, must agree."""
        for col, (lab, tok) in self.center_label.items():
            means = [r for r in self.table.select("~1", 2) if r.lhs == col]
            labels = {r.label for r in means if r.label}
            if labels and labels != {lab}:
                raise _err(
                    tok,
                    f"{col!r} is centered at {lab!r}, but its intercept is labelled "
                    f"{sorted(labels)[0]!r}; use one label.",
                )
            if not labels:
                self._add(tok, 2, col, "~1", label=lab)

    # ------------------------------------------------------------- parameters
    def derived(self) -> None:
        from pymsem.effects.derived import parse

        labels = {r.label for r in self.table if r.label}
        for slope in self.table.random_slopes():
            labels.add(self.table.slope_mean_label(slope, None))
        self._labels.update({lab.lower(): lab for lab in labels})
        defined: list[str] = []
        for stmt in self.parameters:
            first = stmt[0]
            if not (first.kind == "name" and len(stmt) > 2 and stmt[1].is_op("=")):
                bad = stmt[1] if len(stmt) > 1 else first
                raise _err(
                    bad,
                    "PARAMETERS takes 'name = expression;' (priors and other statements are not "
                    "supported yet).",
                )
            name = first.text
            if not name.isidentifier() or "." in name:
                raise _err(first, f"{name!r} is not a valid parameter name.")
            if name.lower() in {d.lower() for d in defined}:
                raise _err(first, f"parameter {name!r} is defined twice.")
            if name.lower() in self._labels and name not in defined:
                raise _err(first, f"{name!r} is already a label of the model; name the parameter otherwise.")
            expr = self._expression(stmt[2:], labels, defined)
            try:
                parse(expr, name)
            except MSEMSpecificationError as e:
                raise _err(stmt[2], f"{e} (read as {expr!r})") from None
            self.table.add(Statement(0, name, ":=", expr, origin=first.origin))
            defined.append(name)
            self._labels.setdefault(name.lower(), name)

    def _expression(self, toks: list[_Tok], labels: set[str], defined: list[str]) -> str:
        from pymsem.effects.derived import LEVEL_WORDS, MATH, MODEL_FUNCS

        parts: list[str] = []
        for k, t in enumerate(toks):
            nxt = toks[k + 1] if k + 1 < len(toks) else None
            if t.kind == "name" and "." in t.text:
                base, attr = t.text.rsplit(".", 1)
                if attr.lower() != "totalvar":
                    raise _err(t, f"'.{attr}' is not supported in PARAMETERS (only X.totalvar, a variance).")
                parts.append(self._variance(replace(t, text=base)))
            elif t.kind == "name" and nxt is not None and nxt.is_op("("):
                fname = t.text.lower()
                if fname not in MATH and fname not in MODEL_FUNCS:
                    raise _err(
                        t,
                        f"function {t.text}() is not supported in PARAMETERS; use "
                        f"{', '.join(sorted(set(MATH) | MODEL_FUNCS))}.",
                    )
                parts.append(fname)
            elif t.kind == "name":
                if t.text.lower() in LEVEL_WORDS:
                    parts.append(t.text.lower())
                    continue
                canon = self._labels.get(t.text.lower())
                if canon is None or (canon not in labels and canon not in defined):
                    raise _err(
                        t,
                        f"{t.text!r} is not a label of the model or an earlier parameter."
                        + (
                            closest(t.text, sorted(labels | set(defined)))
                            if labels or defined
                            else " The model has no labels: label a parameter with x@name."
                        ),
                    )
                parts.append(canon)
            elif t.is_op("^"):
                parts.append("**")
            elif t.kind == "op" and t.text not in _EXPRESSION_OPS:
                raise _err(t, f"{t.text!r} is not allowed in a PARAMETERS expression.")
            else:
                parts.append(t.text)
        return _join(parts)

    def _variance(self, tok: _Tok) -> str:
        v = self.resolve(tok)
        if v.kind == "slope":
            return f"var({v.name})"
        if v.levels == _L12:
            return f"(var({v.name}, within) + var({v.name}, between))"
        return f"var({v.name}, {_LEVEL_WORD[min(v.levels)]})"


def _same(a: Statement, b: Statement) -> bool:
    """The same row, wherever it was written (``a ~~ b`` and ``b ~~ a`` are one)."""
    if a.op == "~~" and a.lhs == b.rhs and a.rhs == b.lhs:
        b = replace(b, lhs=a.lhs, rhs=a.rhs)
    return replace(a, origin="") == replace(b, origin="")


_EXPRESSION_OPS = {"+", "-", "*", "/", "(", ")", ",", "**"}


def _join(parts: list[str]) -> str:
    """Tokens back to text: spaces around binary operators, none inside calls."""
    out = ""
    prev = ""
    for p in parts:
        unary = p in ("+", "-") and prev in ("", "(", ",", "+", "-", "*", "/", "**")
        if p in ("+", "-", "*", "/", "**") and not unary:
            out += f" {p} "
        elif p == ",":
            out += ", "
        else:
            out += p
        prev = p
    return out.strip()


# ----------------------------------------------------------------------------------- front ends
def _model_text(model: str | Sequence[str] | Mapping[str, str]) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, Mapping):
        return "\n".join(f"{name}:\n{text.rstrip().rstrip(';')};" for name, text in model.items())
    return "\n".join(f"{text.rstrip().rstrip(';')};" for text in model)


def parse_blimp(
    model: str | Sequence[str] | Mapping[str, str] | None = None,
    *,
    latent: str | None = None,
    center: str | None = None,
    parameters: str | None = None,
    clusterid: str | None = None,
    fixed: str | None = None,
    ordinal: str | Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    level2: Sequence[str] = (),
) -> BlimpModel:
    """Read rblimp's arguments into a parameter table.

    Parameters
    ----------
    model
        rblimp's ``model``: statements ending at ``;`` (the last may omit it), with optional
        block labels (``within_l1:``); a list of strings (one or more statements each) or a
        mapping ``{block name: statements}`` is read as rblimp reads them.
    latent, center, parameters, clusterid, fixed
        rblimp's arguments of those names, in Blimp's syntax.
    ordinal
        rblimp's ``ordinal``: the ordinal columns, in Blimp's syntax (``"x1:x4 y"``) or as a list
        of such strings (``["x1", "y"]``); returned in :attr:`BlimpModel.ordinal`.
    columns
        The data's columns, when known: names that are neither columns nor latents, aliases or
        random slopes are then errors with the closest known name. Without them such names are
        taken to be columns.
    level2
        Columns that are constant within clusters (level-2 variables), which the parser cannot
        tell from the syntax alone (Blimp reads it from the data).

    Returns
    -------
    BlimpModel
        Line numbers in errors and in the rows' ``origin`` count within each argument.

    Raises
    ------
    MSEMSyntaxError
        For anything that cannot be read or is not supported, naming the argument, the line,
        the column and the construct.

    Examples
    --------
    >>> m = parse_blimp(
    ...     "y ~ x@b_w x.mean@b_b | x",
    ...     clusterid="school",
    ...     parameters="ctx = b_b - b_w",
    ... )
    >>> [(r.level, r.text()) for r in m.table]
    [(1, 'y ~ x'), (2, 'RS_y_x ~ 1'), (2, 'y ~ x'), (0, 'ctx := b_b - b_w')]
    """
    p = _Parser(columns, level2)
    if clusterid is not None:
        p.add_clusterid(_Source(clusterid, "clusterid").tokens())
    if latent is not None:
        p.add_latent(_Source(latent, "latent").tokens())
    if model is not None:
        p.add_model(_Source(_model_text(model), "model").tokens())
    if center is not None:
        _center(p, _Source(center, "center").tokens())
    if fixed is not None:
        toks = _Source(fixed, "fixed").tokens()
        p.settings["fixed"] = [p.column(t).name for t in p.add_names(toks)] if toks else []
    _add_ordinal_argument(p, ordinal)
    if parameters is not None:
        p.parameters = _split(_Source(parameters, "parameters").tokens())
    return _finish(p)


def _add_ordinal_argument(p: _Parser, ordinal: str | Sequence[str] | None) -> None:
    if ordinal is not None:
        text = ordinal if isinstance(ordinal, str) else " ".join(str(n) for n in ordinal)
        p.add_ordinal(_Source(text, "ordinal").tokens())


def _center(p: _Parser, tokens: list[_Tok]) -> None:
    out: dict[str, list[str]] = p.settings.setdefault("center", {})  # type: ignore[assignment]
    for stmt in _split(tokens):
        kind = "grandmean"
        if len(stmt) > 1 and stmt[1].is_op("="):
            kind = stmt[0].text.lower()
            if kind not in ("groupmean", "grandmean"):
                raise _err(
                    stmt[0],
                    f"CENTER {stmt[0].text} is not supported; use groupmean = ... or grandmean = ... "
                    f"(pymsem's defaults: latent group-mean centering within, grand-mean between).",
                )
            stmt = stmt[2:]
        p.center.append(stmt)
        out.setdefault(kind, []).extend(n.text for n in p.add_names(stmt))


def _check_center(p: _Parser) -> None:
    for stmt in p.center:
        for n in p.add_names(stmt):
            p.resolve(n)  # an unknown name is an error here, as in the model


def _finish(p: _Parser) -> BlimpModel:
    table = p.rows()
    _check_center(p)
    p.derived()
    if "fixed" in p.settings:
        p.settings["fixed"] = [p.var(n) for n in p.settings["fixed"]]  # type: ignore[union-attr]
    # Re-spelled like fixed: without the data's columns, a name's spelling is its first use.
    ordinal = tuple(dict.fromkeys(p.var(n) for n in p.ordinal))
    return BlimpModel(table, p.cluster, p.settings, ordinal)


# ---------------------------------------------------------------------------------- whole files
_CANONICAL = {
    "variable": "variables",
    "iteration": "iterations",
    "iter": "iterations",
    "chain": "chains",
    "centering": "center",
    "parameter": "parameters",
    "option": "options",
    "waldtest": "test",
}
_ACCEPTED = {
    "data",
    "variables",
    "clusterid",
    "missing",
    "seed",
    "burn",
    "iterations",
    "chains",
    "nimps",
    "thin",
    "fixed",
    "latent",
    "center",
    "model",
    "parameters",
    "options",
    "output",
    "save",
    "ordinal",
}
_REFUSED = {
    "nominal": (
        "nominal variables (NOMINAL) are not supported yet; dummy-code them, or list them in ORDINAL "
        "if their categories are ordered"
    ),
    "count": "count variables (COUNT) are not supported yet; model them as continuous or recode them",
    "transform": "TRANSFORM is not supported; transform the data before fitting",
    "bygroup": "BYGROUP (separate analyses by group) is not supported yet",
    "randomeffect": "RANDOMEFFECT is not supported yet; name random slopes in LATENT (y ~ x@RS)",
    "simple": "simple slopes (SIMPLE) are not supported yet; compute them in PARAMETERS",
    "test": "Wald tests (TEST / WALDTEST) are not supported yet",
    "fcs": "FCS imputation is not supported; pymsem fits the model itself",
    "timeid": "TIMEID (dynamic models) is not supported yet",
    "weight": "sampling weights (WEIGHT) are not supported yet",
    "dropout": "DROPOUT (missing-not-at-random models) is not supported yet",
    "filter": "FILTER is not supported; filter the data before fitting",
}
_HEADER = re.compile(r"(?:^|(?<=;))[ \t\r\n]*([A-Za-z]+)[ \t]*:", re.M)


def _strip_comments(text: str) -> str:
    # Spaces keep the offsets, so that lines and columns stay those of the file.
    return re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), text)


def parse_blimp_file(
    text: str,
    columns: Sequence[str] | None = None,
    *,
    level2: Sequence[str] = (),
    ordinal: str | Sequence[str] | None = None,
) -> BlimpModel:
    """Read a whole Blimp input file (``DATA:``, ``VARIABLES:``, ``MODEL:`` ...).

    Parameters
    ----------
    text
        The file's text.
    columns
        The data's columns, when known; otherwise the names in ``VARIABLES`` (if given) are the
        columns that names are checked against.
    level2
        Columns constant within clusters, as in :func:`parse_blimp`.
    ordinal
        Ordinal columns besides those of ``ORDINAL``, as in :func:`parse_blimp`.

    Returns
    -------
    BlimpModel
        With ``settings`` from ``DATA``, ``VARIABLES``, ``MISSING``, ``SEED``, ``BURN``,
        ``ITERATIONS``, ``CHAINS``, ``NIMPS``, ``THIN``, ``OPTIONS``, ``OUTPUT``, ``SAVE``,
        ``FIXED`` and ``CENTER``, and the ``ORDINAL`` columns in ``ordinal``.

    Raises
    ------
    MSEMSyntaxError
        For anything that cannot be read or is not supported (``NOMINAL``, ``FCS``, ``SIMPLE``,
        ...), naming the line and column of the file.
    """
    src = _Source(_strip_comments(text), "")
    headers: list[tuple[str, re.Match[str]]] = []
    in_model = False
    for m in _HEADER.finditer(src.text):
        word = m.group(1).lower()
        cmd = _CANONICAL.get(word, word)
        if cmd not in _ACCEPTED and cmd not in _REFUSED:
            if in_model:
                continue  # a block label such as 'between:'
            known = sorted(c.upper() for c in _ACCEPTED | set(_REFUSED))
            raise src.error(
                m.start(1),
                f"unknown command {m.group(1).upper()}." + closest(m.group(1).upper(), known),
                m.group(1).upper(),
            )
        headers.append((cmd, m))
        in_model = cmd == "model"
    first = re.search(r"\S", src.text)
    if first is not None and (not headers or first.start() < headers[0][1].start(1)):
        raise src.error(first.start(), "expected a command (such as DATA: or MODEL:) here.", "file")
    bodies: dict[str, list[tuple[int, int, str, int]]] = {}  # body start, end, command, header
    for k, (cmd, m) in enumerate(headers):
        end = headers[k + 1][1].start(1) if k + 1 < len(headers) else len(src.text)
        bodies.setdefault(cmd, []).append((m.end(), end, m.group(1).upper(), m.start(1)))

    p = _Parser(columns, level2)
    settings = p.settings

    def toks(cmd: str) -> list[_Tok]:
        return [t for start, end, word, _ in bodies.get(cmd, []) for t in src.tokens(start, end, word)]

    def raw(cmd: str) -> str | None:
        if cmd not in bodies:
            return None
        if len(bodies[cmd]) > 1:
            _, _, word, header = bodies[cmd][1]
            raise src.error(header, f"{word} is given twice.", word)
        start, end, _, _ = bodies[cmd][0]
        return src.text[start:end].strip().rstrip(";").strip()

    for cmd, why in _REFUSED.items():
        if cmd in bodies and any(not t.is_op(";") for t in toks(cmd)):
            _, _, word, header = bodies[cmd][0]
            raise src.error(header, f"{why}.", word)
    for cmd in ("data", "output", "save"):
        value = raw(cmd)
        if value is not None:
            settings[cmd] = value
    if "variables" in bodies:
        names = p.add_names(toks("variables"))
        settings["variables"] = [n.text for n in names]
        if p.columns is None:
            p.columns = [n.text for n in names]
            for c in p.columns:
                p._vars.setdefault(c.lower(), c)
    missing = raw("missing")
    if missing is not None:
        settings["missing"] = _number(missing)
    for cmd in ("seed", "burn", "iterations", "nimps", "thin", "chains"):
        value = raw(cmd)
        if value is None:
            continue
        words = value.split()
        start = bodies[cmd][0][3]
        if not words or not re.fullmatch(r"\d+", words[0]):
            raise src.error(start, f"{cmd.upper()} takes a whole number, not {value!r}.", cmd.upper())
        settings[cmd] = int(words[0])
        if cmd == "chains" and len(words) == 3 and words[1].lower() == "processors" and words[2].isdigit():
            settings["processors"] = int(words[2])
        elif len(words) > 1:
            raise src.error(start, f"{cmd.upper()} takes one whole number, not {value!r}.", cmd.upper())
    options = raw("options")
    if options is not None:
        settings["options"] = options.split()
    if "clusterid" in bodies:
        p.add_clusterid(toks("clusterid"))
    if "latent" in bodies:
        p.add_latent(toks("latent"))
    if "model" in bodies:
        p.add_model(toks("model"))
    if "center" in bodies:
        _center(p, toks("center"))
    if "fixed" in bodies:
        settings["fixed"] = [p.column(t).name for t in p.add_names(toks("fixed"))]
    if "ordinal" in bodies:
        p.add_ordinal(toks("ordinal"))
    _add_ordinal_argument(p, ordinal)
    if "parameters" in bodies:
        p.parameters = _split(toks("parameters"))
    return _finish(p)


def _number(text: str) -> object:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and re.fullmatch(r"[+-]?\d+", text) else value
