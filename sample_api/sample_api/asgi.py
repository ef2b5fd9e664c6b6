"""ASGI entry point: ``uvicorn --app-dir sample_api sample_api.asgi:application`` in production.

Without GRIP_URL the app is wrapped in drf-grip's embedded GRIP proxy; with it, the app is a
plain origin for Pushpin or Fanout.
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_api.settings")

from drf_grip.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
