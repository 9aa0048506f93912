"""Posterior predictive checks at both levels and the posterior predictive p-value (PPP).

For each of ``draws`` posterior draws ``theta_s`` a replicated data set ``y_rep_s`` is drawn
from the model at ``theta_s`` (:func:`pymsem.simulate.draw_data`) and a discrepancy is
computed on the observed and on the replicated data; the PPP of a discrepancy is the share
of draws in which the replicated value is at least the observed one,
``PPP = P(T(y_rep) >= T(y))``. Values near 0 (the data are more extreme than the model
makes them) or near 1 (less extreme) flag misfit; a model that fits gives values near 0.5.

**What is replicated.** New clusters, as the likelihood sees them: each cluster's between
latent variables, random slopes, level-1 latent variables and residuals are drawn afresh
from their distributions at ``theta_s`` (not the cluster's own posterior values), so the
check asks whether the model generates data like these, cluster structure included. The
replicated data keep the observed cluster sizes, and a cell is masked (NaN) wherever the
user's cell was missing, so that observed and replicated statistics use the same cells.
Observed level-2 variables are **drawn** from the model like everything else (pymsem
models exogenous level-2 covariates' means and variances, so they have a distribution to
draw from), then masked where missing.

**Discrepancies.**

- ``within cov(a, b)``: the pooled within-cluster covariance matrix (deviations from the
  cluster means, divisor ``N - G``), every element;
- ``between cov(a, b)``: the covariance matrix of the cluster vectors (cluster means of the
  level-1 variables, and the level-2 variables), divisor ``G - 1``;
- ``ICC a``: the ANOVA-type ICC of each level-1 variable from those two matrices;
- ``slope SD y ~ x``: for each within path between observed variables (random slope or not), the
  SD across clusters of the clusters' own OLS slopes (clusters with at least 3 complete pairs);
- ``chi-square``: a two-level likelihood-ratio chi-square of the model-implied moments at
  ``theta_s`` against the sample's within and between covariance matrices, Muthén's (1994)
  MUML fit function (exact ML for balanced complete data, the usual approximation
  otherwise)::

      D(y, theta) = (N - G) [log|S_W(theta)| + tr(S_PW S_W(theta)^-1) - log|S_PW| - p1]
                  + (G - 1) [log|S_B*(theta)| + tr(S_B S_B*(theta)^-1) - log|S_B| - pb],

  ``S_W(theta)`` the implied within covariance (with random slopes its average over the
  slopes' distribution, by fixed quasi-random points), ``S_B*(theta) = Sigma_B(theta) +
  c S_W(theta)`` on the level-1 block with ``c`` the mean of ``1 / n_g`` (the expected
  covariance of cluster means). Its PPP is the one Mplus and blavaan report for Bayesian SEM
  (``P(D(y_rep, theta) >= D(y, theta))``, both at the same draw). With missing cells the
  sample matrices are pairwise; where one is not positive definite that draw's chi-square
  is left out.
- ``P(u = k)`` (ordinal columns only): the share of each ordinal column's observed cells in
  each of its categories (named by the user's category values).

**Ordinal variables.** The data of an ordinal column are its category codes ``0 .. K-1``;
a replicated data set draws the column's latent responses like any level-1 variable and
cuts them at the draw's thresholds (``tau_{k-1} < y* <= tau_k`` is category ``k``), so every
discrepancy above is computed on codes, for the observed and the replicated data alike.
The chi-square's Gaussian implied moments are moments of the latent responses, not of the
codes, whose expected within and between covariances the model implies only through
bivariate normal orthant probabilities integrated over the between distribution. So for a
model with ordinal columns the chi-square's reference at draw ``s`` is instead the codes'
expected sample moments at ``theta_s``, estimated from one simulated data set
:data:`REFERENCE_COPIES` times the observed one (its clusters, sizes and missing cells
repeated), drawn and cut at ``theta_s`` independently of the replicated data set. ``D(y,
theta_s)`` and ``D(y_rep_s, theta_s)`` are then computed alike against the same reference,
as the PPP needs; the reference's simulation error adds a little spread to both. (Centering
at the mean of the replicated data sets instead would not do: the observed data, which the
posterior was fitted to, lie closer to that mean than a replication does, so the PPP would
drift towards 1 for a true model.) The result's ``chi_square_reference`` says which
reference was used (``"implied"`` or ``"simulated"``), and the table footer names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymsem.compile.structure import ModelStructure
    from pymsem.results.fit import MSEMFit

__all__ = ["PPCResult", "ppc", "ppc_statistics"]

#: PPP below this or above one minus it is flagged.
FLAG_LEVEL = 0.05
#: Quasi-random slope points for the average implied within covariance under random slopes.
_SLOPE_POINTS = 64
#: With ordinal variables, the chi-square's reference moments at a draw come from a simulated data
#: set this many times the size of the observed one.
REFERENCE_COPIES = 20
CHI_SQUARE = "chi-square"


# --------------------------------------------------------------------- statistics
def _starts(sizes: np.ndarray) -> np.ndarray:
    return np.r_[0, np.cumsum(sizes)[:-1]].astype(int)


def _sample_moments(
    y1: np.ndarray, level2: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled within covariance, covariance of cluster vectors, and the cluster means (pairwise if NaN).

    ``y1`` (N, p1) in cluster order, ``level2`` (G, p2).
    """
    st = _starts(sizes)
    obs = ~np.isnan(y1)
    y0 = np.where(obs, y1, 0.0)
    cnt = np.add.reduceat(obs.astype(float), st, axis=0)  # (G, p1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.add.reduceat(y0, st, axis=0) / cnt  # NaN where a cluster has no value
    cl = np.repeat(np.arange(len(sizes)), sizes)
    d = np.where(obs, y1 - np.nan_to_num(means)[cl], 0.0)
    both = obs[:, :, None] & obs[:, None, :]  # (N, p1, p1)
    pairs = both.sum(0).astype(float)
    clusters_with = (np.add.reduceat(both.astype(np.int64), st, axis=0) > 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        SW = (d.T @ d) / (pairs - clusters_with)
    X = np.concatenate([means, level2], axis=1)
    ox = ~np.isnan(X)
    dx = np.where(ox, X - np.nanmean(X, axis=0), 0.0)
    nx = ox.T.astype(float) @ ox.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        SB = (dx.T @ dx) / (nx - 1)
    return SW, SB, means


def _cluster_ols_sd(y: np.ndarray, x: np.ndarray, sizes: np.ndarray) -> float:
    """SD across clusters of each cluster's OLS slope of ``y`` on ``x`` (complete pairs, >= 3)."""
    st = _starts(sizes)
    ok = ~(np.isnan(y) | np.isnan(x))
    n = np.add.reduceat(ok.astype(float), st)
    x0, y0 = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    sx, sy = np.add.reduceat(x0, st), np.add.reduceat(y0, st)
    sxx, sxy = np.add.reduceat(x0 * x0, st), np.add.reduceat(x0 * y0, st)
    with np.errstate(invalid="ignore", divide="ignore"):
        vxx = sxx - sx * sx / n
        b = (sxy - sx * sy / n) / vxx
    keep = (n >= 3) & (vxx > 1e-12)
    return float(np.std(b[keep], ddof=1)) if keep.sum() > 1 else float("nan")


def _slope_pairs(structure: ModelStructure) -> list[tuple[str, int, int]]:
    """(statistic name, outcome column, predictor column) for the within paths between observed variables.

    Every such path, random slope or not: a model without random slopes fitted to data whose
    slopes vary shows it here (the replicated clusters' slopes vary less than the observed).
    """
    lv1, ls = structure.level1, structure.within
    out = []
    for r, c, _ in ls.beta_free.tolist():
        y, x = ls.latent[r], ls.latent[c]
        if y in lv1 and x in lv1:
            out.append((f"slope SD {y} ~ {x}", lv1.index(y), lv1.index(x)))
    return out


def ppc_statistics(
    structure: ModelStructure,
    y1: np.ndarray,
    level2: np.ndarray,
    sizes: np.ndarray,
    categories: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, float]:
    """The data-only discrepancies of one data set, by name (see the module docstring).

    Parameters
    ----------
    structure
        The lowered model (names the columns: ``structure.level1`` then ``structure.level2``).
    y1
        Level-1 values (N, p1), rows in cluster order, NaN where missing; ordinal columns hold
        category codes ``0 .. K-1``.
    level2
        Each cluster's level-2 values (G, p2), NaN where missing.
    sizes
        Students per cluster.
    categories
        Names of each ordinal column's categories, lowest first, for the proportions'
        names (``P(u1 = agree)``); default the codes.
    """
    SW, SB, _ = _sample_moments(y1, level2, sizes)
    lv1, names = structure.level1, structure.level1 + structure.level2
    out: dict[str, float] = {}
    for i in range(len(lv1)):
        for j in range(i + 1):
            out[f"within cov({lv1[i]}, {lv1[j]})"] = float(SW[i, j])
    for i in range(len(names)):
        for j in range(i + 1):
            out[f"between cov({names[i]}, {names[j]})"] = float(SB[i, j])
    c = float(np.mean(1.0 / np.asarray(sizes, dtype=float)))
    for i, v in enumerate(lv1):
        sb = SB[i, i] - c * SW[i, i]
        out[f"ICC {v}"] = float(sb / (sb + SW[i, i]))
    for name, a, b in _slope_pairs(structure):
        out[name] = _cluster_ols_sd(y1[:, a], y1[:, b], sizes)
    for col, K in structure.ordinal.items():
        x = y1[:, lv1.index(col)]
        x = x[~np.isnan(x)].astype(np.int64)
        share = np.bincount(x, minlength=K)[:K] / max(len(x), 1)
        names_k = list(categories[col]) if categories and col in categories else list(range(K))
        for k in range(K):
            out[_proportion_name(col, names_k[k])] = float(share[k])
    return out


def _proportion_name(col: str, category: Any) -> str:
    return f"P({col} = {category})"


def _ml_discrepancy(S: np.ndarray, Sigma: np.ndarray) -> float:
    """``log|Sigma| + tr(S Sigma^-1) - log|S| - p`` (NaN where S or Sigma is not positive definite)."""
    s1, ld_sigma = np.linalg.slogdet(Sigma)
    s2, ld_s = np.linalg.slogdet(S)
    if s1 <= 0 or s2 <= 0 or not np.isfinite(S).all():
        return float("nan")
    return float(ld_sigma + np.trace(np.linalg.solve(Sigma, S)) - ld_s - len(S))


class _ImpliedMoments:
    """The implied within covariance and expected covariance of cluster vectors at a draw."""

    def __init__(self, structure: ModelStructure, sizes: np.ndarray) -> None:
        from pymsem.results.loo import _slope_points

        self.st = structure
        self.c = float(np.mean(1.0 / np.asarray(sizes, dtype=float)))
        k = len(structure.random_slopes)
        # The same points at every draw: D(., theta) is a fixed function of theta.
        self.z = _slope_points(k, _SLOPE_POINTS, 0) if k else None

    def __call__(self, vec: dict[str, np.ndarray], total_slope_cov: np.ndarray | None) -> tuple:
        from pymsem.compile.matrices import level_matrices

        st = self.st
        W = level_matrices(st.within, vec)
        Bm = level_matrices(st.between, vec)
        SW = W.Sigma
        if st.random_slopes:
            ls = st.within
            r, col, j = ls.beta_random[:, 0], ls.beta_random[:, 1], ls.beta_random[:, 2]
            L = np.linalg.cholesky(total_slope_cov + 1e-12 * np.eye(len(total_slope_cov)))
            u = self.z @ L.T
            Bg = np.broadcast_to(W.B, (len(u), *W.B.shape)).copy()
            Bg[:, r, col] += u[:, j]
            A = np.linalg.inv(np.eye(ls.n_lat) - Bg)
            SW = (W.Lambda @ A @ W.Psi @ np.swapaxes(A, -1, -2) @ W.Lambda.T).mean(0) + W.Theta
        p1 = len(SW)
        SB = np.array(Bm.Sigma, dtype=float)
        SB[:p1, :p1] += self.c * SW
        return SW, SB


def _chi_square(SW: np.ndarray, SB: np.ndarray, implied: tuple, n: int, g: int) -> float:
    return (n - g) * _ml_discrepancy(SW, implied[0]) + (g - 1) * _ml_discrepancy(SB, implied[1])


def _simulated_moments(
    structure: ModelStructure,
    vec: dict[str, np.ndarray],
    slope_cov: np.ndarray | None,
    sizes: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray],
    thresholds: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected sample moments of the data (ordinal columns as codes) at one draw, by simulation.

    One data set of :data:`REFERENCE_COPIES` times the clusters (the observed sizes and
    missing cells repeated) drawn at the draw's parameters and cut at its thresholds; its
    pooled within covariance and covariance of cluster vectors estimate the expected ones of
    a data set like the observed, with a tenth of a replication's sampling error or less.
    """
    from pymsem.results.ordinal import cut_columns
    from pymsem.simulate import draw_data

    mask1, mask2 = masks
    r = REFERENCE_COPIES
    big = np.tile(sizes, r)
    d = draw_data(structure, vec, slope_cov, big, rng)
    y = np.where(np.tile(mask1, (r, 1)), np.nan, cut_columns(structure, d.level1, thresholds))
    x = np.where(np.tile(mask2, (r, 1)), np.nan, d.level2)
    SW, SB, _ = _sample_moments(y, x, big)
    return SW, SB


# ---------------------------------------------------------------------- result
@dataclass
class PPCResult:
    """Posterior predictive checks: per discrepancy, the observed and replicated values and the PPP.

    Attributes
    ----------
    observed
        ``(draws, statistics)`` observed values (the same in every row but for the chi-square,
        which depends on the draw's parameters).
    replicated
        ``(draws, statistics)`` values of the replicated data sets.
    kinds
        Each statistic's kind: ``within``, ``between``, ``ICC``, ``slope SD``, ``proportion``
        (ordinal columns' category shares), ``chi-square``.
    seed
        The seed of the replicated data.
    chi_square_reference
        ``"implied"``: the chi-square compares with the draw's model-implied moments;
        ``"simulated"`` (models with ordinal variables): with the draw's expected sample
        moments of the codes, estimated by simulation (see the module docstring).
    """

    observed: pd.DataFrame
    replicated: pd.DataFrame
    kinds: dict[str, str]
    seed: int | None = None
    chi_square_reference: str = "implied"
    _table: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def simulated_reference(self) -> bool:
        """Whether the chi-square's reference moments are simulated ones (ordinal models)."""
        return self.chi_square_reference == "simulated"

    @property
    def ppp(self) -> float:
        """The chi-square discrepancy's posterior predictive p-value (what Mplus and blavaan report)."""
        return float(self.table().loc[CHI_SQUARE, "ppp"])

    def table(self) -> pd.DataFrame:
        """One row per statistic: observed, replicated mean and 95% interval, PPP and flag."""
        if self._table is None:
            rows = []
            for name in self.replicated.columns:
                o, r = self.observed[name].to_numpy(), self.replicated[name].to_numpy()
                ok = np.isfinite(o) & np.isfinite(r)
                rows.append(
                    {
                        "statistic": name,
                        "kind": self.kinds[name],
                        "observed": float(np.mean(o[ok])) if ok.any() else np.nan,
                        "replicated": float(np.mean(r[ok])) if ok.any() else np.nan,
                        "rep 2.5%": float(np.quantile(r[ok], 0.025)) if ok.any() else np.nan,
                        "rep 97.5%": float(np.quantile(r[ok], 0.975)) if ok.any() else np.nan,
                        "ppp": float(np.mean(r[ok] >= o[ok])) if ok.any() else np.nan,
                        "draws": int(ok.sum()),
                    }
                )
            df = pd.DataFrame(rows).set_index("statistic")
            df["flag"] = (df["ppp"] < FLAG_LEVEL) | (df["ppp"] > 1 - FLAG_LEVEL)
            self._table = df
        return self._table.copy()

    def flagged(self) -> pd.DataFrame:
        """The rows whose PPP is below 0.05 or above 0.95."""
        t = self.table()
        return t[t["flag"]]

    def __repr__(self) -> str:
        t = self.table()
        ref = " (against simulated moments of the ordinal codes)" if self.simulated_reference else ""
        lines = [
            f"Posterior predictive checks ({len(self.replicated)} draws): "
            f"chi-square PPP{ref} = {self.ppp:.3f}; {int(t['flag'].sum())} of {len(t)} statistics flagged "
            f"(PPP < {FLAG_LEVEL} or > {1 - FLAG_LEVEL})",
            t.to_string(float_format=lambda v: f"{v:.3f}"),
        ]
        return "\n".join(lines)

    def plot(self, statistics: list[str] | str | None = None, max_panels: int = 12) -> Any:
        """Observed against replicated values, one panel per statistic (ArviZ's PPC style).

        The chi-square is drawn as Mplus and blavaan do, ``D(y_rep, theta)`` against
        ``D(y, theta)`` per draw with the diagonal (points above it count for the PPP); the
        others as a histogram of the replicated values with the observed value as a line.

        Parameters
        ----------
        statistics
            Names or kinds (``"ICC"``, ``"within"``...) to show; default the chi-square,
            the flagged statistics, ICCs and slope SDs.
        max_panels
            At most this many panels.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        t = self.table()
        if statistics is None:
            names = [
                n
                for n in t.index
                if n == CHI_SQUARE or t.loc[n, "flag"] or t.loc[n, "kind"] in ("ICC", "slope SD")
            ]
        else:
            wanted = [statistics] if isinstance(statistics, str) else list(statistics)
            names = [n for n in t.index if n in wanted or t.loc[n, "kind"] in wanted]
            if not names:
                raise KeyError(f"No statistic or kind {wanted!r}; statistics: {', '.join(t.index[:8])} ...")
        names = names[:max_panels]
        ncol = min(3, len(names))
        nrow = -(-len(names) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False)
        for ax, name in zip(axes.flat, names):
            o, r = self.observed[name].to_numpy(), self.replicated[name].to_numpy()
            ok = np.isfinite(o) & np.isfinite(r)
            if name == CHI_SQUARE:
                ax.scatter(o[ok], r[ok], s=8, alpha=0.6, color="C0")
                lo, hi = np.nanmin(np.r_[o[ok], r[ok]]), np.nanmax(np.r_[o[ok], r[ok]])
                ax.plot([lo, hi], [lo, hi], color="k", lw=1)
                ax.set_xlabel("D(y, θ)")
                ax.set_ylabel("D(y_rep, θ)")
            else:
                ax.hist(r[ok], bins=30, color="C0", alpha=0.6, label="replicated")
                ax.axvline(o[ok].mean() if ok.any() else np.nan, color="k", lw=2, label="observed")
                ax.set_yticks([])
            ax.set_title(
                f"{name}\nPPP = {t.loc[name, 'ppp']:.2f}",
                fontsize=9,
                color="C3" if t.loc[name, "flag"] else "k",
            )
        for ax in list(axes.flat)[len(names) :]:
            ax.set_visible(False)
        fig.tight_layout()
        return fig


# ----------------------------------------------------------------------- on a fit
def observed_arrays(fit: MSEMFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fit's level-1 values (N, p1) in cluster order, level-2 values (G, p2) and sizes."""
    st, cd = fit.structure, fit.compiled.data
    sizes = np.asarray(cd.sizes, dtype=int)
    y1 = cd.frame[st.level1].to_numpy(dtype=float)
    if st.level2:
        l2 = cd.frame[st.level2].to_numpy(dtype=float)
        # Constant within clusters (missing cells aside): each cluster's mean of its values.
        ok = ~np.isnan(l2)
        with np.errstate(invalid="ignore", divide="ignore"):
            level2 = np.add.reduceat(np.where(ok, l2, 0.0), _starts(sizes), axis=0) / np.add.reduceat(
                ok.astype(float), _starts(sizes), axis=0
            )
    else:
        level2 = np.zeros((len(sizes), 0))
    return y1, level2, sizes


def ppc(fit: MSEMFit, draws: int = 200, seed: int | None = 0) -> PPCResult:
    """Posterior predictive checks of a fit at both levels (see the module docstring).

    Parameters
    ----------
    fit
        A fitted model.
    draws
        Posterior draws used (spread evenly over chains and draws; all if fewer).
    seed
        Seed of the replicated data.

    Returns
    -------
    PPCResult
    """
    from pymsem.compile.slopes import slope_covariance
    from pymsem.results.ordinal import cut_columns
    from pymsem.simulate import draw_data

    if int(draws) != draws or draws < 2:
        raise ValueError(f"draws must be an integer of at least 2, got {draws!r}.")
    st = fit.structure
    y1, level2, sizes = observed_arrays(fit)
    mask1, mask2 = np.isnan(y1), np.isnan(level2)
    n, g = int(sizes.sum()), len(sizes)
    params = {k: v.reshape(-1, v.shape[-1]) for k, v in fit.parameter_draws().items()}
    total = len(next(iter(params.values())))
    idx = np.unique(np.linspace(0, total - 1, min(int(draws), total)).round().astype(int))
    T = Ttot = None
    if st.random_slopes:
        k = len(st.random_slopes)
        T = slope_covariance(st, fit.posterior).reshape(-1, k, k)
        Ttot = slope_covariance(st, fit.posterior, total=True).reshape(-1, k, k)
    implied = _ImpliedMoments(st, sizes)
    ordinal = bool(st.ordinal)
    tau = {c: t.reshape(-1, t.shape[-1]) for c, t in fit.threshold_draws().items()} if ordinal else {}
    # Category names only where there are ordinal columns: the call is unchanged otherwise.
    names = {"categories": {c: o.categories for c, o in fit.compiled.data.ordinal.items()}} if ordinal else {}
    obs_stats = ppc_statistics(st, y1, level2, sizes, **names)
    SW_obs, SB_obs, _ = _sample_moments(y1, level2, sizes)
    rng = np.random.default_rng(seed)
    # The reference data sets of ordinal models draw from their own stream: the replicated data
    # are the same with or without them.
    ref_rng = np.random.default_rng(None if seed is None else [seed, 1])
    obs_rows, rep_rows = [], []
    for s in idx:
        vec = {name: v[s] for name, v in params.items()}
        d = draw_data(st, vec, None if T is None else T[s], sizes, rng)
        tau_s = {c: t[s] for c, t in tau.items()}
        level1 = cut_columns(st, d.level1, tau_s) if ordinal else d.level1
        yr = np.where(mask1, np.nan, level1)
        lr = np.where(mask2, np.nan, d.level2)
        rep = ppc_statistics(st, yr, lr, sizes, **names)
        if ordinal:
            mom = _simulated_moments(
                st, vec, None if T is None else T[s], sizes, (mask1, mask2), tau_s, ref_rng
            )
        else:
            mom = implied(vec, None if Ttot is None else Ttot[s])
        SW_rep, SB_rep, _ = _sample_moments(yr, lr, sizes)
        rep[CHI_SQUARE] = _chi_square(SW_rep, SB_rep, mom, n, g)
        obs_rows.append({**obs_stats, CHI_SQUARE: _chi_square(SW_obs, SB_obs, mom, n, g)})
        rep_rows.append(rep)
    obs_df, rep_df = pd.DataFrame(obs_rows), pd.DataFrame(rep_rows)
    kinds = {}
    for name in rep_df.columns:
        kinds[name] = (
            "chi-square"
            if name == CHI_SQUARE
            else "within"
            if name.startswith("within")
            else "between"
            if name.startswith("between")
            else "ICC"
            if name.startswith("ICC")
            else "proportion"
            if name.startswith("P(")
            else "slope SD"
        )
    order = [CHI_SQUARE] + [c for c in rep_df.columns if c != CHI_SQUARE]
    return PPCResult(obs_df[order], rep_df[order], kinds, seed, "simulated" if ordinal else "implied")
