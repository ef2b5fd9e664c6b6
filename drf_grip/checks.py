"""System checks: say loudly when changes would have nowhere to go."""
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_publish_endpoints(app_configs=None, **kwargs):
    from .conf import grip_settings

    from django.conf import settings

    if grip_settings.configured or "EMBEDDED_URL" in (getattr(settings, "DRF_GRIP", None) or {}):
        return []
    return [
        checks.Warning(
            "No GRIP endpoint is configured (GRIP_URL, GRIP_PROXIES, PUBLISH_SERVERS).",
            hint=(
                "Changes are published to the embedded proxy of this process, or to "
                f"DRF_GRIP['EMBEDDED_URL'] ({grip_settings.EMBEDDED_URL}) from other processes. "
                "Set GRIP_URL to publish to Pushpin or Fanout."
            ),
            id="drf_grip.W001",
        )
    ]
