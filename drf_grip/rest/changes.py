"""Changes of live models, recorded per transaction and handed over when it commits.

Signals collect changes per transaction; the batch is handed to the change worker
(change_worker.py) when the transaction commits (a rollback drops it), so the write is never
slowed by rendering or the network. ``update()``, ``bulk_create()`` and raw SQL send no
signals: call ``publish_changes()``, or wrap the block in ``paused()``. What a change changes
in other models through their relations (proxies, parents, many-to-many rows, ``SET_NULL``)
is found by relations.py; which models are live, by registry.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from .change_worker import stats, worker
from .registry import (
    affects_of,
    ensure_loaded,
    is_registered,
    partition_views,
    remember_partitions,
    through_relation,
)
from .relations import (
    after_delete,
    as_it_was,
    child_tables,
    m2m_sides,
    remember_keys,
    same_rows,
    unlinked_by_delete,
    with_keys,
)

__all__ = ["Changes", "connect_signals", "paused", "publish_changes"]

logger = logging.getLogger("drf_grip.publish")


@dataclass
class Changes:
    """Changed objects per model; ``None`` means "the whole model" (bulk)."""

    updated: dict[type[models.Model], set[Any] | None] = field(default_factory=dict)
    deleted: dict[type[models.Model], set[Any]] = field(default_factory=dict)
    #: Partitions the changes touched; a model missing here changed in unknown partitions.
    partitions: dict[type[models.Model], set[str]] = field(default_factory=dict)
    unpartitioned: set[type[models.Model]] = field(default_factory=set)
    #: When the newest of these changes was handed over (``time.monotonic()``, after its
    #: commit): a render of this process that began later read them (shared.publish_shared).
    committed_at: float | None = None

    def add(
        self,
        model: type[models.Model],
        pks: Iterable[Any] | None,
        deleted: bool = False,
        partitions: Iterable[str] | None = None,
    ) -> None:
        if partitions is None:
            self.unpartitioned.add(model)
        else:
            self.partitions.setdefault(model, set()).update(partitions)
        if deleted and pks is not None:
            self.deleted.setdefault(model, set()).update(pks)
            # Also a change of the lists it was in.
            self.updated.setdefault(model, set())
            return
        if pks is None:
            self.updated[model] = None
        else:
            pks = list(pks)
            if model not in self.updated or self.updated[model] is not None:
                self.updated.setdefault(model, set()).update(pks)
            # Saved after it was deleted (created again with the same key, in one
            # transaction or in two published together): it exists, and its streams must not
            # get ``event: delete`` and end (the final state, DESIGN.md §2).
            gone = self.deleted.get(model)
            if gone:
                gone.difference_update(pks)

    def merge(self, other: "Changes") -> None:
        for model, pks in other.updated.items():
            self.add(model, pks, partitions=other.partitions.get(model, set()))
        for model, pks in other.deleted.items():
            self.add(model, pks, deleted=True, partitions=other.partitions.get(model, set()))
        self.unpartitioned |= other.unpartitioned
        if other.committed_at is not None:
            self.committed_at = max(self.committed_at or 0.0, other.committed_at)

    def partitions_of(self, model: type[models.Model]) -> set[str] | None:
        """The partitions ``model``'s changes touched, or None when unknown (all)."""
        if model in self.unpartitioned:
            return None
        return set(self.partitions.get(model, ()))

    def __bool__(self) -> bool:
        return bool(self.updated or self.deleted)


