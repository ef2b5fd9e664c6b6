"""Hint buckets: private delivery that holds up with many clients on one channel.

A ``hint`` makes the proxy re-request every client held on a channel at once. Past about a
hundred in flight Pushpin answers the rest ``502`` without contacting the origin, and those
clients lose the update (seen with Pushpin 1.36: 500 to 600 of 1,000 clients). So the holds
of a busy private channel are spread over buckets of ``HINT_BUCKET_SIZE`` (the first fills
the channel itself, so a channel with few clients looks as it always did), and the publisher
hints the buckets one after another, each once the previous bucket's clients are mostly back
(they hold again at the channel's new version, which a counter sees): the origin's own pace
sets the rate.

A publisher that cannot see the counts (a process that never counted a hold, with a
per-process cache: a shell publishing for runserver) hints every bucket at once: unpaced,
but nobody is missed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..conf import grip_settings
from .store import incr, per_process_state, state_cache
from .versions import counters_and_hold_versions

__all__ = ["assign_buckets", "bucket_channels", "count_key", "paced_hints"]

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
) -> tuple[list[str], Versions, Versions]:
    """Put this hold in a bucket of each busy channel; returns its channels with their
    prev-ids and counters (``versions.counters_and_hold_versions``).

    ``client`` names the client (``unchanged.request_identity``), ``window`` is this hold's
    timeout and ``retried`` the proxy's ``Grip-Last`` when it re-sends a held request. A
    client is counted once per connection and channel version: the same request again in a
    later ``window`` (a reconnect after its hold timed out) keeps its bucket, and so does
    the proxy's re-request of a hold nothing was published to since (``_retry_of``).
    Counting every hold instead drifted clients that reconnect in a quiet period to ever
    later buckets, which the publisher then reached only after pacing through empty ones.
    Identical requests within one ``window`` are other connections (one token on many
    screens): counted once between them, 150 of them were hinted together and Pushpin
    answered 45 ``502`` (``tests/integration/test_hint_storms.py``). Event streams pass no
    ``window``: identical streams hold one next link, which Pushpin fetches once for all
    of them when their ``Grip-Last`` is the same (``prepareOutReq(nextUri, true)``,
    auto-share, in handler/httpsession.cpp), so they keep one bucket."""
    global _counts_holds_here
    buckets, size = _settings()
    if buckets <= 1:
        return channels, versions, counters
    cache = state_cache()
    _counts_holds_here = True
    out: list[str] = []
    extra: list[str] = []
    records: dict[str, tuple[str, int]] = {}  # slot key -> (channel held, bucket)
    for channel in channels:
        if not bucketable(channel):
            out.append(channel)
            continue
        key = count_key(channel, versions.get(channel))
        if retried and _bucket_named(channel, retried) is not None:
            # Back after a hint (or the proxy's retry): what the pacer waits for.
            _bump(cache, arrivals_key(channel, versions.get(channel)), timeout)
        bucket, slot = _place(cache, key, channel, client, timeout, window, retried or {})
        name = channel if bucket == 0 else f"{channel}{_SEP}{bucket}"
        out.append(name)
        if slot is not None:
            records[slot] = (name, bucket)
        if bucket:
            extra.append(name)
            # Hinted while anyone may hold it, whatever version it was counted at; the
            # channel's own mark says that some bucket of it is in use.
            cache.set_many({_used_key(name): 1, _used_key(channel): 1}, timeout)
    if extra:
        extra_counters, extra_versions = counters_and_hold_versions(extra)
        versions = {**versions, **extra_versions}
        counters = {**counters, **extra_counters}
    if records:
        # What a re-request of this very hold names in Grip-Last: the channel held and its
        # prev-id; a serial lets each hold be claimed by one re-request (``_retry_of``).
        serial = os.urandom(4).hex()
        cache.set_many(
            {slot: f"{bucket} {serial} {name} {versions.get(name)}"
             for slot, (name, bucket) in records.items()},
            timeout,
        )
        for slot, (name, _bucket) in records.items():
            mine, number = slot.rsplit(":", 1)
            if number != "0":  # one of identical connections: claimed by count
                _bump(cache, f"{mine}={name}@{versions.get(name)}", timeout)
    return out, versions, counters


def _place(
    cache: Any,
    key: str,
    channel: str,
    client: str | None,
    timeout: int,
    window: int | None,
    retried: dict[str, str],
) -> tuple[int, str | None]:
    """This hold's bucket of the channel counted at ``key``, and the key to record it under
    (None: nothing to record)."""
    buckets, size = _settings()
    if client is None:
        return _count(cache, key, timeout, buckets, size), None
    mine = f"{key}:{client}"
    if window is None:  # one client, however many connections
        known = cache.get(f"{mine}:0")
        if known is not None:
            return int(str(known).split()[0]), None
        return _count(cache, key, timeout, buckets, size), f"{mine}:0"
    if retried:
        bucket = _retry_of(cache, mine, channel, retried, window, timeout)
        if bucket is not None:  # its record stays claimed: one re-request per hold
            return bucket, None
        previous = _bucket_named(channel, retried)
        if previous is not None:
            # The proxy's re-request after a hint: most are answered with the change, and
            # their clients ask again at once, which takes a slot then. A slot taken here
            # as well counted every client twice and the publisher paced through
            # half-empty buckets (the bench's second round of 1,000 delivered 879). It is
            # held again, if unchanged, in its bucket.
            return previous, None
    # The n-th identical request of this window takes the n-th slot. A hold lasts at most
    # ``window``, so a reconnect after a timeout falls in a later window and takes a slot
    # an earlier hold of the client named.
    mark = _window_mark(mine, window)
    slot = 0
    if not cache.add(mark, 1, 2 * window):
        try:
            slot = incr(cache, mark, 2 * window) - 1
        except ValueError:  # expired in between
            slot = 0
    known = cache.get(f"{mine}:{slot}")
    if known is not None:
        return int(str(known).split()[0]), f"{mine}:{slot}"
    return _count(cache, key, timeout, buckets, size), f"{mine}:{slot}"


def _retry_of(
    cache: Any, mine: str, channel: str, retried: dict[str, str], window: int, timeout: int
) -> int | None:
    """The bucket of the hold the proxy re-sends, when this request is that: Pushpin
    re-requests a channel's held clients about a second after its first subscription, and
    at once when a hold's prev-id is not the channel's last id (PUSHPIN.md), with
    ``Grip-Last`` naming what the hold named. Counted again, each such re-request moved its
    client to a later bucket (one token on 300 connections: 12 buckets for 300 holds, and
    the pacer waited out each half-empty one).

    The first connection's hold (slot 0) is claimed once by a re-request naming what it
    named. Identical connections cannot be told apart: a re-request after a hint may name
    what another's hold named. So a re-request of theirs claims one of the later holds that
    named what it names, if one is left unclaimed; a bucket then takes at most twice its
    size."""
    named = [(n, v) for n, v in retried.items() if n == channel or n.startswith(channel + _SEP)]
    if not named:
        return None
    name, last = named[0]
    record_key, mark, declared = f"{mine}:0", _window_mark(mine, window), f"{mine}={name}@{last}"
    found = cache.get_many([record_key, mark, declared])
    record = found.get(record_key)
    if record is not None:
        bucket, serial, held_name, prev = str(record).split(" ", 3)
        if (held_name, prev) == (name, last) and cache.add(f"{record_key}:{serial}", 1, window):
            return int(bucket)
    if int(found.get(mark) or 0) <= 1:
        return None
    holds = int(found.get(declared) or 0)
    if not holds or _bump(cache, f"{declared}:claimed", timeout) > holds:
        return None
    return _bucket_named(channel, {name: last})


def _bucket_named(channel: str, retried: dict[str, str]) -> int | None:
    """The bucket of ``channel`` a re-request's ``Grip-Last`` names."""
    for name in retried:
        if name == channel:
            return 0
        number = name[len(channel) + len(_SEP):]
        if name.startswith(channel + _SEP) and number.isdigit():
            return int(number)
    return None


def _window_mark(mine: str, window: int) -> str:
    """How many identical requests held in this ``window`` (wall clock: every process
    agrees)."""
    return f"{mine}@{int(time.time() // max(1, window))}"


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


def _held(channel: str, version: str | None) -> int | None:
    """Holds counted at ``version``; None when this process cannot know (a per-process
    cache in a process that never counted a hold: a shell publishing for runserver)."""
    return _held_many({channel: version})[channel]


def _held_many(versions: dict[str, str | None]) -> dict[str, int | None]:
    """:func:`_held` of several channels, in one round trip."""
    keys = {channel: count_key(channel, version) for channel, version in versions.items()}
    found = state_cache().get_many(list(keys.values())) if keys else {}
    unknown = per_process_state() and not _counts_holds_here
    return {
        channel: (int(found[key]) if key in found else None if unknown else 0)
        for channel, key in keys.items()
    }


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
