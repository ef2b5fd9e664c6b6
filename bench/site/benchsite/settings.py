"""Settings of the benchmark's Django site; ``BENCH_SYSTEM`` picks what the process serves.

- ``drfgrip``: drf-grip's viewsets and gateway; behind Pushpin when ``GRIP_URL`` is set, else
  behind the embedded proxy (``asgi.py``);
- ``eventstream``: django-eventstream's SSE view, direct (no ``GRIP_URL``) or behind Pushpin;
- ``dcrf``: djangochannelsrestframework over channels' in-memory layer.

Every process opens the same SQLite file (``BENCH_DB``), seeded by ``serve.py --seed``.
The cache is per-process memory, or Redis at ``BENCH_REDIS_URL`` when that is set.
"""

import os

SYSTEM = os.environ.get("BENCH_SYSTEM", "drfgrip")
SECRET_KEY = "bench-only-not-secret-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework.authtoken",
    "benchsite",
]
# DRF authenticates by token itself; no session or auth middleware.
MIDDLEWARE: list[str] = []
if SYSTEM == "drfgrip":
    INSTALLED_APPS.insert(0, "drf_grip")
    MIDDLEWARE.insert(0, "drf_grip.middleware.GripMiddleware")
elif SYSTEM == "eventstream":
    INSTALLED_APPS.append("django_eventstream")
    MIDDLEWARE.insert(0, "django_grip.GripMiddleware")
elif SYSTEM == "dcrf":
    INSTALLED_APPS.append("channels")
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# drf-grip and django-grip read the same setting name; each process runs only one of them.
GRIP_URL = os.environ.get("GRIP_URL") or None

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", "/tmp/drf-grip-bench.sqlite3"),
        "OPTIONS": {"timeout": 30},
        # Kept between requests, as a deployment does: drf-grip's ASGI app keeps its request
        # threads (REQUEST_THREADS_IDLE), and Django keeps a connection per thread. The
        # peers' origins (plain Django ASGI) start a thread per request and cannot keep one.
        "CONN_MAX_AGE": 60,
    }
}
# One origin process publishes and serves: a per-process cache is shared by both.
# Room for drf-grip's state (its check drf_grip.W003): the default of 300 entries culls it.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 1_000_000},
    }
}
# ``run.py --cache redis``: the state cache of a deployment past one machine, on the run's
# private redis-server (each origin its own database, set by run.py).
if os.environ.get("BENCH_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["BENCH_REDIS_URL"],
        }
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "ERROR"}},
    # Errors only: per-request logging would be part of what is measured.
    "root": {"level": "ERROR", "handlers": ["stderr"]},
}
