"""Simulation studies: hand-counted summaries, resume, engines that agree, recorded failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pymsem as ms
from pymsem.study import Design, SimulationStudy, grid, rep_seeds, truth_values
from pymsem.study.design import impose_missing
from pymsem.study.store import Store
from tests.conftest import MODEL1_TRUTH, model1_spec

FIT = {"draws": 150, "tune": 200, "chains": 1}
DESIGNS = grid([20, 30], cluster_size=5)
# Columns that legitimately differ between two runs of the same replication.
TIMING = ["seconds", "reused"]


def spec() -> ms.MSEM:
    return model1_spec(None).derived("ind_w", "a_w*b_w")


def study(out, reps: int = 3, **kwargs) -> SimulationStudy:
    return SimulationStudy(
        spec(), MODEL1_TRUTH, DESIGNS, reps=reps, fit_options=FIT, seed=7, out=out, **kwargs
    )


def per_rep(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=TIMING).sort_values(["design", "rep", "level", "parameter"], ignore_index=True)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> SimulationStudy:
    """2 designs x 3 replications, uninterrupted, in this process."""
    return study(tmp_path_factory.mktemp("full"), workers=1).run(progress=False)


# ------------------------------------------------------------------ summaries by hand
def test_power_coverage_and_bias_match_a_hand_count(full: SimulationStudy) -> None:
    res = full.results()
    assert len(full.results()[["design", "rep"]].drop_duplicates()) == 6
    assert (res["error"] == "").all()
    s = full.summary(["a_w", "b_w", "ind_w"])
    assert len(s) == 6
    for row in s.itertuples():
        reps = res[(res["design"] == row.design) & (res["label"] == row.label)]
        assert len(reps) == 3 == row.reps
        lo, hi, med = reps["lower"].to_numpy(), reps["upper"].to_numpy(), reps["median"].to_numpy()
        truth = {"a_w": 0.30, "b_w": 0.40, "ind_w": 0.30 * 0.40}[row.label]
        assert row.truth == pytest.approx(truth)
        hand_power = sum(1 for a, b in zip(lo, hi) if a > 0 or b < 0) / 3
        hand_cover = sum(1 for a, b in zip(lo, hi) if a <= truth <= b) / 3
        assert row.power == pytest.approx(hand_power)
        assert row.coverage == pytest.approx(hand_cover)
        assert row.bias == pytest.approx(np.mean(med) - truth)
        assert row.rel_bias == pytest.approx((np.mean(med) - truth) / truth)
        assert row.rmse == pytest.approx(np.sqrt(np.mean((med - truth) ** 2)))
        assert row.sd_estimates == pytest.approx(np.std(med, ddof=1))
        assert row.mean_sd == pytest.approx(reps["sd"].mean())
        conv = res[res["design"] == row.design].groupby("rep")["converged"].first()
        assert row.converged == pytest.approx(np.mean(conv.astype(bool)))
    # Estimates do recover the truth: the within paths' medians sit within a few SDs of it.
    ok = s[s["label"].isin(["a_w", "b_w"])]
    assert (ok["bias"].abs() < 3 * ok["mean_sd"]).all()


def test_the_truth_of_derived_and_random_slope_quantities() -> None:
    """Truth rows go through the fit's own machinery: variances, ICCs, cov(RSa, RSb), a_w*b_w + cov."""
    from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

    t = TUTORIAL_TRUTH[3]
    spec3 = tutorial_spec(3)
    df = ms.simulate(spec3, t, n_clusters=5, cluster_size=3, seed=1)
    tv = {k[2] or k[1]: v for k, v in truth_values(spec3.with_data(df), t).items()}
    cov = t["rCor"] * t["slope_sd_b[RSa]"] * t["slope_sd_b[RSb]"]
    assert tv["rCov"] == pytest.approx(cov)
    assert tv["med_w"] == pytest.approx(t["a_w"] * t["b_w"] + cov)
    assert tv["med_con"] == pytest.approx(t["a_b"] * t["b_b"] - t["a_w"] * t["b_w"] - cov)
    assert tv["RSa variance"] == pytest.approx(0.3)
    lv_b, lv_w, res_b, res_w = (
        t["lv_sd_b"] ** 2,
        t["lv_sd_w"] ** 2,
        t["resid_sd_b"] ** 2,
        t["resid_sd_w"] ** 2,
    )
    icc_rel = (lv_b + res_b) / (lv_b + res_b + lv_w + res_w)  # REL1: loading 1, exogenous factor
    assert tv["ICC REL1"] == pytest.approx(icc_rel)


def test_power_picks_the_smallest_design_reaching_the_target(full: SimulationStudy) -> None:
    s = full.summary(["b_w"])
    found = ms.power(full, ["b_w"], target=0.5)
    reaching = s[s["power"] >= 0.5]
    if reaching.empty:
        assert found.design is None
    else:
        assert found.design == full.designs[int(reaching["design"].min())]
    assert ms.power(full, "b_w", target=1.01).design is None
    with pytest.raises(ms.MSEMSpecificationError, match="No results for"):
        full.power(["no_such_label"])


