"""Shared realtime state in Django's cache, updated only with atomic operations.

Several origin workers, a Celery worker and a shell publish and subscribe at once,
so nothing here reads a shared value, changes it and writes it back: the
only writes are ``add`` (set-if-absent), ``set`` of a key that one writer owns, ``touch``,
``incr`` and ``delete``. Everything expires.

:class:`SlotIndex` is a bounded set (live URLs of a model, gateway connections): each
member has a few candidate slots derived from its key; it takes the first free one with
``add``. When all of a member's candidates are taken the index is full for it and the
caller falls back (``add`` returns False) — the cap that keeps what clients do from
inflating what a change costs. Slots come in rings of growing size and a member's first
candidates lie in the first rings, so a small set stays in the first slots; each ring in
use has an expiring flag, and listing reads the flags, then only the rings flagged. An empty
index costs one read of a few flags, a small one a few dozen slots.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import pickle
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.core.files import locks
from django.core.signals import setting_changed
from django.db import connections, router, transaction

from ..conf import grip_settings

__all__ = [
    "ADDED",
    "KEPT",
    "NEED",
    "SlotIndex",
    "cache_failed",
    "evicted_since",
    "incr",
    "per_process_state",
    "raised_by_cache",
    "state_cache",
    "usable",
    "write_entries",
]

#: What :meth:`SlotIndex.renew` did: listed a key that was not listed (new, or it had
#: expired), or kept one that was.
ADDED, KEPT = "added", "kept"

#: An entry's field saying until when (``time.time()``) the member is likely needed: a
#: renewal moves it later, never earlier, and writes it only once it moved by an eighth of
#: the index's timeout. Advisory: nothing expires by it (listings race across processes).
NEED = "need"

_PROBES = 12
_FIRST_RING = 32


def write_entries(cache: Any, entries: Iterable[tuple[str, Any, float]]) -> None:
    """Write ``(key, value, timeout)`` entries: one ``set_many`` per timeout they share, so
    one round trip when they all agree."""
    by_timeout: dict[float, dict[str, Any]] = {}
    for key, value, timeout in entries:
        by_timeout.setdefault(timeout, {})[key] = value
    for timeout, values in by_timeout.items():
        if len(values) == 1:
            cache.set(*next(iter(values.items())), timeout)
        else:
            cache.set_many(values, timeout)


def touch(cache: Any, key: str, timeout: float) -> bool:
    """``cache.touch(key, timeout)``: False when the key is gone.

    Django's ``FileBasedCache.touch`` of a key that has just expired deletes and closes the
    file, then unlocks the closed file and raises ``ValueError`` (I/O operation on closed
    file; django/core/cache/backends/filebased.py, Django 4.2 to 5.2). The key is gone.
    """
    try:
        return bool(cache.touch(key, timeout))
    except ValueError:
        return False


def incr(cache: Any, key: str, timeout: float) -> int:
    """``cache.incr(key)``, the key then living ``timeout`` seconds more where the backend's
    ``incr`` does not keep its expiry. Django's ``BaseCache.incr``, which the file and
    database caches use, saves the new value with the cache's default timeout (``TIMEOUT``,
    300 s unless set): a private channel's version counter then expired five minutes after
    its last publish while the id a proxy confirmed lived on, restarted at random above it,
    and the next change waited out Pushpin's 5 s for an unknown prev-id (bad-input probe,
    behind Pushpin with the sample's file cache). Redis, local memory and memcached keep it."""
    value = cache.incr(key)
    if type(cache).incr is BaseCache.incr:
        touch(cache, key, timeout)
    return int(value)


