from django.apps import AppConfig


class DrfGripConfig(AppConfig):
    name = "drf_grip"
    verbose_name = "drf-grip"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
        from .rest.registry import connect_signals

        connect_signals()
