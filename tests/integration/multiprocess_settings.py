"""Settings of every process in the multi-process tests: the origin workers (uvicorn
``--workers 2``) and the writer processes. What they share comes from the environment:

- ``TEST_DB``: the suite's SQLite file;
- ``TEST_REDIS_URL``: the private redis-server, Django's ``RedisCache`` (the state cache);
- ``TEST_GRIP_PROXIES``: a JSON list of ``{"control_uri", "key"}``, one per private Pushpin.
"""

import json
import os
from collections.abc import Callable
from typing import Any

from tests.settings import *  # noqa: F403

DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"] = os.environ["TEST_DB"]  # noqa: F405

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["TEST_REDIS_URL"],
    }
}

GRIP_URL = None
GRIP_PROXIES = json.loads(os.environ.get("TEST_GRIP_PROXIES") or "[]")

DRF_GRIP = {
    # A writer exits right after its last save while a proxy may be down (the soak restarts
    # Pushpin): its publisher keeps retrying that long before the process ends.
    "PUBLISH_FLUSH_TIMEOUT": float(os.environ.get("TEST_PUBLISH_FLUSH_TIMEOUT") or 5),
}


def origin_pid(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Tell the client which worker process answered (``X-Origin-Pid``), so a test can
    show that its subscriptions were spread over both workers."""

    def middleware(request: Any) -> Any:
        response = get_response(request)
        response["X-Origin-Pid"] = str(os.getpid())
        return response

    return middleware


MIDDLEWARE = [*MIDDLEWARE, "tests.integration.multiprocess_settings.origin_pid"]  # noqa: F405

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"when": {"format": "%(created).3f %(process)d %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "when"}},
    "loggers": {
        "drf_grip": {"handlers": ["console"], "level": "WARNING"},
        # What each shared render and subscription decided: the soak's report quotes the
        # lines of the clients it found late (test_soak._troubles).
        "drf_grip.publish": {"level": "DEBUG"},
        "drf_grip.subscribe": {"level": "DEBUG"},
    },
}
