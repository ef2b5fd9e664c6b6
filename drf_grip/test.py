"""A test kit for drf-grip users, in the spirit of ``rest_framework.test``.

``WebSocketTestClient`` drives WebSocket views and the gateway in-process, without a proxy,
by playing the GRIP proxy's part of WebSocket-over-HTTP: each ``send()`` is a signed ``POST``
of ``application/websocket-events`` with the connection's ``Connection-Id`` and ``Meta-*``
headers; control messages (``subscribe``, ``unsubscribe``, ``set-meta``, ``detach``) are
applied locally; and what this process publishes reaches subscribed test connections through
a local sink (``drf_grip.grip.destinations.register_local_sink``), so a model change reaches the
socket as it would behind Pushpin::

    client = WebSocketTestClient()
    client.force_login(user)            # a Django test client: login, cookies, credentials()
    ws = client.connect("/api/ws/")
    ws.send_json({"id": 1, "subscribe": "/api/todos/"})
    assert ws.receive_json()["status"] == 200
    Todo.objects.create(title="new")
    assert ws.receive_json()["event"] == "change"
    ws.close()

For HTTP, ``GripAPIClient`` is DRF's ``APIClient`` whose requests arrive as if a GRIP proxy
forwarded them, and whose responses carry ``response.grip`` (the hold the view asked for);
``capture_published()`` collects what this process publishes, like ``django.core.mail.outbox``::

    client = GripAPIClient()
    etag = client.get("/api/todos/")["ETag"]
    held = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag)
    assert_held(held)
    with capture_published() as outbox:
        Todo.objects.create(title="new")
        wait_published()
    assert held.grip.channels[0] in outbox.channels

Publishes run after commit on background threads: use
``@pytest.mark.django_db(transaction=True)`` (or ``TransactionTestCase``) for tests that wait
for change messages, or run the commit callbacks with ``captureOnCommitCallbacks(execute=True)``
(pytest-django: ``django_capture_on_commit_callbacks``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from .conf import embedded_key, grip_settings
from .grip.destinations import register_local_sink, targets, unregister_local_sink
from .grip.items import channel_name, reaches_clients
from .grip.publisher import get_publisher
from .grip.transports import SinkTarget
from .protocol import (
    CONTROL_PREFIX,
    EMBEDDED_ISSUER,
    WEBSOCKET_EVENTS,
    MessageFormat,
    RawItem,
    WebSocketEvent,
    decode_events,
    dropped_by,
    encode_events,
    parse_items,
    set_meta,
    subscribed_filters,
)
from .protocol.signing import hs256_encode, is_public_key
from .rest.change_worker import wait_idle

__all__ = [
    "ConnectionClosed",
    "GripAPIClient",
    "GripInstruction",
    "Outbox",
    "WebSocketConnection",
    "WebSocketTestClient",
    "assert_held",
    "assert_not_held",
    "capture_published",
    "grip_signature",
    "reset_realtime_state",
    "wait_published",
]


def grip_signature() -> str:
    """A ``Grip-Sig`` the app trusts: the first configured proxy's key, else the embedded
    proxy's (the default when no ``GRIP_URL`` is set)."""
    claims: dict[str, Any] = {"exp": int(time.time()) + 600}
    for endpoint in grip_settings.proxies:
        key = endpoint.key
        if key and not is_public_key(key):  # Fanout's public key verifies, cannot sign
            if endpoint.verify_iss:
                claims["iss"] = endpoint.verify_iss
            return hs256_encode(claims, key)
    claims["iss"] = EMBEDDED_ISSUER
    return hs256_encode(claims, embedded_key())


