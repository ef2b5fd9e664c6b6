"""The change worker: committed changes become GRIP publishes off the request thread.

One daemon thread per process takes what changes.py hands over when a transaction commits,
merges what commits within ``PUBLISH_INTERVAL`` and publishes it (publishing.py); it waits
for the state cache when that does not answer, and at exit hands its last changes to the
publisher within ``PUBLISH_FLUSH_TIMEOUT``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import close_old_connections

from ..conf import grip_settings

if TYPE_CHECKING:
    from .changes import Changes

__all__ = ["stats", "wait_idle", "worker"]

logger = logging.getLogger("drf_grip.publish")

stats: dict[str, int] = {"changes": 0, "published": 0, "errors": 0}
_lock = threading.Lock()


def _close_old_connections() -> None:
    """``close_old_connections()`` that never ends the worker: raising in its ``finally``
    killed the thread for good, and every later change stayed unpublished (a test kit probe:
    pytest-django refuses database access, connection closing included, in a test without
    the ``django_db`` mark)."""
    try:
        close_old_connections()
    except Exception:  # noqa: BLE001 - the next change tries again
        logger.debug("drf-grip could not close old database connections", exc_info=True)


def _publish_once_the_cache_answers(publish: Callable[[Changes], None], changes: Changes) -> None:
    """``publish(changes)``; while it fails because the state cache does not answer (Redis
    restarting) or refuses writes (out of memory), try again as soon as it takes them, for
    at most ``PUBLISH_RETRIES`` times the longest backoff. Publishing reads and moves the
    cache (recorded views, versions, live URLs): a change committed during an outage was
    dropped, and the clients held before it kept the old representation (a stream until a
    later change)."""
    from .store import raised_by_cache, usable
    from .tickets import forget_renders_since

    deadline = time.monotonic() + int(grip_settings.PUBLISH_RETRIES) * float(
        grip_settings.PUBLISH_BACKOFF_MAX
    )
    waited = False
    # Once it answers again, a command on a connection pooled before the outage may still
    # fail once (a socket the restarted server does not know), and a write Redis refused
    # for memory may pass a moment later (it evicted or freed room): a few more tries then.
    again = 0
    while True:
        started = time.monotonic()
        try:
            publish(changes)
            return
        except Exception as exc:
            forget_renders_since(started)  # what this try began, it may not have sent
            up = usable()
            from_cache = raised_by_cache(exc)
            tries = 3 if waited or from_cache else 0
            if time.monotonic() > deadline or (up and again >= tries):
                raise
            again = again + 1 if up else 0
        if up:
            time.sleep(float(grip_settings.PUBLISH_BACKOFF))
        else:
            waited = True
            logger.warning(
                "drf-grip's state cache does not answer or refuses writes; publishing "
                "waits for it"
            )
        while not usable() and time.monotonic() < deadline:
            time.sleep(float(grip_settings.PUBLISH_BACKOFF))


class _ChangeWorker:
    """Turns committed changes into GRIP publishes off the request thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Changes | None] = queue.Queue(
            maxsize=int(grip_settings.PUBLISH_QUEUE_SIZE)
        )
        self.pid = os.getpid()
        self.idle = threading.Condition()
        self.pending = 0
        #: The changes being published (``run``), for the exit's last resort.
        self.current: Changes | None = None
        self.thread = threading.Thread(target=self.run, name="drf-grip-changes", daemon=True)
        self.thread.start()

    def submit(self, changes: Changes) -> None:
        changes.committed_at = time.monotonic()
        with self.idle:
            self.pending += 1
        stats["changes"] += 1
        try:
            self.queue.put_nowait(changes)
        except queue.Full:
            with self.idle:
                self.pending -= 1
                self.idle.notify_all()
            stats["errors"] += 1
            logger.error(
                "drf-grip change queue is full; dropped changes of %s",
                ", ".join(m._meta.label for m in changes.updated),
            )

    def run(self) -> None:
        from .publishing import publish_committed

        started = 0.0
        while True:
            changes = self.queue.get()
            if changes is None:
                return
            # Several transactions waiting, or committed within PUBLISH_INTERVAL of the last
            # publish: publish them together, each resource once. A change after a quiet
            # moment goes out at once; a stream of writes costs one render per live URL per
            # interval, not one per write (the bench's PATCH throughput, issue 10).
            done = 1 + self._gather(changes, started + float(grip_settings.PUBLISH_INTERVAL))
            started = time.monotonic()
            self.current = changes
            try:
                # Renders read the database from this thread: drop connections that the
                # server closed or that outlived CONN_MAX_AGE, as Django does per request.
                _close_old_connections()
                _publish_once_the_cache_answers(publish_committed, changes)
                stats["published"] += 1
            except Exception:
                stats["errors"] += 1
                logger.exception("drf-grip failed to publish changes")
            finally:
                self.current = None
                _close_old_connections()
                with self.idle:
                    self.pending -= done
                    self.idle.notify_all()

    def unfinished(self) -> Changes | None:
        """What is being published and what is queued, merged, taken off the queue; None
        when nothing is."""
        from .changes import Changes  # changes.py hands over to this module

        merged = Changes()
        found = self.current  # the worker's own object: merged into a copy
        if found is not None:
            merged.merge(found)
        while True:
            try:
                more = self.queue.get_nowait()
            except queue.Empty:
                break
            if more is not None:
                merged.merge(more)
        return merged if merged else None

    def _gather(self, changes: Changes, until: float) -> int:
        """Merge into ``changes`` what is queued, and what arrives before ``until`` (a
        ``time.monotonic()``); how many were merged. A shutdown mark stays queued."""
        merged = 0
        while True:
            wait = until - time.monotonic()
            try:
                more = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
            except queue.Empty:
                return merged
            if more is None:
                self.queue.put(None)
                return merged
            changes.merge(more)
            merged += 1

    def wait_idle(self, timeout: float | None) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.pending <= 0, timeout)


