"""Render tickets: of two renders of one thing, the one that started later wins.

Several processes render for the same subscribers (two workers, a Celery worker, each
publishing its own commits). A render that read the database before another process's commit
can finish after that process published the newer render; publishing it then would move
subscribers back to the older representation, and nothing would move them on again. Each
render takes a ticket (an atomic ``incr``, the same in every process that shares the cache)
before it reads; one that finishes *overtaken* by a later ticket steps aside, since the later
render read at least the same state and publishes it.

This is "latest wins" across processes, decided before and after a render. Merging the items
of one channel already queued in one process is another question, answered by
``drf_grip.grip.lanes.coalesce``.
"""

from __future__ import annotations

from .store import state_cache

__all__ = ["mark_sent", "overtaken", "sent_after", "take_ticket"]

_KEY = "drf_grip:render:"
_TIMEOUT = 24 * 3600


def take_ticket(name: str) -> int:
    """A number per render of ``name``, increasing across processes."""
    cache = state_cache()
    try:
        return int(cache.incr(_KEY + name))
    except ValueError:  # no counter yet
        cache.add(_KEY + name, 0, _TIMEOUT)
        return int(cache.incr(_KEY + name))


def overtaken(name: str, ticket: int) -> bool:
    """Whether a render of ``name`` started after the one holding ``ticket``."""
    current = state_cache().get(_KEY + name)
    return current is not None and int(current) > ticket


def mark_sent(name: str, ticket: int) -> None:
    """Record that the render holding ``ticket`` was handed to the publisher."""
    state_cache().set(_KEY + name + ":sent", ticket, _TIMEOUT)


def sent_after(name: str, ticket: int) -> bool:
    """Whether a later render of ``name`` than ``ticket`` was handed to the publisher. A
    queued item is outdated only then: one merely *started* later may find nothing changed
    since the last send and send nothing, and the queued item is the news."""
    current = state_cache().get(_KEY + name + ":sent")
    return current is not None and int(current) > ticket
