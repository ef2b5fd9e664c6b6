"""Where recorded realtime policies live, so any process can follow them.

A subscription records which view (and delivery mode) it came through, per model, in a
bounded index in Django's cache. The publisher lists the index of a changed model and asks
each view class for the channels the change wakes (``get_changed_channels()``), so an
overridden ``get_realtime_model()``, ``get_realtime_delivery()`` or channel hook is followed
in a Celery worker or a shell that never served a request.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from django.db import models

from ..conf import grip_settings
from .context import RealtimePolicy
from .store import ADDED, SlotIndex, state_cache

__all__ = [
    "keep_recording",
    "live_timeout",
    "record_policy",
    "record_view",
    "recorded_views",
    "records_lost",
    "view_class",
    "view_path",
]

_MAX_VIEWS = 64
#: Per model, the slot each recorded view took (SlotIndex.renew).
_recent: dict[str, dict[str, tuple[str, float]]] = {}

#: Set while any process records subscriptions, renewed as they are. A cache without it
#: lost every record (Redis flushed or restarted, while the proxies still hold clients),
#: or nobody subscribed to anything for ``live_timeout()``.
_RECORDING = "drf_grip:recording"
#: When this process last set it (``time.monotonic()``).
_recording_marked = [float("-inf")]


def live_timeout() -> int:
    """How long a subscription's records outlive its last hold: every hold is renewed by
    the proxy well within it (a long-poll's timeout, a stream's next-link timeout, the
    gateway's keep-alive), so an entry that expires has nobody behind it."""
    # The longest a live subscription goes without renewing its records. A configured
    # LIVE_URL_TIMEOUT counts from there ("outlives its last hold"): taken alone, one shorter
    # than that expired under a quiet subscription that was still held, and no change reached
    # it until its renewal (LIVE_URL_TIMEOUT 3 s: a shared stream quiet for 7 s got nothing
    # until its next link fell due, NEXT_LINK_TIMEOUT 120 s later).
    renewal = max(
        int(grip_settings.HOLD_TIMEOUT_MAX),
        int(grip_settings.NEXT_LINK_TIMEOUT),
        4 * int(grip_settings.WS_KEEP_ALIVE),
    )
    configured = grip_settings.LIVE_URL_TIMEOUT
    return renewal + (int(configured) if configured else 60)


def _index(label: str) -> SlotIndex:
    return SlotIndex(f"drf_grip:views:{label}", _MAX_VIEWS, live_timeout())


def record_policy(policy: RealtimePolicy) -> None:
    record_view(policy.model, policy.view, policy.delivery)


def record_view(label: str, view: str, delivery: str) -> None:
    """List ``view`` (``"module:Qual"``) among the views subscribers of model ``label``
    came through, with its delivery: what the publisher follows (``recorded_views``)."""
    key = f"{view}|{delivery}"
    entry = {"view": view, "delivery": delivery}
    done = _index(label).renew(key, entry, _recent.setdefault(label, {}))
    # ADDED: listed anew, as after a flush, which took the mark too.
    keep_recording(anew=done == ADDED)


def keep_recording(anew: bool = False) -> None:
    """Renew the mark that subscriptions are recorded: by every recorded hold, and by each
    request of a gateway connection with subscriptions (which records once, when it
    subscribes, and then lives for hours): a mark that expired under it would make the
    next change close every such connection (``records_lost()``, publishing.py)."""
    now = time.monotonic()
    # Outlives the gap between a connection's keep-alive calls whatever LIVE_URL_TIMEOUT is:
    # live_timeout() covers four of them unless LIVE_URL_TIMEOUT is negative, which neither
    # conf.py nor a system check rejects.
    timeout = max(live_timeout(), 4 * int(grip_settings.WS_KEEP_ALIVE))
    if anew or now - _recording_marked[0] > timeout / 4:
        state_cache().set(_RECORDING, 1, timeout)
        _recording_marked[0] = now


def records_lost() -> bool:
    """Whether the cache holds no record of any subscription (``_RECORDING``): the publisher
    cannot tell which views its held clients came through, so it follows the views'
    classes, as with a per-process cache."""
    return not state_cache().get(_RECORDING)


def recorded_views(model: type[models.Model]) -> list[dict[str, Any]]:
    """``[{"view": "module:Qual", "delivery": ...}]`` recorded for ``model``."""
    return _index(model._meta.label_lower).entries()


def view_path(view_class: type) -> str:
    """How a subscription records the view it came through (``view_class`` reads it)."""
    return f"{view_class.__module__}:{view_class.__qualname__}"


def view_class(path: str) -> type | None:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return target if isinstance(target, type) else None
