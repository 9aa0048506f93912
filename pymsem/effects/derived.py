"""Derived quantities: a small, safe expression language over labels, evaluated on posterior draws.

Expressions are parsed with :mod:`ast` into a tree of allowed nodes only
(numbers, names, ``+ - * / **``, unary ``-``, calls to the functions below) and
evaluated by walking that tree on NumPy arrays of draws. Nothing is ever
passed to ``eval``: attribute access, subscripts, lambdas, comprehensions,
keywords and calls to unknown functions are refused.

Functions
---------
``sqrt exp log abs``
    Elementwise math.
``var(X)``, ``totalvar(X)``, ``sd(X)``
    Model-implied variance (SD) of a random slope or a latent variable (Blimp's
    ``X.totalvar``). Name the level of a variable that exists at both levels:
    ``var(REL, between)``.
``cov(X, Y)``, ``cor(X, Y)``
    Model-implied covariance / correlation of two random slopes or two latent
    variables of the same level.
``indirect(a, b)``
    ``a * b``, plus ``cov`` of the two random slopes when both ``a`` and ``b`` are
    random-slope means: ``E[a_g b_g] = E[a] E[b] + cov(a_g, b_g)``.
``contextual(between, within)``
    ``between - within``.
``total(indirect_effect, direct)``
    ``indirect_effect + direct``.
``conditional_indirect(a, b, W, w)``
    ``E[a_g b_g | W = w] = (a0 + a1 w)(b0 + b1 w) + cov(u_a, u_b)`` for random slopes moderated by
    the between-level variable ``W``; ``w`` is an expression in ``W``'s centered units, e.g.
    ``sd(SES, between)`` for one SD above the mean.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pymsem.specification.errors import MSEMSpecificationError, closest

__all__ = ["DerivedContext", "contextual", "evaluate", "indirect", "parse", "total"]

MATH = {"sqrt": np.sqrt, "exp": np.exp, "log": np.log, "abs": np.abs}
MODEL_FUNCS = {
    "var",
    "totalvar",
    "sd",
    "cov",
    "cor",
    "indirect",
    "contextual",
    "total",
    "conditional_indirect",
}
LEVEL_WORDS = {"within", "between"}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}


def indirect(a: str, b: str) -> str:
    """The indirect effect of two labelled paths (adds the slopes' covariance when both are random)."""
    return f"indirect({a}, {b})"


def contextual(between: str, within: str) -> str:
    """The contextual effect: between-level minus within-level effect."""
    return f"contextual({between}, {within})"


def total(indirect_effect: str, direct: str) -> str:
    """The total effect: an indirect effect plus the direct path."""
    return f"total({indirect_effect}, {direct})"


def parse(expression: str, name: str = "") -> ast.Expression:
    """Parse and check an expression; raise :class:`MSEMSpecificationError` on anything not allowed."""
    where = f"Derived quantity {name!r}: " if name else ""
    if not isinstance(expression, str) or not expression.strip():
        raise MSEMSpecificationError(f"{where}the expression must be a non-empty string.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise MSEMSpecificationError(
            f"{where}syntax error in {expression!r}: {e.msg} (column {e.offset})."
        ) from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
            if isinstance(node, ast.operator) and type(node) not in _BINOPS:
                raise MSEMSpecificationError(
                    f"{where}operator {type(node).__name__} is not allowed in {expression!r}."
                )
            continue
        if isinstance(node, ast.BinOp | ast.UnaryOp | ast.Name):
            if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub | ast.UAdd):
                raise MSEMSpecificationError(f"{where}only unary + and - are allowed in {expression!r}.")
            continue
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise MSEMSpecificationError(
                    f"{where}only numbers are allowed as constants, not {node.value!r}."
                )
            continue
        if isinstance(node, ast.Call):
            fname = node.func.id if isinstance(node.func, ast.Name) else None
            if fname is None or (fname not in MATH and fname not in MODEL_FUNCS):
                shown = ast.unparse(node.func)
                raise MSEMSpecificationError(
                    f"{where}unknown function {shown!r} in {expression!r}. Allowed: "
                    f"{', '.join(sorted(set(MATH) | MODEL_FUNCS))}."
                )
            if node.keywords:
                raise MSEMSpecificationError(f"{where}keyword arguments are not allowed in {expression!r}.")
            continue
        raise MSEMSpecificationError(
            f"{where}{type(node).__name__} is not allowed in {expression!r}: use labels, numbers, "
            f"+ - * / **, and the functions {', '.join(sorted(set(MATH) | MODEL_FUNCS))}."
        )
    return tree


