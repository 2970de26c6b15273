"""Sphinx configuration for the latentode documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the gallery
scripts in ``docs/gallery`` run during the build and their figures are embedded).
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import version as _version

os.environ.setdefault("MPLBACKEND", "Agg")

project = "latentode"
author = "The latentode developers"
copyright = "2026, The latentode developers"  # noqa: A001
release = _version("latentode")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "gallery/**", "**.ipynb_checkpoints"]

# API reference: stub pages generated from the docstrings (numpydoc format)
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc Parameters sections carry types and shapes
autodoc_member_order = "groupwise"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Example gallery: every docs/gallery/plot_*.py runs at build time, figures embedded
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
    "plot_gallery": "True",
}

html_theme = "pydata_sphinx_theme"
html_title = f"latentode {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False

# warnings that come from the libraries the gallery calls, not from the docs
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