class _AtomicFileCache(FileBasedCache):
    """Django's file cache with its read-modify-write operations made one step across
    processes. Its ``add`` is "``has_key``, then ``set``" and ``incr`` "``get``, then
    ``set``" (django/core/cache/backends/filebased.py, base.py): three processes making 500
    increments each of one counter ended at 519, and with runserver and shells publishing,
    a private channel's versions were handed out twice and streams moved back (convergence
    probe, the sample's cache). Each takes an exclusive lock on one file in the cache's
    directory (``flock``), and so does ``set``, so that none falls between another's read
    and write; ``incr`` keeps the key's expiry, as Redis does."""

    _LOCK_FILE = "drf-grip.lock"  # not a ``.djcache`` file: clear() and culling leave it

    #: Seconds between two culls of one process. Django's ``set`` culls first, and its cull
    #: lists the whole directory to count the entries (``_cull``, ``_list_cache_files``):
    #: with 5,000 files a set took 7.7 ms instead of 0.6, and publishing a cascade of 300
    #: deletes took 10 s (a publishing probe; NOTES.rst, forty-sixth session). The cache may
    #: pass ``MAX_ENTRIES`` by what one process writes in that time.
    CULL_INTERVAL = 1.0
    _culled_at = float("-inf")

    def _cull(self) -> None:
        now = time.monotonic()
        if now - self._culled_at < self.CULL_INTERVAL:
            return
        self._culled_at = now
        super()._cull()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._createdir()
        with open(os.path.join(self._dir, self._LOCK_FILE), "ab") as lock:
            locks.lock(lock, locks.LOCK_EX)
            try:
                yield
            finally:
                locks.unlock(lock)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None):
        with self._exclusive():  # Django's add calls self.set, which would lock again
            if self.has_key(key, version):
                return False
            super().set(key, value, timeout, version)
            return True

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None):
        with self._exclusive():
            super().set(key, value, timeout, version)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        with self._exclusive():
            try:
                with open(self._key_to_file(key, version), "rb") as f:
                    expiry = pickle.load(f)
                    value = pickle.loads(zlib.decompress(f.read()))
            except FileNotFoundError:
                value = expiry = None
            left = None if expiry is None else expiry - time.time()
            if value is None or (left is not None and left <= 0):
                raise ValueError(f"Key '{key}' not found")
            value += delta
            super().set(key, value, left, version)
            return value


#: How often :class:`_AtomicDatabaseCache` tries a write the database refused.
_WRITE_TRIES = 10


def _tried_again(write: Callable[[], bool], settled: Callable[[], bool] = lambda: False) -> bool:
    """``write()``, tried again 1-10 ms apart (at most :data:`_WRITE_TRIES` times in all)
    while it fails and ``settled()`` does not say that the failure was the answer."""
    for attempt in range(_WRITE_TRIES):
        if write():
            return True
        if settled():
            return False
        time.sleep(0.001 * (attempt + 1))
    return False


class _AtomicDatabaseCache(DatabaseCache):
    """Django's database cache with an ``incr`` that is one step across processes. Django's
    is "``get``, then ``set``" (base.py): three processes making 200 increments each of one
    counter ended at 593, a version handed out twice (``test_live_state.py``). Its ``add``
    is one step: the cache key is the table's primary key, so of two inserts one fails,
    and Django answers it False (db.py, ``_base_set``); :meth:`add` tells that from a
    write the database refused.

    This ``incr`` writes the row before it reads it, in one transaction: the write takes
    the row's lock in PostgreSQL and MySQL and the database's write lock in SQLite, so
    another ``incr`` of the key waits until this one commits, then reads its value. The
    value is stored as Django stores it (a pickle, base64), and the row's expiry is kept, as
    Redis's ``INCR`` keeps a key's."""

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        """Django's ``add``, tried again when it failed while nobody has the key. Django
        answers False to any database error of its write (db.py, ``_base_set``), and
        SQLite refuses a transaction that has read the key (Django's are deferred) the
        write lock while another connection writes, at once, whatever its timeout: three
        processes adding 200 keys each left one key to nobody (CI, Django 6, once)."""
        return _tried_again(
            functools.partial(super().add, key, value, timeout, version),
            settled=functools.partial(self.has_key, key, version=version),
        )

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        """Django's ``set``, tried again when the database refused the write, for the reason
        :meth:`add` gives: Django's drops such a write without a word (db.py, ``set`` ignores
        what ``_base_set`` answers), and a channel's version or a stream's state lost that
        way is an update some client never gets. ``set_many`` calls this for each key."""
        made = self.make_and_validate_key(key, version=version)
        _tried_again(functools.partial(self._base_set, "set", made, value, timeout))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> Any:
        made = self.make_and_validate_key(key, version=version)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        table = connection.ops.quote_name(self._table)
        with transaction.atomic(using=db), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET cache_key = cache_key WHERE cache_key = %s", [made]
            )
            value = super().get(key, version=version) if cursor.rowcount else None
            if value is None:
                raise ValueError(f"Key '{key}' not found")
            value += delta
            encoded = base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode()
            cursor.execute(f"UPDATE {table} SET value = %s WHERE cache_key = %s", [encoded, made])
        return value


