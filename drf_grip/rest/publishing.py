"""From committed changes to GRIP items, following what subscriptions recorded.

For each changed model the publisher lists the policies its subscriptions recorded
(``policies.py``): private views get a ``hint`` on the channels their
``get_changed_channels()`` names (the proxy re-runs each held request with the client's own
headers, or fetches the stream's next link); shared views get one render per affected live
URL, pushed to every subscriber; gateway connections get their private subscriptions
re-rendered. A model nobody subscribed to costs one cache read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import models

from ..grip.publisher import publish
from . import channels as names
from .buckets import all_bucket_channels, bucketable, paced_hints
from .changes import Changes
from .context import PRIVATE, SHARED
from .policies import recorded_views, records_lost, recovery_due, view_class, view_path
from .registry import gateway_views, views_for
from .sse import format_event
from .store import per_process_state
from .versions import next_version, note_committed, unseen_start

__all__ = ["publish_committed", "CLOSE", "HINT", "delete_formats"]

logger = logging.getLogger("drf_grip.publish")

HINT: dict[str, Any] = {
    "http-response": {"action": "hint"},
    "http-stream": {"action": "hint"},
}

#: Ends streams. Versioned like every item: Pushpin takes an item without the prev-id its
#: stream holds for a lost publish and re-fetches the next link instead (a second event).
CLOSE: dict[str, Any] = {"http-stream": {"action": "close"}}


def delete_formats() -> dict[str, Any]:
    """A deleted object: long-polls are re-requested (and get a clean 404), streams get a
    final event, then are closed by a second item."""
    return {
        "http-response": {"action": "hint"},
        "http-stream": {"content": format_event(b"{}", event="delete").decode()},
    }


def _publish_versioned(
    channel: str, formats: dict[str, Any], committed: float | None = None
) -> tuple[str | None, str]:
    """Publish the channel's next item; ``committed`` (``time.time()``) when the change it
    hints at was committed, kept beside the id for the proxy's retry of a hold
    (``unchanged.held_behind``)."""
    previous, new = next_version(channel)
    if committed is not None:
        note_committed(channel, new, committed)
    if unseen_start(channel, previous):
        from .shared import reset_sequence

        # No proxy saw ``previous``; one that knows an older id would hold the item 5 s.
        reset_sequence(channel)
    publish(channel, formats, id=new, prev_id=previous)
    return previous, new


def _hint(channels: list[str], committed_at: float | None) -> None:
    # The change worker's clock is monotonic; holds in other processes compare wall time.
    committed = (
        None if committed_at is None else time.time() - (time.monotonic() - committed_at)
    )
    paced: list[str] = []
    for channel in channels:
        if bucketable(channel):
            paced.append(channel)
        else:
            _publish_versioned(channel, HINT, committed)
    paced_hints(paced, lambda ch: _publish_versioned(ch, HINT, committed))


def private_channels(
    model: type[models.Model],
    views: list[type],
    pks: set[Any] | None,
    partitions: set[str] | None,
) -> list[str]:
    """The hint channels of a change, as each private view's publishing hook names them."""
    out: dict[str, None] = {}
    for view in views:
        hook = getattr(view, "get_changed_channels", None)
        channels = (
            hook(model, pks, partitions)
            if hook is not None
            else names.channels_for_change(model, pks)
        )
        out.update(dict.fromkeys(channels))
    return list(out)