class _Batch:
    """The changes of one transaction on one database, published once when it commits.

    A change made inside a savepoint newer than the batch is kept only if that savepoint
    was not rolled back: Django drops the on_commit callbacks registered in a savepoint it
    rolls back, so each change in such a savepoint registers one (``keep``) that marks it
    kept. Every change then registers a ``flush`` that only a savepoint of the batch's own
    removes, and the last one registered publishes, after every ``keep``: a test's
    ``captureOnCommitCallbacks(execute=True)`` runs only the callbacks registered in its
    block, and with a single flush a change saved before the block (a user in the test's
    setup) kept everything in it unpublished (docs probe). Changes are replayed in order:
    a rolled-back delete closed the streams of an object that still existed (ORM probe).
    """

    def __init__(self, using: str, savepoints: Iterable[str]) -> None:
        self.using = using
        self.savepoints = set(savepoints)
        self.log: list[tuple[str | None, tuple[Any, ...]]] = []
        self.kept: set[str] = set()
        self.flushes = 0

    def keep(self, savepoint: str) -> None:
        self.kept.add(savepoint)

    def flush(self, number: int) -> None:
        if number != self.flushes:
            return  # a later flush publishes, once every keep before it has run
        changes = Changes()
        pending: list[tuple[str | None, tuple[Any, ...]]] = []
        for savepoint, args in self.log:
            if savepoint is None or savepoint in self.kept:
                changes.add(*args)
            else:  # rolled back, or kept by a callback a test did not run
                pending.append((savepoint, args))
        self.log = pending
        _submit(changes, self.using)


def _flush_entry(connection: Any, batch: _Batch | None) -> int | None:
    """Where the last of ``batch``'s flushes waits in the connection's on_commit callbacks
    (None: gone, committed or rolled back)."""
    if batch is None:
        return None
    entries = connection.run_on_commit
    for index in range(len(entries) - 1, -1, -1):  # usually near the end
        func = entries[index][1]
        if isinstance(func, partial) and func.func == batch.flush:
            return index
    return None


_local = threading.local()


def _record(
    model: type[models.Model],
    pks: Iterable[Any] | None,
    deleted: bool,
    using: str,
    partitions: Iterable[str] | None = None,
) -> None:
    paused_changes: _Paused | None = getattr(_local, "paused", None)
    connection = transaction.get_connection(using)
    if paused_changes is not None:
        if connection.in_atomic_block:
            # Counted only once committed: a block that raises publishes what it committed.
            pks = None if pks is None else list(pks)
            later = paused_changes.committed(using)
            transaction.on_commit(partial(later.add, model, pks, deleted, partitions), using=using)
        else:
            paused_changes.now.add(model, pks, deleted, partitions)
        return
    if not connection.in_atomic_block:
        changes = Changes()
        changes.add(model, pks, deleted, partitions)
        worker().submit(changes)
        return
    batches: dict[str, _Batch] = getattr(_local, "batches", None) or {}
    _local.batches = batches
    batch = batches.get(using)
    # The batch lives as long as its on_commit callback: a rollback discards the callback
    # (and so the batch); a savepoint rollback keeps it if it was registered outside.
    if _flush_entry(connection, batch) is None:
        batch = batches[using] = _Batch(using, connection.savepoint_ids)
    # The innermost savepoint (``atomic(savepoint=False)``, as in every delete, adds None).
    savepoint = next((sid for sid in reversed(connection.savepoint_ids) if sid), None)
    if savepoint in batch.savepoints:
        savepoint = None  # rolled back only together with the whole batch
    elif savepoint is not None:
        # With every change, not only the savepoint's first: a test's block that runs only
        # its own callbacks must mark the savepoint kept before its flush (test-kit probe: a
        # TestCase whose setUpTestData made rows, a login, then a change in the block, which
        # was never published).
        transaction.on_commit(partial(batch.keep, savepoint), using=using)
    batch.flushes += 1
    transaction.on_commit(partial(batch.flush, batch.flushes), using=using)
    # Removed only with the batch's own savepoints, not with the one this change is in, so
    # the last flush registered always runs at the commit.
    entries = connection.run_on_commit
    entries[-1] = (set(batch.savepoints), *entries[-1][1:])
    batch.log.append((savepoint, (model, None if pks is None else list(pks), deleted, partitions)))


