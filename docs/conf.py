"""Sphinx configuration: myst-nb renders the stored, executed notebooks; autodoc + numpydoc the API.

Build (warnings are errors): ``.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html``
"""

from __future__ import annotations

import pymsem

project = "pymsem"
author = "pymsem contributors"
copyright = "pymsem contributors"
release = version = pymsem.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "images/README*"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# The notebooks are stored with their outputs (executed with full draws); the test suite executes
# them again with small draws (tests/test_notebooks.py). The docs build never runs them.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

nitpicky = False
html_theme = "furo"
html_title = f"pymsem {release}"
html_static_path: list[str] = []
