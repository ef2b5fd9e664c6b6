"""The WebSocket gateway: REST calls and live subscriptions over one WebSocket.

Add it to the URLconf beside the API::

    path("api/ws/", RealtimeGateway.as_view())

Client messages are JSON objects (django-websocket-request's format, plus subscriptions)::

    {"id": 7, "method": "PATCH", "url": "/api/todos/5/", "data": {...},
     "token": "...", "headers": {"X-CSRFToken": "..."}}
    {"id": 8, "subscribe": "/api/todos/?done=false"}
    {"id": 9, "unsubscribe": 8}

Answers and server-sent messages::

    {"id": 7, "status": 200, "data": {...}, "etag": "\\"...\\""}       # a request's answer
    {"id": 8, "status": 200, "data": [...], "etag": "...", "url": "..."}  # a subscription's first
    {"event": "change", "id": 8, "url": "...", "status": 200, "data": ..., "etag": ...}
    {"id": 9, "status": 200, "unsubscribed": 8}
    {"id": 7, "status": 400, "error": "reason"}                       # an error, connection kept

Each request runs through the whole middleware stack and URLconf like an HTTP request with
the handshake's headers (Pushpin forwards them on every ``POST``: ``Cookie``,
``Authorization``, ``Origin``), so authentication, permissions, throttling, validation and CSRF
(DRF's ``SessionAuthentication`` checks the token of unsafe methods) apply unchanged.

Delivery of changes:

- **shared** views: the connection subscribes to the view's per-URL channel and receives what
  the shared publisher pushes (``shared.py``), one render per live URL; those messages carry
  ``url`` (the one the subscription was answered with) and no ``id``, because they are the
  same for every subscriber.
- **private** views: a GRIP proxy cannot re-run anything per connection when a publish
  arrives on a WebSocket (there is no ``hint`` for WebSockets), so the *publisher* does it:
  each connection's subscriptions live in Django's cache keyed by its ``Connection-Id``, with
  the user the view authenticated; after a change of the model the publisher re-renders each
  subscription as its own user (``get_queryset``, permissions and serializer as for a GET;
  throttling skipped) and pushes it to the connection's own channel when its ETag changed.
  No connection ever receives a representation rendered for another user. Cost per change:
  one render per subscribed private subscription, like one hint re-request per held client.

Known limits: a shared subscription can miss a change that commits between its first render
and the proxy applying the subscription (milliseconds); private re-renders run as the user
(``request.auth`` is ``None``), not with the original token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlencode, urlsplit

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.decorators import classonlymethod

from ..conf import grip_settings
from ..grip.instruct import MAX_CHANNELS
from ..grip.publisher import publish
from ..grip.signature import check_grip_sig
from ..grip.websocket import WebSocketContext
from ..grip.websocket_views import WebSocketView, require_websocket
from . import channels as names
from .context import SHARED, RealtimeContext
from .etag import make_etag
from .render import RecordedRequest, record, run_through_middleware, subscriber_get, wsgi_request
from .store import SlotIndex, state_cache
from .versions import hold_versions, read_versions

__all__ = ["RealtimeGateway", "publish_subscriptions"]

logger = logging.getLogger("drf_grip.gateway")

_STATE = "drf_grip:ws:conn:"
_INDEX = "drf_grip:ws:model:"
_ETAG = "drf_grip:ws:etag:"
_FRESH_SECONDS = 10

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_MAX_HEADERS = 32
_MAX_HEADER_VALUE = 8192
_MAX_ID = 200
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
# Outer request headers the inner request does not inherit.
_DROPPED_META = frozenset(
    {
        "HTTP_CONNECTION_ID",
        "HTTP_GRIP_SIG",
        "HTTP_GRIP_FEATURE",
        "HTTP_GRIP_LAST",
        "HTTP_IF_NONE_MATCH",
        "HTTP_IF_MATCH",
        "HTTP_ACCEPT",
        "HTTP_UPGRADE",
        "HTTP_CONNECTION",
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
        "HTTP_PREFER",
        "HTTP_KEEP_ALIVE_INTERVAL",
        "HTTP_LAST_EVENT_ID",
    }
)
_DROPPED_PREFIXES = ("HTTP_META_", "HTTP_SEC_WEBSOCKET_", "HTTP_GRIP_")
_INHERITED_CGI = ("REMOTE_ADDR", "REMOTE_HOST", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL")


class MessageError(Exception):
    """A message the gateway refuses; becomes ``{"id", "status", "error"}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# -- connection state -------------------------------------------------------------------------


def _cache():
    return state_cache()


