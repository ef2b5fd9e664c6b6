"""WebSocket-over-HTTP at the GRIP level: events, ``request.wscontext``, ``websocket_only``.

A GRIP proxy (Pushpin route option ``over_http``, Fastly Fanout) turns one client WebSocket
into a series of ``POST``s to the same URL, ``Content-Type: application/websocket-events``,
each carrying a *batch* of events; the origin answers ``200`` with events of its own. This
module is django-grip's API for that (``WebSocketContext``, ``websocket_only``) written for
Python 3, with strict parsing and the sharp edges filed off. It knows HTTP and GRIP, not DRF.

Contract with ``GripMiddleware`` (``drf_grip/grip/middleware.py``), per request:

1. ``request.grip_proxied`` is set first (``Meta-*`` headers are trusted only from a proxy).
2. ``request.wscontext = context_from_request(request)``: a ``WebSocketContext`` for a
   ``POST`` with ``Content-Type: application/websocket-events``, else ``None``. It raises
   ``MalformedEvents(reason)`` -- and nothing else -- for a bad body or a missing
   ``Connection-Id``; answer ``400 text/plain`` with ``str(exc)``, which is safe to show.
   It removes ``Accept-Encoding`` from ``request.META``: Pushpin forwards the browser's
   handshake headers, and a gzipped events body would be garbage to it.
3. ``attach(request)``: django-websocket's ``request.is_websocket()`` / ``request.websocket``.
4. After the view: ``response = finish_response(request, response)`` when ``request.wscontext``
   is not ``None``. ``finish_response`` is idempotent and its rules are:

   - a response that already is ``application/websocket-events`` passes through (the view or
     one of the decorators below built it);
   - ``None`` counts as an empty ``200`` (a decorated view need not return a response);
   - a non-2xx answer to an *opening* request passes through: Pushpin relays it to the client
     as the refused handshake (status, headers, body);
   - a non-2xx answer on an *established* connection becomes events: what the view queued,
     then ``CLOSE`` 1008 (4xx) or 1011 (5xx) with the status as reason. Pushpin would drop the
     connection without a close frame on any non-200 answer;
   - a 2xx answer to an opening request the view did not ``accept()`` becomes ``403``;
   - any other 2xx answer becomes ``build_response(ctx)``, keeping the view's headers and
     cookies but not its body (a WebSocket-over-HTTP answer carries only events).

The view-side decorators (``websocket_only`` here, ``require_websocket`` /
``accept_websocket`` / ``WebSocketView`` in ``drf_grip.grip.websocket_views``; sync or ``async def``
views) also work without the middleware: they build the context themselves when
``request.wscontext`` is absent, and always finish their own response. They mark the view
``csrf_exempt`` because a WebSocket handshake carries no CSRF token; the ``Origin`` check
(``origin_allowed``, on every request of the connection) protects them instead, and plain
HTTP requests to an ``accept_websocket`` view are still CSRF-checked.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string

from ..conf import grip_settings

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "MalformedEvents",
    "WebSocketEvent",
    "WebSocketContext",
    "attach",
    "build_response",
    "context_from_request",
    "decode_events",
    "encode_events",
    "finish_response",
    "origin_allowed",
    "serve_websocket_view",
    "websocket_only",
]

logger = logging.getLogger("drf_grip")

CONTENT_TYPE: Final = "application/websocket-events"

# The event types of the WebSocket-over-HTTP protocol (pushpin.org/docs/protocols/
# websocket-over-http); Pushpin's websocketoverhttp.cpp sends and accepts exactly these.
EVENT_TYPES: Final = frozenset({"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"})

# Messages from the origin must start with this prefix once the grip extension is on, or
# Pushpin drops them; TEXT messages starting with "c:" are control messages to Pushpin
# (Pushpin wsproxysession.cpp; the prefix applies to TEXT and BINARY alike).
MESSAGE_PREFIX: Final = b"m:"
CONTROL_PREFIX: Final = b"c:"

# Close codes an endpoint may put on the wire (RFC 6455 §7.4; 1004-1006 and 1015 are
# reserved, 1016-2999 are for future RFCs).
_SENDABLE_CLOSE_CODES: Final = frozenset(
    [1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)]
)
_NORMAL_CLOSURE: Final = 1000
_POLICY_VIOLATION: Final = 1008
_INTERNAL_ERROR: Final = 1011
_MAX_CLOSE_REASON: Final = 123  # bytes; a control frame payload is at most 125 (RFC 6455 §5.5)

_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_META_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")

V = TypeVar("V", bound=Callable[..., Any])


class MalformedEvents(ValueError):
    """The body of a WebSocket-over-HTTP request is not valid ``application/websocket-events``.

    ``str(exc)`` is the reason, written to be shown to the client in a 400.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WebSocketEvent:
    """One event; ``content`` is ``None`` when the event carries no length at all
    (``PING\\r\\n``), which differs from empty content (``TEXT 0\\r\\n\\r\\n``)."""

    type: str
    content: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.content, str):  # gripcontrol accepted str content
            object.__setattr__(self, "content", self.content.encode("utf-8"))
        elif self.content is not None and not isinstance(self.content, bytes):
            object.__setattr__(self, "content", bytes(self.content))


