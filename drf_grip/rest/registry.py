"""Which models and views are live.

A realtime view registers its model when its class is created; ``register()`` adds models
whose changes wake other resources (a new Comment changes its Post). The registry is read by
changes.py, which records the changes of these models, and by the system checks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.signals import post_init

from ..conf import grip_settings
from .relations import remember_keys

__all__ = [
    "affects_of",
    "ensure_loaded",
    "gateway_views",
    "is_registered",
    "partition_views",
    "realtime_views",
    "register",
    "register_gateway",
    "register_live_model",
    "register_view",
    "remember_partitions",
    "shared_views",
    "through_relation",
    "views_for",
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
                remember_partitions,
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


def ensure_loaded() -> None:
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
    ensure_loaded()
    return model in _views or model in _explicit


def views_for(model: type[models.Model]) -> list[type]:
    ensure_loaded()
    return list(_views.get(model, ()))


def affects_of(model: type[models.Model]) -> list[Related]:
    """The ``affects`` functions ``register()`` gave ``model``."""
    return _related.get(model, [])


def partition_views(model: type[models.Model]) -> list[type]:
    """The views of ``model`` that say which partition a subscriber reads."""
    return [v for v in _views.get(model, ()) if getattr(v, "realtime_partition", None)]


def through_relation(view: type) -> str | None:
    """The attribute of the relation that a view's ``realtime_partition`` path goes through
    (``project_id`` for ``"project__owner"``), when the default hook follows it."""
    relation_key = getattr(view, "_partition_relation_key", None)
    return relation_key() if relation_key is not None else None


def remember_partitions(sender, instance, **kwargs) -> None:
    """What a loaded instance's partitions were, to wake them too if a change moves it.
    A path through a relation (``project__owner``) is not followed here, which would cost a
    query per object of every list read (DRF probe): the relation's key is kept, and the
    partitions it names are read if the object changes (``changes._as_loaded``)."""
    if instance.pk is None:
        return
    out: set[str] = set()
    keys: dict[str, Any] = {}
    for view in partition_views(sender):
        key = through_relation(view)
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


def register_gateway(view_class: type) -> None:
    """Record that the URLconf serves ``view_class``, a WebSocket gateway."""
    with _lock:
        if view_class not in _gateways:
            _gateways.append(view_class)


def gateway_views() -> list[type]:
    """Gateway view classes of the URLconf (for system checks and warnings)."""
    ensure_loaded()
    return list(_gateways)


def realtime_views() -> list[type]:
    """Realtime view classes of the URLconf (for system checks)."""
    ensure_loaded()
    return [view for views in list(_views.values()) for view in views]


def shared_views() -> list[type]:
    """Realtime view classes whose class-level delivery is shared (for system checks)."""
    ensure_loaded()
    default = grip_settings.DEFAULT_DELIVERY
    return [
        view
        for views in list(_views.values())
        for view in views
        if (getattr(view, "realtime_delivery", None) or default) == "shared"
    ]
