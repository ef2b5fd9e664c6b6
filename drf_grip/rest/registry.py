"""Which models are live, and publishing their changes after commit.

A realtime view registers its model when its class is created; ``register()`` adds models
whose changes wake other resources (a new Comment changes its Post). Signals collect
changes per transaction; the batch is handed to a background worker when the transaction
commits (a rollback drops it), so the write is never slowed by rendering or the network.
``update()``, ``bulk_create()`` and raw SQL send no signals: call ``publish_changes()``, or
wrap the block in ``paused()``. What a change changes in other models through their relations
(proxies, parents, many-to-many rows, ``SET_NULL``) is found by relations.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, close_old_connections, models, router, transaction
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_init,
    post_save,
    pre_delete,
    pre_save,
)

from ..conf import grip_settings
from .relations import (
    after_delete,
    as_it_was,
    m2m_sides,
    remember_keys,
    same_rows,
    unlinked_by_delete,
    with_keys,
)

__all__ = [
    "register",
    "register_view",
    "publish_changes",
    "paused",
    "wait_idle",
    "is_registered",
    "stats",
]

logger = logging.getLogger("drf_grip.publish")

Related = Callable[[models.Model], Iterable[models.Model]]

_views: dict[type[models.Model], list[type]] = {}
_related: dict[type[models.Model], list[Related]] = {}
_explicit: set[type[models.Model]] = set()
#: Gateway view classes in the URLconf (their subscriptions live in the state cache).
_gateways: list[type] = []
_loaded = False
_lock = threading.Lock()
stats: dict[str, int] = {"changes": 0, "published": 0, "errors": 0}


def register_view(view_class: type) -> None:
    """Called when a realtime view class is defined: its model's changes are recorded."""
    try:
        model = view_class.resolve_realtime_model()
    except Exception:  # noqa: BLE001 - a class being defined must never fail here
        model = None
    if model is None:
        return
    from django.apps import apps

    if apps.ready and not apps.is_installed("drf_grip"):
        # Its ready() connects the signals that publish changes: without it every change
        # is dropped while reads still answer (a day-one probe: a POST published nothing).
        raise ImproperlyConfigured(
            f"{view_class.__name__} is a realtime view, but 'drf_grip' is not in "
            "INSTALLED_APPS: add it (before 'django.contrib.staticfiles', whose runserver "
            "would otherwise serve without the embedded GRIP proxy)."
        )
    register_live_model(model, view_class)


def register_live_model(model: type[models.Model], view_class: type) -> None:
    """Record that ``view_class`` serves ``model`` live (also from ``get_realtime_model()``
    at request time, which class attributes cannot tell)."""
    views = _views.get(model)
    if views is not None and view_class in views:
        return
    with _lock:
        views = _views.setdefault(model, [])
        if view_class not in views:
            views.append(view_class)
        if getattr(view_class, "realtime_partition", None):
            post_init.connect(
                _remember_partitions,
                sender=model,
                weak=False,
                dispatch_uid=f"drf_grip.partitions.{model._meta.label_lower}",
            )


def register(model: type[models.Model], affects: Related | None = None) -> None:
    """Publish changes of ``model``; with ``affects``, each change also counts as a change of
    the objects it returns (``register(Comment, affects=lambda c: [c.post])``)."""
    with _lock:
        _explicit.add(model)
        if affects is not None:
            _related.setdefault(model, []).append(affects)
            post_init.connect(
                remember_keys,
                sender=model,
                weak=False,
                dispatch_uid=f"drf_grip.affects.{model._meta.label_lower}",
            )


_load_lock = threading.RLock()