def publish_model(
    model: type[models.Model],
    pks: set[Any] | None,
    deleted: set[Any],
    partitions: set[str] | None,
    committed_at: float | None = None,
) -> None:
    from .gateway.rerender import publish_subscriptions
    from .live_urls import has_overflow
    from .shared import publish_shared
    from .store import evicted_since

    private_views: list[type] = []
    shared = False
    for entry in recorded_views(model):
        if entry["delivery"] == SHARED:
            shared = True
        elif entry["delivery"] == PRIVATE:
            for cls in _view_classes(model, entry["view"]):
                if cls not in private_views:
                    private_views.append(cls)
    lost = False
    if not private_views and not shared:
        if per_process_state():
            # A per-process cache cannot show what other processes' clients subscribed to
            # (a shell publishing for runserver): fall back on the views' class-level
            # delivery.
            private_views = [v for v in views_for(model) if _class_delivery(v) == PRIVATE]
            _warn_of_unseen_subscribers(model)
        elif records_lost():
            # The shared cache lost every record (Redis flushed or restarted) while the
            # proxies still hold clients, which record again only when re-requested.
            lost = True
    if shared and has_overflow(model):
        private_views.append(_DefaultChannels)
    channels = private_channels(model, private_views, pks, partitions)
    if shared and pks is None and has_overflow(model, "bulk"):
        channels.append(names.shared_bulk_channel(model))
    channels = list(dict.fromkeys(channels))
    _hint(channels, committed_at)
    if private_views or shared:
        for pk in sorted(deleted, key=str):
            channel = names.object_channel(model, pk)
            _publish_versioned(channel, delete_formats())
            _publish_versioned(channel, CLOSE)
    # One render per live URL reaches all of its subscribers; a private gateway subscription
    # costs a render per distinct subscriber (rerender.py): under a stream of writes the
    # shared pushes waited seconds behind those (the large soak), so they go first.
    if shared:
        publish_shared(model, pks, deleted, committed_at)
    # Gateway connections subscribed to this model's private views (their own index).
    publish_subscriptions(model, pks, deleted, partitions, committed_at)
    if per_process_state():
        return
    # The state cache evicted keys since this model's last publish (Redis under
    # ``maxmemory`` with an eviction policy): any record of a held client may be among
    # them, a live URL or the views its subscribers came through, and the publish above
    # then missed that client for good (multi-process probe, ``allkeys-lru``). Read once
    # the records were, so every eviction that could have hidden one is counted.
    label = model._meta.label_lower
    evicted = evicted_since(label)
    if evicted and not lost:
        _warn_of_evictions(evicted)
    if lost or evicted:
        _publish_to_unrecorded(model, pks, deleted, partitions, hinted=channels)
    elif (due := recovery_due(label)) is not None:
        # The cache lost its records and some came back since: the holds that did not
        # (a stream, a long-poll the proxy has not re-requested) are re-requested once,
        # all of the model's; one recorded since answers as it would have, at no more cost
        # than a re-request. Of the gateway connections, only those that subscribed under
        # the lost mark are closed: closing all closed those subscribed since too (a
        # project's tests clear the cache between tests), and closing none left the others
        # to find out at their next keep-alive call, up to WS_KEEP_ALIVE seconds late.
        if due.hint:
            _publish_to_unrecorded(model, None, deleted, None, hinted=channels,
                                   close_connections=False)
        if due.epochs and gateway_views():
            from .gateway.connections import close_lost_connections

            close_lost_connections(due.epochs)


def _publish_to_unrecorded(
    model: type[models.Model],
    pks: set[Any] | None,
    deleted: set[Any],
    partitions: set[str] | None,
    hinted: list[str],
    *,
    close_connections: bool = True,
) -> None:
    """The records of held clients may be missing (the cache lost them all, or evicted
    some): the proxies still hold those clients, which record again only when re-requested.
    Every hold of the model is hinted from the views' class-level delivery, which costs a
    re-request per held client until the holds record again, and gateway connections with
    subscriptions are closed (unless ``close_connections`` is false): the client reconnects
    on 1012, subscribes again and gets this change in the answer."""
    from .gateway.connections import close_lost_connections
    from .shared import mark_recovered

    views = views_for(model)
    if not views:
        # No client holds on the channels of a model no realtime view serves. Hinting them
        # anyway named each deleted row, and a Token's or a Session's primary key is the
        # secret itself: the proxy logs every publish's channel.
        return
    private = [v for v in views if _class_delivery(v) == PRIVATE]
    channels = private_channels(model, private, pks, partitions)
    if any(_class_delivery(v) == SHARED for v in views):
        # Shared holds hold on the recovery channel; a signed-in subscriber of a shared view
        # delivered like private data holds on the model's own channels.
        mark_recovered(model._meta.label_lower)
        channels += [names.shared_recovery_channel(model), *names.channels_for_change(model, pks)]
    # A deleted object's holds: re-requested, each answers 404 (a stream its last event).
    channels += [names.object_channel(model, pk) for pk in sorted(deleted, key=str)]
    _hint([c for c in dict.fromkeys(channels) if c not in hinted], None)
    if close_connections and gateway_views():
        close_lost_connections()


#: Objects of one model that ``publish_without_state`` hints one by one; past it, the model's
#: bulk channel stands for them.
FALLBACK_OBJECTS = 32


def publish_without_state(changes: Changes) -> list[str]:
    """Announce ``changes`` with no state cache: at exit, while it does not answer (Redis
    restarting or stopped), what the change worker could not publish would go with the
    process, and the clients held before it would keep the old representation (a stream or
    a gateway subscription until a later change; publishing probe). Every hold the views'
    class-level delivery may have made is hinted, every hint bucket of it, with no version
    (the versions are in the cache); gateway connections with subscriptions are closed, and
    subscribe again. The labels of the models announced."""
    from ..grip.items import make_item
    from ..grip.publisher import publish_items
    from .gateway.connections import close_lost_connections_item

    # Model-wide channels (lists, bulk) of every model first, then objects': each channel
    # goes out as all its hint buckets, and a queue too short for all of them drops the last
    # (``PUBLISH_QUEUE_SIZE``). A shell's delete of a parent with 1,000 children named each
    # child's channel before the parent's, and the parent's clients kept showing it (a
    # publishing probe: 54,198 items dropped).
    wide: dict[str, None] = {}
    objects: dict[str, None] = {}
    labels = []
    for model, pks in changes.updated.items():
        views = views_for(model)
        if not views:
            continue  # nobody holds its channels (and a Token's pk is its secret)
        deleted = changes.deleted.get(model, set())
        live = None if pks is None else set(pks) - deleted
        if live is not None and len(live) + len(deleted) > FALLBACK_OBJECTS:
            # The bulk channel, which every detail hold also holds, instead of each object's.
            live, deleted = None, set()
        partitions = changes.partitions_of(model)
        private = [v for v in views if _class_delivery(v) == PRIVATE]
        named = private_channels(model, private, live, partitions)
        if any(_class_delivery(v) == SHARED for v in views):
            named += [names.shared_recovery_channel(model), *names.channels_for_change(model, live)]
        named += [names.object_channel(model, pk) for pk in sorted(deleted, key=str)]
        of_objects = {names.object_channel(model, pk) for pk in (*(live or ()), *deleted)}
        for channel in dict.fromkeys(named):
            part = objects if channel in of_objects else wide
            part.update(dict.fromkeys(all_bucket_channels(channel) if bucketable(channel)
                                      else [channel]))
        labels.append(model._meta.label)
    items = [make_item(channel, HINT) for channel in {**wide, **objects}]
    if labels and gateway_views():
        items.append(close_lost_connections_item())
    # One batch: at exit from Python 3.12 no thread starts, and it is sent from here.
    publish_items(items)
    return labels


