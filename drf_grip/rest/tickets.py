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

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .store import incr, state_cache, touch

__all__ = [
    "began_since",
    "begin_renders",
    "counter_key",
    "current_tickets",
    "exclusive",
    "forget_renders_since",
    "later",
    "mark_sent",
    "overtaken",
    "retire",
    "sent_after",
    "sent_entry",
    "sent_key",
    "take_ticket",
]

_KEY = "drf_grip:render:"


def counter_key(name: str) -> str:
    """Where the tickets of ``name`` are counted (read by :func:`overtaken`, or with other
    keys in one round trip, then :func:`later`)."""
    return _KEY + name


def _timeout() -> int:
    """How long a series' counter and mark live without a render: renders happen only while
    what they render for is live (a listed URL, a gateway subscription), so as long as that
    again. A day each left two entries per made-up query string ever rendered (security
    probe)."""
    from .policies import live_timeout

    return 2 * live_timeout()


def take_ticket(name: str, *, likely_first: bool = False) -> int:
    """A number per render of ``name``, increasing across processes. ``likely_first``: the
    counter is most likely absent (a gateway subscription's answer), so the first ticket
    is tried before an ``incr``, which fails there (a round trip, then the read and the
    ``add`` below)."""
    cache = state_cache()
    if likely_first:
        first = _first_ticket(cache, name)
        if first is not None:
            return first
    try:
        ticket = incr(cache, counter_key(name), _timeout())
    except ValueError:
        first = _first_ticket(cache, name)
        if first is not None:
            return first
        ticket = incr(cache, counter_key(name), _timeout())  # another process took it a moment ago
    # ``incr`` keeps the expiry ``add`` gave (Redis, local memory): a busy URL's counter
    # expired a day after its first render, and the restart above (the mark + 1) gave a
    # render that began after a later commit the ticket of one still rendering older rows;
    # both were sent, the older one last, and subscribers stayed on it. Renewed while in
    # use, every quarter of its expiry (per process, bounded).
    now = time.monotonic()
    timeout = _timeout()
    if now - _renewed.get(name, float("-inf")) > timeout / 4:
        if len(_renewed) >= _BEGAN_MAX:
            _renewed.clear()
        touch(cache, counter_key(name), timeout)
        _renewed[name] = now
    return ticket


def _first_ticket(cache: Any, name: str) -> int | None:
    """Start the counter of ``name``; None when it exists (another process started it).

    Not at 1 when the counter expired while the ``:sent`` mark lives on (before
    ``store.incr`` renewed it, Django's ``BaseCache.incr``, of the file and database caches,
    gave it the cache's default timeout of 300 s, so a quiet URL's counter went first; any
    expiry can still do it): restarting at 1 made every later render look older than the
    last one sent, and none was sent until the counter passed it. It starts above that
    mark."""
    first = int(cache.get(sent_key(name)) or 0) + 1
    if cache.add(counter_key(name), first, _timeout()):
        _renewed[name] = time.monotonic()
        return first
    return None


#: When this process last renewed the expiry of each counter (``time.monotonic()``).
_renewed: dict[str, float] = {}


#: When this process last began a render of each name (``time.monotonic()``). A change
#: committed while this process's publish of an earlier one was rendering waits for that
#: pass to end; what the pass began rendering after the commit read it, and need not be
#: rendered again for it (the large soak and the multi-process test: passes of unchanged
#: renders ahead of the last change). Per process, bounded.
_began: dict[str, float] = {}
_BEGAN_MAX = 10_000


def begin_renders(names: list[str]) -> None:
    """Note that renders of ``names`` begin now: before their tickets, before they read."""
    if len(_began) >= _BEGAN_MAX:
        _began.clear()
    _began.update(dict.fromkeys(names, time.monotonic()))


def forget_renders_since(started: float) -> None:
    """Forget the renders begun since ``started`` (a ``time.monotonic()``): a publish that
    failed part way (the cache stopped taking writes) may have sent none of them, and its
    next try skipped them all as rendered after the change (:func:`began_since`)."""
    for name, at in list(_began.items()):
        if at >= started:
            _began.pop(name, None)


