"""Generate the bundled ``school`` data set: a simulation of the tutorial's shape with known truth.

The data mimic the layout of the tutorial's example (100 schools of 30 students, four indicators
each of achievement ``ACH``, interest ``INT`` and relatedness ``REL``, and a student-level
socio-economic status ``SES`` with a between-school part). They are drawn from the tutorial's
Model 4 process: a two-level mediation ``REL -> INT -> ACH`` with random within-school slopes
``a`` (``INT <- REL``) and ``b`` (``ACH <- INT``) whose school-specific values depend on the
school's mean SES (a cross-level moderated mediation).

Why SES has no direct effect on ACH and is independent of REL
-------------------------------------------------------------
The tutorial fits a sequence of models. Models 1-3 omit SES; Model 4 adds it as a moderator of
the random slopes and as a covariate. For every model in the sequence to target the *same*
``a``, ``b`` and ``c`` paths, SES is made a nuisance for Models 1-3 in the following sense:

* ``SES_w`` and ``SES_b`` are drawn independently of ``REL_w`` and ``REL_b``. Omitting SES from
  the ``INT`` equation then moves ``0.20 * SES_w`` (within) and ``0.30 * SES_b`` (between) into
  the residual of ``INT`` without correlating that residual with ``REL``, so the ``a`` paths are
  not biased by the omission (only the residual variance of ``INT`` grows).
* SES has no direct effect on ``ACH`` (coefficient 0.0 at both levels). Omitting SES from the
  ``ACH`` equation therefore leaves the ``ACH`` residual uncorrelated with ``INT`` and ``REL``,
  so the ``b`` and ``c`` paths are not biased either: SES reaches ACH only through INT.
* ``SES_b`` is centred (grand mean 0), so the random slopes ``RSa_g = a_w + SESb_a * SES_b + u_a``
  and ``RSb_g = b_w + SESb_b * SES_b + u_b`` have population means ``a_w`` and ``b_w``. A model
  that ignores the moderation (Models 1-3) thus estimates the average slopes ``a_w`` and ``b_w``,
  and its random-slope variances and covariance absorb the moderation: marginal variances
  ``RSa_var + SESb_a**2 * SES_b_var`` and ``RSb_var + SESb_b**2 * SES_b_var`` and marginal
  covariance ``rCov + SESb_a * SESb_b * SES_b_var`` (stored in the truth as ``*_marginal``).

In Model 1-2 style fixed-slope models the within paths estimate the average slopes ``a_w``,
``b_w`` and ``c_w`` (up to the small weighting effect of slope heterogeneity on pooled within
regressions). Run this module as a script to rewrite ``school.csv`` and ``school_truth.json``
next to it::

    python -m pymsem.datasets._make_school
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["make_school"]

N_CLUSTERS = 100
CLUSTER_SIZE = 30
FACTORS = ("ACH", "INT", "REL")

# Structural parameters.
A_W, B_W, C_W = 0.33, 0.46, 0.25
A_B, B_B, C_B = 0.60, 0.58, 0.22
SESB_A, SESB_B = 0.36, 0.09
RSA_VAR, RSB_VAR, R_COR = 0.30, 0.20, 0.05
SES_B_VAR, REL_B_VAR = 0.25, 0.30
INT_B_RESID, ACH_B_RESID = 0.20, 0.15
SES_W_VAR, REL_W_VAR = 1.0, 1.0
INT_W_RESID, ACH_W_RESID = 1.0, 1.0
INT_SES_W, ACH_SES_W = 0.20, 0.0
INT_SES_B, ACH_SES_B = 0.30, 0.0

# Measurement parameters.
LOADINGS_W: dict[str, tuple[float, ...]] = {
    "ACH": (1.0, 1.02, 0.98, 0.97),
    "INT": (1.0, 0.96, 0.95, 0.96),
    "REL": (1.0, 0.97, 0.94, 1.0),
}
LOADINGS_B: dict[str, tuple[float, ...]] = {
    "ACH": (1.0, 1.15, 1.10, 1.13),
    "INT": (1.0, 1.05, 1.11, 1.05),
    "REL": (1.0, 0.94, 1.02, 0.90),
}
INTERCEPTS: dict[str, tuple[float, ...]] = {
    "ACH": (3.0, 3.1, 2.9, 3.05),
    "INT": (2.5, 2.45, 2.6, 2.55),
    "REL": (3.5, 3.4, 3.55, 3.45),
}
RESID_W = 1.2
RESID_B = 0.05

INDICATORS = [f"{f}{j}" for f in FACTORS for j in range(1, 5)]
COLUMNS = [*INDICATORS, "SES", "schid", "id"]


def _truth(seed: int) -> dict[str, Any]:
    """Known generating values and the quantities derived from them.

    Parameters
    ----------
    seed : int
        Seed recorded in the truth for reference.

    Returns
    -------
    dict
        JSON-serialisable truth dictionary.
    """
    r_cov = R_COR * math.sqrt(RSA_VAR * RSB_VAR)
    sd_ses_b = math.sqrt(SES_B_VAR)
    med_w = A_W * B_W + r_cov
    med_b = A_B * B_B
    cov_marg = r_cov + SESB_A * SESB_B * SES_B_VAR
    description = (
        "Simulated data of the tutorial's shape (100 schools x 30 students; four indicators each of "
        "achievement ACH, interest INT and relatedness REL; student SES with a between-school part), "
        "generated from the tutorial's Model 4 process: a two-level mediation REL -> INT -> ACH with "
        "random within-school slopes a (INT <- REL) and b (ACH <- INT) moderated by school mean SES "
        "(SES_b, centred, variance 0.25). SES is independent of REL and has no direct effect on ACH at "
        "either level, so in Model 1-2 style fixed-slope models (and Model 3, which omits SES) the "
        "within paths estimate the average slopes a_w, b_w, c_w and the between paths a_b, b_b, c_b; "
        "models that ignore the moderation see the *_marginal random-slope (co)variances. med_w, "
        "mome_p1 and mome_m1 are the within indirect effects at SES_b = 0, +1 SD and -1 SD."
    )
    return {
        "seed": seed,
        "n_clusters": N_CLUSTERS,
        "cluster_size": CLUSTER_SIZE,
        "a_w": A_W,
        "b_w": B_W,
        "c_w": C_W,
        "a_b": A_B,
        "b_b": B_B,
        "c_b": C_B,
        "SESb_a": SESB_A,
        "SESb_b": SESB_B,
        "RSa_var": RSA_VAR,
        "RSb_var": RSB_VAR,
        "rCor": R_COR,
        "rCov": r_cov,
        "SES_b_var": SES_B_VAR,
        "med_w": med_w,
        "med_b": med_b,
        "a_con": A_B - A_W,
        "b_con": B_B - B_W,
        "med_con": med_b - med_w,
        "mome_p1": (A_W + SESB_A * sd_ses_b) * (B_W + SESB_B * sd_ses_b) + r_cov,
        "mome_m1": (A_W - SESB_A * sd_ses_b) * (B_W - SESB_B * sd_ses_b) + r_cov,
        "RSa_var_marginal": RSA_VAR + SESB_A**2 * SES_B_VAR,
        "RSb_var_marginal": RSB_VAR + SESB_B**2 * SES_B_VAR,
        "rCov_marginal": cov_marg,
        "med_w_marginal": A_W * B_W + cov_marg,
        "loadings_within": {f"{f}{j} by {f}": LOADINGS_W[f][j - 1] for f in FACTORS for j in range(2, 5)},
        "loadings_between": {f"{f}{j} by {f}": LOADINGS_B[f][j - 1] for f in FACTORS for j in range(2, 5)},
        "intercepts": {f"{f}{j}": INTERCEPTS[f][j - 1] for f in FACTORS for j in range(1, 5)},
        "within_ses_paths": {"INT <- SES": INT_SES_W, "ACH <- SES": ACH_SES_W},
        "between_ses_paths": {"INT <- SES": INT_SES_B, "ACH <- SES": ACH_SES_B},
        "variances": {
            "SES_w": SES_W_VAR,
            "REL_w": REL_W_VAR,
            "INT_w_residual": INT_W_RESID,
            "ACH_w_residual": ACH_W_RESID,
            "SES_b": SES_B_VAR,
            "REL_b": REL_B_VAR,
            "INT_b_residual": INT_B_RESID,
            "ACH_b_residual": ACH_B_RESID,
            "indicator_residual_within": RESID_W,
            "indicator_residual_between": RESID_B,
        },
        "description": description,
    }


def make_school(seed: int = 11) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw the ``school`` data set from the tutorial's Model 4 process.

    Parameters
    ----------
    seed : int, default 11
        Seed for :func:`numpy.random.default_rng`. The bundled CSV uses the default.

    Returns
    -------
    data : pandas.DataFrame
        3000 rows (100 schools x 30 students) with columns ``ACH1..ACH4 INT1..INT4 REL1..REL4
        SES schid id``; indicators and SES are rounded to 4 decimals.
    truth : dict
        Generating values and derived quantities (see the module docstring).
    """
    rng = np.random.default_rng(seed)
    g_n, n_per = N_CLUSTERS, CLUSTER_SIZE
    n = g_n * n_per
    school = np.repeat(np.arange(g_n), n_per)

    # Between level (one value per school).
    ses_b = rng.normal(0.0, math.sqrt(SES_B_VAR), g_n)
    rel_b = rng.normal(0.0, math.sqrt(REL_B_VAR), g_n)
    int_b = A_B * rel_b + INT_SES_B * ses_b + rng.normal(0.0, math.sqrt(INT_B_RESID), g_n)
    ach_b = B_B * int_b + C_B * rel_b + ACH_SES_B * ses_b + rng.normal(0.0, math.sqrt(ACH_B_RESID), g_n)
    r_cov = R_COR * math.sqrt(RSA_VAR * RSB_VAR)
    u = rng.multivariate_normal([0.0, 0.0], [[RSA_VAR, r_cov], [r_cov, RSB_VAR]], size=g_n)
    rs_a = A_W + SESB_A * ses_b + u[:, 0]
    rs_b = B_W + SESB_B * ses_b + u[:, 1]

    # Within level (one value per student).
    ses_w = rng.normal(0.0, math.sqrt(SES_W_VAR), n)
    rel_w = rng.normal(0.0, math.sqrt(REL_W_VAR), n)
    int_w = rs_a[school] * rel_w + INT_SES_W * ses_w + rng.normal(0.0, math.sqrt(INT_W_RESID), n)
    ach_w = (
        rs_b[school] * int_w + C_W * rel_w + ACH_SES_W * ses_w + rng.normal(0.0, math.sqrt(ACH_W_RESID), n)
    )

    # Indicators.
    within = {"ACH": ach_w, "INT": int_w, "REL": rel_w}
    between = {"ACH": ach_b, "INT": int_b, "REL": rel_b}
    cols: dict[str, np.ndarray] = {}
    for f in FACTORS:
        for j in range(4):
            e_w = rng.normal(0.0, math.sqrt(RESID_W), n)
            e_b = rng.normal(0.0, math.sqrt(RESID_B), g_n)
            cols[f"{f}{j + 1}"] = (
                INTERCEPTS[f][j]
                + LOADINGS_W[f][j] * within[f]
                + e_w
                + LOADINGS_B[f][j] * between[f][school]
                + e_b[school]
            )
    cols["SES"] = ses_b[school] + ses_w

    data = pd.DataFrame({k: np.round(v, 4) for k, v in cols.items()})
    data["schid"] = (school + 1).astype(np.int64)
    data["id"] = np.arange(1, n + 1, dtype=np.int64)

    truth = _truth(seed)
    slope_cov = float(np.cov(rs_a, rs_b)[0, 1])
    truth["realized"] = {
        "note": (
            "Sample values of the drawn school-level quantities in this data set (not parameters): "
            "with 100 schools the realized mean slopes can differ from a_w, b_w by a few tenths of "
            "the slope standard deviation, and estimates should be judged against both. RSa_var, "
            "RSb_var and rCov are of the slope residuals u given SES_b; *_marginal of the slopes."
        ),
        "RSa_mean": float(rs_a.mean()),
        "RSb_mean": float(rs_b.mean()),
        "RSa_var": float(u[:, 0].var(ddof=1)),
        "RSb_var": float(u[:, 1].var(ddof=1)),
        "rCov": float(np.cov(u[:, 0], u[:, 1])[0, 1]),
        "RSa_var_marginal": float(rs_a.var(ddof=1)),
        "RSb_var_marginal": float(rs_b.var(ddof=1)),
        "rCov_marginal": slope_cov,
        "med_w": float(rs_a.mean() * rs_b.mean() + slope_cov),
        "SES_b_mean": float(ses_b.mean()),
        "SES_b_var": float(ses_b.var(ddof=1)),
    }
    return data[COLUMNS], truth


def _write(directory: Path | None = None, seed: int = 11) -> tuple[Path, Path]:
    """Write ``school.csv`` and ``school_truth.json``.

    Parameters
    ----------
    directory : pathlib.Path, optional
        Target folder; defaults to the folder of this module.
    seed : int, default 11
        Seed passed to :func:`make_school`.

    Returns
    -------
    tuple of pathlib.Path
        Paths of the CSV and JSON files written.
    """
    directory = Path(__file__).resolve().parent if directory is None else Path(directory)
    data, truth = make_school(seed)
    csv_path = directory / "school.csv"
    json_path = directory / "school_truth.json"
    data.to_csv(csv_path, index=False, float_format="%.4f", lineterminator="\n")
    json_path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


if __name__ == "__main__":
    for path in _write():
        print(f"wrote {path}")
