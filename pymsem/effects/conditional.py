"""Conditional (moderated) indirect effects for cross-level moderation of random slopes.

With slopes ``a_g = a0 + a1 w_g + u_ag`` and ``b_g = b0 + b1 w_g + u_bg`` regressed on a
between-level moderator ``w`` (centered at its grand mean), the expected within-cluster
indirect effect at ``w`` is

    E[a_g b_g | w] = (a0 + a1 w)(b0 + b1 w) + cov(u_a, u_b)

(Bauer, Preacher & Gil 2006; tutorial Eq. 12-13), evaluated per posterior draw. ``w`` at
"+1sd" / "-1sd" uses the model-implied SD of the moderator at the between level (Blimp's
``sqrt(SES_b.totalvar)``), not the SD of the observed column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pymsem.specification.errors import MSEMSpecificationError

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = [
    "AT_WORDS",
    "JohnsonNeyman",
    "conditional_indirect",
    "johnson_neyman",
    "johnson_neyman_regions",
    "moderation_parts",
    "resolve_at",
]

AT_WORDS = {"mean": 0.0, "+1sd": 1.0, "-1sd": -1.0, "+2sd": 2.0, "-2sd": -2.0}


def moderation_parts(fit: MSEMFit, label: str, moderator: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Draws of a path's mean and its moderation by ``moderator`` (0 if none), and its slope index."""
    st = fit.structure
    base = fit.draws(label)
    rs = next(((i, r) for i, r in enumerate(st.random_slopes) if r.mean_label == label), None)
    if rs is None:
        return base, np.zeros_like(base), None
    i, r = rs
    mods = {st.between.latent[lat]: k for lat, k in r.moderators}
    coef = fit.parameter_draws()["path_b"][..., mods[moderator]] if moderator in mods else np.zeros_like(base)
    return base, coef, i


def _check_moderator(fit: MSEMFit, moderator: str) -> None:
    st = fit.structure
    if moderator not in st.between.latent:
        lvl = "a within-level variable" if moderator in st.within.latent else "not a variable of the model"
        raise MSEMSpecificationError(
            f"Moderator {moderator!r} is {lvl}; a cross-level moderator must be a between-level variable "
            f"(a latent cluster mean, a between factor or a level-2 column). Between-level variables: "
            f"{', '.join(st.between.latent)}."
        )


def resolve_at(fit: MSEMFit, moderator: str, at: Sequence[float | str]) -> list[tuple[str, np.ndarray]]:
    """Moderator values (centered, per draw) for ``at``: numbers on the variable's own scale or words."""
    _check_moderator(fit, moderator)
    sd = np.sqrt(fit.derived_context().moments("var", (moderator,), "between"))
    st = fit.structure
    grand_mean = None
    if moderator in st.between.observed and "intercept_b" in st.groups:
        grand_mean = fit.draws(f"intercept_b[{moderator}]")
    out = []
    for v in at:
        if isinstance(v, str):
            if v not in AT_WORDS:
                raise MSEMSpecificationError(
                    f"at={v!r}: use numbers (values of {moderator} on its own scale) or one of {sorted(AT_WORDS)}."
                )
            out.append((v, AT_WORDS[v] * sd))
        elif (
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and np.isfinite(v)
        ):
            centered = float(v) - (grand_mean if grand_mean is not None else 0.0)
            out.append((f"{v:g}", centered + np.zeros_like(sd)))
        else:
            raise MSEMSpecificationError(
                f"at={v!r} is neither a number nor one of {sorted(AT_WORDS)} (e.g. at=['-1sd', 'mean', '+1sd'])."
            )
    return out


def conditional_indirect(fit: MSEMFit, a: str, b: str, moderator: str, w: np.ndarray) -> np.ndarray:
    """E[a_g b_g | moderator = w] per draw; ``w`` is centered at the moderator's grand mean."""
    _check_moderator(fit, moderator)
    a0, a1, ia = moderation_parts(fit, a, moderator)
    b0, b1, ib = moderation_parts(fit, b, moderator)
    out = (a0 + a1 * w) * (b0 + b1 * w)
    if ia is not None and ib is not None:
        from pymsem.compile.slopes import slope_covariance

        out = out + slope_covariance(fit.structure, fit.posterior)[..., ia, ib]
    return out


