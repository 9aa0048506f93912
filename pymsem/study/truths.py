"""True values for studies of the tutorial's models, and their specifications without data.

The values follow the bundled ``school`` data's generating process
(:mod:`pymsem.datasets._make_school`: unit within-level variances, between-level variances
near 0.3, small between indicator residuals), with the effect sizes a power analysis asks
about: Model 3's within indirect effect ``med_w = a_w*b_w + cov(RSa, RSb)`` is about 0.10
(0.25 * 0.35 + 0.05 * sqrt(0.3 * 0.2)), and Model 4's cross-level moderation of the b slope by
school SES, ``SESb_b``, is 0.2 (of the a slope, ``SESb_a``, 0.36 as in the school data).
"""

from __future__ import annotations

import pandas as pd

from pymsem.specification.model import MSEM

__all__ = ["TUTORIAL_TRUTH", "tutorial_spec"]

_PATHS = {"a_w": 0.33, "b_w": 0.46, "c_w": 0.25, "a_b": 0.60, "b_b": 0.58, "c_b": 0.22}
_MEASUREMENT = {
    "loading_w": 1.0, "loading_b": 1.0, "lv_sd_w": 1.0, "lv_sd_b": 0.55, "resid_sd_w": 1.1,
    "resid_sd_b": 0.22, "intercept_b": 3.0,
}  # fmt: skip
_SLOPES = {"slope_sd_b[RSa]": 0.3**0.5, "slope_sd_b[RSb]": 0.2**0.5, "rCor": 0.05}

#: True values by tutorial model number, keyed as :func:`pymsem.simulate` takes them.
TUTORIAL_TRUTH: dict[int, dict[str, float]] = {
    1: {**_PATHS, "lv_sd_w": 1.0, "lv_sd_b": 0.55, "intercept_b": 3.0},
    2: {**_PATHS, **_MEASUREMENT},
    3: {**_PATHS, **_MEASUREMENT, **_SLOPES, "a_w": 0.25, "b_w": 0.35},
    4: {
        **_PATHS, **_MEASUREMENT, **_SLOPES, "ses_int_w": 0.2, "ses_ach_w": 0.0, "ses_int_b": 0.3,
        "ses_ach_b": 0.0, "SESb_a": 0.36, "SESb_b": 0.2, "lv_sd_b[SES]": 0.5, "lv_cor_w": 0.0,
        "lv_cor_b": 0.0,
    },
}  # fmt: skip

_COLUMNS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)] + ["SES", "schid"]


def tutorial_spec(number: int) -> MSEM:
    """The tutorial's Model ``number`` (:mod:`pymsem.tutorial`) as a specification without data."""
    from pymsem.tutorial import tutorial_model

    return tutorial_model(number, pd.DataFrame(columns=_COLUMNS))
