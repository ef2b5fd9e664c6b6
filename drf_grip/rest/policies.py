"""Where recorded realtime policies live, so any process can follow them.

A subscription records which view (and delivery mode) it came through, per model, in a
bounded index in Django's cache. The publisher lists the index of a changed model and asks
each view class for the channels the change wakes (``get_changed_channels()``), so an
overridden ``get_realtime_model()``, ``get_realtime_delivery()`` or channel hook is followed
in a Celery worker or a shell that never served a request.
"""

from __future__ import annotations

import importlib
import time
import weakref
from typing import Any, NamedTuple

from django.db import models

from ..conf import grip_settings
from .context import RealtimePolicy
from .store import ADDED, SlotIndex, state_cache, touch

__all__ = [
    "keep_recording",
    "live_timeout",
    "record_policy",
    "record_view",
    "recorded_views",
    "records_lost",
    "recording_epoch",
    "Recovery",
    "recovery_due",
    "view_class",
    "view_path",
]

_MAX_VIEWS = 64
#: Per model, the slot each recorded view took (SlotIndex.renew).
_recent: dict[str, dict[str, tuple[str, float]]] = {}

#: Set while any process records subscriptions, renewed as they are. A cache without it
#: lost every record (Redis flushed or restarted, while the proxies still hold clients),
#: or nobody subscribed to anything for ``live_timeout()``. Its value says since when
#: (``time.time()``) and whether it was set anew because the cache lost it (``lost``): then
#: the holds made before are still held, unrecorded, while those made since record again.
_RECORDING = "drf_grip:recording"


class _Memory:
    """What this process knows of the mark in one cache: when it last renewed it, and the
    mark as it last read or set it, and when (``time.monotonic()``). Kept per cache object,
    so that a project's tests that switch caches (``override_settings(CACHES=...)``) do not
    take a fresh one for a lost one."""

    marked = float("-inf")
    seen: dict[str, Any] | None = None
    seen_at = float("-inf")


_memories: weakref.WeakKeyDictionary[Any, _Memory] = weakref.WeakKeyDictionary()


def _memory(cache: Any) -> _Memory:
    try:
        return _memories.setdefault(cache, _Memory())
    except TypeError:  # a cache object no weak reference can name: nothing remembered
        return _Memory()


#: Per mark and model, set by the one publisher that re-requests the holds of that model
#: the cache lost; per mark and epoch, by the one that closes that epoch's gateway
#: connections (``recovery_due``).
_RECOVERED_IN = "drf_grip:recovered-in:"


def live_timeout() -> int:
    """How long a subscription's records outlive its last hold: every hold is renewed by
    the proxy well within it (a long-poll's timeout, a stream's next-link timeout, the
    gateway's keep-alive), so an entry that expires has nobody behind it."""
    # The longest a live subscription goes without renewing its records. A configured
    # LIVE_URL_TIMEOUT counts from there ("outlives its last hold"): taken alone, one shorter
    # than that expired under a quiet subscription that was still held, and no change reached
    # it until its renewal (LIVE_URL_TIMEOUT 3 s: a shared stream quiet for 7 s got nothing
    # until its next link fell due, NEXT_LINK_TIMEOUT 120 s later).
    renewal = max(
        int(grip_settings.HOLD_TIMEOUT_MAX),
        int(grip_settings.NEXT_LINK_TIMEOUT),
        4 * int(grip_settings.WS_KEEP_ALIVE),
    )
    configured = grip_settings.LIVE_URL_TIMEOUT
    return renewal + (int(configured) if configured else 60)


def _index(label: str) -> SlotIndex:
    return SlotIndex(f"drf_grip:views:{label}", _MAX_VIEWS, live_timeout())


def record_policy(policy: RealtimePolicy) -> None:
    record_view(policy.model, policy.view, policy.delivery)


def record_view(label: str, view: str, delivery: str) -> None:
    """List ``view`` (``"module:Qual"``) among the views subscribers of model ``label``
    came through, with its delivery: what the publisher follows (``recorded_views``)."""
    key = f"{view}|{delivery}"
    entry = {"view": view, "delivery": delivery}
    done = _index(label).renew(key, entry, _recent.setdefault(label, {}))
    # ADDED: listed anew, as after a flush, which took the mark too.
    keep_recording(anew=done == ADDED)


def keep_recording(anew: bool = False) -> None:
    """Renew the mark that subscriptions are recorded: by every recorded hold, and by each
    request of a gateway connection with subscriptions (which records once, when it
    subscribes, and then lives for hours): a mark that expired under it would make the
    next change close every such connection (``records_lost()``, publishing.py)."""
    now = time.monotonic()
    timeout = _mark_timeout()
    cache = state_cache()
    memory = _memory(cache)
    if anew or now - memory.marked > timeout / 4:
        # Read, not only renewed: should the cache lose it, the mark set anew names its
        # epoch (``before``), and the gateway connections subscribed under it are closed.
        if _read_mark(cache, memory, now, timeout) is None or not touch(
            cache, _RECORDING, timeout
        ):
            _mark_anew(cache, memory, timeout, now)
        memory.marked = now


