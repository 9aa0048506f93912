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
from typing import TYPE_CHECKING, Any

import numpy as np

from pymsem.specification.errors import MSEMSpecificationError

if TYPE_CHECKING:
    from pymsem.results.fit import MSEMFit

__all__ = ["AT_WORDS", "conditional_indirect", "moderation_parts", "resolve_at"]

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