def test_power_curve_plot(full: SimulationStudy) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = full.plot_power(["a_w", "b_w"])
    lines = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(lines) == 2
    s = full.summary(["a_w"])
    np.testing.assert_allclose(lines[0].get_ydata(), s.sort_values("n_clusters")["power"])
    np.testing.assert_array_equal(lines[0].get_xdata(), [20, 30])
    plt.close("all")


# ------------------------------------------------------------------------- resume
def test_an_interrupted_study_resumes_to_the_same_results(full: SimulationStudy, tmp_path) -> None:
    first = study(tmp_path, workers=1).run(progress=False, max_reps=4)
    assert len(first.results()[["design", "rep"]].drop_duplicates()) == 4
    # A kill in the middle of a write: half of the next replication's rows reach the file.
    rest = full.results()
    cut = rest[(rest["design"] == 1) & (rest["rep"] == 1)]
    cut = cut.iloc[: len(cut) // 2].drop(
        columns=["design_name", "n_clusters", "cluster_size", "missing", "mechanism"]
    )
    with open(tmp_path / "design_001.csv", "a") as fh:
        fh.write(cut.to_csv(index=False, header=False) + "0,1,within,INT <")
    resumed = study(tmp_path, workers=1)
    assert len(resumed._done()) == 4  # the cut-short replication is not counted as done
    resumed.run(progress=False)
    assert resumed.last_run["replications"] == 2
    pd.testing.assert_frame_equal(per_rep(resumed.results()), per_rep(full.results()))


def test_other_settings_in_the_same_directory_are_refused(full: SimulationStudy) -> None:
    with pytest.raises(ms.MSEMSpecificationError, match="other settings"):
        SimulationStudy(
            spec(), {**MODEL1_TRUTH, "a_w": 0.5}, DESIGNS, reps=3, fit_options=FIT, seed=7, out=full.out
        )


# -------------------------------------------------------------------------- engines
def test_two_local_workers_give_the_same_replications(full: SimulationStudy, tmp_path) -> None:
    # One design, so each worker process compiles one shape; its seeds are design 0's.
    two = SimulationStudy(
        spec(), MODEL1_TRUTH, DESIGNS[:1], reps=2, fit_options=FIT, seed=7, out=tmp_path, workers=2
    )
    two.run(progress=False)
    mine = per_rep(full.results().query("design == 0 and rep < 2"))
    pd.testing.assert_frame_equal(per_rep(two.results()), mine)


def test_a_dask_cluster_gives_the_same_replications(full: SimulationStudy) -> None:
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        dask = study(None, reps=2, client=client).run(progress=False)
    mine = per_rep(full.results()[full.results()["rep"] < 2])
    pd.testing.assert_frame_equal(per_rep(dask.results()), mine)


def test_seeds_depend_on_the_position_only() -> None:
    a = rep_seeds(7, 1, 2)
    assert a == rep_seeds(7, 1, 2)
    others = [rep_seeds(7, 1, 3), rep_seeds(7, 2, 2), rep_seeds(8, 1, 2)]
    assert all(o["data"] != a["data"] and o["fit"] != a["fit"] for o in others)
    assert len(set(a.values())) == 4


# -------------------------------------------------------------------------- failures
def test_a_failing_replication_is_recorded_and_the_study_goes_on(full: SimulationStudy) -> None:
    def broken_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
        raise RuntimeError("no cluster sizes today")

    designs = [DESIGNS[0], Design(20, broken_sizes)]
    st = SimulationStudy(spec(), MODEL1_TRUTH, designs, reps=2, fit_options=FIT, seed=7, workers=1)
    st.run(progress=False)
    res = st.results()
    bad = res[res["design"] == 1]
    assert len(bad) == 2 and bad["error"].str.contains("RuntimeError: no cluster sizes today").all()
    good = res[res["design"] == 0]
    assert (good["error"] == "").all()
    # Design 0's replications are those of the full study (same seeds, same position).
    pd.testing.assert_frame_equal(per_rep(good), per_rep(full.results().query("design == 0 and rep < 2")))
    s = st.summary(["a_w"])
    assert s.set_index("design").loc[0, "failed"] == 0
    assert list(s["design"]) == [0]  # no estimates from design 1 ...
    fails = st.failures()
    assert set(zip(fails["design"], fails["rep"])) >= {(1, 0), (1, 1)}  # ... but it is reported


# ------------------------------------------------------------------ designs, missingness
def test_cluster_size_distributions_are_drawn_per_replication() -> None:
    d = Design(50, ("uniform", 6, 54))
    a = d.sizes(np.random.default_rng(rep_seeds(1, 0, 0)["sizes"]))
    b = d.sizes(np.random.default_rng(rep_seeds(1, 0, 1)["sizes"]))
    assert a.min() >= 6 and a.max() <= 54 and len(a) == 50 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, d.sizes(np.random.default_rng(rep_seeds(1, 0, 0)["sizes"])))
    assert (Design(10, ("poisson", 3)).sizes(np.random.default_rng(1)) >= 1).all()
    with pytest.raises(ms.MSEMSpecificationError, match="one per cluster"):
        Design(3, [5, 5])
    with pytest.raises(ms.MSEMSpecificationError, match="distribution 'gamma'"):
        Design(3, ("gamma", 2))
    with pytest.raises(ms.MSEMSpecificationError, match="mar_on"):
        Design(3, 5, missing=0.2, mechanism="MAR")


