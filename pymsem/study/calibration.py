"""Simulation-based calibration (SBC): rank statistics and their uniformity.

In SBC (Talts et al. 2018, arXiv:1804.06788) each replication draws parameters from the prior,
simulates a data set from them and fits it; the rank of the drawn value among ``L`` posterior
draws is uniform on ``0..L`` for every parameter when the sampler (and the model code) is
calibrated. A posterior that is too narrow piles the ranks at both ends, a biased one at one end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["rank_of", "rank_uniformity", "summarize_ranks", "thin"]


def thin(draws: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws evenly spaced over all chains' draws (``draws`` shaped (chain, draw) or flat).

    Thinning reduces the autocorrelation that makes the ranks of consecutive draws dependent
    (which widens the rank histogram's spread beyond the uniform's, Talts et al. section 5).
    """
    flat = np.asarray(draws, dtype=float).reshape(-1)
    if n < 1 or n > flat.size:
        raise ValueError(f"thin: n must be between 1 and the number of draws ({flat.size}), got {n}.")
    return flat[np.linspace(0, flat.size - 1, n).round().astype(int)]


def rank_of(truth: float, draws: np.ndarray, rng: np.random.Generator | None = None) -> int:
    """Rank of ``truth`` among ``draws``: the number of draws below it (``0..len(draws)``).

    Ties (a draw equal to the truth) are broken at random, as the uniform distribution of the
    rank assumes none.
    """
    d = np.asarray(draws, dtype=float).reshape(-1)
    below = int(np.sum(d < truth))
    ties = int(np.sum(d == truth))
    if ties:
        below += int((rng or np.random.default_rng()).integers(0, ties + 1))
    return below


def rank_uniformity(ranks: Sequence[int] | np.ndarray, n_draws: int, bins: int = 10) -> dict[str, float]:
    """Chi-square test that ranks on ``0..n_draws`` are uniform, over ``bins`` equal bins.

    Parameters
    ----------
    ranks
        One rank per replication.
    n_draws
        Posterior draws each rank was computed among (``L``; ranks take ``L + 1`` values).
    bins
        Bins of the histogram; ``L + 1`` should be a multiple of it so that each bin holds the
        same number of rank values (otherwise the expected counts are weighted by bin width).

    Returns
    -------
    dict
        ``reps``, ``chi2``, ``p_value``, ``mean_rank`` (rank / L: 0.5 when unbiased; below 0.5
        when the posterior sits above the truth) and ``sd_rank`` (about 0.29 = 1/sqrt(12) when
        uniform; larger when the posterior is too narrow).
    """
    r = np.asarray(ranks, dtype=float)
    if r.size == 0:
        raise ValueError("rank_uniformity: no ranks.")
    if np.any((r < 0) | (r > n_draws)):
        raise ValueError(f"rank_uniformity: ranks must lie in 0..{n_draws}.")
    edges = np.linspace(0, n_draws + 1, bins + 1)
    observed, _ = np.histogram(r, bins=edges)
    # Expected counts from the number of integer rank values per bin.
    values = np.arange(n_draws + 1)
    width = np.histogram(values, bins=edges)[0]
    expected = r.size * width / width.sum()
    chi2, p = stats.chisquare(observed, expected)
    u = r / n_draws
    return {"reps": float(r.size), "chi2": float(chi2), "p_value": float(p),
            "mean_rank": float(u.mean()), "sd_rank": float(u.std(ddof=1)) if r.size > 1 else np.nan}  # fmt: skip


def summarize_ranks(
    ranks: pd.DataFrame, n_draws: int, bins: int = 10, alpha: float = 0.01, by: str = "parameter"
) -> pd.DataFrame:
    """Per parameter: replications, chi-square p-value, mean and SD of the normalized rank, flag.

    ``ranks`` has one row per replication and parameter, with columns ``by`` and ``rank``;
    ``flagged`` is ``p_value < alpha``.
    """
    rows = [{by: k, **rank_uniformity(g["rank"].to_numpy(), n_draws, bins)}
            for k, g in ranks.groupby(by, sort=False)]  # fmt: skip
    out = pd.DataFrame(rows)
    out["reps"] = out["reps"].astype(int)
    out["flagged"] = out["p_value"] < alpha
    return out