#: Backends whose one instance may serve every thread of the process. Django's ``caches``
#: hands each thread, and under ASGI each request's context (asgiref ``Local``), a new
#: instance, and a new ``RedisCache`` instance brings a new redis-py connection pool: every
#: request that read realtime state opened a Redis connection and dropped it (1.7 ms of CPU
#: a request on this machine, NOTES.rst, eighteenth session). redis-py's pool, LocMemCache's
#: module-level store and lock, DatabaseCache's per-thread ``connections[...]`` and
#: FileBasedCache's files are safe to share; a memcached client (pylibmc) is not, so other
#: backends keep Django's per-context instance.
_SHAREABLE = (RedisCache, LocMemCache, DatabaseCache, FileBasedCache)

#: Per cache alias, the instance every thread uses (only for :data:`_SHAREABLE` backends).
_shared: dict[str, Any] = {}


def state_cache() -> Any:
    alias = grip_settings.VERSION_CACHE
    cache = _shared.get(alias)
    if cache is not None:
        return cache
    cache = caches[alias]
    if isinstance(cache, DummyCache):
        # A DummyCache (often the development CACHES, "caching off") keeps nothing: no
        # version, no live URL, and a held shared long-poll never woke. Its state is kept in
        # this process instead, which is what the one process of runserver needs; W002
        # says that other processes do not see it.
        cache = _shared.setdefault(alias, _in_process_state())
    elif isinstance(cache, _SHAREABLE):
        cache = _shared.setdefault(alias, _one_for_the_process(alias, cache))
    return cache


#: The redis-py pool size of the process's one ``RedisCache`` when ``CACHES`` sets none.
#: redis-py 6+ limits a pool to 100 connections by default and then raises
#: ``MaxConnectionsError`` ("Too many connections"): a pool per request never met it, one
#: per process did when more than 100 threads sent a command at once (the bench, 1,000
#: gateway subscribers). Connections are opened only as commands overlap, and kept.
REDIS_MAX_CONNECTIONS = 10_000


def _one_for_the_process(alias: str, cache: Any) -> Any:
    """A new instance of ``alias`` (as ``caches.create_connection``), for every thread;
    Django's own file and database caches with atomic operations (``_AtomicFileCache``,
    ``_AtomicDatabaseCache``)."""
    own = {FileBasedCache: _AtomicFileCache, DatabaseCache: _AtomicDatabaseCache}.get(
        type(cache)  # a subclass keeps what it changed
    )
    if not isinstance(cache, RedisCache) and own is None:
        return caches.create_connection(alias)
    params = dict(caches.settings[alias])
    params.pop("BACKEND")
    location = params.pop("LOCATION", "")
    if own is not None:
        return own(location, params)
    options = dict(params.get("OPTIONS") or {})
    if "pool_class" not in options:  # a pool of the user's choice keeps its own limits
        options.setdefault("max_connections", REDIS_MAX_CONNECTIONS)
    params["OPTIONS"] = options
    instance = type(cache)(location, params)
    _reuse_clients(instance._cache)
    _incr_in_one_trip(instance._cache)
    return instance


def _reuse_clients(client: Any) -> None:
    """One ``redis.Redis`` per pool for ``client`` (Django's ``RedisCacheClient``).

    Its ``get_client()`` builds a new ``redis.Redis`` around the pool for every command, and
    redis-py 6+ fills each new one's table of response callbacks: half the CPU of a
    ``cache.get`` on a unix socket here (395 against 194 µs, NOTES.rst, nineteenth session).
    A ``redis.Redis`` over a pool may be shared by threads (redis-py's documentation). A
    Django without the ``_client`` factory (4.2 to 6.0 have it) keeps its own way."""
    make = getattr(client, "_client", None)
    if not callable(make):
        return
    made: dict[int, Any] = {}

    def reused(connection_pool: Any) -> Any:
        found = made.get(id(connection_pool))
        if found is None:
            found = made.setdefault(id(connection_pool), make(connection_pool=connection_pool))
        return found

    client._client = reused


#: ``INCRBY`` when the key exists, else nil: Django's ``incr`` (``ValueError`` on a missing
#: key, since ``INCRBY`` alone would create it with no expiry) in one round trip.
_INCR_IF_PRESENT = (
    "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end"
)


