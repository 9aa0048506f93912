"""Each cluster's within scatter of graph data: against NumPy and finite differences, in each backend."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pymsem.compile.cluster_scatter import cluster_scatter
from tests.conftest import KERNEL_MODES

#: Unbalanced clusters, one of a single row, rows not in cluster order.
SIZES = [1, 4, 2, 6, 3]
P = 3


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    idx = rng.permutation(np.repeat(np.arange(len(SIZES)), SIZES))
    Y = rng.normal(size=(len(idx), P)) + 5.0
    weights = rng.normal(size=(len(SIZES), P * (P + 1) // 2 + P))
    return Y, idx, weights


def _dense(Y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Each cluster's mean, then its scatter about that mean packed row by row (lower triangle)."""
    i, j = np.tril_indices(Y.shape[1])
    out = []
    for g in range(len(SIZES)):
        d = Y[idx == g] - Y[idx == g].mean(0)
        out.append(np.concatenate([Y[idx == g].mean(0), (d.T @ d)[i, j]]))
    return np.array(out)


@pytest.mark.parametrize("mode", KERNEL_MODES)
def test_scatter_and_its_gradient(data: tuple, mode: str) -> None:
    Y, idx, weights = data
    y = pt.matrix("y", shape=(None, P))
    both = pt.concatenate(cluster_scatter(y, idx, len(SIZES)), axis=1)
    objective = pt.sum(weights * both)
    fn = pytensor.function([y], [both, pt.grad(objective, y)], mode=mode)
    got, grad = fn(Y)
    np.testing.assert_allclose(got, _dense(Y, idx), rtol=1e-12)
    assert np.all(got[0, P:] == 0.0)  # a single row has no within scatter

    def f(x: np.ndarray) -> float:
        return float(np.sum(weights * _dense(x, idx)))

    numeric = np.zeros_like(Y)
    for k in np.ndindex(Y.shape):
        up, down = Y.copy(), Y.copy()
        up[k] += 1e-6
        down[k] -= 1e-6
        numeric[k] = (f(up) - f(down)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