class _SocketSink:
    """The test kit's local sink: each published ``ws-message`` goes at once, from the
    publisher's thread, to every test socket subscribed to its channel.

    Not the embedded proxy's ``ChannelHub`` (``drf_grip/proxy/hub.py``), which models a proxy
    on its event loop: prev-id sequencing, duplicate drops, counts to wait on. Here a test
    socket gets every message published to its channels while it is open, unless the
    filters it subscribed with drop it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: set[WebSocketConnection] = set()

    def publish_items(self, items: list[RawItem]) -> None:
        # Read as any proxy reads them (a bad batch raises InvalidItem, as the embedded proxy's
        # sink does; the publisher logs it).
        parsed = parse_items(list(items))
        with self.lock:
            connections = list(self.connections)
        for item in parsed:
            if item.message is None:
                continue
            for connection in connections:
                if item.channel in connection.channels and not connection._filtered(item):
                    connection._deliver_published(item.message)

    def add(self, connection: WebSocketConnection) -> None:
        with self.lock:
            first = not self.connections
            self.connections.add(connection)
        if first:
            register_local_sink(self)

    def remove(self, connection: WebSocketConnection) -> None:
        with self.lock:
            self.connections.discard(connection)
            last = not self.connections
        if last:
            unregister_local_sink(self)


_sockets = _SocketSink()


class ConnectionClosed(Exception):
    """What :meth:`WebSocketConnection.receive` raises once the connection is closed and
    every message it got has been read: ``code`` and ``reason`` of the close."""

    def __init__(self, path: str, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        said = f" ({reason})" if reason else ""
        super().__init__(f"the WebSocket at {path} is closed: code {code}{said}")


class WebSocketConnection:
    """One emulated client WebSocket; see ``WebSocketTestClient.connect``."""

    def __init__(self, client: WebSocketTestClient, path: str, headers: dict[str, str]) -> None:
        self.client = client
        self.path = path
        self.headers = headers
        self.connection_id = uuid.uuid4().hex
        #: Set by ``Set-Meta-*`` answer headers, sent back as ``Meta-*`` headers.
        self.meta: dict[str, str] = {}
        #: Set by ``set-meta`` control messages, read by subscription filters only (Pushpin
        #: 1.36 keeps the two apart: proxy/websocketoverhttp.cpp, handler/engine.cpp).
        self.filter_meta: dict[str, str] = {}
        self.channels: set[str] = set()
        #: The filters each channel was subscribed with (``protocol/filters.py``).
        self._filters: dict[str, tuple[str, ...]] = {}
        #: The handshake's answer (the refused one, or the accepting one).
        self.response: Any = None
        self.accepted = False
        self.closed = False
        #: The close code and reason the server sent, once it closed the connection.
        self.close_code: int | None = None
        self.close_reason = ""
        self.subprotocol: str | None = None
        self.keep_alive_interval: int | None = None
        self.detached = False
        self._grip = False
        self._inbox: queue.Queue[str | bytes] = queue.Queue()
        self._client_closing = False
        # The CLOSE event the origin is owed for a close the server made (see _tell_origin).
        self._owed_close: WebSocketEvent | None = None

    def __repr__(self) -> str:
        return f"<WebSocketConnection {self.path} {self.connection_id}>"

    @property
    def status_code(self) -> int | None:
        return None if self.response is None else self.response.status_code

    # -- the proxy's side -----------------------------------------------------------------

    def _post(self, events: Iterable[WebSocketEvent]) -> Any:
        extra: dict[str, Any] = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in self.headers.items()}
        # Set explicitly: Django's test client leaves it out of an empty body (keep-alive).
        extra["CONTENT_TYPE"] = WEBSOCKET_EVENTS
        extra["HTTP_CONNECTION_ID"] = self.connection_id
        extra["HTTP_GRIP_SIG"] = grip_signature()
        for name, value in self.meta.items():
            extra["HTTP_META_" + name.upper().replace("-", "_")] = value
        return self.client.generic(
            "POST", self.path, encode_events(list(events)), content_type=WEBSOCKET_EVENTS, **extra
        )

    def _exchange(self, events: list[WebSocketEvent]) -> None:
        if self.closed:
            raise RuntimeError("the connection is closed")
        response = self._post(events)
        if response.status_code != 200 or response.get("Content-Type") != WEBSOCKET_EVENTS:
            # Pushpin drops the connection on anything else.
            self._close(1006)
            return
        self._apply(response)
        self._tell_origin()

    def _apply(self, response: Any) -> None:
        for name, value in response.items():
            if name.lower().startswith("set-meta-"):
                key = name[9:].lower()
                if value:
                    self.meta[key] = value
                else:
                    self.meta.pop(key, None)
        if response.has_header("Keep-Alive-Interval"):
            self.keep_alive_interval = int(response["Keep-Alive-Interval"])
        for event in decode_events(response.content):
            content = event.payload or b""
            if event.type in ("TEXT", "BINARY"):
                if self._grip:
                    if event.type == "TEXT" and content.startswith(CONTROL_PREFIX):
                        self._control(json.loads(content[2:]))
                        continue
                    if not content.startswith(b"m:"):
                        continue  # Pushpin drops unprefixed messages
                    content = content[2:]
                self._inbox.put(content.decode("utf-8") if event.type == "TEXT" else content)
            elif event.type == "CLOSE":
                code = struct.unpack(">H", content[:2])[0] if len(content) >= 2 else 1000
                self._close(code, content[2:].decode("utf-8", "replace"), owed=True)
            elif event.type == "DISCONNECT":
                self._close(1006)

    def _control(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self.channels.add(message["channel"])
            if filters := subscribed_filters(message):
                self._filters[message["channel"]] = filters
            else:
                self._filters.pop(message["channel"], None)
        elif kind == "unsubscribe":
            self.channels.discard(message["channel"])
            self._filters.pop(message["channel"], None)
        elif kind == "set-meta":
            set_meta(self.filter_meta, message)
        elif kind == "detach":
            self.detached = True

    def _filtered(self, item: Any) -> bool:
        """Whether the filters its channel was subscribed with drop ``item``, as a proxy's
        do: the gateway's ``skip-users`` keeps a change made right after a subscribe from
        coming twice, as the channel's push and as the answer's settle (test-kit probe)."""
        filters = self._filters.get(item.channel)
        return bool(filters) and dropped_by(filters, self.filter_meta, item.meta)

    def _deliver_published(self, message: MessageFormat) -> None:
        if message.action == "close":
            # From the publisher's thread: the origin is told from the test's (_tell_origin).
            self._close(message.code or 1000, message.reason, owed=True)
        elif message.action == "send" and message.kind not in ("ping", "pong"):
            self._inbox.put(message.content if message.binary else message.content.decode())
        # "hint" means nothing to a WebSocket (Pushpin 1.36): ignored, as the proxy does; a
        # ping or pong is a frame, not a message to receive.

    def _open(self) -> WebSocketConnection:
        response = self._post([WebSocketEvent("OPEN")])
        self.response = response
        if response.status_code != 200 or response.get("Content-Type") != WEBSOCKET_EVENTS:
            self.closed = True
            return self
        events = decode_events(response.content)
        if not events or events[0].type != "OPEN":
            self.closed = True
            return self
        self.accepted = True
        self._grip = "grip" in response.get("Sec-WebSocket-Extensions", "")
        self.subprotocol = response.get("Sec-WebSocket-Protocol")
        _sockets.add(self)
        self._apply(response)
        return self

    def _close(self, code: int, reason: str = "", *, owed: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            self.channels.clear()
            _sockets.remove(self)
            if owed and not self._client_closing:
                # Pushpin 1.36 sends the origin a CLOSE event after a close the view or a
                # publish made, as after one the client made: the view's close handling runs.
                payload = struct.pack(">H", code) + reason.encode("utf-8")
                self._owed_close = WebSocketEvent("CLOSE", payload)

    def _tell_origin(self) -> None:
        """Send the origin the CLOSE event it is owed, once, from the test's thread: after
        the exchange that closed, and at the next receive or close of this connection."""
        owed, self._owed_close = self._owed_close, None
        if owed is not None:
            self._post([owed])

    # -- the client's side ----------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message; its answers are queued."""
        if self.detached:
            return
        kind = "TEXT" if isinstance(message, str) else "BINARY"
        content = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        self._exchange([WebSocketEvent(kind, content)])

    def send_json(self, data: Any) -> None:
        self.send(json.dumps(data))

    def keep_alive(self) -> None:
        """What the proxy does every ``Keep-Alive-Interval`` seconds: an empty request."""
        self._exchange([])

    def receive(self, timeout: float = 2.0) -> str | bytes:
        """The next message; ``TimeoutError`` if none arrives within ``timeout`` seconds
        (publishes of this process are waited for first)."""
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            pass
        _settle(timeout, sockets_only=True)
        try:
            return self._inbox.get(timeout=0 if self.closed else timeout)
        except queue.Empty:
            self._tell_origin()
            if self.closed:
                # It waited out the timeout and said only that (a test-kit probe).
                raise ConnectionClosed(self.path, self.close_code, self.close_reason) from None
            raise TimeoutError(f"no message on {self.path} within {timeout} s") from None

    def receive_json(self, timeout: float = 2.0) -> Any:
        message = self.receive(timeout)
        return json.loads(message)

    def receive_nothing(self, timeout: float = 0.2) -> bool:
        """True if no message is waiting after ``timeout`` seconds (and pending publishes)."""
        if not self._inbox.empty():
            return False
        _settle(max(timeout, 1.0), sockets_only=True)
        time.sleep(timeout)
        self._tell_origin()
        return self._inbox.empty()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client's side (the server sees a CLOSE event)."""
        if self.closed:
            self._tell_origin()
            return
        payload = struct.pack(">H", code) + reason.encode("utf-8")
        self._client_closing = True
        try:
            self._exchange([WebSocketEvent("CLOSE", payload)])
        finally:
            self._close(code)

    def disconnect(self) -> None:
        """The client goes away without a close handshake (a DISCONNECT event)."""
        if not self.closed:
            try:
                self._post([WebSocketEvent("DISCONNECT")])
            finally:
                self._close(1006)

    def __enter__(self) -> WebSocketConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _settle(timeout: float, *, sockets_only: bool = False) -> bool:
    """Wait until committed changes are handed to the publisher, then until it has sent
    them (``sockets_only``: to the test sockets); False if that took longer than
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    if not wait_idle(timeout):
        return False
    # Only where items go now: inside a capture that keeps them in the process, a proxy
    # that a module fixture's changes went to before it opened (none runs in a test, so
    # they are retried for a minute) is not this test's to wait for; waiting, the test's
    # wait_published() raised TimeoutError (a test-kit probe).
    now = targets()
    if sockets_only:
        # A test socket's messages come from the local sink alone. With GRIP_URL naming a
        # proxy that is not running (a CI job without Pushpin), waiting for that one too
        # made every receive() take its whole timeout (seeds probe).
        now = [t for t in now if isinstance(t, SinkTarget) and t.sink is _sockets]
    return get_publisher().flush(max(0.0, deadline - time.monotonic()), now)


def reset_realtime_state(timeout: float = 10.0) -> None:
    """Start a test afresh: wait until changes committed so far are handed to the
    publisher (so none lands in the next outbox), then forget drf-grip's realtime state —
    versions, live URLs and their cap, recorded policies, hold counts, gateway
    subscriptions — as ``cache.clear()`` would, but leaving the rest of the cache alone.
    It needs a state cache private to the process (``LocMemCache``, the usual test cache,
    or none); with one shared by processes (Redis, a file, the database) it raises
    ``RuntimeError``: clear that one yourself."""
    from .rest.buckets import holds_counted_here
    from .rest.store import forget_state

    wait_idle(timeout)
    if not forget_state():
        raise RuntimeError(
            "reset_realtime_state() needs a state cache private to this process "
            "(DRF_GRIP['VERSION_CACHE'] a LocMemCache); clear a shared one yourself"
        )
    holds_counted_here()


def wait_published(timeout: float = 10.0) -> None:
    """Return once every change committed so far is published (rendered, and delivered to
    the proxy, the embedded proxy or ``capture_published()``); ``TimeoutError`` after
    ``timeout`` seconds.

    Changes publish after commit: in a test whose transaction never commits (pytest-django's
    plain ``django_db``, Django's ``TestCase``) there is nothing to wait for.
    """
    if not _settle(timeout):
        raise TimeoutError(f"changes were not published within {timeout} s")


# -- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GripInstruction:
    """What a response asks of the GRIP proxy (its ``Grip-*`` headers), read as the proxy
    reads them. Channel names are without ``GRIP_PREFIX``."""

    #: ``"response"`` (a held long-poll), ``"stream"``, or None (answered at once).
    hold: str | None = None
    channels: list[str] = field(default_factory=list)
    #: The ``prev-id`` each channel was subscribed with (its version when the GET started).
    prev_ids: dict[str, str | None] = field(default_factory=dict)
    #: Seconds a long-poll is held (``Grip-Timeout``); None for the proxy's default.
    timeout: float | None = None
    #: The status the proxy answers with when the hold ends without a publish.
    status: int | None = None
    #: A stream's next link: the URL the proxy fetches for the next events.
    next_link: str | None = None

    @property
    def held(self) -> bool:
        return self.hold is not None

    @classmethod
    def of(cls, response: Any) -> GripInstruction:
        from .protocol import parse_instruct

        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
        parsed = parse_instruct(raw)
        prefix = grip_settings.prefix

        def name(channel: str) -> str:
            return channel[len(prefix):] if prefix and channel.startswith(prefix) else channel

        return cls(
            hold=parsed.hold,
            channels=[name(c.name) for c in parsed.channels],
            prev_ids={name(c.name): c.prev_id for c in parsed.channels},
            timeout=parsed.timeout,
            status=parsed.status[0] if parsed.status else None,
            next_link=parsed.next_link.uri if parsed.next_link else None,
        )


class GripAPIClient(APIClient):
    """DRF's ``APIClient`` whose requests arrive as proxied: each carries a valid
    ``Grip-Sig`` for the configured proxy (the embedded proxy's when no ``GRIP_URL`` is set),
    so views hold and stream as they do behind Pushpin. Each response has ``.grip``, a
    :class:`GripInstruction`.

    Nothing is held for real: a held request answers at once with the response the proxy
    would keep (``304`` for a long-poll, the first events for a stream); the next request
    with the same ETag is what the proxy sends when a change wakes it.
    """

    def request(self, **kwargs: Any) -> Any:
        kwargs.setdefault("HTTP_GRIP_SIG", grip_signature())
        return _as_the_proxy_keeps(super().request(**kwargs))


def _as_the_proxy_keeps(response: Any) -> Any:
    """``response`` with ``.grip`` (a :class:`GripInstruction`), and a held long-poll with
    the status the proxy answers its client with (``Grip-Status``): the origin holds it as
    a ``200`` (``GripMiddleware``), because some servers strip a ``304``'s other headers."""
    response.grip = grip = GripInstruction.of(response)
    if grip.hold == "response" and grip.status and response.status_code == 200:
        response.status_code = grip.status
        try:
            response.reason_phrase = HTTPStatus(grip.status).phrase
        except ValueError:  # a status Python does not name
            response.reason_phrase = ""
    return response


def _instruction(response: Any) -> GripInstruction:
    grip = getattr(response, "grip", None)
    return grip if isinstance(grip, GripInstruction) else GripInstruction.of(response)


def assert_held(
    response: Any,
    channels: Iterable[str] | str | None = None,
    *,
    stream: bool = False,
    timeout: float | None = None,
) -> GripInstruction:
    """Assert that the proxy would hold ``response``: a long-poll (or, with ``stream=True``,
    a stream) subscribed to at least ``channels`` (one channel's name, or several), held
    ``timeout`` seconds if given."""
    if isinstance(channels, str):
        channels = [channels]  # its letters were checked one by one (test-kit probe)
    grip = _instruction(response)
    expected = "stream" if stream else "response"
    assert grip.hold == expected, (
        f"expected a held {expected}, got {grip.hold or 'no hold'} "
        f"(status {response.status_code})"
    )
    missing = [c for c in channels or () if c not in grip.channels]
    assert not missing, f"not subscribed to {missing}; channels: {grip.channels}"
    if timeout is not None:
        assert grip.timeout == timeout, f"held {grip.timeout} s, not {timeout} s"
    return grip


def assert_not_held(response: Any) -> None:
    """Assert that the proxy would answer ``response`` at once."""
    grip = _instruction(response)
    assert grip.hold is None, f"held ({grip.hold}) on {grip.channels}"


class Outbox(list[RawItem]):
    """Items published in this process while :func:`capture_published` was active, in
    Pushpin's ``/publish`` form (``channel``, ``id``, ``prev-id``, ``formats``). Items that
    no client can receive (no ``http-response``, ``http-stream`` or ``ws-message`` format:
    drf-grip sends one to reset a proxy's sequence of a channel) are left out."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def publish_items(self, items: list[RawItem]) -> None:  # the local sink interface
        with self._lock:
            self.extend(item for item in items if reaches_clients(item))

    @property
    def channels(self) -> list[str]:
        """The channel of each item, in order, without ``GRIP_PREFIX``."""
        return [channel_name(item) for item in list(self)]

    def to(self, channel: str) -> list[RawItem]:
        """The items published on ``channel`` (named without ``GRIP_PREFIX``)."""
        return [item for item, name in zip(list(self), self.channels) if name == channel]


#: How long leaving ``capture_published()`` waits for what was committed inside it.
_CAPTURE_SETTLE = 10.0


@contextlib.contextmanager
def capture_published(*, send: bool = False) -> Iterator[Outbox]:
    """Collect what this process publishes into an :class:`Outbox`, like
    ``django.core.mail.outbox``: meanwhile nothing goes over the network, whatever
    ``GRIP_URL`` says, unless ``send=True`` (then it is also sent as usual; an embedded
    proxy in this process gets it either way). Nested, the innermost decides whether items
    leave the process, and every open outbox sees them. Changes publish after commit and
    off the request thread: call :func:`wait_published` before looking; what was committed
    before the block goes where it would have gone without it."""
    outbox = Outbox()
    # Changes committed before the block (a module fixture's) publish a moment later, from
    # another thread: one of them landed in the outbox now and on the network a second
    # later, as the threads went (a test-kit probe). They go where they would without it.
    wait_idle(_CAPTURE_SETTLE)
    register_local_sink(outbox, exclusive=not send, observes=send)
    try:
        yield outbox
    finally:
        # Changes committed at the end of the block publish a moment later, from another
        # thread: taken now, they still land here, not on the network (a probe's listener
        # got a test's publish once in 8 runs).
        _settle(_CAPTURE_SETTLE)
        unregister_local_sink(outbox)


class WebSocketTestClient(Client):
    """A Django test client that also opens emulated WebSocket connections.

    ``login()``, ``force_login()`` and cookies work as usual and reach the handshake;
    ``credentials(HTTP_AUTHORIZATION=...)`` sets headers for every connection, as in
    ``rest_framework.test.APIClient``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("raise_request_exception", False)
        super().__init__(*args, **kwargs)
        self._credentials: dict[str, str] = {}

    def credentials(self, **kwargs: str) -> None:
        """Headers for every later connection, in ``META`` form (``HTTP_AUTHORIZATION``)."""
        self._credentials = dict(kwargs)

    def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        origin: str | None = None,
        protocols: Iterable[str] = (),
    ) -> WebSocketConnection:
        """Open a connection; check ``accepted`` (or ``status_code`` of a refused one)."""
        all_headers: dict[str, str] = {}
        for key, value in self._credentials.items():
            name = key[5:] if key.startswith("HTTP_") else key
            all_headers[name.replace("_", "-").title()] = value
        all_headers.update(headers or {})
        if origin is not None:
            all_headers["Origin"] = origin
        protocols = list(protocols)
        if protocols:
            all_headers["Sec-WebSocket-Protocol"] = ", ".join(protocols)
        return WebSocketConnection(self, path, all_headers)._open()
