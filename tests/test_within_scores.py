"""Within-level (per-student) latent scores: exact conditional on fixed numbers, recovery on simulated data."""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

from pymsem.effects.within_scores import within_conditional, within_scores
from tests.conftest import model2_spec
from tests.test_random_slopes import model3_spec


def _spd(rng: np.random.Generator, k: int) -> np.ndarray:
    a = rng.standard_normal((k, k))
    return a @ a.T / k + 0.5 * np.eye(k)


def test_within_conditional_equals_dense_gaussian_conditional() -> None:
    """Per-cluster within covariances (as random slopes give): means and covariances match the
    conditional of the whole cluster's joint normal (between vector, every student's latents and residuals)."""
    rng = np.random.default_rng(0)
    p1, m, pb = 3, 2, 4  # three level-1 indicators, two within latents, one level-2 variable
    sizes = np.array([3, 2])
    G = len(sizes)
    Lam = np.array([[1.0, 0.0], [0.7, 0.0], [0.0, 1.0]])
    Psi = np.array([[1.0, 0.2], [0.2, 0.6]])
    Theta = np.diag([0.5, 0.8, 0.3])
    Sigma_B = _spd(rng, pb)
    nu_B = rng.standard_normal(pb)
    slopes = np.array([0.4, -0.3])  # eta2 <- eta1, one value per cluster
    Se, Cew, Sw = [], [], []
    for g in range(G):
        A = np.linalg.inv(np.eye(m) - np.array([[0.0, 0.0], [slopes[g], 0.0]]))
        Se.append(A @ Psi @ A.T)
        Cew.append(Se[-1] @ Lam.T)
        Sw.append(Lam @ Cew[-1] + Theta)
    idx = np.repeat(np.arange(G), sizes)
    y = rng.standard_normal((len(idx), p1)) + 1.0
    z = np.column_stack([np.stack([y[idx == g].mean(0) for g in range(G)]), rng.standard_normal(G)])
    mean, cov = within_conditional(y, idx, z, sizes, nu_B, Sigma_B, np.stack(Sw), np.stack(Cew), np.stack(Se))

    for g in range(G):
        n = sizes[g]
        A = np.linalg.inv(np.eye(m) - np.array([[0.0, 0.0], [slopes[g], 0.0]]))
        # x = [b (pb), zeta_1..n (m each), eps_1..n (p1 each)]; observed o = [y_1..y_n, level-2 value]
        cov_x = scipy.linalg.block_diag(Sigma_B, *([Psi] * n), *([Theta] * n))
        mu_x = np.concatenate([nu_B, np.zeros(n * (m + p1))])
        obs = np.zeros((n * p1 + 1, len(mu_x)))
        tgt = np.zeros((n * m, len(mu_x)))
        for i in range(n):
            r = slice(i * p1, (i + 1) * p1)
            obs[r, :p1] = np.eye(p1)
            obs[r, pb + i * m : pb + (i + 1) * m] = Lam @ A
            obs[r, pb + n * m + i * p1 : pb + n * m + (i + 1) * p1] = np.eye(p1)
            tgt[i * m : (i + 1) * m, pb + i * m : pb + (i + 1) * m] = A
        obs[-1, p1] = 1.0
        o = np.concatenate([y[idx == g].ravel(), z[g, p1:]])
        Coo = obs @ cov_x @ obs.T
        Cto = tgt @ cov_x @ obs.T
        dense_mean = tgt @ mu_x + Cto @ np.linalg.solve(Coo, o - obs @ mu_x)
        dense_cov = tgt @ cov_x @ tgt.T - Cto @ np.linalg.solve(Coo, Cto.T)
        np.testing.assert_allclose(mean[idx == g].ravel(), dense_mean, rtol=1e-10, atol=1e-12)
        for i in range(n):
            blk = dense_cov[i * m : (i + 1) * m, i * m : (i + 1) * m]
            np.testing.assert_allclose(cov[g], blk, rtol=1e-10, atol=1e-12)