_warned_evictions = [float("-inf")]


def _warn_of_evictions(count: int) -> None:
    """At most once a minute per process: a deployment should give the state cache room."""
    now = time.monotonic()
    if now - _warned_evictions[0] < 60:
        return
    _warned_evictions[0] = now
    logger.warning(
        "drf-grip's state cache evicted %d key%s (Redis maxmemory with an eviction policy): "
        "changes now re-request every held client of their model and close gateway "
        "connections with subscriptions, as after a flush. Give DRF_GRIP['VERSION_CACHE'] "
        "a Redis of its own with room, or maxmemory-policy noeviction.",
        count,
        "" if count == 1 else "s",
    )


_warned_unseen = False


def _warn_of_unseen_subscribers(model: type[models.Model]) -> None:
    """Once per process that serves no requests (a shell, Celery) and publishes with a
    per-process cache: the subscribers other processes keep in theirs do not get its
    changes, and the system check (W002) does not run in such a process."""
    global _warned_unseen
    from ..grip.middleware import serves_requests
    from .registry import gateway_views

    if _warned_unseen or serves_requests():
        return
    views = views_for(model)  # every model's changes come here; most have no live view
    missed = [v.__name__ for v in views if _class_delivery(v) == SHARED]
    if any(_class_delivery(v) == PRIVATE for v in views):
        missed += [v.__name__ for v in gateway_views()]
    if not missed:
        return
    _warned_unseen = True
    logger.warning(
        "A change of %s was published from a process that keeps drf-grip's state in a "
        "per-process cache: long-poll and SSE clients of private views get it, but the "
        "subscribers of %s kept by the serving process do not. Point "
        "DRF_GRIP['VERSION_CACHE'] at a cache every process shares (Redis, Memcached; "
        "FileBasedCache in development).",
        model._meta.label,
        ", ".join(sorted(set(missed))),
    )


def _class_delivery(view: type) -> str:
    from ..conf import grip_settings

    names_own = getattr(view, "names_own_channels", None)
    if names_own is not None and names_own():
        return PRIVATE  # what its subscriptions decide (hooks.names_own_channels)
    return getattr(view, "realtime_delivery", None) or grip_settings.DEFAULT_DELIVERY


def _view_classes(model: type[models.Model], path: str) -> list[type]:
    """The classes a subscription's recorded ``module:qualname`` names. A class made by a
    factory (``type()``, a function's local class) cannot be imported by that name, but the
    URLconf that made it registered it in every process that loaded it; a class found
    neither way gets the default hint channels, with a warning, rather than no hint at all:
    its private clients were never woken, and nothing said so (model-change probe)."""
    found = [view for view in views_for(model) if view_path(view) == path]
    if not found and (imported := view_class(path)) is not None:
        found = [imported]
    if found:
        return found
    if path not in _unresolved:
        _unresolved.add(path)
        logger.warning(
            "subscribers of %s came through view %s, which this process cannot find by "
            "that name (is it defined in a module its URLconf imports?): its changes go "
            "to the default channels, and its get_changed_channels() is not followed",
            model._meta.label,
            path,
        )
    return [_DefaultChannels]


_unresolved: set[str] = set()


class _DefaultChannels:
    """What a private view's default ``get_changed_channels()`` names; also where shared
    URLs past the cap hold (mixins._overflow_policy)."""

    @staticmethod
    def get_changed_channels(model, pks, partitions):
        return names.channels_for_change(model, pks)


def publish_committed(changes: Changes) -> None:
    for model, pks in changes.updated.items():
        deleted = changes.deleted.get(model, set())
        live_pks = None if pks is None else set(pks) - deleted
        partitions = changes.partitions_of(model)
        publish_model(model, live_pks, deleted, partitions, changes.committed_at)
