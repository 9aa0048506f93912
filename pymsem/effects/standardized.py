"""Per-draw parameter estimates with level-specific standardized values and ICCs.

Standardization is level-specific, as in Mplus and Blimp: a within-level
slope is scaled by the model-implied *within* SDs of its predictor and
outcome, a between-level slope by the *between* SDs.  For every posterior
draw:

* regression ``out <- pred``: ``beta * sd(pred) / sd(out)`` (latent SDs from
  ``Sigma_eta = A Psi A'``);
* loading ``ind by F``: ``lambda * sd(F) / sd(ind)`` (indicator SD from ``Sigma``);
* (residual) variance: its share of the variable's implied variance;
* covariance: the correlation.

The intraclass correlation of a level-1 variable is
``Sigma_B[j, j] / (Sigma_B[j, j] + Sigma_W[j, j])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymsem.compile.structure import ModelStructure
from pymsem.specification.objects import Level

__all__ = ["QuantityDraws", "parameter_quantities"]


@dataclass
class QuantityDraws:
    """One reported quantity: where it goes in the table and its draws (chain, draw)."""

    level: str
    block: str
    label: str
    parameter: str
    draws: np.ndarray
    std: np.ndarray | None


def _sd(M: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(np.diagonal(M, axis1=-2, axis2=-1), 1e-300, None))


def parameter_quantities(
    structure: ModelStructure,
    vals: dict[str, np.ndarray],
    slope_cov: np.ndarray | None = None,
    thresholds: dict[str, np.ndarray] | None = None,
) -> list[QuantityDraws]:
    """Every free parameter (variances as variances) and each level-1 variable's ICC, per draw.

    Parameters
    ----------
    structure
        The lowered model.
    vals
        Parameter vectors by group name, shaped ``(chain, draw, n)``.
    slope_cov
        The random slopes' residual covariance per draw, where slopes predict between-level
        outcomes (their variances then include the slopes' part).
    thresholds
        Each ordinal column's thresholds, ``(chain, draw, K - 1)``: reported on the latent
        response's scale (within residual SD 1) and, as ``std``, in units of its total SD.
    """
    from pymsem.compile.random_effects import implied_level_matrices

    out: list[QuantityDraws] = []
    mats = {}
    for ls in (structure.within, structure.between):
        M = implied_level_matrices(structure, ls, vals, slope_cov)
        mats[ls.level] = M
        s, lvl = ls.level.short, str(ls.level)
        sd_eta, sd_obs = _sd(M.Sigma_eta), _sd(M.Sigma)

        def labels(kind: str, s: str = s) -> list[str]:
            g = structure.groups.get(f"{kind}_{s}")
            return [lab or "" for lab in g.labels] if g else []

        for (r, c, k), lab in zip(ls.beta_free, labels("path")):
            b = vals[f"path_{s}"][..., k]
            out.append(
                QuantityDraws(
                    lvl,
                    "Regressions",
                    lab,
                    f"{ls.latent[r]} <- {ls.latent[c]}",
                    b,
                    b * sd_eta[..., c] / sd_eta[..., r],
                )
            )
        for (r, c, k), lab in zip(ls.lambda_free, labels("loading")):
            lam = vals[f"loading_{s}"][..., k]
            out.append(
                QuantityDraws(
                    lvl,
                    "Loadings",
                    lab,
                    f"{ls.observed[r]} by {ls.latent[c]}",
                    lam,
                    lam * sd_eta[..., c] / sd_obs[..., r],
                )
            )
        for (r, k), lab in zip(ls.intercept_free, labels("intercept")):
            out.append(
                QuantityDraws(lvl, "Intercepts", lab, ls.observed[r], vals[f"intercept_{s}"][..., k], None)
            )
        for (i, k), lab in zip(ls.lv_sd_free, labels("lv_sd")):
            v = np.square(vals[f"lv_sd_{s}"][..., k])
            name = ls.latent[i]
            endo = len(ls.beta_free) and i in set(ls.beta_free[:, 0].tolist())
            block = "Residual variances" if endo else "Variances"
            out.append(QuantityDraws(lvl, block, lab, f"{name} ~~ {name}", v, v / np.square(sd_eta[..., i])))
        for (i, j, k), lab in zip(ls.lv_cor, labels("lv_cor")):
            r_ = vals[f"lv_cor_{s}"][..., k]
            cov = M.Psi[..., i, j]
            out.append(QuantityDraws(lvl, "Covariances", lab, f"{ls.latent[i]} ~~ {ls.latent[j]}", cov, r_))
        # An observed variable that loads on no latent at this level (e.g. a level-1 outcome's
        # between part, when only the within model uses it) has its own variance here, not an
        # indicator's residual variance.
        indicators = set(np.flatnonzero(np.any(ls.lambda_fixed != 0, axis=1)).tolist())
        indicators |= {int(r) for r in ls.lambda_free[:, 0]} if len(ls.lambda_free) else set()
        for (i, k), lab in zip(ls.resid_sd_free, labels("resid_sd")):
            v = np.square(vals[f"resid_sd_{s}"][..., k])
            name = ls.observed[i]
            out.append(
                QuantityDraws(
                    lvl,
                    "Indicator residual variances" if i in indicators else "Variances",
                    lab,
                    f"{name} ~~ {name}",
                    v,
                    v / np.square(sd_obs[..., i]),
                )
            )
        for (i, j, k), lab in zip(ls.resid_cor, labels("resid_cor")):
            out.append(
                QuantityDraws(
                    lvl,
                    "Indicator residual covariances",
                    lab,
                    f"{ls.observed[i]} ~~ {ls.observed[j]}",
                    M.Theta[..., i, j],
                    vals[f"resid_cor_{s}"][..., k],
                )
            )
    W, B = mats[Level.WITHIN], mats[Level.BETWEEN]
    for j, name in enumerate(structure.level1):
        sw, sb = W.Sigma[..., j, j], B.Sigma[..., j, j]
        out.append(
            QuantityDraws("between", "Intraclass correlations", "", f"ICC {name}", sb / (sb + sw), None)
        )
    for name, tau in (thresholds or {}).items():
        j = structure.level1.index(name)
        total_sd = np.sqrt(W.Sigma[..., j, j] + B.Sigma[..., j, j])
        for k in range(tau.shape[-1]):
            out.append(
                QuantityDraws(
                    "between", "Thresholds", "", f"{name} | t{k + 1}", tau[..., k], tau[..., k] / total_sd
                )
            )
    return out