def _incr_in_one_trip(client: Any) -> None:
    """``incr`` and ``decr`` on ``client`` (Django's ``RedisCacheClient``) in one round trip.

    Django's is an ``EXISTS`` and then an ``INCRBY``: two round trips for every ticket,
    version and rendering mark, which subscribers and the publisher take all the time. A
    Redis that refuses scripts (``EVAL`` disabled or not permitted) keeps Django's way."""
    two_trips = getattr(client, "incr", None)
    if not callable(two_trips) or not hasattr(client, "get_client"):
        return
    from redis.exceptions import NoPermissionError, ResponseError

    def incr(key: Any, delta: int) -> int:
        try:
            found = client.get_client(key, write=True).eval(_INCR_IF_PRESENT, 1, key, delta)
        except ResponseError as exc:
            # The script refused, not its INCRBY (a value that is no integer raises as
            # Django's own incr does).
            refused = isinstance(exc, NoPermissionError) or str(exc).lower().startswith(
                ("unknown command", "noperm")
            )
            if not refused:
                raise
            client.incr = two_trips
            return two_trips(key, delta)
        if found is None:
            raise ValueError(f"Key '{key}' not found.")
        return int(found)

    client.incr = incr


def _forget_shared(*, setting: str, **kwargs: Any) -> None:
    if setting in ("CACHES", "DRF_GRIP"):
        _shared.clear()


setting_changed.connect(_forget_shared)


@functools.cache
def _in_process_state() -> Any:
    return LocMemCache("drf_grip.instead-of-dummy-cache", {"OPTIONS": {"MAX_ENTRIES": 100_000}})


def _lists(value: Any, key: str) -> bool:
    """Whether a slot's ``value`` is ``key``'s entry."""
    return isinstance(value, dict) and value.get("k") == key


