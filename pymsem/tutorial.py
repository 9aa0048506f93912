"""The tutorial's models (Kim, Lee, Kim & Keller, Bayesian MSEM with Blimp), written with pymsem.

Each function returns an unfitted :class:`~pymsem.MSEM` on data with the
tutorial's columns (ACH1-ACH4, INT1-INT4, REL1-REL4, SES and a cluster id).
Labels follow the tutorial: ``a_w, b_w, c_w`` within schools and
``a_b, b_b, c_b`` between schools.
"""

from __future__ import annotations

import pandas as pd

from pymsem.specification.errors import MSEMDataError
from pymsem.specification.model import MSEM

__all__ = ["FACTORS", "MODELS", "model1", "model2", "model3", "model4", "tutorial_model"]

FACTORS = ("ACH", "INT", "REL")


def _indicators(f: str) -> list[str]:
    return [f"{f}{i}" for i in range(1, 5)]


def _mediation_paths(model: MSEM) -> MSEM:
    for level, s in (("within", "w"), ("between", "b")):
        model.path("INT", on="REL", level=level, label=f"a_{s}")
        model.path("ACH", on=["INT", "REL"], level=level, label=[f"b_{s}", f"c_{s}"])
    return model


def _check_columns(data: pd.DataFrame, cols: list[str]) -> None:
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise MSEMDataError(
            f"The tutorial models need columns {cols}; the data lack {missing}. Use a CSV with the "
            f"tutorial's columns (ACH1-ACH4, INT1-INT4, REL1-REL4, SES and a cluster id)."
        )


def model1(data: pd.DataFrame, cluster: str = "schid", drop_missing_cluster: bool = False) -> MSEM:
    """Model 1: multilevel path model on scale scores, with latent mean centering.

    As in the tutorial, ACH, INT and REL are the row means of their four
    indicators; each is split into a latent school mean (between) and a
    within-school deviation, and the 1-1-1 mediation model is fitted at both
    levels.

    With missing items a scale score is the mean of the observed items when at least
    half of them are observed (the usual half rule), and missing otherwise; missing
    scores are then modeled like any missing value. Model 2 uses the items themselves
    and needs no such rule.
    """
    _check_columns(data, [i for f in FACTORS for i in _indicators(f)])
    d = data.copy()
    for f in FACTORS:
        items = d[_indicators(f)]
        d[f] = items.mean(axis=1).where(items.notna().sum(axis=1) >= items.shape[1] / 2)
    return _mediation_paths(MSEM(d, cluster=cluster, drop_missing_cluster=drop_missing_cluster))


def model2(data: pd.DataFrame, cluster: str = "schid", drop_missing_cluster: bool = False) -> MSEM:
    """Model 2: two-level SEM, three factors with four indicators each at both levels."""
    _check_columns(data, [i for f in FACTORS for i in _indicators(f)])
    model = MSEM(data, cluster=cluster, drop_missing_cluster=drop_missing_cluster)
    for f in FACTORS:
        model.latent(f, _indicators(f), levels=("within", "between"))
    return _mediation_paths(model)


