"""The ``application/websocket-events`` body of WebSocket-over-HTTP, both ways.

A GRIP proxy (Pushpin route option ``over_http``, Fastly Fanout) turns one client WebSocket
into a series of ``POST``s, each carrying a batch of events ``TYPE[ HEXLEN]\\r\\n[CONTENT\\r\\n]``;
the origin answers with events in the same form. The GRIP layer decodes what the proxy sends
and encodes its answer; the embedded proxy does the reverse.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .constants import NORMAL_CLOSURE, SENDABLE_CLOSE_CODES, WEBSOCKET_EVENTS
from .headers import get_header

__all__ = [
    "EVENT_TYPES",
    "MalformedEvents",
    "WebSocketEvent",
    "close_code_of",
    "close_payload",
    "decode_events",
    "sendable_close_code",
    "encode_events",
    "is_websocket_events",
    "payload_of",
]

# The event types of the protocol (pushpin.org/docs/protocols/websocket-over-http); Pushpin's
# websocketoverhttp.cpp sends and accepts exactly these.
EVENT_TYPES: Final = frozenset({"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"})

_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")


def is_websocket_events(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's raw (ASGI) headers say its body is WebSocket-over-HTTP events."""
    content_type = get_header(headers, "content-type") or ""
    return content_type.split(";")[0].strip().lower() == WEBSOCKET_EVENTS


class MalformedEvents(ValueError):
    """A body that is not valid ``application/websocket-events``.

    ``str(exc)`` is the reason, written to be shown to the client in a 400.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WebSocketEvent:
    """One event; ``content`` is ``None`` when the event carries no length at all
    (``PING\\r\\n``), which differs from empty content (``TEXT 0\\r\\n\\r\\n``).

    ``content`` is kept as given, ``str`` or ``bytes``, as gripcontrol's ``WebSocketEvent``
    keeps it (its own tests: ``WebSocketEvent("type", "content").content == "content"``);
    :attr:`payload` is what goes on the wire, ``str`` in UTF-8. Events parsed from a body
    (:func:`decode_events`) carry bytes."""

    type: str
    content: bytes | str | None = None

    def __post_init__(self) -> None:
        if self.content is not None and not isinstance(self.content, (bytes, str)):
            object.__setattr__(self, "content", bytes(self.content))

    @property
    def payload(self) -> bytes | None:
        """The content as bytes (``None`` for an event without content)."""
        return payload_of(self)


def payload_of(event: Any) -> bytes | None:
    """An event's content as bytes, for drf-grip's events and gripcontrol's alike (a
    ``WebSocketContext`` may be given gripcontrol's: django-grip's own tests build one so)."""
    content = event.content
    if content is None or isinstance(content, bytes):
        return content
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def _show(raw: bytes) -> str:
    """A short, printable rendering of untrusted bytes for an error reason."""
    text = repr(raw[:24])[1:]
    return text + ("..." if len(raw) > 24 else "")


def decode_events(body: bytes, *, short_close: bool = False) -> list[WebSocketEvent]:
    """Parse a batch of events; raise only ``MalformedEvents``.

    Stricter than Pushpin's own parser on purpose: a length must be plain hex digits (Python's
    ``int(x, 16)`` would also take ``0x``, ``+`` and ``_``), content must be followed by CRLF,
    TEXT must be UTF-8 (RFC 6455 §5.6) and a CLOSE payload is empty or starts with a 2-byte code.
    ``short_close`` takes a one-byte CLOSE payload as a CLOSE without a code, as Pushpin 1.36
    reads an origin's answer (proxy/websocketoverhttp.cpp, a code only from 2 bytes or more).
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
        if etype == "CLOSE" and content is not None and len(content) == 1 and not short_close:
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
        payload = payload_of(event)
        if payload is None:
            parts.append(event.type.encode("ascii") + b"\r\n")
        else:
            head = b"%s %x\r\n" % (event.type.encode("ascii"), len(payload))
            parts.append(head + payload + b"\r\n")
    return b"".join(parts)


def close_payload(code: int, reason: str = "") -> bytes:
    """A CLOSE event's content: the code as two bytes, then the reason in UTF-8."""
    return struct.pack(">H", code) + reason.encode("utf-8")


def close_code_of(content: bytes | None) -> int:
    """The code of a CLOSE event's content; an empty payload means a normal closure."""
    if not content or len(content) < 2:
        return NORMAL_CLOSURE
    (code,) = struct.unpack(">H", content[:2])
    return int(code)


def sendable_close_code(code: int) -> int:
    """``code``, or 1000 when an endpoint may not put it on the wire (RFC 6455 §7.4): a
    browser fails the connection on a reserved code, and an ASGI server refuses to send
    one; gripcontrol's ``close()`` took any two bytes."""
    return code if code in SENDABLE_CLOSE_CODES else NORMAL_CLOSURE