def _show(raw: bytes) -> str:
    """A short, printable rendering of untrusted bytes for an error reason."""
    text = repr(raw[:24])[1:]
    return text + ("..." if len(raw) > 24 else "")


def decode_events(body: bytes) -> list[WebSocketEvent]:
    """Parse ``TYPE[ HEXLEN]\\r\\n[CONTENT\\r\\n]`` events; raise only ``MalformedEvents``.

    Stricter than Pushpin's own parser on purpose: a length must be plain hex digits (Python's
    ``int(x, 16)`` would also take ``0x``, ``+`` and ``_``), content must be followed by CRLF,
    TEXT must be UTF-8 (RFC 6455 §5.6) and a CLOSE payload is empty or starts with a 2-byte code.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise MalformedEvents("the body must be bytes")
    body = bytes(body)
    events: list[WebSocketEvent] = []
    pos = 0
    size = len(body)
    while pos < size:
        number = len(events) + 1
        end = body.find(b"\r\n", pos)
        if end == -1:
            raise MalformedEvents(
                f"event {number} at byte {pos}: the type line does not end with CRLF"
            )
        line = body[pos:end]
        name, space, length = line.partition(b" ")
        try:
            etype = name.decode("ascii")
        except UnicodeDecodeError:
            etype = ""
        if etype not in EVENT_TYPES:
            raise MalformedEvents(f"event {number} at byte {pos}: unknown type {_show(name)}")
        pos = end + 2
        content: bytes | None = None
        if space:
            if not _HEX.fullmatch(length):
                raise MalformedEvents(
                    f"event {number} ({etype}): the length {_show(length)} is not hexadecimal"
                )
            count = int(length, 16)
            if count > size - pos:
                raise MalformedEvents(
                    f"event {number} ({etype}): truncated content, {count} bytes announced, "
                    f"{size - pos} left"
                )
            content = body[pos : pos + count]
            pos += count
            if body[pos : pos + 2] != b"\r\n":
                raise MalformedEvents(
                    f"event {number} ({etype}): the content is not followed by CRLF"
                )
            pos += 2
        if etype == "TEXT" and content:
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedEvents(
                    f"event {number} (TEXT): invalid UTF-8 at content byte {exc.start}"
                ) from None
        if etype == "CLOSE" and content is not None and len(content) == 1:
            raise MalformedEvents(
                f"event {number} (CLOSE): the payload must be empty or start with a 2-byte code"
            )
        events.append(WebSocketEvent(etype, content))
    return events


def encode_events(events: Iterable[WebSocketEvent]) -> bytes:
    """Serialize events; lengths in lowercase hex, as Pushpin writes them."""
    parts: list[bytes] = []
    for event in events:
        if event.type not in EVENT_TYPES:
            raise ValueError(f"unknown WebSocket event type {event.type!r}")
        if event.content is None:
            parts.append(event.type.encode("ascii") + b"\r\n")
        else:
            head = b"%s %x\r\n" % (event.type.encode("ascii"), len(event.content))
            parts.append(head + event.content + b"\r\n")
    return b"".join(parts)


def _close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack(">H", code) + reason.encode("utf-8")


class WebSocketContext:
    """``request.wscontext``: one batch of events from one connection, and the answer to it.

    It lives for one request, not for the connection: state that must outlive the batch goes
    into ``meta`` (kept by the proxy, sent back as ``Meta-*`` on every later request) or into
    channel subscriptions.
    """

    def __init__(
        self,
        id: str,
        meta: Mapping[str, str] | None = None,
        in_events: Sequence[WebSocketEvent] = (),
        grip_prefix: str | None = None,
        protocols: Sequence[str] = (),
    ) -> None:
        self.id = id
        self.in_events: list[WebSocketEvent] = list(in_events)
        self.read_index = 0
        #: The connection's meta; changes become ``Set-Meta-*`` headers (keys are lowercase).
        self.orig_meta: dict[str, str] = {k.lower(): v for k, v in (meta or {}).items()}
        self.meta: dict[str, str] = dict(self.orig_meta)
        self.grip_prefix = grip_prefix
        #: Subprotocols the client offered (``Sec-WebSocket-Protocol``), in its order.
        self.protocols: list[str] = list(protocols)
        #: The subprotocol to answer with on the opening response.
        self.subprotocol: str | None = None
        #: Seconds between the proxy's empty keep-alive requests (``Keep-Alive-Interval``).
        self.keep_alive_interval: int | None = None
        self.accepted = False
        self.closed = False
        self.out_close_code: int | None = None
        self.out_close_reason = ""
        #: The client's close code, once its CLOSE has been read.
        self.close_code: int | None = None
        self.close_reason = ""
        #: True once a DISCONNECT (the client went away without a close handshake) was read.
        self.disconnected = False
        self.out_events: list[WebSocketEvent] = []

    def __repr__(self) -> str:
        return f"<WebSocketContext id={self.id!r} events={len(self.in_events)}>"

    # -- the connection ------------------------------------------------------------------

    def is_opening(self) -> bool:
        """True for the connection's first request; answer it with ``accept()`` or a 4xx."""
        return bool(self.in_events) and self.in_events[0].type == "OPEN"

    def accept(self, subprotocol: str | None = None) -> None:
        """Accept an opening connection (a no-op on later requests: Pushpin treats a second
        OPEN as a protocol error and drops the connection)."""
        if subprotocol is not None:
            self.subprotocol = subprotocol
        self.accepted = True

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Close the connection after the queued messages; ``code`` defaults to 1000."""
        code = _NORMAL_CLOSURE if code is None else int(code)
        if code not in _SENDABLE_CLOSE_CODES:
            raise ValueError(f"{code} is not a close code an endpoint may send (RFC 6455 §7.4)")
        if len(reason.encode("utf-8")) > _MAX_CLOSE_REASON:
            raise ValueError(f"a close reason is at most {_MAX_CLOSE_REASON} bytes of UTF-8")
        self.closed = True
        self.out_close_code = code
        self.out_close_reason = reason

    # -- receiving -----------------------------------------------------------------------

    def _skip_pings(self) -> None:
        # Answer PINGs as the read position passes them (RFC 6455 §5.5.2: a PONG echoes
        # the PING's payload); PONGs from the client need no answer.
        while self.read_index < len(self.in_events):
            event = self.in_events[self.read_index]
            if event.type == "PING":
                self.out_events.append(WebSocketEvent("PONG", event.content))
            elif event.type not in ("PONG", "OPEN"):
                return
            self.read_index += 1

    def can_recv(self) -> bool:
        """True while ``recv()`` has something to return in this batch."""
        self._skip_pings()
        return self.read_index < len(self.in_events)

    def recv(self) -> str | bytes | None:
        """The next message: ``str`` for TEXT, ``bytes`` for BINARY, ``None`` when the client
        closed (CLOSE) or went away (DISCONNECT). ``IndexError`` past the end of the batch.

        gripcontrol raised ``IOError`` on DISCONNECT, which made django-grip's own echo
        example answer every unclean disconnect with a 500; ``None`` is what that example's
        ``if message is None`` loop expects. ``disconnected`` tells the two apart.
        """
        self._skip_pings()
        if self.read_index >= len(self.in_events):
            raise IndexError("read from empty buffer")
        event = self.in_events[self.read_index]
        self.read_index += 1
        if event.type == "TEXT":
            return (event.content or b"").decode("utf-8")
        if event.type == "BINARY":
            return event.content or b""
        # CLOSE or DISCONNECT end the connection: nothing after them is a message.
        self.read_index = len(self.in_events)
        if event.type == "CLOSE":
            if event.content:
                (self.close_code,) = struct.unpack(">H", event.content[:2])
                self.close_reason = event.content[2:].decode("utf-8", "replace")
            else:
                self.close_code = _NORMAL_CLOSURE
        else:
            self.disconnected = True
        return None

    # -- sending -------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Queue a message: ``str`` as TEXT, ``bytes`` as BINARY (gripcontrol sent both as
        TEXT, which browsers reject when the bytes are not UTF-8)."""
        if isinstance(message, str):
            content = MESSAGE_PREFIX + message.encode("utf-8")
            self.out_events.append(WebSocketEvent("TEXT", content))
        elif isinstance(message, (bytes, bytearray, memoryview)):
            self.send_binary(bytes(message))
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")

    def send_binary(self, message: bytes | str) -> None:
        if isinstance(message, str):
            message = message.encode("utf-8")
        self.out_events.append(WebSocketEvent("BINARY", MESSAGE_PREFIX + bytes(message)))

    def send_control(self, message: str | Mapping[str, Any]) -> None:
        """Queue a GRIP control message for the proxy (a JSON object, ``c:``-prefixed)."""
        if not isinstance(message, str):
            message = json.dumps(dict(message), separators=(",", ":"))
        self.out_events.append(WebSocketEvent("TEXT", CONTROL_PREFIX + message.encode("utf-8")))

    def _channel(self, channel: str) -> str:
        if not isinstance(channel, str) or not channel:
            raise ValueError("a channel name is a non-empty string")
        prefix = grip_settings.prefix if self.grip_prefix is None else self.grip_prefix
        return prefix + channel

    def subscribe(self, channel: str) -> None:
        """Deliver what is published on ``channel`` to this connection (``GRIP_PREFIX`` added)."""
        self.send_control({"type": "subscribe", "channel": self._channel(channel)})

    def unsubscribe(self, channel: str) -> None:
        self.send_control({"type": "unsubscribe", "channel": self._channel(channel)})

    def detach(self) -> None:
        """Stop relaying the client's messages to the origin; publishing still reaches it."""
        self.send_control({"type": "detach"})

    def set_keep_alive(
        self,
        timeout: int | None,
        content: str | bytes = "keep-alive",
        message_type: str = "ping",
        mode: str = "idle",
    ) -> None:
        """Have the proxy send ``content`` to the client every ``timeout`` seconds of silence
        (``mode="idle"``) or always (``"interval"``); ``timeout=None`` turns it off.

        The default is a PING, which browsers answer without bothering the page. Pushpin
        treats a keep-alive without content as "off", so content is never empty here.
        """
        if not timeout:
            self.send_control({"type": "keep-alive"})
            return
        if message_type not in ("text", "binary", "ping", "pong"):
            raise ValueError("message_type is one of text, binary, ping, pong")
        control: dict[str, Any] = {
            "type": "keep-alive",
            "message-type": message_type,
            "timeout": int(timeout),
            "mode": mode,
        }
        if isinstance(content, str):
            control["content"] = content or "keep-alive"
        else:
            control["content-bin"] = base64.b64encode(content or b"keep-alive").decode("ascii")
        self.send_control(control)


