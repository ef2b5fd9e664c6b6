"""Run django-websocket-request 0.1.1's own test module, unmodified, against drf-grip.

The module was written for Django 1.6: it imports ``django.core.urlresolvers`` (renamed
``django.urls`` in Django 2.0) and builds its URLconf with ``patterns()`` (removed in Django
1.10), and it names that URLconf with ``TestCase.urls`` (removed in 1.10 too). While the
module is imported, those two names are given their current equivalents; its URLconf is
made the ``ROOT_URLCONF`` of its tests. Nothing else is changed; see README.rst beside this
file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest import mock

import django.conf.urls
import django.urls
import pytest

VENDORED = {"tests.py"}
MODULE = f"{__package__}.tests"


def _patterns(prefix: str, *routes: tuple[str, Any]) -> list[Any]:
    """Django 1.x's ``patterns('', (regex, view), ...)``: a list of ``re_path``."""
    return [django.urls.re_path(regex, view) for regex, view in routes]


class VendoredModule(pytest.Module):
    def _getobj(self) -> Any:
        # Not mock.patch.dict(sys.modules): leaving it would also drop the module just
        # imported, and the URL resolver would import it again without these names.
        sys.modules["django.core.urlresolvers"] = django.urls
        try:
            with mock.patch.object(django.conf.urls, "patterns", _patterns, create=True):
                return super()._getobj()
        finally:
            del sys.modules["django.core.urlresolvers"]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.name in VENDORED:
        return VendoredModule.from_parent(parent, path=file_path)
    return None


@pytest.fixture(autouse=True)
def _its_urlconf(settings: Any) -> None:
    settings.ROOT_URLCONF = MODULE
