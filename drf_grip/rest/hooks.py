"""The realtime hooks of a view, with their defaults: what a subscription decides.

Each hook is read once per subscription and what it returned is recorded
(:class:`~drf_grip.rest.context.RealtimePolicy`), so the publisher follows an override
(DESIGN.md §3, "the subscription decides"). The class methods are their publishing
counterparts, read where no request is: ``get_instance_partitions()`` and
``get_changed_channels()``.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from rest_framework.generics import GenericAPIView
from rest_framework.mixins import ListModelMixin, RetrieveModelMixin

from ..conf import grip_settings
from ..protocol import MIN_HOLD_TIMEOUT
from . import channels as names
from .context import SHARED
from .etag import make_etag
from .preconditions import lookup_of, model_named_by

__all__ = ["RealtimeHooks", "parse_prefer_wait"]

#: The partition of subscribers who are not signed in, and of rows with nothing at the
#: partition path (no owner): ``owner=request.user.pk`` reads those for them.
ANONYMOUS_PARTITION = "anonymous"

#: Not looked up yet (``RealtimeHooks._realtime_lookup_pk``).
_UNRESOLVED = object()


def _unique_value(model: type[models.Model], name: str, value: Any) -> tuple[Any, Any]:
    """``(field, value as the field takes it)`` for a unique concrete field ``name`` of
    ``model`` (``"pk"`` too); ``(None, None)`` for a path through a relation, a field that
    is not unique (no one row stands for the URL, so every change may wake it) or a value
    the field refuses. Checked by the field first: an invalid value in a query fails the
    whole transaction on PostgreSQL (``ATOMIC_REQUESTS``)."""
    try:
        found = model._meta.pk if name == "pk" else model._meta.get_field(name)
    except FieldDoesNotExist:
        return None, None
    if not getattr(found, "concrete", False) or not found.unique or found.is_relation:
        return None, None
    try:
        return found, found.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return None, None


def _pk_of_unique(model: type[models.Model], name: str, value: Any) -> Any:
    """The primary key of the one row whose unique field ``name`` holds ``value``; None
    when no row does, or no one row can (``_unique_value``)."""
    found, value = _unique_value(model, name, value)
    if found is None:
        return None
    # The base manager: a row the default manager hides still changes (and its changes
    # are published); whether this client may see it is the view's own 404.
    try:
        rows = list(model._base_manager.filter(**{found.attname: value}).values_list("pk")[:2])
    except (ValidationError, TypeError, ValueError):
        # What DRF's get_object_or_404 answers 404 to: a value the driver refuses (psycopg2,
        # a NUL character), a field's own get_prep_value. It was a 500 for a subscriber.
        return None
    return rows[0][0] if len(rows) == 1 else None


_WAIT = re.compile(r"wait\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def parse_prefer_wait(header: str | None) -> int | None:
    """``Prefer: wait=N`` (RFC 7240); an unparseable preference is ignored, as the RFC says."""
    if not header:
        return None
    for preference in header.split(","):
        # RFC 7240 §2: ``wait=6`` after a ``;`` is a parameter of another preference.
        match = _WAIT.fullmatch(preference.split(";", 1)[0].strip())
        if match:
            digits = match.group(1).lstrip("0") or "0"
            # Longer than any timeout, and int() refuses over 4300 digits: clamped anyway.
            return int(digits) if len(digits) <= 9 else 999_999_999
    return None


class RealtimeHooks:
    """The hooks ``RealtimeMixin`` reads, and the class attributes their defaults read."""


    #: ``"private"`` (default) re-runs each held request; ``"shared"`` renders once per URL.
    realtime_delivery: str | None = None
    #: The model whose changes wake this view; defaults to ``queryset.model``.
    realtime_model: type[models.Model] | None = None
    #: ``"list"`` or ``"detail"``; decided from the action or the generic mixins when empty.
    realtime_kind: str = ""
    #: Private delivery: the field path a subscriber's data depends on (``"owner"``), so a
    #: change wakes only its partition's subscribers. See ``get_realtime_partition()``.
    realtime_partition: str | None = None
    #: Shared delivery: request headers that change the representation's bytes besides the
    #: URL (``["Accept-Language"]``); each value gets its own live URL.
    realtime_vary: tuple[str, ...] = ()
    #: Shared delivery: query parameters the view reads besides its filter backends',
    #: paginator's and versioning's (drf-grip also sees those ``get_queryset()`` and the
    #: filter backends read, and those the serializer reads when it is made and builds
    #: its fields: drf-flex-fields' ``fields``, ``expand``, drf-dynamic-fields').
    #: The others are dropped before the view runs, so that ``?_=1700000000`` makes no
    #: live URL of its own.
    realtime_query_params: tuple[str, ...] = ()

    def get_realtime_model(self) -> type[models.Model] | None:
        return type(self).resolve_realtime_model()

    @classmethod
    def resolve_realtime_model(cls) -> type[models.Model] | None:
        if cls.realtime_model is not None:
            return cls.realtime_model
        return model_named_by(cls)

    @classmethod
    def names_no_model(cls) -> bool:
        """Never live: no model in its class attributes, and ``get_realtime_model()`` not
        overridden to name one per request (``drf_grip.W012``). Read from the class: a
        hook may need an authenticated request, which content negotiation comes before."""
        return (
            cls.get_realtime_model is RealtimeHooks.get_realtime_model
            and cls.resolve_realtime_model() is None
        )

    def get_realtime_delivery(self) -> str:
        return self.realtime_delivery or grip_settings.DEFAULT_DELIVERY

    def get_realtime_kind(self) -> str | None:
        """``"list"``, ``"detail"`` or None when this request is not a realtime read."""
        if self.request.method not in ("GET", "HEAD"):
            return None
        action = getattr(self, "action", None)
        if action is not None:  # a viewset: the action says it
            return {"list": "list", "retrieve": "detail"}.get(action)
        if self.realtime_kind:
            return self.realtime_kind
        # A generic view: its mixins say it; a nested list (/groups/5/members/) is a list.
        if isinstance(self, ListModelMixin):
            return "list"
        if isinstance(self, RetrieveModelMixin):
            return "detail"
        return "detail" if lookup_of(self)[1] in self.kwargs else "list"

    def get_realtime_partition(self) -> str | None:
        """The partition of this subscriber's data (private delivery), from
        ``realtime_partition``: ``"owner"`` partitions by the requesting user."""
        path = self.realtime_partition
        if not path:
            return None
        user = getattr(self.request, "user", None)
        if user is None or not user.is_authenticated:
            return ANONYMOUS_PARTITION
        return str(user.pk)

    @classmethod
    def get_instance_partitions(cls, instance: models.Model) -> list[str]:
        """The partitions a changed instance belongs to (the publishing counterpart of
        ``get_realtime_partition()``): the value at ``realtime_partition``; none there (no
        owner) is the anonymous subscribers' partition, as ``owner=request.user.pk`` reads
        such rows for them. It woke nobody, and an anonymous list of ownerless rows missed
        every change (publishing probe)."""
        value: Any = instance
        parts = (cls.realtime_partition or "").split("__")
        for position, part in enumerate(parts):
            # The last step reads the key (``owner_id``: no query); the steps before it
            # follow the relation (``project__owner``: the project, then its owner's key).
            # Reading keys on the way, the path stopped at an id, and a change woke nobody.
            last = position == len(parts) - 1
            value = (
                getattr(value, part + "_id", None)
                if last and hasattr(value, part + "_id")
                else getattr(value, part, None)
            )
            if value is None:
                return [ANONYMOUS_PARTITION]
        return [str(getattr(value, "pk", value))]

    @classmethod
    def _partition_relation_key(cls) -> str | None:
        """The key of the relation ``realtime_partition`` goes through (``project_id`` for
        ``"project__owner"``) while ``get_instance_partitions()`` is this default, which
        follows it; None otherwise. The registry keeps that key as loaded, to wake the
        partition an object moves out of without a query per object read."""
        path = cls.realtime_partition or ""
        overridden = cls.get_instance_partitions.__func__ is not (
            RealtimeHooks.get_instance_partitions.__func__
        )
        if "__" not in path or overridden:
            return None
        return path.split("__", 1)[0] + "_id"

    @classmethod
    def names_own_channels(cls) -> bool:
        """``get_realtime_channels()`` overridden. A shared push goes to the live URL's
        channel, which the view's own channels replace: such a view is delivered like
        private data, by a hint on what ``get_changed_channels()`` names, whatever its
        delivery says (a shared view with the README's channel pair woke nobody,
        publishing probe)."""
        return cls.get_realtime_channels is not RealtimeHooks.get_realtime_channels

    def get_realtime_channels(self) -> list[str]:
        """Channels a hold subscribes to. Only the server picks them.

        Override together with ``get_changed_channels()``, its publishing counterpart.
        """
        model = self.get_realtime_model()
        kind = self._realtime_kind
        # A subscriber of a shared view whose access needs its credentials is delivered
        # like private data (``_access_needs_credentials``), whatever the hook says.
        delivery = getattr(self, "_realtime_effective_delivery", None)
        if (delivery or self.get_realtime_delivery()) == SHARED:
            # Also the recovery channel: hinted when the cache lost the live URLs.
            recovery = names.shared_recovery_channel(model)
            if kind == "detail":
                # Also the bulk channel: a change naming no object (``update()``) reaches
                # detail URLs past the model-wide index's cap by a hint there (live_urls.py).
                return [self._live_url().channel, names.shared_bulk_channel(model), recovery]
            return [self._live_url().channel, recovery]
        if kind == "detail":
            value = self._realtime_lookup_pk(model)
            if value is not None:
                return [names.object_channel(model, value), names.bulk_channel(model)]
            # No one row stands for the URL (none yet, or a lookup that is not unique):
            # the list and bulk channels cover every change, one that creates it too.
            return [names.list_channel(model), names.bulk_channel(model)]
        partition = self.get_realtime_partition()
        if partition is not None:
            return [names.partition_channel(model, partition), names.bulk_channel(model)]
        return [names.list_channel(model)]

    @classmethod
    def finds_objects_itself(cls) -> bool:
        """``get_object()`` overridden: the row it finds for a URL may be another than the
        one whose lookup field holds the URL's value (``slug__iexact``, a canonical
        object), so it is asked which (``_realtime_lookup_pk``). The mixin's own, marked
        ``realtime_default``, calls the next one."""
        for klass in cls.__mro__:
            own = klass.__dict__.get("get_object")
            if own is not None and not getattr(own, "realtime_default", False):
                # Also one the mixin calls through super(), from a class after it.
                return own is not GenericAPIView.get_object
        return False

    def _pk_of_found(self, model: type[models.Model], field: str, value: Any) -> Any:
        """The primary key of the row the view's own ``get_object()`` finds, when it is
        the one whose unique lookup field holds ``value``; None otherwise: another row
        (``Hello`` for ``/hello/``), none, or a lookup DRF's would not make, where any
        change may change what it finds. Held on the exact match's channel, a subscriber
        shown another row missed every change of it (slug probe)."""
        try:
            found = self.get_object()
        except Exception:  # noqa: BLE001 - the view's own GET answers it (404, 403...)
            return None
        unique, value = _unique_value(model, field, value)
        if unique is None or not isinstance(found, model):
            return None
        return found.pk if getattr(found, unique.attname) == value else None

    def _realtime_lookup_pk(self, model: type[models.Model]) -> Any:
        """The primary key a detail URL looks up, as the publisher names a changed object's
        (``str(instance.pk)``), or None when it names no one row. The URL's text is what
        the client wrote: ``/todos/01/`` or an upper-case UUID finds the object, but held on
        a channel no change of it is published to (ORM probe).

        A subscription to a URL that looks up another unique field (``lookup_field =
        "slug"``) looks the primary key up, once per request and before the versions are
        read: left unknown, every change of the model woke its holds or rendered it
        (DESIGN.md §3, cost follows what changed). A change committed after that query moves the
        object's version before it is read, so the render after it misses nothing."""
        field, lookup = lookup_of(self)
        value = self.kwargs.get(lookup)
        if value is None:
            return None
        own = type(self).finds_objects_itself()
        if field in ("pk", model._meta.pk.name) and not own:
            try:
                return model._meta.pk.to_python(value)
            except (ValidationError, TypeError, ValueError):
                return value  # the GET answers 404: nothing to wake
        if not self._subscribes(self.request):
            return None  # a plain read or a write holds nothing: no query for it
        cached = self.__dict__.get("_realtime_resolved_pk", _UNRESOLVED)
        if cached is _UNRESOLVED:
            # None while the view's own get_object() runs for it: it finds no "other" row.
            self._realtime_resolved_pk = None
            find = self._pk_of_found if own else _pk_of_unique
            cached = self._realtime_resolved_pk = find(model, field, value)
        return cached

    @classmethod
    def get_changed_channels(
        cls, model: type[models.Model], pks: set[Any] | None, partitions: set[str] | None
    ) -> list[str]:
        """Private channels a change of ``model`` wakes for this view: the publishing
        counterpart of ``get_realtime_channels()``. ``pks`` None means the whole model."""
        if cls.realtime_partition and partitions is None and pks is not None:
            # Partitions unknown (``publish_changes(Note, pks=...)``, a fixture, the other
            # side of a many-to-many): a partitioned list holds on its partition and the
            # bulk channel, never the list channel, so only the bulk channel reaches every
            # partition (such a change woke no partitioned list, ORM probe).
            return [*names.channels_for_change(model, pks), names.bulk_channel(model)]
        return names.channels_for_change(model, pks, partitions if cls.realtime_partition else None)

    def get_hold_timeout(self) -> int:
        wait = parse_prefer_wait(self.request.META.get("HTTP_PREFER"))
        if wait is None:
            wait = int(grip_settings.HOLD_TIMEOUT)
        # Pushpin holds at least 5 s whatever Grip-Timeout says (PUSHPIN.md; the embedded
        # proxy does the same): a shorter timeout, from a HOLD_TIMEOUT_MIN set lower, was
        # echoed in Preference-Applied while the client was held 5 s.
        low = max(int(grip_settings.HOLD_TIMEOUT_MIN), MIN_HOLD_TIMEOUT)
        return min(max(wait, low), max(low, int(grip_settings.HOLD_TIMEOUT_MAX)))

    def get_etag(self, content: bytes) -> str:
        return make_etag(content)
