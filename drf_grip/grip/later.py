"""Calls made a little later, from one daemon thread for the whole process.

Used where an answer and a publish race to the client by different ways through the proxy:
Pushpin's proxy writes a WebSocket-over-HTTP answer to the client, its handler writes
published messages, and neither waits for the other. A check made once the answer left
Django can still come before the client has it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["call_later", "wait_called"]

logger = logging.getLogger("drf_grip")

_lock = threading.Condition()
_heap: list[tuple[float, int, Callable[[], object]]] = []
_order = itertools.count()
_thread: threading.Thread | None = None
_running = 0
_atexit_registered = False


def call_later(delay: float, call: Callable[[], object]) -> None:
    """Run ``call()`` about ``delay`` seconds from now, in the caller's process; also when
    the process stops before then (:func:`_run_due_at_exit`)."""
    global _thread
    _register_at_exit()
    with _lock:
        heapq.heappush(_heap, (time.monotonic() + delay, next(_order), call))
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="drf-grip-later", daemon=True)
            _thread.start()
        _lock.notify()


def _register_at_exit() -> None:
    global _atexit_registered
    if _atexit_registered:
        return
    # atexit runs handlers last-in first-out: the publisher (which registers its own flush)
    # is created first, so this one runs before it and what the calls publish still goes.
    from .publisher import at_exit, get_publisher

    get_publisher()
    at_exit(_run_due_at_exit)
    _atexit_registered = True


def _run_due_at_exit() -> None:
    """A process that stops (a deploy's graceful restart, an autoreload) runs the calls it
    scheduled, each at its time, within the exit bound the publisher's flush shares
    (``PUBLISH_FLUSH_TIMEOUT``). Dropped with the daemon thread, a gateway subscription's
    settle never sent the change committed just before the stop: the client got it only
    with the next change."""
    if _thread is None or not _thread.is_alive():
        return  # none scheduled, or forked after they were: not this process's to run
    try:
        from .lanes import exit_deadline

        wait_called(max(0.0, exit_deadline() - time.monotonic()))
    except Exception:  # noqa: BLE001 - settings gone, logging torn down: never fail the exit
        pass


def wait_called(timeout: float = 10.0) -> bool:
    """Wait until every call scheduled so far has run (tests); False on timeout."""
    deadline = time.monotonic() + timeout
    with _lock:
        while _heap or _running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _lock.wait(min(left, 0.05))
    return True


def _run() -> None:
    global _running
    while True:
        with _lock:
            while not _heap or _heap[0][0] > time.monotonic():
                _lock.wait(None if not _heap else max(0.0, _heap[0][0] - time.monotonic()))
            _when, _n, call = heapq.heappop(_heap)
            _running += 1
        try:
            call()
        except Exception:  # noqa: BLE001 - one call must not stop the others
            logger.exception("drf-grip: a delayed call failed")
        finally:
            with _lock:
                _running -= 1
                _lock.notify_all()
