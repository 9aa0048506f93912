"""SBC rank statistics and their uniformity test on synthetic ranks (no sampling)."""

import numpy as np
import pandas as pd
import pytest

from pymsem.study.calibration import rank_of, rank_uniformity, summarize_ranks, thin

L = 99


def _ranks(posterior_sd: float, shift: float = 0.0, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """SBC of a normal mean with a N(0, 1) prior and one N(theta, 1) observation.

    The exact posterior is N(y/2, 1/sqrt(2)); a "posterior" with another SD or center is
    miscalibrated.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        theta = rng.normal()
        y = rng.normal(theta, 1.0)
        draws = rng.normal(y / 2 + shift, posterior_sd, size=L)
        out.append(rank_of(theta, draws, rng))
    return np.array(out)


def test_exact_posterior_uniform():
    res = rank_uniformity(_ranks(np.sqrt(0.5)), L)
    assert res["p_value"] > 0.01
    assert res["mean_rank"] == pytest.approx(0.5, abs=0.03)
    assert res["sd_rank"] == pytest.approx(1 / np.sqrt(12), abs=0.02)


def test_too_narrow_posterior_rejected():
    res = rank_uniformity(_ranks(0.3), L)
    assert res["p_value"] < 1e-6
    assert res["sd_rank"] > 0.33  # ranks pile at both ends


def test_biased_posterior_rejected():
    res = rank_uniformity(_ranks(np.sqrt(0.5), shift=0.5), L)
    assert res["p_value"] < 1e-6
    assert res["mean_rank"] < 0.4  # posterior above the truth: the truth ranks low


def test_exactly_uniform_counts():
    ranks = np.tile(np.arange(L + 1), 3)  # every rank value equally often
    res = rank_uniformity(ranks, L)
    assert res["chi2"] == pytest.approx(0.0)
    assert res["p_value"] == pytest.approx(1.0)


def test_rank_of_and_thin():
    assert rank_of(0.5, np.array([0.1, 0.2, 0.9])) == 2
    assert rank_of(-1.0, np.array([0.1, 0.2])) == 0
    tied = {rank_of(0.2, np.array([0.1, 0.2, 0.3]), np.random.default_rng(s)) for s in range(50)}
    assert tied == {1, 2}
    d = np.arange(1000.0).reshape(2, 500)
    t = thin(d, 99)
    assert t.size == 99 and t[0] == 0 and t[-1] == 999 and np.all(np.diff(t) > 0)
    with pytest.raises(ValueError, match="between 1"):
        thin(d, 2000)
    with pytest.raises(ValueError, match=r"0\.\.99"):
        rank_uniformity([100], L)


def test_summarize_ranks_flags():
    ranks = pd.concat([pd.DataFrame({"parameter": "good", "rank": _ranks(np.sqrt(0.5), reps=500)}),
                       pd.DataFrame({"parameter": "narrow", "rank": _ranks(0.3, reps=500)})])  # fmt: skip
    s = summarize_ranks(ranks, L).set_index("parameter")
    assert list(s["reps"]) == [500, 500]
    assert not s.loc["good", "flagged"] and s.loc["narrow", "flagged"]
