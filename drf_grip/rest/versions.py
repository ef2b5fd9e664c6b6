"""Channel versions: the id of the last item published on each channel, kept in Django's
cache so every process (web, Celery, shell) reads the same one.

A private channel's version is a counter moved with an atomic ``incr``: two publishers of one
channel get distinct ids and each knows the exact previous one. Counters start at a random
value, so ids stay unique after the cache is flushed (Pushpin drops a repeated
``(channel, id)`` for 60 s). A shared channel's version names the representation's ETag
(``shared.py``). A lost or expired version costs one re-request, never a lost update.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Callable

from .store import incr, state_cache, touch

__all__ = [
    "read_version",
    "read_versions",
    "version_key",
    "as_version",
    "ensure_versions",
    "hold_versions",
    "counters_and_hold_versions",
    "read_confirmed",
    "read_confirmed_by",
    "confirmers",
    "await_confirmed",
    "watch_confirmed",
    "watch",
    "acknowledge",
    "next_version",
    "unseen_start",
    "note_committed",
    "read_committed",
    "set_version",
    "version_entry",
    "add_version",
    "shared_hold_versions",
    "shared_versions",
    "renew_version",
]

_KEY = "drf_grip:version:"
#: The last id of a counter channel that a proxy confirmed (publisher's delivered hook).
_ACK = "drf_grip:seen:"
#: When the change behind a counter's last id was committed (``unchanged.held_behind``).
_COMMITTED = "drf_grip:committed:"
#: This machine, as commit times name it (``note_committed``).
_HOST = socket.gethostname()
#: How long a hold waits for a proxy to confirm ids its render covered (``await_confirmed``).
CONFIRM_WAIT = 0.5
#: Notified when this process's publisher hears a proxy confirm items (``acknowledge``).
_confirmed = threading.Condition()
#: Shared channels (``channels.url_channel``): their ids name representations.
SHARED_PREFIX = "drf.url."
#: Versions outlive any hold by far; a channel nobody used for a day starts afresh.
_TIMEOUT = 24 * 3600


def _timeout(channel: str) -> int:
    """How long ``channel``'s version lives. A shared URL's lives as long as its live URL
    (renewed with it, :func:`renew_version`) and as long again: each made-up query string
    (``?search=x1``, ``x2``...) left a day-long entry, which an anonymous client could pile
    up by the thousand a minute (security probe). A URL's version that expires costs its
    next hold a render and the proxy's re-request, never an update (module docstring)."""
    if channel.startswith(SHARED_PREFIX):
        from .policies import live_timeout

        return 2 * live_timeout()
    return _TIMEOUT


def renew_version(channel: str) -> None:
    """Keep ``channel``'s version as long again as a new one (a held, quiet live URL)."""
    touch(state_cache(), _KEY + channel, _timeout(channel))


def new_id() -> str:
    return secrets.token_hex(8)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def read_version(channel: str) -> str | None:
    return _text(state_cache().get(_KEY + channel))


def version_key(channel: str) -> str:
    """Where :func:`read_version` reads, for a caller that reads it with other keys in one
    round trip (then :func:`as_version` of what it found)."""
    return _KEY + channel


def as_version(value: object) -> str | None:
    """A version as read at :func:`version_key`."""
    return _text(value)


def read_versions(channels: list[str]) -> dict[str, str | None]:
    if not channels:  # no round trip to the cache (an empty MGET still is one)
        return {}
    found = state_cache().get_many([_KEY + c for c in channels])
    return {c: _text(found.get(_KEY + c)) for c in channels}


#: A counter a subscriber started (``_start``): its first value, which no item carries.
_STARTED = "drf_grip:started:"
#: A started counter's first value is a multiple of this: a publish reads the mark above
#: only when its prev-id is one (``unseen_start``), one id in this many.
_START_STEP = 1 << 12


def _start(cache, channel: str) -> None:
    base = (secrets.randbits(28) or 1) * _START_STEP  # 40 bits, as a publisher's start
    if cache.add(_KEY + channel, base, timeout=_TIMEOUT):
        # Nothing published yet: the proxy knows no id, and a hold names the first value.
        cache.add(_ACK + channel, base, timeout=_TIMEOUT)
        cache.set(_STARTED + channel, base, timeout=_TIMEOUT)