def model3(data: pd.DataFrame, cluster: str = "schid", drop_missing_cluster: bool = False) -> MSEM:
    """Model 3: Model 2 with random slopes on the within a and b paths, indirect and contextual effects.

    Blimp: ``INT_w ~ REL_w@RSa``, ``ACH_w ~ INT_w@RSb REL_w``, ``RSa ~ 1@a_w``,
    ``RSb ~ 1@b_w``, ``RSa ~~ RSb@rCor``, and the PARAMETERS block
    ``rCov``, ``med_w = a_w*b_w + rCov``, ``med_b = a_b*b_b``, ``a_con``, ``b_con``, ``med_con``.
    """
    from pymsem.effects.derived import contextual, indirect
    from pymsem.specification.objects import RandomSlope

    _check_columns(data, [i for f in FACTORS for i in _indicators(f)])
    model = MSEM(data, cluster=cluster, drop_missing_cluster=drop_missing_cluster)
    for f in FACTORS:
        model.latent(f, _indicators(f), levels=("within", "between"))
    model.path("INT", on="REL", level="within", random=RandomSlope("RSa", mean_label="a_w"))
    model.path("ACH", on=["INT", "REL"], level="within", label=[None, "c_w"],
               random=[RandomSlope("RSb", mean_label="b_w"), None])  # fmt: skip
    model.covariance("RSa", "RSb", level="between", label="rCor")
    model.path("INT", on="REL", level="between", label="a_b")
    model.path("ACH", on=["INT", "REL"], level="between", label=["b_b", "c_b"])
    model.derived("rCov", "cov(RSa, RSb)")
    model.derived("med_w", indirect("a_w", "b_w"))  # a_w * b_w + cov(RSa, RSb)
    model.derived("med_b", indirect("a_b", "b_b"))
    model.derived("a_con", contextual("a_b", "a_w"))
    model.derived("b_con", contextual("b_b", "b_w"))
    model.derived("med_con", contextual("med_b", "med_w"))
    return model


def model4(data: pd.DataFrame, cluster: str = "schid", drop_missing_cluster: bool = False) -> MSEM:
    """Model 4: Model 3 with SES as a covariate at both levels and a cross-level moderator of the slopes.

    Blimp: ``SES ~ 1@SES_b`` (latent mean centering), ``ACH_w ~ INT_w@RSb REL_w SES_w``,
    ``INT_w ~ REL_w@RSa SES_w``, ``REL_w ~~ SES``, between ``ACH_b ~ INT_b@b_b REL_b SES_bc``,
    ``INT_b ~ REL_b@a_b SES_bc``, ``REL_b ~~ SES_b``, ``RSb ~ 1@b_w SES_bc@SESb_b``,
    ``RSa ~ 1@a_w SES_bc@SESb_a``, and ``mome_p1`` / ``mome_m1``: the within indirect effect at
    school SES one (model-implied) SD above and below its mean.
    """
    from pymsem.specification.objects import RandomSlope

    _check_columns(data, [i for f in FACTORS for i in _indicators(f)] + ["SES"])
    model = MSEM(data, cluster=cluster, drop_missing_cluster=drop_missing_cluster)
    for f in FACTORS:
        model.latent(f, _indicators(f), levels=("within", "between"))
    model.path("INT", on=["REL", "SES"], level="within", label=[None, "ses_int_w"],
               random=[RandomSlope("RSa", mean_label="a_w"), None])  # fmt: skip
    model.path("ACH", on=["INT", "REL", "SES"], level="within", label=[None, "c_w", "ses_ach_w"],
               random=[RandomSlope("RSb", mean_label="b_w"), None, None])  # fmt: skip
    model.covariance("REL", "SES", level="within")
    model.path("INT", on=["REL", "SES"], level="between", label=["a_b", "ses_int_b"])
    model.path("ACH", on=["INT", "REL", "SES"], level="between", label=["b_b", "c_b", "ses_ach_b"])
    model.covariance("REL", "SES", level="between")
    model.path("RSa", on="SES", level="between", label="SESb_a")
    model.path("RSb", on="SES", level="between", label="SESb_b")
    model.covariance("RSa", "RSb", level="between", label="rCor")
    model.derived("mome_p1", "conditional_indirect(a_w, b_w, SES, sd(SES, between))")
    model.derived("mome_m1", "conditional_indirect(a_w, b_w, SES, -sd(SES, between))")
    model.derived("med_w", "indirect(a_w, b_w)")
    return model


MODELS = {1: model1, 2: model2, 3: model3, 4: model4}


def tutorial_model(
    number: int, data: pd.DataFrame, cluster: str = "schid", drop_missing_cluster: bool = False
) -> MSEM:
    """The tutorial's Model ``number`` on ``data`` (see :class:`~pymsem.MSEM` for ``drop_missing_cluster``)."""
    if number not in MODELS:
        raise ValueError(f"Tutorial model {number} is not available; choose one of {sorted(MODELS)}.")
    return MODELS[number](data, cluster, drop_missing_cluster=drop_missing_cluster)
