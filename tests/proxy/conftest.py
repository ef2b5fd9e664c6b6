"""A scripted origin behind a real ``GripProxy`` served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from drf_grip.proxy import GripProxy
from drf_grip.proxy.server import Server

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


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(func, *args)


# -- the same scripted origin behind a real Pushpin ------------------------------------------


class PushpinInFront:
    """A private Pushpin 1.36 in front of a scripted ``Origin`` served by uvicorn: a
    conformance test runs once against it and once against the embedded proxy
    (``any_proxy``), with one interface: ``url``, ``ws_url``, ``publish``,
    ``wait_subscribed``."""

    name = "pushpin"

    def __init__(self, origin: Origin) -> None:
        from drf_grip.testing import OriginServer, PushpinServer, find_pushpin, pushpin_missing

        if find_pushpin() is None:
            pushpin_missing()
        self.origin_server = OriginServer(origin).start()
        try:
            self.pushpin = PushpinServer(self.origin_server.port, probe_path="/.probe/").start()
        except BaseException:
            self.origin_server.stop()
            raise
        self._mark = self.pushpin.mark()

    @property
    def url(self) -> str:
        return self.pushpin.url

    @property
    def ws_url(self) -> str:
        return self.pushpin.ws_url

    def publish(self, *items: dict[str, Any]) -> None:
        self.pushpin.publish_items(list(items))

    def wait_subscribed(self, channel: str, timeout: float = 5.0) -> bool:
        """The next subscription to ``channel`` since the last one waited for."""
        self._mark = self.pushpin.wait_subscribed(channel, timeout, since=self._mark)
        return True

    def stop(self) -> None:
        self.pushpin.stop()
        self.origin_server.stop()


class EmbeddedInFront:
    name = "embedded"

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self._seen: dict[str, int] = {}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def publish(self, *items: dict[str, Any]) -> None:
        self.server.publish(*items)

    def wait_subscribed(self, channel: str, timeout: float = 5.0) -> bool:
        count = self._seen.get(channel, 0) + 1
        self._seen[channel] = count
        return self.server.proxy.wait_for_subscriptions(channel, count, timeout)


@pytest.fixture(params=["embedded", "pushpin"])
def any_proxy(
    request: pytest.FixtureRequest, origin: Origin, make_proxy: Callable[..., ProxyServer]
) -> Iterator[PushpinInFront | EmbeddedInFront]:
    """The scripted origin behind the embedded proxy, or behind a real Pushpin."""
    if request.param == "embedded":
        server = make_proxy()
        # Pushpin's own bounds (Grip-Timeout at least 5 s, Keep-Alive-Interval at least 20 s).
        server.proxy.min_hold_timeout = GripProxy.min_hold_timeout
        server.proxy.min_ws_keep_alive = GripProxy.min_ws_keep_alive
        yield EmbeddedInFront(server)
        return
    front = PushpinInFront(origin)
    try:
        yield front
    finally:
        front.stop()