def unseen_start(channel: str, previous: str | None) -> bool:
    """Whether ``previous``, a counter channel's id before the item being published, is
    the value a subscriber started the counter at (``_start``): no item carried it, so no
    proxy has it as the channel's last id. A proxy that still has an older one (the cache
    lost the counter, Redis restarted, while the proxy ran on) held the item chained onto
    it 5 s in its sequencer, waiting for the missing id, and its long-polls still held at
    the older id got the change 5 s late (convergence harness, Redis restarted under two
    Pushpins: a detail long-poll 2.5 to 6 s after the last commit). The publisher then
    sends a sequence reset first (``shared.reset_sequence``)."""
    if previous is None or not previous.isdigit() or int(previous) % _START_STEP:
        return False
    return _text(state_cache().get(_STARTED + channel)) == previous


def ensure_versions(channels: list[str]) -> dict[str, str | None]:
    """Current versions of counter channels, giving a first one where there is none."""
    current = read_versions(channels)
    missing = [c for c, v in current.items() if v is None]
    if missing:
        cache = state_cache()
        for channel in missing:
            _start(cache, channel)
        current.update(read_versions(missing))
    return current


def hold_versions(channels: list[str]) -> dict[str, str | None]:
    """The prev-ids a hold subscribes with: per counter channel the last id a proxy has
    confirmed, else the counter. A counter moves before its item reaches the proxy; a hold
    naming an id the proxy has not seen yet is a conflict, which Pushpin resolves through its
    slow path (re-fetches at 10 sessions a second: src/handler/handlerengine.cpp, the update
    limiter), so under a burst of writes streams arrived seconds late."""
    return counters_and_hold_versions(channels)[1]


