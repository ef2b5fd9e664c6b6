"""Requests from the proxy to the origin: the inner ASGI app, called in-process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..protocol import EMBEDDED_ISSUER, RawHeaders
from ..protocol.signing import hs256_encode
from .headers import without_headers

__all__ = [
    "ASGIApp",
    "Exchange",
    "OriginError",
    "OriginResponse",
    "Signer",
    "derive_scope",
    "fetch",
    "GRIP_FEATURES",
    "origin_headers",
]

logger = logging.getLogger("drf_grip.proxy")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
BodySource = Callable[[], Awaitable[Message]]

# Only what this proxy implements (Pushpin also announces session and filter:* features).
GRIP_FEATURES = "status, link:next"


class OriginError(Exception):
    """The origin failed, answered nothing, or answered more than the proxy will buffer."""


@dataclass
class OriginResponse:
    status: int
    headers: RawHeaders
    body: bytes


class Signer:
    """Makes the ``Grip-Sig`` JWT (HS256, ``{"iss": "drf-grip", "exp": now+3600}``)."""

    LIFETIME = 3600
    REFRESH_AFTER = 600

    def __init__(self, key: Callable[[], str | bytes]) -> None:
        self._key = key
        self._token: str | None = None
        self._made_at = 0.0

    def token(self) -> str:
        now = time.time()
        if self._token is None or now - self._made_at > self.REFRESH_AFTER:
            claims = {"iss": EMBEDDED_ISSUER, "exp": int(now) + self.LIFETIME}
            self._token = hs256_encode(claims, self._key())
            self._made_at = now
        return self._token


def derive_scope(
    scope: dict[str, Any],
    *,
    headers: RawHeaders,
    method: str | None = None,
    path: str | None = None,
    query_string: bytes | None = None,
) -> dict[str, Any]:
    """An HTTP scope for the inner app, based on the client's scope (HTTP or WebSocket)."""
    scheme = scope.get("scheme", "http")
    if scope["type"] == "websocket":
        scheme = "https" if scheme == "wss" else "http"
    out: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.get("http_version", "1.1"),
        "method": method or scope.get("method", "GET"),
        "scheme": scheme,
        "path": scope["path"] if path is None else path,
        "raw_path": None,
        "query_string": scope.get("query_string", b"") if query_string is None else query_string,
        "root_path": scope.get("root_path", ""),
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
    }
    if path is None and scope.get("raw_path") is not None:
        out["raw_path"] = scope["raw_path"]
    else:
        out["raw_path"] = quote(out["path"]).encode("latin-1")
    if "state" in scope:
        out["state"] = scope["state"]
    return out


class Exchange:
    """One request to the inner app, whose answer is read as it is produced.

    The inner app's ``send`` waits on a small bounded queue, so a large or endless origin
    response is streamed with back-pressure instead of buffered. ``receive`` hands out the
    request body, then reports ``http.disconnect`` only when the client went away (or the
    answer was read), which is what Django's ASGI handler listens for.
    """

    def __init__(self, app: ASGIApp, scope: dict[str, Any], body: BodySource) -> None:
        self._scope = scope
        self._body = body
        self._body_done = False
        self._gone = asyncio.Event()
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=16)
        self._started = False
        self._task = asyncio.get_running_loop().create_task(self._run(app))

    async def _run(self, app: ASGIApp) -> None:
        try:
            await app(self._scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("origin failed for %s %s", self._scope["method"], self._scope["path"])
        finally:
            if not self._gone.is_set():
                try:
                    self._queue.put_nowait(None)
                except asyncio.QueueFull:
                    await self._put_end()

    async def _put_end(self) -> None:
        if not self._gone.is_set():
            await self._queue.put(None)

    async def _receive(self) -> Message:
        if not self._body_done:
            message = await self._body()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self._body_done = True
            if message["type"] == "http.disconnect":
                self._gone.set()
            return message
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self._gone.is_set():
            return  # nobody reads the answer any more
        await self._queue.put(message)

    async def _next(self) -> Message | None:
        get = asyncio.ensure_future(self._queue.get())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            get.cancel()  # (a timeout of the caller's): left pending, it was "destroyed"
            raise
        finally:
            gone.cancel()
        if get.done():
            return get.result()
        get.cancel()
        return None

    async def start(self) -> tuple[int, RawHeaders]:
        """Wait for the status line and headers of the answer."""
        message = await self._next()
        if message is None:
            raise OriginError("the origin answered nothing")
        if message["type"] != "http.response.start":
            raise OriginError(f"the origin sent {message['type']!r} before the response start")
        self._started = True
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
        return int(message["status"]), headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the origin produces it."""
        while True:
            message = await self._next()
            if message is None:
                raise OriginError("the origin ended its answer early")
            if message["type"] != "http.response.body":
                continue  # e.g. trailers: not relayed
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                self.finish()
                return

    async def read_body(self, limit: int) -> bytes:
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                self.abort()
                raise OriginError(f"the origin's answer exceeds {limit} bytes")
        return bytes(out)

    def finish(self) -> None:
        """The answer was read; let the inner app see the end of the exchange."""
        self._gone.set()

    def abort(self) -> None:
        """The client went away: the inner app sees ``http.disconnect``."""
        self._gone.set()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
        except Exception:  # noqa: BLE001 - already logged by _run
            pass

    def cancel(self, grace: float = 5.0) -> None:
        """Give up on the answer. The inner app is told the client left (``http.disconnect``)
        and given ``grace`` seconds to end, then cancelled. Cancelled at once, Django's ASGI
        handler left its own two tasks behind (it cancels them only when it sees the
        disconnect): under load, each next link that timed out logged "Task exception was
        never retrieved" with a ``RequestAborted`` traceback (day-one probe)."""
        self._gone.set()
        if not self._task.done():
            closing = asyncio.ensure_future(self.wait_closed(grace))
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)


