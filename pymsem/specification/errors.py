"""Exceptions raised for bad specifications and bad data."""

from __future__ import annotations

__all__ = ["MSEMDataError", "MSEMSpecificationError", "MSEMSyntaxError", "closest"]


class MSEMSpecificationError(ValueError):
    """The model specification is invalid (unknown names, cycles, duplicate labels, ...)."""


class MSEMSyntaxError(MSEMSpecificationError):
    """Model syntax (lavaan or Blimp) that cannot be read; names the line and column.

    Attributes
    ----------
    line, column
        1-based position of the problem in the model text (``column`` may be ``None``).
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = ""
        if line is not None:
            where = f"line {line}" + (f", column {column}" if column is not None else "") + ": "
        super().__init__(where + message)


class MSEMDataError(ValueError):
    """The data cannot be used as given (missing columns, non-numeric values, ...)."""


def closest(name: str, known: list[str] | set[str], n: int = 3) -> str:
    """A ``" Did you mean ...?"`` hint, or the sorted list of known names."""
    import difflib

    known = sorted(known)
    matches = difflib.get_close_matches(name, known, n=n)
    if matches:
        return f" Did you mean {', '.join(repr(m) for m in matches)}?"
    shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
    return f" Known names: {shown}."
