"""Results of ordinal models: imputed and replicated categories, predictive checks, refusals of
what needs the categories' likelihood, the prior predictive and the diagram's marks.

Two small fits, one specification: one within factor for four 3-category items (and a
continuous covariate), fitted to data from that model (with missing cells in two items) and
to data whose items measure two uncorrelated within factors (misspecified).
"""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.compile.ordinal import threshold_name
from pymsem.results.ordinal import category_values, cut
from pymsem.specification.ordinal import OrdinalColumn

ITEMS = ["u1", "u2", "u3", "u4"]
TAU = np.array([-0.5, 0.6])
#: u1 is an ordered Categorical with these labels, u2 integer codes with a gap; u3, u4 codes 0..2.
LABELS = ["low", "mid", "high"]
U2_VALUES = np.array([1, 2, 4])
FIT = dict(draws=200, tune=300, chains=2, seed=3, progress=False, warn=False)


def _frame(two_factors: bool, seed: int, G: int = 30, n: int = 6) -> pd.DataFrame:
    """Latent responses ``loading * F_w + F_b + e`` cut at ``TAU``: one within factor (the
    model), or u1, u2 on one and u3, u4 on another, uncorrelated one."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), n)
    N = G * n
    x = rng.normal(size=N)
    fw = rng.normal(size=(N, 2))
    fw[:, 0] += 0.5 * x
    if not two_factors:
        fw[:, 1] = fw[:, 0]
    fb = rng.normal(scale=1.0, size=G)[g]
    df = pd.DataFrame({"g": g, "x": x})
    for j, c in enumerate(ITEMS):
        ystar = 1.2 * fw[:, j // 2] + fb + rng.normal(size=N)
        df[c] = (ystar[:, None] > TAU).sum(1)
    return df


def _spec(data: pd.DataFrame) -> ms.MSEM:
    m = ms.MSEM(data, cluster="g", ordinal=ITEMS)
    m.latent("F", ITEMS, levels="within")
    m.latent("FB", ITEMS, levels="between")
    return m.path("F", on="x", level="within")


def _true_data() -> pd.DataFrame:
    """The model's data with labelled categories and MCAR missing cells in u1 and u2."""
    df = _frame(two_factors=False, seed=11)
    rng = np.random.default_rng(12)
    codes1 = df["u1"].to_numpy()
    df["u1"] = pd.Categorical.from_codes(codes1, categories=LABELS, ordered=True)
    df["u2"] = U2_VALUES[df["u2"].to_numpy()].astype(float)
    df.loc[rng.random(len(df)) < 0.25, "u1"] = np.nan
    df.loc[rng.random(len(df)) < 0.2, "u2"] = np.nan
    return df


@pytest.fixture(scope="module")
def fits() -> dict[str, ms.results.fit.MSEMFit]:
    true = _spec(_true_data()).fit(**FIT)
    wrong = _spec(_frame(two_factors=True, seed=21)).fit(**FIT)
    return {"true": true, "wrong": wrong}


# ------------------------------------------------------------------------- pure helpers
def test_cut_counts_the_thresholds_below_and_keeps_nan() -> None:
    tau = np.array([-1.0, 0.0, 2.0])
    y = np.array([-3.0, -1.0, -0.5, 0.0, 1.0, 2.0, 5.0, np.nan])
    # tau_{k-1} < y <= tau_k is category k: a value on a threshold belongs to the lower one.
    np.testing.assert_array_equal(cut(y, tau), [0, 0, 1, 1, 2, 2, 3, np.nan])
    # One threshold vector per draw (leading axis).
    per_draw = cut(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([[0.0, 1.0], [0.6, 1.0]]))
    np.testing.assert_array_equal(per_draw, [[1, 1], [0, 0]])


def test_category_values_map_codes_back_to_the_users_categories() -> None:
    col = OrdinalColumn("u", (1, 2, 4), (3, 3, 3))
    np.testing.assert_array_equal(category_values(np.array([0.0, 2.0, 1.0]), col), [1, 4, 2])
    like = pd.Series(pd.Categorical(["b", "a"], categories=["a", "b"], ordered=True))
    out = category_values(np.array([1.0, 0.0, np.nan]), OrdinalColumn("v", ("a", "b"), (1, 1)), like)
    assert isinstance(out, pd.Categorical) and out.ordered
    assert list(out.astype(object)[:2]) == ["b", "a"] and pd.isna(out[2])


