"""Gradient cost of missing cells: the observed-cells kernel against the PyTensor graph it replaced.

Run: ``python bench/missing_gradient.py [--models 2 3] [--shares 0 0.1 0.3]``. Cells of the
twelve indicators of the bundled data are deleted at random (MAR: a cell of an indicator is
more often missing when the student's SES is high; seed 1). For each share, the joint log
density and gradient nutpie differentiates is compiled with PyTensor's numba backend and
timed (median of 200 calls, one BLAS thread; :func:`bench.scaling.time_gradient`), once with
the kernel (:mod:`pymsem.compile.kernel.missing_op`) and once with the graph formulation
(padded inverses and :func:`pymsem.compile.missing.missing_logp`, the code before the kernel,
patched in for a same-run baseline, with Woodbury capacitances and with dense blocks). Ratios are against the complete data of the same model.
Writes ``bench/results/missing_gradient.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import pymsem as ms
from pymsem.compile import marginal as mg
from pymsem.compile.missing import missing_logp, padded_inverse

sys.path.insert(0, str(Path(__file__).parent))
from scaling import time_gradient

ITEMS = [f"{f}{i}" for f in ("ACH", "INT", "REL") for i in range(1, 5)]


def _graph_missing(structure, within, between, ps_np, W, q, u=None):
    """The formulation before the kernel: padded inverses (Woodbury with slopes), then missing_logp."""
    import pytensor.tensor as pt

    ps = ps_np.as_model_data()
    if W.ndim == 2:
        if mg.within_woodbury_applies(structure):
            u0 = pt.zeros((1, len(structure.random_slopes)))
            Sinv, logdet_psi = mg._cluster_precisions(structure, within, u0, 1)
            Rinv, ld = mg.woodbury_padded_inverse(
                pt.diagonal(within.Theta), within.Lambda, Sinv, logdet_psi, ps.patterns
            )
        else:
            Rinv, ld = padded_inverse(W[None], ps.patterns)
        return missing_logp(ps, Rinv, ld, between.Sigma, between.nu, list(range(q)), per_pattern=True)[
            0
        ].sum()
    Rinv, ld = mg.within_inverses(structure, within, ps, Wg=W, u=u)
    return missing_logp(ps, Rinv, ld, between.Sigma, between.nu, list(range(q)))[0].sum()


def _patched_graph() -> Any:
    """``MarginalLikelihood._add_missing`` with the graph formulation, for models without moderators."""
    import pymc as pm

    def add_missing(self, structure, data, within, between, params):
        self.pattern_stats = mg.pattern_statistics(structure, data)
        q = len(structure.level2)
        self.imputation_terms = {}
        if not structure.random_slopes:
            ll = _graph_missing(structure, within, between, self.pattern_stats, within.Sigma, q)
        else:
            u = mg.add_random_slopes(structure, params, self.slopes)
            Wg = mg._cluster_within_cov(structure, within, u, self.pattern_stats.n_clusters)
            ll = _graph_missing(structure, within, between, self.pattern_stats, Wg, q, u=u)
        pm.Potential("loglik", ll)

    return add_missing


def _data(share: float) -> pd.DataFrame:
    df = ms.datasets.load_school()
    if share:
        rng = np.random.default_rng(1)
        ses = (df["SES"] - df["SES"].mean()) / df["SES"].std()
        prob = share * 2 / (1 + np.exp(-ses))  # MAR on SES; mean share about ``share``
        for c in ITEMS:
            df.loc[rng.random(len(df)) < prob, c] = np.nan
    return df


def run(model: int, share: float, formulation: str) -> dict:
    """``kernel``: the observed-cells kernel (forced, also where the Woodbury graph is the default);
    ``graph``: padded inverses from factor-sized capacitance matrices and ``missing_logp``;
    ``graph-dense``: the same graph with each observed block factored."""
    df = _data(share)
    original, woodbury = mg.MarginalLikelihood._add_missing, mg.within_woodbury_applies
    if formulation.startswith("graph"):
        mg.MarginalLikelihood._add_missing = _patched_graph()
    if formulation in ("kernel", "graph-dense"):
        mg.within_woodbury_applies = lambda structure: False
    try:
        m = ms.tutorial.MODELS[model](df)
        per_grad, compile_s = time_gradient(m.compile())
    finally:
        mg.MarginalLikelihood._add_missing, mg.within_woodbury_applies = original, woodbury
    structure, data = m.structure(), m.clustered_data()
    pairs = mg.pattern_statistics(structure, data).n_pairs if share else data.n_clusters
    return {
        "model": model,
        "missing_share": round(float(df[ITEMS].isna().to_numpy().mean()), 3),
        "pairs": pairs,
        "formulation": formulation if share else "complete",
        "compile_s": round(compile_s, 1),
        "ms_per_gradient": round(1000 * per_grad, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, nargs="+", default=[2, 3])
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    a = p.parse_args()
    rows = []
    for model in a.models:
        for share in a.shares:
            for formulation in ("kernel", "graph", "graph-dense") if share else ("complete",):
                rows.append(run(model, share, formulation))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    base = df[df.formulation == "complete"].set_index("model")["ms_per_gradient"]
    df["ratio_to_complete"] = (df["ms_per_gradient"] / df["model"].map(base)).round(2)
    out = Path(__file__).parent / "results" / "missing_gradient.csv"
    df.to_csv(out, index=False)
    print()
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
