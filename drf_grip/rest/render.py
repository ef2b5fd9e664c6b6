"""One render path: a GET the server runs *as the subscriber*.

Shared renders, a stream's next link and a gateway subscription's re-render all replay the
subscriber's own GET through the whole middleware stack and URLconf, with the headers the
subscriber sent (credentials, language, tenant headers). So the tenth event equals what a
fresh GET by that client returns, byte for byte, and a revoked token or a flushed session
is noticed by the same authentication that serves HTTP.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, get_urlconf, set_script_prefix, set_urlconf

from .context import RealtimeContext

__all__ = [
    "CREDENTIAL_HEADERS",
    "RecordedRequest",
    "ReplayRefusalsNotLogged",
    "host_allowed",
    "inherited_meta",
    "subscriber_headers_size",
    "path_prefix",
    "record",
    "run_through_middleware",
    "server_prefix",
    "subscriber_get",
    "wsgi_request",
]

logger = logging.getLogger("drf_grip.render")

# Headers that describe one exchange with the proxy, not the subscriber: a replayed GET or
# a gateway message's request must not inherit them (a stale If-None-Match would make it a
# hold, Grip-* are the proxy's, Content-* belong to another body).
_DROPPED = frozenset(
    {
        "HTTP_IF_NONE_MATCH",
        "HTTP_IF_MATCH",
        "HTTP_IF_MODIFIED_SINCE",
        "HTTP_PREFER",
        "HTTP_LAST_EVENT_ID",
        "HTTP_CONNECTION_ID",
        "HTTP_UPGRADE",
        "HTTP_CONNECTION",
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
        "HTTP_KEEP_ALIVE_INTERVAL",
        "HTTP_TRANSFER_ENCODING",
        "HTTP_ACCEPT_ENCODING",
    }
)
_DROPPED_PREFIXES = ("HTTP_GRIP_", "HTTP_META_", "HTTP_SEC_WEBSOCKET_")
#: Request headers that carry credentials (kept only in a subscriber's own replay).
CREDENTIAL_HEADERS = frozenset({"HTTP_AUTHORIZATION", "HTTP_COOKIE", "HTTP_PROXY_AUTHORIZATION"})
_CGI = ("REMOTE_ADDR", "REMOTE_HOST", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL")


@dataclass(frozen=True)
class RecordedRequest:
    """What is needed to replay a subscriber's GET: a JSON-able value kept in the cache."""

    scheme: str
    path: str
    query: str
    meta: dict[str, str] = field(default_factory=dict)
    script_name: str = ""
    #: What the server put before ``path_info`` in ``request.path`` (``path_prefix``).
    path_prefix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "path": self.path,
            "query": self.query,
            "meta": dict(self.meta),
            "script_name": self.script_name,
            "path_prefix": self.path_prefix,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecordedRequest":
        return cls(
            data["scheme"],
            data["path"],
            data["query"],
            dict(data.get("meta") or {}),
            data.get("script_name", ""),
            data.get("path_prefix"),
        )

    def with_query(self, query: str) -> "RecordedRequest":
        return replace(self, query=query)

    def with_headers(self, **headers: str) -> "RecordedRequest":
        """A copy with headers (``HTTP_ACCEPT="..."``) set; ``None`` removes one."""
        meta = dict(self.meta)
        for key, value in headers.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return replace(self, meta=meta)


def record(
    request: HttpRequest, *, credentials: bool = True, query: str | None = None
) -> RecordedRequest:
    """Record ``request`` (a Django request) as a GET to replay later.

    ``credentials=False`` leaves out ``Authorization`` and cookies: a shared render is the
    same for everyone and must not run as the first subscriber.
    """
    return RecordedRequest(
        scheme=request.scheme,
        path=request.path_info,
        query=request.META.get("QUERY_STRING", "") if query is None else query,
        meta=inherited_meta(request, credentials=credentials),
        script_name=request.META.get("SCRIPT_NAME", "") or "",
        path_prefix=path_prefix(request),
    )


def path_prefix(request: HttpRequest) -> str:
    """The mount point as the server put it in ``request.path``, which DRF's pagination
    links are built from. WSGI prepends the script name; ASGI's ``path`` is the server's own
    since Django 5.1 (ticket #35354), so behind a proxy that strips the prefix, with
    ``FORCE_SCRIPT_NAME``, it has none while ``reverse()`` links do. A request the server
    runs for the same client (``wsgi_request``) gets the same, or its links differ from a
    fresh GET's."""
    path, info = request.path, request.path_info
    return path[: len(path) - len(info)] if path.endswith(info) else get_script_name(request.META)


