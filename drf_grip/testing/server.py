"""A real HTTP server for an ASGI app, running in a background thread of the test process.

Integration tests need the app behind real sockets (Pushpin connects to it over TCP), yet
in the test process, so that the test and the server share settings and the database.
uvicorn runs on its own event loop in its own thread; nothing here touches the test's loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from .process import Service

__all__ = ["OriginServer", "ORIGIN_KEEP_ALIVE"]

#: Seconds an idle connection from the proxy stays open (longer than the proxy keeps one).
ORIGIN_KEEP_ALIVE = 300


class _ThreadServer(uvicorn.Server):
    """uvicorn's server without signal handlers: those belong to the main thread (pytest)."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass


class OriginServer(Service):
    """Serve ``app`` with uvicorn on ``host:port`` (port 0: a free one) in a daemon thread.

    The listening socket is bound before the thread starts, so :attr:`port` is known at
    once and no other process can take it between choosing and binding.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 10.0,
        graceful_timeout: float = 2.0,
        **uvicorn_options: Any,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self.startup_timeout = startup_timeout
        self.graceful_timeout = graceful_timeout
        self.uvicorn_options = uvicorn_options
        self.port = 0
        self._socket: socket.socket | None = None
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> OriginServer:
        """Start serving; returns once uvicorn reports ``started`` (lifespan done, listening)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        # IPPROTO_TCP: asyncio turns on TCP_NODELAY only for sockets whose protocol says TCP;
        # without it a response written as head then body waits ~40 ms (Nagle, delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.set_inheritable(True)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        options: dict[str, Any] = {
            "lifespan": "auto",
            # Leave the test process's logging alone; uvicorn's default config replaces it.
            "log_config": None,
            "access_log": False,
            # Held connections (embedded proxy, streams) must not block shutdown forever.
            "timeout_graceful_shutdown": self.graceful_timeout,
            # Pushpin reuses idle connections to its origin; one closed under it by uvicorn's
            # 5 s default fails a next-link fetch, retried about 2 s later.
            "timeout_keep_alive": ORIGIN_KEEP_ALIVE,
            **self.uvicorn_options,
        }
        config = uvicorn.Config(self.app, **options)
        self._server = _ThreadServer(config)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"origin-server-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        # uvicorn exposes readiness only as a flag set on its own loop; poll it briefly.
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"origin server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"origin server not started after {self.startup_timeout}s")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread, close the socket."""
        server, thread = self._server, self._thread
        self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None

    def __repr__(self) -> str:
        return f"OriginServer(url={self.url!r})"
