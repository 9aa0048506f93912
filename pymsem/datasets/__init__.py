"""Bundled data sets."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal, overload

import numpy as np
import pandas as pd

__all__ = ["load_school"]


@overload
def load_school(return_truth: Literal[False] = ...) -> pd.DataFrame: ...


@overload
def load_school(return_truth: Literal[True]) -> tuple[pd.DataFrame, dict[str, Any]]: ...


def load_school(return_truth: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Any]]:
    """Load the simulated ``school`` data set (tutorial shape, known truth).

    3000 students in 100 schools of 30, drawn from the tutorial's Model 4 process: a two-level
    mediation ``REL -> INT -> ACH`` with random within-school slopes moderated by school mean SES.
    See :mod:`pymsem.datasets._make_school` for the generating model.

    Parameters
    ----------
    return_truth : bool, default False
        Also return the generating parameter values and derived quantities.

    Returns
    -------
    data : pandas.DataFrame
        Columns ``ACH1..ACH4``, ``INT1..INT4``, ``REL1..REL4`` (indicators), ``SES`` (level-1 with a
        between-school part), ``schid`` (school, 1..100) and ``id`` (student, 1..3000).
    truth : dict
        Only when ``return_truth`` is true: keys such as ``a_w``, ``b_w``, ``c_w``, ``a_b``,
        ``b_b``, ``c_b``, ``med_w``, ``med_b``, ``mome_p1``, ``loadings_within``, ``description``.

    Examples
    --------
    >>> from pymsem.datasets import load_school
    >>> df, truth = load_school(return_truth=True)
    >>> df.shape
    (3000, 15)
    """
    pkg = resources.files(__name__)
    with pkg.joinpath("school.csv").open("r", encoding="utf-8") as fh:
        data = pd.read_csv(fh)
    data["schid"] = data["schid"].astype(np.int64)
    data["id"] = data["id"].astype(np.int64)
    if not return_truth:
        return data
    truth = json.loads(pkg.joinpath("school_truth.json").read_text(encoding="utf-8"))
    return data, truth
