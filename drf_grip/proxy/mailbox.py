"""A bounded per-connection queue: publishing never waits for a slow reader."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Entries for one connection, bounded by count and bytes.

    ``put`` never blocks: past either bound the entry is refused and ``overflowed`` is set,
    and the owner closes its connection instead of letting memory grow. Entries put with
    ``owed=True`` (answers to the client's own requests) are never refused and do not use
    the bounds: their owner bounds them by asking for no more until they are read
    (``owed_items``, ``owed_bytes``).
    """

    def __init__(
        self, max_items: int, max_bytes: int, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self._on_overflow = on_overflow
        # Made at the first entry: a deque allocates a block of slots at once (about 0.5 KiB),
        # and a held long-poll waits with none (tracemalloc, bench/run.py's embedded case).
        self._items: deque[tuple[T, int, bool]] | None = None
        self._bytes = 0
        self.owed_items = 0
        self.owed_bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        # A bare future, not an asyncio.Event awaited through wait_for: wait_for wraps each
        # wait in a task of its own, and a publish to N held connections then runs N tasks
        # and N timer handles in lockstep before any body leaves (shared/PERFORMANCE.md).
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    def put(self, entry: T, size: int = 0, *, owed: bool = False) -> bool:
        if owed:
            self.owed_items += 1
            self.owed_bytes += size
        else:
            items = len(self) - self.owed_items
            if items >= self._max_items or (
                items and self._bytes - self.owed_bytes + size > self._max_bytes
            ):
                return self._overflow()
        if self._items is None:
            self._items = deque()
        self._items.append((entry, size, owed))
        self._bytes += size
        self.wake()
        return True

    def _overflow(self) -> bool:
        first = not self.overflowed
        self.overflowed = True
        self.wake()
        if first and self._on_overflow is not None:
            self._on_overflow()
        return False

    def peek(self) -> T | None:
        """The first entry, left in place."""
        return self._items[0][0] if self._items else None

    def pop(self) -> T | None:
        if not self._items:
            return None
        entry, size, owed = self._items.popleft()
        self._bytes -= size
        if owed:
            self.owed_items -= 1
            self.owed_bytes -= size
        return entry

    def clear(self) -> None:
        self._items = None
        self._bytes = 0
        self.owed_items = 0
        self.owed_bytes = 0

    def wake(self) -> None:
        """Wake the owner without an entry (client gone, shutdown)."""
        waiter = self._waiter
        if waiter is None:
            self._woken = True  # the next wait returns at once
        elif not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Return when an entry or a wake-up arrives, or after ``timeout`` seconds."""
        if self._items or self._woken:
            self._woken = False
            return
        if timeout is not None and timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            self._woken = False
            if timer is not None:
                timer.cancel()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