_instance: _ChangeWorker | None = None


_atexit_registered = False


def worker() -> _ChangeWorker:
    global _instance, _atexit_registered
    with _lock:
        if _instance is None or _instance.pid != os.getpid() or not _instance.thread.is_alive():
            _instance = _ChangeWorker()
            if not _atexit_registered:
                # atexit runs handlers last-in first-out: create the publisher (which
                # registers its own flush) first, so ours runs before it and still finds
                # it open.
                from ..grip.publisher import at_exit, get_publisher

                get_publisher()
                at_exit(_flush_at_exit)
                _atexit_registered = True
        return _instance


def wait_idle(timeout: float | None = None) -> bool:
    """Wait until every committed change has been handed to the GRIP publisher."""
    from .buckets import wait_paced

    if _instance is not None and not _instance.wait_idle(timeout):
        return False
    return wait_paced(timeout)


def _flush_at_exit() -> None:
    """A shell or a management command exits right after its last save: hand its changes
    to the publisher, whose own handler runs next and delivers them. Both share one
    deadline: the whole exit is bounded by ``PUBLISH_FLUSH_TIMEOUT``."""
    if _instance is not None and _instance.pid == os.getpid():
        from ..grip.lanes import exit_deadline, exit_unfinished

        deadline = exit_deadline()
        # A quarter (at most a second) left for the publisher's handler to send the last
        # resort below.
        reserve = min(1.0, max(0.0, deadline - time.monotonic()) / 4)
        if not _instance.wait_idle(max(0.0, deadline - reserve - time.monotonic())):
            _announce_unfinished(_instance)
            exit_unfinished()
            return
        from .buckets import finish_paced

        if not finish_paced(max(0.0, deadline - reserve - time.monotonic())):
            exit_unfinished()


def _announce_unfinished(worker: _ChangeWorker) -> None:
    """The exit's deadline came with changes unpublished, most likely because the state
    cache does not answer: announced with hints that need no cache
    (``publishing.publish_without_state``), and said with the models they were of."""
    from .publishing import publish_without_state

    changes = worker.unfinished()
    if changes is None:
        return
    try:
        labels = publish_without_state(changes)
    except Exception:  # noqa: BLE001 - at exit: say so, never raise
        logger.exception("drf-grip could not announce its unpublished changes at exit")
        return
    if labels:
        logger.warning(
            "drf-grip: changes of %s were not published before exit (within "
            "PUBLISH_FLUSH_TIMEOUT: the state cache did not answer, or the changes were too "
            "many); their views' held clients are sent hints instead",
            ", ".join(labels),
        )