def server_prefix(request: HttpRequest) -> str:
    """What the path the server received has before ``path_info``: a path made of it and
    another ``path_info``, fetched from the same server, reaches that ``path_info``. Not
    ``path_prefix`` nor ``get_script_prefix()``, which carry ``FORCE_SCRIPT_NAME`` while
    Django does not always take it off a path it receives: under WSGI never
    (core/handlers/wsgi.py, ``WSGIRequest``: ``PATH_INFO`` is the server's), under ASGI only
    since Django 5.1 (core/handlers/asgi.py, ``ASGIRequest.__init__``; 4.2 takes off only
    the server's ``root_path``). Behind a proxy that strips the prefix, a path carrying it
    is not found."""
    if isinstance(request, ASGIRequest):
        # The scope's path starts with root_path where the server put it there: uvicorn
        # prepends its --root-path to the path it received (protocols/http/h11_impl.py), so
        # a link carrying it reached Django with it twice. Django takes root_path off only
        # when a path has it (core/handlers/asgi.py), so a link without it is served either
        # way, and the embedded proxy keeps the scope's root_path for a link it fetches.
        path, root = request.scope.get("path", ""), request.scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        # What is left before path_info: FORCE_SCRIPT_NAME, which Django 5.1+ took off.
        return _before(path, request.path_info)
    if settings.FORCE_SCRIPT_NAME is None:
        # The server's SCRIPT_NAME, split off the path it received (PEP 3333).
        return str(request.META.get("SCRIPT_NAME", "") or "")
    # WSGIRequest.__init__ replaced the server's SCRIPT_NAME with the setting, in the
    # environ too; what is left of it is in the request target gunicorn (RAW_URI), uWSGI
    # and mod_wsgi (REQUEST_URI) pass on. Without one (wsgiref, runserver): not mounted.
    target = request.META.get("RAW_URI") or request.META.get("REQUEST_URI") or ""
    return _before(unquote(urlsplit(target).path), request.path_info)


def _before(path: str, info: str) -> str:
    return path[: len(path) - len(info)] if path.endswith(info) else ""


def carries_credentials(request: HttpRequest) -> bool:
    """The request has an ``Authorization``, ``Proxy-Authorization`` or ``Cookie`` header:
    something a permission may read even when no authentication class used it (an API key
    checked by a permission class), which a credential-less replay would not have."""
    return _has_credentials(request.META)


def _has_credentials(meta: Any) -> bool:
    return any(meta.get(key) for key in CREDENTIAL_HEADERS)


def revocation_status(status_code: int) -> int:
    """The status a revoked subscription reports: the 401 or 403 its replay got, else 403."""
    return status_code if status_code in (401, 403) else 403


def undecided(status: int | None) -> bool:
    """Whether a replay's ``status`` (from :func:`revoked_status`, or a render) is a server
    error: an authentication backend or the database failing says nothing about the
    subscriber's credentials. Taken for a revocation, an outage of a few seconds ended every
    open subscription for good (black-box probe: a custom authentication class raising)."""
    return status is not None and status >= 500


def subscriber_headers_size(request: HttpRequest) -> int:
    """How many bytes of headers (names and values) the client sent with ``request``: what
    a recording of it keeps, and the headers a proxy keeps only while it holds the request
    (``If-None-Match``, ``Last-Event-ID``, ``Prefer``), not those a proxy adds (``Grip-*``,
    ``Meta-*``)."""
    return sum(
        len(key) + len(value)
        for key, value in request.META.items()
        if isinstance(value, str)
        and (key in _CGI or key.startswith("HTTP_") and not key.startswith(_DROPPED_PREFIXES))
    )


def inherited_meta(request: HttpRequest, *, credentials: bool = True) -> dict[str, str]:
    """The headers and CGI variables of ``request`` that a request the server runs for the
    same client inherits: the subscriber's, not those of one exchange with the proxy."""
    meta: dict[str, str] = {}
    for key, value in request.META.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            if key in _DROPPED or key.startswith(_DROPPED_PREFIXES):
                continue
            if not credentials and key in CREDENTIAL_HEADERS:
                continue
            meta[key] = value
        elif key in _CGI:
            meta[key] = value
    return meta


