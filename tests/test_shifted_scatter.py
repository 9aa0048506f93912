"""The shifted packed scatter of Model 4's moderated Woodbury likelihood against its formula as a graph."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pymsem.compile.shifted_scatter import _np_forward, shifted_scatter
from tests.conftest import KERNEL_MODES


@pytest.mark.parametrize("mode", KERNEL_MODES)
@pytest.mark.parametrize("k", [1, 2])
def test_shifted_scatter_and_its_gradients_equal_the_graph_formula(mode: object, k: int) -> None:
    """``S - C s' - s C' + C' X C`` packed, and its gradients with respect to all four inputs."""
    rng = np.random.default_rng(k)
    G, p = 7, 5
    P = p * (p + 1) // 2
    values = [rng.normal(size=(G, P)), rng.normal(size=(G, k, p)), rng.normal(size=(G, k, p)), rng.normal(size=(G, k, k))]  # fmt: skip
    S, C, s, X = ins = [pt.dmatrix("S"), pt.tensor3("C"), pt.tensor3("s"), pt.tensor3("X")]
    a, b = np.tril_indices(p)
    cross = pt.sum(C[:, :, :, None] * s[:, :, None, :], axis=1)
    quad = pt.sum(C[:, :, :, None, None] * X[:, :, None, :, None] * C[:, None, None, :, :], axis=(1, 3))
    reference = S - cross[:, a, b] - cross[:, b, a] + quad[:, a, b]
    W = rng.normal(size=(G, P))

    def value_and_gradients(out: pt.TensorVariable) -> list[np.ndarray]:
        loss = pt.sum(out * W)
        return pytensor.function(ins, [out, *pt.grad(loss, ins)], mode=mode)(*values)

    for got, want in zip(
        value_and_gradients(shifted_scatter(*ins)), value_and_gradients(reference), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_np_forward(*values), value_and_gradients(reference)[0], atol=1e-12)
