"""Settings for a second process (a shell, a worker) that changes the test database while
the suite's server runs: the suite's settings, its database file and its GRIP endpoint,
passed in the environment."""

import os

from tests.settings import *  # noqa: F403

DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"] = os.environ["TEST_DB"]  # noqa: F405
GRIP_URL = os.environ.get("TEST_GRIP_URL") or None
DRF_GRIP = {"EMBEDDED_URL": os.environ.get("TEST_EMBEDDED_URL", "http://127.0.0.1:8000")}
