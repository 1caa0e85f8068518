"""Sphinx configuration: MyST pages from docs/*.md, the API reference from the docstrings.

Build (warnings are errors, as in CI):  sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "mixupe_jax"
author = "the mixupe_jax authors"
copyright = "2026, the mixupe_jax authors"

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "requirements.txt"]
templates_path = ["_templates"]

# Headings get anchors, so that pages link to each other's sections and a broken link fails the
# build instead of pointing nowhere.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "mixupe_jax"
