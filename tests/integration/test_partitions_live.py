"""Partitions through a real proxy: a change to one user's note re-requests only that
user's held clients (DESIGN.md §3), over long-poll; the others stay held."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authtoken.models import Token

from drf_grip.rest import channels as names
from tests.testapp import hook_views
from tests.testapp.models import Note

from .test_realtime import WITHIN, hold, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_change_wakes_only_its_partition(embedded_proxy) -> None:
    """Counted on the embedded proxy (Pushpin re-requests every client of a new channel
    about a second after its first subscription, PUSHPIN.md, which would blur the count)."""
    from django.test import override_settings

    cache.clear()
    with override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None):
        users = [get_user_model().objects.create_user(f"p{i}") for i in range(40)]
        headers = [{"Authorization": f"Token {Token.objects.create(user=u).key}"} for u in users]
        polls = [
            hold(embedded_proxy, "/api/pnotes/", names.partition_channel(Note, str(u.pk)), h)
            for u, h in zip(users, headers)
        ]
        hook_views.seen_requests.clear()
        Note.objects.create(owner=users[7], text="only mine")
        response = polls[7].result(WITHIN)
        settle()
        assert [n["text"] for n in response.json()] == ["only mine"]
        assert {auth for path, auth in hook_views.seen_requests if path == "/api/pnotes/"} == {
            headers[7]["Authorization"]
        }
        assert not any(p.done for i, p in enumerate(polls) if i != 7)


def test_partitioned_holds_wake_through_pushpin(grip_pushpin) -> None:
    cache.clear()
    alice, bob = (get_user_model().objects.create_user(n) for n in ("alice", "bob"))
    a = {"Authorization": f"Token {Token.objects.create(user=alice).key}"}
    b = {"Authorization": f"Token {Token.objects.create(user=bob).key}"}
    alice_poll = hold(grip_pushpin, "/api/pnotes/", names.partition_channel(Note, str(alice.pk)), a)
    bob_poll = hold(
        grip_pushpin,
        "/api/pnotes/",
        names.partition_channel(Note, str(bob.pk)),
        {**b, "Prefer": "wait=5"},
    )
    Note.objects.create(owner=alice, text="alice's")
    assert [n["text"] for n in alice_poll.result(WITHIN).json()] == ["alice's"]
    assert bob_poll.result(15).status_code == 304


def test_the_embedded_proxy_paces_its_re_requests(embedded_proxy, monkeypatch) -> None:
    """One change to a private list held by many clients: the embedded proxy re-requests
    them a few at a time (``GripProxy.max_rerequests``), not all at once (issue 10); every
    client still gets the change."""
    from django.test import override_settings

    from tests.testapp.models import Todo

    from .test_realtime import get

    proxy = embedded_proxy.proxy
    monkeypatch.setattr(proxy, "max_rerequests", 3, raising=False)
    monkeypatch.setattr(proxy, "_rerequests", None, raising=False)
    counting = _InFlight(
        proxy.app, lambda scope: any(n == b"grip-last" for n, _ in scope.get("headers", ()))
    )
    monkeypatch.setattr(proxy, "app", counting)
    cache.clear()
    with override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None,
                           DRF_GRIP={"HINT_BUCKETS": 1}):
        Todo.objects.create(title="first")
        channel = names.list_channel(Todo)
        polls = [hold(embedded_proxy, "/api/todos/", channel, {"X-Client": str(i)})
                 for i in range(30)]
        Todo.objects.create(title="second")
        answers = [poll.result(10) for poll in polls]
        settle()
    fresh = get(embedded_proxy, "/api/todos/")
    assert all(a.status_code == 200 and a.content == fresh.content for a in answers)
    assert 1 <= counting.peak <= 3


def test_the_embedded_proxy_gives_clients_requests_turns(embedded_proxy, monkeypatch) -> None:
    """Clients connecting together reach Django a few at a time
    (``GripProxy.max_origin_requests``), not each in a thread of its own at once (issue 10:
    46 KiB of process RSS per held long-poll at N = 1,000, 30 KiB with turns); each still
    gets its answer."""
    from concurrent.futures import ThreadPoolExecutor

    from django.test import override_settings

    from tests.testapp.models import Todo

    from .test_realtime import get

    proxy = embedded_proxy.proxy
    monkeypatch.setattr(proxy, "max_origin_requests", 3, raising=False)
    monkeypatch.setattr(proxy, "_origin_turns", None, raising=False)
    counting = _InFlight(
        proxy.app, lambda scope: scope["type"] == "http" and scope["path"] == "/api/todos/"
    )
    monkeypatch.setattr(proxy, "app", counting)
    with override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None):
        Todo.objects.create(title="first")
        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(lambda i: get(embedded_proxy, "/api/todos/", X_Client=str(i)),
                                    range(30)))
    assert [a.status_code for a in answers] == [200] * 30
    assert len({a.content for a in answers}) == 1
    assert 1 <= counting.peak <= 3


class _InFlight:
    """Wraps the proxy's origin app: counts the requests ``counted(scope)`` picks from their
    start to the end of their answer (Django's ASGI handler goes on with its clean-up after
    that, outside the proxy's turn) and keeps the peak."""

    def __init__(self, app, counted) -> None:
        self.app, self.counted = app, counted
        self.now = self.peak = 0
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if not self.counted(scope):
            await self.app(scope, receive, send)
            return
        answered = False

        def finish() -> None:
            nonlocal answered
            if not answered:
                answered = True
                with self.lock:
                    self.now -= 1

        async def counted_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finish()

        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, counted_send)
        finally:
            finish()
