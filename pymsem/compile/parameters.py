"""The full parameter table: what the user wrote plus the defaults, one row per matrix entry.

lavaan's ``parTable()`` for pymsem: every loading, regression, (residual) variance,
covariance, grand mean and random-slope parameter of the lowered model, fixed or
free, with its label, the PyMC variable that holds it, its starting value and its
prior. Rows sharing an ``id`` are one parameter (a shared label). Variances are
parametrized as standard deviations and covariances as correlations in the PyMC
model; ``value`` and ``start`` are on that scale, as the ``variable`` column says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pymsem.compile.structure import KIND_TITLES, LevelStructure, ModelStructure
from pymsem.priors import ResolvedPrior

__all__ = ["COLUMNS", "parameter_frame"]

COLUMNS = [
    "level", "lhs", "op", "rhs", "random", "kind", "label", "free", "id", "value", "start",
    "variable", "prior", "source",
]  # fmt: skip


def parameter_frame(
    structure: ModelStructure,
    priors: dict[str, list[ResolvedPrior]],
    inits: dict[str, np.ndarray],
    derived: Sequence[tuple[str, str]] = (),
) -> pd.DataFrame:
    """One row per parameter of the lowered model (fixed ones included), in lavaan's vocabulary.

    Parameters
    ----------
    structure
        The lowered model.
    priors
        The resolved priors by group.
    inits
        Starting values by group name.
    derived
        ``(name, expression)`` of the defined quantities, listed last.
    """
    ids: dict[tuple[str, int], int] = {}
    for name, g in structure.groups.items():
        for i, owner in enumerate(g.owners):
            ids[(name, i)] = ids[owner] if owner is not None else len(set(ids.values())) + 1
    next_id = len(set(ids.values())) + 1
    rows: list[dict[str, Any]] = []

    def free_row(level: str, lhs: str, op: str, rhs: str, group_kind: str, k: int, **extra: Any) -> None:
        g = structure.groups[f"{group_kind}_{'w' if level == 'within' else 'b'}"]
        rp = priors[g.name][k]
        start = inits.get(g.name)
        rows.append(
            {
                "level": level, "lhs": lhs, "op": op, "rhs": rhs, "random": "",
                "kind": KIND_TITLES[group_kind], "label": g.labels[k] or "", "free": True, "id": ids[(g.name, k)], "value": np.nan,
                "start": float(start[k]) if start is not None else np.nan,
                "variable": f"{g.name}[{g.elements[k]}]", "prior": repr(rp.prior), "source": rp.source,
                **extra,
            }
        )  # fmt: skip

    def fixed_row(level: str, lhs: str, op: str, rhs: str, kind: str, value: float) -> None:
        rows.append(
            {
                "level": level, "lhs": lhs, "op": op, "rhs": rhs, "random": "", "kind": KIND_TITLES[kind],
                "label": "",
                "free": False, "id": 0, "value": float(value), "start": np.nan, "variable": "",
                "prior": "", "source": "fixed",
            }
        )  # fmt: skip

    for ls in (structure.within, structure.between):
        _level_rows(ls, structure, free_row, fixed_row)
    if structure.random_slopes:
        for r in structure.random_slopes:
            k = structure.groups["slope_sd_b"].elements.index(r.name)
            free_row("between", r.name, "~~", r.name, "slope_sd", k)
        if "slope_cor" in priors:
            rp = priors["slope_cor"][0]
            rs = structure.random_slopes
            for i, a in enumerate(rs):
                for b in rs[i + 1 :]:
                    rows.append(
                        {
                            "level": "between", "lhs": a.name, "op": "~~", "rhs": b.name, "random": "",
                            "kind": "random slope correlation", "label": a.cor_labels.get(b.name, ""),
                            "free": True, "id": next_id, "value": np.nan, "start": 0.0,
                            "variable": "slope_corr_chol", "prior": repr(rp.prior), "source": rp.source,
                        }
                    )  # fmt: skip
                    next_id += 1
    for name, expr in derived:
        rows.append(
            {
                "level": "", "lhs": name, "op": ":=", "rhs": expr, "random": "", "kind": "defined quantity",
                "label": name, "free": False, "id": 0, "value": np.nan, "start": np.nan, "variable": "",
                "prior": "", "source": "derived",
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _level_rows(ls: LevelStructure, structure: ModelStructure, free_row: Any, fixed_row: Any) -> None:
    lvl = str(ls.level)
    single = set(ls.single_indicator)
    free_lambda = {(int(r), int(c)): int(k) for r, c, k in ls.lambda_free}
    for c, f in enumerate(ls.latent):
        if f in single:
            continue
        for r, obs in enumerate(ls.observed):
            if (r, c) in free_lambda:
                free_row(lvl, f, "=~", obs, "loading", free_lambda[(r, c)])
            elif ls.lambda_fixed[r, c] != 0:
                fixed_row(lvl, f, "=~", obs, "loading", ls.lambda_fixed[r, c])
    random = {(int(r), int(c)): structure.random_slopes[int(i)].name for r, c, i in ls.beta_random}
    for r, c, k in ls.beta_free:
        rnd = random.get((int(r), int(c)), "")
        extra = {"random": rnd, "kind": "random slope mean"} if rnd else {}
        free_row(lvl, ls.latent[r], "~", ls.latent[c], "path", int(k), **extra)
    for rs in structure.random_slopes:
        if ls.level.short == "b":
            for lat, k in rs.moderators:
                free_row(lvl, rs.name, "~", ls.latent[lat], "path", int(k))
            for lat, k in rs.predicts:
                free_row(lvl, ls.latent[lat], "~", rs.name, "path", int(k))
            for lat, k in rs.disturbance_cors:
                free_row(lvl, rs.name, "~~", ls.latent[lat], "lv_cor", int(k))
    sd_free = {int(i): int(k) for i, k in ls.lv_sd_free}
    for i, v in enumerate(ls.latent):
        if i in sd_free:
            free_row(lvl, v, "~~", v, "lv_sd", sd_free[i])
        else:
            fixed_row(lvl, v, "~~", v, "lv_sd", ls.lv_sd_fixed[i])
    for i, j, k in ls.lv_cor:
        free_row(lvl, ls.latent[i], "~~", ls.latent[j], "lv_cor", int(k))
    rsd_free = {int(i): int(k) for i, k in ls.resid_sd_free}
    for i, v in enumerate(ls.observed):
        if i in rsd_free:
            free_row(lvl, v, "~~", v, "resid_sd", rsd_free[i])
        elif v not in single:
            fixed_row(lvl, v, "~~", v, "resid_sd", ls.resid_sd_fixed[i])
    for i, j, k in ls.resid_cor:
        free_row(lvl, ls.observed[i], "~~", ls.observed[j], "resid_cor", int(k))
    for i, k in ls.intercept_free:
        free_row(lvl, ls.observed[i], "~1", "", "intercept", int(k))
