"""A scripted origin behind a real ``GripProxy`` served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from drf_grip.protocol import WebSocketEvent, encode_events
from drf_grip.proxy import GripProxy
from drf_grip.proxy.server import Server
from drf_grip.testing import OriginServer, PushpinServer, find_pushpin, pushpin_missing
from drf_grip.testing.proxies import EmbeddedProxyServer, ProxyUnderTest

KEY = "proxy-tests-key-of-at-least-32-bytes-long"


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | str = b""
    chunks: list[bytes] | None = None  # a streamed (non-GRIP) answer


Handler = Callable[[Request], Response]


class Origin:
    """An ASGI app answering each path with a test's handler, recording every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self._cond = threading.Condition()

    def route(self, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes[path] = handler
            return handler

        return register

    def requests_to(self, path: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def wait_for_requests(self, path: str, count: int, timeout: float = 5.0) -> list[Request]:
        with self._cond:
            self._cond.wait_for(lambda: len([r for r in self.requests if r.path == path]) >= count, timeout)
            return [r for r in self.requests if r.path == path]

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        request = Request(
            scope["method"], scope["path"], scope["query_string"].decode(), dict(pairs), pairs, body
        )
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        handler = self.routes.get(scope["path"])
        response = handler(request) if handler else Response(404, body=b"no route")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if response.chunks is not None:
            for chunk in response.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = response.body.encode() if isinstance(response.body, str) else response.body
        await send({"type": "http.response.body", "body": data})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProxyServer:
    def __init__(self, proxy: GripProxy) -> None:
        self.proxy = proxy
        self.port = free_port()
        config = uvicorn.Config(
            # uvicorn's default WebSocket protocol, as runserver serves it: websockets-sansio
            # in recent uvicorn, its legacy websockets protocol in the older ones setup.cfg
            # allows (0.31 has no websockets-sansio).
            proxy, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning",
        )
        self.ready = threading.Event()
        self.server = Server(config, on_started=self.ready.set)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ProxyServer:
        self.thread.start()
        assert self.ready.wait(10) and self.server.started, "uvicorn did not start"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def publish(self, *items: dict[str, Any]) -> None:
        self.proxy.publish_items(list(items))


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def make_proxy(origin: Origin) -> Iterator[Callable[..., ProxyServer]]:
    servers: list[ProxyServer] = []

    def make(**options: Any) -> ProxyServer:
        options.setdefault("key", KEY)
        options.setdefault("max_held", 100)
        options.setdefault("max_message_size", 1024 * 1024)
        proxy = GripProxy(origin, **options)
        proxy.min_hold_timeout = 0.0
        proxy.min_ws_keep_alive = 0.0
        server = ProxyServer(proxy).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return make_proxy()


#: WebSocket-over-HTTP: the origin's answer (PUSHPIN.md).
EVENTS = "application/websocket-events"


def ws_answer(*events: WebSocketEvent, headers: list[tuple[str, str]] = ()) -> Response:
    return Response(
        200,
        [("Content-Type", EVENTS), ("Sec-WebSocket-Extensions", "grip"), *headers],
        encode_events(list(events)),
    )


def control(kind: str, **args) -> WebSocketEvent:
    return WebSocketEvent("TEXT", b"c:" + json.dumps({"type": kind, **args}).encode())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(func, *args)


# -- requests written byte for byte -----------------------------------------------------------


def read_status_line(sock: socket.socket) -> bytes:
    """The status line of the answer on ``sock``. Read off the socket because an HTTP client
    cannot tell: httpx (h11) takes only three-digit codes."""
    head = b""
    while b"\r\n" not in head and (chunk := sock.recv(65536)):
        head += chunk
    return head.partition(b"\r\n")[0]


def status_line(url: str, request: bytes) -> bytes:
    """Send ``request`` as it is on a new connection to ``url`` and read the answer's status
    line: for requests an HTTP client would not write (blank header values)."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=15) as sock:
        sock.sendall(request)
        return read_status_line(sock)


# -- the same scripted origin behind a real Pushpin ------------------------------------------


class InFront:
    """A proxy under test (drf_grip.testing's ``ProxyUnderTest``: a private Pushpin 1.36,
    or the embedded proxy) in front of the scripted ``Origin``, with the conformance tests'
    shorthand: ``publish(*items)``, and ``wait_subscribed(channel)`` for the next
    subscription to ``channel`` since the last one waited for."""

    def __init__(self, proxy: ProxyUnderTest) -> None:
        self.proxy = proxy
        self.name = proxy.name
        self._mark = proxy.mark()

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def ws_url(self) -> str:
        return self.proxy.ws_url

    def publish(self, *items: dict[str, Any]) -> None:
        self.proxy.publish_items(list(items))

    def wait_subscribed(self, channel: str, timeout: float = 5.0) -> bool:
        self._mark = self.proxy.wait_subscribed(channel, timeout, since=self._mark)
        return True


@pytest.fixture(params=["embedded", "pushpin"])
def any_proxy(
    request: pytest.FixtureRequest, origin: Origin, make_proxy: Callable[..., ProxyServer]
) -> Iterator[InFront]:
    """The scripted origin behind the embedded proxy, or behind a real Pushpin."""
    if request.param == "embedded":
        server = make_proxy()
        # Pushpin's own bounds (Grip-Timeout at least 5 s, Keep-Alive-Interval at least 20 s).
        server.proxy.min_hold_timeout = GripProxy.min_hold_timeout
        server.proxy.min_ws_keep_alive = GripProxy.min_ws_keep_alive
        yield InFront(EmbeddedProxyServer(server.proxy, server))
        return
    if find_pushpin() is None:
        pushpin_missing()
    with contextlib.ExitStack() as started:
        origin_server = OriginServer(origin).start()
        started.callback(origin_server.stop)
        pushpin = PushpinServer(origin_server.port, probe_path="/.probe/").start()
        started.callback(pushpin.stop)
        yield InFront(pushpin)
