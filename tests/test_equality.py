"""Equality constraints: parameters sharing a label are one parameter (cross-level invariance)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.simulate import parameter_vectors, spec_structure
from tests.conftest import FACTORS, MODEL2_TRUTH, mediation_paths

#: Model 2's truth with each free loading equal within and between clusters.
EQUAL_TRUTH = {
    **{k: v for k, v in MODEL2_TRUTH.items() if not k.startswith("loading")},
    "loading_w": 1.0,
    "ACH_ACH2": 0.8,
    "INT_INT3": 1.2,
    "REL_REL2": 0.7,
}


def invariant_spec(data: pd.DataFrame | None, equal: bool = True) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in FACTORS:
        m.latent(f, [f"{f}{i}" for i in range(1, 5)], equal_loadings=equal)
    return mediation_paths(m)


@pytest.fixture(scope="module")
def invariant_data() -> pd.DataFrame:
    return ms.simulate(invariant_spec(None), EQUAL_TRUTH, n_clusters=80, cluster_size=12, seed=11)


def test_shared_labels_remove_parameters(invariant_data: pd.DataFrame) -> None:
    free = invariant_spec(invariant_data, equal=False).structure()
    equal = invariant_spec(invariant_data).structure()
    assert free.n_free - equal.n_free == 9  # three free loadings per factor, between = within
    table = invariant_spec(invariant_data).parameters()
    loads = table[(table["op"] == "=~") & table["free"]]
    by_level = loads.pivot(index=["lhs", "rhs"], columns="level", values="id")
    assert (by_level["within"] == by_level["between"]).all()
    assert set(loads["label"]) == {f"{f}_{f}{i}" for f in FACTORS for i in (2, 3, 4)}
    priors = invariant_spec(invariant_data).priors()
    between = priors[(priors["level"] == "between") & (priors["kind"] == "factor loading")]
    assert between["source"].str.startswith("equal to").all()


def test_simulated_values_follow_the_constraint() -> None:
    st = spec_structure(invariant_spec(None))
    vec = parameter_vectors(st, EQUAL_TRUTH)
    np.testing.assert_array_equal(vec["loading_w"], vec["loading_b"])
    assert vec["loading_w"][st.groups["loading_w"].elements.index("INT3 by INT")] == 1.2


@pytest.mark.slow
def test_equal_loadings_recovered(invariant_data: pd.DataFrame) -> None:
    """The constrained model's draws obey the constraint and its intervals cover the truth."""
    fit = invariant_spec(invariant_data).fit(
        draws=500, tune=500, chains=2, seed=7, progress=False, warn=False
    )
    post = fit.posterior
    np.testing.assert_array_equal(post["loading_w"].values, post["loading_b"].values)
    s = fit.summary()
    special = {"ACH2 by ACH": 0.8, "INT3 by INT": 1.2, "REL2 by REL": 0.7}
    free = [f"{f}{i} by {f}" for f in FACTORS for i in (2, 3, 4)]
    misses = []
    for el in free:
        true = special.get(el, 1.0)
        row = s.loc[("within", el)]
        assert row["median"] == s.loc[("between", el), "median"]  # one parameter
        assert abs(row["median"] - true) < 3 * row["sd"], (el, row.to_dict())
        if not row["lower"] <= true <= row["upper"]:
            misses.append(el)
    # Nine 95% intervals: one miss is chance (probability 0.37 of at least one), two are not.
    assert len(misses) <= 1, misses
    for lab in ("a_w", "b_w", "a_b", "b_b"):
        row = s[s["label"] == lab].iloc[0]
        assert row["lower"] <= EQUAL_TRUTH[lab] <= row["upper"], (lab, row.to_dict())
    assert fit.diagnostics()["max_rhat"] < 1.05
