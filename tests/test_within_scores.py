"""Within-level (per-student) latent scores: exact conditional on fixed numbers, recovery on simulated data."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

from pymsem import simulate as ms_simulate
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


def _one_draw_fit(m: Any, vec: dict[str, np.ndarray], slopes: np.ndarray | None, T: np.ndarray | None) -> Any:
    """A stand-in fit with a single posterior draw (what within_scores reads of a fit)."""
    import xarray as xr

    post: dict[str, Any] = {}
    if slopes is not None:
        k = slopes.shape[1]
        sd = np.sqrt(np.diag(T))
        post["slope_deviation"] = (("chain", "draw", "cluster", "rs"), slopes[None, None])
        post["slope_sd_b"] = (("chain", "draw", "rs"), sd[None, None])
        if k > 1:
            L = np.linalg.cholesky(T / np.outer(sd, sd))
            post["slope_corr_chol"] = (("chain", "draw", "rs", "rs2"), L[None, None])
    return types.SimpleNamespace(
        structure=m.structure(),
        compiled=types.SimpleNamespace(data=m.clustered_data()),
        parameter_draws=lambda: {key: v[None, None] for key, v in vec.items()},
        posterior=xr.Dataset(post),
    )


@pytest.mark.parametrize("kind", ["level2", "moderated", "between"])
def test_within_scores_through_the_kernel_equal_dense_conditioning(kind: str) -> None:
    """Missing level-2 values, or slopes that depend on between variables (given the clusters'
    slopes): each cluster's joint normal conditioned on its observed cells."""
    from pymsem.compile.matrices import level_matrices
    from tests.test_between_scores import _slope_case
    from tests.test_formulations import CASES, SIZES_TINY, _params

    if kind == "level2":
        spec, values, l2 = CASES["small"]
        df = ms_simulate(spec(None, l2), values, len(SIZES_TINY), SIZES_TINY, seed=4)
        df.loc[df.schid.isin(df.schid.unique()[[1, 4]]), l2[0]] = np.nan
        df.loc[[0, 5, 9], df.columns[0]] = np.nan
        m, vec, slopes, T = spec(df, l2), None, None, None
        vec = _params(m, values)
    else:
        m, vec, slopes, T = _slope_case(kind, missing=True)
    st, cd = m.structure(), m.clustered_data()
    scores = within_scores(_one_draw_fit(m, vec, slopes, T))

    from tests.test_random_effects import _dense_sigma

    Wm, Bm = level_matrices(st.within, vec), level_matrices(st.between, vec)
    mb, G = st.between.n_lat, cd.n_clusters
    if T is not None:
        Sig = _dense_sigma(st, vec, T)
        K = Sig[:mb, mb:] @ np.linalg.inv(Sig[mb:, mb:])
        S = Sig[:mb, :mb] - K @ Sig[mb:, :mb]
        prior = slopes @ K.T
    else:
        S, prior = Bm.Sigma_eta, np.zeros((G, mb))
    V = Bm.Lambda @ S @ Bm.Lambda.T + Bm.Theta
    ls, p1, q = st.within, len(st.level1), len(st.level2)
    m_lat, pb = ls.n_lat, p1 + q
    y = cd.frame[st.level1].to_numpy(float)
    x2 = np.column_stack([cd.cluster_values(c) for c in st.level2]) if q else np.zeros((G, 0))
    for g in range(G):
        Bg = Wm.B.copy()
        if slopes is not None:
            Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += slopes[g, ls.beta_random[:, 2]]
        A = np.linalg.inv(np.eye(m_lat) - Bg)
        rows = np.flatnonzero(cd.cluster_index == g)
        n = len(rows)
        cov_x = scipy.linalg.block_diag(V, *([Wm.Psi] * n), *([Wm.Theta] * n))
        mu_x = np.concatenate([Bm.nu + Bm.Lambda @ prior[g], np.zeros(n * (m_lat + p1))])
        obs = np.zeros((n * p1 + q, len(mu_x)))
        tgt = np.zeros((n * m_lat, len(mu_x)))
        for i in range(n):
            r = slice(i * p1, (i + 1) * p1)
            obs[r, :p1] = np.eye(p1)
            obs[r, pb + i * m_lat : pb + (i + 1) * m_lat] = Wm.Lambda @ A
            obs[r, pb + n * m_lat + i * p1 : pb + n * m_lat + (i + 1) * p1] = np.eye(p1)
            tgt[i * m_lat : (i + 1) * m_lat, pb + i * m_lat : pb + (i + 1) * m_lat] = A
        obs[n * p1 :, p1:pb] = np.eye(q)
        o = np.concatenate([y[rows].ravel(), x2[g]])
        keep = ~np.isnan(o)
        obs, o = obs[keep], o[keep]
        Coo = obs @ cov_x @ obs.T
        Cto = tgt @ cov_x @ obs.T
        dense_mean = tgt @ mu_x + Cto @ np.linalg.solve(Coo, o - obs @ mu_x)
        dense_var = np.diag(tgt @ cov_x @ tgt.T - Cto @ np.linalg.solve(Coo, Cto.T))
        np.testing.assert_allclose(scores["mean"].values[rows].ravel(), dense_mean, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            scores["sd"].values[rows].ravel(), np.sqrt(np.clip(dense_var, 0, None)), rtol=1e-7, atol=1e-7
        )


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
