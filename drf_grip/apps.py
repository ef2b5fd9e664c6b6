from importlib.util import find_spec

from django.apps import AppConfig


class DrfGripConfig(AppConfig):
    name = "drf_grip"
    verbose_name = "drf-grip"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
        from .rest.registry import connect_signals

        connect_signals()
        # drf-spectacular is optional (the ``openapi`` extra): document realtime views
        # when it is installed, import nothing of it otherwise.
        if find_spec("drf_spectacular") is not None:
            from .openapi import install

            install()
