"""Conditional writes that hold under concurrency.

A ``PATCH``/``PUT``/``DELETE`` with ``If-Match`` (or ``If-None-Match``) compares the
object's detail ETag and then writes. Checked and written apart, four clients that send the
same ``If-Match`` at once all pass the check and all get 200, three of them overwritten
(black-box probe: more than one 200 in 20 of 30 rounds behind Pushpin). RFC 9110 §13.1.1
makes ``If-Match`` exactly the guard against that lost update, so the check and the write
run in one transaction that first locks the object's row:

* with row locks (PostgreSQL, MySQL, Oracle), ``SELECT … FOR UPDATE`` on the row;
* SQLite has none: a write of the row to itself takes the database's write lock. It must be
  the transaction's first statement: a transaction that read first and then waits for the
  lock is refused at once (SQLite returns ``SQLITE_BUSY`` rather than risk a deadlock; see
  ``sqlite3_busy_handler``), which would turn a race into a 500.

So the lock is taken before DRF authenticates (authentication reads the database). The row
is found from the URL (``lookup_url_kwarg``/``lookup_field``) on the view's model, as
``get_object()`` will; a view with no model or no lookup in its URL keeps the unlocked check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import FieldError, ValidationError
from django.db import DatabaseError, connections, models, router, transaction
from django.db.models import F

__all__ = ["row_lock", "guards_write", "lookup_of", "model_named_by", "writes_one_object"]

_WRITES = frozenset({"PUT", "PATCH", "DELETE"})
_MIXINS = __name__.rpartition(".")[0] + ".mixins"


def lookup_of(view: Any) -> tuple[str, str]:
    """``(lookup_field, URL kwarg)`` of a detail URL, as DRF's ``get_object()`` and routers
    read them; a plain ``ViewSet`` or ``APIView`` declares neither (its routes use
    ``pk``)."""
    field = getattr(view, "lookup_field", None) or "pk"
    return field, getattr(view, "lookup_url_kwarg", None) or field


def guards_write(request: Any) -> bool:
    """A write that carries a precondition (``If-Match``, even empty, or ``If-None-Match``)."""
    meta = request.META
    return request.method in _WRITES and (
        meta.get("HTTP_IF_MATCH") is not None or bool(meta.get("HTTP_IF_NONE_MATCH"))
    )


def writes_one_object(view: Any, request: Any) -> bool:
    """Whether ``view`` handles this write and its URL names the object it changes, whose
    detail ETag a precondition compares: a lookup in the URL, or a ``get_object()`` of the
    view's own (``/api/me/``). A PATCH of a list URL is DRF's 405 with or without the header
    (its precondition asked ``get_object()``, which asserted: a 500, hostile-input probe),
    and a list-level action names no one object."""
    from rest_framework.generics import GenericAPIView

    method = request.method.lower()
    if method not in view.http_method_names or getattr(view, method, None) is None:
        return False
    # The realtime mixins' own get_object() only notes the object's pk (rest/mixins.py).
    definer = next(
        (
            klass
            for klass in type(view).__mro__
            if "get_object" in vars(klass) and klass.__module__ != _MIXINS
        ),
        None,
    )
    if definer is None:
        return False  # a plain APIView or ViewSet: no object to look up
    if definer is not GenericAPIView:
        return True
    return lookup_of(view)[1] in view.kwargs


def model_named_by(view_class: type) -> type[models.Model] | None:
    """The model a view class's ``queryset`` (DRF allows a plain list, which has none) or
    its serializer's ``Meta`` names: class attributes only, no request needed."""
    model = getattr(getattr(view_class, "queryset", None), "model", None)
    if model is None:
        meta = getattr(getattr(view_class, "serializer_class", None), "Meta", None)
        model = getattr(meta, "model", None)
    return model if isinstance(model, type) and issubclass(model, models.Model) else None


def _object_model(view: Any) -> type[models.Model] | None:
    """The model of the objects ``get_object()`` returns (the request is not authenticated
    yet); ``realtime_model``, the model whose changes wake the view, only when the view
    names no other."""
    model = model_named_by(type(view)) or getattr(view, "realtime_model", None)
    return model if isinstance(model, type) and issubclass(model, models.Model) else None


def row_lock(view: Any, kwargs: dict[str, Any]) -> tuple[str, Callable[[], None]] | None:
    """``(database alias, lock)`` for the row a conditional write of ``view`` targets, or
    None when it cannot be found from the URL. Call ``lock()`` first in a transaction."""
    model = _object_model(view)
    field, url_kwarg = lookup_of(view)
    if model is None or url_kwarg not in kwargs:
        return None
    using = router.db_for_write(model)
    value = kwargs[url_kwarg]

    def lock() -> None:
        try:
            # Inside the try: filter() itself refuses a value its field cannot take
            # ("abc" for an integer pk), which DRF's get_object() answers with 404.
            rows = model._base_manager.using(using).filter(**{field: value})
            with transaction.atomic(using=using):  # a savepoint: a failure leaves ours usable
                if connections[using].features.has_select_for_update:
                    list(rows.select_for_update().values_list("pk", flat=True))
                else:
                    pk = model._meta.pk.attname
                    rows.update(**{pk: F(pk)})
        except (ValueError, TypeError, ValidationError, FieldError, DatabaseError):
            pass  # a value the field refuses: the view answers it (404, 400) as before

    return using, lock