def _ensure_loaded() -> None:
    """Import the URLconf once, so views (and their models) register in every process,
    including a shell or a Celery worker that never served a request. A thread that asks
    while another is importing waits for it (a half-imported URLconf would make a model
    look unregistered and its change be dropped)."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        try:
            from django.urls import get_resolver

            get_resolver().url_patterns  # noqa: B018 - importing is the point
        except Exception:  # a broken URLconf is reported by Django's own checks
            logger.exception("drf-grip could not import the URLconf to find realtime views")
        _loaded = True


def is_registered(model: type[models.Model]) -> bool:
    _ensure_loaded()
    return model in _views or model in _explicit


def views_for(model: type[models.Model]) -> list[type]:
    _ensure_loaded()
    return list(_views.get(model, ()))


# -- changes ------------------------------------------------------------------------------


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
    rolls back, so each such savepoint registers one (``keep``) that marks it kept. Every
    change then registers a ``flush`` that only a savepoint of the batch's own removes, and
    the last one registered publishes, after every ``keep``: a test's
    ``captureOnCommitCallbacks(execute=True)`` runs only the callbacks registered in its
    block, and with a single flush a change saved before the block (a user in the test's
    setup) kept everything in it unpublished (docs probe). Changes are replayed in order:
    a rolled-back delete closed the streams of an object that still existed (ORM probe).
    """

    def __init__(self, using: str, savepoints: Iterable[str]) -> None:
        self.using = using
        self.savepoints = set(savepoints)
        self.log: list[tuple[str | None, tuple[Any, ...]]] = []
        self.watched: set[str] = set()
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
        _worker().submit(changes)
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
    elif savepoint is not None and savepoint not in batch.watched:
        batch.watched.add(savepoint)
        transaction.on_commit(partial(batch.keep, savepoint), using=using)
    batch.flushes += 1
    transaction.on_commit(partial(batch.flush, batch.flushes), using=using)
    # Removed only with the batch's own savepoints, not with the one this change is in, so
    # the last flush registered always runs at the commit.
    entries = connection.run_on_commit
    entries[-1] = (set(batch.savepoints), *entries[-1][1:])
    batch.log.append((savepoint, (model, None if pks is None else list(pks), deleted, partitions)))


def _partition_views(model: type[models.Model]) -> list[type]:
    return [v for v in _views.get(model, ()) if getattr(v, "realtime_partition", None)]


def _partitions(
    model: type[models.Model], instance: models.Model, created: bool = False
) -> set[str] | None:
    """The partitions a change of ``instance`` touches: its current ones and those it was
    loaded with or last saved in (a note moved to another owner changes both lists); None
    (every partition) when where it was is unknown."""
    views = _partition_views(model)
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
            if loaded is not None and _through_relation(view) is not None:
                out.update(view.get_instance_partitions(loaded))
        except Exception:  # noqa: BLE001 - unknown partitions wake every partition
            logger.exception("drf-grip: get_instance_partitions of %s failed", view.__name__)
            return None
    # Where it is now is what its next save moves it from: a created note, or one moved
    # twice, woke only its new owner's list, and the one it left kept it (DRF probe).
    _remember_partitions(model, instance)
    return None if unknown else out


def _through_relation(view: type) -> str | None:
    """The attribute of the relation that a view's ``realtime_partition`` path goes through
    (``project_id`` for ``"project__owner"``), when the default hook follows it."""
    relation_key = getattr(view, "_partition_relation_key", None)
    return relation_key() if relation_key is not None else None


def _remember_partitions(sender, instance, **kwargs) -> None:
    """What a loaded instance's partitions were, to wake them too if a change moves it.
    A path through a relation (``project__owner``) is not followed here, which would cost a
    query per object of every list read (DRF probe): the relation's key is kept, and the
    partitions it names are read if the object changes (``_as_loaded``)."""
    if instance.pk is None:
        return
    out: set[str] = set()
    keys: dict[str, Any] = {}
    for view in _partition_views(sender):
        key = _through_relation(view)
        if key is not None:
            keys[key] = instance.__dict__.get(key)
            continue
        try:
            out.update(view.get_instance_partitions(instance))
        except Exception:  # noqa: BLE001 - a deferred field, say: counted as unknown later
            return
    instance._drf_grip_partitions = out
    if keys:
        instance._drf_grip_partition_keys = keys


def _as_loaded(instance: models.Model) -> models.Model | None:
    """A copy of ``instance`` with the relation keys it was loaded with (and no related
    objects cached), or None when it remembers none."""
    keys = getattr(instance, "_drf_grip_partition_keys", None)
    if not keys:
        return None
    return with_keys(instance, keys)


