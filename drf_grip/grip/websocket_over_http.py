"""WebSocket-over-HTTP requests and their answers: a request's events become
``request.wscontext``, and the context becomes the events response the proxy reads.

A GRIP proxy (Pushpin route option ``over_http``, Fastly Fanout) turns one client WebSocket
into a series of ``POST``s to the same URL, ``Content-Type: application/websocket-events``,
each carrying a *batch* of events; the origin answers ``200`` with events of its own. The
``websocket_*`` modules of this package are django-grip's API for that (``WebSocketContext``,
``websocket_only``) written for Python 3, with strict parsing (``drf_grip.protocol.events``)
and the sharp edges filed off. They know HTTP and GRIP, not DRF.

Contract with ``GripMiddleware`` (``drf_grip/grip/middleware.py``), per request:

1. ``request.grip_proxied`` is set first (``Meta-*`` headers are trusted only from a proxy).
2. ``request.wscontext = context_from_request(request)``: a ``WebSocketContext`` for a
   ``POST`` with ``Content-Type: application/websocket-events``, else ``None``. It raises
   ``MalformedEvents(reason)`` -- and nothing else -- for a bad body or a missing
   ``Connection-Id``; answer ``400 text/plain`` with ``str(exc)``, which is safe to show.
   It removes ``Accept-Encoding`` from ``request.META``: Pushpin forwards the browser's
   handshake headers, and a gzipped events body would be garbage to it.
3. ``websocket_request.attach(request)``: django-websocket's ``request.is_websocket()`` /
   ``request.websocket``.
4. After the view: ``response = finish_response(request, response)`` when ``request.wscontext``
   is not ``None``. ``finish_response`` is idempotent and its rules are:

   - a response that already is ``application/websocket-events`` passes through (the view or
     one of the decorators built it);
   - ``None`` counts as an empty ``200`` (a decorated view need not return a response);
   - a non-2xx answer to an *opening* request passes through: Pushpin relays it to the client
     as the refused handshake (status, headers, body);
   - a non-2xx answer on an *established* connection becomes events: what the view queued,
     then ``CLOSE`` 1008 (4xx) or 1011 (5xx) with the status as reason. Pushpin would drop the
     connection without a close frame on any non-200 answer;
   - a 2xx answer to an opening request the view did not ``accept()`` becomes ``403``;
   - any other 2xx answer becomes ``build_response(ctx)``, keeping the view's headers and
     cookies but not its body (a WebSocket-over-HTTP answer carries only events).

The view-side decorators (``websocket_only`` in ``websocket_decorators``, ``require_websocket`` /
``accept_websocket`` / ``WebSocketView`` in ``websocket_views``; sync or ``async def`` views)
also work without the middleware: they build the context themselves when
``request.wscontext`` is absent, and always finish their own response. They mark the view
``csrf_exempt`` because a WebSocket handshake carries no CSRF token; the ``Origin`` check
(``websocket_origin.origin_allowed``, on every request of the connection) protects them
instead, and plain HTTP requests to an ``accept_websocket`` view are still CSRF-checked.
"""

from __future__ import annotations

import logging
from typing import Final

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from ..protocol.constants import (
    MAX_CLOSE_REASON,
    NORMAL_CLOSURE,
    WEBSOCKET_EVENTS,
)
from ..protocol.events import (
    MalformedEvents,
    WebSocketEvent,
    close_code_of,
    close_payload,
    decode_events,
    encode_events,
    payload_of,
    sendable_close_code,
)
from .websocket_context import WebSocketContext, check_meta_value, meta_name

__all__ = ["build_response", "context_from_request", "finish_response"]

logger = logging.getLogger("drf_grip")

_POLICY_VIOLATION: Final = 1008
_INTERNAL_ERROR: Final = 1011


def _header_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


#: Connection meta naming the subprotocol the opening answer chose.
SUBPROTOCOL_META = "drf-subprotocol"


