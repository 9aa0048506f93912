"""Prior log densities and PyMC's default transforms, as compiled scalar functions.

The whole-model kernel (:mod:`pymsem.compile.kernel.model_numba`) evaluates a model's priors
from a table of family codes and hyperparameters, so that numba compiles them once for every
model. Each family here gives exactly the log density PyMC gives (normalizing constants
included) and is sampled on PyMC's default transform of that family, so the kernel's log
density equals the ``pm.Model``'s at every unconstrained point
(``tests/test_model_kernel.py`` checks each family against ``pm.logp``).

:data:`FAMILIES` lists the families the kernel reads, with their parameters in the order the
kernel takes them and PyMC's defaults; a prior outside it (another family, or a family in
another parametrization, such as ``Gamma(mu=, sigma=)``) leaves the model on PyTensor's
compiled graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["FAMILIES", "IDENTITY", "INTERVAL", "LOG", "Family", "encode_prior"]

_jit = numba.njit(cache=True, fastmath=False, nogil=True)

#: Transform codes: none, ``log`` (positive support), ``interval(a, b)`` (PyMC's Interval and
#: LogOdds transforms: ``v = a + (b - a) sigmoid(y)``).
IDENTITY, LOG, INTERVAL = 0, 1, 2


@dataclass(frozen=True)
class Family:
    """A prior family the kernel evaluates: its code, parameters (with defaults) and transform."""

    code: int
    params: tuple[str, ...]
    defaults: dict[str, float]
    transform: int
    #: PyMC's default transform's class name (checked against the model's, so a PyMC change
    #: of transform leaves the model on the graph instead of giving a different posterior).
    transform_name: str | None


FAMILIES: dict[str, Family] = {
    "Normal": Family(1, ("mu", "sigma"), {"mu": 0.0, "sigma": 1.0}, IDENTITY, None),
    "HalfNormal": Family(2, ("sigma",), {"sigma": 1.0}, LOG, "LogTransform"),
    "Uniform": Family(3, ("lower", "upper"), {"lower": 0.0, "upper": 1.0}, INTERVAL, "Interval"),
    "StudentT": Family(4, ("nu", "mu", "sigma"), {"mu": 0.0, "sigma": 1.0}, IDENTITY, None),
    "HalfStudentT": Family(5, ("nu", "sigma"), {"nu": 1.0, "sigma": 1.0}, LOG, "LogTransform"),
    "Cauchy": Family(6, ("alpha", "beta"), {}, IDENTITY, None),
    "HalfCauchy": Family(7, ("beta",), {}, LOG, "LogTransform"),
    "Exponential": Family(8, ("lam",), {}, LOG, "LogTransform"),
    "Gamma": Family(9, ("alpha", "beta"), {}, LOG, "LogTransform"),
    "InverseGamma": Family(10, ("alpha", "beta"), {"beta": 1.0}, LOG, "LogTransform"),
    "LogNormal": Family(11, ("mu", "sigma"), {"mu": 0.0, "sigma": 1.0}, LOG, "LogTransform"),
    "Laplace": Family(12, ("mu", "b"), {}, IDENTITY, None),
    "Beta": Family(13, ("alpha", "beta"), {}, INTERVAL, "LogOddsTransform"),
}

#: Hyperparameters per element in the kernel's table.
N_HYPER = 3


def encode_prior(distribution: str, params: dict[str, float]) -> tuple[Family, list[float]] | str:
    """The family and its hyperparameters in kernel order, or why the kernel cannot take the prior."""
    fam = FAMILIES.get(distribution)
    if fam is None:
        return f"its {distribution} prior is not one of the kernel's families ({', '.join(FAMILIES)})"
    extra = set(params) - set(fam.params)
    if extra:
        return f"its {distribution} prior is given by {sorted(extra)} (the kernel reads {list(fam.params)})"
    values = {**fam.defaults, **params}
    missing = [k for k in fam.params if k not in values]
    if missing:
        return f"its {distribution} prior lacks {missing}"
    h = [float(values[k]) for k in fam.params]
    return fam, h + [0.0] * (N_HYPER - len(h))


def transform_bounds(distribution: str, params: dict[str, float]) -> tuple[float, float]:
    """``(a, b)`` of the interval transform (``(0, 1)`` for Beta), else ``(0, 0)``."""
    if distribution == "Uniform":
        values = {**FAMILIES["Uniform"].defaults, **params}
        return float(values["lower"]), float(values["upper"])
    if distribution == "Beta":
        return 0.0, 1.0
    return 0.0, 0.0


_LOG2PI = math.log(2.0 * math.pi)
_LOGPI = math.log(math.pi)
_LOG2 = math.log(2.0)


@_jit
def softplus(y: float) -> float:
    """``log(1 + exp(y))`` without overflow."""
    if y > 0.0:
        return y + math.log1p(math.exp(-y))
    return math.log1p(math.exp(y))


@_jit
def transform(code: int, y: float, a: float, b: float) -> tuple[float, float, float, float]:
    """``(v, dv/dy, log|dv/dy|, d log|dv/dy| / dy)`` of the constrained value ``v`` of ``y``."""
    if code == 1:
        v = math.exp(y)
        return v, v, y, 1.0
    if code == 2:
        s = 1.0 / (1.0 + math.exp(-y))
        return (
            a + (b - a) * s,
            (b - a) * s * (1.0 - s),
            math.log(b - a) - 2.0 * softplus(-y) - y,
            1.0 - 2.0 * s,
        )
    return y, 1.0, 0.0, 0.0


@_jit
def prior_logp(code: int, v: float, h0: float, h1: float, h2: float) -> tuple[float, float]:
    """``(log p(v), d log p / dv)`` of family ``code``; ``-inf`` (and 0) outside its support."""
    if code == 1:  # Normal(mu, sigma)
        z = (v - h0) / h1
        return -0.5 * z * z - math.log(h1) - 0.5 * _LOG2PI, -z / h1
    if code == 2:  # HalfNormal(sigma)
        if v < 0.0:
            return -np.inf, 0.0
        z = v / h0
        return 0.5 * (_LOG2 - _LOGPI) - math.log(h0) - 0.5 * z * z, -z / h0
    if code == 3:  # Uniform(lower, upper)
        if v < h0 or v > h1:
            return -np.inf, 0.0
        return -math.log(h1 - h0), 0.0
    if code == 4 or code == 5:  # StudentT(nu, mu, sigma), HalfStudentT(nu, sigma)
        nu = h0
        mu, s = (h1, h2) if code == 4 else (0.0, h1)
        if code == 5 and v < 0.0:
            return -np.inf, 0.0
        z = (v - mu) / s
        lp = (
            math.lgamma(0.5 * (nu + 1.0))
            - math.lgamma(0.5 * nu)
            - 0.5 * math.log(nu * math.pi)
            - math.log(s)
            - 0.5 * (nu + 1.0) * math.log1p(z * z / nu)
        )
        return lp + (_LOG2 if code == 5 else 0.0), -(nu + 1.0) * z / (s * (nu + z * z))
    if code == 6 or code == 7:  # Cauchy(alpha, beta), HalfCauchy(beta)
        mu, s = (h0, h1) if code == 6 else (0.0, h0)
        if code == 7 and v < 0.0:
            return -np.inf, 0.0
        z = (v - mu) / s
        lp = -_LOGPI - math.log(s) - math.log1p(z * z)
        return lp + (_LOG2 if code == 7 else 0.0), -2.0 * z / (s * (1.0 + z * z))
    if code == 8:  # Exponential(lam)
        if v < 0.0:
            return -np.inf, 0.0
        return math.log(h0) - h0 * v, -h0
    if code == 9:  # Gamma(alpha, beta)
        if v <= 0.0:
            return -np.inf, 0.0
        return h0 * math.log(h1) - math.lgamma(h0) + (h0 - 1.0) * math.log(v) - h1 * v, (h0 - 1.0) / v - h1
    if code == 10:  # InverseGamma(alpha, beta)
        if v <= 0.0:
            return -np.inf, 0.0
        lp = h0 * math.log(h1) - math.lgamma(h0) - (h0 + 1.0) * math.log(v) - h1 / v
        return lp, -(h0 + 1.0) / v + h1 / (v * v)
    if code == 11:  # LogNormal(mu, sigma)
        if v <= 0.0:
            return -np.inf, 0.0
        lv = math.log(v)
        z = (lv - h0) / h1
        return -0.5 * z * z - math.log(h1) - 0.5 * _LOG2PI - lv, -(z / h1 + 1.0) / v
    if code == 12:  # Laplace(mu, b)
        d = v - h0
        return -math.log(2.0 * h1) - abs(d) / h1, (-1.0 if d > 0.0 else (1.0 if d < 0.0 else 0.0)) / h1
    if code == 13:  # Beta(alpha, beta)
        if v <= 0.0 or v >= 1.0:
            return -np.inf, 0.0
        lp = (
            math.lgamma(h0 + h1)
            - math.lgamma(h0)
            - math.lgamma(h1)
            + (h0 - 1.0) * math.log(v)
            + (h1 - 1.0) * math.log1p(-v)
        )
        return lp, (h0 - 1.0) / v - (h1 - 1.0) / (1.0 - v)
    return 0.0, 0.0