def _expand(
    model: type[models.Model], instance: models.Model, raw: bool = False, created: bool = False
) -> list[tuple[type[models.Model], Any, set[str] | None]]:
    """The object itself plus what registered relations say it affects. Every model's change
    is recorded: the publisher asks the shared state whether anyone watches it, so a model
    named only by a view's ``get_realtime_model()`` in another process is not missed.

    A ``raw`` save (``loaddata``) must not query (Django: the fixture may not be consistent
    yet): its partitions count as unknown (every partition wakes) and ``affects`` is not
    followed."""
    _ensure_loaded()
    out = [(model, instance.pk, None if raw else _partitions(model, instance, created))]
    for other, attname in same_rows(model):
        pk = getattr(instance, attname, None)
        if pk is not None:
            out.append((other, pk, None if raw else _partitions(other, instance, created)))
    for side, attname in m2m_sides(model):
        pk = getattr(instance, attname, None)
        if pk is not None:
            out.append((side, pk, None))
    if raw:
        return out
    related = _related.get(model, ())
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
                        out.append((type(other), other.pk, _partitions(type(other), other)))
            except Exception:
                logger.exception(
                    "drf-grip: the 'affects' function for %s failed", model._meta.label
                )
    return out


def _on_pre_save(sender, instance, raw=False, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    """The keys an object with ``affects`` had, read from its row when it was loaded before
    its ``register(..., affects=...)`` ran: a shell or a Celery worker imports the URLconf,
    and with it a ``register()`` in a views module, at its first change, so a Comment loaded
    before and moved to another Post woke only the new Post (docs probe). One query, for
    such objects only."""
    if raw or instance._state.adding or instance.pk is None:
        return
    _ensure_loaded()
    if not _related.get(sender) or getattr(instance, "_drf_grip_keys", None) is not None:
        return
    row = sender._base_manager.using(using).filter(pk=instance.pk).first()
    if row is not None:
        remember_keys(sender, row)
        instance._drf_grip_keys = getattr(row, "_drf_grip_keys", None)


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
    for model, pk, partitions in _expand(sender, instance):
        # Deleted through a proxy, the object is gone for its concrete model and the other
        # proxies too (their streams got no ``event: delete``); a multi-table parent is
        # deleted by a signal of its own, or kept (``keep_parents``).
        gone = model is sender or (model._meta.concrete_model is table and pk == instance.pk)
        _record(model, [pk], gone, using, partitions)
    _record_sides_affects(sender, instance, using)


def _on_pre_delete(sender, instance, using=DEFAULT_DB_ALIAS, origin=None, **kwargs) -> None:
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
    if not _related.get(other) or len({side for side, _ in sides}) < 2:
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
    if pks and not deleted:
        # As a save would: comments made by ``bulk_create()`` left their posts stale (app
        # probe).
        _record_what_they_affect(model, pks, using)


def _record_what_they_affect(model: type[models.Model], pks: list[Any], using: str) -> None:
    """What ``register(..., affects=...)`` says these existing objects change (and their
    other relations, as ``_expand`` follows them), read on ``using``, which sees its own
    uncommitted rows. For objects changed without a save of their own: announced, or the
    side of a many-to-many whose rows changed."""
    if not pks or not _related.get(model):
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
    if _related.get(model) and (call, model) not in _warned_unfollowed:
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
        if transaction.get_connection(using).in_atomic_block:
            self.committed(using).add(model, None)
        else:
            self.now.add(model, None)

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
    _worker().submit(changes)


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


# -- the worker ---------------------------------------------------------------------------


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


def _worker() -> _ChangeWorker:
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
            "drf-grip: changes of %s were not published before exit (the state cache did "
            "not answer in time); every held client of their views was sent a hint instead",
            ", ".join(labels),
        )


def register_gateway(view_class: type) -> None:
    """Record that the URLconf serves ``view_class``, a WebSocket gateway."""
    with _lock:
        if view_class not in _gateways:
            _gateways.append(view_class)


def gateway_views() -> list[type]:
    """Gateway view classes of the URLconf (for system checks and warnings)."""
    _ensure_loaded()
    return list(_gateways)


def realtime_views() -> list[type]:
    """Realtime view classes of the URLconf (for system checks)."""
    _ensure_loaded()
    return [view for views in list(_views.values()) for view in views]


def shared_views() -> list[type]:
    """Realtime view classes whose class-level delivery is shared (for system checks)."""
    _ensure_loaded()
    default = grip_settings.DEFAULT_DELIVERY
    return [
        view
        for views in list(_views.values())
        for view in views
        if (getattr(view, "realtime_delivery", None) or default) == "shared"
    ]
