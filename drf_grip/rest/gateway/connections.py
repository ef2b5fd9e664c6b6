"""A gateway connection's state in the shared cache, and the indexes that find it.

Only the connection's own requests write its state (the proxy sends one connection's
requests one at a time), so a plain ``set`` is safe; the indexes the publisher reads are
bounded, expiring :class:`~drf_grip.rest.store.SlotIndex` sets. Everything expires: a
connection gone without a ``DISCONNECT`` leaves nothing behind for long.

A state is ``{"subs": {subscription key: subscription}}``; a private subscription also has
the version (ETag) its subscriber last received, kept under its own key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from ...conf import grip_settings
from ...grip.items import make_item
from ...grip.publisher import publish, publish_items
from ...protocol.items import RawItem
from .. import channels as names
from ..store import SlotIndex, state_cache
from ..tickets import retire

__all__ = [
    "FULL",
    "REVOKED",
    "SUBSCRIPTIONS_LOST",
    "USER_FULL",
    "close_lost_connections",
    "connection_key",
    "drop_state",
    "forget_version",
    "fresh_subscribers",
    "load_state",
    "load_states",
    "private_connections",
    "proxy_user",
    "save_state",
    "user_connections",
    "sent_version",
    "sent_version_key",
    "sent_version_entry",
    "set_sent_version",
    "named_objects",
    "set_named_object",
    "state_timeout",
    "subscription_key",
]

#: The close code when the cache lost a connection's subscriptions: Service Restart
#: (RFC 6455 §7.4.1, IANA registry), which tells a client to reconnect.
SUBSCRIPTIONS_LOST = 1012

_STATE = "drf_grip:ws:conn:"
_INDEX = "drf_grip:ws:model:"
_ETAG = "drf_grip:ws:etag:"
_NAMED = "drf_grip:ws:named:"
FRESH_SECONDS = 10

#: The sent version of a subscription whose credentials stopped naming its subscriber.
REVOKED = "revoked"


def state_timeout() -> int:
    # The proxy calls at least every WS_KEEP_ALIVE seconds (Keep-Alive-Interval), and each
    # call refreshes the state; a connection gone without a DISCONNECT expires.
    return max(4 * int(grip_settings.WS_KEEP_ALIVE), 120)


def connection_key(connection_id: str) -> str:
    """An unguessable key for a ``Connection-Id``: it names the connection's channel."""
    secret = hashlib.sha256(b"drf-grip.gateway:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(secret, connection_id.encode(), hashlib.sha256).hexdigest()[:32]


def subscription_key(sub_id: Any) -> str:
    """A subscription id (a string or a number) as a key of the state's ``subs``."""
    return json.dumps(sub_id)


def fresh_subscribers(channel: str) -> SlotIndex:
    """Connections that subscribed to a shared channel in the last seconds.

    A WebSocket subscription has no prev-id, and the proxy says nothing when it applied
    one: a publish that reaches the proxy after this connection's first render but before
    the proxy applied its ``subscribe`` is lost for it, and under load (a hundred
    subscribes at once, the bench) Pushpin took longer than the 0.1 s once assumed
    (``gateway.view.ANSWER_TRANSIT``). So until the
    subscription's settle (``gateway.view.SETTLE_DELAY`` after its answer), the live URL's
    publisher names the connection in the item's ``skip_users`` meta (Pushpin's
    ``skip-users`` filter, which the subscription asks for) and keeps its render; the
    settle marks the entry settled (``{"s": 1}``) and sends the connection the render it
    skipped, if any (shared.send_after_answer). One copy either way, never two. An entry
    names when its settle is overdue (``{"until": time}``, ``gateway.view.SETTLE_OVERDUE``):
    a render after that settles it instead.

    The entry of a connection sent a copy stays (settled), so that later renders are kept
    for ``shared.repair_copies``; the others are removed at their settle."""
    return SlotIndex(f"drf_grip:ws:fresh:{channel}", 256, FRESH_SECONDS)


def proxy_user(conn: str) -> str:
    """The connection's ``user`` meta in the proxy, which ``skip_users`` names: short, since
    a publish may name every connection that subscribed in the last fraction of a second."""
    return conn[:16]


def private_connections(label: str) -> SlotIndex:
    """Gateway connections with private subscriptions to ``label`` (bounded, expiring)."""
    return SlotIndex(_INDEX + label, int(grip_settings.WS_MAX_LIVE_CONNECTIONS), state_timeout())


def load_state(conn: str) -> dict[str, Any]:
    state = state_cache().get(_STATE + conn)
    return state if isinstance(state, dict) else {"subs": {}}


def load_states(conns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The states of several connections in one cache read; a gone one is left out."""
    conns = list(conns)
    found = state_cache().get_many([_STATE + conn for conn in conns])
    states = {conn: found.get(_STATE + conn) for conn in conns}
    return {conn: state for conn, state in states.items() if isinstance(state, dict)}


def user_connections(label: str, user: str) -> SlotIndex:
    """The share of :func:`private_connections` one signed-in user may take: without it one
    user's connections took every slot, and everybody else's private subscriptions to the
    model were refused while they stayed open (security probe)."""
    return SlotIndex(
        f"{_INDEX}{label}:user:{user}",
        int(grip_settings.WS_MAX_LIVE_CONNECTIONS_PER_USER),
        state_timeout(),
    )


#: What :func:`save_state` says when a model's index is full, and when a user's share is.
FULL, USER_FULL = "full", "user-full"


def save_state(conn: str, state: dict[str, Any]) -> str | None:
    """Save a connection's own state and list it in its models' indexes, each user's share
    first; :data:`USER_FULL` or :data:`FULL` when one is full, None when listed."""
    state_cache().set(_STATE + conn, state, timeout=state_timeout())
    refused = None
    for label, user in {
        (s["model"], s.get("user")) for s in state["subs"].values() if s["mode"] == "private"
    }:
        share = user_connections(label, user) if user is not None else None
        slot, new = share.take_new(conn, {}) if share is not None else (None, False)
        if share is not None and slot is None:
            refused = refused or USER_FULL
        elif not private_connections(label).add(conn, {}):
            refused = refused or FULL
            if share is not None and slot is not None and new:
                # Refused, it takes no place in its user's share: the connection stays open,
                # and its place made that user's later subscriptions 429 (review).
                share.remove_from(slot, conn)
    return refused


def drop_state(conn: str) -> None:
    state = load_state(conn)
    for key, sub in state["subs"].items():
        if sub["mode"] == "private":
            private_connections(sub["model"]).remove(conn)
            if sub.get("user") is not None:
                user_connections(sub["model"], sub["user"]).remove(conn)
            forget_version(conn, key)
        else:
            fresh_subscribers(sub["channel"]).remove(conn)
    state_cache().delete(_STATE + conn)


def sent_version(conn: str, key: str) -> str | None:
    """The version (ETag, ``status-N`` or :data:`REVOKED`) a private subscription last sent."""
    return state_cache().get(sent_version_key(conn, key))


def sent_version_key(conn: str, key: str) -> str:
    """Where :func:`sent_version` reads, for a caller that reads it with other keys at once."""
    return _ETAG + conn + key


def sent_versions(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """:func:`sent_version` of several ``(conn, key)`` subscriptions, in one round trip."""
    if not pairs:
        return {}
    found = state_cache().get_many([_ETAG + conn + key for conn, key in pairs])
    return {(conn, key): found.get(_ETAG + conn + key) for conn, key in pairs}


def set_sent_version(conn: str, key: str, version: str | None) -> None:
    state_cache().set(*sent_version_entry(conn, key, version))


def sent_version_entry(conn: str, key: str, version: str | None) -> tuple[str, str | None, int]:
    """What :func:`set_sent_version` writes (key, value, timeout), for a caller that writes
    it with other keys in one round trip (``store.write_entries``)."""
    return _ETAG + conn + key, version, state_timeout()


def named_objects(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """The object each private subscription ``(conn, key)`` looked up by another unique field
    (``lookup_field = "slug"``) names since a re-render found another one than it named at
    subscribe (:func:`set_named_object`), else None; in one round trip."""
    if not pairs:
        return {}
    found = state_cache().get_many([_NAMED + conn + key for conn, key in pairs])
    return {(conn, key): found.get(_NAMED + conn + key) for conn, key in pairs}


def set_named_object(conn: str, key: str, pk: str) -> None:
    """Beside the connection's state, which only its own requests write (no read-modify-write
    of it from a publisher): the object the subscription's URL names now."""
    state_cache().set(_NAMED + conn + key, pk, timeout=state_timeout())


def forget_version(conn: str, key: str) -> None:
    """Forget a private subscription's last version, and retire its render tickets: an
    anonymous client subscribing and unsubscribing made-up URLs left two day-long entries
    each (security probe)."""
    state_cache().delete_many([_ETAG + conn + key, _NAMED + conn + key])
    retire(ticket_name(conn, subscription_digest(key)))


def subscription_digest(key: str) -> str:
    """A short digest of subscription ``key`` for ticket names and item ids."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ticket_name(conn: str, digest: str) -> str:
    """The render tickets' name of a connection's private subscription (``rerender.py``)."""
    return f"ws:{conn}:{digest}"


def send_to_connection(conn: str, message: dict[str, Any], item_id: str | None = None) -> None:
    """Publish one WebSocket message (a ``ws-message`` format) to a connection's own channel."""
    publish(names.connection_channel(conn), {"ws-message": dict(message)}, id=item_id)



def close_lost_connections(epochs: Iterable[str] = ("",)) -> None:
    """Close, with :data:`SUBSCRIPTIONS_LOST`, every gateway connection with subscriptions,
    when the cache lost them all (Redis flushed or restarted: ``policies.records_lost()``).

    Each such connection holds :func:`~drf_grip.rest.channels.gateway_recovery_channel`;
    Pushpin 1.36 closes a WebSocket on a published ws-message with action ``close`` and the
    code it carries (PUSHPIN.md). Without it a connection found out at its next request,
    the proxy's keep-alive call up to ``WS_KEEP_ALIVE`` seconds later, and its client
    missed the changes made meanwhile (multi-process probe: 9.9-11.0 s late).

    ``epochs`` names the marks whose connections to close (``policies.recovery_due()``);
    the default, every connection with subscriptions, is for a cache that holds no mark."""
    publish_items([close_lost_connections_item(epoch) for epoch in epochs])


def close_lost_connections_item(epoch: str = "") -> RawItem:
    """An item :func:`close_lost_connections` publishes."""
    return make_item(
        names.gateway_recovery_channel(epoch),
        {"ws-message": {"action": "close", "code": SUBSCRIPTIONS_LOST}},
    )
