"""The WebSocket APIs of django-websocket and django-pistoke, on GRIP's WebSocket-over-HTTP.

Function views (django-websocket)::

    @require_websocket
    def echo_once(request):
        message = request.websocket.wait()
        request.websocket.send(message)

Class-based views (django-pistoke): WebSocket traffic goes to ``websocket()``, which by
default calls ``websocket_open()``, ``websocket_message()`` for each message and
``websocket_close()``; HTTP methods work as in any Django ``View``.

What differs from a socket, and why: one WebSocket-over-HTTP request carries one *batch* of
events (often one message) and the view runs once per batch, so ``request.websocket`` reads
only that batch. ``wait()`` never blocks: like ``read()`` it returns ``None`` once the batch is
exhausted, and iteration ends there. A connection is accepted when the view runs without
refusing it (a non-2xx response); state that must outlive a batch goes in
``request.wscontext.meta`` or in channel subscriptions (``request.wscontext.subscribe``).

``attach(request)`` installs ``request.is_websocket()`` and ``request.websocket``;
``GripMiddleware`` calls it for every request, and the decorators call it when the middleware
is not installed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.decorators import classonlymethod
from django.views import View

from ..protocol.events import MalformedEvents
from .websocket_context import WebSocketContext
from .websocket_decorators import websocket_only, websocket_view
from .websocket_request import (
    EndOfBatch,
    InvalidMessage,
    WebSocket,
    attach,
    decode_json,
    encode_json,
)

__all__ = [
    "InvalidMessage",
    "JSONWebSocketView",
    "MalformedEvents",
    "WebSocket",
    "WebSocketView",
    "accept_websocket",
    "attach",
    "require_websocket",
    "websocket_only",
]

V = TypeVar("V", bound=Callable[..., Any])


def _attach_if_needed(request: HttpRequest, ctx: WebSocketContext) -> None:
    websocket = getattr(request, "websocket", None)
    if websocket is None or websocket.context is not ctx:
        attach(request)
    return None


def require_websocket(view: V) -> V:
    """django-websocket's decorator: WebSocket requests only (others get 400); the connection
    is accepted unless the view answers with a non-2xx response."""
    return websocket_view(view, allow_http=False, auto_accept=True, prepare=_attach_if_needed)


def accept_websocket(view: V) -> V:
    """Like ``require_websocket``, but plain HTTP requests reach the view too (CSRF-checked as
    usual); tell them apart with ``request.is_websocket()``."""
    return websocket_view(view, allow_http=True, auto_accept=True, prepare=_attach_if_needed)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _run(result: Any) -> Any:
    """A hook's result; an ``async def`` hook's coroutine is run to its end here (the view
    runs in Django's sync thread), where calling it alone would never run its body."""
    return async_to_sync(_awaited)(result) if inspect.isawaitable(result) else result


class WebSocketView(View):
    """A class-based view whose WebSocket traffic goes to ``websocket()`` (django-pistoke).

    Override ``websocket()`` to handle a batch yourself (``def`` or, as in django-pistoke,
    ``async def``), or the hooks it calls (``def`` or ``async def``). An opening connection
    is refused with 400 when the view has ``subprotocols`` and the client offers none of
    them; ``select_subprotocol`` can decide otherwise.
    """

    #: Subprotocols this view speaks, in order of preference.
    subprotocols: ClassVar[Sequence[str]] = ()

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponse]:
        view = super().as_view(**initkwargs)
        return accept_websocket(view)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        ctx: WebSocketContext | None = getattr(request, "wscontext", None)
        if ctx is None:
            return super().dispatch(request, *args, **kwargs)
        if ctx.is_opening():
            refused = self.websocket_handshake(request, ctx)
            if refused is not None:
                return refused
        else:
            # Only the opening answer names the subprotocol, but the proxy sends the client's
            # handshake headers with every batch (Pushpin and the embedded proxy alike), so
            # the same choice is made again: django-pistoke's ``request.protokolla`` lasted
            # the whole connection.
            ctx.subprotocol = self.select_subprotocol(request, ctx.protocols)
        request.receive = functools.partial(self._receive, request)
        request.send = functools.partial(self._send_async, request)
        answer = self.websocket(request, *args, **kwargs)
        if inspect.isawaitable(answer):
            # django-pistoke's ``async def websocket(self, request)``: Django runs a class
            # with no async HTTP handler as a sync view, so the batch is awaited here.
            try:
                answer = _run(answer)
            except EndOfBatch:
                return None  # it waits for the next message: the connection stays open
        return answer

    async def _receive(self, request: HttpRequest) -> Any:
        """django-pistoke's ``await request.receive()`` in this view: the next message of the
        batch, decoded as ``websocket_message`` gets it (pistoke's JSON protocol returned
        parsed JSON); one ``decode_message`` refuses goes to ``websocket_invalid``."""
        websocket: WebSocket = request.websocket
        while True:
            message = await websocket.receive()
            try:
                return self.decode_message(message)
            except InvalidMessage as exc:
                invalid = self.websocket_invalid(request, message, exc)
                if inspect.isawaitable(invalid):
                    await invalid

    async def _send_async(self, request: HttpRequest, data: Any) -> None:
        """django-pistoke's ``await request.send(data)`` in this view: ``encode_message``."""
        request.websocket.send(self.encode_message(data))

    def websocket_handshake(
        self, request: HttpRequest, ctx: WebSocketContext
    ) -> HttpResponse | None:
        """Choose the subprotocol of an opening connection, or refuse it."""
        chosen = self.select_subprotocol(request, ctx.protocols)
        if chosen is not None:
            ctx.subprotocol = chosen
        elif self.subprotocols:
            # Browsers fail a handshake that offered subprotocols and got none back; a client
            # that offered none cannot speak this endpoint's (django-pistoke refused both).
            offered = ", ".join(ctx.protocols) or "none"
            return HttpResponseBadRequest(
                f"No acceptable WebSocket subprotocol: offered {offered}; "
                f"this endpoint speaks {', '.join(self.subprotocols)}.\n",
                content_type="text/plain",
            )
        return None

    def select_subprotocol(self, request: HttpRequest, offered: Sequence[str]) -> str | None:
        """The first subprotocol the client offered that is among ``subprotocols``: the client
        lists them in its order of preference (RFC 6455 §4.1), as django-pistoke chose."""
        return next((p for p in offered if p in self.subprotocols), None)

    def websocket(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        """Handle one batch: open, then each message, then close. Return a non-2xx response
        from ``websocket_open`` to refuse the connection."""
        ws: WebSocket = request.websocket
        if request.wscontext.is_opening():
            response = _run(self.websocket_open(request))
            if response is not None:
                return response
        for message in ws:
            try:
                decoded = self.decode_message(message)
            except InvalidMessage as exc:
                _run(self.websocket_invalid(request, message, exc))
                continue
            _run(self.websocket_message(request, decoded))
        if ws.close_code is not None or request.wscontext.disconnected:
            _run(self.websocket_close(request, ws.close_code))
        return None

    def decode_message(self, message: str | bytes) -> Any:
        """Turn a client message into what ``websocket_message`` receives (as is, here)."""
        return message

    def encode_message(self, data: Any) -> Any:
        """Turn what the view sends with ``await request.send()`` into a message (``str``
        text, ``bytes`` binary, as is here)."""
        return data

    def websocket_open(self, request: HttpRequest) -> HttpResponse | None:
        """A client connects; return a non-2xx response to refuse it."""
        return None

    def websocket_message(self, request: HttpRequest, message: Any) -> None:
        """A client message; reply with ``request.websocket.send()``."""

    def websocket_invalid(
        self, request: HttpRequest, message: str | bytes, error: InvalidMessage
    ) -> None:
        """A message ``decode_message`` refused; the connection stays open."""

    def websocket_close(self, request: HttpRequest, code: int | None) -> None:
        """The client closed (``code``) or went away (``None``)."""


class JSONWebSocketView(WebSocketView):
    """A ``WebSocketView`` speaking JSON: ``websocket_message`` gets parsed JSON, a message
    that is not JSON is answered with ``{"error": reason}``; reply with
    ``request.websocket.send_json``."""

    def decode_message(self, message: str | bytes) -> Any:
        return decode_json(message)

    def encode_message(self, data: Any) -> str:
        return encode_json(data)

    def websocket_invalid(
        self, request: HttpRequest, message: str | bytes, error: InvalidMessage
    ) -> None:
        request.websocket.send_json({"error": str(error)})
