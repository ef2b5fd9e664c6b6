"""Server-sent events: a renderer so DRF's content negotiation accepts
``text/event-stream``, and the event framing (WHATWG HTML, "server-sent events")."""

from __future__ import annotations

from typing import Any

from django.utils.http import parse_header_parameters
from rest_framework.renderers import BaseRenderer, JSONRenderer

__all__ = [
    "EventStreamRenderer",
    "format_event",
    "json_renderer_of",
    "media_type_as",
    "refuses_event_stream",
    "weighs_event_stream",
    "accept_weight",
    "KEEP_ALIVE",
    "EVENT_STREAM",
]

EVENT_STREAM = "text/event-stream"
# A comment line: ignored by EventSource, keeps intermediaries from timing out.
KEEP_ALIVE = b":\n\n"


class EventStreamRenderer(JSONRenderer):
    """Renders the data as JSON (the same bytes as ``application/json``); the realtime mixin
    frames it as an event. The ETag is therefore the same for a GET and for a stream.

    ``json_renderer`` is the view's own JSON renderer (``json_renderer_of``), which renders
    the events: a project's renderer (camelCase keys, another encoder, JSON:API's
    ``application/vnd.api+json``) gives a GET's bytes, which a shared push, made by a render
    of the URL as ``json_media_type``, carries too."""

    media_type = EVENT_STREAM
    format = "event-stream"

    def __init__(self, json_renderer: BaseRenderer | None = None) -> None:
        self.json_renderer = json_renderer

    @property
    def json_media_type(self) -> str:
        """The media type (without parameters) of the JSON the events carry."""
        if self.json_renderer is None:
            return "application/json"
        return parse_header_parameters(self.json_renderer.media_type)[0]

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if self.json_renderer is None:
            return super().render(data, accepted_media_type, renderer_context)
        # JSON with the parameters negotiated for the stream (``indent``, ``version``).
        media_type = media_type_as(accepted_media_type or EVENT_STREAM, self.json_media_type)
        return self.json_renderer.render(data, media_type, renderer_context)


def json_renderer_of(renderers: list[Any]) -> Any:
    """The renderer (instance or class, as given) of the view's JSON: the first of ``application/json`` (which DRF's
    negotiation picks for that type), else the first of a ``+json`` type (RFC 6839), a view
    that serves JSON only under its own type. None when there is none (a stream then
    renders DRF's JSON)."""
    suffixed = None
    for renderer in renderers:
        media_type, _params = parse_header_parameters(renderer.media_type)
        if not hasattr(renderer, "render"):
            continue
        if media_type == "application/json":
            return renderer
        if suffixed is None and media_type.startswith("application/") and media_type.endswith(
            "+json"
        ):
            suffixed = renderer
    return suffixed


def refuses_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header gives ``text/event-stream`` the weight 0, "not
    acceptable" (RFC 9110 §12.5.1). DRF's content negotiation reads no weights, so it would
    choose the stream all the same."""
    return accept_weight(accept, EVENT_STREAM) == 0


def _weight(media_type: str, ranges: list[tuple[str, int, float]]) -> float | None:
    """The weight an ``Accept`` gives ``media_type``: that of the most specific ranges that
    match it (RFC 9110 §12.5.1), None when none does."""
    decisive: tuple[int, float] | None = None
    for range_, specificity, weight in ranges:
        if range_ == "*/*" or range_ == media_type or (
            range_.endswith("/*") and media_type.startswith(range_[:-1])
        ):
            if decisive is None or specificity > decisive[0]:
                decisive = (specificity, weight)
            elif specificity == decisive[0]:
                decisive = (specificity, max(weight, decisive[1]))
    return None if decisive is None else decisive[1]


def _ranges(accept: str | None) -> list[tuple[str, int, float]]:
    ranges = []
    for item in (accept or "").split(","):
        media_type, params = parse_header_parameters(item)
        if "/" not in media_type:
            continue
        specificity = 0 if media_type == "*/*" else 1 if media_type.endswith("/*") else 2
        if specificity == 2 and set(params) - {"q"}:
            specificity = 3  # a range with parameters names a narrower type (RFC 9110 §12.5.1)
        try:
            weight = float(params.get("q", "1"))
        except ValueError:
            weight = 1.0  # not a weight: ignored
        if not 0 <= weight <= 1:
            weight = 1.0  # nor is one outside 0-1 (RFC 9110 §12.4.2), NaN included
        ranges.append((media_type, specificity, weight))
    return ranges


def accept_weight(accept: str | None, media_type: str) -> float | None:
    """The weight an ``Accept`` header gives ``media_type`` (RFC 9110 §12.5.1), None when
    no range of it matches."""
    return _weight(media_type, _ranges(accept))


def weighs_event_stream(accept: str | None, others: list[str]) -> int:
    """How an ``Accept`` header ranks ``text/event-stream`` against the view's other media
    types (``others``): 1 above all of them, -1 below one of them, 0 a tie or no weights to
    go by. DRF's negotiation reads no weights: of two types a client names, it takes the
    one of the view's first renderer, and the more specific range before ``*/*``, so
    ``text/event-stream, application/json;q=0.5`` got JSON and ``text/event-stream;q=0.5,
    */*`` a stream, each against the client's stated preference."""
    ranges = _ranges(accept)
    stream = _weight(EVENT_STREAM, ranges)
    weights = [w for w in (_weight(o, ranges) for o in others) if w is not None]
    if stream is None or not weights:
        return 0
    best = max(weights)
    return (stream > best) - (stream < best)


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