def _header_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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
    if request.method != "POST" or (content_type or "").lower() != CONTENT_TYPE:
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
    return WebSocketContext(cid, meta, events, protocols=protocols)


def build_response(ctx: WebSocketContext) -> HttpResponse:
    """The events answer to one request: always ``200`` with exactly ``CONTENT_TYPE`` (Pushpin
    drops the connection on any other status or content type)."""
    events: list[WebSocketEvent] = []
    opening = ctx.is_opening()
    if opening and ctx.accepted:
        events.append(WebSocketEvent("OPEN"))
    # PINGs the view never read past still get their PONG.
    for event in ctx.in_events[ctx.read_index :]:
        if event.type == "PING":
            events.append(WebSocketEvent("PONG", event.content))
    events.extend(ctx.out_events)
    if ctx.closed:
        code = ctx.out_close_code or _NORMAL_CLOSURE
        events.append(WebSocketEvent("CLOSE", _close_payload(code, ctx.out_close_reason)))
    else:
        client_close = next((e for e in ctx.in_events if e.type == "CLOSE"), None)
        if client_close is not None:
            # Complete the closing handshake (RFC 6455 §5.5.1), echoing the client's code.
            code = _NORMAL_CLOSURE
            if client_close.content:
                (code,) = struct.unpack(">H", client_close.content[:2])
            if code not in _SENDABLE_CLOSE_CODES:
                code = _NORMAL_CLOSURE
            events.append(WebSocketEvent("CLOSE", _close_payload(code)))

    response = HttpResponse(encode_events(events), content_type=CONTENT_TYPE)
    # Turns on Pushpin's grip extension for the connection: "m:" messages, "c:" control.
    response["Sec-WebSocket-Extensions"] = "grip"
    if opening and ctx.subprotocol:
        response["Sec-WebSocket-Protocol"] = ctx.subprotocol
    if ctx.keep_alive_interval:
        # Pushpin raises values below 20 to 20.
        response["Keep-Alive-Interval"] = str(int(ctx.keep_alive_interval))
    current = {str(k).lower(): v for k, v in ctx.meta.items()}
    for name in ctx.orig_meta.keys() - current.keys():
        response[f"Set-Meta-{name}"] = ""  # Pushpin: an empty value removes the meta
    for name, value in current.items():
        if ctx.orig_meta.get(name) == value:
            continue
        if not _META_NAME.match(name):
            raise ValueError(f"meta name {name!r}: use letters, digits and '-'")
        if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"meta {name!r}: the value must be a str without control characters")
        response[f"Set-Meta-{name}"] = value
    return response