#: Exchanges given up on and still ending (``Exchange.cancel``): a task nobody holds a
#: reference to may be collected before it ran.
_closing: set[asyncio.Future[None]] = set()


async def fetch(
    app: ASGIApp, scope: dict[str, Any], body: bytes, *, limit: int, timeout: float
) -> OriginResponse:
    """A buffered request to the inner app (re-requests, next links, WebSocket events)."""
    sent = False

    async def source() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    exchange = Exchange(app, scope, source)
    try:
        async with asyncio.timeout(timeout):
            status, headers = await exchange.start()
            data = await exchange.read_body(limit)
    except asyncio.TimeoutError:
        exchange.cancel()
        raise OriginError(f"the origin did not answer within {timeout:g} s") from None
    except OriginError:
        exchange.cancel()
        raise
    return OriginResponse(status, headers, data)


def origin_headers(
    client_headers: RawHeaders, signer: Signer, extra: RawHeaders = ()
) -> RawHeaders:
    """The client's headers minus its ``Grip-*`` ones and ``Accept-Encoding``, plus the
    proxy's signature and features.

    ``Accept-Encoding`` is not passed on: published content is appended to a held stream and
    merged onto a held response as is, so a compressed hold (``GZipMiddleware``) would reach
    the client as garbage. Pushpin 1.36 asks the origin for compression itself and hands
    clients decoded answers (run against it); in one process compression gains nothing.

    A header whose value is empty or only blanks (``If-Match:``) is not passed on either, each
    line on its own (``X-A: 1`` and ``X-A:`` pass ``X-A: 1``), for HTTP requests and for
    WebSocket-over-HTTP ones (the handshake's headers, ``Meta-*``) alike, as with Pushpin 1.36
    (run against it): Pushpin hands the client's headers on unchanged (src/proxy/proxysession.cpp
    ``ProxySession::Private::tryNextTarget``, src/proxy/websocketoverhttp.cpp
    ``WebSocketOverHttp::Private::doRequest``, both ``ZhttpRequest::start``) to zurl 1.11, which
    makes each a ``Name: value`` line for libcurl's ``CURLOPT_HTTPHEADER`` (zurl
    src/httprequest.cpp ``CurlConnection::setup``), and libcurl sends no line with nothing after
    its colon (that form disables one of its own headers). Host is Pushpin's own
    (``ProxyUtil::applyHostHeader``), so it stays whatever it is.
    """
    out = [(k, v) for k, v in without_headers(client_headers, "accept-encoding", grip=True)
           if v.strip(b" \t") or k.lower() == b"host"]
    out.append((b"grip-sig", signer.token().encode("latin-1")))
    out.append((b"grip-feature", GRIP_FEATURES.encode("latin-1")))
    out.extend(extra)
    return out

