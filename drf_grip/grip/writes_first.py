"""Writes first: a proxy's re-holds wait while a write runs in this process.

After every change a GRIP proxy sends each delivered watcher's next request (a long-poll that
comes back with the new ``If-None-Match``) and, for private delivery, re-requests every held
client with ``Grip-Last``. Those arrive together, each in a Django thread of its own, and a
``PATCH`` that arrives among them gets its share of one interpreter lock: with 200 shared
watchers on one origin process, a PATCH's p99 went from 25 ms to 2.2 s (``bench/run.py``, the
write-latency case). Nobody waits on a re-hold the way a user waits on a write: the watcher
already holds the current representation, and a private re-request is at most a few
milliseconds later.

So in one ASGI process: a re-hold (a ``GET``/``HEAD`` signed by the proxy, with
``If-None-Match`` or ``Grip-Last``) does not start while a write (an unsafe method, other
than a WebSocket-over-HTTP exchange) runs,
unless the writes have kept the gate shut for ``max_wait`` seconds in a row (a steady stream
of writes must not starve the watchers), and at most ``concurrency`` re-holds run at once.
The wait is counted from when the writes began, not from when the re-hold arrived: after a
change the proxy sends all its watchers' re-holds at once, they queue for the
``concurrency`` slots for longer than ``max_wait``, and counted from arrival every one of
them had used up its wait by the time it reached a slot, so each ran beside the next write
as if there were no gate (bench/run.py's write-latency case: PATCHes that overlapped 3 to
50 re-holds made its p99). Other requests pass straight
through. The gate is per process: several workers are several gates.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..protocol.events import is_websocket_events

__all__ = ["WritesFirst", "is_rehold"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def is_rehold(scope: dict[str, Any]) -> bool:
    """A proxy's request that holds again: signed (``Grip-Sig``), safe, and naming what the
    client or the proxy already has (``If-None-Match``, ``Grip-Last``)."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    signed = again = False
    for name, _value in scope.get("headers", ()):
        if name == b"grip-sig":
            signed = True
        elif name in (b"if-none-match", b"grip-last"):
            again = True
    return signed and again


class WritesFirst:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: Any, *, concurrency: int = 4, max_wait: float = 0.25) -> None:
        self.app = app
        self.max_wait = max_wait
        self.writes = 0
        #: ``loop.time()`` when the running writes began (the first of them to start).
        self._busy_since = 0.0
        self._no_writes = asyncio.Event()
        self._no_writes.set()
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope.get("method") not in SAFE_METHODS and not is_websocket_events(
            scope.get("headers", ())
        ):
            # A WebSocket-over-HTTP exchange (a connection's open, keep-alive or subscribe,
            # as often as a write) is not a write.
            await self._write(scope, receive, send)
        elif is_rehold(scope):
            await self._rehold(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _write(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.writes:
            self._busy_since = asyncio.get_running_loop().time()
        self.writes += 1
        self._no_writes.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.writes -= 1
            if not self.writes:
                self._no_writes.set()

    async def _rehold(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        async with self._slots:
            # Checked once a slot is ours: re-holds queued before a write began wait too,
            # for at most what is left of ``max_wait`` since the writes began.
            remaining = self._busy_since + self.max_wait - loop.time()
            if not self._no_writes.is_set() and remaining > 0:
                try:
                    await asyncio.wait_for(self._no_writes.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            await self.app(scope, receive, send)
