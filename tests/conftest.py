"""Shared fixtures: simulated data with known truth, and fitted models compiled once per session."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pytensor.compile.mode import Mode

import pymsem as ms

#: The mode for exactness tests, which evaluate a graph a few times on tiny data: PyTensor's
#: Python linker runs each Op's NumPy ``perform`` and compiles nothing, where numba would spend
#: tens of seconds per graph on a new machine (the default mode, FAST_RUN, is numba's). The numba
#: kernels are checked in "NUMBA" mode beside it (test_cluster_woodbury, test_logdet_quad) and
#: every fit samples through them.
REFERENCE_MODE = Mode(linker="py", optimizer="fast_compile")

#: Modes the fused Ops are checked in: their NumPy twins, their numba kernels, and JAX (the
#: numpyro / blackjax path, an optional extra) where installed.
KERNEL_MODES = [pytest.param(REFERENCE_MODE, id="py"), "NUMBA"] + (
    ["JAX"] if importlib.util.find_spec("jax") else []
)

# ---------------------------------------------------------------------------- scheduling (xdist)
#: Work units for pytest-xdist. Compiling dominates the suite, so the files that share the
#: session's fitted models run on one worker and each model is compiled and sampled once; every
#: other file is a unit of its own.
WORK_UNITS: dict[str, tuple[str, ...]] = {
    "fitted-models": (
        "test_random_slopes.py", "test_loo.py", "test_fit.py", "test_plots.py",
        "test_diagram.py", "test_compare.py", "test_recovery.py", "test_between_scores.py", "test_sensitivity.py",
    ),
}  # fmt: skip

#: Seconds per file in a cold CI run on 2 cores (its "seconds by file" table). The scheduler hands
#: the units out heaviest first (longest processing time first), so the two workers finish
#: together; a file not listed counts as light and runs among the last. Stale figures only make
#: the order less good, never a test wrong: update them when a file's cost changes much.
FILE_SECONDS: dict[str, float] = {
    "test_model_kernel.py": 644, "test_ordinal.py": 531, "test_notebooks.py": 373,
    "test_between_scores.py": 320, "test_reproducible.py": 273, "test_ordinal_results.py": 258,
    "test_loo.py": 248, "test_missing.py": 216, "test_lavaan_ordinal.py": 188, "test_kernel.py": 163,
    "test_fit.py": 113, "test_random_slopes.py": 110, "test_random_effects.py": 103,
    "test_formulations.py": 69, "test_ppc.py": 58, "test_reuse.py": 53, "test_moderation.py": 38,
    "test_within_scores.py": 37, "test_logdet_quad.py": 28, "test_shifted_scatter.py": 27,
    "test_sensitivity.py": 27, "test_cluster_woodbury.py": 26, "test_study.py": 25, "test_diagram.py": 15,
    "test_specification.py": 12,
}  # fmt: skip
_UNIT_OF = {f"tests/{f}": unit for unit, files in WORK_UNITS.items() for f in files}
_UNIT_SECONDS: dict[str, float] = defaultdict(float)
for _file, _sec in FILE_SECONDS.items():
    _UNIT_SECONDS[_UNIT_OF.get(f"tests/{_file}", f"tests/{_file}")] += _sec


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return _UNIT_OF.get(path, path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable sort: the scheduler hands units out in collection order.
    items.sort(key=lambda item: -_UNIT_SECONDS.get(_unit(item.nodeid), 0.0))


@pytest.hookimpl(optionalhook=True)  # without xdist (`-p no:xdist`) pytest does not know the hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """Whole work units, one at a time per worker, heaviest first (FILE_SECONDS).

        xdist's own scope scheduling hands each worker two units at the start and sorts them by
        test count; with a few long units that leaves one worker busy long after the other.
        """

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

        def _reschedule(self, node: Any) -> None:
            # A worker holds back its last test until it knows what runs next (fixture teardown),
            # so "one left" means it is about to run dry.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    config.option.loadscopereorder = False
    return UnitScheduling(config, log)


_SECONDS: dict[tuple[str, str], float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    worker = getattr(getattr(report, "node", None), "gateway", None)
    _SECONDS[(report.nodeid.split("::", 1)[0], getattr(worker, "id", "-"))] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SECONDS:
        return
    terminalreporter.section("seconds by file")
    for (path, worker), sec in sorted(_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{sec:8.1f}  {worker:>4}  {path}")


FACTORS = ("ACH", "INT", "REL")

#: Truth for the Model-2 recovery data (SDs for variance parameters).
MODEL2_TRUTH = {
    "a_w": 0.35, "b_w": 0.45, "c_w": 0.25, "a_b": 0.60, "b_b": 0.50, "c_b": 0.25,
    "loading_w": 1.0, "loading_w[ACH2 by ACH]": 0.8, "loading_w[INT3 by INT]": 1.2,
    "loading_b": 1.0, "loading_b[ACH3 by ACH]": 1.2, "loading_b[REL2 by REL]": 0.8,
    "lv_sd_w": 1.0, "lv_sd_b": 0.6, "resid_sd_w": 1.0, "resid_sd_b": 0.25,
    "intercept_b": 2.0, "intercept_b[ACH1]": 3.0,
}  # fmt: skip

#: Truth for the Model-1 (observed variables at both levels) recovery data.
MODEL1_TRUTH = {
    "a_w": 0.30, "b_w": 0.40, "c_w": 0.20, "a_b": 0.60, "b_b": 0.50, "c_b": 0.30,
    "lv_sd_w": 1.0, "lv_sd_b": 0.5, "intercept_b": 1.0,
}  # fmt: skip


def mediation_paths(model: ms.MSEM) -> ms.MSEM:
    for level, s in (("within", "w"), ("between", "b")):
        model.path("INT", on="REL", level=level, label=f"a_{s}")
        model.path("ACH", on=["INT", "REL"], level=level, label=[f"b_{s}", f"c_{s}"])
    return model


def model2_spec(data: pd.DataFrame | None) -> ms.MSEM:
    m = ms.MSEM(data, cluster="schid")
    for f in FACTORS:
        m.latent(f, [f"{f}{i}" for i in range(1, 5)])
    return mediation_paths(m)


def model1_spec(data: pd.DataFrame | None) -> ms.MSEM:
    return mediation_paths(ms.MSEM(data, cluster="schid"))


@pytest.fixture(scope="session")
def model2_data() -> pd.DataFrame:
    return ms.simulate(model2_spec(None), MODEL2_TRUTH, n_clusters=100, cluster_size=20, seed=14)


@pytest.fixture(scope="session")
def model1_data() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    sizes = rng.integers(5, 30, size=80)  # unbalanced clusters
    return ms.simulate(model1_spec(None), MODEL1_TRUTH, n_clusters=80, cluster_size=sizes, seed=12)


@pytest.fixture(scope="session")
def model2_fit(model2_data: pd.DataFrame) -> ms.results.fit.MSEMFit:
    return model2_spec(model2_data).fit(draws=500, tune=500, chains=2, seed=3, progress=False, warn=False)


@pytest.fixture(scope="session")
def model1_fit(model1_data: pd.DataFrame) -> ms.results.fit.MSEMFit:
    return model1_spec(model1_data).fit(draws=500, tune=500, chains=2, seed=4, progress=False, warn=False)


@pytest.fixture(scope="session")
def model3_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tutorial Model 3 data (random slopes) and each cluster's drawn values."""
    from tests.test_random_slopes import MODEL3_TRUTH, model3_spec

    return ms.simulate(
        model3_spec(None), MODEL3_TRUTH, n_clusters=150, cluster_size=20, seed=23, return_cluster_values=True
    )


@pytest.fixture(scope="session")
def moderated_fit() -> tuple[ms.results.fit.MSEMFit, pd.DataFrame]:
    """Random slopes moderated by a latent school mean and a level-2 column, 10% of M missing;
    with each cluster's drawn values."""
    from tests.test_moderation import VALUES, tiny_spec

    df, truth = ms.simulate(
        tiny_spec(None), {**VALUES, "wa": 0.6}, n_clusters=30, cluster_size=8, seed=12,
        return_cluster_values=True,
    )  # fmt: skip
    df.loc[np.random.default_rng(13).random(len(df)) < 0.1, "M"] = np.nan
    fit = tiny_spec(df).fit(draws=150, tune=300, chains=2, seed=4, progress=False, warn=False)
    return fit, truth


@pytest.fixture(scope="session")
def model3_fit(model3_data: tuple[pd.DataFrame, pd.DataFrame]) -> ms.results.fit.MSEMFit:
    from tests.test_random_slopes import model3_spec

    return model3_spec(model3_data[0]).fit(draws=600, tune=600, chains=2, seed=5, progress=False, warn=False)
