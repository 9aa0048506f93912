"""Specification: declarative objects, the fluent builder and validation of data and model."""

from pymsem.specification.errors import MSEMDataError, MSEMSpecificationError
from pymsem.specification.model import MSEM
from pymsem.specification.objects import Covariance, Derived, Latent, Level, Path, RandomSlope

__all__ = [
    "MSEM",
    "Covariance",
    "Derived",
    "Latent",
    "Level",
    "MSEMDataError",
    "MSEMSpecificationError",
    "Path",
    "RandomSlope",
]
