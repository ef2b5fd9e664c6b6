"""The sample API's settings with drf-spectacular as a project would set it up (run through
``sample_api/manage.py``, which puts the sample and this checkout on ``sys.path``)."""

from sample_api.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "drf_spectacular"]  # noqa: F405
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
