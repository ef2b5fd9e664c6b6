"""``GripProxy``: the ASGI app that plays Pushpin's part in front of an inner ASGI app."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..protocol import MIN_HOLD_TIMEOUT, parse_items
from .http import HttpSession
from .hub import ChannelHub
from .origin import ASGIApp, Signer
from .publish import handle_publish, handle_status
from .websocket import WebSocketSession

__all__ = ["GripProxy"]

logger = logging.getLogger("drf_grip.proxy")


class GripProxy:
    """Hold, stream and WebSocket-over-HTTP for one process, speaking GRIP to ``app``.

    ``key`` signs ``Grip-Sig`` for the origin and protects the publish endpoint. The proxy
    knows GRIP, not Django: a Django project builds it with :func:`drf_grip.asgi.embedded_proxy`,
    which passes the key every process derives from ``SECRET_KEY``, the ``DRF_GRIP`` limits and
    ``attach``/``detach`` callables that hand it to this process's publisher (it is then a
    local sink: ``publish_items(items)``).
    """

    # Pushpin's minimum Grip-Timeout and Keep-Alive-Interval (Pushpin 1.36). Tests may lower
    # them on an instance; nothing else should.
    min_hold_timeout: float = float(MIN_HOLD_TIMEOUT)
    default_hold_timeout: float = 55.0
    min_ws_keep_alive: float = 20.0
    # A re-request, next link or WebSocket-over-HTTP request that takes longer fails.
    origin_timeout: float = 60.0
    # Per-connection bound on messages waiting for a slow client, and on a WebSocket client's
    # messages waiting for the origin.
    max_queued_messages: int = 256
    # Client WebSocket events sent to the origin in one WebSocket-over-HTTP request, at most.
    ws_events_per_request: int = 32
    # HTTP request targets (path and query) longer than this are answered 414 before the
    # origin sees them. Pushpin resets a connection whose request head passes its 8 KiB
    # buffer (condure's --buffer-size=8192); passed on, a 60 KB ?search= made DRF's
    # SearchFilter fail on SQLite with a 500 (its LIKE patterns stop at 50,000 bytes; a
    # probe). uvicorn already answers a WebSocket handshake over 8 KiB with 414.
    max_request_target: int = 8192
    # How long shutdown waits for held connections to be answered.
    shutdown_timeout: float = 5.0
    # Re-requests (hints, prev-id conflicts) in flight to the origin at once; the others wait
    # their turn. A hint re-requests every client held on a channel: unpaced, a thousand
    # arrive at a Django that runs views one at a time, each holding its buffers meanwhile.
    max_rerequests: int = 16
    # Clients' own requests being answered by the origin at once (until the origin's answer
    # head, and for a GRIP answer its body, is in); the others wait their turn. Django runs
    # sync views in a thread each: a hundred clients connecting together meant a hundred
    # threads and their heaps, for no gain under one interpreter lock (bench/run.py: 46 KiB
    # of process RSS per held long-poll at N = 1,000; 30 KiB with 8 turns).
    max_origin_requests: int = 8

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: str | bytes | None = None,
        max_held: int | None = None,
        max_message_size: int | None = None,
        publish_path: str = "/_grip/publish/",
        attach: Callable[[GripProxy], None] | None = None,
        detach: Callable[[GripProxy], None] | None = None,
    ) -> None:
        if not key:
            raise ValueError("GripProxy needs a key (drf_grip.asgi.embedded_proxy() gives one)")
        self.app = app
        self.key: str | bytes = key
        self.max_held = int(max_held) if max_held is not None else 10_000
        self.max_message_size = (
            int(max_message_size) if max_message_size is not None else 1024 * 1024
        )
        #: The largest answer or message the origin may send, which is trusted: a GRIP answer
        #: is read whole (its headers instruct what follows). At ``max_message_size``, the
        #: limit of what clients send, a stream of a representation over 1 MiB was answered
        #: 502 while its plain GET worked (black-box probe).
        self.max_origin_size = max(self.max_message_size * 4, 1 << 20)
        self._attach = attach
        self._detach = detach
        self.publish_path = "/" + publish_path.strip("/") + "/"
        parent = self.publish_path.rstrip("/").rsplit("/", 1)[0]
        self.status_path = (parent or "") + "/"
        self.hub = ChannelHub()
        self.signer = Signer(lambda: self.key)
        self.closing = False
        self._held = 0
        self._sessions: dict[Any, asyncio.Task[Any] | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sink_registered = False
        self._rerequests: asyncio.Semaphore | None = None
        self._origin_turns: asyncio.Semaphore | None = None

    def rerequest_slots(self) -> asyncio.Semaphore:
        """The turns re-requests take (``max_rerequests``), made on the proxy's loop."""
        if self._rerequests is None:
            self._rerequests = asyncio.Semaphore(max(1, int(self.max_rerequests)))
        return self._rerequests

    def origin_slots(self) -> asyncio.Semaphore:
        """The turns clients' own requests take (``max_origin_requests``)."""
        if self._origin_turns is None:
            self._origin_turns = asyncio.Semaphore(max(1, int(self.max_origin_requests)))
        return self._origin_turns

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._loop is None:
            self._startup()  # the server sent no lifespan
        if kind == "http":
            path = scope["path"]
            if path in (self.publish_path, self.publish_path.rstrip("/")):
                await handle_publish(self, scope, receive, send)
            elif path == self.status_path and scope["method"] in ("GET", "HEAD"):
                await handle_status(self, scope, receive, send)
            else:
                await self._run(HttpSession(self, scope, receive, send))
        elif kind == "websocket":
            await self._run(WebSocketSession(self, scope, receive, send))
        else:
            await self.app(scope, receive, send)

    async def _run(self, session: HttpSession | WebSocketSession) -> None:
        if isinstance(session, WebSocketSession):
            self._sessions[session] = asyncio.current_task()
            try:
                await session.run()
            finally:
                self._sessions.pop(session, None)
            return
        # An HTTP session runs in a task of its own so that the server cancelling ours does
        # not cut it. Plain uvicorn sends lifespan shutdown only after open connections end;
        # with --timeout-graceful-shutdown it then cancels what is left, and a held long-poll
        # got uvicorn's 500 and a stream was cut mid-chunk, each with a traceback. A cancel
        # of a held connection is answered like the proxy's shutdown (the hold's timeout
        # response, the end of the stream), for that connection only: a server may also
        # cancel the task of a client that went away. (WebSockets: uvicorn closes them 1012.)
        task = asyncio.ensure_future(session.run())
        self._sessions[session] = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            session.stop()
            await asyncio.wait({task}, timeout=self.shutdown_timeout)
            if not task.done():
                task.cancel()
                raise
        finally:
            self._sessions.pop(session, None)

    async def _lifespan(self, receive, send) -> None:
        # Django's ASGI handler refuses lifespan scopes, so the proxy answers them itself
        # and does not pass them on.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._rerequests = None  # a semaphore belongs to the loop that first waits on it
        self.closing = False
        self._register_sink()

    def _register_sink(self) -> None:
        if self._sink_registered or self._attach is None:
            return
        self._attach(self)
        self._sink_registered = True

    def _unregister_sink(self) -> None:
        if not self._sink_registered or self._detach is None:
            return
        self._sink_registered = False
        self._detach(self)

    async def shutdown(self) -> None:
        """Answer every held connection (timeout response, end of stream, close frame).

        Called on lifespan shutdown. uvicorn sends that only after open connections end, so
        :class:`drf_grip.proxy.server.Server` calls this first, before it waits for them.
        """
        if self.closing:
            return
        self.closing = True
        self._unregister_sink()
        sessions = list(self._sessions.items())
        for session, _task in sessions:
            session.wake()
        tasks = [task for _s, task in sessions if task is not None and not task.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()

    # -- limits -----------------------------------------------------------------------------

    @property
    def held_count(self) -> int:
        """Connections held now (long-polls, streams, WebSockets)."""
        return self._held

    def admit(self, session: object) -> bool:
        if self._held >= self.max_held:
            logger.warning(
                "refusing %s: %d connections held (EMBEDDED_MAX_HELD)",
                getattr(session, "path", "?"),
                self._held,
            )
            return False
        self._held += 1
        return True

    def release(self, session: object) -> None:
        self._held -= 1

    # -- publishing in-process (the local sink of drf_grip.grip.publisher) -------------------

    def publish_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Deliver items in Pushpin's JSON form; thread-safe, returns once they are delivered.

        Raises ``ValueError`` (:class:`~drf_grip.protocol.items.InvalidItem`) for a bad item.
        """
        parsed = parse_items(list(items), max_size=self.max_message_size)
        loop = self._loop
        if loop is None or loop.is_closed():
            logger.warning(
                "embedded proxy not running: %d item(s) for %s dropped",
                len(parsed),
                ", ".join(sorted({i.channel for i in parsed})),
            )
            return
        if threading.get_ident() == self._loop_thread:
            self.hub.publish(parsed)
            return
        done = threading.Event()

        def publish() -> None:
            try:
                self.hub.publish(parsed)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(publish)
        except RuntimeError:  # the loop closed meanwhile
            return
        done.wait(timeout=5.0)

    # -- for tests: waiting without sleeping --------------------------------------------------

    def subscriber_counts(self) -> dict[str, int]:
        """Channel -> connections subscribed now."""
        return self.hub.subscriber_counts()

    def subscription_counts(self) -> dict[str, int]:
        """Channel -> subscribe events so far (each hold, re-hold and WebSocket subscribe)."""
        return self.hub.subscription_counts()

    def wait_for_subscribers(self, channel: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` connections are subscribed to ``channel``; False on timeout.

        For another thread than the proxy's event loop (a test thread).
        """
        self._not_on_loop()
        return self.hub.wait_for_subscribers(channel, count, timeout)

    def wait_for_idle(self, channel: str, timeout: float = 5.0) -> bool:
        """Block until no connection is subscribed to ``channel``; False on timeout."""
        self._not_on_loop()
        return self.hub.wait_for_idle(channel, timeout)

    def wait_for_subscriptions(self, channel: str, total: int, timeout: float = 5.0) -> bool:
        """Block until ``channel`` has seen ``total`` subscribe events in all; False on timeout."""
        self._not_on_loop()
        return self.hub.wait_for_subscriptions(channel, total, timeout)

    def _not_on_loop(self) -> None:
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            raise RuntimeError("wait from another thread than the proxy's event loop")
