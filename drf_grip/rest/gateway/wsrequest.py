"""django-websocket-request's ``WebSocketRequest``: one ``{method, url, data, token}`` message
answered by the URLconf, for a server of your own that carries the socket (SockJS, Tornado, a
worker reading a queue).

The gateway (``RealtimeGateway``) takes the same messages over GRIP, with the connection's
cookies and subscriptions; this class keeps the older API for code written against it:
``WebSocketRequest(message).get_response()``, the step methods it is made of, ``error`` as
``{"error": ..., "status_code": ...}`` and ``Authorization: JWT <token>``. Messages are checked
like the gateway's (``inner_requests``), so what the gateway refuses with a 400 this refuses
too; an invalid message's ``get_response()`` is a JSON response carrying ``error``, so that
``response.content`` is always something to send back.
"""

from __future__ import annotations

import asyncio
import functools
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlencode

from asgiref.sync import async_to_sync, sync_to_async
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test.client import RequestFactory
from django.urls import Resolver404, ResolverMatch, resolve

from ...grip.middleware import prepare_plain
from ...grip.websocket_request import InvalidMessage, decode_json
from .inner_requests import check_method, inner_headers, split_url
from .messages import MessageError

__all__ = ["WebSocketRequest"]


class WebSocketRequest:
    """A REST call carried by one WebSocket message, answered without a connection."""

    #: ``token`` becomes ``Authorization: <token_keyword> <token>`` (the seed's scheme; the
    #: gateway's default is DRF's ``Token``).
    token_keyword = "JWT"

    def __init__(
        self, message: str | bytes, factory_defaults: dict[str, Any] | None = None
    ) -> None:
        """Checked at once, as the seed did: an invalid message has its ``error`` set before
        any step runs. ``factory_defaults`` are WSGI environ values for the request (the
        socket server's ``REMOTE_ADDR``, ``SERVER_NAME``…), applied after the token's
        header, so a server that passes ``HTTP_AUTHORIZATION`` itself has the last word."""
        self.message = message
        self.factory_defaults = factory_defaults
        self.error: dict[str, Any] | None = None
        self.json_message: dict[str, Any] = {}
        self.is_valid()

    def __repr__(self) -> str:  # the message may carry a token: never shown
        return f"<{type(self).__name__}>"

    # -- the message's parts ----------------------------------------------------------------

    def get_url(self) -> Any:
        return self.json_message.get("url")

    def get_method(self) -> str:
        method = self.json_message.get("method", "GET")
        return method.lower() if isinstance(method, str) else method

    def get_data(self) -> Any:
        return self.json_message.get("data", {})

    def get_token(self) -> Any:
        return self.json_message.get("token")

    def set_error(self, error_message: str, status_code: int = 400) -> None:
        self.error = {"error": error_message, "status_code": status_code}

    # -- checks -----------------------------------------------------------------------------

    def is_valid_message(self) -> bool:
        """Whether the message is a JSON object; if not, ``error`` says so (400)."""
        try:
            parsed = decode_json(self.message)
        except (InvalidMessage, TypeError):
            parsed = None
        if not isinstance(parsed, dict):
            self.set_error("Invalid formatted message.")
            return False
        self.json_message = parsed
        return True

    def is_valid(self) -> bool:
        """Whether the message can run: a JSON object with a method this API speaks, a local
        URL the URLconf serves (404 otherwise), and a token a header can carry."""
        if not self.is_valid_message():
            return False
        self.url = self.get_url()
        self.method = self.get_method()
        self.data = self.get_data()
        self.token = self.get_token()
        if isinstance(self.token, int) and not isinstance(self.token, bool):
            self.token = str(self.token)  # the seed formatted any token: ``JWT 123``
        if not self.url:
            self.set_error("Missing URL")
            return False
        try:
            check_method(self.method)
            split_url(self.url)
            if self.token is not None:
                inner_headers({"token": self.token}, self.token_keyword)
        except MessageError as exc:
            self.set_error(exc.reason, exc.status)
            return False
        return self.get_url_resolver_match() is not None

    def get_url_resolver_match(self) -> ResolverMatch | None:
        """The view the URL resolves to, or ``None`` with a 404 in ``error``."""
        try:
            return resolve(unquote(split_url(self.url)[0]))
        except (Resolver404, MessageError):
            self.set_error("Resource not found.", 404)
            return None

    # -- running it -------------------------------------------------------------------------

    def get_factory(self) -> RequestFactory:
        defaults = {}
        if self.token:
            defaults["HTTP_AUTHORIZATION"] = f"{self.token_keyword} {self.token}"
        defaults.update(self.factory_defaults or {})
        return RequestFactory(**defaults)

    def get_request(self, factory: RequestFactory) -> HttpRequest:
        """The message as a request: a GET's or HEAD's ``data`` as query parameters after the
        URL's own, any other method's as a JSON body."""
        method = self.method.upper()
        path, query = split_url(self.url)
        if method in ("GET", "HEAD"):
            if isinstance(self.data, dict) and self.data:
                extra = urlencode(self.data, doseq=True)
                query = f"{query}&{extra}" if query else extra
            request = factory.generic(method, f"{path}?{query}" if query else path)
        else:
            body = json.dumps(self.data, separators=(",", ":"))
            request = factory.generic(method, self.url, body, content_type="application/json")
        # No middleware runs here, as in the seed; a view written for django-grip still reads
        # ``request.grip_proxied`` (an AttributeError, a 500, before: seeds probe).
        prepare_plain(request)
        return request

    def get_view(self, resolver_match: ResolverMatch, request: HttpRequest) -> HttpResponse:
        """The resolved view's answer, rendered; an exception becomes the response Django's
        handler would send for it (404, 403, 400, 500)."""
        request.resolver_match = resolver_match
        try:
            response = resolver_match.func(request, *resolver_match.args, **resolver_match.kwargs)
            if hasattr(response, "__await__"):
                response = async_to_sync(_awaited)(response)
        except Exception as exc:  # noqa: BLE001 - answered like Django's handler answers it
            return response_for_exception(request, exc)
        render = getattr(response, "render", None)
        if callable(render) and not getattr(response, "is_rendered", True):
            response = render()
        return response

    def get_response(self) -> HttpResponse:
        """The view's answer to the message, or a JSON response carrying ``error``.

        Called where an event loop runs (the seed's own example answers in a Tornado
        handler; an asyncio server's), it answers from a thread of its own, blocking the
        loop as the seed's call did: Django's ORM refuses to run in a thread with a running
        event loop (``SynchronousOnlyOperation``, a 500 for every view that reads the
        database; seeds probe). ``await aget_response()`` does not block the loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._answer()
        return _worker().submit(self._answer).result()

    async def aget_response(self) -> HttpResponse:
        """:meth:`get_response` for a coroutine: the answer is made in Django's thread for
        synchronous code, as an async view's ORM calls are (``sync_to_async``)."""
        return await sync_to_async(self._answer)()

    def _answer(self) -> HttpResponse:
        if not self.is_valid():
            assert self.error is not None
            return JsonResponse(self.error, status=self.error["status_code"])
        request = self.get_request(self.get_factory())
        resolver_match = self.get_url_resolver_match()
        assert resolver_match is not None
        return self.get_view(resolver_match, request)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@functools.cache
def _worker() -> ThreadPoolExecutor:
    """One thread for every call made inside an event loop: the database connection it
    opens is reused, as a server thread's is, rather than one left open per call."""
    return ThreadPoolExecutor(1, thread_name_prefix="drf-grip-wsrequest")
