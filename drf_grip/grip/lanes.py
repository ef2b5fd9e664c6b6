"""The background publisher: one bounded queue and thread (a *lane*) per destination, so an
endpoint that is down delays no other. Items that pile up while a request is in flight go out
together in the next request, the latest item of a channel replacing older ones.

"Latest wins" here answers: of the items of one channel *waiting in this process's queue*,
which go out? (:func:`coalesce`, by the items' id/prev-id chain alone.) Which of two renders
made by *different processes* may be published at all is ``drf_grip/rest/tickets.py``; the
DRF layer's outdated checks (``publish_hooks``) bring that answer to a queued item.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import grip_settings
from ..protocol.items import RawItem
from . import destinations
from . import publish_hooks as hooks
from .items import channels_of, describe_channels, reaches_clients
from .transports import StopAt, Target

__all__ = [
    "PublishError",
    "PublishStats",
    "Publisher",
    "coalesce",
    "exit_deadline",
    "exit_unfinished",
]

logger = logging.getLogger("drf_grip.publish")

# A lane whose queue stayed empty this long ends its thread; the next publish starts another.
_IDLE_SECONDS = 60.0

_COUNTERS = ("queued", "sent", "failed", "retried", "dropped", "batches", "superseded")


class PublishError(ValueError):
    """A blocking publish failed at one or more destinations (named by URI, never by key).

    A ``ValueError``, as gripcontrol's failed blocking publish was: code written for
    django-grip's ``publish(..., blocking=True)`` catches that.
    """

    def __init__(self, failed: Sequence[str], channels: Sequence[str]) -> None:
        self.failed = list(failed)
        self.channels = list(channels)
        super().__init__(
            f"publish to {describe_channels(self.channels)} failed at: {', '.join(self.failed)}"
        )



@dataclass(frozen=True)
class PublishStats:
    """Counters since the process started; one item sent to two destinations counts twice.

    ``queued``: deliveries accepted into a queue; ``sent``: deliveries confirmed (2xx or a
    local sink that returned); ``failed``: deliveries given up (a 4xx, retries exhausted, a
    sink that raised, unserializable item); ``retried``: requests repeated after a 5xx, 408,
    429 or a network error; ``dropped``: deliveries refused because a queue was full, or
    still queued at ``close()``; ``batches``: requests (or sink calls) that succeeded;
    ``superseded``: versioned items replaced by a newer item of their channel before sending;
    ``pending``: deliveries queued or in flight right now. Blocking publishes count in
    ``sent``, ``failed``, ``retried`` and ``batches`` but not in ``queued``.
    """

    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    batches: int = 0
    superseded: int = 0
    pending: int = 0


def _closes(item: RawItem) -> bool:
    formats = item.get("formats") or {}
    return any(isinstance(f, dict) and f.get("action") == "close" for f in formats.values())


def coalesce(items: Sequence[RawItem]) -> tuple[list[RawItem], int]:
    """Latest wins per channel: an item whose successor in the queue chains onto it (the
    successor's ``prev-id`` is its ``id``) is dropped, the successor carrying its ``prev-id``,
    so a proxy that has the first one's predecessor delivers the latest state at once.
    Only a contiguous chain is merged: between two items of this queue that do not chain,
    another process published one (ids are shared counters), and a merged item would name
    a prev-id that skips it, which Pushpin holds for up to 5 s waiting for the gap
    (src/handler/sequencer.cpp). A ``close`` keeps the item before it (a stream's last
    event). Items without an ``id`` (a connection's messages) all stay. Returns the items
    and how many were dropped."""
    out: list[RawItem | None] = []
    tail: dict[str, int] = {}  # channel -> index in out of its last versioned item
    dropped = 0
    for item in items:
        channel = str(item.get("channel"))
        if item.get("id") is None:
            out.append(item)
            continue
        index = tail.get(channel)
        previous = out[index] if index is not None else None
        if (
            previous is not None
            and not _closes(item)
            and previous.get("id") is not None
            and item.get("prev-id") == previous.get("id")
        ):
            merged = dict(item)
            if previous.get("prev-id") is None:
                merged.pop("prev-id", None)
            else:
                merged["prev-id"] = previous["prev-id"]
            out[index] = None
            dropped += 1
            item = merged
        out.append(item)
        tail[channel] = len(out) - 1
        if _closes(item):
            tail.pop(channel)
    return [item for item in out if item is not None], dropped


class _Lane:
    """The queue and thread of one destination."""

    def __init__(self, target: Target, lock: threading.Lock) -> None:
        self.target = target
        self.items: deque[RawItem] = deque()
        self.wake = threading.Condition(lock)
        self.thread: threading.Thread | None = None
        self.accepted = 0  # items ever queued here
        self.finished = 0  # of those, sent or given up
        self.in_flight = 0


class Publisher:
    """Delivers items from background threads: one bounded queue and thread per destination.

    Use :func:`get_publisher` for the process-wide instance. It restarts its threads after a
    fork (the child does not re-send what the parent had queued) and after :meth:`close`.
    """

    def __init__(self) -> None:
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._lanes: dict[tuple[Any, ...], _Lane] = {}
        self._stop = threading.Event()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    def _check_fork(self) -> None:
        # Threads do not survive fork() and the inherited lock may be held by one of them.
        if self._pid != os.getpid():
            self._setup()

    # -- public --------------------------------------------------------------------------

    def enqueue(self, items: Sequence[RawItem]) -> None:
        """Queue ``items`` for every destination; never blocks on the network or a full queue."""
        if not items:
            return
        self._check_fork()
        targets = destinations.targets()
        limit = max(1, int(grip_settings.PUBLISH_QUEUE_SIZE))
        dropped: list[tuple[str, list[str]]] = []
        given_up: list[RawItem] = []
        now: list[tuple[Target, list[RawItem]]] = []
        with self._lock:
            for target in targets:
                lane = self._lanes.get(target.key)
                if lane is None:
                    lane = self._lanes[target.key] = _Lane(target, self._lock)
                lost: list[str] = []
                for item in items:
                    if len(lane.items) >= limit:
                        lost.append(str(item.get("channel")))
                        given_up.append(item)
                    else:
                        lane.items.append(item)
                        lane.accepted += 1
                self._counts["queued"] += len(items) - len(lost)
                self._counts["dropped"] += len(lost)
                if lost:
                    dropped.append((target.name, lost))
                if len(lost) < len(items) and not self._start(lane):
                    # No thread can start (Python 3.12+ refuses during interpreter
                    # shutdown, when a script's last changes arrive): send from this thread.
                    now.append((target, list(lane.items)))
                    self._counts["queued"] -= len(lane.items)
                    lane.accepted -= len(lane.items)
                    lane.items.clear()
                lane.wake.notify()
        for target, pending in now:
            # Sent from a thread the exit waits for (its main thread, Python 3.12+): within
            # the exit's one deadline, not PUBLISH_RETRIES of network timeouts.
            if not target.deliver(pending, self._count, StopAt(_sending_deadline())):
                given_up.extend(pending)  # its failures are logged
        if given_up and hooks.dropped_hooks:
            hooks.notify_dropped(given_up)
        for name, lost in dropped:
            logger.warning(
                "publish queue for %s is full (PUBLISH_QUEUE_SIZE=%d): dropped %d item%s for %s",
                name,
                limit,
                len(lost),
                "" if len(lost) == 1 else "s",
                describe_channels(lost),
            )

    def send(self, items: Sequence[RawItem]) -> list[str]:
        """Deliver ``items`` now, from this thread, to every destination; return their names.

        Raises :class:`PublishError` naming the destinations that failed.
        """
        if not items:
            return []
        self._check_fork()
        targets = destinations.targets()
        failed = [
            t.name
            for t in targets
            if not t.deliver(list(items), self._count, threading.Event())
        ]
        if failed:
            raise PublishError(failed, channels_of(items))
        return [t.name for t in targets]

    def queued_behind(self, is_it: Callable[[RawItem], bool]) -> bool:
        """From a delivered hook (``publish_hooks.register_delivered_hook``): whether the queue
        of the destination that just confirmed the hook's items holds an item that ``is_it``,
        not yet taken for sending. That item reaches the destination after them: a
        destination's items go one batch after another, in queue order. False anywhere else."""
        me = threading.current_thread()
        with self._lock:
            return any(
                lane.thread is me and any(is_it(item) for item in lane.items)
                for lane in self._lanes.values()
            )

    def flush(self, timeout: float | None = None, targets: Sequence[Target] | None = None) -> bool:
        """Wait until everything queued so far is sent or given up; False on timeout.
        ``targets``: only what was queued for these destinations."""
        self._check_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        keys = None if targets is None else {target.key for target in targets}
        with self._lock:
            marks = [
                (lane, lane.accepted)
                for key, lane in self._lanes.items()
                if keys is None or key in keys
            ]
            while any(lane.finished < mark for lane, mark in marks):
                if deadline is None:
                    self._progress.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._progress.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush for at most ``timeout`` seconds, then stop the threads; True if all was sent.

        What is still queued afterwards is counted as dropped and logged. The publisher stays
        usable: the next publish starts new threads.
        """
        flushed = self.flush(timeout)
        with self._lock:
            self._stop.set()
            lanes = list(self._lanes.values())
            self._lanes.clear()
            self._stop = threading.Event()
            lost: list[str] = []
            given_up: list[RawItem] = []
            for lane in lanes:
                lost.extend(channels_of(lane.items))
                given_up.extend(lane.items)
                lane.finished += len(lane.items)  # given up: a concurrent flush() may return
                lane.items.clear()
                lane.wake.notify_all()
            self._counts["dropped"] += len(lost)
            self._progress.notify_all()
        if given_up and hooks.dropped_hooks:
            hooks.notify_dropped(given_up)
        if lost:
            logger.warning(
                "publisher closed with %d item%s not delivered, for %s",
                len(lost),
                "" if len(lost) == 1 else "s",
                describe_channels(lost),
            )
        return flushed and not lost

    @property
    def stats(self) -> PublishStats:
        """A snapshot of the counters (see :class:`PublishStats`)."""
        self._check_fork()
        with self._lock:
            pending = sum(len(lane.items) + lane.in_flight for lane in self._lanes.values())
            return PublishStats(**self._counts, pending=pending)

    # -- worker --------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def _start(self, lane: _Lane) -> bool:
        """Start the lane's thread unless it runs (lock held); False if none can be started."""
        if lane.thread is not None and lane.thread.is_alive():
            return True
        thread = threading.Thread(
            target=self._run,
            args=(lane, self._stop),
            name=f"drf-grip publish to {lane.target.name}",
            daemon=True,
        )
        lane.thread = thread
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            lane.thread = None
            return False
        return True

    def _run(self, lane: _Lane, stop: threading.Event) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                while not lane.items and not stop.is_set():
                    if not lane.wake.wait(_IDLE_SECONDS) and not lane.items:
                        if self._lanes.get(lane.target.key) is lane:
                            del self._lanes[lane.target.key]
                        break
                if stop.is_set() or not lane.items:
                    if lane.thread is me:
                        lane.thread = None
                    return
                size = max(1, int(grip_settings.PUBLISH_BATCH_SIZE))
                taken = [lane.items.popleft() for _ in range(min(size, len(lane.items)))]
                batch, superseded_count = coalesce(taken)
                lane.in_flight = len(batch)

            if hooks.outdated_checks:  # outside the lock: a check may read a shared cache
                current = hooks.current(batch)
                superseded_count += len(batch) - len(current)
                batch = current
            if hooks.item_rewrites:
                current = []
                for sent in hooks.as_sent_each(batch):
                    superseded_count += not sent
                    current.extend(sent)
                batch = current

            def superseded(
                channels: set[str], lane: _Lane = lane, batch: list[RawItem] = batch
            ) -> bool:
                with self._lock:
                    if any(
                        item.get("id") is not None and item.get("channel") in channels
                        for item in lane.items
                    ):
                        return True
                return any(
                    hooks.is_outdated(item) or _sent_otherwise(item)
                    for item in batch
                    if item.get("channel") in channels
                )

            if lane.target.client_formats_only:
                batch = [item for item in batch if reaches_clients(item)]
            requeue: list[RawItem] = []
            try:
                if batch:
                    arrived = lane.target.deliver(batch, self._count, stop, superseded, requeue)
                    if hooks.delivered_hooks or hooks.dropped_hooks:
                        # Items requeued are neither: they go again with their channels' latest.
                        settled = [item for item in batch if all(item is not r for r in requeue)]
                        if arrived:
                            hooks.notify_delivered(settled, lane.target.name)
                        else:
                            hooks.notify_dropped(settled)
            except Exception:  # a bug must not kill the lane and strand its queue
                self._count(failed=len(batch))
                logger.exception(
                    "publish to %s failed for %s",
                    lane.target.name,
                    describe_channels(channels_of(batch)),
                )
            if requeue and hooks.outdated_checks:
                current = hooks.current(requeue)
                superseded_count += len(requeue) - len(current)
                requeue = current
            with self._lock:
                lane.in_flight = 0
                # Unsent items whose channels have newer ones go back in front, to be
                # coalesced with those on the next round.
                lane.items.extendleft(reversed(requeue))
                lane.finished += len(taken) - len(requeue)
                self._counts["superseded"] += superseded_count
                self._progress.notify_all()

    def _flush_at_exit(self, deadline: float) -> None:
        if self._pid != os.getpid():
            return
        if not self.close(max(0.0, deadline - time.monotonic())):
            exit_unfinished()


_exit_reported = False


_exit_deadline: float | None = None


def exit_deadline() -> float:
    """When everything that flushes at exit must stop (a ``time.monotonic()``): one
    ``PUBLISH_FLUSH_TIMEOUT`` from the first handler that asks. The change worker's handler
    and the publisher's run one after the other; each waiting its own full timeout made a
    shell whose proxy was down exit after twice the documented bound (docs/settings.rst)."""
    global _exit_deadline
    if _exit_deadline is None:
        _exit_deadline = _sending_deadline()
    return _exit_deadline


def _sending_deadline() -> float:
    """The exit's deadline once a handler asked for it; else one ``PUBLISH_FLUSH_TIMEOUT``
    from now, without starting the exit's clock: a thread that cannot start is not always
    the exit (``can't start new thread`` in a busy server), and a deadline started then
    would leave the real exit's flush none of its time."""
    if _exit_deadline is not None:
        return _exit_deadline
    return time.monotonic() + float(grip_settings.PUBLISH_FLUSH_TIMEOUT)


def exit_unfinished() -> None:
    """Say once that the exit's deadline passed with publishing unfinished: items still
    queued, or a change still being published (from Python 3.12 no thread starts at exit,
    so the change worker sends inline and is the one that runs out of time)."""
    global _exit_reported
    if not _exit_reported:
        _exit_reported = True
        logger.warning(
            "publish flush at exit did not finish within %.1fs",
            float(grip_settings.PUBLISH_FLUSH_TIMEOUT),
        )


def _sent_otherwise(item: RawItem) -> bool:
    """Whether ``item`` (already rewritten) would be sent differently now: a retry sends the
    bytes its first attempt encoded, and a rewrite that depends on what happened since (a
    subscriber the push must now skip: ``rest.shared``) had no say. Such a batch goes back
    to its lane and is rewritten again, as one with newer items of its channels does."""
    return bool(hooks.item_rewrites) and hooks.as_sent(item) != [item]
