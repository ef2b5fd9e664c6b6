"""The ``application/websocket-events`` body of WebSocket-over-HTTP: ``TYPE[ hexlen]\\r\\n...``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WsEvent", "EventsError", "encode_events", "decode_events", "close_payload"]

EVENT_TYPES = frozenset({"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"})


class EventsError(ValueError):
    """A malformed ``application/websocket-events`` body."""


@dataclass(frozen=True)
class WsEvent:
    type: str
    content: bytes | None = None


def encode_events(events: list[WsEvent]) -> bytes:
    out = bytearray()
    for event in events:
        out += event.type.encode("ascii")
        if event.content is not None:
            out += b" %x\r\n" % len(event.content)
            out += event.content
        out += b"\r\n"
    return bytes(out)


def decode_events(body: bytes) -> list[WsEvent]:
    out: list[WsEvent] = []
    pos = 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end == -1:
            raise EventsError("event line without CRLF")
        line = body[pos:end]
        pos = end + 2
        kind, sep, size = line.partition(b" ")
        name = kind.decode("ascii", "replace")
        if name not in EVENT_TYPES:
            raise EventsError(f"unknown event type {name!r}")
        if not sep:
            out.append(WsEvent(name))
            continue
        try:
            length = int(size, 16)
        except ValueError:
            raise EventsError(f"bad content length {size!r}") from None
        end = pos + length
        if length < 0 or end + 2 > len(body) or body[end : end + 2] != b"\r\n":
            raise EventsError(f"truncated {name} event")
        out.append(WsEvent(name, body[pos : pos + length]))
        pos += length + 2
    return out


def close_payload(code: int | None, reason: str = "") -> bytes | None:
    if code is None:
        return None
    return code.to_bytes(2, "big") + reason.encode("utf-8")
