"""Helpers for DRF-layer tests: a proxied client and a sink that records publishes."""

from __future__ import annotations

import collections
import threading
import time

import jwt
from django.db.models.signals import post_init
from rest_framework.test import APIClient

from drf_grip.conf import embedded_key
from drf_grip.grip.destinations import register_local_sink, unregister_local_sink
from drf_grip.grip.publisher import get_publisher
from drf_grip.rest.change_worker import wait_idle
from drf_grip.test import _as_the_proxy_keeps


def grip_sig() -> str:
    """A Grip-Sig as the embedded proxy signs it (trusted when no GRIP_URL is set)."""
    return jwt.encode({"iss": "drf-grip", "exp": int(time.time()) + 600}, embedded_key())


class ProxiedClient(APIClient):
    """An APIClient whose requests look as if a GRIP proxy forwarded them."""

    def generic(self, *args, **extra):
        extra.setdefault("HTTP_GRIP_SIG", grip_sig())
        # A held long-poll with the status the proxy answers (the origin holds it as a 200).
        return _as_the_proxy_keeps(super().generic(*args, **extra))


class RecordingSink:
    """Stands in for the embedded proxy: records every item published in this process
    that a client can receive (``silent`` has the others, which only move a proxy's
    sequence of a channel; ``everything`` both, in the order published)."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.silent: list[dict] = []
        self.everything: list[dict] = []
        self.lock = threading.Lock()

    def publish_items(self, items):
        from drf_grip.grip.items import reaches_clients

        with self.lock:
            self.everything.extend(items)
            for item in items:
                (self.items if reaches_clients(item) else self.silent).append(item)

    def settle(self) -> list[dict]:
        from drf_grip.rest.buckets import wait_paced

        assert wait_idle(10)
        assert wait_paced(10)  # hints of later buckets, sent from a pacer thread
        assert get_publisher().flush(10)
        with self.lock:
            items, self.items = self.items, []
        return items

    def channels(self) -> list[str]:
        return [item["channel"] for item in self.settle()]

    def __enter__(self):
        register_local_sink(self)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:  # nothing published after the test reaches a proxy that is not there
            self.settle()
        unregister_local_sink(self)


def revoke_during_the_next_notes_render(monkeypatch, user, note) -> None:
    """The next render of a notes view, once authenticated, deletes ``user``'s token and
    changes ``note`` to "more secret": a revocation and a commit between a render's
    authentication and its read of the data."""
    from rest_framework.authtoken.models import Token

    from tests.testapp.models import Note
    from tests.testapp.realtime_views import NoteViewSet

    real = NoteViewSet.get_queryset

    def revoked_while_rendering(view):
        if Token.objects.filter(user=user).exists():
            Token.objects.filter(user=user).delete()  # after this render authenticated
            Note.objects.filter(pk=note.pk).update(text="more secret")
        return real(view)

    monkeypatch.setattr(NoteViewSet, "get_queryset", revoked_while_rendering)


def loaded_before_the_urlconf(model, pk, dispatch_uid: str, receiver):
    """``model``'s object ``pk`` loaded as a shell or a Celery worker loads it before the
    URLconf's import: without drf-grip's ``post_init`` receiver ``dispatch_uid``, which the
    views (``realtime_partition``, ``register(..., affects=...)``) connect."""
    post_init.disconnect(sender=model, dispatch_uid=dispatch_uid)
    try:
        return model.objects.get(pk=pk)
    finally:
        post_init.connect(receiver, sender=model, weak=False, dispatch_uid=dispatch_uid)


CACHE_METHODS = ("get", "get_many", "set", "set_many", "add", "incr", "delete", "delete_many",
                  "touch")


class StateCacheCalls:
    """The state cache's outermost calls of ``methods`` on threads that ``where()`` accepts,
    as ``(method, keys)`` in ``calls`` (a ``get_many`` or ``set_many`` that the backend
    makes of ``get`` or ``set`` calls counts once)."""

    def __init__(self, monkeypatch, methods: tuple[str, ...], where=lambda: True) -> None:
        from drf_grip.rest.store import state_cache

        self.calls: list[tuple[str, list[str]]] = []
        depth = threading.local()
        cache_class = type(state_cache())
        for method in CACHE_METHODS:  # all of them: what one makes of others is not counted
            real = getattr(cache_class, method)

            def counted(cache, first, *args, _real=real, _method=method, **kwargs):
                outer = getattr(depth, "level", 0)
                if outer == 0 and _method in methods and where():
                    keys = [first] if isinstance(first, str) else list(first)
                    self.calls.append((_method, keys))
                depth.level = outer + 1
                try:
                    return _real(cache, first, *args, **kwargs)
                finally:
                    depth.level = outer

            monkeypatch.setattr(cache_class, method, counted)

    def keys_of(self, method: str) -> list[list[str]]:
        return [keys for name, keys in self.calls if name == method]

    def counted(self) -> collections.Counter[str]:
        """How many calls of each method."""
        return collections.Counter(name for name, _keys in self.calls)


class LaneReads(StateCacheCalls):
    """What the publisher's lanes (its per-destination threads) read from the state cache:
    ``single`` the key of each ``get``, ``batched`` the keys of each ``get_many``."""

    def __init__(self, monkeypatch) -> None:
        super().__init__(monkeypatch, ("get", "get_many"), where=lambda: (
            threading.current_thread().name.startswith("drf-grip publish to")
        ))

    @property
    def single(self) -> list[str]:
        return [keys[0] for keys in self.keys_of("get")]

    @property
    def batched(self) -> list[list[str]]:
        return self.keys_of("get_many")


def streamed_filtered_lists(count: int) -> list[str]:
    """``count`` live URLs of ``/api/shared-todos/`` (``?search=a``, ``aa``, ...), each with
    an SSE subscriber, the publisher at rest afterwards. A todo titled "a" is in none of
    them until :func:`change_every_filtered_list`."""
    client = ProxiedClient()
    urls = [f"/api/shared-todos/?search={'a' * (n + 1)}" for n in range(count)]
    for url in urls:
        assert client.get(url, HTTP_ACCEPT="text/event-stream").status_code == 200
    assert wait_idle(10) and get_publisher().flush(10)
    return urls


def change_every_filtered_list() -> None:
    """Rename the todos titled "a" so that each list of :func:`streamed_filtered_lists`
    changes, announce it, and wait until the publisher is at rest."""
    from drf_grip import publish_changes
    from tests.testapp.models import Todo

    Todo.objects.filter(title="a").update(title="a" * 12)
    publish_changes(Todo)
    assert wait_idle(10) and get_publisher().flush(10)
