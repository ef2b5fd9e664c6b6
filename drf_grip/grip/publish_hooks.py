"""What a higher layer may tell the publisher, and learn from it, without this layer knowing
what items mean: which items are outdated, and which ones a destination confirmed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..protocol.items import RawItem

__all__ = [
    "as_sent",
    "as_sent_each",
    "current",
    "delivered_hooks",
    "delivered_to",
    "dropped_hooks",
    "is_outdated",
    "item_rewrites",
    "notify_delivered",
    "notify_dropped",
    "outdated_checks",
    "register_delivered_hook",
    "register_dropped_hook",
    "register_item_rewrite",
    "register_outdated_check",
]

logger = logging.getLogger("drf_grip.publish")


#: Checks that an item is outdated by a newer item of its channel that any process
#: published (``register_outdated_check``).
outdated_checks: list[Callable[[RawItem], bool]] = []
#: Their batch forms, where a check has one.
_outdated_many: dict[Callable[[RawItem], bool], Callable[[list[RawItem]], list[bool]]] = {}


def register_outdated_check(
    check: Callable[[RawItem], bool],
    many: Callable[[list[RawItem]], list[bool]] | None = None,
) -> None:
    """``check(item)`` True means a newer item of the item's channel was published, maybe by
    another process: the item is not sent, nor retried. ``lanes.coalesce`` is latest-wins
    within one process; this makes it hold across processes, whose lanes deliver in no
    order relative to each other (after an outage each retries on its own timer).

    ``many(items)``, if given, answers the same for a batch at once (one flag per item):
    a check that reads a shared cache then makes one round trip per batch, not per item."""
    if check not in outdated_checks:
        outdated_checks.append(check)
    if many is not None:
        _outdated_many[check] = many


#: Rewrites of an item just before it is sent (``register_item_rewrite``).
item_rewrites: list[Callable[[RawItem], RawItem | list[RawItem] | None]] = []
#: Their batch forms, where a rewrite has one.
_rewrite_many: dict[Callable[..., Any], Callable[[list[RawItem]], list[Any]]] = {}


def register_item_rewrite(
    rewrite: Callable[[RawItem], RawItem | list[RawItem] | None],
    many: Callable[[list[RawItem]], list[RawItem | list[RawItem] | None]] | None = None,
) -> None:
    """``rewrite(item)`` gives what to send in the item's place just before it is sent: the
    item itself, a reduced copy (an older state sent only as the link a newer item's
    ``prev-id`` names), several items sent one after another in that place, or None to send
    nothing. ``many(items)``, if given, rewrites a batch at once (one answer per item), so
    that what the rewrite reads from a shared cache is one round trip per batch."""
    if rewrite not in item_rewrites:
        item_rewrites.append(rewrite)
    if many is not None:
        _rewrite_many[rewrite] = many


def as_sent(item: RawItem) -> list[RawItem]:
    """The items to send in ``item``'s place, in order (none: it is not sent)."""
    return as_sent_each([item])[0]


def as_sent_each(items: list[RawItem]) -> list[list[RawItem]]:
    """:func:`as_sent` of each item, each rewrite asked once for the whole batch where it
    has a batch form."""
    out = [[item] for item in items]
    for rewrite in list(item_rewrites):
        flat = [(index, one) for index, group in enumerate(out) for one in group]
        answers = _rewritten(rewrite, [one for _, one in flat])
        out = [[] for _ in items]
        for (index, _one), answer in zip(flat, answers, strict=True):
            if isinstance(answer, list):
                out[index].extend(answer)
            elif answer is not None:
                out[index].append(answer)
    return out


def _rewritten(rewrite: Callable[[RawItem], Any], items: list[RawItem]) -> list[Any]:
    many = _rewrite_many.get(rewrite)
    if many is not None:
        try:
            return many(items)
        except Exception:  # noqa: BLE001 - a failing rewrite must not stop delivery
            logger.exception("drf-grip: an item rewrite failed")
            return list(items)
    answers: list[Any] = []
    for one in items:
        try:
            answers.append(rewrite(one))
        except Exception:  # noqa: BLE001 - a failing rewrite must not stop delivery
            logger.exception("drf-grip: an item rewrite failed")
            answers.append(one)
    return answers


#: Called with the items a destination confirmed (``register_delivered_hook``).
delivered_hooks: list[Callable[[list[RawItem]], None]] = []


def register_delivered_hook(hook: Callable[[list[RawItem]], None]) -> None:
    """``hook(items)`` after a destination confirmed ``items`` (2xx, or a local sink took
    them): a higher layer learns which ids the proxy has seen, without this layer knowing
    what they mean."""
    if hook not in delivered_hooks:
        delivered_hooks.append(hook)


#: The destination whose confirmation the delivered hooks of this thread are being told.
_delivery = threading.local()


def notify_delivered(items: list[RawItem], destination: str | None = None) -> None:
    """Tell the delivered hooks that ``destination`` (a target's name) confirmed ``items``;
    a hook that needs to know which one asks :func:`delivered_to`."""
    _delivery.destination = destination
    try:
        _call(delivered_hooks, items, "delivered")
    finally:
        _delivery.destination = None


def delivered_to() -> str | None:
    """In a delivered hook: the name of the destination that confirmed the items (as its
    target names it in logs), or None when the caller did not say."""
    return getattr(_delivery, "destination", None)


def _call(hooks: list[Callable[[list[RawItem]], None]], items: list[RawItem], kind: str) -> None:
    for hook in list(hooks):
        try:
            hook(items)
        except Exception:  # noqa: BLE001 - a hook must not stop delivery
            logger.exception("publish: a %s hook failed", kind)


#: Called with the items given up for a destination (``register_dropped_hook``).
dropped_hooks: list[Callable[[list[RawItem]], None]] = []


def register_dropped_hook(hook: Callable[[list[RawItem]], None]) -> None:
    """``hook(items)`` after ``items`` were given up for one destination (its retries spent,
    its queue full, or still queued when the process exited): a proxy that never got an
    item's id cannot take a later item whose ``prev-id`` names it."""
    if hook not in dropped_hooks:
        dropped_hooks.append(hook)


def notify_dropped(items: list[RawItem]) -> None:
    _call(dropped_hooks, items, "dropped")


def is_outdated(item: RawItem) -> bool:
    return any(_says_outdated(check, item) for check in list(outdated_checks))


def current(items: list[RawItem]) -> list[RawItem]:
    """``items`` without the outdated ones (:func:`is_outdated`), each check asked once for
    the whole batch where it has a batch form."""
    for check in list(outdated_checks):
        if not items:
            break
        many = _outdated_many.get(check)
        if many is None:
            items = [item for item in items if not _says_outdated(check, item)]
            continue
        try:
            flags = many(items)
        except Exception:  # noqa: BLE001 - a failing check must not stop delivery
            logger.exception("drf-grip: an outdated-item check failed")
            continue
        items = [item for item, old in zip(items, flags, strict=True) if not old]
    return items


def _says_outdated(check: Callable[[RawItem], bool], item: RawItem) -> bool:
    try:
        return bool(check(item))
    except Exception:  # noqa: BLE001 - a failing check must not stop delivery
        logger.exception("drf-grip: an outdated-item check failed")
        return False