def context_from_request(
    request: HttpRequest, *, trust_direct: bool = False
) -> WebSocketContext | None:
    """The ``WebSocketContext`` of a WebSocket-over-HTTP request, or ``None`` for other requests.

    Raises ``MalformedEvents`` for a bad body or a missing ``Connection-Id``. ``Meta-*`` headers
    become ``meta`` only when the request came through the proxy (``request.grip_proxied`` not
    ``False``): Pushpin strips a client's own ``Meta-*`` headers, a direct client does not.
    ``trust_direct`` keeps django-grip's rules instead (``GripMiddleware.process_request``):
    ``Meta-*`` taken from any request, ``Connection-Id`` optional.
    """
    content_type = getattr(request, "content_type", None)
    if content_type is None:  # not a Django HttpRequest (django-grip's tests use a mock)
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip()
    if request.method != "POST" or (content_type or "").lower() != WEBSOCKET_EVENTS:
        return None
    cid = request.META.get("HTTP_CONNECTION_ID", "")
    if not cid and not trust_direct:
        raise MalformedEvents("missing Connection-Id header")
    try:
        body = request.body
    except RequestDataTooBig:
        raise MalformedEvents("the body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE") from None
    if isinstance(body, str):
        body = body.encode("utf-8")
    events = decode_events(body)
    meta: dict[str, str] = {}
    if trust_direct or getattr(request, "grip_proxied", True) is not False:
        for key, value in request.META.items():
            if key.startswith("HTTP_META_") and len(key) > 10:
                meta[key[10:].lower().replace("_", "-")] = value
    # The answer is read by the proxy, never a browser: it must not be compressed.
    request.META.pop("HTTP_ACCEPT_ENCODING", None)
    protocols = _header_list(request.META.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""))
    ctx = WebSocketContext(cid, meta, events, protocols=protocols)
    if not ctx.is_opening():
        ctx.subprotocol = ctx.orig_meta.get(SUBPROTOCOL_META)
    return ctx


def build_response(ctx: WebSocketContext) -> HttpResponse:
    """The events answer to one request: always ``200`` with exactly ``WEBSOCKET_EVENTS``
    (Pushpin drops the connection on any other status or content type)."""
    events: list[WebSocketEvent] = []
    opening = ctx.is_opening()
    if opening and ctx.accepted:
        events.append(WebSocketEvent("OPEN"))
    # PINGs the view never read past still get their PONG.
    for event in ctx.in_events[ctx.read_index :]:
        if event.type == "PING":
            events.append(WebSocketEvent("PONG", payload_of(event)))
    events.extend(ctx.out_events)
    if ctx.closed:
        asked = ctx.out_close_code or NORMAL_CLOSURE
        code = sendable_close_code(asked)
        if code != asked:
            logger.warning(
                "WebSocket close(%d): not a code an endpoint may send (RFC 6455 §7.4); "
                "closed with 1000 instead (codes 4000-4999 are the application's own)",
                asked,
            )
        events.append(WebSocketEvent("CLOSE", close_payload(code, ctx.out_close_reason)))
    else:
        client_close = next((e for e in ctx.in_events if e.type == "CLOSE"), None)
        if client_close is not None:
            # Complete the closing handshake (RFC 6455 §5.5.1), echoing the client's code.
            code = sendable_close_code(close_code_of(payload_of(client_close)))
            events.append(WebSocketEvent("CLOSE", close_payload(code)))

    response = HttpResponse(encode_events(events), content_type=WEBSOCKET_EVENTS)
    for call in ctx.after_sent_calls:
        # Django calls a response's closers once the server sent it (HttpResponseBase.close,
        # which also keeps a closer's exception from the server).
        response._resource_closers.append(call)
    # Turns on Pushpin's grip extension for the connection: "m:" messages, "c:" control.
    response["Sec-WebSocket-Extensions"] = "grip"
    if opening and ctx.subprotocol:
        response["Sec-WebSocket-Protocol"] = ctx.subprotocol
        # Only the opening answer names it; the proxy keeps the meta and sends it back with
        # every later batch, whose ``subprotocol`` it sets. A function view's choice
        # (``accept(subprotocol)``) was None from the second batch on (seeds probe).
        ctx.meta[SUBPROTOCOL_META] = ctx.subprotocol
    if ctx.keep_alive_interval:
        # Pushpin raises values below 20 to 20.
        response["Keep-Alive-Interval"] = str(int(ctx.keep_alive_interval))
    # ``meta`` checks as it is set, unless a view replaced it with a dict of its own.
    current = {meta_name(k): v for k, v in ctx.meta.items()}
    for name in ctx.orig_meta.keys() - current.keys():
        response[f"Set-Meta-{name}"] = ""  # Pushpin: an empty value removes the meta
    for name, value in current.items():
        if ctx.orig_meta.get(name) == value:
            continue
        check_meta_value(name, value)
        response[f"Set-Meta-{name}"] = value
    return response


