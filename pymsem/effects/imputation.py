"""Multiple imputations: missing cells drawn from their posterior predictive distribution.

Where the model integrated the missing cells out (the ``"patterns"`` formulation), for
posterior draw ``s`` the collapsed likelihood's conditional moments (the
within covariance of every cluster, the cluster vector's mean and covariance)
are evaluated with the draw's parameters (and, with random slopes, its cluster
slopes and moderators). Then, as Blimp's imputation output does, one completed
data set is drawn per chosen posterior draw:

1. each cluster's vector ``z_g`` (latent cluster means, level-2 columns) from its
   exact conditional distribution given everything observed in the cluster;
2. each student's missing values given ``z_g`` and the student's observed values.

Where the formulation samples the missing cells with the model (the default marginal
one and the augmented one; not ``"patterns"``, which integrates them out), the imputations
are read from the posterior. So are those of models with ordinal variables (every
formulation samples their missing cells): an ordinal column's missing
cell is a latent response, which is cut at the same draw's thresholds into a category
(``tau_{k-1} < y* <= tau_k``) and returned as the user's category value (an ordered
Categorical stays one; integer codes come back as those integers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pymsem.compile.reproducible import ieee_numba
from pymsem.results.ordinal import category_values, cut_columns

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["impute"]


def _free_rv_function(model: Any, outputs: list[Any]) -> Any:
    """A compiled function from the free random variables' (constrained) values to ``outputs``."""
    import pytensor
    from pytensor.graph.replace import graph_replace

    rvs = list(model.free_RVs)
    inputs = [rv.type(name=rv.name) for rv in rvs]
    outs = graph_replace(outputs, dict(zip(rvs, inputs)), strict=False)
    with ieee_numba():
        fn = pytensor.function(inputs, outs, on_unused_input="ignore")
    names = [rv.name for rv in rvs]
    return lambda point: fn(*[point[n] for n in names])


def _chol_psd(S: np.ndarray) -> np.ndarray:
    """Cholesky factor of a covariance that may be singular (a tiny ridge keeps it defined)."""
    if S.size == 0:
        return S
    jitter = 1e-10 * max(float(np.trace(S)) / len(S), 1.0)
    return np.linalg.cholesky(S + jitter * np.eye(len(S)))


def _draw_cluster(
    rng: np.random.Generator,
    mean: np.ndarray,
    V: np.ndarray,
    x_obs: np.ndarray,
    Wt: np.ndarray,
    b_fn: Any,
    p1: int,
) -> np.ndarray:
    """Draw ``z = (z1, x)`` given exact observations of part of ``x`` and the rows' evidence on ``z1``.

    ``Wt`` is the rows' precision on ``z1``; ``b_fn(m1)`` their score ``sum P' R^-1 (y - m1)``.
    """
    k = len(mean)
    o = np.flatnonzero(~np.isnan(x_obs)) + p1
    u = np.setdiff1d(np.arange(k), o)
    m, C = mean[u].copy(), V[np.ix_(u, u)]
    if len(o):
        K = np.linalg.solve(V[np.ix_(o, o)], V[np.ix_(o, u)]).T
        m += K @ (x_obs[o - p1] - mean[o])
        C = C - K @ V[np.ix_(o, u)]
    L = _chol_psd((C + C.T) / 2)
    H = np.zeros((len(u), len(u)))
    H[:p1, :p1] = Wt
    M = np.eye(len(u)) + L.T @ H @ L
    LM = np.linalg.cholesky(M)
    b = np.zeros(len(u))
    b[:p1] = b_fn(m[:p1])
    v = np.linalg.solve(LM, L.T @ b)
    w = L @ np.linalg.solve(LM.T, v + rng.standard_normal(len(u)))
    z = np.empty(k)
    z[u] = m + w
    z[o] = x_obs[o - p1]
    return z


