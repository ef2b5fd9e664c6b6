"""Subscription filters: whether an item published to a channel reaches one subscriber.

A WebSocket subscription may name filters (``{"type": "subscribe", "channel": ...,
"filters": [...]}``); each compares the connection's meta (set with ``set-meta`` control
messages) with the item's ``meta``. Pushpin 1.36 implements these in
``src/handler/filter.cpp``; the embedded proxy follows it for the two that only compare:

- ``skip-self``: dropped when the item's ``sender`` is the connection's ``user``;
- ``skip-users``: dropped when the connection's ``user`` is one of the item's
  comma-separated ``skip_users``.

A filter the proxy does not know lets the item through, so a subscriber never misses what
an unknown filter was meant to narrow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["SKIP_SELF", "SKIP_USERS", "dropped_by", "set_meta", "subscribed_filters"]

SKIP_SELF = "skip-self"
SKIP_USERS = "skip-users"


def dropped_by(
    filters: Iterable[str], connection_meta: Mapping[str, str], item_meta: Mapping[str, str]
) -> bool:
    """Whether ``filters`` drop an item with ``item_meta`` for a connection with
    ``connection_meta``."""
    user = connection_meta.get("user", "")
    if not user:
        return False
    for name in filters:
        if name == SKIP_SELF and item_meta.get("sender", "") == user:
            return True
        if name == SKIP_USERS and user in _names(item_meta.get("skip_users", "")):
            return True
    return False


def subscribed_filters(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The filters a ``subscribe`` control message names; none when it names no list of
    strings, as Pushpin subscribes without filters then."""
    filters = message.get("filters")
    if isinstance(filters, list) and all(isinstance(name, str) for name in filters):
        return tuple(filters)
    return ()


def set_meta(meta: dict[str, str], message: Mapping[str, Any]) -> None:
    """Apply a ``set-meta`` control message to a connection's filter ``meta``, as Pushpin
    1.36's handler does (handler/engine.cpp ``WsControlMessage::SetMeta``): a value sets
    the name, even an empty one; no value removes it. Names are kept as given: the handler
    keeps them in a ``QHash`` (handler/wssession.h), so ``User`` is not the filters' ``user``.
    This meta is the filters' only; the origin's ``Meta-*`` headers come from ``Set-Meta-*``
    response headers (proxy/websocketoverhttp.cpp)."""
    name, value = message.get("name"), message.get("value")
    if not isinstance(name, str) or not name:
        return
    if value is None:
        meta.pop(name, None)
    elif isinstance(value, str):
        meta[name] = value


@lru_cache(maxsize=64)
def _names(listed: str) -> frozenset[str]:
    """A comma-separated list, parsed once per item however many subscribers read it."""
    return frozenset(part.strip() for part in listed.split(","))
