import logging
from importlib.util import find_spec

from django.apps import AppConfig


class DrfGripConfig(AppConfig):
    name = "drf_grip"
    verbose_name = "drf-grip"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
        from .grip.error_reports import hide_grip_secrets
        from .grip.middleware import register_path_handler
        from .grip.publish_hooks import register_delivered_hook
        from .rest.changes import connect_signals
        from .rest.render import ReplayRefusalsNotLogged
        from .rest.stream import NEXT_LINK_PATH, serve_next_link
        from .rest.versions import acknowledge

        connect_signals()
        # A deleted or revoked object's replayed GET is no client's 404 or 403 (render.py).
        logging.getLogger("django.request").addFilter(ReplayRefusalsNotLogged())
        # Django's error reports show settings and headers by name: hide GRIP's secrets.
        hide_grip_secrets()
        # Holds subscribe with the ids a proxy has confirmed (rest/versions.hold_versions).
        register_delivered_hook(acknowledge)
        # Stream next links are fetched by the proxy; the GRIP middleware answers them.
        register_path_handler(NEXT_LINK_PATH, serve_next_link)
        # drf-spectacular is optional (the ``openapi`` extra): document realtime views
        # when it is installed, import nothing of it otherwise.
        if find_spec("drf_spectacular") is not None:
            from .openapi import install

            install()
