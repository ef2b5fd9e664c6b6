"""System checks: say loudly when changes would have nowhere to go."""
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_publish_endpoints(app_configs=None, **kwargs):
    """W001 when nothing says where changes go. With DEBUG on, the embedded proxy of
    ``runserver`` is the documented development setup (the README's install omits GRIP_URL),
    so saying it on every command would only teach people to ignore checks; an explicit
    DRF_GRIP["EMBEDDED_URL"] is a choice, not an oversight."""
    from .conf import grip_settings

    from django.conf import settings

    if grip_settings.configured or "EMBEDDED_URL" in (getattr(settings, "DRF_GRIP", None) or {}):
        return []
    if settings.DEBUG:
        return []
    return [
        checks.Warning(
            "No GRIP endpoint is configured (GRIP_URL, GRIP_PROXIES, PUBLISH_SERVERS).",
            hint=(
                "Changes are published to the embedded proxy of this process, or to "
                f"DRF_GRIP['EMBEDDED_URL'] ({grip_settings.EMBEDDED_URL}) from other processes. "
                "Set GRIP_URL to publish to Pushpin or Fanout, or set DRF_GRIP['EMBEDDED_URL'] "
                "to the address this project's embedded proxy serves."
            ),
            id="drf_grip.W001",
        )
    ]


_PER_PROCESS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.caches)
def check_shared_state_cache(app_configs=None, **kwargs):
    """Shared delivery keeps live URLs and versions in Django's cache: a per-process cache
    is right only while one process serves and publishes."""
    from django.conf import settings

    from .conf import grip_settings
    from .rest.registry import shared_views

    alias = grip_settings.VERSION_CACHE
    backend = (getattr(settings, "CACHES", {}) or {}).get(alias, {}).get("BACKEND", "")
    if backend not in _PER_PROCESS:
        return []
    views = shared_views()
    if not views:
        return []
    return [
        checks.Warning(
            f"drf-grip keeps shared delivery's live URLs and channel versions in the "
            f"{alias!r} cache, which is per process ({backend.rsplit('.', 1)[-1]}).",
            hint=(
                "That is right for one process only (runserver, one worker). With several "
                "workers, or publishing from Celery or a shell, point DRF_GRIP['VERSION_CACHE'] "
                "at a cache every process shares (Redis, Memcached). Shared views: "
                + ", ".join(sorted(v.__name__ for v in views)[:5])
            ),
            id="drf_grip.W002",
        )
    ]