# --------------------------------------------------------------------------- imputations
def test_imputed_ordinal_cells_are_categories_in_the_observed_proportions(fits) -> None:
    fit = fits["true"]
    user = fit.model.data
    imp = fit.impute(m=20, seed=0)
    assert len(imp) == 20 * len(user)
    miss1, miss2 = user["u1"].isna().to_numpy(), user["u2"].isna().to_numpy()
    assert miss1.sum() > 20 and miss2.sum() > 20
    first = imp[imp.imputation == 1]
    # Observed cells unchanged; the labelled column stays an ordered Categorical of its labels.
    assert isinstance(first["u1"].dtype, pd.CategoricalDtype) and first["u1"].cat.ordered
    assert list(first["u1"].cat.categories) == LABELS
    assert (first["u1"][~miss1].astype(str).to_numpy() == user["u1"][~miss1].astype(str).to_numpy()).all()
    np.testing.assert_array_equal(first["u2"][~miss2].to_numpy(), user["u2"][~miss2].to_numpy())
    assert imp["u1"].notna().all() and imp["u2"].notna().all()
    # Integer codes come back as the user's integer values (the gap included), not latent reals.
    u2 = imp["u2"].to_numpy()
    assert np.issubdtype(u2.dtype, np.integer) and set(np.unique(u2)) <= set(U2_VALUES.tolist())

    # MCAR: the imputed categories' shares match the observed ones.
    imputed = pd.Categorical(imp["u1"].to_numpy().reshape(20, -1)[:, miss1].ravel(), categories=LABELS)
    got = pd.Series(imputed).value_counts(normalize=True)[LABELS].to_numpy()
    observed = user["u1"][~miss1].value_counts(normalize=True)[LABELS].to_numpy()
    tol = 0.08
    assert np.abs(got - observed).max() < tol, (got, observed)

    # The tolerance tells a right cut from wrong ones: the same latent responses cut at
    # thresholds shifted by one probit unit, or rounded as if they were codes, miss it.
    post = fit.posterior
    cells = [str(c) for c in post["y_missing_cell"].values]
    col = fit.structure.level1.index("u1")
    sel = [i for i, c in enumerate(cells) if int(c.split(",")[1]) == col]
    ystar = post["y_missing"].values.reshape(-1, len(cells))[:, sel]
    tau = post[threshold_name("u1")].values.reshape(-1, 2)

    def shares(codes: np.ndarray) -> np.ndarray:
        return np.array([(codes == k).mean() for k in range(3)])

    for wrong in (cut(ystar, tau + 1.0), np.clip(np.rint(ystar), 0, 2)):
        assert np.abs(shares(wrong) - observed).max() > 1.5 * tol, (shares(wrong), observed)
    assert np.abs(shares(cut(ystar, tau)) - observed).max() < tol


# ------------------------------------------------------------------------ predictive checks
def test_ppc_of_the_true_ordinal_model_replicates_categories_and_does_not_flag(fits) -> None:
    res = fits["true"].ppc(draws=200, seed=1)
    t = res.table()
    assert res.chi_square_reference == "simulated"
    assert 0.05 < res.ppp < 0.95, t.loc["chi-square"]
    props = t[t.kind == "proportion"]
    # Named by the user's categories; observed shares of the observed cells (codes).
    assert {"P(u1 = low)", "P(u1 = high)", "P(u2 = 4)", "P(u4 = 0)"} <= set(props.index)
    user = fits["true"].model.data
    share = user["u1"].value_counts(normalize=True)["mid"]
    assert props.loc["P(u1 = mid)", "observed"] == pytest.approx(share)
    assert not props["flag"].any(), props[props.flag]
    # Replicated data are codes: the shares of each item's categories add up to one.
    rep = res.replicated
    np.testing.assert_allclose(rep[[f"P(u3 = {k})" for k in range(3)]].sum(1), 1.0)
    assert t["flag"].mean() < 0.1, t[t.flag]
    # The within variance of codes 0..2 is below 1; latent responses (SD >= 1) would exceed it.
    assert rep["within cov(u3, u3)"].max() < 1.0


def test_ppc_flags_a_one_factor_model_of_two_factor_items(fits) -> None:
    res = fits["wrong"].ppc(draws=200, seed=1)
    t = res.table()
    assert res.ppp < 0.05, t.loc["chi-square"]
    # The one factor takes up one pair of items (which one can differ between chains); the other
    # pair covaries more within clusters than the model replicates.
    pairs = t.loc[["within cov(u2, u1)", "within cov(u4, u3)"]]
    assert pairs["flag"].any() and (pairs["observed"] > pairs["replicated"]).any(), pairs
    # The true model's check of the same pairs does not flag (the contrast the test rests on).
    assert not fits["true"].ppc(draws=200, seed=1).table().loc[pairs.index, "flag"].any()


def test_ppc_proportions_flag_shifted_thresholds(fits) -> None:
    """The category shares are the check that sees thresholds in the wrong place: both of u3's
    moved by half its latent response's SD (about 2 under the simulated values: 1.2^2 x 1.25 for
    the within factor, 1 between, 1 residual), which moves P(u3 = 2) from about 0.38 to 0.21
    (a third of an SD, 0.6, moved it by about three standard errors of a share of 180 students,
    at the edge of what 100 replications flag)."""
    fit = fits["true"]
    shifted = copy.copy(fit)
    shifted.__dict__ = {k: v for k, v in fit.__dict__.items() if k not in ("_ppc", "_posterior")}
    name = threshold_name("u3")
    shifted.__dict__["_posterior"] = fit.posterior.assign({name: fit.posterior[name] + 1.0})
    t = shifted.ppc(draws=100, seed=1).table()
    assert t.loc["P(u3 = 0)", "flag"] and t.loc["P(u3 = 2)", "flag"]
    assert not t.loc[[f"P(u4 = {k})" for k in range(3)], "flag"].any()


