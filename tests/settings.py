"""Django settings for drf-grip's own test suite."""

import atexit
import os
import shutil
import tempfile

SECRET_KEY = "drf-grip-tests-not-secret-0123456789abcdef"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_grip",
    "tests.testapp",
]

MIDDLEWARE = [
    "drf_grip.middleware.GripMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.testapp.hook_views.TenantMiddleware",
]



def _session_dir() -> str:
    """One temporary folder per test session, removed when the process that made it exits.

    Every process that loads these settings opens its own SQLite file, and many never run the
    test runner that would delete it (xdist workers' helpers, ``runserver`` and ``manage.py``
    subprocesses). They inherit the folder through the environment, so nothing is left in
    the system's temporary folder after a run."""
    folder = os.environ.get("DRF_GRIP_TEST_TMP")
    if folder and os.path.isdir(folder):
        return folder
    folder = tempfile.mkdtemp(prefix="drf-grip-tests-")
    os.environ["DRF_GRIP_TEST_TMP"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# A file database, so the origin server thread and the test see the same data.
_DB = os.path.join(_session_dir(), f"drf-grip-tests-{os.getpid()}.sqlite3")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DB,
        "TEST": {"NAME": _DB},
        # The server thread and the test write to one file; wait for the lock, not fail.
        "OPTIONS": {"timeout": 20},
    },
    # A second database, for tests that write elsewhere (``databases=["default", "other"]``).
    "other": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DB.replace(".sqlite3", "-other.sqlite3"),
        "TEST": {"NAME": _DB.replace(".sqlite3", "-other.sqlite3")},
        "OPTIONS": {"timeout": 20},
    },
}

# Local memory culls past 300 entries by default: realtime state for a thousand live URLs
# needs more (a shared cache such as Redis has no such limit).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth"]},
    }
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

# GRIP_URL is set per test by the fixtures that start a proxy.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"drf_grip": {"handlers": ["console"], "level": "WARNING"}},
}
