"""The request a gateway message runs: built like the one a browser on the same page would
send over HTTP, and answered by the whole middleware stack and URLconf.

The request carries the handshake's headers (Pushpin forwards them on every ``POST``:
``Cookie``, ``Authorization``, ``Origin``), so authentication, permissions, throttling,
validation and CSRF (DRF's ``SessionAuthentication`` checks the token of unsafe methods)
apply unchanged. A message may add headers, but not those naming the connection or those
CSRF and host checks rely on.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlencode, urlsplit

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.test.client import conditional_content_removal
from django.urls import Resolver404, get_script_prefix, resolve
from django.utils.http import parse_header_parameters

from ..render import inherited_meta, path_prefix, run_through_middleware, wsgi_request
from ..sse import json_renderer_of
from .messages import MessageError

__all__ = [
    "build_inner_request",
    "check_method",
    "inner_headers",
    "json_media_type",
    "resolvable_path",
    "run_inner",
    "split_url",
    "with_query_data",
]

logger = logging.getLogger("drf_grip.gateway")

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_MAX_HEADERS = 32
_MAX_HEADER_VALUE = 8192
# Headers a message may not set: the connection's identity, what the proxy adds, and what
# CSRF and host checks rely on (they come from the handshake only).
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "origin",
        "referer",
        "content-length",
        "content-type",
        "connection",
        "connection-id",
        "upgrade",
        "transfer-encoding",
        "keep-alive",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
        "te",
        "trailer",
        "expect",
    }
)
_FORBIDDEN_PREFIXES = ("meta-", "grip-", "sec-websocket-")


def run_inner(request: HttpRequest) -> HttpResponse:
    """The answer of the whole middleware stack and URLconf, like Django's test client."""
    try:
        # As an HTTP client gets it: no body for HEAD, 1xx, 204 or 304 (RFC 9110 §6.4.1).
        return conditional_content_removal(request, run_through_middleware(request))
    except Exception:  # noqa: BLE001 - a failing middleware must not kill the connection
        logger.exception("drf-grip gateway: %s %s failed", request.method, request.path)
        return HttpResponse(status=500)


def check_method(method: Any) -> str:
    """A message's ``method``, upper-cased, or a 400."""
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise MessageError(400, f"method is one of {', '.join(sorted(_METHODS))}")
    return method.upper()