def _simulate_model2_with_within_truth(
    seed: int, random_slopes: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model-2-shaped data (100 schools x 20 students) keeping every student's within factors;
    ``random_slopes`` draws each school's a_w and b_w as in tutorial Model 3."""
    rng = np.random.default_rng(seed)
    G, n = 100, 20
    N = G * n
    cl = np.repeat(np.arange(G), n)

    def factors(k: int, sd: float, a: Any, b: Any, c: float) -> np.ndarray:
        rel = sd * rng.standard_normal(k)
        intr = a * rel + sd * rng.standard_normal(k)
        ach = b * intr + c * rel + sd * rng.standard_normal(k)
        return np.column_stack([ach, intr, rel])  # ACH, INT, REL

    a_w, b_w = 0.35, 0.45
    if random_slopes:
        sd = np.sqrt([0.3, 0.2])
        cov = np.outer(sd, sd) * np.array([[1.0, 0.1], [0.1, 1.0]])
        u = rng.multivariate_normal(np.zeros(2), cov, size=G)
        a_w, b_w = (0.35 + u[:, 0])[cl], (0.45 + u[:, 1])[cl]

    load_w = {"ACH": [1.0, 0.8, 1.0, 1.0], "INT": [1.0, 1.0, 1.2, 1.0], "REL": [1.0, 1.0, 1.0, 1.0]}
    load_b = {"ACH": [1.0, 1.0, 1.2, 1.0], "INT": [1.0, 1.0, 1.0, 1.0], "REL": [1.0, 0.8, 1.0, 1.0]}
    eta_w = factors(N, 1.0, a_w, b_w, 0.25)
    eta_b = factors(G, 0.6, 0.60, 0.50, 0.25)
    cols: dict[str, np.ndarray] = {}
    for j, f in enumerate(("ACH", "INT", "REL")):
        for i in range(4):
            mu = 2.0 + load_b[f][i] * eta_b[:, j] + 0.25 * rng.standard_normal(G)
            cols[f"{f}{i + 1}"] = mu[cl] + load_w[f][i] * eta_w[:, j] + rng.standard_normal(N)
    df = pd.DataFrame(cols)
    df["schid"] = cl + 1
    return df, pd.DataFrame(eta_w, columns=["ACH", "INT", "REL"])


@pytest.fixture(scope="module")
def within_truth_fit():
    df, truth = _simulate_model2_with_within_truth(31)
    fit = model2_spec(df).fit(draws=300, tune=300, chains=2, seed=8, progress=False, warn=False)
    return fit, truth


def test_within_scores_recover_the_simulated_factors(within_truth_fit) -> None:
    """Scores correlate with the true within factors and mean +- 1.96 SD covers about 95% of them."""
    fit, truth = within_truth_fit
    scores = fit.within_scores()
    assert scores["mean"].shape == (len(truth), 3)
    for name in ("ACH", "INT", "REL"):
        est = scores["mean"].sel(latent=name).values
        sd = scores["sd"].sel(latent=name).values
        t = truth[name].to_numpy()
        r = np.corrcoef(est, t)[0, 1]
        cover = np.mean(np.abs(est - t) <= 1.96 * sd)
        assert r > 0.85, (name, r)
        assert 0.92 <= cover <= 0.98, (name, cover)
    assert scores["cluster"].values[0] == "1"


@pytest.fixture(scope="module")
def within_truth_missing_fit():
    """The same design with 15% of the level-1 cells missing completely at random."""
    df, truth = _simulate_model2_with_within_truth(32)
    rng = np.random.default_rng(4)
    items = [c for c in df.columns if c != "schid"]
    df[items] = df[items].mask(rng.random((len(df), len(items))) < 0.15)
    fit = model2_spec(df).fit(draws=300, tune=300, chains=2, seed=9, progress=False, warn=False)
    return fit, truth, df


@pytest.mark.slow
def test_within_scores_with_missing_cells_recover_the_simulated_factors(within_truth_missing_fit) -> None:
    """With missing cells the SDs grow where cells are missing and still cover about 95%."""
    fit, truth, df = within_truth_missing_fit
    scores = within_scores(fit)
    for name in ("ACH", "INT", "REL"):
        est = scores["mean"].sel(latent=name).values
        sd = scores["sd"].sel(latent=name).values
        t = truth[name].to_numpy()
        assert np.corrcoef(est, t)[0, 1] > 0.8, name
        cover = np.mean(np.abs(est - t) <= 1.96 * sd)
        assert 0.92 <= cover <= 0.98, (name, cover)
        n_missing = df[[f"{name}{i}" for i in range(1, 5)]].isna().sum(1).to_numpy()
        assert sd[n_missing >= 2].mean() > sd[n_missing == 0].mean(), name


def test_within_scores_refuse_missing_level2_values(within_truth_fit) -> None:
    fit, _ = within_truth_fit
    fake_structure = dataclasses.replace(fit.structure, level2=["SESX"])
    data = fit.compiled.data
    frame = data.frame.copy()
    frame["SESX"] = np.where(data.cluster_index == 0, np.nan, 1.0)
    fake = types.SimpleNamespace(
        structure=fake_structure, compiled=types.SimpleNamespace(data=dataclasses.replace(data, frame=frame))
    )
    with pytest.raises(NotImplementedError, match="SESX"):
        within_scores(fake)


def test_within_conditional_with_missing_cells_equals_dense_gaussian_conditional() -> None:
    """Missing cells: each cluster's joint normal conditioned on its observed cells only; with
    nothing missing the information-form path equals the cluster-mean path."""
    from pymsem.effects.within_scores import within_conditional_missing

    rng = np.random.default_rng(1)
    p1, m, pb = 3, 2, 4
    sizes = np.array([4, 3])
    G = len(sizes)
    Lam = np.array([[1.0, 0.0], [0.7, 0.0], [0.0, 1.0]])
    Psi = np.array([[1.0, 0.2], [0.2, 0.6]])
    Theta = np.diag([0.5, 0.8, 0.3])
    Sigma_B, nu_B = _spd(rng, pb), rng.standard_normal(pb)
    slopes = np.array([0.4, -0.3])
    As = [np.linalg.inv(np.eye(m) - np.array([[0.0, 0.0], [b, 0.0]])) for b in slopes]
    Se = np.stack([A @ Psi @ A.T for A in As])
    Cew = Se @ Lam.T
    Sw = Lam @ Cew + Theta
    idx = np.repeat(np.arange(G), sizes)
    y = rng.standard_normal((len(idx), p1)) + 1.0
    l2 = rng.standard_normal((G, 1))
    z = np.column_stack([np.stack([y[idx == g].mean(0) for g in range(G)]), l2])
    full_mean, full_cov = within_conditional(y, idx, z, sizes, nu_B, Sigma_B, Sw, Cew, Se)
    mean0, cov0 = within_conditional_missing(y, idx, l2, nu_B, Sigma_B, Sw, Cew, Se)
    np.testing.assert_allclose(mean0, full_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov0, full_cov[idx], rtol=1e-9, atol=1e-12)

    y[0, 1] = y[2, [0, 2]] = y[4, :] = y[6, 0] = np.nan  # one student with nothing observed
    mean, cov = within_conditional_missing(y, idx, l2, nu_B, Sigma_B, Sw, Cew, Se)
    for g in range(G):
        n, A = sizes[g], As[g]
        cov_x = scipy.linalg.block_diag(Sigma_B, *([Psi] * n), *([Theta] * n))
        mu_x = np.concatenate([nu_B, np.zeros(n * (m + p1))])
        obs = np.zeros((n * p1 + 1, len(mu_x)))
        tgt = np.zeros((n * m, len(mu_x)))
        for i in range(n):
            r = slice(i * p1, (i + 1) * p1)
            obs[r, :p1] = np.eye(p1)
            obs[r, pb + i * m : pb + (i + 1) * m] = Lam @ A
            obs[r, pb + n * m + i * p1 : pb + n * m + (i + 1) * p1] = np.eye(p1)
            tgt[i * m : (i + 1) * m, pb + i * m : pb + (i + 1) * m] = A
        obs[-1, p1] = 1.0
        o = np.concatenate([y[idx == g].ravel(), l2[g]])
        keep = ~np.isnan(o)
        obs, o = obs[keep], o[keep]
        Coo = obs @ cov_x @ obs.T
        Cto = tgt @ cov_x @ obs.T
        dense_mean = tgt @ mu_x + Cto @ np.linalg.solve(Coo, o - obs @ mu_x)
        dense_cov = tgt @ cov_x @ tgt.T - Cto @ np.linalg.solve(Coo, Cto.T)
        np.testing.assert_allclose(mean[idx == g].ravel(), dense_mean, rtol=1e-9, atol=1e-12)
        for i, row in enumerate(np.flatnonzero(idx == g)):
            blk = dense_cov[i * m : (i + 1) * m, i * m : (i + 1) * m]
            np.testing.assert_allclose(cov[row], blk, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_within_scores_with_random_slopes_recover_the_simulated_factors() -> None:
    """Random slopes (Model 3): each draw conditions on the cluster's drawn slopes; the scores
    still cover about 95% of the true within factors."""
    df, truth = _simulate_model2_with_within_truth(33, random_slopes=True)
    fit = model3_spec(df).fit(draws=300, tune=300, chains=2, seed=10, progress=False, warn=False)
    scores = within_scores(fit)
    for name in ("ACH", "INT", "REL"):
        est = scores["mean"].sel(latent=name).values
        sd = scores["sd"].sel(latent=name).values
        t = truth[name].to_numpy()
        assert np.corrcoef(est, t)[0, 1] > 0.8, name
        cover = np.mean(np.abs(est - t) <= 1.96 * sd)
        assert 0.92 <= cover <= 0.98, (name, cover)
