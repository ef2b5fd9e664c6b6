"""Server-sent events: a renderer so DRF's content negotiation accepts
``text/event-stream``, and the event framing (WHATWG HTML, "server-sent events")."""

from __future__ import annotations

from rest_framework.renderers import JSONRenderer

__all__ = ["EventStreamRenderer", "format_event", "KEEP_ALIVE", "EVENT_STREAM"]

EVENT_STREAM = "text/event-stream"
# A comment line: ignored by EventSource, keeps intermediaries from timing out.
KEEP_ALIVE = b":\n\n"


class EventStreamRenderer(JSONRenderer):
    """Renders the data as JSON (the same bytes as ``application/json``); the realtime mixin
    frames it as an event. The ETag is therefore the same for a GET and for a stream."""

    media_type = EVENT_STREAM
    format = "event-stream"


def format_event(data: bytes, *, id: str | None = None, event: str | None = None) -> bytes:
    lines = []
    if event:
        lines.append(b"event: " + event.encode())
    if id:
        lines.append(b"id: " + id.encode())
    for line in data.splitlines() or [b""]:
        lines.append(b"data: " + line)
    return b"\n".join(lines) + b"\n\n"