def wsgi_request(
    meta: dict[str, Any],
    *,
    method: str,
    scheme: str,
    path_info: str,
    query: str,
    body: bytes = b"",
    script_name: str = "",
    prefix: str | None = None,
) -> WSGIRequest:
    """A request the server runs for itself: ``meta`` (headers and CGI variables) with this
    method, target and body. ``path_info`` is already in WSGI's latin-1 form; ``prefix``,
    when given, is what ``request.path`` has before it (``path_prefix``)."""
    environ: dict[str, Any] = dict(meta)
    environ.update(
        {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
    )
    environ.setdefault("SERVER_NAME", "localhost")
    environ.setdefault("SERVER_PORT", "443" if scheme == "https" else "80")
    if scheme == "https":
        environ["HTTPS"] = "on"
    request = WSGIRequest(environ)
    if prefix is not None:
        request.path = prefix.rstrip("/") + "/" + request.path_info.replace("/", "", 1)
    return request


def _build(recorded: RecordedRequest) -> WSGIRequest:
    return wsgi_request(
        recorded.meta,
        method="GET",
        scheme=recorded.scheme,
        path_info=recorded.path.encode("utf-8").decode("iso-8859-1"),
        query=recorded.query,
        script_name=recorded.script_name,
        prefix=recorded.path_prefix,
    )


#: The ``error`` that ends a gateway subscription whose Host Django no longer serves
#: (Django's own words for it), shared and private alike.
HOST_REFUSED = "Invalid HTTP_HOST header"


#: What ``HttpRequest.get_host()`` reads of a request.
_HOST_META = ("HTTP_HOST", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "SERVER_NAME",
              "SERVER_PORT")


def host_allowed(recorded: RecordedRequest) -> bool:
    """Whether Django still serves the recorded GET's Host: ``ALLOWED_HOSTS`` may have been
    narrowed since it was recorded, and then every replay raises ``DisallowedHost``."""
    # Only what ``HttpRequest.get_host()`` reads (the Host headers, the server's name and
    # port, the scheme for the default port), not the whole replayed request: this runs for
    # every live URL of a publish, before the render builds that request, and for every
    # next-link fetch and gateway renewal.
    request = HttpRequest()
    request.META = {key: recorded.meta[key] for key in _HOST_META if key in recorded.meta}
    request.META.setdefault("SERVER_NAME", "localhost")
    request.META.setdefault("SERVER_PORT", "443" if recorded.scheme == "https" else "80")
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


@lru_cache(maxsize=4)
def _handler(middleware: tuple[str, ...], urlconf: str) -> BaseHandler:
    handler = BaseHandler()
    handler.load_middleware()
    return handler


#: The roles of renders the server runs for subscribers (``RealtimeContext.role``).
_REPLAYS = frozenset({"shared-render", "gateway-render", "next-link"})


class ReplayRefusalsNotLogged(logging.Filter):
    """Keeps Django's ``django.request`` warnings for a 4xx of a subscriber's replayed GET
    out of the log: ``Not Found`` is how a deleted object reaches its subscribers, and
    ``Forbidden`` how a revoked one ends, at every change, in every publishing process
    (publishing probe). Clients' own requests, and any 5xx, are logged as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int) or not 400 <= status < 500:
            return True
        context = getattr(getattr(record, "request", None), "drf_grip", None)
        return getattr(context, "role", None) not in _REPLAYS


def run_through_middleware(request: HttpRequest) -> HttpResponse:
    """The answer of the whole middleware stack and URLconf, as Django's test client runs it.

    The response is not ``close()``d: that sends ``request_finished``, which closes the
    database connection under the request (or worker) that asked for this render.
    """
    previous = get_urlconf()
    previous_prefix = get_script_prefix()
    # What Django's WSGI and ASGI handlers do before get_response: reverse() links carry the
    # mount point (SCRIPT_NAME, FORCE_SCRIPT_NAME). A render on the publisher's thread had
    # none set, so a pushed change's hyperlinks lacked the prefix a fresh GET's carry.
    set_script_prefix(get_script_name(request.META))
    try:
        handler = _handler(tuple(settings.MIDDLEWARE or ()), str(settings.ROOT_URLCONF))
        response = handler.get_response(request)
        if (
            hasattr(response, "render")
            and callable(response.render)
            and not getattr(response, "is_rendered", True)
        ):
            response = response.render()
        return response
    finally:
        set_urlconf(previous)
        set_script_prefix(previous_prefix)


#: The role of :func:`revoked_status`'s replay: the view stops after authentication and
#: permissions (``mixins._RealtimeBase.initial``).
CREDENTIALS_CHECK = "credentials-check"


def revoked_status(recorded: RecordedRequest, user: str | None) -> int | None:
    """None while the subscriber's recorded GET still authenticates (as ``user``, when it
    named one) and passes the view's permissions, else the status to report (401 or 403),
    or the server error the check ran into (:func:`undecided`: nothing of the render may be
    sent, and the subscription is not ended).
    Asked once a render for a subscriber is made and before it is sent: that render
    authenticated before it read the data, so credentials revoked in between would
    otherwise see a change committed after their revocation (CI: a stream whose session was
    flushed received the next note). Runs the middleware and DRF's authentication and
    permission checks, not the view."""
    if user is None and not _has_credentials(recorded.meta):
        return None  # nothing of the subscriber's to revoke
    context = RealtimeContext(role=CREDENTIALS_CHECK, user=user)
    response, _request = subscriber_get(recorded, context)
    if response.status_code == 204 and not context.revoked:
        return None
    if undecided(response.status_code) and not context.revoked:
        return response.status_code
    return revocation_status(response.status_code)


def subscriber_get(
    recorded: RecordedRequest,
    context: RealtimeContext,
    *,
    grip_sig: str | None = None,
    grip_last: str | None = None,
) -> tuple[HttpResponse, HttpRequest]:
    """Replay the recorded GET with ``context`` as ``request.drf_grip``; returns the response
    and the request (whose ``drf_grip`` the view filled in)."""
    request = _build(recorded)
    if grip_sig:
        # A next link answers the proxy: the replayed GET is as proxied as the fetch was,
        # and holds again with the ids the proxy last saw (Grip-Last), or Pushpin would
        # fetch the link again at once for every id that differs from ours.
        request.META["HTTP_GRIP_SIG"] = grip_sig
        if grip_last:
            request.META["HTTP_GRIP_LAST"] = grip_last
    request.drf_grip = context
    return run_through_middleware(request), request
