"""One client WebSocket, carried to the origin as WebSocket-over-HTTP ``POST`` requests.

Every batch of client events becomes one ``POST`` (``Content-Type:
application/websocket-events``) to the same path, with the handshake's headers, a
``Connection-Id`` and ``Meta-*`` headers (Pushpin 1.36; proxy/websocketoverhttp.cpp). One request
is in flight per connection; events that arrive meanwhile wait in a bounded queue and go in
the next batches.

A client that sends faster than the origin answers, or than it reads the answers itself, is
slowed down, never dropped: the origin gets the next batch only while fewer than
``max_queued_messages`` of its answers wait for the client, and while the queue to the origin
is full the client's socket is not read (TCP backpressure). Only publishes that a client does
not read can overflow its queue and close it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
import uuid
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol import (
    CONTROL_PREFIX,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    MAX_CHANNELS,
    MAX_CLOSE_REASON,
    MAX_WS_ANSWER_BODY,
    MESSAGE_PREFIX,
    WEBSOCKET_EVENTS,
    Channel,
    Item,
    MalformedEvents,
    RawHeaders,
    WebSocketEvent,
    close_code_of,
    close_payload,
    decode_events,
    dropped_by,
    encode_events,
    get_header,
    parse_header_list,
    sendable_close_code,
    set_meta,
    subscribed_filters,
    whole_number,
)
from .headers import loggable_target
from .keep_alive import keep_alive_delay
from .mailbox import Mailbox
from .origin import OriginError, OriginResponse, derive_scope, fetch, origin_headers

if TYPE_CHECKING:
    from ..protocol.instruct import KeepAliveMode
    from .app import GripProxy

__all__ = ["WebSocketSession"]

logger = logging.getLogger("drf_grip.proxy")

#: Set in the task of a handshake this proxy answered with an HTTP response (the ASGI
#: "websocket.http.response" extension). uvicorn's websockets-sansio protocol (its default
#: since 0.35) never counts such a handshake as complete, so after the response was sent
#: in full it logs "ASGI callable returned without completing handshake." at ERROR for
#: every refused Origin or unknown path (uvicorn 0.54, websockets_sansio_impl.run_asgi).
#: The message is logged in the same task, after this app returned: the filter below
#: drops it there, and only there.
_answered_over_http: ContextVar[bool] = ContextVar("drf_grip_ws_denied", default=False)
_HANDSHAKE_NOT_COMPLETED = "ASGI callable returned without completing handshake."


class _DeniedHandshakeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_answered_over_http.get() and record.msg == _HANDSHAKE_NOT_COMPLETED)


_denied_handshake_filter = _DeniedHandshakeFilter()

# Handshake headers Pushpin does not forward (websocketoverhttp.cpp, sanitizeRequestHeaders).
_NOT_FORWARDED = {b"upgrade", b"accept", b"connection-id", b"content-length", b"content-type"}
# Headers of the origin's first answer that are for the proxy, not for the client.
_NOT_RELAYED = {
    b"content-length", b"content-type", b"keep-alive-interval", b"connection", b"upgrade",
    b"transfer-encoding", b"date", b"server", b"sec-websocket-extensions",
    b"sec-websocket-protocol", b"sec-websocket-accept",
}
_ABNORMAL_CLOSE = 1006
_NO_STATUS = 1005


class _Closed(Exception):
    pass


@dataclass(frozen=True)
class _ClientKeepAlive:
    """What a ``keep-alive`` control message asks the proxy to send the client, as a text
    or a binary message, after ``timeout`` idle seconds (``idle``) or every ``timeout``
    seconds (``interval``)."""

    data: bytes
    binary: bool
    timeout: float
    mode: KeepAliveMode


def _reason(text: str) -> str:
    """A close reason cut to what a close frame holds: 123 bytes of UTF-8 (RFC 6455 §5.5)."""
    return text.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


def _is_events_answer(answer: OriginResponse) -> bool:
    """A 200 of exactly ``application/websocket-events``: Pushpin 1.36 compares the
    Content-Type byte for byte (proxy/websocketoverhttp.cpp), so one with a parameter
    (``; charset=utf-8``) is relayed as it is at the handshake and drops the connection
    after it."""
    return answer.status == 200 and get_header(answer.headers, "content-type") == WEBSOCKET_EVENTS


#: Pushpin 1.36's body for a handshake the origin did not accept (proxy/wsproxysession.cpp).
_PROXY_ERROR = b"Error while proxying to origin.\n"


class WebSocketSession:
    """A subscriber for ``ws-message`` items, and the bridge to the origin."""

    #: A connection's channel follows the channel's last id (``Subscriber``).
    follows_own_ids = False

    def __init__(self, proxy: GripProxy, scope: dict[str, Any], receive, send) -> None:
        self.proxy = proxy
        self.scope = scope
        self._receive = receive
        self._send = send
        self.path = loggable_target(scope["path"])  # for logs
        self.last_ids: dict[str, str] = {}
        self.connection_id = uuid.uuid4().hex
        #: Set by ``Set-Meta-*`` response headers, sent back as ``Meta-*`` headers.
        self.meta: dict[str, str] = {}
        #: Set by ``set-meta`` control messages, read by subscription filters only. Pushpin
        #: 1.36 keeps the two apart: the first is its proxy's (proxy/websocketoverhttp.cpp),
        #: the second its handler's (handler/engine.cpp, ``s->meta``), never sent to the origin.
        self.filter_meta: dict[str, str] = {}
        self._channels: set[str] = set()
        #: The filters each channel was subscribed with (``protocol/filters.py``).
        self._filters: dict[str, tuple[str, ...]] = {}
        self._grip = False
        self._prefix = MESSAGE_PREFIX
        self._detached = False
        self._keep_alive_interval: float | None = None
        # Pushpin 1.36 starts the keep-alive timer when an answer is in
        # (proxy/websocketoverhttp.cpp ``req_readyRead``: ``keepAliveTimer->start``).
        self._last_answer = time.monotonic()
        # Client -> origin: bounded; the reader waits for room (back-pressure on the socket).
        self._pending: deque[WebSocketEvent] = deque()
        self._pending_bytes = 0
        self._pending_wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._final: WebSocketEvent | None = None
        # The most answer bytes the client may have yet to read before the origin is asked
        # for more.
        self._answer_limit = proxy.max_origin_size
        # Origin and publishes -> client. Publishes are bounded and their overflow closes this
        # connection only; answers are bounded by not asking the origin for more while the
        # client has not read them (``_answers_read``).
        self._outbox: Mailbox[tuple[str, Any]] = Mailbox(
            proxy.max_queued_messages, self._answer_limit, on_overflow=self._overflowed
        )
        self._answers_read = asyncio.Event()
        self._answers_read.set()
        self._client_keep_alive: _ClientKeepAlive | None = None
        self._last_write = time.monotonic()
        self._done = asyncio.Event()
        self._admitted = False
        self._accepted = False
        self._client_gone = False
        # Whether _talk_to_origin runs (and will send the origin a final event).
        self._talking = False

    # -- subscriber interface ---------------------------------------------------------------

    def wants(self, item: Item) -> bool:
        if item.message is None:
            return False
        filters = self._filters.get(item.channel)
        return not (filters and dropped_by(filters, self.filter_meta, item.meta))

    def skips(self, item: Item) -> bool:
        return False  # a WebSocket's filters are read in ``wants``: it holds no prev-ids

    def deliver(self, item: Item) -> None:
        message = item.message
        assert message is not None
        if message.action == "close":
            self._outbox.put(("close", (message.code or 1000, _reason(message.reason))))
        elif message.action == "send" and message.kind in ("ping", "pong"):
            # Taken, as Pushpin 1.36 takes it, but not sent: ASGI has no ping or pong frames
            # (the server, uvicorn, pings on its own).
            pass
        elif message.action == "send":
            self._outbox.put(("binary" if message.binary else "text", message.content), item.size)
        # "hint" has no meaning for a WebSocket in Pushpin 1.36: ignored.

    def _overflowed(self) -> None:
        # Dropped, not waited for: a client that cannot keep up must not grow memory or
        # delay anyone else. Ending the session abandons a blocked send; the server then
        # drops the connection.
        logger.warning("%s: the client reads too slowly; dropping it", self.path)
        self._client_gone = True
        self._finish()

    def recover(self, channel: str, last_id: str | None) -> None:
        # A WebSocket has no request to repeat; the item is simply not delivered (as Pushpin).
        pass

    def wake(self) -> None:
        self._outbox.wake()
        self._pending_wake.set()
        self._answers_read.set()

    # -- origin requests --------------------------------------------------------------------

    def _origin_headers(self) -> RawHeaders:
        headers = [
            (k, v)
            for k, v in self.scope.get("headers", [])
            if k.lower() not in _NOT_FORWARDED and not k.lower().startswith(b"meta-")
        ]
        headers += [
            (b"accept", WEBSOCKET_EVENTS.encode()),
            (b"content-type", WEBSOCKET_EVENTS.encode()),
            (b"connection-id", self.connection_id.encode()),
        ]
        headers += [
            (f"meta-{name}".encode("latin-1"), value.encode("latin-1"))
            for name, value in self.meta.items()
        ]
        return origin_headers(headers, self.proxy.signer)

    async def _post(self, events: list[WebSocketEvent]) -> OriginResponse:
        scope = derive_scope(self.scope, headers=self._origin_headers(), method="POST")
        try:
            return await fetch(
                self.proxy.app,
                scope,
                encode_events(events),
                limit=MAX_WS_ANSWER_BODY,
                timeout=self.proxy.origin_timeout,
            )
        finally:
            self._last_answer = time.monotonic()

    def _answer_events(self, answer: OriginResponse) -> list[WebSocketEvent]:
        if not _is_events_answer(answer):
            content_type = get_header(answer.headers, "content-type") or "(no type)"
            raise OriginError(f"the origin answered {answer.status} {content_type}")
        try:
            events = decode_events(answer.body, short_close=True)
        except MalformedEvents as exc:
            raise OriginError(f"malformed websocket-events answer: {exc}") from None
        interval = get_header(answer.headers, "keep-alive-interval")
        if interval is not None:
            # Pushpin 1.36 keeps a whole number above 0, raised to 20; anything else (1.5,
            # abc, 0) turns keep-alives off (proxy/websocketoverhttp.cpp, ``toInt(&ok)``).
            seconds = whole_number(interval)
            self._keep_alive_interval = (
                max(seconds, self.proxy.min_ws_keep_alive)
                if seconds is not None and seconds > 0
                else None
            )
        for name, value in answer.headers:
            if name.lower().startswith(b"set-meta-") and len(name) > 9:
                key = name[9:].decode("latin-1").lower()
                if value:
                    self.meta[key] = value.decode("latin-1")
                else:
                    self.meta.pop(key, None)
        return events

    # -- events from the origin ---------------------------------------------------------------

    def _handle_events(self, events: list[WebSocketEvent]) -> None:
        for event in events:
            if event.type == "CLOSE":
                break
            if event.type in ("DISCONNECT", "OPEN"):
                # Pushpin 1.36 takes a DISCONNECT, or an OPEN once open, as an error of the
                # origin side (proxy/websocketoverhttp.cpp: ``disconnected`` -> ``error``)
                # and deletes the client's socket without a close frame (proxy/
                # wsproxysession.cpp ``out_error`` -> ``cleanupInSock``): the client sees
                # 1006, the origin hears nothing more, and the messages of this answer never
                # leave (the socket's writes were queued, corelib/zwebsocket.cpp ``update``).
                self._outbox.put(("drop", None))
                return
        for event in events:
            content = event.payload or b""
            if event.type in ("TEXT", "BINARY"):
                if self._grip:
                    if event.type == "TEXT" and content.startswith(CONTROL_PREFIX):
                        self._control(content[2:])
                        continue
                    if not content.startswith(self._prefix):
                        continue  # Pushpin 1.36: without the prefix, dropped
                    content = content[len(self._prefix) :]
                if len(content) > self.proxy.max_origin_size:
                    logger.warning("%s: origin message over the size limit dropped", self.path)
                    continue
                kind = "text" if event.type == "TEXT" else "binary"
                self._outbox.put((kind, content), len(content), owed=True)
            elif event.type == "CLOSE":
                code = close_code_of(event.payload)
                reason = _reason((event.payload or b"")[2:].decode("utf-8", "replace"))
                self._outbox.put(("close", (code, reason)), owed=True)
                break  # Pushpin 1.36 reads no event after a CLOSE (websocketoverhttp.cpp)
            # OPEN (already handled), PING, PONG: ASGI has no ping frames, so an origin's
            # PING never reaches the client (Pushpin 1.36 sends it, and posts the client's
            # pings and pongs to the origin); the server (uvicorn) answers and sends its own.

    def _control(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: malformed control message from the origin", self.path)
            return
        if kind == "subscribe":
            channel = message.get("channel")
            if not isinstance(channel, str) or not channel:
                return
            if channel not in self._channels and len(self._channels) >= MAX_CHANNELS:
                logger.warning(
                    "%s: more than %d channels; %s ignored", self.path, MAX_CHANNELS, channel
                )
                return
            if filters := subscribed_filters(message):
                self._filters[channel] = filters
            else:
                self._filters.pop(channel, None)
            self._channels.add(channel)
            self.proxy.hub.subscribe(self, Channel(channel, None))
        elif kind == "unsubscribe":
            channel = message.get("channel")
            if isinstance(channel, str) and channel in self._channels:
                self._channels.discard(channel)
                self._filters.pop(channel, None)
                self.proxy.hub.unsubscribe(self, channel)
        elif kind == "detach":
            self._detached = True
        elif kind == "set-meta":
            set_meta(self.filter_meta, message)
        elif kind == "keep-alive":
            self._set_client_keep_alive(message)
        else:
            logger.debug("%s: control message %r not supported", self.path, kind)

    def _set_client_keep_alive(self, message: dict[str, Any]) -> None:
        # Pushpin 1.36 (handler/wscontrolmessage.cpp, handler/engine.cpp ``KeepAlive``):
        # a negative timeout or an unreadable one makes the message invalid, and it is
        # dropped; a timeout in a string is read as a number; none, or 0, is 55 s; without
        # content keep-alives are off; any mode but "interval" is "idle". A fraction is
        # rounded (run against it: 1.6 is 2 s, 0.4 is 55 s).
        kind = message.get("message-type", "text")
        if kind not in ("text", "binary", "ping", "pong"):
            return
        if kind in ("ping", "pong") or ("content" not in message and "content-bin" not in message):
            # Off; ping and pong too: uvicorn pings on its own (ws_ping_interval).
            self._client_keep_alive = None
            return
        timeout = message.get("timeout", 0)
        if isinstance(timeout, str):
            timeout = whole_number(timeout) or 0
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            return
        timeout = math.floor(timeout + 0.5)
        if timeout < 0:
            return
        if "content-bin" in message:
            try:
                data = base64.b64decode(str(message["content-bin"]), validate=True)
            except (binascii.Error, ValueError):
                logger.warning("%s: keep-alive content-bin is not base64", self.path)
                return
        else:
            data = str(message["content"]).encode("utf-8")
        seconds = float(timeout) or DEFAULT_KEEP_ALIVE_TIMEOUT
        mode: KeepAliveMode = "interval" if message.get("mode") == "interval" else "idle"
        self._client_keep_alive = _ClientKeepAlive(data, kind == "binary", seconds, mode)
        self._next_keep_alive = time.monotonic() + self._keep_alive_delay()
        self._outbox.wake()

    def _keep_alive_delay(self) -> float:
        assert self._client_keep_alive is not None
        return keep_alive_delay(self._client_keep_alive.timeout)

    # -- the connection ---------------------------------------------------------------------

    async def _deny(self, status: int, headers: RawHeaders, body: bytes) -> None:
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            _answered_over_http.set(True)
            logging.getLogger("uvicorn.error").addFilter(_denied_handshake_filter)  # once
            drop = (b"content-length", b"connection")
            headers = [(k, v) for k, v in headers if k.lower() not in drop]
            headers.append((b"content-length", str(len(body)).encode()))
            await self._send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await self._send({"type": "websocket.http.response.body", "body": body})
        else:
            await self._send({"type": "websocket.close", "code": 1008})

    async def run(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.proxy.closing or not self.proxy.admit(self):
                await self._deny(
                    503,
                    [(b"content-type", b"text/plain; charset=utf-8")],
                    b"Service Unavailable: the drf-grip embedded proxy holds its maximum of "
                    b"connections (EMBEDDED_MAX_HELD)\n",
                )
                return
            self._admitted = True
            # Pushpin 1.36 relays an answer to the handshake that is not 200 of type
            # application/websocket-events as it is, a 200 too (proxy/websocketoverhttp.cpp
            # ``ErrorRejected``, body cut at REJECT_BODY_MAX); anything else that does not
            # open (no OPEN first, malformed events, no answer) is its own 502 with no
            # Content-Type (proxy/wsproxysession.cpp ``reject``, ``out_error``).
            while True:
                try:
                    answer = await self._post([WebSocketEvent("OPEN")])
                except OriginError as exc:
                    logger.warning("%s: origin error on WebSocket open: %s", self.path, exc)
                    await self._deny(502, [], _PROXY_ERROR)
                    return
                if not _is_events_answer(answer):
                    headers = [
                        (k, v) for k, v in answer.headers if not k.lower().startswith(b"grip-")
                    ]
                    await self._deny(answer.status, headers, answer.body[:100_000])
                    return
                try:
                    events = self._answer_events(answer)
                except OriginError:
                    events = None
                if events or events is None or not self._keep_alive_interval:
                    break
                # "server must respond with events or enable keep alive": with keep-alives
                # on, an answer with no events leaves the handshake waiting, and the
                # keep-alive call posts OPEN again (Pushpin 1.36, proxy/websocketoverhttp.cpp,
                # ``update`` while ``Connecting``), with no bound while the client waits (run
                # against it: 30 calls in 600 s). Once the client left, Pushpin posted OPEN
                # again without pause, about 1,000 a second; here the calls end.
                if not await self._client_waits(self._keep_alive_interval):
                    if self.proxy.closing:
                        await self._deny(502, [], _PROXY_ERROR)
                    return
            if not events or events[0].type != "OPEN":
                await self._deny(502, [], _PROXY_ERROR)
                return
            await self._accept(answer)
            self._handle_events(events[1:])
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._read_client()),
                loop.create_task(self._talk_to_origin()),
                loop.create_task(self._write_client()),
            ]
            await self._done.wait()
        finally:
            self._free()
            for task in tasks:
                task.cancel()
            if self._admitted:
                self.proxy.release(self)

    async def _client_waits(self, seconds: float) -> bool:
        """Whether a client whose handshake waits is still there after ``seconds``: False
        when it left meanwhile, or the proxy shuts down (``wake``)."""
        left = asyncio.ensure_future(self._receive())  # before accept: only a disconnect
        woken = asyncio.ensure_future(self._pending_wake.wait())
        try:
            await asyncio.wait({left, woken}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            woken.cancel()
        return not (left.done() and not left.cancelled()) and not self.proxy.closing

    async def _accept(self, answer: OriginResponse) -> None:
        offered = get_header(answer.headers, "sec-websocket-extensions") or ""
        extensions = parse_header_list([offered])
        for name, params in extensions:
            if name.strip().lower() == "grip":
                self._grip = True
                if "message-prefix" in params:
                    self._prefix = params["message-prefix"].encode("utf-8")
        relayed = [
            (k, v)
            for k, v in answer.headers
            if k.lower() not in _NOT_RELAYED
            and not k.lower().startswith((b"grip-", b"set-meta-"))
        ]
        subprotocol = get_header(answer.headers, "sec-websocket-protocol")
        client_offers = self.scope.get("subprotocols", ())
        if subprotocol is not None and subprotocol.strip() not in client_offers:
            # A subprotocol the client did not offer would fail its handshake (RFC 6455 §4.1).
            logger.warning(
                "%s: origin chose subprotocol %r the client did not offer", self.path, subprotocol
            )
            subprotocol = None
        await self._send(
            {
                "type": "websocket.accept",
                "subprotocol": subprotocol.strip() if subprotocol else None,
                "headers": relayed,
            }
        )
        self._accepted = True
        self._last_write = time.monotonic()

    def _free(self) -> None:
        """Drop every subscription at once (a closed socket must not hold channels)."""
        self.proxy.hub.unsubscribe_all(self, self._channels)
        self._channels.clear()

    def _finish(self) -> None:
        self._free()
        self._answers_read.set()
        self._done.set()

    async def _read_client(self) -> None:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    # A client's close frame was already answered by the server, with the
                    # client's own code, before this message: every uvicorn WebSocket
                    # protocol echoes it (websockets' Protocol.recv_frame, wsproto's
                    # event.response()). Pushpin 1.36 instead answers with the origin's
                    # CLOSE, or drops the client when the answer has none (proxy/
                    # websocketoverhttp.cpp); here the origin's answer reaches no one.
                    code = message.get("code", _ABNORMAL_CLOSE)
                    self._client_gone = True
                    self._free()
                    if code == _ABNORMAL_CLOSE or code is None:
                        self._final = WebSocketEvent("DISCONNECT")
                    elif code == _NO_STATUS:
                        # A close frame without a code (RFC 6455 §7.1.5: "received" as 1005,
                        # which no frame may carry): a close, as Pushpin 1.36 tells the
                        # origin, with no payload, which reads as 1000. It was "went away".
                        self._final = WebSocketEvent("CLOSE")
                    else:
                        reason = _reason(message.get("reason") or "")
                        self._final = WebSocketEvent("CLOSE", close_payload(int(code), reason))
                    self._pending_wake.set()
                    self._answers_read.set()
                    return
                if message["type"] != "websocket.receive":
                    continue
                if message.get("text") is not None:
                    event = WebSocketEvent("TEXT", message["text"].encode("utf-8"))
                else:
                    event = WebSocketEvent("BINARY", message.get("bytes") or b"")
                size = len(event.payload or b"")
                if size > self.proxy.max_message_size:
                    logger.warning("%s: client message of %d bytes over the limit", self.path, size)
                    self._outbox.put(("close", (1009, "")))
                    return
                await self._queue_for_origin(event, size)
        except Exception:  # noqa: BLE001 - a broken transport ends the connection
            self._client_gone = True
            self._final = WebSocketEvent("DISCONNECT")
            self._pending_wake.set()
            self._answers_read.set()

    def _pending_full(self, size: int) -> bool:
        limit = max(self.proxy.max_message_size, 1 << 20)
        return bool(self._pending) and (
            self._pending_bytes + size > limit
            or len(self._pending) >= self.proxy.max_queued_messages
        )

    async def _queue_for_origin(self, event: WebSocketEvent, size: int) -> None:
        # While the queue is full the client's socket is not read: uvicorn reads the next
        # frame only when the app asks for it (websockets_sansio_impl: pause_reading after
        # each message), so the client's sends back up in TCP instead of in memory here.
        while self._pending_full(size):
            self._room.clear()
            await self._room.wait()
        if not self._detached:
            self._pending.append(event)
            self._pending_bytes += size
            self._pending_wake.set()

    async def _talk_to_origin(self) -> None:
        self._talking = True
        try:
            while True:
                if self._final is not None:
                    # Detached or not, the origin hears of the close (Pushpin 1.36 too).
                    batch = [] if self._detached else list(self._pending)
                    self._pending.clear()
                    try:
                        await self._post(batch + [self._final])
                    except OriginError as exc:
                        logger.info("%s: final event not delivered: %s", self.path, exc)
                    self._finish()
                    return
                if self.proxy.closing:
                    return
                if self._pending and not self._detached:
                    if self._answers_unread():
                        self._answers_read.clear()  # set by the writer, or on the way out
                        await self._answers_read.wait()
                        continue
                    await self._exchange(self._next_batch())
                    continue
                if self._detached:
                    self._pending.clear()
                    self._pending_bytes = 0
                    self._room.set()
                timeout = None
                if self._keep_alive_interval and not self._detached:
                    timeout = self._last_answer + self._keep_alive_interval - time.monotonic()
                    if timeout <= 0:
                        await self._exchange([])
                        continue
                self._pending_wake.clear()
                try:
                    await asyncio.wait_for(self._pending_wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        except _Closed:
            if self._client_gone:
                self._finish()
        finally:
            self._talking = False

    def _answers_unread(self) -> bool:
        """Whether the client has yet to read so many answers that the origin must wait."""
        return (
            self._outbox.owed_items >= self.proxy.max_queued_messages
            or self._outbox.owed_bytes >= self._answer_limit
        )

    def _next_batch(self) -> list[WebSocketEvent]:
        # A few events per request: the origin answers a whole batch in one body that must
        # stay within MAX_WS_ANSWER_BODY, and Django runs it as one request (one thread, one
        # DATA_UPLOAD_MAX_MEMORY_SIZE), so a burst of thousands becomes many small requests.
        count = min(len(self._pending), max(1, int(self.proxy.ws_events_per_request)))
        batch = [self._pending.popleft() for _ in range(count)]
        self._pending_bytes -= sum(len(event.payload or b"") for event in batch)
        self._room.set()
        return batch

    async def _exchange(self, batch: list[WebSocketEvent]) -> None:
        try:
            answer = await self._post(batch)
            events = self._answer_events(answer)
        except OriginError as exc:
            # Pushpin 1.36 drops the client's connection, no close frame (proxy/
            # wsproxysession.cpp ``out_error`` once connected); it was a close with 1011.
            logger.warning("%s: origin error, dropping the WebSocket: %s", self.path, exc)
            self._outbox.put(("drop", None))
            raise _Closed from None
        self._handle_events(events)

    async def _write_client(self) -> None:
        try:
            await self._write_client_until_done()
        except Exception:  # noqa: BLE001 - the client is gone (uvicorn: ClientDisconnected)
            # Ended here, or the session waited for ever: its reader may be parked until
            # the origin makes room, and the origin for the answers this writer sends (a
            # client that sent 2,000 messages and closed without reading stayed held).
            self._client_gone = True
            self._final = self._final or WebSocketEvent("DISCONNECT")
            self._pending_wake.set()
            self._finish()

    async def _write_client_until_done(self) -> None:
        while True:
            if self._client_gone:
                return
            if self.proxy.closing:
                await self._close_client(1001)
                return
            entry = self._outbox.pop()
            if entry is not None:
                if not self._answers_read.is_set() and not self._answers_unread():
                    self._answers_read.set()
                kind, value = entry
                if kind == "drop":
                    # Returning without a websocket.close: the ASGI server closes the
                    # transport, no close frame (uvicorn: ``transport.close()``).
                    self._client_gone = True
                    self._finish()
                    return
                if kind == "close":
                    await self._close_client(*value)
                    return
                if kind == "text":
                    text = value.decode("utf-8", "replace")
                    await self._send({"type": "websocket.send", "text": text})
                else:
                    await self._send({"type": "websocket.send", "bytes": value})
                self._last_write = time.monotonic()
                # Idle mode sets the timer afresh on every message to the client
                # (proxy/wsproxysession.cpp ``adjustKeepAlive``).
                if self._client_keep_alive is not None and self._client_keep_alive.mode == "idle":
                    self._next_keep_alive = self._last_write + self._keep_alive_delay()
                continue
            timeout = None
            keep_alive = self._client_keep_alive
            if keep_alive is not None:
                now = time.monotonic()
                if now >= self._next_keep_alive:
                    key = "bytes" if keep_alive.binary else "text"
                    data = keep_alive.data
                    value = data if keep_alive.binary else data.decode("utf-8", "replace")
                    await self._send({"type": "websocket.send", key: value})
                    self._last_write = now
                    self._next_keep_alive = now + self._keep_alive_delay()
                    continue
                timeout = self._next_keep_alive - now
            await self._outbox.wait(timeout)

    async def _close_client(self, code: int, reason: str = "") -> None:
        # An origin's CLOSE may carry any two bytes (gripcontrol's close(100)): the ASGI
        # server refused a forbidden one and dropped the connection without a close frame.
        code = sendable_close_code(code)
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._client_gone = True
        if not self._talking or self.proxy.closing:
            self._finish()
            return
        # A close the origin or a publish asked for is told to the origin as a CLOSE event,
        # as Pushpin 1.36 does once the client answered it: a view's close handling (its
        # state, django-pistoke's websocket_close) runs whoever closed.
        self._free()
        self._final = self._final or WebSocketEvent("CLOSE", close_payload(code, reason))
        self._pending_wake.set()
        self._answers_read.set()
