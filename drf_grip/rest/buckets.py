"""Hint buckets: private delivery that holds up with many clients on one channel.

A ``hint`` makes the proxy re-request every client held on a channel at once. Past about a
hundred in flight Pushpin answers the rest ``502`` without contacting the origin, and those
clients lose the update (seen with Pushpin 1.36: 500 to 600 of 1,000 clients). So the holds
of a busy private channel are spread over buckets of ``HINT_BUCKET_SIZE`` (the first fills
the channel itself, so a channel with few clients looks as it always did), and the publisher
hints the buckets one after another, each once the previous bucket's clients are mostly back
(the proxy's re-requests reach the origin at the channel's new version, which a counter
sees): the origin's own pace sets the rate.

A publisher that cannot see the counts (a process that never counted a hold, with a
per-process cache: a shell publishing for runserver) hints every bucket at once: unpaced,
but nobody is missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..conf import grip_settings
from .store import incr, per_process_state, state_cache
from .versions import counters_and_hold_versions

__all__ = ["assign_buckets", "bucket_channels", "count_held_again", "count_key", "paced_hints"]

logger = logging.getLogger("drf_grip.publish")

_SEP = "~b"


def _settings() -> tuple[int, int]:
    return max(1, int(grip_settings.HINT_BUCKETS)), max(1, int(grip_settings.HINT_BUCKET_SIZE))


def bucketable(channel: str) -> bool:
    """Model list, object and partition channels (not bulk, shared recovery, URL or
    connection channels). A partition is one user's, or a tenant's or a board's: left out,
    150 holds of one were hinted at once and Pushpin answered a third of them 502
    (convergence probe)."""
    return (
        channel.startswith("drf.")
        and not channel.startswith(("drf.url.", "drf.ws."))
        and ".*" not in channel
        and _SEP not in channel
    )


def count_key(channel: str, version: str | None) -> str:
    return f"drf_grip:holds:{channel}:{version}"


def arrivals_key(channel: str, version: str | None) -> str:
    """The proxy's re-requests of holds that reached the origin at ``version``: what the
    pacer waits for (``_rest_of_round``)."""
    return f"drf_grip:back:{channel}:{version}"


Versions = dict[str, str | None]


def assign_buckets(
    channels: list[str],
    versions: Versions,
    counters: Versions,
    timeout: int,
    client: str | None = None,
    *,
    window: int | None = 60,
    retried: dict[str, str] | None = None,
    held_again: list[tuple[str, str, int]] | None = None,
) -> tuple[list[str], Versions, Versions]:
    """Put this hold in a bucket of each busy channel; returns its channels with their
    prev-ids and counters (``versions.counters_and_hold_versions``).

    ``client`` names the client (``unchanged.request_identity``), ``window`` is this hold's
    timeout, ``retried`` the proxy's ``Grip-Last`` when it re-sends a held request.

    Each connection is counted once per channel version. The n-th identical request
    within one ``window`` (the first from the client's first request at this version) takes
    the n-th slot of its client, and a slot keeps the bucket it was given: a reconnect
    after its hold timed out (a later window) keeps its bucket, while
    identical requests on many connections (one token on many screens) fill the buckets as
    other clients do. Counted as one, 150 of them were hinted together and Pushpin answered
    45 ``502`` (``tests/integration/test_hint_storms.py``); counting every hold instead
    drifted clients that reconnect in a quiet period to ever later buckets, which the
    publisher then reached only after pacing through empty ones.

    The proxy's re-request of a hold keeps the bucket its ``Grip-Last`` names and is not
    counted (``_bucket_named``): Pushpin's retry about a second after a channel's first
    subscription, its retry of a hold whose prev-id is behind, and the re-request after a
    hint, which is mostly answered with the change, its client then asking again in a slot
    of its own. Counted, each retry moved identical clients to a new bucket, itself new to
    Pushpin and retried in turn, up to the last one (a helper's probe: 587 of 1,000 there),
    and each re-request counted every client twice (the bench's second round of 1,000
    delivered 879). What they count for is the pacer's "back" (:func:`arrivals_key`).
    One that is held again (its render unchanged: a change another user's view does not
    show) is a hold at the new version, though, and its client has no slot there yet: it
    is put in ``held_again`` for :func:`count_held_again` once the answer holds.

    Event streams pass no ``window``: identical streams hold one next link, which Pushpin
    fetches once for all of them while their ``Grip-Last`` is the same
    (``prepareOutReq(nextUri, true)``, auto-share, in handler/httpsession.cpp), so they
    count as one client."""
    global _counts_holds_here
    buckets, size = _settings()
    if buckets <= 1:
        return channels, versions, counters
    cache = state_cache()
    _counts_holds_here = True
    out: list[str] = []
    extra: list[str] = []
    for channel in channels:
        if not bucketable(channel):
            out.append(channel)
            continue
        version = versions.get(channel)
        key = count_key(channel, version)
        named = _bucket_named(channel, retried or {}, buckets)
        if named is not None:
            _bump(cache, arrivals_key(channel, version), timeout)
        if named is not None and window is not None:  # a long-poll the proxy re-sent
            bucket = named
            if client is not None and held_again is not None:
                held_again.append((key, f"{key}:{client}:0", bucket))
        else:
            bucket = _place(cache, key, client, timeout, window, buckets, size)
        out.append(channel if bucket == 0 else f"{channel}{_SEP}{bucket}")
        if bucket:
            extra.append(out[-1])
            # Hinted while anyone may hold it, whatever version it was counted at; the
            # channel's own mark says that some bucket of it is in use.
            cache.set_many({_used_key(out[-1]): 1, _used_key(channel): 1}, timeout)
    if extra:
        extra_counters, extra_versions = counters_and_hold_versions(extra)
        versions = {**versions, **extra_versions}
        counters = {**counters, **extra_counters}
    return out, versions, counters


def count_held_again(held_again: list[tuple[str, str, int]], timeout: int) -> None:
    """Count the proxy's re-requests that were held again (``assign_buckets``) at their
    version, in their client's first slot there, unless one is counted in it already (the
    client's own hold, which Pushpin retried at the same version)."""
    cache = state_cache()
    for key, slot, bucket in held_again:
        if cache.add(slot, bucket, timeout):
            _bump(cache, key, timeout)


def _place(
    cache: Any,
    key: str,
    client: str | None,
    timeout: int,
    window: int | None,
    buckets: int,
    size: int,
) -> int:
    """A new hold's bucket of the channel counted at ``key``; its slot keeps it for its
    client's later requests."""
    if client is None:
        return _count(cache, key, timeout, buckets, size)
    mine = f"{key}:{client}"
    slot = 0
    if window is not None:
        # Windows start at the client's first request at this version, a time every
        # process reads from the cache. Windows of the wall clock cut bursts: one that
        # crossed a window's end started again at the first slot, and through Pushpin the
        # first bucket took 100 of 150 identical holds (test_hint_storms.py, 1 run in 30).
        # The start outlives every window's mark, so that a start taken again after it
        # expired never meets a mark of the old one.
        now = time.time()
        started = f"{mine}@start"
        if cache.add(started, now, timeout + 2 * window):
            start = now
        else:
            start = float(cache.get(started, now))
        mark = f"{mine}@{int((now - start) // max(1, window))}"
        if not cache.add(mark, 1, 2 * window):
            try:
                slot = incr(cache, mark, 2 * window) - 1
            except ValueError:  # expired in between
                slot = 0
    known = cache.get(f"{mine}:{slot}")
    if known is not None:
        return int(known)
    bucket = _count(cache, key, timeout, buckets, size)
    if not cache.add(f"{mine}:{slot}", bucket, timeout):  # another took it at the same moment
        return int(cache.get(f"{mine}:{slot}", bucket))
    return bucket


def _bucket_named(channel: str, retried: dict[str, str], buckets: int) -> int | None:
    """The bucket of ``channel`` a re-request's ``Grip-Last`` names (one the publisher
    still hints: ``HINT_BUCKETS`` may have been lowered since)."""
    for name in retried:
        if name == channel:
            return 0
        number = name[len(channel) + len(_SEP):]
        if name.startswith(channel + _SEP) and number.isdigit() and int(number) < buckets:
            return int(number)
    return None


def _count(cache: Any, key: str, timeout: int, buckets: int, size: int) -> int:
    return min(buckets - 1, (_bump(cache, key, timeout) - 1) // size)


def _bump(cache: Any, key: str, timeout: int) -> int:
    """One more at ``key`` (from 0); the new count."""
    cache.add(key, 0, timeout)
    try:
        return incr(cache, key, timeout)
    except ValueError:  # expired in between
        return 1


def _used_key(bucket_channel: str) -> str:
    return f"drf_grip:bucket-used:{bucket_channel}"


def bucket_channels(channel: str, held: int | None) -> list[str]:
    """The bucket channels ``held`` holds of ``channel`` were spread over, first first,
    and any other bucket some hold took within the live timeout (one counted at an older
    version: a hold names the last id the proxy confirmed, which may lag the counter the
    publisher counts at); all of them when the count is unknown (None)."""
    return _bucket_channels({channel: held})[channel]


def all_bucket_channels(channel: str) -> list[str]:
    """Every bucket channel a hold of ``channel`` may have taken, read from no cache."""
    buckets, _size = _settings()
    return [channel] + [f"{channel}{_SEP}{i}" for i in range(1, buckets)]


def _bucket_channels(held: dict[str, int | None]) -> dict[str, list[str]]:
    """:func:`bucket_channels` of several channels, their marks read in one round trip."""
    buckets, size = _settings()
    sure: dict[str, list[str]] = {}
    maybe: dict[str, list[str]] = {}
    for channel, count in held.items():
        if count is None:
            wanted = buckets
        else:
            wanted = 1 if buckets <= 1 else min(buckets, max(1, -(-count // size)))
        names = all_bucket_channels(channel)[1:]
        sure[channel] = [channel] + names[: wanted - 1]
        maybe[channel] = names[wanted - 1 :] if wanted < buckets else []
    # Most channels a change names have no bucket in use (an object's channel, held by
    # nobody): one mark per channel says which ones to look at (63 marks each were most of
    # the publisher's time in the large soak).
    cache = state_cache()
    looked = [channel for channel, names in maybe.items() if names]
    some = cache.get_many([_used_key(channel) for channel in looked]) if looked else {}
    keys = [
        _used_key(name)
        for channel in looked
        if _used_key(channel) in some
        for name in maybe[channel]
    ]
    used = cache.get_many(keys) if keys else {}
    return {
        channel: sure[channel] + [n for n in maybe[channel] if _used_key(n) in used]
        for channel in held
    }


#: This process counts holds: with a per-process cache it is then the one origin process
#: (the README allows no other), and a missing count means nobody held at that version.
_counts_holds_here = False


def holds_counted_here() -> None:
    """Say that this process counts every hold of its state cache (a test process: its
    clients are requests of its own), so a missing count means nobody held. Until it did
    count one, a change in a process with a per-process cache hinted every bucket, so what
    a test's change published depended on whether an earlier test had held (a test-kit
    probe: 128 items, or 2)."""
    global _counts_holds_here
    _counts_holds_here = True


def _held(channel: str, version: str | None) -> int | None:
    """Holds counted at ``version``; None when this process cannot know (a per-process
    cache in a process that never counted a hold: a shell publishing for runserver)."""
    return _held_many({channel: version})[channel]


def _held_many(versions: dict[str, str | None]) -> dict[str, int | None]:
    """:func:`_held` of several channels, in one round trip: the holds counted at each
    version, or the proxy's re-requests that came back at it if more (identical
    connections held again after a hint are counted once, ``count_held_again``; too few
    holds would let the pacer hint their buckets all at once)."""
    keys = {
        channel: (count_key(channel, version), arrivals_key(channel, version))
        for channel, version in versions.items()
    }
    found = state_cache().get_many([k for pair in keys.values() for k in pair]) if keys else {}
    unknown = per_process_state() and not _counts_holds_here
    out: dict[str, int | None] = {}
    for channel, (counted, back) in keys.items():
        if counted in found or back in found:
            out[channel] = max(int(found.get(counted) or 0), int(found.get(back) or 0))
        else:
            out[channel] = None if unknown else 0
    return out


_pacers: dict[str, threading.Thread] = {}
_dirty: set[str] = set()
_lock = threading.Lock()
#: Set when the process exits with rounds still paced: their buckets go out without waiting.
_hurry = threading.Event()


def paced_hints(
    channels: list[str], publish_versioned: Callable[[str], tuple[str | None, str]]
) -> None:
    """Hint each of ``channels`` now, then its other buckets one after another from a pacer
    thread; a change arriving while a pacer runs restarts the round when it ends (latest
    wins). The hold counts and bucket marks of all of them are read at once: a burst of
    writes names dozens of object channels, most of them held by nobody, and four round
    trips each made the publisher's pass seconds long in the large soak."""
    # The channel itself is hinted (its counter moved) at once, also while a pacer runs:
    # a subscriber that checks the counter after it became findable relies on that
    # (gateway/view.py), and the first bucket's clients need no pacing.
    hinted: dict[str, tuple[str | None, str]] = {}
    for channel in channels:
        hinted[channel] = publish_versioned(channel)
    with _lock:
        for channel in [c for c in hinted if c in _pacers]:
            _dirty.add(channel)
            del hinted[channel]
    held = _held_many({channel: previous for channel, (previous, _new) in hinted.items()})
    spread = _bucket_channels(held)
    for channel, (_previous, new) in hinted.items():
        _pace_rest(channel, publish_versioned, new, spread[channel][1:], held[channel])


def _pace_rest(
    channel: str,
    publish_versioned: Callable[[str], tuple[str | None, str]],
    new: str,
    rest: list[str],
    held: int | None,
) -> None:
    """The buckets after the first of a channel just hinted: at once when the spread is
    unknown, else from a pacer thread (one per channel)."""
    if not rest:
        return
    if held is None:
        for bucket in rest:  # unknown spread: every bucket, now
            publish_versioned(bucket)
        return
    with _lock:
        if channel in _pacers:
            _dirty.add(channel)
            return
        thread = threading.Thread(
            target=_pace,
            args=(channel, publish_versioned, new, rest, held),
            name="drf-grip-hints",
            daemon=True,
        )
        _pacers[channel] = thread
    try:
        thread.start()
    except RuntimeError:
        # "can't create new thread at interpreter shutdown" (Python 3.12+): a process that
        # exits right after its save publishes from its exit; the rest go now, unpaced.
        with _lock:
            _pacers.pop(channel, None)
            _dirty.discard(channel)
        for bucket in rest:
            publish_versioned(bucket)


def finish_paced(timeout: float) -> bool:
    """At exit: let every paced round of hints reach the publisher within ``timeout``
    seconds, paced while three quarters of it last, then at once. The pacers are daemon
    threads: a shell's save hinted only its first bucket, and the clients held in the
    others never got the change (deploying probe)."""
    deadline = time.monotonic() + timeout
    if wait_paced(timeout * 3 / 4):
        return True
    _hurry.set()
    return wait_paced(max(0.0, deadline - time.monotonic()))


def wait_paced(timeout: float | None = None) -> bool:
    """Wait until every paced round of hints has been handed to the publisher."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            threads = list(_pacers.values())
        if not threads:
            return True
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if deadline is not None and time.monotonic() >= deadline:
            with _lock:
                return not _pacers


def _pace(
    channel: str,
    publish_versioned: Callable[[str], tuple[str | None, str]],
    new: str,
    rest: list[str],
    held: int | None,
) -> None:
    try:
        while True:
            _rest_of_round(channel, publish_versioned, new, rest, held)
            with _lock:
                if channel not in _dirty:
                    del _pacers[channel]
                    return
                _dirty.discard(channel)
            previous, new = publish_versioned(channel)
            held = _held(channel, previous) or 0
            rest = bucket_channels(channel, held)[1:]
    except Exception:  # noqa: BLE001 - a pacer must not die silently with its channel held
        logger.exception("drf-grip: paced hints for %s failed", channel)
        with _lock:
            _pacers.pop(channel, None)
            _dirty.discard(channel)


def _rest_of_round(
    channel: str,
    publish_versioned: Callable[[str], tuple[str | None, str]],
    new: str,
    rest: list[str],
    held: int | None = None,
) -> None:
    cache = state_cache()
    _, size = _settings()
    total = held if held is not None else size * (len(rest) + 1)
    for index, bucket in enumerate(rest, start=1):
        # Wait until at most half a bucket of the clients hinted so far is still on its way
        # to the origin (they count once their re-request runs, at the new version): with
        # the next bucket that keeps under Pushpin's ~100 re-requests in flight, past which
        # it answers 502 without asking the origin (PUSHPIN.md, "Hint storms"). Or a short
        # while: a client that went away must not stall the next bucket.
        target = max(1, min(total, index * size) - size // 2)
        deadline = time.monotonic() + 0.3 + size * 0.005
        while time.monotonic() < deadline and not _hurry.is_set():
            if int(cache.get(arrivals_key(channel, new)) or 0) >= target:
                break
            time.sleep(0.005)
        publish_versioned(bucket)
