"""Shared realtime state in Django's cache, updated only with atomic operations.

Several origin workers, a Celery worker and a shell publish and subscribe at once,
so nothing here reads a shared value, changes it and writes it back: the
only writes are ``add`` (set-if-absent), ``set`` of a key that one writer owns, ``touch``,
``incr`` and ``delete``. Everything expires.

:class:`SlotIndex` is a bounded set (live URLs of a model, gateway connections): each
member has a few candidate slots derived from its key; it takes the first free one with
``add``. Listing the set reads every slot at once (``get_many``). When all of a member's
candidates are taken the index is full for it and the caller falls back (``add`` returns
False) — the cap that keeps what clients do from inflating what a change costs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache import caches

from ..conf import grip_settings

__all__ = ["SlotIndex", "state_cache", "per_process_state"]

_PROBES = 12


def state_cache() -> Any:
    return caches[grip_settings.VERSION_CACHE]


class SlotIndex:
    """A bounded, expiring set of ``{"k": key, ...}`` entries under ``name``."""

    def __init__(self, name: str, capacity: int, timeout: int, cache: Any = None) -> None:
        self.name = name
        self.capacity = max(1, int(capacity))
        self.timeout = int(timeout)
        self.cache = cache if cache is not None else state_cache()

    def _slots(self, key: str) -> list[str]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        seen: list[int] = []
        for i in range(min(_PROBES, self.capacity)):
            slot = int.from_bytes(digest[2 * i : 2 * i + 2], "big") % self.capacity
            while slot in seen:  # distinct candidates, also for tiny capacities
                slot = (slot + 1) % self.capacity
            seen.append(slot)
        return [f"{self.name}:{slot}" for slot in seen]

    def add(self, key: str, entry: dict[str, Any]) -> bool:
        """List ``key`` (refreshing its expiry); False when every candidate slot is taken."""
        slots = self._slots(key)
        found = self.cache.get_many(slots)
        for slot in slots:
            current = found.get(slot)
            if isinstance(current, dict) and current.get("k") == key:
                if current != {**entry, "k": key}:
                    self.cache.set(slot, {**entry, "k": key}, self.timeout)
                else:
                    self.cache.touch(slot, self.timeout)
                return True
        value = {**entry, "k": key}
        for slot in slots:
            if slot in found:
                continue
            if self.cache.add(slot, value, self.timeout):
                return True
            current = self.cache.get(slot)  # taken a moment ago: by us from another process?
            if isinstance(current, dict) and current.get("k") == key:
                return True
        return False

    def renew(self, key: str, entry: dict[str, Any], memo: dict[str, tuple[str, float]]) -> bool:
        """:meth:`add`, remembering in ``memo`` (per process) which slot ``key`` took: the
        next call reads that one slot, and renews its expiry only every quarter of it. A slot
        that expired or went to another key (after a flush) is found by reading it."""
        remembered = memo.get(key)
        now = time.monotonic()
        if remembered is not None:
            slot, renewed = remembered
            current = self.cache.get(slot)
            if isinstance(current, dict) and current.get("k") == key:
                if now - renewed > self.timeout / 4:
                    self.cache.touch(slot, self.timeout)
                    memo[key] = (slot, now)
                return True
            memo.pop(key, None)
        if len(memo) > 4 * self.capacity:
            memo.clear()  # keys that fell out of the index: start afresh, bounded
        if not self.add(key, entry):
            return False
        found = self.cache.get_many(self._slots(key))
        for slot, current in found.items():
            if isinstance(current, dict) and current.get("k") == key:
                memo[key] = (slot, now)
                break
        return True

    def remove(self, key: str) -> None:
        slots = self._slots(key)
        found = self.cache.get_many(slots)
        for slot in slots:
            current = found.get(slot)
            if isinstance(current, dict) and current.get("k") == key:
                self.cache.delete(slot)

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        names = [f"{self.name}:{slot}" for slot in range(self.capacity)]
        for start in range(0, len(names), 500):
            found = self.cache.get_many(names[start : start + 500])
            out.extend(v for v in found.values() if isinstance(v, dict) and "k" in v)
        return out


def per_process_state() -> bool:
    """True when the state cache is private to this process (local memory, dummy)."""
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache

    return isinstance(state_cache(), (LocMemCache, DummyCache))


def mark(keys: Iterable[str], timeout: int) -> None:
    """Set flags (``1``) that expire; idempotent, so concurrent writers cannot conflict."""
    cache = state_cache()
    cache.set_many({key: 1 for key in keys}, timeout)
