"""The project's ASGI app, with the embedded GRIP proxy in front when no proxy is configured.

In a project's ``asgi.py``::

    from drf_grip.asgi import get_asgi_application

    application = get_asgi_application()

With ``GRIP_URL``/``GRIP_PROXIES`` unset this is Django behind :class:`drf_grip.proxy.GripProxy`
(realtime in one process, ``runserver`` or ``uvicorn project.asgi:application``); with them
set it is the plain Django app, and Pushpin or Fanout does the proxying.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import Any

__all__ = [
    "get_asgi_application",
    "wrap_application",
    "uses_embedded_proxy",
    "embedded_proxy",
    "writes_first",
    "request_threads",
    "refuse_websockets",
]


def uses_embedded_proxy() -> bool:
    """True when no GRIP proxy is configured, so this process must hold connections itself."""
    from .conf import grip_settings

    return not grip_settings.proxies


def embedded_proxy(app: Any, **proxy_options: Any) -> Any:
    """``app`` behind :class:`drf_grip.proxy.GripProxy`, configured from Django: the key
    every process derives from ``SECRET_KEY`` (so the middleware trusts its ``Grip-Sig`` and
    other processes can publish to it), ``DRF_GRIP``'s limits, and this process's publisher
    delivering to it in-process. The proxy itself imports nothing of Django."""
    from .conf import embedded_key, grip_settings
    from .grip.destinations import register_local_sink, unregister_local_sink
    from .proxy import GripProxy

    proxy_options.setdefault("key", embedded_key())
    proxy_options.setdefault("max_held", int(grip_settings.EMBEDDED_MAX_HELD))
    proxy_options.setdefault("max_message_size", int(grip_settings.EMBEDDED_MAX_MESSAGE_SIZE))
    def attach(proxy: Any) -> None:
        register_local_sink(proxy)
        _warn_of_other_embedded_proxies()

    proxy_options.setdefault("attach", attach)
    proxy_options.setdefault("detach", unregister_local_sink)
    return GripProxy(app, **proxy_options)


def _warn_of_other_embedded_proxies() -> None:
    """``uvicorn --workers 2`` (or gunicorn's ``-w``) without ``GRIP_URL``: each worker
    embeds its own proxy and holds only the clients that reached it, and a change saved
    through one worker reaches none of the clients another holds (they get it at their
    timeout). Nothing else tells: each embedded proxy, as it starts, lists itself in the
    state cache and warns when another process of this host that serves the same
    ``EMBEDDED_URL`` is alive (a process that has exited, an autoreloaded ``runserver``'s
    last one, is not counted)."""
    from .conf import grip_settings, redact_url
    from .rest.store import SlotIndex, per_process_state

    if per_process_state():
        return  # no other process can be seen, nor be served by this one's state
    host, me = socket.gethostname(), os.getpid()
    where = hashlib.sha256(str(grip_settings.EMBEDDED_URL).encode()).hexdigest()[:16]
    try:
        index = SlotIndex(f"drf_grip:embedded:{where}", 64, 24 * 3600)
        # Listed first, then read: of two workers starting together, the one that reads
        # last sees the other.
        index.add(f"{host}:{me}", {"host": host, "pid": me})
        others = [
            entry["pid"]
            for entry in index.entries()
            if entry.get("host") == host and entry.get("pid") != me and _alive(entry.get("pid"))
        ]
    except Exception:  # noqa: BLE001 - the cache does not answer: nothing to tell by
        return
    if others:
        logging.getLogger("drf_grip").warning(
            "several processes serve drf-grip's embedded GRIP proxy at %s (this one, %d, and "
            "%s): each holds only the clients that reached it, and a change saved through "
            "one reaches none of the clients another holds. Run one process (one uvicorn "
            "worker), or several behind Pushpin or Fanout (set GRIP_URL).",
            redact_url(str(grip_settings.EMBEDDED_URL)),
            me,
            ", ".join(str(pid) for pid in sorted(others)),
        )


def _alive(pid: Any) -> bool:
    import os

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def writes_first(app: Any) -> Any:
    """``app`` with the proxy's re-holds waiting while a write runs (``grip/writes_first.py``),
    configured by ``DRF_GRIP``'s ``REHOLD_CONCURRENCY`` and ``REHOLD_MAX_WAIT``."""
    from .conf import grip_settings
    from .grip.writes_first import WritesFirst

    return WritesFirst(
        app,
        concurrency=int(grip_settings.REHOLD_CONCURRENCY),
        max_wait=float(grip_settings.REHOLD_MAX_WAIT),
    )


def request_threads(app: Any) -> Any:
    """``app`` with its requests' threads kept for the next requests
    (``grip/request_threads.py``), as many idle as ``DRF_GRIP``'s ``REQUEST_THREADS_IDLE``
    says; 0 leaves ``app`` as it is."""
    from .conf import grip_settings
    from .grip.request_threads import RequestThreads

    idle = int(grip_settings.REQUEST_THREADS_IDLE)
    return RequestThreads(app, idle=idle) if idle else app


def wrap_application(app: Any, **proxy_options: Any) -> Any:
    """``app`` with request threads kept and writes first, behind the embedded proxy when no
    GRIP proxy is configured."""
    app = writes_first(request_threads(app))
    if not uses_embedded_proxy():
        return refuse_websockets(app)
    return embedded_proxy(app, **proxy_options)


def refuse_websockets(app: Any) -> Any:
    """``app`` as the origin behind a GRIP proxy.

    WebSocket connections made straight to it are refused. Behind a GRIP proxy the proxy
    holds WebSockets and the origin sees WebSocket-over-HTTP; a client that bypasses it got
    Django's 500 ("Django can only handle ASGI/HTTP connections", a seeds probe). The
    handshake is refused (uvicorn answers 403) and the log says why.

    ASGI lifespan is answered, and its shutdown runs the bounded flush of what is queued
    for the proxy (:func:`drf_grip.grip.publisher.run_exit_handlers`). uvicorn stops on
    SIGTERM by raising that signal again once it has shut down, with the default handler
    back (``uvicorn/server.py``, ``capture_signals``): the process died without ``atexit``,
    and changes queued while the proxy was slow or restarting were dropped without a word
    (publishing probe: a deploy's restart). Django's own handler refuses lifespan."""
    logger = logging.getLogger("drf_grip")

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        logger.warning(
            "drf-grip: refused a WebSocket connection to %s made straight to this origin; "
            "WebSockets go through the GRIP proxy (GRIP_URL) in front of it",
            scope.get("path", "?"),
        )
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})

    application.app = app  # type: ignore[attr-defined]  # find_proxy() and tests look inside
    return application


async def _lifespan(receive: Any, send: Any) -> None:
    import asyncio

    from .grip.publisher import exit_handlers_run_by_server, run_exit_handlers

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            exit_handlers_run_by_server()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(run_exit_handlers)
            await send({"type": "lifespan.shutdown.complete"})
            return


def get_asgi_application(**proxy_options: Any) -> Any:
    """Django's ASGI app (``django.setup()`` included), wrapped as :func:`wrap_application` says."""
    from django.core.asgi import get_asgi_application as django_asgi_application

    return wrap_application(django_asgi_application(), **proxy_options)
