"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.

autodoc imports drf_grip's public names, which need configured Django settings: the docs
build against the sample API's settings (``sample_api/``), as a reader's project would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "sample_api"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_api.settings")

import django  # noqa: E402

django.setup()

import drf_grip  # noqa: E402

project = "drf-grip"
author = "drf-grip contributors"
copyright = "drf-grip contributors"
release = version = drf_grip.__version__

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Docstrings name private modules (drf_grip.rest.*) that have no page: do not resolve them.
nitpicky = False

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"drf-grip {release}"
highlight_language = "none"
