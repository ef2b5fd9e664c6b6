"""A pytest plugin: Django REST framework's own test suite, run with drf-grip installed as
its docs say (``"drf_grip"`` first in ``INSTALLED_APPS``, ``GripMiddleware`` first in
``MIDDLEWARE``), so that a DRF behaviour drf-grip changes fails there.

DRF's ``tests/conftest.py`` passes its settings to ``settings.configure()`` in its
``pytest_configure``; this plugin, loaded first (``-p``), adds drf-grip to what it passes.
Nothing of DRF's is edited. ``nox -s drf_suite`` runs it (noxfile.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import LazySettings

APP = "drf_grip"
MIDDLEWARE = "drf_grip.middleware.GripMiddleware"

_configure = LazySettings.configure


def _configure_with_drf_grip(self: LazySettings, *args: Any, **options: Any) -> None:
    options["INSTALLED_APPS"] = (APP, *(a for a in options.get("INSTALLED_APPS", ()) if a != APP))
    options["MIDDLEWARE"] = (
        MIDDLEWARE, *(m for m in options.get("MIDDLEWARE", ()) if m != MIDDLEWARE)
    )
    _configure(self, *args, **options)


LazySettings.configure = _configure_with_drf_grip  # type: ignore[method-assign]


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # After DRF's conftest configured Django: a suite that configured it some other way
    # would pass without drf-grip, which must fail instead.
    import rest_framework
    from django.apps import apps
    from django.conf import settings

    if not (
        settings.configured
        and settings.INSTALLED_APPS[0] == APP
        and settings.MIDDLEWARE[0] == MIDDLEWARE
        and apps.is_installed(APP)
    ):
        raise pytest.UsageError("drf-grip is not installed in DRF's test settings")
    if Path(rest_framework.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise pytest.UsageError("DRF was imported from the source tree, not the installed one")
