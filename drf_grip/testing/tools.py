"""System tools the integration tests need (Pushpin, redis-server, Chromium): where they
are, and what a run without one means."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

__all__ = ["find_tool", "tool_missing"]


def find_tool(env_var: str, *commands: str) -> str | None:
    """``$ENV_VAR`` if set (and executable), else the first of ``commands`` on ``PATH``."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for command in commands:
        found = shutil.which(command)
        if found:
            return found
    return None


def tool_missing(message: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a CI run that skips what matters proves nothing."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(message + " CI is set, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(message)
