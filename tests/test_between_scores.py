"""Between-level latent scores: exact conditional moments against dense Gaussian conditioning.

Complete and missing data, without slopes, with slopes given, and with slopes that depend on
between variables (cross-level moderators, slopes in the between model); then coverage of the
drawn scores on a moderated fit with missing cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.compile.matrices import level_matrices
from pymsem.effects.scores import between_score_moments
from tests.test_formulations import CASES, _params
from tests.test_missing import exact_case


def _dense_moments(
    m: ms.MSEM, vec: dict[str, np.ndarray], slopes: np.ndarray | None, T: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``E[eta_g | observed cells]`` and its covariance by conditioning one dense joint normal per cluster."""
    from tests.test_random_effects import _dense_sigma

    st, cd = m.structure(), m.clustered_data()
    Wm, Bm = level_matrices(st.within, vec), level_matrices(st.between, vec)
    mb, G = st.between.n_lat, cd.n_clusters
    if T is not None:
        Sig = _dense_sigma(st, vec, T)  # Sigma* entry by entry
        K = Sig[:mb, mb:] @ np.linalg.inv(Sig[mb:, mb:])
        S = Sig[:mb, :mb] - K @ Sig[mb:, :mb]
        prior_mean = slopes @ K.T
    else:
        S, prior_mean = Bm.Sigma_eta, np.zeros((G, mb))
    ls, p1, q = st.within, len(st.level1), len(st.level2)
    y = cd.frame[st.level1].to_numpy(float)
    x2 = np.column_stack([cd.cluster_values(c) for c in st.level2]) if q else np.zeros((G, 0))
    C = S @ Bm.Lambda.T  # Cov(eta, z_g)
    V = Bm.Lambda @ C + Bm.Theta
    means, covs = np.empty((G, mb)), np.empty((G, mb, mb))
    for g in range(G):
        Sw = Wm.Sigma
        if slopes is not None:
            Bg = Wm.B.copy()
            Bg[ls.beta_random[:, 0], ls.beta_random[:, 1]] += slopes[g, ls.beta_random[:, 2]]
            A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
            Sw = Wm.Lambda @ A @ Wm.Psi @ A.T @ Wm.Lambda.T + Wm.Theta
        n = int(cd.sizes[g])
        E = np.zeros((n * p1 + q, p1 + q))  # cells as functions of z_g
        E[: n * p1, :p1] = np.tile(np.eye(p1), (n, 1))
        E[n * p1 :, p1:] = np.eye(q)
        cov = E @ V @ E.T
        cov[: n * p1, : n * p1] += np.kron(np.eye(n), Sw)
        mu = E @ (Bm.nu + Bm.Lambda @ prior_mean[g])
        x = np.r_[y[cd.cluster_index == g].ravel(), x2[g]]
        o = ~np.isnan(x)
        cross = (C @ E.T)[:, o]
        gain = cross @ np.linalg.inv(cov[np.ix_(o, o)])
        means[g] = prior_mean[g] + gain @ (x[o] - mu[o])
        covs[g] = S - gain @ cross.T
    return means, covs


def _check(m: ms.MSEM, vec: dict, slopes: np.ndarray | None = None, T: np.ndarray | None = None) -> None:
    st, cd = m.structure(), m.clustered_data()
    batch = {k: v[None, None] for k, v in vec.items()}
    s = None if slopes is None else slopes[None, None]
    t = None if T is None else T[None, None]
    mean, cov = between_score_moments(st, cd, batch, s, t)
    want_mean, want_cov = _dense_moments(m, vec, slopes, T)
    np.testing.assert_allclose(mean[0, 0], want_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov[0, 0], want_cov, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("case", list(CASES))
def test_scores_without_slopes_equal_dense_conditioning(case: str, missing: bool) -> None:
    _check(*exact_case(case, missing))


def _slope_case(kind: str, missing: bool) -> tuple[ms.MSEM, dict, np.ndarray, np.ndarray | None]:
    from tests import test_moderation as tm
    from tests import test_random_effects as tr
    from tests.test_random_slopes import MODEL3_TRUTH, model3_spec

    if kind == "plain":
        spec, values = (lambda d: model3_spec(d, indicators=3)), MODEL3_TRUTH
    else:
        spec, values = (tm.tiny_spec, tm.VALUES) if kind == "moderated" else (tr.slope_spec, tr.VALUES)
    sizes = np.array([1, 6, 3, 12, 4])
    df = ms.simulate(spec(None), values, len(sizes), sizes, seed=5)
    if missing:
        rng = np.random.default_rng(6)
        cols = [c for c in df.columns if c not in ("schid", "id")]
        for c in cols:
            df.loc[rng.random(len(df)) < 0.15, c] = np.nan
        if "Z" in df:
            df.loc[df["schid"] == 3, "Z"] = np.nan  # a moderator missing in one cluster
    m = spec(df)
    vec = _params(m, values)
    st = m.structure()
    k = len(st.random_slopes)
    slopes = 0.3 * np.random.default_rng(7).standard_normal((len(sizes), k))
    if kind == "plain":
        return m, vec, slopes, None
    sd = np.full(k, values["slope_sd_b"])
    T = np.outer(sd, sd) * (np.eye(k) + values.get("slope_cor", 0.0) * (1 - np.eye(k)))
    return m, vec, slopes, T


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("kind", ["plain", "moderated", "between"])
def test_scores_given_slopes_equal_dense_conditioning(kind: str, missing: bool) -> None:
    m, vec, slopes, T = _slope_case(kind, missing)
    _check(m, vec, slopes, T)


def test_scores_of_a_moderated_fit_with_missing_cells_cover_the_drawn_values(
    moderated_fit: tuple[ms.results.fit.MSEMFit, pd.DataFrame],
) -> None:
    fit, truth = moderated_fit
    assert fit.compiled.data.has_missing
    scores = fit.latent_scores(seed=3)
    means = fit.latent_scores(draw=False)
    covered = []
    for name in ("M", "W", "Y"):
        lo = scores[name].quantile(0.025, dim=("chain", "draw")).values
        hi = scores[name].quantile(0.975, dim=("chain", "draw")).values
        t = truth[name].to_numpy()
        covered.append((lo <= t) & (t <= hi))
        est = means[name].mean(("chain", "draw")).values
        assert np.corrcoef(est, t)[0, 1] > 0.5, name
    cover = np.mean(covered)
    assert 0.88 <= cover <= 1.0, cover
    # Drawn scores scatter around the conditional means by their conditional SD.
    assert float(np.abs(scores["W"].mean(("chain", "draw")) - means["W"].mean(("chain", "draw"))).max()) < 0.1