def _is_events_response(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").lower() == WEBSOCKET_EVENTS


#: Paths already warned of messages left unread (once per path and process).
_unread_warned: set[str] = set()


def _warn_of_unread(path: str, ctx: WebSocketContext) -> None:
    """A view that returned with messages of its batch unread loses them: django-websocket's
    ``echo_once`` (``wait()`` once) echoed 5 of 100 messages sent in a burst, without a word
    (seeds probe). Said once per path; a view that ignores what clients send on purpose
    reads and drops them (``for _ in request.websocket: pass``). A closed connection drops
    them anyway: django-websocket's ``echo_once`` returns to close it."""
    if ctx.closed:
        return
    unread = sum(1 for e in ctx.in_events[ctx.read_index:] if e.type in ("TEXT", "BINARY"))
    if unread and path not in _unread_warned and len(_unread_warned) < 1000:
        _unread_warned.add(path)
        logger.warning(
            "WebSocket view for %s returned with %d message%s of its batch unread; they are "
            "dropped. A view runs once per batch of events: read them all (iterate "
            "request.websocket). Said once for this path.",
            path, unread, "" if unread == 1 else "s",
        )


def finish_response(request: HttpRequest, response: HttpResponse | None) -> HttpResponse:
    """Turn a view's answer to a WebSocket-over-HTTP request into what the proxy needs
    (rules in the module docstring). Requests without a context pass through."""
    ctx: WebSocketContext | None = getattr(request, "wscontext", None)
    if ctx is None:
        if response is None:
            raise ValueError("the view returned None for a request that is not a WebSocket")
        return response
    if response is None:
        response = HttpResponse(status=200)
    if _is_events_response(response):
        return response
    status = response.status_code
    if not 200 <= status < 300:
        if ctx.is_opening():
            return response
        # Close cleanly rather than let Pushpin drop the connection on a non-200.
        code = _INTERNAL_ERROR if status >= 500 else _POLICY_VIOLATION
        ctx.close(code, f"HTTP {status} {response.reason_phrase}"[:MAX_CLOSE_REASON])
        return build_response(ctx)
    if ctx.is_opening() and not ctx.accepted:
        return HttpResponse(
            "The view did not accept the WebSocket connection.\n",
            status=403,
            content_type="text/plain",
        )
    _warn_of_unread(getattr(request, "path", "?"), ctx)  # django-grip tests: a bare request
    has_body = response.streaming or bool(response.content)
    if has_body:
        logger.warning(
            "WebSocket view for %s returned a body; WebSocket-over-HTTP answers carry only "
            "events, so it was dropped (use request.wscontext.send())",
            request.path,
        )
    events_response = build_response(ctx)
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length") and name not in events_response:
            events_response[name] = value
    for cookie in response.cookies.values():
        events_response.cookies[cookie.key] = cookie
    return events_response
