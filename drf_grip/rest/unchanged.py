"""Private re-requests whose answer cannot have changed: held again without a render.

A proxy re-requests a held private long-poll for every hint on its channel (and for a
``prev-id`` conflict), with the client's own request and ``Grip-Last: ch; last-id=ID`` naming
the last item it saw on each channel (PUSHPIN.md: "hint", "the publish-before-hold race"). In
a burst of changes, a client whose re-request already rendered the last of them is
re-requested again for each later hint: that answer cannot differ from the one it holds.

So each private hold remembers, for its request (method, URL, the client's headers with its
credentials, the user), the ETag it answered and, per channel, the range of ids its render
covers: from the ``prev-id`` it held with to the channel's counter read *before* the render
(a commit moves the counter before its item is published, ``publishing.py``; so an item whose
id is at most that counter was committed before the render began). A re-request of the same
request with that ETag, whose ``Grip-Last`` ids all fall in those ranges, is held again without
running the view, provided one of them is newer than the hold named (PUSHPIN.md: a
hint's re-request names the session's ids, which move only for items the session took).
Anything else renders: an unchanged id (the cause is unknown), an id from another process's counter (a per-process
cache starts counters at random, ``versions.py``), a channel not remembered, a non-numeric id.
Only channels drf-grip itself moves qualify: a view that overrides ``get_realtime_channels()``
(and may publish to its channels by other means) always renders.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.http import HttpRequest

from .store import state_cache
from .versions import read_committed

__all__ = [
    "request_identity",
    "covered_ids",
    "held_behind",
    "hold_left",
    "recall",
    "remember",
    "unchanged_etag",
    "unchanged_of",
]

_KEY = "drf_grip:unchanged:"
# Headers a proxy adds or varies per attempt; the rest is the client's request.
_IGNORED = ("HTTP_GRIP_", "HTTP_IF_NONE_MATCH", "HTTP_CONNECTION", "HTTP_CONTENT_LENGTH")


def request_identity(request: HttpRequest, user: Any) -> str:
    """What makes two requests the same request: method, host, path, query, the client's
    headers (credentials included) and the authenticated user."""
    meta = request.META
    parts = [
        request.method or "",
        request.get_host(),
        request.path,
        meta.get("QUERY_STRING", ""),
        str(getattr(user, "pk", "") or ""),
    ]
    for key in sorted(meta):
        if key.startswith("HTTP_") and not key.startswith(_IGNORED):
            parts.append(f"{key}={meta[key]}")
    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:40]


Ranges = dict[str, tuple[int, int]]


def covered_ids(prev_ids: dict[str, str | None], counters: dict[str, str | None]) -> Ranges:
    """Per channel, the ids a render that starts now covers: prev-id to current counter."""
    out: Ranges = {}
    for channel, counter in counters.items():
        low = prev_ids.get(channel) or counter
        if low and counter and low.isdigit() and counter.isdigit() and int(low) <= int(counter):
            out[channel] = (int(low), int(counter))
    return out


def remember(
    identity: str,
    etag: str,
    ranges: Ranges,
    timeout: int,
    *,
    own: bool = False,
    read_at: float | None = None,
    since: float | None = None,
) -> None:
    """Keep what this request answered as it is held; ``own``: the client's own request (not
    a proxy's re-request), whose hold a retry may follow (:func:`held_behind`); ``read_at``
    (``time.time()``): when its counters were read, before its render; ``since``: when the
    client's own request was first held (:func:`hold_left`)."""
    # Kept with no ranges too (channels never published to): the ETag held with is what
    # the re-request of an ``If-None-Match: *`` hold compares with (``_star_moved_on``).
    at = time.time() if own else 0.0
    state_cache().set(_KEY + identity, (etag, ranges, at, read_at, since), timeout=timeout)


#: What a held request answered: its ETag, the ids covered, when, if it was the client's
#: own request (``time.time()``; else 0), when its counters were read (None: unknown) and
#: when the client's own request was first held (None: unknown).
Recalled = tuple[str, Ranges, float, float | None, float | None]

#: Seconds after the hold of a client's own request within which the proxy's re-request of
#: it at exactly its ids is its retry of that hold (Pushpin's handler retries a conflicting
#: hold at once: a few ms, more when the origin is busy). Other re-requests at the held ids
#: stay held: Pushpin's retry of a channel's first subscription, about 1 s after it, after a
#: hint it dropped while that retry waited its turn (a throttled view counted the client's
#: extra request: ``test_drf_usage``).
RETRY_WINDOW = 0.5


