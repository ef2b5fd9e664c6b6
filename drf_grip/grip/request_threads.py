"""Request threads kept for the next request, as a WSGI server keeps its thread pool.

Django's ASGI handler runs each request's synchronous part (sync middleware, a DRF view) on a
thread of its own: it enters asgiref's ``ThreadSensitiveContext`` per request, whose first
``sync_to_async`` call starts a one-thread executor that is shut down (its thread joined) when
the request ends (``django/core/handlers/asgi.py``, ``ASGIHandler.__call__``). Behind a GRIP
proxy most requests are short — a subscriber's first GET, a proxy's re-request, a hold — and
starting and joining that thread was about a fifth of the origin's CPU per request (py-spy,
``bench/run.py``; ``NOTES.rst``, issue 10). A thread that ends also takes its database
connection with it (Django keeps them per thread), so ``CONN_MAX_AGE`` could never keep one.

:class:`RequestThreads` enters the context first, so Django's own (entered inside it) is a
no-op — asgiref sets the context only in the outermost block — and gives it a one-thread
executor taken from a pool, handed back when the request ends. Thread-sensitive code of one
request still runs on one thread, and two requests never share a thread at the same time;
what is new is that consecutive requests may, as under a threaded WSGI server. An executor
whose last job is still running when its request ends (a client that went away while its
view ran) is not handed back: it finishes on its own and its thread ends.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import connections

__all__ = ["RequestThreads"]

_serial = itertools.count(1)

#: Seconds a kept thread may stay idle; after a burst the extra threads (and the database
#: connections ``CONN_MAX_AGE`` kept on them) end once the next requests find them this old.
IDLE_SECONDS = 30.0


class _OneThread(ThreadPoolExecutor):
    """A one-thread executor that knows whether its last job is done (jobs run in order)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"drf-grip-request-{next(_serial)}")
        self.last: Future[Any] | None = None
        self.since = 0.0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.last = future
        return future

    def idle(self) -> bool:
        return self.last is None or self.last.done()


class RequestThreads:
    """ASGI middleware: see the module docstring. ``idle``: how many idle threads to keep."""

    def __init__(self, app: Any, *, idle: int = 64) -> None:
        self.app = app
        self.idle = idle
        self._free: deque[_OneThread] = deque()  # the longest idle first
        self._lock = threading.Lock()

    def _take(self) -> _OneThread:
        with self._lock:
            if self._free:
                return self._free.pop()  # the one used last: its thread is warm
        return _OneThread()

    def _give_back(self, executor: _OneThread) -> None:
        now = time.monotonic()
        ended = []
        with self._lock:
            if executor.idle() and len(self._free) < self.idle:
                executor.since = now
                self._free.append(executor)
            else:
                ended.append(executor)
            while self._free and now - self._free[0].since > IDLE_SECONDS:
                ended.append(self._free.popleft())
        for done in ended:
            # Its thread's database connections first (Django keeps one per thread, for
            # CONN_MAX_AGE): a thread that ends with them open leaves them to the garbage
            # collector, "ResourceWarning: unclosed database" under -X dev (day-one probe).
            done.submit(connections.close_all)
            done.shutdown(wait=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = ThreadSensitiveContext()
        async with context:
            if context.token is None:
                # Inside another thread-sensitive context (a test client, a wrapper):
                # that one decides the thread.
                await self.app(scope, receive, send)
                return
            executor = self._take()
            SyncToAsync.context_to_thread_executor[context] = executor
            try:
                await self.app(scope, receive, send)
            finally:
                # Taken out before the context exits, which would shut it down.
                SyncToAsync.context_to_thread_executor.pop(context, None)
                self._give_back(executor)
