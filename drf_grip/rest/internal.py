"""Internal GETs: run a resolved view without middleware, as the publisher and next links do."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import ResolverMatch, resolve

__all__ = ["internal_get", "run_view"]


def internal_get(scheme: str, host: str, path: str, query: str, accept: str) -> HttpRequest:
    """A GET for ``path?query`` on ``host``; raises ``Resolver404`` for an unknown path.

    It carries no credentials and skips CSRF (it is a GET the server makes for itself);
    callers add a forced user where the representation depends on one.
    """
    match = resolve(path)
    server, _, port = host.partition(":")
    request = HttpRequest()
    request.method = "GET"
    request.path = request.path_info = path
    request.GET = QueryDict(query)
    request.META = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_HOST": host,
        "HTTP_ACCEPT": accept,
        "SERVER_NAME": server,
        "SERVER_PORT": port or ("443" if scheme == "https" else "80"),
        "wsgi.url_scheme": scheme,
    }
    if scheme == "https":
        request.META["HTTPS"] = "on"
    request.resolver_match = match
    request._dont_enforce_csrf_checks = True
    return request


def run_view(request: HttpRequest) -> HttpResponse:
    """Call the view ``internal_get`` resolved, and render its response."""
    match: ResolverMatch = request.resolver_match
    response: Any = match.func(request, *match.args, **match.kwargs)
    if hasattr(response, "render") and callable(response.render):
        response = response.render()
    return response