def _partitions(
    model: type[models.Model], instance: models.Model, created: bool = False
) -> set[str] | None:
    """The partitions a change of ``instance`` touches: its current ones and those it was
    loaded with or last saved in (a note moved to another owner changes both lists); None
    (every partition) when where it was is unknown."""
    views = partition_views(model)
    if not views:
        return set()
    remembered = getattr(instance, "_drf_grip_partitions", None)
    # Loaded before the views that partition it were imported (a shell or Celery imports
    # the URLconf at its first change), or when they could not be read: moved from a
    # partition nobody remembered, only the new owner's list woke (docs probe).
    unknown = remembered is None and not created and instance.pk is not None
    out: set[str] = set(remembered or ())
    loaded = _as_loaded(instance)
    for view in views:
        try:
            out.update(view.get_instance_partitions(instance))
            if loaded is not None and through_relation(view) is not None:
                out.update(view.get_instance_partitions(loaded))
        except Exception:  # noqa: BLE001 - unknown partitions wake every partition
            logger.exception("drf-grip: get_instance_partitions of %s failed", view.__name__)
            return None
    # Where it is now is what its next save moves it from: a created note, or one moved
    # twice, woke only its new owner's list, and the one it left kept it (DRF probe).
    remember_partitions(model, instance)
    return None if unknown else out


def _as_loaded(instance: models.Model) -> models.Model | None:
    """A copy of ``instance`` with the relation keys it was loaded with (and no related
    objects cached), or None when it remembers none."""
    keys = getattr(instance, "_drf_grip_partition_keys", None)
    if not keys:
        return None
    return with_keys(instance, keys)


def _expand(
    model: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    created: bool = False,
    children: bool = True,
) -> list[tuple[type[models.Model], Any, set[str] | None]]:
    """The object itself plus what registered relations say it affects. Every model's change
    is recorded: the publisher asks the shared state whether anyone watches it, so a model
    named only by a view's ``get_realtime_model()`` in another process is not missed.

    A ``raw`` save (``loaddata``) must not query (Django: the fixture may not be consistent
    yet): its partitions count as unknown (every partition wakes) and ``affects`` is not
    followed."""
    ensure_loaded()
    out = _as_each_model(model, instance, raw, created, children)
    for side, attname in m2m_sides(model):
        pk = getattr(instance, attname, None)
        if pk is not None:
            out.append((side, pk, None))
    if raw:
        return out
    related = affects_of(model)
    subjects = [instance]
    if related:
        was = as_it_was(instance)
        if was is not None:
            subjects.append(was)  # what it affected before it moved, too
        remember_keys(model, instance)
    for affects in related:
        for subject in subjects:
            try:
                for other in affects(subject) or ():
                    if other is not None:
                        # As if saved: a Comment's Post is also its proxy's and its
                        # children's (model-change probe).
                        out.extend(_as_each_model(type(other), other))
            except Exception:
                logger.exception(
                    "drf-grip: the 'affects' function for %s failed", model._meta.label
                )
    return out


def _as_each_model(
    model: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    created: bool = False,
    children: bool = True,
) -> list[tuple[type[models.Model], Any, set[str] | None]]:
    """``instance`` as an object of ``model`` and of each model its row is part of: its
    table's other classes and multi-table parents (signals name only the class that saved),
    and with ``children`` the multi-table children keyed by it, whose rows may not exist
    (a wasted hint costs less than a stale child); a deleted parent's children are deleted
    by signals of their own."""
    out = [(model, instance.pk, None if raw else _partitions(model, instance, created))]
    for other, attname in same_rows(model):
        pk = getattr(instance, attname, None)
        if pk is not None:
            out.append((other, pk, None if raw else _partitions(other, instance, created)))
    if children and instance.pk is not None:
        for other in child_tables(model):
            # Its partitions are read from a child, which ``instance`` is not: unknown.
            out.append((other, instance.pk, None if partition_views(other) else set()))
    return out


def _sharing_keys(model: type[models.Model]) -> list[tuple[type[models.Model], bool]]:
    """The other models an announcement of ``model``'s objects changes, keyed by the same
    values (proxies, multi-table parents and children), each with whether it is the same
    table, gone when they are."""
    table = model._meta.concrete_model
    others = [other for other, _attname in same_rows(model)] + child_tables(model)
    return [(other, other._meta.concrete_model is table) for other in others]


