"""Run django-grip's own test modules, unmodified, against drf-grip.

The modules import ``django_grip``: here that name is drf-grip itself (the migration path is
"change the import"). They also call ``settings.configure()`` at import, which raises once
pytest-django has configured the settings, so that one call is made a no-op while a
module is imported. Nothing else is changed; see README.rst beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import LazySettings

import drf_grip

sys.modules.setdefault("django_grip", drf_grip)

VENDORED = {"middleware_tests.py", "websocketcontext_tests.py"}


class VendoredModule(pytest.Module):
    def _getobj(self) -> Any:
        with mock.patch.object(LazySettings, "configure", lambda self, *a, **kw: None):
            return super()._getobj()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.name in VENDORED:
        return VendoredModule.from_parent(parent, path=file_path)
    return None
