"""``request.wscontext``: one batch of WebSocket events from one connection, and the answer
being built to it (django-grip's ``WebSocketContext``, for Python 3)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..conf import grip_settings
from ..protocol.constants import (
    CONTROL_PREFIX,
    MAX_CLOSE_REASON,
    MESSAGE_PREFIX,
    NORMAL_CLOSURE,
)
from ..protocol.events import WebSocketEvent, close_code_of, payload_of

__all__ = ["ConnectionMeta", "WebSocketContext"]

#: A meta name travels as a header name, ``Set-Meta-<name>`` out and ``Meta-<name>`` back.
#: Django folds ``_`` into ``-`` on the way back (``request.META["HTTP_META_USER_ID"]``), and
#: its WSGI server (runserver) drops a request header whose name holds ``_`` altogether.
_META_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
#: How Django's ``HttpResponse`` sends a header value Latin-1 cannot carry: one RFC 2047
#: encoded word (``ResponseHeaders._convert_to_charset``). The proxy sends it back as is.
_ENCODED_WORD = re.compile(r"=\?utf-8\?b\?([A-Za-z0-9+/]*={0,2})\?=\Z", re.IGNORECASE)


def _fold(name: object) -> str:
    return str(name).lower().replace("_", "-")


def meta_name(name: object) -> str:
    """``name`` as the proxy keeps it: lowercase, ``_`` as ``-``; ``ValueError`` for a name no
    header can carry."""
    folded = _fold(name)
    if not _META_NAME.match(folded):
        raise ValueError(f"meta name {name!r}: use ASCII letters, digits, '-' and '_'")
    return folded


def check_meta_value(name: str, value: object) -> None:
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"meta {name!r}: the value must be a str without control characters")


def _from_header(value: str) -> str:
    match = _ENCODED_WORD.match(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return value


class ConnectionMeta(dict[str, str]):
    """The connection's meta, kept by the proxy between batches. Names are header names:
    ``meta["user_id"]``, ``meta["User-Id"]`` and ``meta["user-id"]`` are one entry, stored
    as ``"user-id"``, the name it comes back under. A name or value no header can carry is
    refused where it is set (``ValueError``), not once the view has returned, when the
    connection could only be dropped (django-grip sent it; a probe saw Pushpin drop the
    connection and the embedded proxy close it with 1011)."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.update(items)

    def __setitem__(self, name: str, value: str) -> None:
        key = meta_name(name)
        check_meta_value(key, value)
        super().__setitem__(key, value)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(_fold(name))

    def __delitem__(self, name: str) -> None:
        super().__delitem__(_fold(name))

    def __contains__(self, name: object) -> bool:
        return super().__contains__(_fold(name))

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(_fold(name), default)

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        return super().pop(_fold(name), *default)

    def setdefault(self, name: str, default: str) -> str:  # type: ignore[override]
        if name not in self:
            self[name] = default
        return self[name]

    def update(self, *args: Any, **kwargs: str) -> None:  # type: ignore[override]
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def copy(self) -> ConnectionMeta:
        return ConnectionMeta(self)


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
        #: The connection's meta as the proxy sent it (names folded as :class:`ConnectionMeta`
        #: folds them); changes to ``meta`` become ``Set-Meta-*`` headers.
        self.orig_meta: dict[str, str] = {
            _fold(k): _from_header(v) for k, v in (meta or {}).items()
        }
        self.meta = ConnectionMeta()
        dict.update(self.meta, self.orig_meta)  # as received, not checked again
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
        #: True once a read found the batch exhausted: the view asked for more than this
        #: batch holds, where a socket's ``wait()`` would have blocked for the next message.
        self.read_past_batch = False
        self.out_events: list[WebSocketEvent] = []
        #: Called once this request's answer was handed to the proxy (:meth:`after_sent`).
        self.after_sent_calls: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<WebSocketContext id={self.id!r} events={len(self.in_events)}>"

    # -- the connection ------------------------------------------------------------------

    def is_opening(self) -> bool:
        """True for the connection's first request; answer it with ``accept()`` or a 4xx."""
        return bool(self.in_events) and self.in_events[0].type == "OPEN"

    def after_sent(self, call: Callable[[], None]) -> None:
        """Call ``call()`` once the events answered to this request went out to the proxy:
        a message published from then on reaches the client after them (a publish and an
        answer take different ways to the proxy, and either may arrive first)."""
        self.after_sent_calls.append(call)

    def accept(self, subprotocol: str | None = None) -> None:
        """Accept an opening connection (a no-op on later requests: Pushpin treats a second
        OPEN as a protocol error and drops the connection)."""
        if subprotocol is not None:
            self.subprotocol = subprotocol
        self.accepted = True

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Close the connection after the queued messages; ``code`` defaults to 1000.

        Any two-byte code is kept in ``out_close_code``, as gripcontrol kept it; one that an
        endpoint may not send (RFC 6455 §7.4) goes on the wire as 1000, with a warning
        (:func:`~drf_grip.grip.websocket_over_http.build_response`)."""
        code = NORMAL_CLOSURE if code is None else int(code)
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"a close code is two bytes (0-65535), not {code}")
        if len(reason.encode("utf-8")) > MAX_CLOSE_REASON:
            raise ValueError(f"a close reason is at most {MAX_CLOSE_REASON} bytes of UTF-8")
        self.closed = True
        self.out_close_code = code
        self.out_close_reason = reason

    # -- receiving -----------------------------------------------------------------------

    def handle_upcoming_pings_and_pongs(self) -> None:
        """Move the read position past PINGs and PONGs, answering each PING (gripcontrol's
        name; ``recv()`` and ``can_recv()`` do it themselves)."""
        # RFC 6455 §5.5.2: a PONG echoes the PING's payload; PONGs need no answer.
        while self.read_index < len(self.in_events):
            event = self.in_events[self.read_index]
            if event.type == "PING":
                self.out_events.append(WebSocketEvent("PONG", payload_of(event)))
            elif event.type not in ("PONG", "OPEN"):
                return
            self.read_index += 1

    def can_recv(self) -> bool:
        """True while ``recv()`` has something to return in this batch."""
        self.handle_upcoming_pings_and_pongs()
        if self.read_index < len(self.in_events):
            return True
        self.read_past_batch = True
        return False

    def recv(self) -> str | bytes | None:
        """The next message: ``str`` for TEXT, ``bytes`` for BINARY, ``None`` when the client
        closed (CLOSE) or went away (DISCONNECT). ``IndexError`` past the end of the batch.

        gripcontrol raised ``IOError`` on DISCONNECT, which made django-grip's own echo
        example answer every unclean disconnect with a 500; ``None`` is what that example's
        ``if message is None`` loop expects. ``disconnected`` tells the two apart.
        """
        self.handle_upcoming_pings_and_pongs()
        if self.read_index >= len(self.in_events):
            raise IndexError("read from empty buffer")
        event = self.in_events[self.read_index]
        self.read_index += 1
        if event.type == "TEXT":
            return (payload_of(event) or b"").decode("utf-8")
        if event.type == "BINARY":
            return payload_of(event) or b""
        # CLOSE or DISCONNECT end the connection: nothing after them is a message.
        self.read_index = len(self.in_events)
        if event.type == "CLOSE":
            self.close_code = close_code_of(payload_of(event))
            self.close_reason = (payload_of(event) or b"")[2:].decode("utf-8", "replace")
        else:
            self.disconnected = True
        return None

    # -- sending -------------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Queue a text message, as gripcontrol's ``send()`` does for ``str`` and ``bytes``
        alike; ``bytes`` that are not UTF-8 go as BINARY, since a browser fails the whole
        connection on a text frame that is not UTF-8 (RFC 6455 §8.1)."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            content = bytes(message)
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                self.send_binary(content)
                return
            self.out_events.append(WebSocketEvent("TEXT", MESSAGE_PREFIX + content))
        elif isinstance(message, str):
            self.out_events.append(WebSocketEvent("TEXT", MESSAGE_PREFIX + message.encode("utf-8")))
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

    def subscribe(self, channel: str, filters: Sequence[str] = ()) -> None:
        """Deliver what is published on ``channel`` to this connection (``GRIP_PREFIX``
        added), through the proxy's subscription ``filters`` if any (e.g. ``skip-users``,
        which compares the connection's ``user`` meta, set with :meth:`set_proxy_meta`,
        with an item's ``skip_users`` meta)."""
        control: dict[str, Any] = {"type": "subscribe", "channel": self._channel(channel)}
        if filters:
            control["filters"] = list(filters)
        self.send_control(control)

    def set_proxy_meta(self, name: str, value: str | None) -> None:
        """Set (or, with None, clear) the connection's meta where the proxy's filters read
        it. Pushpin keeps this apart from the meta of ``Set-Meta-*`` headers (``meta``
        here): its handler takes only the ``set-meta`` control message (1.36,
        handler/engine.cpp)."""
        control: dict[str, Any] = {"type": "set-meta", "name": name}
        if value is not None:
            control["value"] = value
        self.send_control(control)

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
        if timeout < 0:  # refused here rather than sent (as in protocol/instruct.py)
            raise ValueError(f"a keep-alive timeout must not be negative, not {timeout!r}")
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

