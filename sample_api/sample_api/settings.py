"""Settings of the sample API. Realtime runs on the embedded proxy unless GRIP_URL is set."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "sample-api-insecure-dev-key-change-me-0123456789")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "drf_grip",  # first: its runserver serves the embedded GRIP proxy
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "board",
]

MIDDLEWARE = [
    "drf_grip.middleware.GripMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "sample_api.urls"
ASGI_APPLICATION = "sample_api.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SAMPLE_API_DB") or str(BASE_DIR / "db.sqlite3"),
        # Kept between requests: drf-grip's ASGI app keeps its request threads.
        "CONN_MAX_AGE": 60,
    }
}

# Channel versions and live URLs must be visible to every process that publishes
# (runserver, the shell, manage.py commands): a file cache is shared by all of them on
# one machine. Use Redis or Memcached across machines.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ.get("SAMPLE_API_CACHE")
        or str(Path(DATABASES["default"]["NAME"]).with_suffix(".cache")),
        # drf-grip keeps a few entries per held client: the default of 300 would cull them.
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}

# django-grip's format, e.g. http://127.0.0.1:5561/?iss=pushpin&key=SECRET
GRIP_URL = os.environ.get("GRIP_URL") or None

DRF_GRIP = {
    # Without GRIP_URL, other processes (the shell, manage.py commands) publish to the
    # embedded proxy of `manage.py runserver` here.
    "EMBEDDED_URL": os.environ.get("SAMPLE_API_URL", "http://127.0.0.1:8000"),
}

# The board page (/) signs every visitor in as the user "demo" so it can edit at once; a
# demo only, never in production.
SAMPLE_DEMO_LOGIN = os.environ.get("SAMPLE_DEMO_LOGIN", "1" if DEBUG else "0") == "1"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
}

try:
    import drf_spectacular  # noqa: F401
except ImportError:
    pass
else:
    # OpenAPI when drf-spectacular is installed (pip install -e ".[sample,openapi]"):
    # python sample_api/manage.py spectacular --validate --fail-on-warn
    INSTALLED_APPS.append("drf_spectacular")
    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
