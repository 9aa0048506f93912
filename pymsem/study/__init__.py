"""Study planning: Monte Carlo power analysis and simulation studies.

``design`` (:class:`Design`, :func:`grid`), ``replicate`` (one replication and its seeds),
``store`` (incremental per-design CSV, resume), ``execute`` (this process, local processes,
Dask), ``summary`` (power, coverage, bias, RMSE, convergence, failures), ``study``
(:class:`SimulationStudy`, :func:`power`), ``plot`` (power curve), ``truths`` (true values
for the tutorial's models).
"""

from pymsem.study.design import Design, grid
from pymsem.study.plot import plot_power_curve
from pymsem.study.replicate import rep_seeds, truth_values
from pymsem.study.study import PowerResult, SimulationStudy, power
from pymsem.study.summary import failures, summarize
from pymsem.study.truths import TUTORIAL_TRUTH, tutorial_spec

__all__ = [
    "TUTORIAL_TRUTH",
    "Design",
    "PowerResult",
    "SimulationStudy",
    "failures",
    "grid",
    "plot_power_curve",
    "power",
    "rep_seeds",
    "summarize",
    "truth_values",
    "tutorial_spec",
]
