"""``SimulationStudy``: designs x replications, run in parallel, kept on disk, summarized.

>>> import pymsem as ms  # doctest: +SKIP
>>> study = ms.SimulationStudy(spec, truth, designs=ms.study.grid([30, 50, 100], cluster_size=20),
...                            reps=200, out="power_m3")
>>> study.run()                     # resumable: rerun with the same out= to continue
>>> study.summary(labels=["med_w"])
>>> study.plot_power(["med_w"])
>>> ms.power(study, ["med_w"]).design   # the smallest design with power >= 0.8
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pymsem.specification.errors import MSEMSpecificationError
from pymsem.specification.model import MSEM
from pymsem.study.design import Design
from pymsem.study.execute import default_workers, execute
from pymsem.study.replicate import COLUMNS, FIT_DEFAULTS, Task
from pymsem.study.store import Store, normalize
from pymsem.study.summary import failures, select, summarize

__all__ = ["PowerResult", "SimulationStudy", "power"]


class SimulationStudy:
    """A Monte Carlo study: simulate from the truth, fit, and tabulate, for each design.

    Parameters
    ----------
    model
        The specification to simulate from and fit (an :class:`~pymsem.MSEM`; its data, if
        any, are not used: columns in its ``level2=`` are simulated as level-2).
    truth
        Parameter values as :func:`pymsem.simulate` takes them (labels, ``"group[element]"``,
        group names; SDs for variance parameters).
    designs
        A :class:`~pymsem.study.Design`, a list of them (e.g. from :func:`~pymsem.study.grid`),
        or a list of cluster counts (``cluster_size`` 20).
    reps
        Replications per design.
    fit_options
        Options of :meth:`MSEM.fit` for every replication, over the study defaults
        ``draws=500, tune=500, chains=2`` (``progress`` and ``warn`` are always off; convergence
        messages are kept in the ``warnings`` column).
    seed
        The study seed; every replication's seeds derive from it and the replication's
        (design, rep) position.
    out
        Directory for the results (one CSV per design, written as replications finish). A
        rerun with the same directory skips finished replications. ``None``: kept in memory.
    workers
        Local worker processes (default: cores // chains, at least 1; 1 runs in this process).
    client
        A ``dask.distributed.Client`` or a scheduler address: run the replications there
        instead (``pip install 'pymsem[dask]'``).
    ci_prob
        Interval probability (equal-tailed) for power and coverage.
    max_rhat, min_ess, max_divergences
        A replication counts as converged when its largest R-hat is at most ``max_rhat`` (not
        applied with one chain), its smallest bulk ESS at least ``min_ess`` and it has at most
        ``max_divergences`` divergences. ``max_rhat`` is 1.05, not the 1.01 a single
        analysis is held to: it is the largest R-hat over every parameter of a short run (2
        chains x 500 draws by default), and that maximum's own noise exceeds 0.01 on stationary
        chains with the autocorrelation NUTS draws have (60 parameters, AR(1) 0.5: median
        1.02); pass 1.01 together with longer runs (e.g. ``fit_options={"chains":
        4, "draws": 1000, "tune": 1500}``).
    parameters
        Keep rows of these labels or parameter names only (all by default; fewer rows, smaller
        files).
    """

    def __init__(
        self,
        model: MSEM,
        truth: Mapping[str, float],
        designs: Design | Sequence[Design] | Sequence[int],
        reps: int = 100,
        fit_options: Mapping[str, Any] | None = None,
        seed: int = 0,
        out: str | os.PathLike | None = None,
        workers: int | None = None,
        client: Any = None,
        ci_prob: float = 0.95,
        max_rhat: float = 1.05,
        min_ess: float = 100.0,
        max_divergences: int = 0,
        parameters: Sequence[str] | None = None,
    ) -> None:
        from pymsem.simulate import parameter_vectors, spec_structure

        if not isinstance(model, MSEM):
            raise MSEMSpecificationError(f"model must be an MSEM specification, got {type(model).__name__}.")
        if isinstance(designs, Design):
            designs = [designs]
        self.designs = [d if isinstance(d, Design) else Design(int(d)) for d in designs]
        if not self.designs:
            raise MSEMSpecificationError("A study needs at least one design.")
        if int(reps) < 1:
            raise MSEMSpecificationError(f"reps must be at least 1, got {reps}.")
        # Only the specification travels to the workers, not the user's data.
        self.model = model.with_data(pd.DataFrame(columns=[model.cluster]))
        self.truth = dict(truth)
        st = spec_structure(self.model)
        for d in self.designs:  # a wrong or missing value stops here, not in every replication
            parameter_vectors(st, {**self.truth, **(d.truth or {})})
        self.reps = int(reps)
        self.fit_options = {**FIT_DEFAULTS, **(fit_options or {})}
        bad = {"seed", "progress", "warn"} & set(fit_options or {})
        if bad:
            raise MSEMSpecificationError(
                f"fit_options {sorted(bad)} are set by the study (seeds per replication, no output); remove them."
            )
        self.seed = int(seed)
        self.ci_prob = float(ci_prob)
        self.thresholds = {"max_rhat": float(max_rhat), "min_ess": float(min_ess),
                           "max_divergences": int(max_divergences)}  # fmt: skip
        self.parameters = tuple(parameters) if parameters else None
        self.workers = int(workers) if workers else default_workers(self.fit_options["chains"])
        self.client = client
        self.out = out
        self._store = Store(out, self._config()) if out is not None else None
        self._rows: list[dict[str, Any]] = []
        self.last_run: dict[str, float] = {}

    # ------------------------------------------------------------------ setup
    def _config(self) -> dict[str, Any]:
        try:
            spec = self.model.to_lavaan()
        except Exception:  # a specification lavaan cannot express: compare its table instead
            spec = self.model.table.to_frame().to_csv(index=False)
        return {
            "model": spec,
            "truth": self.truth,
            "designs": [d.describe() for d in self.designs],
            "seed": self.seed,
            "fit_options": {k: v for k, v in self.fit_options.items() if k != "cores"},
            "ci_prob": self.ci_prob,
            "thresholds": self.thresholds,
            "parameters": list(self.parameters) if self.parameters else None,
            "reps": self.reps,
        }

    def tasks(self) -> list[Task]:
        """Every replication of the study, in design order."""
        return [
            Task(
                self.model,
                self.truth,
                d,
                i,
                r,
                self.seed,
                self.fit_options,
                self.ci_prob,
                parameters=self.parameters,
                **self.thresholds,
            )
            for i, d in enumerate(self.designs)
            for r in range(self.reps)
        ]

    def designs_table(self) -> pd.DataFrame:
        """One row per design: its settings."""
        return pd.DataFrame(
            [d.columns() for d in self.designs], index=pd.Index(range(len(self.designs)), name="design")
        )

    # -------------------------------------------------------------------- run
    def run(self, progress: bool = True, max_reps: int | None = None) -> SimulationStudy:
        """Run the replications not yet done (all, or at most ``max_reps`` of them this call).

        Results are stored as each replication finishes; an interruption (Ctrl-C, a killed
        job) loses at most the replications in flight, and a rerun continues from there.
        """
        done = self._done()
        todo = [t for t in self.tasks() if (t.design_index, t.rep) not in done]
        if max_reps is not None:
            todo = todo[: int(max_reps)]
        fit_options = dict(self.fit_options)
        if self.workers > 1 and self.client is None and "cores" not in fit_options:
            # one chain per core: workers x chains threads on as many cores
            fit_options["cores"] = fit_options["chains"]
        todo = [dataclasses.replace(t, fit_options=fit_options) for t in todo]
        bar = _Progress(len(todo), len(done), enabled=progress)
        start = time.perf_counter()
        n = 0

        def on_result(rows: list[dict[str, Any]]) -> None:
            nonlocal n
            n += 1
            if self._store is not None:
                self._store.append(rows)
            else:
                self._rows.extend(rows)
            bar.advance(failed=bool(rows and rows[0].get("error")))

        try:
            execute(todo, on_result, workers=self.workers, client=self.client)
        finally:
            bar.close()
            seconds = time.perf_counter() - start
            self.last_run = {"replications": n, "seconds": seconds,
                             "per_hour": 3600 * n / seconds if n and seconds else float("nan"),
                             "workers": self.workers}  # fmt: skip
        return self

    def _done(self) -> set[tuple[int, int]]:
        if self._store is not None:
            return self._store.done()
        return {(int(r["design"]), int(r["rep"])) for r in self._rows}

    @property
    def finished(self) -> bool:
        """Whether every replication has a result."""
        return len(self._done()) == len(self.designs) * self.reps

    # ---------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """Per replication and parameter: estimates, truth, interval checks, diagnostics, seconds.

        Columns as :data:`pymsem.study.replicate.COLUMNS`, plus the design's settings.
        """
        if self._store is not None:
            df = self._store.read()
        else:
            df = normalize(pd.DataFrame(self._rows, columns=COLUMNS)).sort_values(["design", "rep"], kind="stable",
                                                                        ignore_index=True)  # fmt: skip
        df = df[df["rep"] < self.reps]
        return df.merge(self.designs_table(), left_on="design", right_index=True, how="left")

    def summary(
        self, labels: Sequence[str] | str | None = None, converged_only: bool = False
    ) -> pd.DataFrame:
        """Per design and parameter: power, coverage, bias, RMSE, SDs, converged share, failures.

        See :func:`pymsem.study.summary.summarize`.
        """
        return summarize(self.results(), self.designs_table(), labels, converged_only)

    def failures(self) -> pd.DataFrame:
        """Replications that raised (with the error) or did not converge (with the diagnostics)."""
        return failures(self.results())

    def power(
        self, labels: Sequence[str] | str, target: float = 0.8, converged_only: bool = False
    ) -> PowerResult:
        """The smallest design whose power is at least ``target`` for every label (see :func:`power`)."""
        return _smallest(self, labels, target, converged_only)

    def plot_power(self, labels: Sequence[str] | str, **kwargs: Any) -> Any:
        """Power against the number of clusters (see :func:`pymsem.study.plot.plot_power_curve`)."""
        from pymsem.study.plot import plot_power_curve

        return plot_power_curve(self.summary(labels), **kwargs)

    def __repr__(self) -> str:
        return (
            f"SimulationStudy({len(self.designs)} designs x {self.reps} reps, {len(self._done())} done, "
            f"workers={self.workers}{', dask' if self.client is not None else ''}, out={self.out!r})"
        )


@dataclasses.dataclass
class PowerResult:
    """What :func:`power` found.

    Attributes
    ----------
    design
        The smallest design (fewest units, then fewest clusters) with power >= ``target`` for
        every label, or ``None`` when none reaches it.
    table
        Power (and its Monte Carlo SE) per design and label.
    study
        The study it was read from.
    """

    design: Design | None
    table: pd.DataFrame
    study: SimulationStudy
    target: float

    def __repr__(self) -> str:
        found = self.design.label if self.design else f"none of the designs reaches power {self.target}"
        return f"PowerResult({found})\n{self.table.to_string(index=False)}"


def _smallest(
    study: SimulationStudy, labels: Sequence[str] | str, target: float, converged_only: bool
) -> PowerResult:
    labels = [labels] if isinstance(labels, str) else list(labels)
    s = study.summary(labels, converged_only)
    missing = [lab for lab in labels if select(s, [lab]).empty]
    if missing:
        known = sorted(set(study.results()["label"]) - {""})
        raise MSEMSpecificationError(f"No results for {missing}; labels in the results: {known}.")
    table = s[["design", "design_name", "n_clusters", "cluster_size", "label", "parameter", "reps", "power",
               "power_se"]].copy()  # fmt: skip
    ok = s.groupby("design")["power"].min() >= target
    sizes = study.results().groupby("design")["n_units"].mean()
    order = sorted(
        (d for d in ok.index if ok[d]), key=lambda d: (sizes.get(d, np.inf), study.designs[d].n_clusters)
    )
    design = study.designs[order[0]] if order else None
    return PowerResult(design, table.reset_index(drop=True), study, target)


def power(
    study: SimulationStudy | MSEM,
    labels: Sequence[str] | str,
    target: float = 0.8,
    truth: Mapping[str, float] | None = None,
    designs: Design | Sequence[Design] | Sequence[int] | None = None,
    progress: bool = True,
    converged_only: bool = False,
    **study_options: Any,
) -> PowerResult:
    """The smallest design with power >= ``target`` for all ``labels``: the short form of a study.

    Parameters
    ----------
    study
        A :class:`SimulationStudy` (run, or resumed, if unfinished), or a specification, with
        ``truth`` and ``designs`` (and any :class:`SimulationStudy` option) to build one.
    labels
        Labels (or parameter names) whose intervals must exclude 0.
    target
        Required power.

    Returns
    -------
    PowerResult
        ``.design`` (``None`` when no design reaches the target), ``.table`` and ``.study``.

    Examples
    --------
    >>> ms.power(spec, ["med_w"], truth=truth, designs=[30, 50, 100, 200], reps=200)  # doctest: +SKIP
    """
    if not isinstance(study, SimulationStudy):
        if truth is None or designs is None:
            raise MSEMSpecificationError("power() on a specification needs truth= and designs=.")
        study = SimulationStudy(study, truth, designs, **study_options)
    elif truth is not None or designs is not None or study_options:
        raise MSEMSpecificationError("power() on a SimulationStudy takes no truth, designs or study options.")
    if not study.finished:
        study.run(progress=progress)
    return study.power(labels, target, converged_only)


class _Progress:
    """Replications done / total with the time left (rich, which PyMC already installs)."""

    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self._bar = None
        self.failed = 0
        if not enabled or total == 0:
            return
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            return
        self._bar = Progress(
            TextColumn("replications"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )  # fmt: skip
        note = f"({already} done before)" if already else ""
        self._task = self._bar.add_task("study", total=total, note=note)
        self._bar.start()

    def advance(self, failed: bool) -> None:
        self.failed += failed
        if self._bar is not None:
            note = f"{self.failed} failed" if self.failed else ""
            self._bar.update(self._task, advance=1, note=note)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
