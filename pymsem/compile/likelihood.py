"""The likelihood interface: a formulation adds the data's log-likelihood to a PyMC model.

A formulation receives the level matrices (PyTensor) built from the free
parameters and adds whatever per-cluster or per-student variables it needs.
Formulations of the same model must give the same posterior for the free
parameters; they differ in speed and in what they sample.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from pymsem.compile.matrices import LevelMatrices
from pymsem.compile.structure import ModelStructure
from pymsem.specification.data import ClusteredData

__all__ = ["FORMULATIONS", "Formulation", "get_formulation"]


class Formulation(Protocol):
    """What a likelihood formulation provides."""

    name: ClassVar[str]

    def supports(self, structure: ModelStructure) -> str | None:
        """``None`` if the formulation handles this model, else the reason it does not."""

    def add(
        self,
        structure: ModelStructure,
        data: ClusteredData,
        within: LevelMatrices,
        between: LevelMatrices,
        params: dict[str, Any],
    ) -> None:
        """Add the log-likelihood (and any latent variables) to the current PyMC model."""


FORMULATIONS: dict[str, type] = {}


def register(cls: type) -> type:
    FORMULATIONS[cls.name] = cls
    return cls


def get_formulation(name: str, structure: ModelStructure) -> Formulation:
    """The formulation ``name`` (``"auto"`` picks the fastest exact one that supports the model)."""
    from pymsem.compile import augmented, marginal  # noqa: F401  (register formulations)

    if name == "auto":
        for cand in ("marginal", "augmented"):
            f = FORMULATIONS[cand]()
            if f.supports(structure) is None:
                return f
        raise RuntimeError("No likelihood formulation supports this model.")
    if name not in FORMULATIONS:
        raise ValueError(f"Unknown formulation {name!r}; choose one of {sorted(FORMULATIONS)} or 'auto'.")
    f = FORMULATIONS[name]()
    why = f.supports(structure)
    if why is not None:
        raise ValueError(f"The {name!r} formulation cannot fit this model: {why}")
    return f
