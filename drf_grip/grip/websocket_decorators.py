"""Running a view for WebSocket-over-HTTP: ``serve_websocket_view``, the machinery behind
every WebSocket decorator, and django-grip's ``websocket_only``.

The decorators work with or without ``GripMiddleware``: without it they build
``request.wscontext`` themselves. They mark the view ``csrf_exempt`` because a WebSocket
handshake carries no CSRF token; the ``Origin`` check protects WebSocket requests instead, and
plain HTTP requests to a view that also takes them are still CSRF-checked.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from ..protocol.events import MalformedEvents
from .signature import unsigned_events_refused, unsigned_events_response
from .websocket_context import WebSocketContext
from .websocket_origin import check_csrf, origin_allowed
from .websocket_over_http import context_from_request, finish_response
from .websocket_request import EndOfBatch, attach

__all__ = ["serve_websocket_view", "websocket_only", "websocket_view"]

V = TypeVar("V", bound=Callable[..., Any])


def _before_view(
    request: HttpRequest,
    view: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    allow_http: bool,
    prepare: Callable[[HttpRequest, WebSocketContext], HttpResponse | None] | None,
) -> HttpResponse | None:
    """What happens before the view: the final answer, or ``None`` to run the view."""
    if not hasattr(request, "wscontext"):  # no GripMiddleware in front
        try:
            request.wscontext = context_from_request(request)
        except MalformedEvents as exc:
            return HttpResponseBadRequest(
                f"Malformed WebSocket events: {exc}\n", content_type="text/plain"
            )
        attach(request)
    ctx: WebSocketContext | None = request.wscontext
    if ctx is None:
        if not allow_http:
            return HttpResponseBadRequest(
                "This URL only accepts WebSocket connections (WebSocket-over-HTTP through a "
                "GRIP proxy).\n",
                content_type="text/plain",
            )
        return check_csrf(request, view, args, kwargs)
    if unsigned_events_refused(request):
        return unsigned_events_response()
    if not origin_allowed(request):
        return finish_response(
            request,
            HttpResponse(
                "Forbidden: this WebSocket's Origin is neither this server's own (scheme, "
                "host and port) nor in CSRF_TRUSTED_ORIGINS.\n",
                status=403,
                content_type="text/plain",
            ),
        )
    if prepare is not None:
        refused = prepare(request, ctx)
        if refused is not None:
            return finish_response(request, refused)
    return None


def _after_view(
    request: HttpRequest, response: HttpResponse | None, *, auto_accept: bool
) -> HttpResponse:
    ctx: WebSocketContext | None = request.wscontext
    if ctx is None:
        return response  # type: ignore[return-value]  # plain HTTP: Django checks it
    if auto_accept and (response is None or 200 <= response.status_code < 300):
        if ctx.is_opening() and not ctx.accepted:
            ctx.accept()
        # django-websocket and django-pistoke: the connection lasts as long as the view, so
        # returning closes it (their README's ``echo_once``). A view runs once per batch
        # here: one that asked for more than its batch held (iteration, ``wait()``) would
        # have gone on with the socket; one that returned before that was done with it. A
        # client's close is echoed instead (``build_response``).
        if not (
            ctx.read_past_batch
            or ctx.closed
            or any(e.type in ("CLOSE", "DISCONNECT") for e in ctx.in_events)
        ):
            ctx.close()
    return finish_response(request, response)


def serve_websocket_view(
    request: HttpRequest,
    view: Callable[..., HttpResponse | None],
    args: tuple,
    kwargs: dict,
    *,
    allow_http: bool,
    auto_accept: bool,
    prepare: Callable[[HttpRequest, WebSocketContext], HttpResponse | None] | None = None,
) -> HttpResponse:
    """Run ``view`` for a WebSocket-over-HTTP request; the machinery behind the decorators.

    Non-WebSocket requests get 400 unless ``allow_http`` (then the view runs as usual, CSRF
    checked). WebSocket requests: Origin check (403), ``prepare(request, ctx)`` (may answer
    instead of the view), the view, then ``finish_response``. ``auto_accept`` takes
    django-websocket's rules: a connection the view did not refuse is accepted, and one the
    view returned from without reading past its batch is closed.
    """
    answer = _before_view(request, view, args, kwargs, allow_http=allow_http, prepare=prepare)
    if answer is not None:
        return answer
    return _after_view(request, view(request, *args, **kwargs), auto_accept=auto_accept)


def websocket_view(view: V, *, allow_http: bool, auto_accept: bool, prepare: Any = None) -> V:
    wrapped: Any
    if iscoroutinefunction(view):

        @wraps(view)
        async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            answer = _before_view(
                request, view, args, kwargs, allow_http=allow_http, prepare=prepare
            )
            if answer is not None:
                return answer
            try:
                response = await view(request, *args, **kwargs)
            except EndOfBatch:
                response = None  # ``await request.receive()`` past the batch: stays open
            return _after_view(request, response, auto_accept=auto_accept)

    else:

        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return serve_websocket_view(
                request,
                view,
                args,
                kwargs,
                allow_http=allow_http,
                auto_accept=auto_accept,
                prepare=prepare,
            )

    # A WebSocket handshake carries no CSRF token; the Origin check stands in for it, and
    # plain HTTP requests are CSRF-checked inside (see _check_csrf).
    wrapped.csrf_exempt = True
    # GripMiddleware.process_exception: a view made for WebSockets keeps its 500s.
    wrapped.takes_websockets = True
    return wrapped  # type: ignore[no-any-return]


def websocket_only(view: V) -> V:
    """django-grip's decorator: WebSocket-over-HTTP requests only (others get 400), and the view
    need not return a response. The view accepts an opening connection itself with
    ``request.wscontext.accept()``; an opening it does not accept is refused with 403."""
    return websocket_view(view, allow_http=False, auto_accept=False)
