"""Exceptions raised for bad specifications and bad data."""

from __future__ import annotations

__all__ = ["MSEMDataError", "MSEMSpecificationError", "closest"]


class MSEMSpecificationError(ValueError):
    """The model specification is invalid (unknown names, cycles, duplicate labels, ...)."""


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
