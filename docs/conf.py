"""Sphinx configuration of the ftp_jax documentation site.

Build (after ``pip install -e ".[docs]"``), warnings as errors::

    .venv/bin/python -m sphinx -W -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import ftp_jax  # noqa: E402

project = "ftp_jax"
author = "the ftp_jax authors"
copyright = "the ftp_jax authors; Apache License 2.0"
release = ftp_jax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "ftp_results",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# MyST: ``{{ name }}`` substitutions (the results' numbers, from ftp_results), $math$,
# ::: fences, and anchors for ## and ### headings.
myst_enable_extensions = ["substitution", "dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_substitutions: dict[str, str] = {}

# The API reference (docs/api/): every public name of the packages, from their docstrings
# (automodule follows each package's __all__; tests/test_docs.py checks none is missed).
autodoc_default_options = {"members": True, "show-inheritance": False, "no-value": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = "ftp_jax"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_static_path: list[str] = []