@dataclass
class DerivedContext:
    """What expressions can read: labelled draws and model-implied moments.

    Attributes
    ----------
    values
        Draws by label (and by previously defined derived name).
    moments
        ``moments(kind, names, level)`` -> draws of a variance, covariance or
        correlation; raises for unknown names.
    slope_of_mean
        Random-slope name by the label of its mean (``"a_w" -> "RSa"``).
    """

    values: dict[str, np.ndarray]
    moments: Callable[[str, tuple[str, ...], str | None], np.ndarray]
    slope_of_mean: dict[str, str]
    conditional: Callable[[str, str, str, np.ndarray], np.ndarray] | None = None


def evaluate(expression: str, ctx: DerivedContext, name: str = "") -> np.ndarray:
    """Evaluate ``expression`` on the draws in ``ctx``."""
    tree = parse(expression, name)
    where = f"Derived quantity {name!r}: " if name else ""

    def label(node: ast.AST) -> str:
        if not isinstance(node, ast.Name):
            raise MSEMSpecificationError(f"{where}expected a label, got {ast.unparse(node)!r}.")
        return node.id

    def value(n: str) -> np.ndarray:
        if n not in ctx.values:
            raise MSEMSpecificationError(f"{where}unknown label {n!r}." + closest(n, set(ctx.values)))
        return ctx.values[n]

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return value(node.id)
        if isinstance(node, ast.UnaryOp):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        f, args = node.func.id, node.args
        if f in MATH:
            if len(args) != 1:
                raise MSEMSpecificationError(f"{where}{f}() takes one argument.")
            return MATH[f](walk(args[0]))
        if f == "conditional_indirect":
            if len(args) != 4 or ctx.conditional is None:
                raise MSEMSpecificationError(
                    f"{where}conditional_indirect(a, b, moderator, value) takes 4 arguments."
                )
            a, b, mod = label(args[0]), label(args[1]), label(args[2])
            for lab in (a, b):
                value(lab)
            return ctx.conditional(a, b, mod, walk(args[3]))
        if f in ("indirect", "contextual", "total"):
            if len(args) != 2:
                raise MSEMSpecificationError(f"{where}{f}() takes two arguments.")
            if f == "contextual":
                return walk(args[0]) - walk(args[1])
            if f == "total":
                return walk(args[0]) + walk(args[1])
            a, b = label(args[0]), label(args[1])
            out = value(a) * value(b)
            if a in ctx.slope_of_mean and b in ctx.slope_of_mean:
                out = out + ctx.moments("cov", (ctx.slope_of_mean[a], ctx.slope_of_mean[b]), None)
            return out
        # var / totalvar / sd / cov / cor with an optional level word last
        names = [label(a) for a in args]
        level = None
        if names and names[-1] in LEVEL_WORDS:
            level = names.pop()
        need = 2 if f in ("cov", "cor") else 1
        if len(names) != need:
            raise MSEMSpecificationError(
                f"{where}{f}() takes {need} variable name(s){' and an optional level' if need else ''}."
            )
        kind = "var" if f == "totalvar" else f
        if kind == "sd":
            return np.sqrt(ctx.moments("var", tuple(names), level))
        return ctx.moments(kind, tuple(names), level)

    out = walk(tree)
    return np.asarray(out, dtype=float)


def referenced_labels(expression: str) -> set[str]:
    """Names used as values (not as function arguments naming variables) in an expression."""
    tree = parse(expression)
    out: set[str] = set()

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in MATH or node.func.id in ("contextual", "total", "indirect"):
                for a in node.args:
                    walk(a)
            return
        if isinstance(node, ast.Name):
            out.add(node.id)
            return
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return out