def recording_epoch(renew: bool = True) -> str:
    """The epoch of the mark subscriptions record under now (its ``since``), renewing it:
    a gateway connection that subscribes holds the recovery channel of this epoch, so that
    the recovery after a loss closes the connections subscribed before it and no other.

    Read from the cache, not from this process's memory of it, which is read again only
    every quarter of the mark's life: after a loss another process had set the mark anew,
    and a connection subscribing here took the epoch before it, which was no longer the
    cache's. When the cache lost the mark again, that epoch was not the one its recovery
    closed, and the connection kept subscriptions that nothing published to (a probe past
    one machine, Redis restarted three times under writes: 1 run in 20). ``renew=False``
    only reads it, unless it is missing."""
    cache = state_cache()
    memory = _memory(cache)
    if renew or _read_mark(cache, memory, time.monotonic(), _mark_timeout()) is None:
        keep_recording(anew=True)
    seen = memory.seen
    return _epoch(seen["since"]) if seen else ""


def _epoch(since: float) -> str:
    return repr(float(since))


def _mark_timeout() -> int:
    # Outlives the gap between a connection's keep-alive calls whatever LIVE_URL_TIMEOUT is:
    # live_timeout() covers four of them unless LIVE_URL_TIMEOUT is negative, which neither
    # conf.py nor a system check rejects.
    return max(live_timeout(), 4 * int(grip_settings.WS_KEEP_ALIVE))


def _mark_anew(cache: Any, memory: _Memory, timeout: int, now: float) -> None:
    # Gone while this process had set or read it within its life: the cache lost it (Redis
    # restarted empty), not a quiet spell. Subscriptions record again from here on, and the
    # first re-recorded hold made records_lost() false while streams, long-polls and
    # gateway subscriptions held before stayed unrecorded: under writes across a Redis
    # restart, streams got no change (a probe past one machine: 9 of 13 runs).
    lost = now - max(memory.marked, memory.seen_at) <= timeout
    before = [memory.seen["since"]] if lost and memory.seen else []
    mark = {"since": time.time(), "lost": lost, "before": before}
    if cache.add(_RECORDING, mark, timeout):
        memory.seen, memory.seen_at = mark, now
    else:  # another process set it first, perhaps a fresh one that knew no mark before
        _read_mark(cache, memory, now, timeout)


def _read_mark(cache: Any, memory: _Memory, now: float, timeout: int) -> dict[str, Any] | None:
    """The mark in ``cache``, now known to this process. A mark a process set anew knowing
    nothing of the one before (a fresh process) is known for a loss by one that read the
    old within its life, which names the old one's epoch in it."""
    found = cache.get(_RECORDING)
    if not found:
        return None
    mark = _as_mark(found)
    seen = memory.seen
    if (
        seen is not None
        and now - memory.seen_at <= timeout
        and seen["since"] != mark["since"]
        and seen["since"] not in mark["before"]
    ):
        mark = {**mark, "lost": True, "before": [*mark["before"], seen["since"]]}
        cache.set(_RECORDING, mark, timeout)
    memory.seen, memory.seen_at = mark, now
    return mark


def _as_mark(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {"since": 0.0, "lost": False, "before": []}
    return {"before": [], **value}  # a mark set by a version that named no epochs before


def records_lost() -> bool:
    """Whether the cache holds no record of any subscription (``_RECORDING``): the publisher
    cannot tell which views its held clients came through, so it follows the views'
    classes, as with a per-process cache."""
    return not state_cache().get(_RECORDING)


class Recovery(NamedTuple):
    """What the publisher of a change does for the records the cache lost
    (``recovery_due``)."""

    #: Re-request every hold of the changed model (hint them all).
    hint: bool
    #: Close the gateway connections that subscribed under these epochs
    #: (``recording_epoch()``): their subscriptions were lost.
    epochs: list[str]


def recovery_due(name: str) -> Recovery | None:
    """What the publisher of a change of model ``name`` (its label) is the one to do after
    the cache lost its records, while holds made before can still be held unrecorded: the
    first to look re-requests the holds of that model (once per loss and model), and closes
    the gateway connections of each epoch the lost records were made under (once per loss
    and epoch, whatever the model). None when there is nothing to do.

    The epochs are those the processes that read the lost mark have told (``_read_mark``),
    and a process tells when it next reads the mark: one that told after the first
    recovery ran had its connections closed by none (each loss was recovered once), and
    they kept subscriptions nothing published to. So each epoch is closed once, when it is
    first named."""
    cache = state_cache()
    mark = _read_mark(cache, _memory(cache), time.monotonic(), _mark_timeout())
    # Every hold held before the loss came back (and recorded) or ended within the longest
    # time a subscription goes without renewing its records.
    if mark is None or not mark["lost"] or time.time() - mark["since"] > _mark_timeout():
        return None
    since, timeout = mark["since"], _mark_timeout()
    hint = bool(cache.add(f"{_RECOVERED_IN}{name}:{since}", 1, timeout))
    named = [_epoch(before) for before in mark["before"]]
    epochs = [e for e in named if cache.add(f"{_RECOVERED_IN}{since}:{e}", 1, timeout)]
    return Recovery(hint, epochs) if hint or epochs else None


def recorded_views(model: type[models.Model]) -> list[dict[str, Any]]:
    """``[{"view": "module:Qual", "delivery": ...}]`` recorded for ``model``."""
    return _index(model._meta.label_lower).entries()


def view_path(view_class: type) -> str:
    """How a subscription records the view it came through (``view_class`` reads it)."""
    return f"{view_class.__module__}:{view_class.__qualname__}"


def view_class(path: str) -> type | None:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return target if isinstance(target, type) else None
