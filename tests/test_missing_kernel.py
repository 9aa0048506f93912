"""The observed-cells kernel (:mod:`pymsem.compile.kernel.missing_numba`) against dense references.

* each cluster's log-likelihood equals the dense normal density of its observed values;
* the gradient with respect to ``W``, ``V`` and ``mu`` equals finite differences, with one
  within covariance and with one per cluster;
* the posterior mean of the cluster vector equals the dense Gaussian conditional;
* a covariance that is not positive definite gives ``nan``.
"""

from __future__ import annotations

import numpy as np
import pytest

from pymsem.compile.kernel import missing_numba as mn
from pymsem.compile.kernel.missing_op import missing_arguments, missing_reduction
from pymsem.compile.matrices import level_matrices
from pymsem.compile.missing import pattern_statistics
from tests.test_formulations import CASES
from tests.test_missing import _dense_per_cluster, _tiny_case


def _setup(case: str):
    m, vec = _tiny_case(case)
    st, cd = m.structure(), m.clustered_data()
    W, B = level_matrices(st.within, vec), level_matrices(st.between, vec)
    red = missing_reduction(pattern_statistics(st, cd))
    return m, vec, W, B, red


def _call(fn, W, V, mu, red):
    return fn(*missing_arguments(W, V, mu, *red.values()))


@pytest.mark.parametrize("case", list(CASES))
def test_cluster_loglik_equals_dense_density(case: str) -> None:
    m, vec, W, B, red = _setup(case)
    ll, _, _ = _call(mn.missing_moments, W.Sigma[None], B.Sigma, B.nu[None], red)
    np.testing.assert_allclose(ll, _dense_per_cluster(m, vec), rtol=1e-10, atol=1e-10)
    f = _call(mn.missing_value_and_grad, W.Sigma[None], B.Sigma, B.nu[None], red)[0]
    assert f == pytest.approx(ll.sum(), rel=1e-12)


@pytest.mark.parametrize("per_cluster", [False, True])
@pytest.mark.parametrize("case", ["rich", "observed"])
def test_gradient_equals_finite_differences(case: str, per_cluster: bool) -> None:
    _, _, W, B, red = _setup(case)
    G = red["level2"].shape[0]
    rng = np.random.default_rng(3)
    if per_cluster:  # different within covariances and means per cluster
        D = 0.1 * rng.normal(size=(G, *W.Sigma.shape))
        args = [
            W.Sigma[None] + D @ np.swapaxes(D, 1, 2),
            B.Sigma,
            B.nu[None] + 0.1 * rng.normal(size=(G, len(B.nu))),
        ]
    else:
        args = [W.Sigma[None], B.Sigma, B.nu[None]]
    _, *grads = _call(mn.missing_value_and_grad, *args, red)
    h = 1e-6
    for i, g in enumerate(grads):
        E = rng.normal(size=args[i].shape)
        if E.ndim >= 2 and E.shape[-1] == E.shape[-2] and i < 2:
            E = E + np.swapaxes(E, -1, -2)  # symmetric directions for covariances
        up, down = list(args), list(args)
        up[i], down[i] = args[i] + h * E, args[i] - h * E
        fd = (
            _call(mn.missing_value_and_grad, *up, red)[0] - _call(mn.missing_value_and_grad, *down, red)[0]
        ) / (2 * h)
        assert np.sum(g * E) == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_per_cluster_arguments_equal_shared_ones() -> None:
    _, _, W, B, red = _setup("rich")
    G = red["level2"].shape[0]
    shared = _call(mn.missing_value_and_grad, W.Sigma[None], B.Sigma, B.nu[None], red)
    tiled = _call(
        mn.missing_value_and_grad, np.repeat(W.Sigma[None], G, 0), B.Sigma, np.repeat(B.nu[None], G, 0), red
    )
    assert tiled[0] == pytest.approx(shared[0], rel=1e-13)
    np.testing.assert_allclose(tiled[1].sum(0), shared[1][0], atol=1e-10)
    np.testing.assert_allclose(tiled[2], shared[2], atol=1e-10)
    np.testing.assert_allclose(tiled[3].sum(0), shared[3][0], atol=1e-10)


def test_posterior_mean_equals_dense_conditional() -> None:
    """E[z_g | observed] from the stacked normal of the cluster's observed values and z_g."""
    m, _vec, W, B, red = _setup("observed")
    st, cd = m.structure(), m.clustered_data()
    _, zhat, zcov = _call(mn.missing_moments, W.Sigma[None], B.Sigma, B.nu[None], red)
    p1, Y = len(st.level1), cd.frame[st.level1].to_numpy(float)
    X = np.column_stack([cd.cluster_values(c) for c in st.level2])
    S, nu = B.Sigma, B.nu
    for g in range(cd.n_clusters):
        y = Y[cd.cluster_index == g]
        n = len(y)
        obs = np.concatenate([y.ravel(), X[g]])
        mean = np.concatenate([np.tile(nu[:p1], n), nu[p1:]])
        top = np.kron(np.eye(n), W.Sigma) + np.kron(np.ones((n, n)), S[:p1, :p1])
        side = np.kron(np.ones((n, 1)), S[:p1, p1:])
        cov = np.block([[top, side], [side.T, S[p1:, p1:]]])
        cz = np.hstack([np.kron(np.ones((1, n)), S[:, :p1]), S[:, p1:]])  # Cov(z, obs)
        o = ~np.isnan(obs)
        K = cz[:, o] @ np.linalg.inv(cov[np.ix_(o, o)])
        np.testing.assert_allclose(zhat[g], nu + K @ (obs[o] - mean[o]), atol=1e-9)
        np.testing.assert_allclose(zcov[g], S - K @ cz[:, o].T, atol=1e-9)


def test_not_positive_definite_gives_nan() -> None:
    _, _, W, B, red = _setup("small")
    bad = W.Sigma.copy()
    bad[0, 0] = -1.0
    assert np.isnan(_call(mn.missing_value_and_grad, bad[None], B.Sigma, B.nu[None], red)[0])
    assert np.isnan(_call(mn.missing_value_and_grad, W.Sigma[None], -B.Sigma, B.nu[None], red)[0])
