"""Settings a Django developer gets wrong, seen through a real GRIP proxy: a value drf-grip
cannot use is reported by ``manage.py check`` (drf_grip.E002) and, in a process that runs no
checks, replaced by its default; neither it nor a cache that keeps nothing leaves held
clients without their changes."""

from __future__ import annotations

import uuid

import pytest
from django.test import override_settings

from drf_grip.testing.proxies import ProxyUnderTest
from tests.testapp.models import Todo

from .test_realtime import WITHIN, get, hold, obj_ch, shared_ch

pytestmark = pytest.mark.django_db(transaction=True)

_DUMMY = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}


def test_a_negative_live_url_timeout_still_wakes_a_shared_long_poll(
    grip_proxy: ProxyUnderTest,
) -> None:
    """``LIVE_URL_TIMEOUT = -1000`` made every live URL's listing expire as it was written
    (a negative cache timeout deletes): a held shared long-poll never woke."""
    word = uuid.uuid4().hex[:8]
    Todo.objects.create(title=f"one {word}")
    path = f"/api/shared-todos/?search={word}"
    with override_settings(DRF_GRIP={"LIVE_URL_TIMEOUT": -1000}):
        poll = hold(grip_proxy, path, shared_ch(grip_proxy, "/api/shared-todos/", search=word))
        Todo.objects.create(title=f"two {word}")
        response = poll.result(WITHIN)
    assert response.status_code == 200 and response.json()["count"] == 2


def test_a_dummy_cache_still_wakes_a_shared_long_poll(grip_proxy: ProxyUnderTest) -> None:
    """``CACHES`` with Django's DummyCache ("caching off in development") kept no version
    and no live URL: a held shared long-poll on the embedded proxy never woke."""
    word = uuid.uuid4().hex[:8]
    Todo.objects.create(title=f"one {word}")
    path = f"/api/shared-todos/?search={word}"
    with override_settings(CACHES=_DUMMY):
        poll = hold(grip_proxy, path, shared_ch(grip_proxy, "/api/shared-todos/", search=word))
        Todo.objects.create(title=f"two {word}")
        response = poll.result(WITHIN)
    assert response.status_code == 200 and response.json()["count"] == 2


def test_a_version_cache_alias_missing_from_caches_still_wakes_a_long_poll(
    grip_proxy: ProxyUnderTest,
) -> None:
    """``DRF_GRIP = {"VERSION_CACHE": "realtime"}`` with no such alias in CACHES passed
    ``manage.py check``, and the held long-poll never woke: every publish failed in the
    publisher thread (InvalidCacheBackendError). The check now names it (drf_grip.E002) and
    a process that runs no checks uses the default cache."""
    todo = Todo.objects.create(title=f"one {uuid.uuid4().hex[:8]}")
    with override_settings(DRF_GRIP={"VERSION_CACHE": "realtime"}):
        answer = get(grip_proxy, f"/api/todos/{todo.pk}/")
        poll = hold(grip_proxy, f"/api/todos/{todo.pk}/", obj_ch(todo), etag=answer.headers["ETag"])
        todo.title = "two"
        todo.save()
        response = poll.result(WITHIN)
    assert answer.status_code == 200 and response.json()["title"] == "two"
