"""Recovery: on data simulated with known parameters, 95% intervals cover the truth."""

from __future__ import annotations

import numpy as np
import pytest

from pymsem.compile.structure import ModelStructure
from pymsem.simulate import parameter_vectors
from tests.conftest import MODEL1_TRUTH, MODEL2_TRUTH


def truth_by_row(structure: ModelStructure, values: dict[str, float], kinds: tuple[str, ...]) -> dict:
    """(level, parameter row) -> true value for the free parameters of the given kinds."""
    vec = parameter_vectors(structure, values)
    out = {}
    for g in structure.groups.values():
        if g.kind not in kinds:
            continue
        for i, el in enumerate(g.elements):
            out[(str(g.level), el)] = vec[g.name][i]
    return out


def check_recovery(fit, truth: dict, allowed_misses: int = 0) -> None:
    """Every true value inside its 95% interval and within 2 posterior SD of the median.

    ``allowed_misses`` tolerates the few misses that 95% intervals make by
    chance over many parameters (at most 1 of 18 loadings here).
    """
    s = fit.summary()
    misses = []
    for key, true in truth.items():
        row = s.loc[key]
        covered = row["lower"] <= true <= row["upper"]
        close = abs(row["median"] - true) <= 2 * row["sd"]
        if not (covered and close):
            misses.append(
                f"{key}: truth {true:.3f}, median {row['median']:.3f} [{row['lower']:.3f}, {row['upper']:.3f}]"
            )
    assert len(misses) <= allowed_misses, "\n".join(misses)


def test_model2_paths_and_loadings_recovered(model2_fit) -> None:
    paths = truth_by_row(model2_fit.structure, MODEL2_TRUTH, ("path",))
    loadings = truth_by_row(model2_fit.structure, MODEL2_TRUTH, ("loading",))
    assert (len(paths), len(loadings)) == (6, 18)
    check_recovery(model2_fit, paths)
    # Misses within a factor are correlated (they share the marker), and between-level loading
    # medians are skewed upward with 100 clusters; 16 of 18 is the bar for 95% intervals.
    check_recovery(model2_fit, loadings, allowed_misses=2)


@pytest.mark.slow
def test_model2_consistent_with_many_clusters() -> None:
    """With 4000 clusters every path and loading is within 3.5 posterior SD of the truth, and precise."""
    import pymsem as ms
    from tests.conftest import model2_spec

    df = ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=4000, cluster_size=5, seed=2)
    fit = model2_spec(df).fit(draws=300, tune=300, chains=2, seed=1, progress=False, warn=False)
    s = fit.summary()
    truth = truth_by_row(fit.structure, MODEL2_TRUTH, ("path", "loading"))
    z = {k: abs(s.loc[k, "median"] - t) / s.loc[k, "sd"] for k, t in truth.items()}
    assert max(z.values()) < 3.5, z
    assert s.loc[list(truth), "sd"].max() < 0.05


def test_model2_variances_recovered(model2_fit) -> None:
    s = model2_fit.summary()
    # within factor variance of REL (exogenous): truth 1.0; between: 0.36
    assert s.loc[("within", "REL ~~ REL"), "lower"] <= 1.0 <= s.loc[("within", "REL ~~ REL"), "upper"]
    assert s.loc[("between", "REL ~~ REL"), "lower"] <= 0.36 <= s.loc[("between", "REL ~~ REL"), "upper"]
    assert s.loc[("between", "ACH1"), "lower"] <= 3.0 <= s.loc[("between", "ACH1"), "upper"]


def test_model1_paths_recovered_with_unbalanced_clusters(model1_fit) -> None:
    truth = truth_by_row(model1_fit.structure, MODEL1_TRUTH, ("path",))
    assert len(truth) == 6
    check_recovery(model1_fit, truth)


def test_standardized_estimates_match_hand_computation(model2_fit) -> None:
    """Std.Est. of a within path = b * sd(pred) / sd(out), from the implied latent covariance."""
    d = model2_fit.parameter_draws()
    b = d["path_w"]  # INT<-REL, ACH<-INT, ACH<-REL
    psi = d["lv_sd_w"] ** 2  # ACH, INT, REL residual variances
    var_rel = psi[..., 2]
    var_int = b[..., 0] ** 2 * var_rel + psi[..., 1]
    cov_int_rel = b[..., 0] * var_rel
    var_ach = (
        b[..., 1] ** 2 * var_int
        + b[..., 2] ** 2 * var_rel
        + 2 * b[..., 1] * b[..., 2] * cov_int_rel
        + psi[..., 0]
    )
    std_b = np.median(b[..., 1] * np.sqrt(var_int / var_ach))
    s = model2_fit.summary()
    assert s.loc[("within", "ACH <- INT"), "std"] == pytest.approx(std_b, rel=1e-10)
    lam = d["loading_w"][..., 0]  # ACH2 by ACH
    theta = d["resid_sd_w"][..., 1] ** 2  # ACH2 residual variance
    std_l = np.median(lam * np.sqrt(var_ach) / np.sqrt(lam**2 * var_ach + theta))
    assert s.loc[("within", "ACH2 by ACH"), "std"] == pytest.approx(std_l, rel=1e-10)


def _interval_coverage(scores, truth_frame, names) -> dict[str, float]:
    out = {}
    for name in names:
        lo = scores[name].quantile(0.025, dim=("chain", "draw")).values
        hi = scores[name].quantile(0.975, dim=("chain", "draw")).values
        true = truth_frame[name].to_numpy()
        out[name] = float(np.mean((lo <= true) & (true <= hi)))
    return out


def test_latent_cluster_means_are_recovered(model1_fit) -> None:
    """Scores drawn from the exact conditionals: 95% intervals cover about 95% of the true cluster means."""
    import pymsem as ms
    from tests.conftest import MODEL1_TRUTH, model1_spec

    rng = np.random.default_rng(5)
    sizes = rng.integers(5, 30, size=80)  # the same draws as the model1_data fixture
    df, truth = ms.simulate(
        model1_spec(None),
        MODEL1_TRUTH,
        n_clusters=80,
        cluster_size=sizes,
        seed=12,
        return_cluster_values=True,
    )
    np.testing.assert_allclose(df["INT"].to_numpy(), model1_fit.compiled.data.frame["INT"].to_numpy())
    scores = model1_fit.latent_scores(seed=1)
    cover = _interval_coverage(scores, truth, ["ACH", "INT", "REL"])
    assert all(0.85 <= c <= 1.0 for c in cover.values()), cover
    means = model1_fit.latent_scores(draw=False)
    for name in ("INT", "REL"):
        est = means[name].mean(("chain", "draw")).values
        assert np.corrcoef(est, truth[name])[0, 1] > 0.8, name
