"""Run gripcontrol's own ``WebSocketContext`` and ``WebSocketEvent`` tests, unmodified,
against drf-grip's.

django-grip took its ``WebSocketContext`` from gripcontrol (its tests moved there too), and
``request.wscontext`` is drf-grip's own implementation of it. The module imports the class
and ``WebSocketEvent`` from gripcontrol's source tree (``src.websocketcontext``,
``src.websocketevent``, ``src.gripcontrol``): while it is imported, those names are drf-grip's.
Nothing else is changed; see README.rst beside this file.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from drf_grip import WebSocketContext, WebSocketEvent

VENDORED = {"websocketcontext_tests.py", "websocketevent_tests.py"}


def _module(name: str, **names: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(names)
    return module


class VendoredModule(pytest.Module):
    def _getobj(self) -> Any:
        source_tree = {
            "src": _module("src"),
            "src.gripcontrol": _module("src.gripcontrol", is_python3=True),
            "src.websocketevent": _module("src.websocketevent", WebSocketEvent=WebSocketEvent),
            "src.websocketcontext": _module(
                "src.websocketcontext", WebSocketContext=WebSocketContext
            ),
        }
        with mock.patch.dict(sys.modules, source_tree):
            return super()._getobj()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.name in VENDORED:
        return VendoredModule.from_parent(parent, path=file_path)
    return None
