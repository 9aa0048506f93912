"""The syntax-mapping page's lavaan and Blimp texts read to tutorial Model 3 (docs/syntax-mapping.md).

Pure parsing: nothing here compiles or samples.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pymsem as ms

PAGE = Path(__file__).resolve().parents[1] / "docs" / "syntax-mapping.md"


def _block(name: str) -> str:
    """The text of the page's ``{code-block}`` with ``:name: <name>``."""
    m = re.search(
        r"```\{code-block\} text\n:name: " + re.escape(name) + r"\n\n(.*?)```", PAGE.read_text(), re.S
    )
    assert m, f"no code block named {name!r} in {PAGE.name}"
    return m.group(1)


def _parameters(model: ms.MSEM) -> dict[str, list[tuple[str, str | None]]]:
    """Each parameter group's elements with their labels (sorted: the order follows the statements')."""
    return {
        name: sorted(zip(g.elements, g.labels), key=lambda e: e[0])
        for name, g in model.structure().groups.items()
    }


@pytest.fixture(scope="module")
def school():
    return ms.datasets.load_school()


@pytest.fixture(scope="module")
def model3(school) -> ms.MSEM:
    return ms.tutorial.model3(school)


def test_lavaan_text_is_tutorial_model3(school, model3) -> None:
    model = ms.MSEM.from_lavaan(_block("lavaan-model3"), school, cluster="schid")
    assert _parameters(model) == _parameters(model3)
    assert [n for n, _ in model.table.derived()] == [n for n, _ in model3.table.derived()]


def test_blimp_file_is_tutorial_model3(school, model3) -> None:
    model = ms.MSEM.from_blimp(school, file=_block("blimp-model3"))
    assert model.cluster == "schid"
    assert _parameters(model) == _parameters(model3)
    assert [n for n, _ in model.table.derived()] == [n for n, _ in model3.table.derived()]
    assert {k: model.settings[k] for k in ("seed", "burn", "iterations", "chains")} == {
        "seed": 46, "burn": 1000, "iterations": 1000, "chains": 4,
    }  # fmt: skip


def test_a_changed_text_is_caught(school, model3) -> None:
    """The comparison can fail: a lavaan text without the c_b label is not Model 3."""
    text = _block("lavaan-model3").replace("c_b*REL", "REL")
    assert _parameters(ms.MSEM.from_lavaan(text, school, cluster="schid")) != _parameters(model3)