def test_mcar_and_mar_missingness_have_the_asked_share() -> None:
    df = ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=200, cluster_size=20, seed=3)
    cols = ["ACH", "INT", "REL"]
    mcar = impose_missing(df, Design(200, 20, missing=0.2), cols, np.random.default_rng(1))
    assert mcar[cols].isna().to_numpy().mean() == pytest.approx(0.2, abs=0.01)
    mar = impose_missing(
        df,
        Design(200, 20, missing=0.2, mechanism="MAR", mar_on="REL", mar_strength=1.5),
        cols,
        np.random.default_rng(1),
    )
    assert mar["REL"].notna().all()
    share = mar[["ACH", "INT"]].isna().to_numpy().mean()
    assert share == pytest.approx(0.2, abs=0.015)
    # MAR: missing ACH where REL is high, so the observed REL of missing rows is higher.
    assert df.loc[mar["ACH"].isna(), "REL"].mean() > df.loc[mar["ACH"].notna(), "REL"].mean() + 0.5
    assert df.loc[mcar["ACH"].isna(), "REL"].mean() == pytest.approx(df["REL"].mean(), abs=0.1)


def test_bad_truth_is_refused_up_front() -> None:
    with pytest.raises(ms.MSEMSpecificationError, match="no such parameter"):
        SimulationStudy(spec(), {**MODEL1_TRUTH, "a_ww": 0.1}, DESIGNS, reps=1)
    with pytest.raises(ms.MSEMSpecificationError, match="No value given"):
        SimulationStudy(spec(), {k: v for k, v in MODEL1_TRUTH.items() if k != "a_w"}, DESIGNS, reps=1)
    with pytest.raises(ms.MSEMSpecificationError, match="set by the study"):
        SimulationStudy(spec(), MODEL1_TRUTH, DESIGNS, reps=1, fit_options={"seed": 1})


def test_store_drops_a_replication_cut_short(tmp_path) -> None:
    store = Store(tmp_path, {"x": 1})
    rows = [{"design": 0, "rep": r, "level": "within", "parameter": p, "label": "", "n_rows": 2, "error": "",
             "data_seed": 1, "fit_seed": 2}
            for r in (0, 1) for p in ("a", "b")]  # fmt: skip
    store.append(rows[:2])
    store.append(rows[2:3])  # rep 1 lost its second row
    assert store.done() == {(0, 0)}
    Store(tmp_path, {"x": 1})  # reopening rewrites the file without the partial replication
    assert len(pd.read_csv(tmp_path / "design_000.csv")) == 2


# ---------------------------------------------------------------------------- CLI
def test_cli_simulate_runs_and_resumes(full: SimulationStudy, tmp_path, capsys) -> None:
    from pymsem.cli import main

    argv = ["simulate", "--tutorial", "1", "--clusters", "20", "--cluster-size", "5", "--reps", "2",
            "--labels", "a_w,b_w", "--out", str(tmp_path), "--workers", "1", "--draws", "150",
            "--tune", "200", "--chains", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "power" in out and "a_w" in out and "Smallest design" in out and "2 replications" in out
    assert main(argv) == 0  # resumed: nothing left to run
    assert "replications in" not in capsys.readouterr().out
    assert main([("160" if a == "150" else a) for a in argv]) == 2  # other draws, same directory
    assert "other settings" in capsys.readouterr().err


def test_power_short_form_on_a_specification(full: SimulationStudy) -> None:
    found = ms.power(
        spec(), ["b_w"], target=0.0, truth=MODEL1_TRUTH, designs=[Design(20, 5)], reps=2,
        fit_options=FIT, seed=7, workers=1, progress=False,
    )  # fmt: skip
    assert found.design == Design(20, 5)  # power >= 0 always holds: the only design
    # Same seed, same position: the replications of design 0 of the full study.
    mine = full.results().query("design == 0 and rep < 2")
    np.testing.assert_array_equal(
        found.table["power"], [np.mean(mine[mine["label"] == "b_w"]["excludes_zero"].astype(bool))]
    )
    with pytest.raises(ms.MSEMSpecificationError, match="needs truth= and designs="):
        ms.power(spec(), ["b_w"])


def test_with_data_copies_the_specification() -> None:
    df = ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=4, cluster_size=3, seed=1)
    m = spec().set_prior("path", ms.Prior("Normal", mu=0, sigma=2))
    other = m.with_data(df)
    assert other.data is df and list(other.table) == list(m.table)
    assert other.prior_overrides == m.prior_overrides
    other.derived("extra", "a_w + b_w")  # building on the copy ...
    assert "extra" not in {d.name for d in m.derived_quantities}  # ... leaves the original as it was
    assert other.to_lavaan() != m.to_lavaan()