def _is_events_response(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").lower() == CONTENT_TYPE


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
        ctx.close(code, f"HTTP {status} {response.reason_phrase}"[:_MAX_CLOSE_REASON])
        return build_response(ctx)
    if ctx.is_opening() and not ctx.accepted:
        return HttpResponse(
            "The view did not accept the WebSocket connection.\n",
            status=403,
            content_type="text/plain",
        )
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


# -- the Origin check ----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _trusted_origins(
    origins: tuple[str, ...],
) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    exact = frozenset(o for o in origins if "*" not in o)
    wild = []
    for origin in origins:
        if "*" in origin:
            parts = urlsplit(origin)
            wild.append((parts.scheme, parts.netloc.lstrip("*")))
    return exact, tuple(wild)


def origin_allowed(request: HttpRequest) -> bool:
    """Whether the ``Origin`` of a WebSocket request may open a connection.

    Browsers always send ``Origin`` on a WebSocket handshake and cannot forge it, so the same
    rules as Django's CSRF origin check apply (``CsrfViewMiddleware._origin_verified``): the
    origin must be this request's own scheme, host and port, or be listed in
    ``CSRF_TRUSTED_ORIGINS`` (a ``*.`` entry matches subdomains, port included). A page on
    another port of an allowed host is another origin. No ``Origin`` means a non-browser
    client, which is allowed. Pushpin forwards the handshake's ``Origin`` and ``Host`` on every
    request of the connection.
    """
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return True
    try:
        own = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    exact, wild = _trusted_origins(tuple(getattr(settings, "CSRF_TRUSTED_ORIGINS", ())))
    if origin in exact:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(parts.scheme == scheme and is_same_domain(parts.netloc, host) for scheme, host in wild)


