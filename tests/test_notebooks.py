"""The documentation notebooks (docs/notebooks): stored executed, and run top to bottom with small draws.

Each notebook reads its draws, warm-up and chains from ``PYMSEM_DOCS_DRAWS``, ``PYMSEM_DOCS_TUNE``
and ``PYMSEM_DOCS_CHAINS`` (defaults: the real values its stored outputs were made with); here
they are small so that the whole set runs in a few minutes. A notebook fails the test when any
cell raises.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))
SMALL = {"PYMSEM_DOCS_DRAWS": "100", "PYMSEM_DOCS_TUNE": "150", "PYMSEM_DOCS_CHAINS": "2"}


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks_for_every_topic() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"model1_path_model", "model2_latent_variables", "model3_random_slopes",
            "model4_moderated_mediation", "checking_a_model", "missing_data",
            "extending_pymc"} <= names  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_executed_in_order_without_errors(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    # Executed top to bottom in one kernel: the docs build shows these outputs (it never runs them).
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), path.name
    for c in cells:
        for out in c.outputs:
            assert out.output_type != "error", f"{path.name}: a stored cell raised {out.get('ename')}"
            # The stored fits converged: no convergence warning (R-hat, ESS, divergences, stuck
            # chains). Other warnings (a LOO Pareto k) may be the subject of the text around them.
            text = out.get("text", "") if out.output_type == "stream" else ""
            assert "Traceback" not in text and "SamplingWarning" not in text, f"{path.name}: {text[:300]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_samples_with_the_draws_from_the_environment(path: Path) -> None:
    """Every fit passes ``**SAMPLING``, so the small draws below reach every sampler call."""
    source = "\n".join(_code(nbformat.read(path, as_version=4)))
    assert "PYMSEM_DOCS_DRAWS" in source
    fits = re.findall(r"\.fit\(([^)]*)\)", source)
    assert fits and all("**SAMPLING" in args for args in fits), fits


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # The kernel must be this interpreter (the one with pymsem installed), not another "python3".
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix"
    ))  # fmt: skip
    nb.cells.append(nbformat.v4.new_code_cell(
        f"assert (DRAWS, TUNE, CHAINS) == ({SMALL['PYMSEM_DOCS_DRAWS']}, "
        f"{SMALL['PYMSEM_DOCS_TUNE']}, {SMALL['PYMSEM_DOCS_CHAINS']})"
    ))  # fmt: skip
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