def began_since(name: str, committed_at: float | None) -> bool:
    """Whether this process began a render of ``name`` after ``committed_at`` (a
    ``time.monotonic()`` taken once the change was handed over; None: unknown, no)."""
    return committed_at is not None and _began.get(name, -1.0) > committed_at


def current_tickets(names: list[str]) -> dict[str, int]:
    """The last ticket taken for each of ``names`` (0 for none yet)."""
    if not names:
        return {}
    found = state_cache().get_many([counter_key(n) for n in names])
    return {n: int(found.get(counter_key(n)) or 0) for n in names}


def overtaken(name: str, ticket: int) -> bool:
    """Whether a render of ``name`` started after the one holding ``ticket`` (or, given a
    ticket read with :func:`current_tickets`, after that read)."""
    return later(state_cache().get(counter_key(name)), ticket)


@contextmanager
def exclusive(name: str, wait: float = 2.0) -> Iterator[None]:
    """A few cache operations on ``name`` that no other process interleaves with (an
    ``add``-based lock in the shared cache; it expires in 5 s should its holder die).

    The check "no later render was sent" and the send's own bookkeeping must be one step: a
    render checked, then preempted while another process published a newer one, would
    otherwise publish its older one last (seen in the soak: a gateway subscriber left on the
    representation before the last commit). After ``wait`` seconds it goes on without."""
    cache = state_cache()
    key = _KEY + name + ":lock"
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait
    asked = time.monotonic()
    held = cache.add(key, token, _LOCK_SECONDS)
    while not held and time.monotonic() < deadline:
        time.sleep(0.001)
        asked = time.monotonic()
        held = cache.add(key, token, _LOCK_SECONDS)
    try:
        yield
    finally:
        # The lock expires _LOCK_SECONDS after the cache took the ``add``, which was after
        # ``asked``: well within that it is still this one's, and is released without
        # reading it back (a round trip less per shared render and per push to a gateway
        # subscription). Past that, another process may hold it now: only our own goes.
        if held and (
            time.monotonic() - asked < _LOCK_SECONDS / 2 or cache.get(key) == token
        ):
            cache.delete(key)


#: Seconds an ``exclusive`` lock lives should its holder die holding it.
_LOCK_SECONDS = 5


#: Seconds a retired series keeps its counter and mark: renders still in flight need them.
_RETIRED_TIMEOUT = 120


def retire(name: str) -> None:
    """``name``'s renders are over (a gateway subscription unsubscribed or its connection
    closed): its counter and mark expire soon instead of a day later. A render taken again
    within that time renews them (:func:`take_ticket`, :func:`mark_sent`)."""
    cache = state_cache()
    touch(cache, counter_key(name), _RETIRED_TIMEOUT)
    touch(cache, sent_key(name), _RETIRED_TIMEOUT)
    _renewed.pop(name, None)


def sent_key(name: str) -> str:
    """Where the ticket of the last render of ``name`` handed to the publisher is kept (read
    by :func:`sent_after`, or with other keys in one round trip, then :func:`later`)."""
    return _KEY + name + ":sent"


def later(found: Any, ticket: int) -> bool:
    """Whether what was read at :func:`sent_key` or :func:`counter_key` names a render
    later than ``ticket``."""
    return found is not None and int(found) > ticket


def mark_sent(name: str, ticket: int) -> None:
    """Record that the render holding ``ticket`` was handed to the publisher."""
    state_cache().set(*sent_entry(name, ticket))


def sent_entry(name: str, ticket: int) -> tuple[str, int, int]:
    """What :func:`mark_sent` writes (key, value, timeout), for a caller that writes it with
    other keys in one round trip (``store.write_entries``)."""
    return sent_key(name), ticket, _timeout()


def sent_after(name: str, ticket: int) -> bool:
    """Whether a later render of ``name`` than ``ticket`` was handed to the publisher. A
    queued item is outdated only then: one merely *started* later may find nothing changed
    since the last send and send nothing, and the queued item is the news."""
    return later(state_cache().get(sent_key(name)), ticket)