# -- views ---------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _csrf_middleware(middleware: tuple[str, ...]) -> type | None:
    from django.middleware.csrf import CsrfViewMiddleware

    for path in middleware:
        try:
            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, CsrfViewMiddleware):
            return cls
    return None


def _check_csrf(
    request: HttpRequest, view: Callable[..., Any], args: tuple, kwargs: dict
) -> HttpResponse | None:
    """Run the project's CSRF check for a plain HTTP request to a view that we had to mark
    ``csrf_exempt`` only for its WebSocket traffic."""
    cls = _csrf_middleware(tuple(getattr(settings, "MIDDLEWARE", None) or ()))
    if cls is None:
        return None
    return cls(lambda r: HttpResponse()).process_view(request, view, args, kwargs)


def _before_view(
    request: HttpRequest,
    view: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    allow_http: bool,
    prepare: Callable[[HttpRequest, WebSocketContext], HttpResponse | None] | None,
) -> HttpResponse | None:
    """What happens before the view: the final answer, or ``None`` to run the view."""
    if not hasattr(request, "wscontext"):  # no GripMiddleware in front
        try:
            request.wscontext = context_from_request(request)
        except MalformedEvents as exc:
            return HttpResponseBadRequest(
                f"Malformed WebSocket events: {exc}\n", content_type="text/plain"
            )
        attach(request)
    ctx: WebSocketContext | None = request.wscontext
    if ctx is None:
        if not allow_http:
            return HttpResponseBadRequest(
                "This URL only accepts WebSocket connections (WebSocket-over-HTTP through a "
                "GRIP proxy).\n",
                content_type="text/plain",
            )
        return _check_csrf(request, view, args, kwargs)
    if not origin_allowed(request):
        return finish_response(
            request,
            HttpResponse(
                "Forbidden: this WebSocket's Origin is not allowed by ALLOWED_HOSTS or "
                "CSRF_TRUSTED_ORIGINS.\n",
                status=403,
                content_type="text/plain",
            ),
        )
    if prepare is not None:
        refused = prepare(request, ctx)
        if refused is not None:
            return finish_response(request, refused)
    return None