def index_of_moderated_mediation(fit: MSEMFit, a: str, b: str, moderator: str) -> np.ndarray:
    """Hayes' index of moderated mediation, ``a1 * b0`` or ``a0 * b1``: only one path moderated.

    When both paths are moderated the conditional indirect effect is quadratic in the
    moderator and has no single index; use :func:`conditional_indirect` at chosen values.
    """
    a0, a1, _ = moderation_parts(fit, a, moderator)
    b0, b1, _ = moderation_parts(fit, b, moderator)
    a_mod, b_mod = bool(np.any(a1 != 0)), bool(np.any(b1 != 0))
    if a_mod and b_mod:
        raise MSEMSpecificationError(
            f"Both {a} and {b} are moderated by {moderator}: the indirect effect is quadratic in the "
            f"moderator, so no single index exists. Report conditional_indirect at chosen values."
        )
    if not (a_mod or b_mod):
        raise MSEMSpecificationError(f"Neither {a} nor {b} is moderated by {moderator}.")
    return a1 * b0 if a_mod else a0 * b1


def conditional_indirect_table(
    fit: MSEMFit, a: str, b: str, moderator: str, at: Sequence[float | str], labels: Sequence[str] | None
) -> Any:
    """The conditional indirect effect at each ``at`` value, as an ``xarray.DataArray`` (chain, draw, at)."""
    import xarray as xr

    vals = resolve_at(fit, moderator, at)
    names = list(labels) if labels is not None else [name for name, _ in vals]
    if len(names) != len(vals):
        raise MSEMSpecificationError("Give one label per value in at=.")
    draws = np.stack([conditional_indirect(fit, a, b, moderator, w) for _, w in vals], axis=-1)
    return xr.DataArray(
        draws, dims=("chain", "draw", "at"), coords={"at": names}, name=f"indirect({a}, {b} | {moderator})"
    )


# ------------------------------------------------------------------ Johnson-Neyman regions
def _zero_crossing(x0: float, x1: float, y0: float, y1: float) -> float:
    """Where the line through ``(x0, y0)`` and ``(x1, y1)`` crosses 0."""
    if y0 == y1:
        return 0.5 * (x0 + x1)
    return float(x0 + (x1 - x0) * y0 / (y0 - y1))