def _impute_marginal(fit: MSEMFit, draws: list[tuple[int, int]], seed: int | None) -> list[np.ndarray]:
    compiled = fit.compiled
    form = compiled.formulation
    terms = form.imputation_terms
    st = compiled.structure
    data = compiled.data
    p1 = len(st.level1)
    level2_cols = terms["level2_cols"]
    fn = _free_rv_function(compiled.pymc_model, [terms["W"], terms["V"], terms["mean"]])
    post = fit.posterior
    names = [rv.name for rv in compiled.pymc_model.free_RVs]
    rng = np.random.default_rng(seed)
    Y = data.frame[st.level1].to_numpy(float)
    X_all = _level2_values(fit)
    X = X_all[:, level2_cols]
    miss = np.isnan(Y)
    rows_of = np.split(np.arange(data.n_obs), np.cumsum(data.sizes)[:-1])
    out = []
    for c, d in draws:
        point = {n: np.asarray(post[n].values[c, d]) for n in names}
        W, V, mean = (np.asarray(a) for a in fn(point))
        G = data.n_clusters
        Wg = W if W.ndim == 3 else np.broadcast_to(W, (G, p1, p1))
        mean_g = mean if mean.ndim == 2 else np.broadcast_to(mean, (G, len(mean)))
        Yc = Y.copy()
        Xc = X_all.copy()
        for g in range(G):
            rows = rows_of[g]
            yg, og = Y[rows], ~miss[rows]
            Wt = np.zeros((p1, p1))
            Rinvs = []
            for i in range(len(rows)):
                o = np.flatnonzero(og[i])
                Ri = np.zeros((p1, p1))
                if len(o):
                    Ri[np.ix_(o, o)] = np.linalg.inv(Wg[g][np.ix_(o, o)])
                Rinvs.append(Ri)
                Wt += Ri
            y0 = np.nan_to_num(yg)

            def score(m1: np.ndarray, Rinvs: list[np.ndarray] = Rinvs, y0: np.ndarray = y0) -> np.ndarray:
                return sum((R @ (y - m1) for R, y in zip(Rinvs, y0)), np.zeros(p1))

            z = _draw_cluster(rng, mean_g[g], V, X[g], Wt, score, p1)
            Xc[g, level2_cols] = z[p1:]
            for i in np.flatnonzero(miss[rows].any(axis=1)):
                o, u = np.flatnonzero(og[i]), np.flatnonzero(~og[i])
                Sg = Wg[g]
                mu = z[u].copy()
                S = Sg[np.ix_(u, u)]
                if len(o):
                    K = np.linalg.solve(Sg[np.ix_(o, o)], Sg[np.ix_(o, u)]).T
                    mu += K @ (yg[i, o] - z[o])
                    S = S - K @ Sg[np.ix_(o, u)]
                Yc[rows[i], u] = mu + _chol_psd((S + S.T) / 2) @ rng.standard_normal(len(u))
        out.append((Yc, Xc))
    return out


def _level2_values(fit: MSEMFit) -> np.ndarray:
    return fit.compiled.data.level2_values(fit.compiled.structure.level2)


def _impute_augmented(fit: MSEMFit, draws: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    compiled = fit.compiled
    st, data = compiled.structure, compiled.data
    Y = data.frame[st.level1].to_numpy(float)
    X = _level2_values(fit)
    post = fit.posterior
    out = []
    for c, d in draws:
        Yc, Xc = Y.copy(), X.copy()
        if "y_missing" in post:
            Yc[np.isnan(Y)] = post["y_missing"].values[c, d]
        if "level2_missing" in post:
            Xc[np.isnan(X)] = post["level2_missing"].values[c, d]
        out.append((Yc, Xc))
    return out


def impute(fit: MSEMFit, m: int = 20, seed: int | None = None, stacked: bool = True) -> Any:
    """``m`` completed data sets, each drawn with one posterior draw.

    Parameters
    ----------
    fit
        A fitted model.
    m
        Number of imputations; the posterior draws used are spread evenly over chains and draws.
    seed
        Seed of the imputation draws (same seed, same imputations).
    stacked
        ``True``: one DataFrame with an ``imputation`` column (1..m); ``False``: a list of m DataFrames.

    Returns
    -------
    pandas.DataFrame or list of pandas.DataFrame
        The user's data (all columns, original row order and index) with the model's missing
        cells filled in. Rows left out for a missing cluster id are not included.
    """
    compiled = fit.compiled
    data = compiled.data
    st = compiled.structure
    chains, ndraws = fit.posterior.sizes["chain"], fit.posterior.sizes["draw"]
    if m < 1 or m > chains * ndraws:
        raise ValueError(
            f"m must be between 1 and the number of posterior draws ({chains * ndraws}), got {m}."
        )
    flat = np.linspace(0, chains * ndraws - 1, m).round().astype(int)
    draws = [(int(i // ndraws), int(i % ndraws)) for i in flat]
    tau = fit.threshold_draws() if st.ordinal else {}
    if not data.has_missing:
        filled = [None] * m
    elif getattr(compiled.formulation, "samples_missing", False) or st.ordinal:
        # The cells were sampled with the model (ordinal models sample them in every formulation).
        filled = _impute_augmented(fit, draws)
    else:
        filled = _impute_marginal(fit, draws, seed)
    user = fit.model.data
    base = user.iloc[data.source_rows]
    back = np.argsort(data.source_rows)  # from cluster order back to the user's row order
    missing = np.isnan(data.frame[st.level1].to_numpy(float))
    frames = []
    for k, f in enumerate(filled):
        df = base.copy()
        if f is not None:
            Yc, Xc = f
            if st.ordinal:
                c, d = draws[k]
                # Only the imputed cells are latent responses; observed ones are codes already.
                Yc = cut_columns(st, Yc, {col: t[c, d] for col, t in tau.items()}, where=missing)
            for j, col in enumerate(st.level1):
                if col in st.ordinal:
                    df[col] = category_values(Yc[:, j], data.ordinal[col], like=user[col])
                else:
                    df[col] = Yc[:, j]
            for j, col in enumerate(st.level2):
                df[col] = Xc[data.cluster_index, j]
        df = df.iloc[back]
        df.insert(0, "imputation", k + 1)
        frames.append(df)
    return pd.concat(frames) if stacked else frames