def _after_view(
    request: HttpRequest, response: HttpResponse | None, *, auto_accept: bool
) -> HttpResponse:
    ctx: WebSocketContext | None = request.wscontext
    if ctx is None:
        return response  # type: ignore[return-value]  # plain HTTP: Django checks it
    if (
        auto_accept
        and ctx.is_opening()
        and not ctx.accepted
        and (response is None or 200 <= response.status_code < 300)
    ):
        ctx.accept()
    return finish_response(request, response)


def serve_websocket_view(
    request: HttpRequest,
    view: Callable[..., HttpResponse | None],
    args: tuple,
    kwargs: dict,
    *,
    allow_http: bool,
    auto_accept: bool,
    prepare: Callable[[HttpRequest, WebSocketContext], HttpResponse | None] | None = None,
) -> HttpResponse:
    """Run ``view`` for a WebSocket-over-HTTP request; the machinery behind the decorators.

    Non-WebSocket requests get 400 unless ``allow_http`` (then the view runs as usual, CSRF
    checked). WebSocket requests: Origin check (403), ``prepare(request, ctx)`` (may answer
    instead of the view), the view, then ``auto_accept`` of an opening connection the view
    did not refuse, and ``finish_response``.
    """
    answer = _before_view(request, view, args, kwargs, allow_http=allow_http, prepare=prepare)
    if answer is not None:
        return answer
    return _after_view(request, view(request, *args, **kwargs), auto_accept=auto_accept)


def _websocket_view(view: V, *, allow_http: bool, auto_accept: bool, prepare: Any = None) -> V:
    wrapped: Any
    if iscoroutinefunction(view):

        @wraps(view)
        async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            answer = _before_view(
                request, view, args, kwargs, allow_http=allow_http, prepare=prepare
            )
            if answer is not None:
                return answer
            response = await view(request, *args, **kwargs)
            return _after_view(request, response, auto_accept=auto_accept)

    else:

        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return serve_websocket_view(
                request,
                view,
                args,
                kwargs,
                allow_http=allow_http,
                auto_accept=auto_accept,
                prepare=prepare,
            )

    # A WebSocket handshake carries no CSRF token; the Origin check stands in for it, and
    # plain HTTP requests are CSRF-checked inside (see _check_csrf).
    wrapped.csrf_exempt = True
    return wrapped  # type: ignore[no-any-return]


def websocket_only(view: V) -> V:
    """django-grip's decorator: WebSocket-over-HTTP requests only (others get 400), and the view
    need not return a response. The view accepts an opening connection itself with
    ``request.wscontext.accept()``; an opening it does not accept is refused with 403."""
    return _websocket_view(view, allow_http=False, auto_accept=False)


def attach(request: HttpRequest) -> None:
    """Install django-websocket's ``request.is_websocket()`` and ``request.websocket``
    (implemented in ``websocket_views``, which sits on top of this module)."""
    from .websocket_views import attach as attach_websocket

    attach_websocket(request)
