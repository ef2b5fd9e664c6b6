"""Server-sent events: a renderer so DRF's content negotiation accepts
``text/event-stream``, and the event framing (WHATWG HTML, "server-sent events")."""

from __future__ import annotations

from django.utils.http import parse_header_parameters
from rest_framework.renderers import JSONRenderer

__all__ = [
    "EventStreamRenderer",
    "format_event",
    "media_type_as",
    "refuses_event_stream",
    "KEEP_ALIVE",
    "EVENT_STREAM",
]

EVENT_STREAM = "text/event-stream"
# A comment line: ignored by EventSource, keeps intermediaries from timing out.
KEEP_ALIVE = b":\n\n"


class EventStreamRenderer(JSONRenderer):
    """Renders the data as JSON (the same bytes as ``application/json``); the realtime mixin
    frames it as an event. The ETag is therefore the same for a GET and for a stream."""

    media_type = EVENT_STREAM
    format = "event-stream"


def refuses_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header gives ``text/event-stream`` the weight 0, "not
    acceptable" (RFC 9110 §12.5.1): the most specific ranges that match it decide. DRF's
    content negotiation reads no weights, so it would choose the stream all the same."""
    decisive: tuple[int, bool] | None = None  # (specificity, accepted)
    for item in (accept or "").split(","):
        media_type, params = parse_header_parameters(item)
        if media_type not in ("*/*", "text/*", EVENT_STREAM):
            continue
        specificity = ("*/*", "text/*", EVENT_STREAM).index(media_type)
        if specificity == 2 and set(params) - {"q"}:
            specificity = 3  # a range with parameters names a narrower type (RFC 9110 §12.5.1)
        try:
            accepted = float(params.get("q", "1")) > 0
        except ValueError:
            accepted = True  # not a weight: ignored
        if decisive is None or specificity > decisive[0]:
            decisive = (specificity, accepted)
        elif specificity == decisive[0]:
            decisive = (specificity, decisive[1] or accepted)
    return decisive is not None and not decisive[1]


def media_type_as(media_type: str, type_: str | None = None) -> str:
    """``type_`` (by default the type of ``media_type`` itself) with the parameters of
    ``media_type``, a type DRF's negotiation accepted: those are what a renderer or a
    versioning reads (AcceptHeaderVersioning's ``version``, JSONRenderer's ``indent``). The
    weight ``q`` names no representation and is left out; the others are put in one order."""
    own, params = parse_header_parameters(media_type)
    rest = (f"{key}={value}" for key, value in sorted(params.items()) if key != "q")
    return "; ".join([type_ or own, *rest])


def format_event(data: bytes, *, id: str | None = None, event: str | None = None) -> bytes:
    lines = []
    if event:
        lines.append(b"event: " + event.encode())
    if id:
        lines.append(b"id: " + id.encode())
    for line in data.splitlines() or [b""]:
        lines.append(b"data: " + line)
    return b"\n".join(lines) + b"\n\n"