class SlotIndex:
    """A bounded, expiring set of ``{"k": key, ...}`` entries under ``name``."""

    def __init__(self, name: str, capacity: int, timeout: int, cache: Any = None) -> None:
        self.name = name
        self.capacity = max(1, int(capacity))
        self.timeout = int(timeout)
        self.cache = cache if cache is not None else state_cache()
        # ``[(start, end), ...]``: 32 slots, then each ring twice the slots before it.
        self._rings: list[tuple[int, int]] = []
        start, end = 0, min(_FIRST_RING, self.capacity)
        while start < self.capacity:
            self._rings.append((start, end))
            start, end = end, min(self.capacity, end * 3)

    def _ring_of(self, slot: int) -> int:
        return next(i for i, (start, end) in enumerate(self._rings) if start <= slot < end)

    def _flag(self, ring: int) -> str:
        return f"{self.name}:ring:{ring}"

    def _slot_numbers(self, key: str) -> list[int]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        rings = self._rings
        probes = min(_PROBES, self.capacity)
        seen: list[int] = []
        for i in range(probes):
            # Probe i draws from the first rings up to level i * len(rings) / probes.
            bound = rings[min(len(rings) - 1, i * len(rings) // probes)][1]
            slot = int.from_bytes(digest[2 * i : 2 * i + 2], "big") % bound
            while slot in seen:  # distinct candidates, also for tiny capacities
                slot = (slot + 1) % self.capacity
            seen.append(slot)
        return seen

    def _slots(self, key: str) -> list[str]:
        return [f"{self.name}:{slot}" for slot in self._slot_numbers(key)]

    def _mark(self, slot_name: str) -> None:
        """Flag (or renew the flag of) the ring of a slot in use."""
        slot = int(slot_name.rsplit(":", 1)[1])
        flag = self._flag(self._ring_of(slot))
        if not touch(self.cache, flag, self.timeout):
            self.cache.set(flag, 1, self.timeout)

    def add(self, key: str, entry: dict[str, Any]) -> bool:
        """List ``key`` (refreshing its expiry); False when every candidate slot is taken."""
        return self._take(key, entry)[0] is not None

    def take(self, key: str, entry: dict[str, Any]) -> str | None:
        """:meth:`add`, returning the slot ``key`` is listed in (None when none was free), for
        :meth:`replace_in` and :meth:`remove_from` to find it again in one read."""
        return self._take(key, entry)[0]

    def take_new(self, key: str, entry: dict[str, Any]) -> tuple[str | None, bool]:
        """:meth:`take`, and whether ``key`` was not listed before (so that a caller that
        must undo it removes only what it added)."""
        return self._take(key, entry)

    def replace_in(self, slot: str, key: str, entry: dict[str, Any]) -> bool:
        """Set ``key``'s entry in ``slot`` (from :meth:`take`), if the slot still lists it."""
        current = self.cache.get(slot)
        if not _lists(current, key):
            return False
        self.cache.set(slot, {**entry, "k": key}, self.timeout)
        return True

    def remove_from(self, slot: str, key: str) -> None:
        """Unlist ``key`` from ``slot`` (from :meth:`take`), if the slot still lists it."""
        current = self.cache.get(slot)
        if _lists(current, key):
            self.cache.delete(slot)

    def _take(self, key: str, entry: dict[str, Any]) -> tuple[str | None, bool]:
        """The slot ``key`` is listed in (None when all are taken), and whether it was not
        listed a moment before (taken now, by this process or another)."""
        slots = self._slots(key)
        found = self.cache.get_many(slots)
        value = {**entry, "k": key}
        taken = None
        added = False
        for slot in slots:
            current = found.get(slot)
            if _lists(current, key):
                if current.get(NEED, 0) > value.get(NEED, 0):
                    value[NEED] = current[NEED]  # never earlier
                # Ours: set it, unless it is unchanged and still there to renew.
                if current != value or not touch(self.cache, slot, self.timeout):
                    self.cache.set(slot, value, self.timeout)
                taken = slot
                break
        if taken is None:
            added = True
            for slot in slots:
                if slot in found:
                    continue
                if self.cache.add(slot, value, self.timeout):
                    taken = slot
                    break
                current = self.cache.get(slot)  # taken a moment ago: by us from another process?
                if _lists(current, key):
                    taken = slot
                    break
        if taken is not None:
            self._mark(taken)
        return taken, added

    def renew(
        self, key: str, entry: dict[str, Any], memo: dict[str, tuple[str, float]]
    ) -> str | None:
        """:meth:`add`, remembering in ``memo`` (per process) which slot ``key`` took: the
        next call reads that one slot, and renews its expiry only every quarter of it. A slot
        that expired or went to another key (after a flush) is found by reading it.
        :data:`KEPT` or :data:`ADDED`; None when every candidate slot is taken."""
        remembered = memo.get(key)
        now = time.monotonic()
        if remembered is not None:
            slot, renewed = remembered
            current = self.cache.get(slot)
            if _lists(current, key):
                if entry.get(NEED, 0) - current.get(NEED, 0) > self.timeout / 8:
                    self.cache.set(slot, {**current, NEED: entry[NEED]}, self.timeout)
                    self._mark(slot)
                    memo[key] = (slot, now)
                elif now - renewed > self.timeout / 4:
                    if not touch(self.cache, slot, self.timeout):
                        self.cache.set(slot, current, self.timeout)  # expired since the read
                    self._mark(slot)
                    memo[key] = (slot, now)
                return KEPT
            memo.pop(key, None)
        if len(memo) > 4 * self.capacity:
            memo.clear()  # keys that fell out of the index: start afresh, bounded
        slot, added = self._take(key, entry)
        if slot is None:
            return None
        memo[key] = (slot, now)
        return ADDED if added else KEPT

    def remove(self, key: str) -> None:
        slots = self._slots(key)
        found = self.cache.get_many(slots)
        for slot in slots:
            current = found.get(slot)
            if _lists(current, key):
                self.cache.delete(slot)

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        rings = self._rings
        flags = self.cache.get_many([self._flag(i) for i in range(len(rings))])
        names = [
            f"{self.name}:{slot}"
            for i, (start, end) in enumerate(rings)
            if self._flag(i) in flags
            for slot in range(start, end)
        ]
        for start in range(0, len(names), 500):
            found = self.cache.get_many(names[start : start + 500])
            out.extend(v for v in found.values() if isinstance(v, dict) and "k" in v)
        return out


def usable() -> bool:
    """Whether the state cache answers a read and takes a write. False: Redis down or not
    answering, or out of memory (``maxmemory`` under ``noeviction``, or with nothing left to
    evict): it then still answers reads but refuses every write (``OutOfMemoryError``), and
    a hold, a next link or a publish cannot keep what it must."""
    cache = state_cache()
    try:
        cache.get(_PROBE)
        cache.set(_PROBE, 1, 10)
    except Exception:  # noqa: BLE001 - each backend raises its own (redis-py's RedisError)
        return False
    return True


#: The key :func:`usable` reads and writes.
_PROBE = "drf_grip:usable"


def raised_by_cache(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) came out of a method of the state cache:
    the cache failed (Redis refused a write for memory, a connection broke), not the code
    that called it. A moment later :func:`usable` may say it works again (Redis evicted or
    freed room), and taken alone that made a failed subscription answer 500 and a failed
    publish dropped at once (multi-process probe, ``maxmemory`` 3-4 MB). A view's own cache
    of another alias failing is the view's failure: its read is not answered as a direct
    one for it, nor its publish tried again."""
    # The process's instance and this thread's (Django's ``caches[alias]``, which the view
    # and ``django.core.cache.cache`` use).
    state = (state_cache(), caches[grip_settings.VERSION_CACHE])
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            # Not ``get_or_set`` itself: what it raises may be its caller's default (a view's
            # bug); the cache's own failures there come from the get and add it calls.
            owner = frame.f_locals.get("self")
            if (
                owner is not None
                and any(owner is cache for cache in state)
                and frame.f_code.co_name != "get_or_set"
            ):
                return True
            tb = tb.tb_next
        current = current.__cause__
    return False


def cache_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is the state cache failing: raised by it, or it does not work now."""
    return raised_by_cache(exc) or not usable()


def forget_state() -> bool:
    """Forget drf-grip's realtime state (versions, live URLs, recorded policies, hold counts,
    gateway subscriptions) in a state cache private to this process, leaving the rest of
    that cache alone; False, forgetting nothing, for a cache shared with other processes,
    whose keys cannot be listed. For tests: a live URL, a policy or the live-URL cap that
    an earlier test filled carried over into the next one (a test-kit probe). The
    per-process memos of what was written (``SlotIndex.renew``) read the cache again when
    their key is gone, so a flush loses nothing they stand for."""
    cache = state_cache()
    if not isinstance(cache, LocMemCache):
        return False
    # LocMemCache keeps ``make_key`` names in ``_cache`` and ``_expire_info`` under ``_lock``
    # (django/core/cache/backends/locmem.py, the same from Django 4.2 to 6.0).
    marker = ":drf_grip:"
    with cache._lock:
        for key in [k for k in cache._cache if marker in k]:
            del cache._cache[key]
            cache._expire_info.pop(key, None)
    return True


def per_process_state() -> bool:
    """True when the state cache is private to this process (local memory, dummy)."""
    return isinstance(state_cache(), LocMemCache)


def mark(keys: Iterable[str], timeout: int) -> None:
    """Set flags (``1``) that expire; idempotent, so concurrent writers cannot conflict."""
    cache = state_cache()
    cache.set_many({key: 1 for key in keys}, timeout)


#: Per name (a model), the eviction count (:func:`evictions`) its last look saw.
_EVICTED = "drf_grip:evicted:"


def evictions() -> int | None:
    """How many keys the state cache's server evicted since it started: Redis's
    ``evicted_keys`` (``INFO stats``), for Django's ``RedisCache`` and django-redis. None
    for a cache that does not say, or when the server does not answer."""
    cache = state_cache()
    # Django's RedisCache keeps its client in ``_cache``, django-redis in ``client``; both
    # have ``get_client(write=True)`` for the primary, the server that evicts.
    for holder in ("_cache", "client"):
        get_client = getattr(getattr(cache, holder, None), "get_client", None)
        if callable(get_client):
            break
    else:
        return None
    try:
        stats = get_client(write=True).info("stats")
        return int(stats["evicted_keys"])
    except Exception:  # noqa: BLE001 - not a Redis client after all, or no answer: unknown
        return None


def evicted_since(name: str) -> int:
    """How many keys the state cache evicted since the last look for ``name`` (by any
    process); 0 when none, or when the cache does not say. Under ``maxmemory`` with an
    eviction policy (``allkeys-lru``, ``volatile-lru``: every key drf-grip writes expires,
    so both take them) Redis drops any key, the records of held clients among them (a live
    URL, the views a model's subscribers came through), and nothing else tells: the
    publisher then finds fewer subscribers than are held. Called once the records are read,
    it counts the evictions that may have taken one of them. A last look that is gone (its
    key evicted too) counts every eviction."""
    count = evictions()
    if not count:
        return 0
    cache = state_cache()
    seen = cache.get(_EVICTED + name)
    if seen != count:
        cache.set(_EVICTED + name, count, 24 * 3600)
    if isinstance(seen, int) and seen == count:
        return 0
    # Fewer than seen: the server restarted (its count did too) and evicted since.
    return count - seen if isinstance(seen, int) and seen < count else count
