"""pymsem: Bayesian multilevel structural equation modeling on PyMC.

Build a model with :class:`MSEM` (levels, latent variables, paths, random
slopes, derived quantities), fit it with NUTS and read paper-style tables.
"""

from pymsem import datasets, study, tutorial
from pymsem.effects.derived import contextual, indirect, total
from pymsem.priors import Prior
from pymsem.results.compare import compare_tables
from pymsem.results.loo import compare
from pymsem.simulate import simulate
from pymsem.specification import (
    MSEM,
    Covariance,
    Derived,
    Latent,
    Level,
    MSEMDataError,
    MSEMSpecificationError,
    Path,
    RandomSlope,
)
from pymsem.study import SimulationStudy, power

within = Level.WITHIN
between = Level.BETWEEN

__version__ = "0.1.0"

__all__ = [
    "MSEM",
    "Covariance",
    "Derived",
    "Latent",
    "Level",
    "MSEMDataError",
    "MSEMSpecificationError",
    "Path",
    "Prior",
    "RandomSlope",
    "SimulationStudy",
    "between",
    "compare",
    "compare_tables",
    "contextual",
    "datasets",
    "indirect",
    "power",
    "simulate",
    "study",
    "total",
    "tutorial",
    "within",
]
