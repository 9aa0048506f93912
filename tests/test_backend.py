"""nutpie's JAX backend: the same posterior as numba's, a clear error for an unknown backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import pymsem as ms
from pymsem.sample import sample_compiled


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        sample_compiled(None, backend="cuda")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_samples_the_random_intercept_model() -> None:
    """The variance components of a random-intercept model recovered through the JAX backend."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(60), 20)
    y = rng.normal(scale=1.0, size=len(g)) + rng.normal(scale=0.5, size=60)[g]
    import pandas as pd

    df = pd.DataFrame({"schid": g, "y": y})
    m = ms.MSEM.from_lavaan("level: 1\n y ~~ y\nlevel: 2\n y ~~ y", df, cluster="schid")
    fit = m.fit(draws=300, tune=300, chains=2, seed=1, progress=False, warn=False, backend="jax")
    post = fit.run.idata.posterior
    sd_w = float(post["resid_sd_w"].mean())
    assert sd_w == pytest.approx(1.0, abs=0.1)