def _on_pre_save(sender, instance, raw=False, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    """What an object was loaded with, read from its row when it was loaded before the views
    that ask for it were imported: a shell or a Celery worker imports the URLconf, and with
    it a ``register()`` in a views module or a view's ``realtime_partition``, at its first
    change. The keys of an object with ``affects``: a Comment loaded before and moved to
    another Post woke only the new Post (docs probe). Its partitions: unknown, they woke
    every partition's holds at each fresh process's first change (multi-process probe, one
    re-request per held client of the model). One query, for such objects only."""
    if raw or instance._state.adding or instance.pk is None:
        return
    _remember_from_row(sender, instance, using)


def _remember_from_row(sender: type[models.Model], instance: models.Model, using: str) -> None:
    ensure_loaded()
    keys = bool(affects_of(sender)) and getattr(instance, "_drf_grip_keys", None) is None
    partitions = bool(partition_views(sender)) and not hasattr(instance, "_drf_grip_partitions")
    if not (keys or partitions):
        return
    row = sender._base_manager.using(using).filter(pk=instance.pk).first()
    if row is None:
        return
    if keys:
        remember_keys(sender, row)
        instance._drf_grip_keys = getattr(row, "_drf_grip_keys", None)
    if partitions:
        remember_partitions(sender, row)  # (its post_init did, if connected by now)
        for name in ("_drf_grip_partitions", "_drf_grip_partition_keys"):
            if hasattr(row, name):
                setattr(instance, name, getattr(row, name))


def _on_save(
    sender, instance, created=False, using=DEFAULT_DB_ALIAS, raw=False, **kwargs
) -> None:
    # ``raw``: loaddata, which a live site runs too (its clients saw nothing, ORM probe).
    for model, pk, partitions in _expand(sender, instance, raw, created):
        _record(model, [pk], False, using, partitions)
    if not raw:
        _record_sides_affects(sender, instance, using)


def _record_sides_affects(through: type[models.Model], row: models.Model, using: str) -> None:
    """A row of a many-to-many table saved or deleted changes both sides (``_expand``), and
    what each side ``affects``: a membership deleted left its member's list of the team's
    notes stale (visibility probe, a custom ``through``)."""
    for side, attname in m2m_sides(through):
        pk = getattr(row, attname, None)
        if pk is not None:
            _record_what_they_affect(side, [pk], using)


def _on_delete(sender, instance, using=DEFAULT_DB_ALIAS, origin=None, **kwargs) -> None:
    after_delete(origin)  # the same queryset deleted again is read again
    table = sender._meta.concrete_model
    for model, pk, partitions in _expand(sender, instance, children=False):
        # Deleted through a proxy, the object is gone for its concrete model and the other
        # proxies too (their streams got no ``event: delete``); a multi-table parent is
        # deleted by a signal of its own, or kept (``keep_parents``).
        gone = model is sender or (model._meta.concrete_model is table and pk == instance.pk)
        _record(model, [pk], gone, using, partitions)
    _record_sides_affects(sender, instance, using)


def _on_pre_delete(sender, instance, using=DEFAULT_DB_ALIAS, origin=None, **kwargs) -> None:
    ensure_loaded()  # a fresh process's first change may be this delete
    if (
        instance.pk is not None
        and not hasattr(instance, "_drf_grip_partitions")
        and partition_views(sender)
    ):
        # Loaded before the views that partition it were imported (``_on_pre_save``): a
        # row about to go is where the object is, with no query (a queryset's delete loads
        # every row first, and each would cost one).
        remember_partitions(sender, instance)
    # Rows a delete changes without a signal of their own (relations.unlinked_by_delete).
    for model, pks in unlinked_by_delete(sender, instance, using, origin, is_registered):
        _record(model, pks, False, using)


def _on_m2m(
    sender, instance, action, model, pk_set, using=DEFAULT_DB_ALIAS, reverse=False, **kwargs
) -> None:
    if action == "pre_clear":
        # Which objects of the other side a clear() unlinks is known only before it.
        _cleared[(sender, id(instance))] = _linked_pks(sender, instance, model, using)
        return
    if not action.startswith("post_"):
        return
    if action == "post_clear":
        pk_set = _cleared.pop((sender, id(instance)), None)
    for changed_model, pk, partitions in _expand(type(instance), instance):
        _record(changed_model, [pk], False, using, partitions)
    # The other side of the relation changed too (its partitions are not known here), and
    # what it affects: ``bob.projects.remove(p1)`` left bob's documents of p1 on show,
    # where ``p1.members.remove(bob)`` did not (visibility probe).
    _record(model, pk_set if pk_set else None, False, using)
    if pk_set:
        _record_what_they_affect(model, list(pk_set), using)


#: ``pre_clear``'s reading for its ``post_clear``, by relation and instance.
_cleared: dict[tuple[type, int], set[Any] | None] = {}


def _linked_pks(
    through: type[models.Model], instance: models.Model, other: type[models.Model], using: str
) -> set[Any] | None:
    """Keys of the ``other`` side's objects linked to ``instance`` in ``through``, when
    what they affect is to be followed; None otherwise, or for a relation of a model to
    itself, whose two columns this cannot tell apart."""
    sides = m2m_sides(through)
    if not affects_of(other) or len({side for side, _ in sides}) < 2:
        return None
    own = [a for side, a in sides if isinstance(instance, side)]
    theirs = [a for side, a in sides if side is other]
    if len(own) != 1 or len(theirs) != 1:
        return None
    rows = through._base_manager.using(using).filter(**{own[0]: instance.pk})
    return set(rows.values_list(theirs[0], flat=True))


def connect_signals() -> None:
    pre_save.connect(_on_pre_save, dispatch_uid="drf_grip.pre_save")
    post_save.connect(_on_save, dispatch_uid="drf_grip.post_save")
    post_delete.connect(_on_delete, dispatch_uid="drf_grip.post_delete")
    pre_delete.connect(_on_pre_delete, dispatch_uid="drf_grip.pre_delete")
    m2m_changed.connect(_on_m2m, dispatch_uid="drf_grip.m2m_changed")


def publish_changes(
    target: Any,
    pks: Iterable[Any] | None = None,
    *,
    deleted: bool = False,
    using: str | None = None,
) -> None:
    """Announce changes made without signals (``update()``, ``bulk_create()``, raw SQL).

    ``target`` is a model (with ``pks``, or the whole model), an instance, or a queryset
    (its model as a whole). Published after the current transaction commits. Named objects
    that still exist also wake what ``register(..., affects=...)`` says they affect.
    """
    if isinstance(target, models.Model):
        model, pks = type(target), [target.pk]
        using = using or target._state.db
    elif isinstance(target, models.QuerySet):
        model = target.model
        using = using or target.db
    else:
        model = target
    # Where the model is written, as Django's save() decides: announced inside
    # ``atomic(using="other")`` with a router, it went out on the default database's
    # (autocommit) before the commit, was read stale and never again (ORM probe).
    using = using or router.db_for_write(model)
    pks = None if pks is None else list(pks)
    if pks is None:
        _warn_unfollowed(model, "publish_changes")
    _record(model, pks, deleted, using)
    # As a save would: an update() of posts left their proxy's views stale, and of places
    # their restaurants' (model-change probe).
    for other, same_table in _sharing_keys(model):
        _record(other, pks, deleted and same_table, using)
    if pks and not deleted:
        # As a save would: comments made by ``bulk_create()`` left their posts stale (app
        # probe).
        _record_what_they_affect(model, pks, using)


def _record_what_they_affect(model: type[models.Model], pks: list[Any], using: str) -> None:
    """What ``register(..., affects=...)`` says these existing objects change (and their
    other relations, as ``_expand`` follows them), read on ``using``, which sees its own
    uncommitted rows. For objects changed without a save of their own: announced, or the
    side of a many-to-many whose rows changed."""
    if not pks or not affects_of(model):
        return
    for start in range(0, len(pks), 500):  # databases cap a query's parameters
        rows = model._base_manager.using(using).filter(pk__in=pks[start:start + 500])
        for instance in rows:
            for other, pk, partitions in _expand(model, instance)[1:]:
                _record(other, [pk], False, using, partitions)


_warned_unfollowed: set[tuple[str, type[models.Model]]] = set()


def _warn_unfollowed(model: type[models.Model], call: str) -> None:
    """A model announced as a whole cannot tell which objects its ``affects`` would name:
    say so, once per process, rather than leave their clients stale without a word (app
    probe: comments bulk-created in ``paused(Comment)`` never reached the posts' clients)."""
    if affects_of(model) and (call, model) not in _warned_unfollowed:
        _warned_unfollowed.add((call, model))
        logger.warning(
            "drf-grip: %s(%s) announces the model as a whole, so its register(affects=...) "
            "is not followed: name the objects (publish_changes(%s, pks=...)) or announce "
            "the models they affect too",
            call, model.__name__, model.__name__,
        )


class _Paused:
    """What a ``paused()`` block saw: ``now`` (autocommit), and per database what its
    transactions add when they commit (``committed``), published after the block once that
    database's transaction, if one is still open, commits."""

    def __init__(self) -> None:
        self.now = Changes()
        self.later: dict[str, Changes] = {}

    def committed(self, using: str) -> Changes:
        return self.later.setdefault(using, Changes())

    def announce(self, model: type[models.Model], using: str | None) -> None:
        """``model`` as a whole, when the transaction of its database commits."""
        using = using or router.db_for_write(model)
        changes = (
            self.committed(using) if transaction.get_connection(using).in_atomic_block
            else self.now
        )
        for each in [model, *(other for other, _same_table in _sharing_keys(model))]:
            changes.add(each, None)

    def submit(self) -> None:
        _submit(self.now)
        for using, changes in self.later.items():
            if transaction.get_connection(using).in_atomic_block:
                # Its changes join ``changes`` from their own on_commit callbacks, which run
                # before this one (Django runs them in order).
                transaction.on_commit(partial(_submit, changes, using), using=using)
            else:  # committed (or rolled back) inside the block
                _submit(changes)


@contextlib.contextmanager
def paused(*models_: type[models.Model], using: str | None = None) -> Iterator[None]:
    """Hold back auto-publishing for a block (an import); publish once at its end.

    Models named here are announced as a whole (their bulk channel), for changes that sent
    no signal; changes seen through signals are published too. A block that raises still
    publishes what it committed (rows written in autocommit, transactions that committed
    inside it), never what rolled back; inside a transaction, all of it waits for that
    transaction's commit. The models' announcements wait for the transaction of ``using``,
    by default of the database each model is written to (``DATABASE_ROUTERS``).
    """
    outer = getattr(_local, "paused", None)
    if outer is not None:  # nested: the outermost block publishes
        try:
            yield
        finally:
            for model in models_:
                outer.announce(model, using)
        return
    if len(models_) == 1:  # paused(Comment, Post) names what a Comment affects
        _warn_unfollowed(models_[0], "paused")
    mine = _Paused()
    _local.paused = mine
    try:
        yield
    finally:
        _local.paused = None
        for model in models_:
            mine.announce(model, using)
        mine.submit()


def _submit(changes: Changes, using: str | None = None) -> None:
    """Hand ``changes``, committed on database ``using``, to the change worker."""
    if not changes:
        return
    if using is not None and transaction.get_connection(using).in_atomic_block:
        # A commit callback run inside a transaction: a test's
        # ``captureOnCommitCallbacks(execute=True)`` in a ``TestCase``, whose rows no other
        # connection reads yet. The change worker's thread, with a connection of its own,
        # rendered a 500 ("database table is locked", SQLite) or the old rows (day-one
        # probe); this thread reads them.
        _publish_here(changes)
        return
    worker().submit(changes)


def _publish_here(changes: Changes) -> None:
    from .publishing import publish_committed

    changes.committed_at = time.monotonic()
    stats["changes"] += 1
    try:
        publish_committed(changes)
        stats["published"] += 1
    except Exception:
        stats["errors"] += 1
        logger.exception("drf-grip failed to publish changes")
