"""Serving a ``GripProxy`` with uvicorn, with a shutdown that answers held clients first."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from .app import GripProxy

__all__ = ["Server", "find_proxy"]


def find_proxy(app: Any, depth: int = 8) -> GripProxy | None:
    """The ``GripProxy`` in a chain of wrapping ASGI apps (``.application``/``.app``), if any."""
    for _ in range(depth):
        if isinstance(app, GripProxy):
            return app
        app = getattr(app, "application", None) or getattr(app, "app", None)
        if app is None:
            return None
    return None


class Server(uvicorn.Server):
    """``uvicorn.Server`` that lets the embedded proxy answer its held clients on shutdown.

    uvicorn waits for open connections to end *before* it sends lifespan shutdown, so a held
    stream would keep it waiting forever; this subclass calls :meth:`GripProxy.shutdown`
    first (held long-polls get their timeout response, streams end, WebSockets get a close
    frame).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        proxy: GripProxy | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.proxy = proxy if proxy is not None else find_proxy(config.app)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.proxy is not None:
            try:
                await asyncio.wait_for(self.proxy.shutdown(), self.proxy.shutdown_timeout + 1)
            except asyncio.TimeoutError:
                pass
        await super().shutdown(sockets)