def _check_header(name: Any, value: Any) -> None:
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise MessageError(400, "header names are letters, digits and '-'")
    lower = name.lower()
    if lower in _FORBIDDEN_HEADERS or lower.startswith(_FORBIDDEN_PREFIXES):
        raise MessageError(400, f"the header {name} cannot be set by a message")
    if not isinstance(value, str) or len(value) > _MAX_HEADER_VALUE:
        raise MessageError(400, f"the header {name} must be a string of at most 8192 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or not value.isascii():
        raise MessageError(400, f"the header {name} holds characters a header cannot carry")


def inner_headers(data: Mapping[str, Any], token_keyword: str) -> dict[str, str]:
    """A message's ``headers``, checked, and its ``token`` as ``Authorization``."""
    headers = data.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise MessageError(400, "headers must be an object of strings")
    if len(headers) > _MAX_HEADERS:
        raise MessageError(400, f"at most {_MAX_HEADERS} headers")
    for name, value in headers.items():
        _check_header(name, value)
    out = dict(headers)
    token = data.get("token")
    if token is not None:
        if not isinstance(token, str) or not token:
            raise MessageError(400, "token must be a non-empty string")
        _check_header("Authorization", token)
        out["Authorization"] = f"{token_keyword} {token}"
    return out


def split_url(url: Any) -> tuple[str, str]:
    """A message's ``url`` as its path and query, or a 400 for what is not a local path."""
    if not isinstance(url, str) or not url.startswith("/") or url.startswith("//"):
        raise MessageError(400, "url must be a path starting with '/' (no scheme or host)")
    if len(url) > 4096 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise MessageError(400, "url is too long or contains spaces or control characters")
    if not url.isascii():  # WSGI carries the path and query as Latin-1 (PEP 3333)
        raise MessageError(400, "url must be ASCII: percent-encode other characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise MessageError(400, "url is not a valid URL") from None
    if parts.scheme or parts.netloc:
        raise MessageError(400, "url must be a path starting with '/' (no scheme or host)")
    return _within_mount(parts.path), parts.query


def _within_mount(path: str) -> str:
    """``path`` relative to the URLconf. Under a mount point (``SCRIPT_NAME``,
    ``FORCE_SCRIPT_NAME``) a message's url is relative to it, but the gateway's own answers
    name a subscription by its live URL and link pages absolutely, both with the prefix: a
    path that the URLconf does not serve as it is and that starts with the prefix is taken
    without it, so that the client can send back what it was given."""
    prefix = get_script_prefix()
    if prefix == "/" or not path.startswith(prefix) or _url_matches(path):
        return path
    return path[len(prefix) - 1 :]


def _url_matches(path: str) -> bool:
    try:
        resolve(unquote(path))
    except Resolver404:
        return False
    except Exception:  # noqa: BLE001 - e.g. a path that is not valid UTF-8 once decoded
        return False
    return True


def json_media_type(path: str) -> str:
    """The media type of the JSON the view at ``path`` serves: ``application/json``, or,
    for a view serving JSON only under a type of its own (JSON:API's
    ``application/vnd.api+json``), that type, which asked as application/json answers 406
    (DRF probe). Read from the view's ``renderer_classes``, as the stream's (``sse.py``)."""
    try:
        view_class = getattr(resolve(unquote(path)).func, "cls", None)
    except Exception:  # noqa: BLE001 - not a URL of the URLconf: it answers for itself
        return "application/json"
    # The classes carry ``media_type``: nothing to instantiate per message.
    renderer = json_renderer_of(list(getattr(view_class, "renderer_classes", ()) or ()))
    if renderer is None:
        return "application/json"
    return parse_header_parameters(renderer.media_type)[0]


def resolvable_path(url: Any) -> str:
    """The path of a message's ``url``: a 400 for what is not a local path, a 404 for one
    the URLconf does not serve."""
    path, _query = split_url(url)
    if not _url_matches(path):
        raise MessageError(404, f"not found: {path}")
    return path


def with_query_data(url: str, data: Any) -> str:
    """``url`` with a GET message's (or a subscription's) ``data``, an object of query
    parameters, appended to its query: strings as they are, other values as JSON."""
    if data is None:
        return url
    if not isinstance(data, dict):
        raise MessageError(400, "data of a GET is an object of query parameters")
    path, query = split_url(url)  # a 400 for what is not a local path
    try:
        extra = urlencode(
            [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]
        )
    except UnicodeEncodeError:
        # JSON can carry a lone surrogate ("\ud800"), which UTF-8 cannot encode.
        raise MessageError(400, "data holds a lone surrogate, which is not text") from None
    query = f"{query}&{extra}" if query and extra else query or extra
    return f"{path}?{query}" if query else path


def as_the_view_read_it(url: str, inner: HttpRequest) -> str:
    """``url`` with the query ``inner`` was answered with: a shared view drops parameters it
    does not read before it runs (``_canonicalize_query``), which a token's subscription of
    it, delivered like private data, then named anyway (new-user probe)."""
    path, query = split_url(url)
    kept = inner.META.get("QUERY_STRING", "")
    if kept == query:
        return url
    return f"{path}?{kept}" if kept else path


def build_inner_request(
    outer: HttpRequest, method: str, url: str, data: Any, headers: Mapping[str, str]
) -> WSGIRequest:
    """A request like the one a browser on the same page would send over HTTP: the
    handshake's headers, the message's ``headers``, JSON in and out."""
    body = b""
    if data is not None and method in ("GET", "HEAD"):
        url = with_query_data(url, data)
    elif data is not None:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    path, query = split_url(url)
    environ: dict[str, Any] = dict(inherited_meta(outer))
    # The answer goes into a JSON message whatever the page's own requests accept.
    environ.pop("HTTP_ACCEPT", None)
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    # No Accept-Encoding, a message's either (inherited_meta drops the handshake's): the
    # answer goes into a JSON message as text, and a compressed body (GZipMiddleware)
    # arrived as garbage.
    environ.pop("HTTP_ACCEPT_ENCODING", None)
    # JSON first, and what the URL's format asks for (``?format=csv``, ``.csv``) after it:
    # DRF ranks Accept by precedence, not weight, so ``*/*`` serves only what has no JSON,
    # and JSON alone answered such a URL 406 where a GET serves it (DRF probe).
    environ.setdefault("HTTP_ACCEPT", f"{json_media_type(path)}, */*")
    environ["CONTENT_TYPE"] = "application/json"
    return wsgi_request(
        environ,
        method=method,
        scheme=outer.scheme,
        path_info=unquote_to_bytes(path).decode("iso-8859-1"),
        query=query,
        body=body,
        # The mount point the server passed with the handshake (gunicorn's SCRIPT_NAME,
        # uvicorn's --root-path): a message's url is relative to it, as the URLconf is, but
        # the links the view builds (pagination, hyperlinks) must carry it, as a GET's do.
        script_name=outer.META.get("SCRIPT_NAME", "") or "",
        prefix=path_prefix(outer),
    )
