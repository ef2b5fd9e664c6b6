"""Who may use a WebSocket view: the ``Origin`` check that stands in for CSRF on a WebSocket
handshake, and the project's CSRF check for plain HTTP requests to the same view."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string

__all__ = ["check_csrf", "origin_allowed"]


@lru_cache(maxsize=8)
def _trusted_origins(
    origins: tuple[str, ...],
) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    exact = frozenset(o for o in origins if "*" not in o)
    wild = []
    for origin in origins:
        if "*" in origin:
            parts = urlsplit(origin)
            wild.append((parts.scheme, parts.netloc.lstrip("*")))
    return exact, tuple(wild)


def origin_allowed(request: HttpRequest) -> bool:
    """Whether the ``Origin`` of a WebSocket request may open a connection.

    Browsers always send ``Origin`` on a WebSocket handshake and cannot forge it, so the same
    rules as Django's CSRF origin check apply (``CsrfViewMiddleware._origin_verified``): the
    origin must be this request's own scheme, host and port, or be listed in
    ``CSRF_TRUSTED_ORIGINS`` (a ``*.`` entry matches subdomains, port included). A page on
    another port of an allowed host is another origin. No ``Origin`` means a non-browser
    client, which is allowed. Pushpin forwards the handshake's ``Origin`` and ``Host`` on every
    request of the connection.
    """
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return True
    try:
        own = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    exact, wild = _trusted_origins(tuple(getattr(settings, "CSRF_TRUSTED_ORIGINS", ())))
    if origin in exact:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(
        parts.scheme == scheme and is_same_domain(parts.netloc, host) for scheme, host in wild
    )



@lru_cache(maxsize=8)
def _csrf_middleware(middleware: tuple[str, ...]) -> type | None:
    from django.middleware.csrf import CsrfViewMiddleware

    for path in middleware:
        try:
            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, CsrfViewMiddleware):
            return cls
    return None


def check_csrf(
    request: HttpRequest, view: Callable[..., Any], args: tuple, kwargs: dict
) -> HttpResponse | None:
    """Run the project's CSRF check for a plain HTTP request to a view that we had to mark
    ``csrf_exempt`` only for its WebSocket traffic."""
    cls = _csrf_middleware(tuple(getattr(settings, "MIDDLEWARE", None) or ()))
    if cls is None:
        return None
    return cls(lambda r: HttpResponse()).process_view(request, view, args, kwargs)