def johnson_neyman_regions(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranges of ``x`` where the interval ``[lower, upper]`` excludes 0, and their boundaries.

    A boundary is where a bound of the interval crosses 0, linearly interpolated between the
    two grid points around it (the bounds are smooth in the moderator, so the error is of the
    order of the grid step squared).

    Parameters
    ----------
    x
        An increasing grid of moderator values.
    lower, upper
        The interval's bounds at each grid value.

    Returns
    -------
    regions : pandas.DataFrame
        One row per maximal range where the interval excludes 0: ``start``, ``end`` and
        ``sign`` (``"positive"``: the whole interval above 0, ``"negative"``: below), and
        ``open_start`` / ``open_end``, true where the range reaches the end of the grid (it
        may extend beyond it).
    boundaries : pandas.DataFrame
        ``value`` (the crossing), ``bound`` (``"lower"`` or ``"upper"``: which bound
        crosses 0) and ``excludes_zero_above`` (whether the interval excludes 0 just above
        the crossing).
    """
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lower, upper))
    if not (x.ndim == lo.ndim == hi.ndim == 1 and len(x) == len(lo) == len(hi) >= 2):
        raise ValueError("x, lower and upper must be 1-d arrays of the same length (at least 2).")
    if np.any(np.diff(x) <= 0):
        raise ValueError("x must be strictly increasing.")
    state = np.where(lo > 0, 1, np.where(hi < 0, -1, 0))
    bounds: list[tuple[float, str, bool]] = []
    for k in np.flatnonzero(state[1:] != state[:-1]):
        s0, s1 = state[k], state[k + 1]
        # Leaving a region moves the bound that held the interval off 0; entering one, the bound
        # that now does. From +1 straight to -1 (within one step) both bounds cross.
        if s0 == 1 or s1 == 1:
            bounds.append((_zero_crossing(x[k], x[k + 1], lo[k], lo[k + 1]), "lower", s1 == 1))
        if s0 == -1 or s1 == -1:
            bounds.append((_zero_crossing(x[k], x[k + 1], hi[k], hi[k + 1]), "upper", s1 == -1))
    bounds.sort(key=lambda b: b[0])
    regions: list[dict[str, Any]] = []
    k = 0
    while k < len(state):
        if state[k] == 0:
            k += 1
            continue
        j = k
        while j + 1 < len(state) and state[j + 1] == state[k]:
            j += 1
        bound = "lower" if state[k] == 1 else "upper"
        y = lo if state[k] == 1 else hi
        start = x[0] if k == 0 else _zero_crossing(x[k - 1], x[k], y[k - 1], y[k])
        end = x[-1] if j == len(state) - 1 else _zero_crossing(x[j], x[j + 1], y[j], y[j + 1])
        regions.append(
            {
                "start": start,
                "end": end,
                "sign": "positive" if bound == "lower" else "negative",
                "open_start": k == 0,
                "open_end": j == len(state) - 1,
            }
        )
        k = j + 1
    return (
        pd.DataFrame(regions, columns=["start", "end", "sign", "open_start", "open_end"]),
        pd.DataFrame(bounds, columns=["value", "bound", "excludes_zero_above"]),
    )


@dataclass(frozen=True)
class JohnsonNeyman:
    """Johnson-Neyman regions of a conditional (indirect) effect over a between-level moderator.

    Attributes
    ----------
    effect
        What was computed, e.g. ``"indirect(a_w, b_w | SES)"``.
    moderator
        The moderator's name.
    ci_prob
        The probability of the equal-tailed credible interval.
    center, scale
        The grid's origin and unit: the moderator's grand mean (posterior median; 0 for a
        latent variable, centered by definition) and the posterior median of its model-implied
        between-level SD. ``sd`` columns are ``(value - center) / scale``.
    curve
        ``value``, ``sd``, ``lower``, ``median``, ``upper`` on the grid.
    regions
        Ranges where the interval excludes 0 (``start``, ``end`` on the moderator's scale,
        ``start_sd``, ``end_sd``, ``sign``, ``open_start``, ``open_end``; see
        :func:`johnson_neyman_regions`).
    boundaries
        The moderator values where the interval starts or stops excluding 0 (``value``,
        ``sd``, ``bound``, ``excludes_zero_above``).
    """

    effect: str
    moderator: str
    ci_prob: float
    center: float
    scale: float
    curve: pd.DataFrame
    regions: pd.DataFrame
    boundaries: pd.DataFrame

    def __repr__(self) -> str:
        pct = f"{round(self.ci_prob * 100, 6):g}%"
        lines = [f"Johnson-Neyman regions of {self.effect} ({pct} interval excludes 0):"]
        if self.regions.empty:
            lines.append(f"  none: the interval includes 0 for every {self.moderator} in the range shown.")
        for r in self.regions.itertuples(index=False):
            lo = "below the range" if r.open_start else f"{r.start:.3f} ({r.start_sd:+.2f} SD)"
            hi = "beyond the range" if r.open_end else f"{r.end:.3f} ({r.end_sd:+.2f} SD)"
            lines.append(f"  {r.sign}: {self.moderator} from {lo} to {hi}")
        return "\n".join(lines)


def conditional_effect_grid(fit: MSEMFit, a: str, b: str | None, moderator: str, w: np.ndarray) -> np.ndarray:
    """Draws of the conditional effect at each centered moderator value: shape (len(w), samples).

    ``b=None``: the conditional effect of the path ``a``, ``a0 + a1 w``; otherwise the conditional
    indirect effect ``E[a_g b_g | w]`` of :func:`conditional_indirect`, vectorized over ``w``.
    ``w`` is shaped (len,) or, centered per draw, (len, samples).
    """
    _check_moderator(fit, moderator)
    w = np.asarray(w, dtype=float)
    w = w[:, None] if w.ndim == 1 else w
    a0, a1, ia = moderation_parts(fit, a, moderator)
    a0, a1 = a0.ravel()[None], a1.ravel()[None]
    if b is None:
        return a0 + a1 * w
    b0, b1, ib = moderation_parts(fit, b, moderator)
    out = (a0 + a1 * w) * (b0.ravel()[None] + b1.ravel()[None] * w)
    if ia is not None and ib is not None:
        from pymsem.compile.slopes import slope_covariance

        out = out + slope_covariance(fit.structure, fit.posterior)[..., ia, ib].ravel()[None]
    return out


def johnson_neyman(
    fit: MSEMFit,
    a: str,
    b: str | None,
    moderator: str,
    ci_prob: float = 0.95,
    sd_range: float = 2.0,
    points: int = 201,
) -> JohnsonNeyman:
    """Johnson-Neyman regions: the moderator values where the effect's credible interval excludes 0.

    The effect is evaluated at fixed values of the centered moderator (0 is the grand mean,
    as for ``conditional_indirect(a, b, W, w)`` in derived expressions), ``points`` of them
    evenly spaced over ``sd_range`` model-implied between-level SDs (posterior median) either
    side of 0; at each, the equal-tailed ``ci_prob`` interval of its draws. The boundaries
    interpolate linearly where a bound crosses 0. ``value`` columns add the grand mean's
    posterior median to read them on the moderator's own scale.
    """
    if not 0 < ci_prob < 1:
        raise ValueError(f"ci_prob must be between 0 and 1, got {ci_prob}.")
    if not (np.isfinite(sd_range) and sd_range > 0):
        raise ValueError(f"sd_range must be a positive number of SDs, got {sd_range!r}.")
    if int(points) != points or points < 3:
        raise ValueError(f"points must be an integer of at least 3, got {points!r}.")
    _check_moderator(fit, moderator)
    scale = float(np.median(np.sqrt(fit.derived_context().moments("var", (moderator,), "between"))))
    st = fit.structure
    center = 0.0
    if moderator in st.between.observed and "intercept_b" in st.groups:
        center = float(np.median(fit.draws(f"intercept_b[{moderator}]")))
    g = np.linspace(-sd_range, sd_range, int(points))
    # Fixed values in the moderator's centered units (as conditional_indirect(a, b, W, w) in
    # derived expressions): 0 is each draw's grand mean, so the curve's middle is the effect at
    # the mean. ``value`` adds the grand mean's posterior median, for reading off the own scale.
    values = center + scale * g
    draws = conditional_effect_grid(fit, a, b, moderator, scale * g)
    lo, med, hi = np.quantile(draws, [(1 - ci_prob) / 2, 0.5, (1 + ci_prob) / 2], axis=1)
    regions, bounds = johnson_neyman_regions(g, lo, hi)
    for df, cols in ((regions, ("start", "end")), (bounds, ("value",))):
        for c in cols:
            df[f"{c}_sd" if c != "value" else "sd"] = df[c].to_numpy(float)
            df[c] = center + scale * df[c].to_numpy(float)
    bounds = bounds[["value", "sd", "bound", "excludes_zero_above"]]
    regions = regions[["start", "end", "start_sd", "end_sd", "sign", "open_start", "open_end"]]
    curve = pd.DataFrame({"value": values, "sd": g, "lower": lo, "median": med, "upper": hi})
    effect = f"indirect({a}, {b} | {moderator})" if b is not None else f"{a} | {moderator}"
    return JohnsonNeyman(effect, moderator, float(ci_prob), center, scale, curve, regions, bounds)
