"""From committed changes to GRIP items (DESIGN.md §3, §4).

Private channels get a ``hint``: the proxy re-runs each held request with the client's own
headers (or fetches the stream's next link). Shared views are rendered once per live URL
and the body, ETag and event are pushed to every subscriber.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from ..conf import grip_settings
from ..grip.publisher import publish
from . import channels as names
from .registry import Changes, views_for
from .sse import format_event
from .versions import next_version

__all__ = ["publish_committed", "CLOSE", "HINT", "delete_formats"]

HINT: dict[str, Any] = {
    "http-response": {"action": "hint"},
    "http-stream": {"action": "hint"},
}


#: Ends streams. Versioned like every item: Pushpin takes an item without the prev-id its
#: stream holds for a lost publish and re-fetches the next link instead (a second event).
CLOSE: dict[str, Any] = {"http-stream": {"action": "close"}}


def delete_formats() -> dict[str, Any]:
    """A deleted object: long-polls are re-requested (and get a clean 404), streams get a
    final event, then are closed by a second item."""
    return {
        "http-response": {"action": "hint"},
        "http-stream": {"content": format_event(b"{}", event="delete").decode()},
    }


def _publish_versioned(channel: str, formats: dict[str, Any]) -> None:
    previous, new = next_version(channel)
    publish(channel, formats, id=new, prev_id=previous)


def publish_private(model: type[models.Model], pks: set[Any] | None, deleted: set[Any]) -> None:
    for channel in names.channels_for_change(model, pks):
        _publish_versioned(channel, HINT)
    for pk in sorted(deleted, key=str):
        channel = names.object_channel(model, pk)
        _publish_versioned(channel, delete_formats())
        _publish_versioned(channel, CLOSE)


def publish_committed(changes: Changes) -> None:
    from .gateway import publish_subscriptions
    from .shared import publish_shared

    for model, pks in changes.updated.items():
        deleted = changes.deleted.get(model, set())
        live_pks = None if pks is None else set(pks) - deleted
        publish_private(model, live_pks, deleted)
        # WebSocket gateway connections subscribed to this model's private views.
        publish_subscriptions(model)
        if any(
            (view.realtime_delivery or grip_settings.DEFAULT_DELIVERY) == "shared"
            for view in views_for(model)
        ):
            publish_shared(model)
