"""The data-augmentation formulation (placeholder until implemented)."""

from __future__ import annotations

from typing import Any, ClassVar

from pymsem.compile.likelihood import register

__all__ = ["AugmentedLikelihood"]


@register
class AugmentedLikelihood:
    name: ClassVar[str] = "augmented"

    def supports(self, structure: Any) -> str | None:
        return "not implemented yet"

    def add(self, *args: Any) -> None:
        raise NotImplementedError
