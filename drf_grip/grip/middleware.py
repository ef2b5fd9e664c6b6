"""``GripMiddleware``: tells views whether a GRIP proxy is in front and turns their
instructions into ``Grip-*`` response headers (django-grip's API, without its bugs)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound

from ..conf import grip_settings
from ..protocol import Instruct, MalformedEvents
from .signature import check_grip_sig, unsigned_events_refused, unsigned_events_response
from .websocket_over_http import context_from_request, finish_response
from .websocket_request import attach, hide

__all__ = [
    "GripMiddleware",
    "GripRequest",
    "parse_grip_last",
    "proxy_required_response",
    "register_path_handler",
    "serves_requests",
]

logger = logging.getLogger("drf_grip")

_LAST = re.compile(r'\s*([^;,\s]+)\s*;\s*last-id\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


def parse_grip_last(value: str, prefix: str = "") -> dict[str, str]:
    """``Grip-Last: ch; last-id=X, ch2; last-id=Y`` -> ``{ch: X, ch2: Y}`` without the prefix."""
    out: dict[str, str] = {}
    for name, last_id in _LAST.findall(value or ""):
        if last_id.startswith('"'):
            last_id = re.sub(r"\\(.)", r"\1", last_id[1:-1])
        if prefix and name.startswith(prefix):
            name = name[len(prefix):]
        out[name] = last_id
    return out


class GripRequest:
    """``request.grip``: what the proxy told us, and what we will tell it."""

    def __init__(self, request: HttpRequest) -> None:
        meta = request.META
        self.proxied, self.signed = check_grip_sig(meta.get("HTTP_GRIP_SIG"))
        features = meta.get("HTTP_GRIP_FEATURE", "") if self.proxied else ""
        self.features: set[str] = {f.strip() for f in features.split(",") if f.strip()}
        # Grip-Last is only meaningful (and only trusted) from the proxy.
        self.last: dict[str, str] = (
            parse_grip_last(meta.get("HTTP_GRIP_LAST", ""), grip_settings.prefix)
            if self.proxied
            else {}
        )
        self.instruct: Instruct | None = None

    def start_instruct(self) -> Instruct:
        if self.instruct is None:
            self.instruct = Instruct(prefix=grip_settings.prefix)
        return self.instruct

    @property
    def is_next_link(self) -> bool:
        """A next-link request from Pushpin: a bare GET with ``Grip-Last`` only."""
        return bool(self.last)


def prepare_plain(request: HttpRequest) -> None:
    """What every view may read of a request, WebSocket events aside: ``request.grip``,
    ``grip_proxied``, ``grip_signed``, ``wscontext`` (``None``) and django-websocket's
    ``is_websocket()`` and ``websocket``."""
    grip = GripRequest(request)
    request.grip = grip
    request.grip_proxied = grip.proxied
    request.grip_signed = grip.signed
    request.wscontext = None
    attach(request)


PathHandler = Callable[[HttpRequest, str], HttpResponse]
_path_handlers: dict[str, PathHandler] = {}


def register_path_handler(prefix: str, handler: PathHandler) -> None:
    """Answer ``GET /<prefix><rest>`` in the middleware, before the URLconf: paths the proxy
    itself fetches, such as stream next links, need no entry in a project's URLconf. A
    higher layer registers them (the DRF layer's next links, from ``DrfGripConfig.ready``),
    so this layer never imports it."""
    _path_handlers[prefix.lstrip("/")] = handler


def _proxy_path(request: HttpRequest) -> Callable[[HttpRequest], HttpResponse] | None:
    """The registered handler that answers this request (a sync call), if any."""
    if request.method != "GET" or not _path_handlers:
        return None
    path = request.path_info.lstrip("/")
    for prefix, handler in _path_handlers.items():
        if path.startswith(prefix):
            rest = path[len(prefix):].strip("/")
            return lambda request, handler=handler, rest=rest: handler(request, rest)
    return None


#: Whether a request handler with this middleware was built in this process: it serves
#: requests (runserver, a worker, a test client), unlike a shell or a Celery worker.
_serving = False


def serves_requests() -> bool:
    return _serving


def proxy_required_response() -> HttpResponse:
    """The answer to a direct request that would be held, with ``GRIP_PROXY_REQUIRED``."""
    return HttpResponse(
        "Not Implemented: this resource needs a GRIP proxy.\n",
        status=501,
        content_type="text/plain",
    )


def _served_as_accept_websocket(
    request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
) -> HttpResponse:
    """django-websocket's middleware rules: a view whose ``accept_websocket`` attribute is
    ``True``, or every view with ``WEBSOCKET_ACCEPT_ALL = True``, takes WebSockets as if
    decorated with ``accept_websocket`` (its README; it answered "didn't return an
    HttpResponse" with 500 here, seeds probe)."""
    from .websocket_decorators import websocket_view

    served = websocket_view(view_func, allow_http=True, auto_accept=True)
    if iscoroutinefunction(served):  # an ``async def`` view: this hook runs in a thread
        served = async_to_sync(served)
    return served(request, *args, **kwargs)


def _routes_websockets(view_class: type) -> bool:
    """django-pistoke's rule for any class-based view: one that allows the ``websocket``
    method (``http_method_names``) and has one takes WebSocket traffic there."""
    return "websocket" in getattr(view_class, "http_method_names", ()) and callable(
        getattr(view_class, "websocket", None)
    )


#: Per view class allowing ``websocket``, its ``WebSocketView`` twin (``_websocket_twin``).
_twins: dict[type, type] = {}
_twins_lock = threading.Lock()


def _served_as_websocket_view(
    request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any
) -> HttpResponse:
    """A WebSocket request to a class-based view that allows ``websocket`` but is no
    ``WebSocketView`` (django-pistoke: "View.dispatch routes a WebSocket request to the
    class's ``websocket`` method"): served by its ``WebSocketView`` twin, with the view's
    own ``as_view()`` arguments. Its HTTP requests go to the view as it is. The handshake
    was refused 405 (the test client) or 403 (CSRF, through a proxy; seeds probe)."""
    twin = _websocket_twin(view_func.view_class)  # type: ignore[attr-defined]
    served = twin.as_view(**getattr(view_func, "view_initkwargs", {}))
    return served(request, *args, **kwargs)


def _websocket_twin(view_class: type) -> type:
    from .websocket_views import WebSocketView

    with _twins_lock:
        twin = _twins.get(view_class)
        if twin is None:
            twin = type(view_class.__name__, (view_class, WebSocketView), {
                "__module__": view_class.__module__,
                "__qualname__": view_class.__qualname__,
                # Django refuses a class whose handlers mix ``def`` and ``async def``
                # (View.view_is_async); the twin serves WebSocket batches only, which
                # ``WebSocketView.dispatch`` runs as sync code.
                "http_method_names": [
                    m for m in view_class.http_method_names  # type: ignore[attr-defined]
                    if m != "websocket"
                ],
                "view_is_async": False,
            })
            _twins[view_class] = twin
        return twin


def _slash_missing(request: HttpRequest) -> bool:
    """A WebSocket's URL that ``APPEND_SLASH`` would redirect (``/api/ws`` for ``/api/ws/``).
    A handshake cannot follow a redirect, and the proxy sends it as a POST, for which
    Django's ``CommonMiddleware`` raises under ``DEBUG`` (a 500, security probe): the same
    test as Django's, answered with a 404 that names the right URL."""
    from django.middleware.common import CommonMiddleware

    path = getattr(request, "path_info", None)  # django-grip's tests pass a bare request
    if not isinstance(path, str) or path.endswith("/"):
        return False
    return CommonMiddleware(lambda r: None).should_redirect_with_slash(request)


class GripMiddleware:
    """Place early in ``MIDDLEWARE``: it must see the raw request and the final response.

    A new-style middleware. django-grip's hooks are here too, for code that drives the
    middleware by hand (django-grip's own tests do): :meth:`process_request`,
    :meth:`process_view`, :meth:`process_response`. Called by hand they keep django-grip's
    looser rules for a request that did not come through the proxy (``Meta-*`` headers and a
    missing ``Connection-Id`` accepted, ``Grip-*`` headers on the response); as installed
    middleware a direct client's ``Meta-*`` are ignored and it gets a plain HTTP answer.
    """

    # Both modes: under ASGI a sync-only middleware costs every request two more thread
    # hops (Django adapts the async handler below it with async_to_sync, then runs the view
    # with sync_to_async); what this one does around the view is parsing and header work.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any] | None = None) -> None:
        global _serving
        _serving = _serving or get_response is not None
        self.get_response = get_response
        self._async = get_response is not None and iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        refused = self._prepare(request, trust_direct=False)
        if refused is not None:
            return refused
        answer = _proxy_path(request) or self.get_response
        assert answer is not None
        return self._finish(request, answer(request), direct_headers=False)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        refused = self._prepare(request, trust_direct=False)
        if refused is not None:
            return refused
        path_handler = _proxy_path(request)
        if path_handler is not None:
            response = await sync_to_async(path_handler, thread_sensitive=True)(request)
        else:
            assert self.get_response is not None
            response = await self.get_response(request)
        if request.wscontext is not None:  # a WebSocket view's answer: may run its code
            return await sync_to_async(self._finish, thread_sensitive=True)(
                request, response, direct_headers=False
            )
        return self._finish(request, response, direct_headers=False)

    # -- django-grip's hooks -----------------------------------------------------------------

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        """Set ``request.grip``, ``grip_proxied``, ``grip_signed`` and ``wscontext``; a 400
        for malformed WebSocket events."""
        return self._prepare(request, trust_direct=True)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        """A view marked ``websocket_only = True`` by hand gets only WebSocket-over-HTTP
        requests (``drf_grip.websocket_only`` checks this itself)."""
        websocket_only = getattr(view_func, "websocket_only", False) is True
        ctx = getattr(request, "wscontext", None)
        if websocket_only and ctx is None:
            return HttpResponseBadRequest(
                "Request must contain WebSocket events.\n", content_type="text/plain"
            )
        takes = websocket_only or bool(getattr(view_func, "takes_websockets", False))
        request._grip_takes_websockets = takes
        if not takes and ctx is not None:
            view_class = getattr(view_func, "view_class", None)
            if view_class is not None and _routes_websockets(view_class):
                return _served_as_websocket_view(request, view_func, view_args, view_kwargs)
            if (
                getattr(view_func, "accept_websocket", False) is True
                or getattr(settings, "WEBSOCKET_ACCEPT_ALL", False) is True
            ):
                return _served_as_accept_websocket(request, view_func, view_args, view_kwargs)
            # A view in django-websocket's idiom without its attribute took the socket
            # branch, returned None and answered the handshake 500 (seeds probe).
            hide(request)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A WebSocket handshake that reached a view made for HTTP only (no WebSocket
        decorator or class), which failed on it before accepting it: a 400 refusing the
        handshake, not a 500. django-grip's README stream view read ``request.POST['data']``
        from the handshake's events and answered 500 (seeds probe; django-websocket's
        middleware rejected WebSockets for such views). A view that takes WebSockets, or one
        that accepted the connection, keeps its 500."""
        ctx = getattr(request, "wscontext", None)
        if (
            ctx is None
            or not ctx.is_opening()
            or ctx.accepted
            or getattr(request, "_grip_takes_websockets", True)
        ):
            return None
        logger.warning(
            "WebSocket handshake for %s refused: its view takes no WebSockets and raised %s",
            request.path,
            type(exception).__name__,
        )
        return HttpResponseBadRequest(
            f"No WebSocket at {request.path}: its view serves HTTP only.\n",
            content_type="text/plain",
        )

    def process_response(self, request: HttpRequest, response: HttpResponse | None) -> HttpResponse:
        """The events answer of a WebSocket-over-HTTP request, then the ``Grip-*`` headers."""
        return self._finish(request, response, direct_headers=True)

    # -- the two halves ----------------------------------------------------------------------

    def _prepare(self, request: HttpRequest, *, trust_direct: bool) -> HttpResponse | None:
        prepare_plain(request)
        try:
            request.wscontext = context_from_request(request, trust_direct=trust_direct)
        except MalformedEvents as exc:
            return HttpResponseBadRequest(
                f"Malformed WebSocket events: {exc}\n", content_type="text/plain"
            )
        if request.wscontext is not None and unsigned_events_refused(request):
            request.wscontext = None  # nothing of them runs, nor answers as events
            return unsigned_events_response()
        if request.wscontext is not None and _slash_missing(request):
            request.wscontext = None
            return HttpResponseNotFound(
                f"No WebSocket at {request.path}: its URL ends with a slash, "
                f"{request.path}/\n",
                content_type="text/plain",
            )
        attach(request)
        return None

    def _finish(
        self, request: HttpRequest, response: HttpResponse | None, *, direct_headers: bool
    ) -> HttpResponse:
        if getattr(request, "wscontext", None) is not None:
            response = finish_response(request, response)
        assert response is not None
        if response.status_code == 304 and response.has_header("Content-Length"):
            # A 304's Content-Length must be the 200's or absent (RFC 9110 §8.6); Django's
            # CommonMiddleware, inside this one, gave a direct client's 304 its own, 0.
            del response["Content-Length"]
        return self.apply_instruct(request, response, direct_headers=direct_headers)

    def apply_instruct(
        self, request: HttpRequest, response: HttpResponse, *, direct_headers: bool = False
    ) -> HttpResponse:
        instruct = request.grip.instruct
        if instruct is None or instruct.is_empty():
            return response
        if not request.grip.proxied:
            if instruct.holds and grip_settings.proxy_required:
                return proxy_required_response()
            if not direct_headers:
                # Direct client: the response stands on its own (e.g. a plain 304).
                return response
        status = response.status_code
        for name, value in instruct.headers(status, response.reason_phrase).items():
            response[name] = value
        if status == 304 and instruct.holds and request.grip.proxied:
            # Apache httpd (mod_wsgi) sends a 304 with a fixed list of headers only
            # (modules/http/http_filters.c), so Grip-Hold and Grip-Channel would not reach
            # the proxy and the client would be answered at once, again and again. Held as a
            # 200, as django-grip holds it: Grip-Status (set above) is what the proxy answers.
            response.status_code = 200
            response.reason_phrase = "OK"
        return response