def recall(identity: str) -> Recalled | None:
    """What this request last answered when it was held."""
    found = state_cache().get(_KEY + identity)
    if not isinstance(found, tuple) or not 2 <= len(found) <= 5:
        return None
    # Kept by an earlier version: no time of the hold (2 items), of the read (3) or of the
    # client's own request (4).
    at = found[2] if len(found) > 2 else 0.0
    read_at = found[3] if len(found) > 3 else None
    since = found[4] if len(found) > 4 else None
    return (found[0], found[1], at, read_at, since)


def hold_left(found: Recalled | None, timeout: int) -> float | None:
    """Seconds left of a ``timeout`` counted from the client's own request, for the proxy's
    re-request of it; None when unknown (the full timeout then applies).

    Each re-request answered with a hold starts the proxy's timer again (Pushpin 1.36 and
    the embedded proxy alike): a private long-poll re-requested by every change it cannot
    see was held on and on, 30 s for ``Prefer: wait=5`` under a write every 2 s (app
    probe), past the client's own read timeout: now at most 5 s (the least a proxy holds)
    past it. Identical requests share a record, so the latest of them counts."""
    if found is None or found[4] is None:
        return None
    return timeout - (time.time() - found[4])


def unchanged_etag(identity: str, last: dict[str, str]) -> tuple[str, Ranges] | None:
    """:func:`unchanged_of` what this request last answered (:func:`recall`)."""
    return unchanged_of(recall(identity), last)


def unchanged_of(found: Recalled | None, last: dict[str, str]) -> tuple[str, Ranges] | None:
    """The ETag this request answered, when the proxy's ``Grip-Last`` shows it has seen a
    newer item on some channel than the hold named and every id it names is covered; with
    the ranges to remember for the hold that follows (its prev-ids are ``last``). None when
    a render is needed: an id not covered, or nothing newer seen (the re-request's cause is
    then unknown: a hint published by other means, a proxy's first-subscription retry)."""
    if not last or found is None:
        return None
    etag, ranges = found[0], found[1]
    newer = False
    for channel, last_id in last.items():
        covered = ranges.get(channel)
        if covered is None or not last_id.isdigit():
            return None
        if not covered[0] <= int(last_id) <= covered[1]:
            return None
        newer = newer or int(last_id) > covered[0]
    if not newer:
        return None
    following = {**ranges, **{ch: (int(v), ranges[ch][1]) for ch, v in last.items()}}
    return str(etag), following


def held_behind(
    found: Recalled | None, last: dict[str, str], counters: dict[str, str | None]
) -> bool:
    """Whether the proxy asks again at exactly the ids the client's own request was held at,
    within ``RETRY_WINDOW`` of that hold, while a counter is already past what that hold's
    render covered, for a change that may have been committed after the render began: an
    item that does not follow the hold reached the proxy, which then re-requests at once
    (the publish-before-hold race, PUSHPIN.md). Such a re-request is answered without a
    hold (``RealtimeMixin._hold_if_unchanged``): when Pushpin 1.36's proxy takes this retry
    before it has finished handing the first answer over, it drops the request's record
    (``zhttpmanager.cpp``: "received message for unknown request id") and a second hold
    never reaches the client, which waits, unanswered; an answer that is no hold needs
    nothing more from that record. A re-request's own hold is not covered: holding it at
    the id a proxy confirmed (``RealtimeMixin._hold_prev_ids``) makes such a retry rarer.

    Not when the conflicting item is of a change the render showed, which then renders and
    is held again, as any re-request: a client asking right after its own write would be
    answered at once, unchanged, instead of held (DESIGN.md §1: a 304 only on timeout; CI,
    twice: ``test_model_changes.py``, ``test_realtime.py``). The render showed it when the
    item is one it covered (a hold names the id a proxy confirmed, so a change committed
    before the render whose item was still on its way conflicts too), or when the change
    worker moved the counter only after the render had read it (``publishing.py``) but the
    change was committed before: the channel's last item, whose commit time
    (``versions.note_committed``) is before the hold's counters were read. Its commit time
    stands for the items between it and the covered range too: one process's change worker
    moves counters in the order of its commits. Items of several processes can move them
    out of that order; this retry is then held again where it could have been answered
    unheld, and the answer is what a fresh render shows either way."""
    if found is None or not last or time.time() - found[2] > RETRY_WINDOW:
        return False
    _etag, ranges, _at, read_at, _since = found
    past: dict[str, int] = {}
    for channel, last_id in last.items():
        covered = ranges.get(channel)
        if covered is None or not last_id.isdigit() or int(last_id) != covered[0]:
            return False
        counter = counters.get(channel)
        if counter and counter.isdigit() and int(counter) > covered[1]:
            past[channel] = int(counter)
    if not past:
        return False
    if read_at is None:
        return True
    committed = read_committed(list(past))
    return not all(
        ch in committed and committed[ch][0] == str(past[ch]) and committed[ch][1] < read_at
        for ch in past
    )
