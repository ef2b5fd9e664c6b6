"""The gateway view: one WebSocket for REST requests and live subscriptions.

It reads each message (``messages.py``), runs requests through the middleware stack and
URLconf (``inner_requests.py``) and keeps the connection's subscriptions (``connections.py``).

Delivery of changes:

- **shared** views: the connection subscribes to the view's per-URL channel and receives what
  the shared publisher pushes (``shared.py``), one render per live URL; those messages carry
  ``url`` (the one the subscription was answered with) and no ``id``, because they are the
  same for every subscriber.
- **private** views: the connection's subscriptions live in Django's cache keyed by its
  ``Connection-Id``, with the user the view authenticated, and the publisher re-renders each
  as its own user (``rerender.py``).

A change that commits while a subscription's answer renders, or a push that reaches the
proxy before the answer, is settled once the answer has left (``_settle``,
``_settle_shared``): the client's last message is always the newest render.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import classonlymethod
from rest_framework.settings import api_settings

from ...conf import grip_settings
from ...grip.later import call_later
from ...grip.signature import request_proxied
from ...grip.websocket_context import WebSocketContext
from ...grip.websocket_request import encode_json
from ...grip.websocket_views import WebSocketView, require_websocket
from ...protocol import MAX_CHANNELS, SKIP_USERS
from ...protocol.constants import INLINE_MESSAGE_MAX, MESSAGE_PREFIX
from .. import channels as names
from ..context import SHARED, RealtimeContext
from ..live_urls import relist
from ..policies import keep_recording, live_timeout, record_view, recording_epoch
from ..render import RecordedRequest, host_allowed, record
from ..shared import await_the_push_read, send_after_answer
from ..sse import (
    EVENT_STREAM,
    EventStreamRenderer,
    accept_weight,
    refuses_event_stream,
    weighs_event_stream,
)
from ..store import cache_failed
from ..versions import read_versions
from .connections import (
    REVOKED,
    SUBSCRIPTIONS_LOST,
    USER_FULL,
    connection_key,
    drop_state,
    forget_version,
    fresh_subscribers,
    load_state,
    private_connections,
    proxy_user,
    save_state,
    send_to_connection,
    sent_version,
    subscription_key,
)
from .inner_requests import (
    as_the_view_read_it,
    build_inner_request,
    check_method,
    inner_headers,
    resolvable_path,
    run_inner,
    with_query_data,
)
from .messages import (
    MessageError,
    answer_of,
    decode_message,
    refused_answer,
    too_large,
    valid_id,
)
from .rerender import (
    answer_left,
    answer_pending,
    answer_ticket,
    record_answer,
    settle_answer,
)

__all__ = ["RealtimeGateway"]


#: Distinct shared URLs one connection may subscribe to. Pushpin subscribes a connection to
#: at most MAX_CHANNELS channels and drops the rest without a word (PUSHPIN.md); three are
#: taken: the connection's own and, once it subscribes, the two recovery channels. The 19th
#: shared subscription was answered and then never received a change (gateway probe).
MAX_SHARED_SUBSCRIPTIONS: Final = MAX_CHANNELS - 3

logger = logging.getLogger("drf_grip.gateway")

#: Connection meta (kept by the proxy, sent back on every request) set while the
#: connection has subscriptions: their state in the cache can be lost, the meta cannot.
_SUBSCRIBED = "drf-subscribed"
#: Its value when the cache holds no recording mark: the epoch the connection subscribed
#: under (``policies.recording_epoch()``) otherwise.
_NO_EPOCH = "1"
#: The close code when the cache does not answer: Try Again Later (RFC 6455 §7.4.2, IANA).
TRY_AGAIN_LATER = 1013


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
        from ..registry import register_gateway

        register_gateway(cls)  # its subscriptions need a cache every process shares
        # WebSocket only: a plain HTTP request gets 400 with a reason.
        return require_websocket(super(WebSocketView, cls).as_view(**initkwargs))

    # -- the connection -------------------------------------------------------------------

    def websocket(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        ctx: WebSocketContext = request.wscontext
        if not request_proxied(request):
            # The Connection-Id names the subscriptions: only the proxy may assert it.
            return HttpResponse(
                "Forbidden: the WebSocket gateway is served through a GRIP proxy only.\n",
                status=403,
                content_type="text/plain",
            )
        conn = connection_key(ctx.id)
        try:
            return self._serve(request, ctx, conn)
        except Exception as exc:
            if not cache_failed(exc):
                raise
            return self._state_unreachable(request, ctx)

    def _state_unreachable(
        self, request: HttpRequest, ctx: WebSocketContext
    ) -> HttpResponse | None:
        """The shared cache does not answer (Redis down) or refuses writes (out of
        memory): nothing of the connection can be read or kept. Every request answered 500,
        which through the proxy refused the handshake or dropped an open connection without
        a word (multi-process probe). A
        new connection is refused with 503, an open one closed with 1013, Try Again Later
        (RFC 6455 §7.4.2, IANA registry): clients retry after a backoff (live.js does)."""
        logger.warning(
            "drf-grip's state cache does not answer or refuses writes: %s WebSocket at %s",
            "refused a" if ctx.is_opening() else "closed a", request.path,
        )
        if ctx.is_opening():
            return HttpResponse(
                "Service Unavailable: the gateway's state cache does not answer; try again.\n",
                status=503,
                content_type="text/plain",
            )
        ctx.close(TRY_AGAIN_LATER, "the server's state cache does not answer; reconnect later")
        return None

    def _serve(self, request: HttpRequest, ctx: WebSocketContext, conn: str) -> None:
        """One batch of the connection ``conn``, through the GRIP proxy."""
        if ctx.is_opening():
            ctx.accept()
            keep_alive = int(grip_settings.WS_KEEP_ALIVE)
            if keep_alive:
                # The proxy calls us this often (refreshing the state's expiry) and pings the
                # client on silence, so idle connections survive intermediaries.
                ctx.keep_alive_interval = keep_alive
                ctx.set_keep_alive(keep_alive)
            ctx.subscribe(names.connection_channel(conn))
        state = load_state(conn)
        # The proxy keeps the connection's meta; the cache may have lost its state (Redis
        # flushed or restarted, an entry evicted, no call for longer than its expiry) while
        # the proxy kept the connection open. Nothing would then reach its subscriptions
        # again, and the client could not tell: close it once this batch is answered (its
        # requests may write), and the client reconnects and subscribes afresh.
        lost = bool(ctx.meta.get(_SUBSCRIBED)) and not state["subs"]
        self._saved_state: dict[str, Any] | None = None
        self._epoch_before: str | None = None
        changed = False
        published: list[str] = []
        for message in request.websocket:
            answer, touched = self.handle_message(request, ctx, conn, state, message)
            changed = changed or touched
            if answer is None:
                continue
            text = encode_json(answer)
            if ctx.is_opening() or len(text.encode()) + len(MESSAGE_PREFIX) <= INLINE_MESSAGE_MAX:
                request.websocket.send(text)
            else:
                # Through the connection's own channel, which the proxy applied when it
                # opened, once the answer left: before any settle of this batch publishes.
                published.append(text)
        if published:
            ctx.after_sent(lambda: [send_to_connection(conn, {"content": t}) for t in published])
        if state["subs"] and not lost:
            keep_recording()
            _renew_shared(state)
        if lost and not ctx.closed:
            ctx.close(SUBSCRIPTIONS_LOST, "subscriptions lost: reconnect and subscribe again")
        if request.websocket.close_code is not None or ctx.disconnected or ctx.closed:
            drop_state(conn)
            return None
        if (changed or state["subs"]) and state != self._saved_state:
            save_state(conn, state)  # also refreshes the expiry on keep-alive calls
        had = ctx.meta.get(_SUBSCRIBED)
        if state["subs"] and not had:
            epoch = recording_epoch()
            if self._epoch_before is not None and epoch != self._epoch_before:
                # The cache lost its records (or its mark expired) while this batch recorded
                # the connection's first subscriptions: they may be gone, and no recovery
                # names an epoch they were made under (policies.recording_epoch).
                drop_state(conn)
                ctx.close(SUBSCRIPTIONS_LOST, "subscriptions lost: reconnect and subscribe again")
                return None
            ctx.meta[_SUBSCRIBED] = epoch or _NO_EPOCH
            for channel in _recovery_channels(epoch):
                ctx.subscribe(channel)
        elif had and not state["subs"]:
            ctx.meta.pop(_SUBSCRIBED, None)
            for channel in _recovery_channels("" if had == _NO_EPOCH else had):
                ctx.unsubscribe(channel)
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
            if not valid_id(message_id):
                message_id = None
                raise MessageError(
                    400, "id must be a string of at most 200 characters or an integer"
                )
            kinds = [k for k in ("subscribe", "unsubscribe") if k in data]
            if "url" in data or "method" in data:
                kinds.append("request")
            if len(kinds) > 1:
                raise MessageError(
                    400, f"a message is one of a request, subscribe or unsubscribe: got {kinds}"
                )
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
        except Exception as exc:  # noqa: BLE001 - never a 500 for the connection, never a dropped one
            if cache_failed(exc):
                # The state cache refuses writes (Redis out of memory) or stopped answering:
                # the message failed on it, and the connection cannot keep a subscription.
                # Closed with 1013 like the whole batch of an unreachable cache (websocket()),
                # not a 500 the client cannot act on.
                raise
            logger.exception("drf-grip gateway: a message failed")
            return {"id": message_id, "status": 500, "error": "server error"}, False

    def decode(self, message: str | bytes) -> dict[str, Any]:
        return decode_message(message)

    # -- inner requests -------------------------------------------------------------------

    def get_inner_headers(self, data: Mapping[str, Any]) -> dict[str, str]:
        """Headers a message adds to its request: ``headers`` and ``token``."""
        return inner_headers(data, self.token_keyword)

    def build_request(
        self,
        outer: HttpRequest,
        method: str,
        url: str,
        data: Any,
        headers: Mapping[str, str],
    ) -> WSGIRequest:
        """A request like the one a browser on the same page would send over HTTP."""
        return build_inner_request(outer, method, url, data, headers)

    def rest(self, request: HttpRequest, data: Mapping[str, Any]) -> dict[str, Any]:
        method = check_method(data.get("method", "GET"))
        if "url" not in data:
            raise MessageError(400, "a request needs a url")
        resolvable_path(data["url"])
        headers = self.get_inner_headers(data)
        if method in ("GET", "HEAD") and _asks_for_a_stream(
            headers, with_query_data(data["url"], data.get("data"))
        ):
            # One answer cannot carry a stream: its body came back as SSE text in "data"
            # (DRF probe). Changes come to a subscription.
            raise MessageError(
                406, "a stream's events come to a subscription: subscribe, or ask for JSON, "
                "not text/event-stream"
            )
        inner = self.build_request(request, method, data["url"], data.get("data"), headers)
        return answer_of(data.get("id"), run_inner(inner))

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
        if self._epoch_before is None and not ctx.meta.get(_SUBSCRIBED):
            # The connection's first: the epoch read before anything of it is recorded, and
            # again once the batch is answered (_serve).
            self._epoch_before = recording_epoch(renew=False)
        key = subscription_key(sub_id)
        if key in state["subs"] and sent_version(conn, key) == REVOKED:
            # Ended ({"event": "end"}) by the publisher, which cannot write the connection's
            # state (connections.py): the subscription is over, and its id free again,
            # even if this subscribe is refused below.
            self._forget(ctx, conn, state, key)
            save_state(conn, state)
            self._saved_state = copy.deepcopy(state)
        if key in state["subs"]:
            raise MessageError(409, f"the subscription id {key} is in use; unsubscribe first")
        limit = int(grip_settings.WS_MAX_SUBSCRIPTIONS)
        if len(state["subs"]) >= limit:
            raise MessageError(429, f"too many subscriptions: the limit is {limit}")
        # ``data`` adds query parameters, as in a GET message (it was ignored: the client
        # got the whole list it did not ask for, and its changes).
        url = with_query_data(data["subscribe"], data.get("data"))
        path = resolvable_path(url)
        headers = self.get_inner_headers(data)
        if _asks_for_a_stream(headers, url):
            # Its answer would be a stream's body, a string in "data", and its events objects.
            raise MessageError(
                406, "a subscription's events come from the gateway: ask for JSON, "
                "not text/event-stream"
            )
        ticket = changed_since = None
        attempts = 3
        for attempt in range(1, attempts + 1):
            inner = self.build_request(request, "GET", url, None, headers)
            context = RealtimeContext(role="gateway-subscribe")
            ticket = answer_ticket(conn, key)  # before the render (rerender.py)
            inner.drf_grip = context
            response = run_inner(inner)
            if response.status_code != 200 or too_large(response):
                return refused_answer(sub_id, response)  # nothing kept of the subscription
            policy = context.policy
            if policy is None:
                raise MessageError(
                    400, f"nothing live at {path} in the media type asked for: subscribe to "
                    "a realtime view's list or detail URL (or an action its "
                    "get_realtime_kind() makes live), as JSON; DRF's browsable API page "
                    "is not live"
                )
            answer = answer_of(sub_id, response)
            if policy.delivery == SHARED:
                answer, slot = self._subscribe_shared(
                    ctx, conn, state, key, sub_id, url, policy, answer
                )
                state["subs"][key]["listing"] = context.state.get("listing")
                # Listed as fresh first, then checked: if no publisher moved the version
                # meanwhile, every later render is kept for its settle (fresh_subscribers).
                # The last attempt answers anyway: its settle sends what overtook it. Pushes
                # name the live URL, so a shared answer always does (_subscribe_shared).
                channel = policy.channels[0]
                answered = context.state.get("version")
                if read_versions([channel])[channel] == answered or attempt == attempts:
                    await_the_push_read(channel, answered, answer.get("etag"), proxy_user(conn))
                    ctx.after_sent(_settle_shared(conn, key, channel, answered, slot))
                    return answer
                continue
            user = getattr(inner, "user", None)
            url = as_the_view_read_it(url, inner)
            state["subs"][key] = {
                "id": sub_id,
                "url": url,
                "mode": "private",
                "model": policy.model,
                "kind": policy.kind,
                "pk": policy.pk,
                # Another object can take over the value its URL names (rerender.py).
                "by_value": policy.by_value,
                "partition": policy.partition,
                "user": str(user.pk) if user is not None and user.is_authenticated else None,
                # The subscriber's own GET, replayed for every change (render.py).
                "req": record(inner, credentials=True).as_dict(),
            }
            answer_pending(conn, key)  # before the publisher can find it (rerender.py)
            refused = save_state(conn, state)
            if refused is not None:
                del state["subs"][key]
                if refused == USER_FULL:
                    raise MessageError(
                        429, "too many of your live gateway connections for this resource: "
                        "close one (WS_MAX_LIVE_CONNECTIONS_PER_USER)"
                    )
                raise MessageError(
                    503, "too many live gateway connections for this resource; retry later"
                )
            # Saved as it is now: the end of this request need not save it again.
            self._saved_state = copy.deepcopy(state)
            if not record_answer(conn, key, ticket, context.result_etag):
                changed_since = True  # a later render was pushed already: render again
                continue
            # A change that committed while we rendered, and was published before the
            # publisher could see this subscription, moved a channel's counter: render again.
            # (Not the prev-ids a hold names: they move only once the proxy confirmed.)
            counters = context.state.get("counters") or {}
            changed_since = read_versions(list(counters)) != counters
            if not changed_since:
                break
        ctx.after_sent(_settle(conn, key, ticket, changed_since))
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
    ) -> tuple[dict[str, Any], str | None]:
        """The answer, and the slot the connection took among the channel's fresh
        subscribers (None when that index was full: the settle then goes by time)."""
        channel = policy.channels[0]
        shared = {s["channel"] for s in state["subs"].values() if s["mode"] == "shared"}
        if channel not in shared and len(shared) >= MAX_SHARED_SUBSCRIPTIONS:
            raise MessageError(
                429, f"too many shared subscriptions: the limit is {MAX_SHARED_SUBSCRIPTIONS}"
            )
        # Until its settle, the publisher skips this connection on the live URL's channel and
        # the settle sends what it skipped (shared.send_after_answer): see fresh_subscribers.
        ctx.set_proxy_meta("user", proxy_user(conn))
        ctx.subscribe(channel, filters=[SKIP_USERS])
        # Due once the answer left (_settle_shared); this bound only if it never does.
        slot = fresh_subscribers(channel).take(conn, {"until": time.time() + UNSENT_OVERDUE})
        state["subs"][key] = {
            "id": sub_id,
            "url": url,
            "mode": "shared",
            "channel": channel,
            "live": policy.url,
            "view": policy.view,
        }
        answer["url"] = policy.url
        return answer, slot

    def unsubscribe(
        self, ctx: WebSocketContext, conn: str, state: dict[str, Any], data: Mapping[str, Any]
    ) -> dict[str, Any]:
        target = data["unsubscribe"]
        if not valid_id(target) or target is None:
            raise MessageError(400, "unsubscribe names a subscription id")
        key = subscription_key(target)
        if self._forget(ctx, conn, state, key) is None:
            raise MessageError(404, f"no subscription {key}")
        return {"id": data.get("id", target), "status": 200, "unsubscribed": target}

    def _forget(
        self, ctx: WebSocketContext, conn: str, state: dict[str, Any], key: str
    ) -> dict[str, Any] | None:
        """Remove the subscription ``key`` from the connection; it, or None if there is none."""
        sub = state["subs"].pop(key, None)
        if sub is None:
            return None
        if sub["mode"] == "shared":
            if not any(s.get("channel") == sub["channel"] for s in state["subs"].values()):
                ctx.unsubscribe(sub["channel"])
                fresh_subscribers(sub["channel"]).remove(conn)
        else:
            forget_version(conn, key)
            if not any(s.get("model") == sub["model"] for s in state["subs"].values()):
                private_connections(sub["model"]).remove(conn)
        return sub


def _recovery_channels(epoch: str) -> list[str]:
    """What a connection with subscriptions holds besides them: the recovery channel of
    every such connection, and that of the epoch it subscribed under (``epoch``)."""
    channels = [names.gateway_recovery_channel()]
    if epoch:
        channels.append(names.gateway_recovery_channel(epoch))
    return channels


def _renew_shared(state: dict[str, Any]) -> None:
    """Keep listed what the connection's shared subscriptions were listed under: their live
    URLs and views expire after ``live_timeout()`` unless a hold renews them, and a
    subscription lives on one subscribe, so with no other client of its URL it got no
    change after a few minutes. Renewed from the proxy's keep-alive calls, every quarter of
    that expiry (``state["renewed"]``, wall-clock seconds)."""
    now = time.time()
    every = live_timeout() / 4
    if now - state.get("renewed", 0) < every:
        return
    if len(_relisted) > 4 * int(grip_settings.LIVE_URL_MAX):
        _relisted.clear()  # bounded: URLs nobody holds any more fall out
    recorded: set[tuple[str, str]] = set()
    for sub in state["subs"].values():
        listing = sub.get("listing")
        if sub["mode"] != SHARED or not listing:
            continue
        # Once per URL and process, whatever the number of connections holding it.
        if now - _relisted.get(listing["key"], 0) < every:
            continue
        _relisted[listing["key"]] = now
        if not host_allowed(RecordedRequest.from_dict(listing["entry"]["req"])):
            # Dropped for its Host (shared._drop_live_url), and its subscribers told so:
            # listed again, each later change dropped it again and told them again.
            continue
        # The view once per model: another URL of it would only read the entry just renewed.
        if (listing["model"], sub["view"]) not in recorded:
            recorded.add((listing["model"], sub["view"]))
            record_view(listing["model"], sub["view"], SHARED)
        relist(listing)
    state["renewed"] = now


#: Live URL key -> when this process last renewed it for a gateway subscription.
_relisted: dict[str, float] = {}


#: Seconds within which the proxy has an answer that left Django and has applied the
#: instructions it carries. A push made later reaches the client after the answer; one
#: made earlier may have overtaken the answer or missed the subscription, and the settle
#: sends the latest again. A guess, which load can defeat: only a shared subscription that
#: found its channel's index of fresh subscribers full uses it (connections.fresh_subscribers);
#: pushes to a private one wait for its settle (rerender.py).
ANSWER_TRANSIT = 0.1

#: Seconds from an answer leaving Django to the check that a push did not overtake it, or
#: (a shared subscription) to the settle that sends the renders its connection was skipped
#: for. Pushpin's proxy writes the answer to the client and its handler writes published
#: messages, neither waiting for the other: in the soak a push sent just after the answer
#: had left Django still reached the client 50 ms before the answer; and under load
#: (a hundred subscribes at once, the bench) the handler applied subscriptions more than
#: 0.1 s after their answers left Django. Until then a fresh shared subscription's changes
#: wait: the guarantee is one second (DESIGN.md §4).
SETTLE_DELAY = 0.4

#: Seconds after ``SETTLE_DELAY`` past which a subscription's settle counts as lost (its
#: process stopped: a restart right after a page subscribed, in the browser test). A shared
#: one's next render is sent to the connection on its own channel as its settle would have,
#: and the live URL's channel carries the ones after it (shared._Fresh); a settle that
#: merely runs late sends a copy with the same id, which the proxy drops: so short. Pushes
#: to a private one stop waiting for it (rerender.answer_left).
SETTLE_OVERDUE = 0.3

#: Seconds after which a fresh shared subscription whose answer never left Django (its
#: process stopped within the request) counts as overdue: an answer may take a while, one
#: subscribe after another in a batch, and a copy sent before it would be overtaken by it.
UNSENT_OVERDUE = 5.0


def _settle(conn: str, key: str, ticket: int, changed_since: bool) -> Callable[[], None]:
    """Once a private subscription's answer left Django, a moment later (once it has reached
    the client): settle it (rerender.settle_answer). Pushes to it wait until then, or until
    the settle is overdue."""

    def closed() -> None:
        answer_left(conn, key, time.time() + SETTLE_DELAY + SETTLE_OVERDUE)
        call_later(
            SETTLE_DELAY,
            _while_subscribed(
                conn, key, None, lambda: settle_answer(conn, key, ticket, changed_since)
            ),
        )

    return closed


def _settle_shared(
    conn: str, key: str, channel: str, answered: str | None, slot: str | None
) -> Callable[[], None]:
    """The same for a shared subscription (shared.send_after_answer): the renders its
    connection was skipped for as a fresh subscriber (listed in ``slot``), or with no slot,
    a render newer than the answer made before the proxy surely applied the subscription."""

    def closed() -> None:
        now = time.time()
        active_by = now + ANSWER_TRANSIT
        if slot is not None:
            due = {"until": now + SETTLE_DELAY + SETTLE_OVERDUE}
            fresh_subscribers(channel).replace_in(slot, conn, due)
        # The subscription is looked up only when there is something to send: a settle
        # with nothing newer (most) costs a few cache reads, run for every subscribe.
        call_later(
            SETTLE_DELAY,
            lambda: send_after_answer(
                conn, channel, answered, active_by,
                subscribed=lambda: _subscribed(conn, key, channel), slot=slot,
            ),
        )

    return closed


def _while_subscribed(
    conn: str, key: str, channel: str | None, settle: Callable[[], None]
) -> Callable[[], None]:
    """``settle``, run only if the connection still has the subscription ``key`` (on
    ``channel``, a shared one's) by then: the client may have unsubscribed in the
    ``SETTLE_DELAY`` since its answer, and nothing follows ``unsubscribed`` (DESIGN.md §1,
    "unsubscribe stops it")."""

    def run() -> None:
        if _subscribed(conn, key, channel):
            settle()

    return run


def _subscribed(conn: str, key: str, channel: str | None) -> bool:
    """Whether the connection still has the subscription ``key`` (on ``channel``, a shared
    one's)."""
    sub = load_state(conn)["subs"].get(key)
    return sub is not None and (channel is None or sub.get("channel") == channel)


def _asks_for_a_stream(headers: Mapping[str, str], url: str) -> bool:
    """Whether a message's ``Accept``, or its URL's format override (DRF's ``?format=``),
    makes a realtime view answer with an event stream. The view chooses the stream only
    over a JSON the client weighs less, or not at all: one it prefers, or a tie (DRF's
    order), is answered in JSON (probe). ``?format=event-stream`` went past the 406: a
    subscription's first answer was SSE text in a string, its changes objects (transports
    probe)."""
    param = api_settings.URL_FORMAT_OVERRIDE
    if param and EventStreamRenderer.format in parse_qs(urlsplit(url).query).get(param, ()):
        return True
    accept = " ".join(v for k, v in headers.items() if k.lower() == "accept")
    return (
        EVENT_STREAM in accept.lower()
        and not refuses_event_stream(accept)
        and (
            not accept_weight(accept, "application/json")
            or weighs_event_stream(accept, ["application/json"]) > 0
        )
    )