def _state_timeout() -> int:
    # The proxy calls at least every WS_KEEP_ALIVE seconds (Keep-Alive-Interval), and each
    # call refreshes the state; a connection gone without a DISCONNECT expires.
    return max(4 * int(grip_settings.WS_KEEP_ALIVE), 120)


def fresh_subscribers(channel: str) -> SlotIndex:
    """Connections that subscribed to a shared channel in the last seconds.

    A WebSocket subscription has no prev-id: a publish that reaches the proxy after this
    connection's first render but before the proxy applied its ``subscribe`` would be lost.
    For a few seconds the shared publisher also sends the change to such a connection's own
    channel (subscribed when it opened); a duplicate carries the same ETag."""
    return SlotIndex(f"drf_grip:ws:fresh:{channel}", 256, _FRESH_SECONDS)


def _connections(label: str) -> SlotIndex:
    """Gateway connections with private subscriptions to ``label`` (bounded, expiring)."""
    return SlotIndex(_INDEX + label, int(grip_settings.WS_MAX_LIVE_CONNECTIONS), _state_timeout())


def connection_key(connection_id: str) -> str:
    """An unguessable key for a ``Connection-Id``: it names the connection's channel."""
    secret = hashlib.sha256(b"drf-grip.gateway:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(secret, connection_id.encode(), hashlib.sha256).hexdigest()[:32]


def _sub_key(sub_id: Any) -> str:
    return json.dumps(sub_id)


def _load_state(conn: str) -> dict[str, Any]:
    state = _cache().get(_STATE + conn)
    return state if isinstance(state, dict) else {"subs": {}}


def _save_state(conn: str, state: dict[str, Any]) -> bool:
    """Save a connection's own state (only its own requests write it: the proxy sends one
    connection's requests one at a time) and list it in its models' indexes; False when
    an index is full."""
    _cache().set(_STATE + conn, state, timeout=_state_timeout())
    listed = True
    for label in {s["model"] for s in state["subs"].values() if s["mode"] == "private"}:
        listed = _connections(label).add(conn, {}) and listed
    return listed


def _drop_state(conn: str) -> None:
    state = _load_state(conn)
    cache = _cache()
    for key, sub in state["subs"].items():
        if sub["mode"] == "private":
            _connections(sub["model"]).remove(conn)
            cache.delete(_ETAG + conn + key)
        else:
            fresh_subscribers(sub["channel"]).remove(conn)
    cache.delete(_STATE + conn)


# -- inner requests ---------------------------------------------------------------------------


def _run(request: HttpRequest) -> HttpResponse:
    """The answer of the whole middleware stack and URLconf, like Django's test client."""
    try:
        return run_through_middleware(request)
    except Exception:  # noqa: BLE001 - a failing middleware must not kill the connection
        logger.exception("drf-grip gateway: %s %s failed", request.method, request.path)
        return HttpResponse(status=500)


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


def _split_url(url: Any) -> tuple[str, str]:
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
    return parts.path, parts.query


def _url_matches(path: str) -> bool:
    try:
        resolve(unquote(path))
    except Resolver404:
        return False
    except Exception:  # noqa: BLE001 - e.g. a path that is not valid UTF-8 once decoded
        return False
    return True


class RealtimeGateway(WebSocketView):
    """One WebSocket for REST requests and live subscriptions to realtime views.

    Hooks: ``token_keyword`` (``Authorization: <keyword> <token>`` from a message's
    ``token``), ``get_inner_headers()``; limits come from ``DRF_GRIP['WS_MAX_MESSAGE_SIZE']``,
    ``['WS_MAX_SUBSCRIPTIONS']`` and ``['WS_KEEP_ALIVE']``.
    """

    #: ``{"token": "abc"}`` becomes ``Authorization: Token abc`` (DRF's TokenAuthentication).
    token_keyword = "Token"

    @classonlymethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponse]:
        # WebSocket only: a plain HTTP request gets 400 with a reason.
        return require_websocket(super(WebSocketView, cls).as_view(**initkwargs))

    # -- the connection -------------------------------------------------------------------

    def websocket(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        ctx: WebSocketContext = request.wscontext
        proxied = getattr(request, "grip_proxied", None)
        if proxied is None:
            proxied = check_grip_sig(request.META.get("HTTP_GRIP_SIG"))[0]
        if not proxied:
            # The Connection-Id names the subscriptions: only the proxy may assert it.
            return HttpResponse(
                "Forbidden: the WebSocket gateway is served through a GRIP proxy only.\n",
                status=403,
                content_type="text/plain",
            )
        conn = connection_key(ctx.id)
        if ctx.is_opening():
            ctx.accept()
            keep_alive = int(grip_settings.WS_KEEP_ALIVE)
            if keep_alive:
                # The proxy calls us this often (refreshing the state's expiry) and pings the
                # client on silence, so idle connections survive intermediaries.
                ctx.keep_alive_interval = keep_alive
                ctx.set_keep_alive(keep_alive)
            ctx.subscribe(names.connection_channel(conn))
        state = _load_state(conn)
        changed = False
        for message in request.websocket:
            answer, touched = self.handle_message(request, ctx, conn, state, message)
            changed = changed or touched
            if answer is not None:
                request.websocket.send_json(answer)
        if request.websocket.close_code is not None or ctx.disconnected:
            _drop_state(conn)
        elif changed or state["subs"]:
            _save_state(conn, state)  # also refreshes the expiry on keep-alive calls
        return None

    def handle_message(
        self,
        request: HttpRequest,
        ctx: WebSocketContext,
        conn: str,
        state: dict[str, Any],
        message: str | bytes,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Answer one message; returns the answer and whether subscriptions changed."""
        message_id: Any = None
        try:
            data = self.decode(message)
            message_id = data.get("id")
            if not _valid_id(message_id):
                message_id = None
                raise MessageError(400, "id must be a string or an integer")
            if "subscribe" in data:
                return self.subscribe(request, ctx, conn, state, data), True
            if "unsubscribe" in data:
                return self.unsubscribe(ctx, conn, state, data), True
            if "url" in data or "method" in data:
                return self.rest(request, data), False
            raise MessageError(
                400, "unknown message type: send a request (method, url), subscribe or unsubscribe"
            )
        except MessageError as exc:
            return {"id": message_id, "status": exc.status, "error": exc.reason}, False
        except Exception:  # noqa: BLE001 - never a 500 for the connection, never a dropped one
            logger.exception("drf-grip gateway: a message failed")
            return {"id": message_id, "status": 500, "error": "server error"}, False

    def decode(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            raise MessageError(400, "binary messages are not supported: send JSON text")
        size = len(message.encode("utf-8"))
        limit = int(grip_settings.WS_MAX_MESSAGE_SIZE)
        if size > limit:
            raise MessageError(413, f"message too large: {size} bytes, the limit is {limit}")
        try:
            data = json.loads(message)
        except json.JSONDecodeError as exc:
            raise MessageError(400, f"invalid JSON: {exc.msg} at position {exc.pos}") from None
        except (RecursionError, ValueError):
            raise MessageError(400, "invalid JSON: nested too deeply or not decodable") from None
        if not isinstance(data, dict):
            raise MessageError(400, "a message is a JSON object")
        return data

    # -- inner requests -------------------------------------------------------------------

    def get_inner_headers(self, data: Mapping[str, Any]) -> dict[str, str]:
        """Headers a message adds to its request: ``headers`` and ``token``."""
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
            out["Authorization"] = f"{self.token_keyword} {token}"
        return out

    def build_request(
        self,
        outer: HttpRequest,
        method: str,
        url: str,
        data: Any,
        headers: Mapping[str, str],
    ) -> WSGIRequest:
        """A request like the one a browser on the same page would send over HTTP."""
        path, query = _split_url(url)
        body = b""
        if data is not None:
            if method in ("GET", "HEAD"):
                if not isinstance(data, dict):
                    raise MessageError(400, "data of a GET is an object of query parameters")
                extra = urlencode(
                    [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]
                )
                query = f"{query}&{extra}" if query else extra
            else:
                body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        environ: dict[str, Any] = {}
        for key, value in outer.META.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_"):
                if key in _DROPPED_META or key.startswith(_DROPPED_PREFIXES):
                    continue
                environ[key] = value
            elif key in _INHERITED_CGI:
                environ[key] = value
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        environ.setdefault("HTTP_ACCEPT", "application/json")
        environ["CONTENT_TYPE"] = "application/json"
        return wsgi_request(
            environ,
            method=method,
            scheme=outer.scheme,
            path_info=unquote_to_bytes(path).decode("iso-8859-1"),
            query=query,
            body=body,
        )

    def rest(self, request: HttpRequest, data: Mapping[str, Any]) -> dict[str, Any]:
        method = data.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise MessageError(400, f"method is one of {', '.join(sorted(_METHODS))}")
        method = method.upper()
        if "url" not in data:
            raise MessageError(400, "a request needs a url")
        path, _query = _split_url(data["url"])
        if not _url_matches(path):
            raise MessageError(404, f"not found: {path}")
        inner = self.build_request(
            request, method, data["url"], data.get("data"), self.get_inner_headers(data)
        )
        return answer_of(data.get("id"), _run(inner))

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(
        self,
        request: HttpRequest,
        ctx: WebSocketContext,
        conn: str,
        state: dict[str, Any],
        data: Mapping[str, Any],
    ) -> dict[str, Any]:
        sub_id = data.get("id")
        if sub_id is None:
            raise MessageError(400, "a subscription needs an id")
        key = _sub_key(sub_id)
        if key in state["subs"]:
            raise MessageError(409, f"the subscription id {key} is in use; unsubscribe first")
        limit = int(grip_settings.WS_MAX_SUBSCRIPTIONS)
        if len(state["subs"]) >= limit:
            raise MessageError(429, f"too many subscriptions: the limit is {limit}")
        url = data["subscribe"]
        path, _query = _split_url(url)
        if not _url_matches(path):
            raise MessageError(404, f"not found: {path}")
        headers = self.get_inner_headers(data)
        for _attempt in range(3):
            inner = self.build_request(request, "GET", url, None, headers)
            context = RealtimeContext(role="gateway-subscribe")
            inner.drf_grip = context
            response = _run(inner)
            if response.status_code != 200:
                return answer_of(sub_id, response)
            policy = context.policy
            if policy is None:
                raise MessageError(400, f"not a realtime URL: {path}")
            answer = answer_of(sub_id, response)
            if policy.delivery == SHARED:
                answer = self._subscribe_shared(ctx, conn, state, key, sub_id, url, policy, answer)
                # Listed as fresh first, then checked: if no publisher moved the version
                # meanwhile, every later publish finds this connection (see fresh_subscribers).
                channel = policy.channels[0]
                if read_versions([channel])[channel] == context.state.get("version"):
                    return answer
                continue
            user = getattr(inner, "user", None)
            state["subs"][key] = {
                "id": sub_id,
                "url": url,
                "mode": "private",
                "model": policy.model,
                "kind": policy.kind,
                "pk": policy.pk,
                "partition": policy.partition,
                "user": str(user.pk) if user is not None and user.is_authenticated else None,
                # The subscriber's own GET, replayed for every change (render.py).
                "req": record(inner, credentials=True).as_dict(),
            }
            if not _save_state(conn, state):
                del state["subs"][key]
                raise MessageError(
                    503, "too many live gateway connections for this resource; retry later"
                )
            _cache().set(_ETAG + conn + key, context.result_etag, timeout=_state_timeout())
            # A change that committed while we rendered, and was published before the
            # publisher could see this subscription, moved a channel version: render again.
            if hold_versions(policy.channels) == policy.versions:
                break
        answer["url"] = url
        return answer

    def _subscribe_shared(
        self,
        ctx: WebSocketContext,
        conn: str,
        state: dict[str, Any],
        key: str,
        sub_id: Any,
        url: str,
        policy: Any,
        answer: dict[str, Any],
    ) -> dict[str, Any]:
        channel = policy.channels[0]
        shared = {s["channel"] for s in state["subs"].values() if s["mode"] == "shared"}
        # Pushpin takes at most 20 channels per connection; one is the connection's own.
        if channel not in shared and len(shared) >= MAX_CHANNELS - 1:
            raise MessageError(
                429, f"too many shared subscriptions: the limit is {MAX_CHANNELS - 1}"
            )
        ctx.subscribe(channel)
        fresh_subscribers(channel).add(conn, {})
        state["subs"][key] = {
            "id": sub_id,
            "url": url,
            "mode": "shared",
            "channel": channel,
            "live": policy.url,
        }
        answer["url"] = policy.url
        return answer

    def unsubscribe(
        self, ctx: WebSocketContext, conn: str, state: dict[str, Any], data: Mapping[str, Any]
    ) -> dict[str, Any]:
        target = data["unsubscribe"]
        if not _valid_id(target) or target is None:
            raise MessageError(400, "unsubscribe names a subscription id")
        key = _sub_key(target)
        sub = state["subs"].pop(key, None)
        if sub is None:
            raise MessageError(404, f"no subscription {key}")
        if sub["mode"] == "shared":
            if not any(s.get("channel") == sub["channel"] for s in state["subs"].values()):
                ctx.unsubscribe(sub["channel"])
                fresh_subscribers(sub["channel"]).remove(conn)
        else:
            _cache().delete(_ETAG + conn + key)
            if not any(s.get("model") == sub["model"] for s in state["subs"].values()):
                _connections(sub["model"]).remove(conn)
        return {"id": data.get("id", target), "status": 200, "unsubscribed": target}


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53
    return isinstance(value, str) and len(value) <= _MAX_ID


def answer_of(message_id: Any, response: HttpResponse) -> dict[str, Any]:
    """``{"id", "status", "data"}`` (plus ``etag``, ``location``) for an inner response."""
    status = response.status_code
    if status >= 500:
        return {"id": message_id, "status": status, "error": "server error"}
    if getattr(response, "streaming", False):
        return {"id": message_id, "status": 502, "error": "streaming responses are not supported"}
    content = response.content
    data: Any = None
    if content:
        content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
        text = content.decode("utf-8", "replace")
        data = text
        if content_type == "application/json" or content_type.endswith("+json"):
            try:
                data = json.loads(text)
            except ValueError:
                pass
    answer: dict[str, Any] = {"id": message_id, "status": status, "data": data}
    if response.has_header("ETag"):
        answer["etag"] = response["ETag"]
    if response.has_header("Location"):
        answer["location"] = response["Location"]
    return answer


# -- the publisher's side ---------------------------------------------------------------------


def _change_message(sub: Mapping[str, Any], response: HttpResponse) -> tuple[str, str]:
    """The message for one re-rendered private subscription and its version."""
    head = {"event": "change", "id": sub["id"], "url": sub["url"], "status": response.status_code}
    if response.status_code != 200:
        head["error"] = "server error" if response.status_code >= 500 else response.reason_phrase
        return json.dumps(head), f"status-{response.status_code}"
    etag = response.get("ETag") or make_etag(response.content)
    head["etag"] = etag
    text = response.content.decode("utf-8", "replace")
    content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        text = json.dumps(text)
    return json.dumps(head)[:-1] + ', "data": ' + text + "}", etag


_REVOKED = "revoked"


def _affected(
    sub: Mapping[str, Any], pks: set[Any] | None, deleted: set[Any], partitions: set[str] | None
) -> bool:
    """Whether a change can alter this subscription (cost follows what changed)."""
    if sub.get("kind") == "detail" and sub.get("pk") is not None and pks is not None:
        return sub["pk"] in {str(pk) for pk in set(pks) | set(deleted)}
    if sub.get("partition") is not None and partitions is not None:
        return sub["partition"] in partitions
    return True


def publish_subscriptions(
    model: Any,
    pks: set[Any] | None = None,
    deleted: set[Any] = frozenset(),  # type: ignore[assignment]
    partitions: set[str] | None = None,
) -> None:
    """After a change of ``model``: replay every affected gateway subscription to its private
    views as its subscriber's own GET, and push those whose representation changed."""
    label = model._meta.label_lower
    cache = _cache()
    conns = [entry["k"] for entry in _connections(label).entries()]
    if not conns:
        return
    states = cache.get_many([_STATE + conn for conn in conns])
    for conn in conns:
        state = states.get(_STATE + conn)
        if not isinstance(state, dict):
            _connections(label).remove(conn)  # the connection is gone
            continue
        for key, sub in list(state["subs"].items()):
            if sub["mode"] != "private" or sub["model"] != label:
                continue
            if not _affected(sub, pks, deleted, partitions):
                continue
            etag_key = _ETAG + conn + key
            if cache.get(etag_key) == _REVOKED:
                continue
            context = RealtimeContext(role="gateway-render", user=sub.get("user"))
            try:
                response, _inner = subscriber_get(RecordedRequest.from_dict(sub["req"]), context)
            except Exception:  # noqa: BLE001 - one subscription must not stop the others
                logger.exception("drf-grip gateway: could not re-render a subscription")
                continue
            if context.revoked or response.status_code in (401, 403):
                # The credentials no longer name the subscriber: end the subscription.
                cache.set(etag_key, _REVOKED, timeout=_state_timeout())
                status = response.status_code if response.status_code in (401, 403) else 403
                message = json.dumps(
                    {
                        "event": "end",
                        "id": sub["id"],
                        "url": sub["url"],
                        "status": status,
                        "error": "the subscription's credentials are no longer valid",
                    }
                )
                publish(names.connection_channel(conn), {"ws-message": {"content": message}})
                continue
            message, version = _change_message(sub, response)
            if cache.get(etag_key) == version:
                continue  # this user's representation did not change
            cache.set(etag_key, version, timeout=_state_timeout())
            publish(names.connection_channel(conn), {"ws-message": {"content": message}})