def counters_and_hold_versions(
    channels: list[str],
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The counters of ``channels`` as they are now, and the prev-ids to hold with
    (:func:`hold_versions`). A counter moves when a change is published, before the
    publisher looks for subscribers: a subscriber that reads the counters before it renders
    and again once it is findable knows whether a publish may have missed it."""
    if not channels:
        return {}, {}
    # The counters and the confirmed ids in one read, at one moment (a round trip each
    # with Redis); a counter that is not there yet is started, and read again.
    cache = state_cache()
    found = cache.get_many([_KEY + c for c in channels] + [_ACK + c for c in channels])
    counters = {c: _text(found.get(_KEY + c)) for c in channels}
    missing = [c for c, v in counters.items() if v is None]
    if missing:
        for channel in missing:
            _start(cache, channel)
        again = cache.get_many([_KEY + c for c in missing] + [_ACK + c for c in missing])
        found.update(again)
        counters.update({c: _text(again.get(_KEY + c)) for c in missing})
    current = dict(counters)
    seen = found
    for channel in channels:
        value = seen.get(_ACK + channel)
        counter = current.get(channel)
        if (
            value is not None
            and counter is not None
            and counter.isdigit()
            and int(value) <= int(counter)
        ):
            current[channel] = str(value)
    return counters, current


def read_confirmed(channels: list[str]) -> dict[str, str | None]:
    """Per channel, the last id a proxy has confirmed (:func:`acknowledge`)."""
    found = state_cache().get_many([_ACK + c for c in channels]) if channels else {}
    return {c: _text(found.get(_ACK + c)) for c in channels}


def _ack_by(channel: str, destination: str) -> str:
    # A digest: a destination's name is a URL, longer than a memcached key allows.
    digest = hashlib.blake2s(destination.encode(), digest_size=6).hexdigest()
    return f"{_ACK}{channel}@{digest}"


def read_confirmed_by(channel: str, destinations: list[str]) -> dict[str, str | None]:
    """Per destination (a target's name), the last version of the shared ``channel`` it
    confirmed; kept only where a deployment publishes to several (:func:`acknowledge`)."""
    keys = {d: _ack_by(channel, d) for d in destinations}
    found = state_cache().get_many(list(keys.values()))
    return {d: _text(found.get(key)) for d, key in keys.items()}


def await_confirmed(
    wanted: dict[str, int], within: float = CONFIRM_WAIT
) -> dict[str, str | None]:
    """The ids a proxy confirmed for the counter channels of ``wanted``, read again until each
    reached its wanted id or ``within`` seconds passed: the last read.

    A hold whose render covered an item still on its way to the proxy names an id behind the
    one the proxy will have. When the item gets there first, Pushpin 1.36 finds the hold
    behind the channel and retries it at once, and its proxy can lose the hold answering that
    retry: it links the retry's record under the request id before the first attempt's
    cleanup unlinks that id (``src/corelib/zhttpmanager.cpp``, ``unlink``; the soak, 2 runs
    in 9). The item is a publish round trip away, a few milliseconds; a proxy that does not
    confirm within the wait (down, or the item superseded and dropped) leaves the hold named
    as before."""

    def reached(seen: dict[str, str | None]) -> bool:
        return all(
            (seen.get(ch) or "").isdigit() and int(seen[ch] or 0) >= want
            for ch, want in wanted.items()
        )

    return watch_confirmed(list(wanted), reached, within)


def watch_confirmed(
    channels: list[str],
    done: Callable[[dict[str, str | None]], bool],
    within: float = CONFIRM_WAIT,
    *,
    seen: dict[str, str | None] | None = None,
) -> dict[str, str | None]:
    """The ids a proxy confirmed for ``channels``, read again until ``done`` says so or
    ``within`` seconds passed: the last read (``seen``, when given, is the first, read by the
    caller)."""
    return watch(lambda: read_confirmed(channels), done, within, seen=seen)


def watch(
    read: Callable[[], dict[str, str | None]],
    done: Callable[[dict[str, str | None]], bool],
    within: float = CONFIRM_WAIT,
    *,
    seen: dict[str, str | None] | None = None,
) -> dict[str, str | None]:
    """Confirmations as ``read`` gives them, read again until ``done`` says so or ``within``
    seconds passed: the last read (``seen``, when given, is the first). This process's
    confirmations wake the wait at once; other processes' are read from the cache every few
    milliseconds."""
    deadline = time.monotonic() + within
    pause = 0.002
    if seen is None:
        seen = read()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or done(seen):
            return seen
        with _confirmed:
            _confirmed.wait(min(pause, left))
        pause = min(2 * pause, 0.02)
        seen = read()


#: A wait for a proxy's confirmation that saw none (``waited_in_vain``), per channel.
_IN_VAIN = "drf_grip:in-vain:"


def waited_in_vain(channel: str, confirmed: str | None, tag: str) -> bool:
    """Whether a wait for a confirmation of ``channel``'s render ``tag``, begun when
    ``confirmed`` was its confirmed id, saw none come, in any process, within the last
    minute (``note_waited_in_vain``)."""
    return state_cache().get(_IN_VAIN + channel) == (confirmed, tag)


def note_waited_in_vain(channel: str, confirmed: str | None, tag: str) -> None:
    """Remember that a wait for a confirmation of the render ``tag``, begun at
    ``confirmed``, saw none: no push of that render is coming (its rows changed without a
    signal). In the shared cache, so every process reads it and a cache loss forgets it
    with the ids it names."""
    state_cache().set(_IN_VAIN + channel, (confirmed, tag), 60)


def acknowledge(items: list[dict]) -> None:
    """Remember the ids a proxy confirmed, per counter channel (never moving one back)."""
    from ..grip.items import channel_name
    from ..grip.publish_hooks import delivered_to

    latest: dict[str, int] = {}
    named: dict[str, str] = {}
    for item in items:
        item_id, channel = item.get("id"), channel_name(item)
        if not isinstance(item_id, str) or not item_id:
            continue
        if item_id.isdigit():
            latest[channel] = max(int(item_id), latest.get(channel, 0))
        elif channel.startswith(SHARED_PREFIX) and not item_id.endswith(".closed"):
            # A shared channel's id names a representation: no order to compare by.
            named[channel] = item_id
    cache = state_cache()
    if latest:
        known = cache.get_many([_ACK + c for c in latest] + [_KEY + c for c in latest])

        def moves(channel: str, value: int) -> bool:
            confirmed = int(known.get(_ACK + channel) or 0)
            counter = _text(known.get(_KEY + channel))
            # Or the confirmed id is past the counter: it names items of a counter that
            # expired (24 h after it started; before ``store.incr``, the file cache's
            # incr left it 300 s) and restarted at random below it. Kept, it outranked every id the
            # proxy confirmed after, and for a day holds named the counter instead.
            restarted = counter is not None and counter.isdigit() and confirmed > int(counter)
            return confirmed < value or restarted

        cache.set_many({_ACK + c: v for c, v in latest.items() if moves(c, v)}, _TIMEOUT)
    if named:
        # Only the channel's current version: an overtaken render, confirmed after the newer
        # one (two processes' publishes cross), would move the confirmed id back, and the
        # holds naming it would conflict with the proxy's last id (Pushpin then forgets it,
        # and lets the next item through unordered: shared.live_item_as_sent).
        current = read_versions(list(named))
        confirmed = {c: v for c, v in named.items() if current.get(c) == v}
        keys = {_ACK + c: v for c, v in confirmed.items()}
        by = delivered_to()
        if by is not None and by in confirmers():
            # Also which proxy confirmed it, where there are several: one proxy's
            # confirmation says nothing of another's (``shared.await_the_push_read``).
            keys.update({_ack_by(c, by): v for c, v in confirmed.items()})
        cache.set_many(keys, _timeout(SHARED_PREFIX))
    if latest or named:
        with _confirmed:
            _confirmed.notify_all()


def confirmers() -> list[str]:
    """The destinations whose confirmations of a shared channel are kept one by one: every
    endpoint, where a deployment publishes to several (:func:`read_confirmed_by`)."""
    from ..grip.destinations import endpoint_names

    names = endpoint_names()
    return names if len(names) > 1 else []


def shared_hold_versions(channels: list[str]) -> dict[str, str | None]:
    """The prev-ids a hold of shared channels subscribes with: the last representation a
    proxy confirmed, else the channel's version (see :func:`hold_versions` for why)."""
    return shared_versions(channels)[1]


def shared_versions(
    channels: list[str],
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The versions of shared channels as the publisher set them, and the prev-ids to hold
    with (:func:`shared_hold_versions`): one read of the cache, at one moment."""
    if not channels:
        return {}, {}
    found = state_cache().get_many([_KEY + c for c in channels] + [_ACK + c for c in channels])
    current = {c: _text(found.get(_KEY + c)) for c in channels}
    held = {
        c: _text(found[_ACK + c]) if found.get(_ACK + c) is not None else current[c]
        for c in channels
    }
    return current, held


def next_version(channel: str) -> tuple[str | None, str]:
    """Move a counter channel on; returns ``(previous, new)`` for ``prev-id``/``id``."""
    cache = state_cache()
    try:
        new = incr(cache, _KEY + channel, _timeout(channel))
    except ValueError:  # no counter yet (or it expired): nobody holds a prev-id of it
        # Started at this publish's id in one round trip (a burst of creates names many
        # fresh object channels). Holds read no confirmed id for it, so they name this id,
        # which the proxy is about to see.
        first = secrets.randbits(40)
        if cache.add(_KEY + channel, first, timeout=_TIMEOUT):
            return None, str(first)
        new = incr(cache, _KEY + channel, _timeout(channel))  # another process started it
        return None, str(new)
    return str(new - 1), str(new)


def note_committed(channel: str, item_id: str, at: float) -> None:
    """Remember that ``item_id`` of a counter channel is of a change committed at ``at``
    (``time.time()``), before its item goes out. Only holds read this, within a second of
    it (``unchanged.held_behind``, ``RealtimeMixin._catch_up_confirmed``): a minute is
    plenty. The machine is named: only its own clock compares with a render's."""
    state_cache().set(_COMMITTED + channel, (item_id, at, _HOST), timeout=60)


def read_committed(channels: list[str]) -> dict[str, tuple[str, float, bool]]:
    """Per channel, its last id that :func:`note_committed` named, with its commit time and
    whether this machine noted it (its clock is this one's)."""
    found = state_cache().get_many([_COMMITTED + c for c in channels]) if channels else {}
    out: dict[str, tuple[str, float, bool]] = {}
    for channel in channels:
        value = found.get(_COMMITTED + channel)
        if isinstance(value, tuple) and len(value) in (2, 3):
            here = len(value) == 3 and value[2] == _HOST
            out[channel] = (str(value[0]), float(value[1]), here)
    return out


def add_version(channel: str, version: str) -> bool:
    """Give a channel its first version; never moves one the publisher has set. True when
    this call gave it."""
    return bool(state_cache().add(_KEY + channel, version, timeout=_timeout(channel)))


def set_version(channel: str, version: str) -> None:
    state_cache().set(*version_entry(channel, version))


def version_entry(channel: str, version: str) -> tuple[str, str, int]:
    """What :func:`set_version` writes (key, value, timeout), for a caller that writes it
    with other keys in one round trip (``store.write_entries``)."""
    return version_key(channel), version, _timeout(channel)