def test_table_and_summary_of_an_ordinal_fit_work_and_name_the_ppp(fits) -> None:
    fit = fits["true"]
    s = fit.summary()
    assert any(p.startswith("u1 | t") for p in s.index.get_level_values("parameter"))
    text = str(fit.table(ppp=True))
    assert "Thresholds" in text and "PPP (chi-square vs simulated moments)" in text


# ------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda f: f.loo(), "fit.loo()"),
        (lambda f: f.waic(), "fit.waic()"),
        (lambda f: f.cluster_loglik(), "fit.cluster_loglik()"),
        (lambda f: f.latent_scores(), "fit.latent_scores()"),
        (lambda f: f.within_scores(), "fit.within_scores()"),
        (lambda f: f.sensitivity(), "fit.sensitivity()"),
    ],
    ids=["loo", "waic", "cluster_loglik", "latent_scores", "within_scores", "sensitivity"],
)
def test_results_that_need_the_categories_likelihood_refuse_ordinal_fits(fits, call, what) -> None:
    with pytest.raises(NotImplementedError, match=r"ordinal variables \(u1 \(3 categories\), u2") as err:
        call(fits["true"])
    msg = str(err.value)
    assert msg.startswith(what)
    if what != "fit.latent_scores()" and what != "fit.within_scores()" and what != "fit.sensitivity()":
        assert "orthant" in msg and "fit.ppc()" in msg


def test_comparisons_by_loo_refuse_ordinal_fits(fits) -> None:
    pair = {"one": fits["true"], "two": fits["wrong"]}
    with pytest.raises(NotImplementedError, match=r"compare\(ic='loo'\) of model 'one'.*fit\.ppc\(\)"):
        ms.compare(pair)
    with pytest.raises(NotImplementedError, match=r"statistics='waic'.*ordinal"):
        ms.compare_tables(pair, statistics="waic")
    # The estimates side by side need no likelihood.
    assert "u1 | t1" in str(ms.compare_tables(pair))


# ------------------------------------------------------------------------ prior predictive
def test_prior_predictive_of_an_ordinal_model_draws_categories() -> None:
    model = _spec(_true_data())
    pp = model.prior_predictive(draws=40, seed=2)
    tau = pp.thresholds
    assert tau is not None and tau["u1"].shape == (40, 2)
    assert (np.diff(tau["u3"], axis=1) > 0).all()  # the ordered prior
    iccs = pp.draws[[f"ICC {c}" for c in ITEMS]].to_numpy()
    assert ((iccs >= 0) & (iccs <= 1)).all()
    data = pp.data_set(3, seed=0)
    assert isinstance(data["u1"].dtype, pd.CategoricalDtype) and set(data["u1"].unique()) <= set(LABELS)
    assert set(np.unique(data["u2"])) <= set(U2_VALUES.tolist())
    assert set(np.unique(data["u3"])) <= {0, 1, 2}
    # Cut at draw 3's thresholds: another draw's thresholds give other shares.
    shares = [
        pd.Series(pp.data_set(i, seed=0)["u3"]).value_counts(normalize=True).get(0, 0.0) for i in range(6)
    ]
    assert np.ptp(shares) > 0.05
    assert np.issubdtype(data["x"].dtype, np.floating) and len(np.unique(data["x"])) == len(data)


# --------------------------------------------------------------------------------- diagram
def test_diagram_marks_ordinal_variables_and_not_continuous_ones(fits, tmp_path) -> None:
    d = fits["true"].diagram()
    nodes = d.nodes.set_index(["level", "name"])
    assert nodes.loc[("within", "u1"), "categories"] == 3
    assert nodes.loc[("between", "u4"), "categories"] == 3
    assert pd.isna(nodes.loc[("within", "x"), "categories"])
    dot = d.to_dot()
    assert 'label=<u1>, peripheries=2, tooltip="ordinal (3 categories)"' in dot
    x_line = next(line for line in dot.splitlines() if line.strip().startswith('"w:x" ['))
    assert "peripheries" not in x_line
    assert "Double box: ordinal (3 categories: u1, u2, u3, u4)" in dot
    svg = d.save(tmp_path / "d.svg").read_text()
    assert 'id="ordinal:w:u1"' in svg and "ordinal:w:x" not in svg
    assert "Double box: ordinal" in svg

    plain = _frame(two_factors=False, seed=11)
    cont = (
        ms.MSEM(plain, cluster="g").latent("F", ITEMS, levels="within").latent("FB", ITEMS, levels="between")
    )
    dc = cont.diagram()
    assert dc.nodes["categories"].isna().all()
    assert "peripheries" not in dc.to_dot() and "ordinal" not in dc.to_dot()
    assert dc.layout.note == ""
