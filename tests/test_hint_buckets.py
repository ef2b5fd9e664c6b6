"""Hint buckets: many private holds of one channel are hinted a bucket at a time, so the
proxy never re-requests them all at once (PUSHPIN.md, "Hint storms")."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import transaction

from tests.drf_helpers import ProxiedClient, RecordingSink
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared_cache(settings, tmp_path, monkeypatch):
    # The buckets' clock stands still unless a test moves it (``later``).
    later(monkeypatch, 0)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    settings.DRF_GRIP = {"HINT_BUCKETS": 8, "HINT_BUCKET_SIZE": 3}
    cache.clear()


def held_responses(count: int, start: int = 0, *, identical: bool = False) -> list:
    """``count`` different clients (``start`` names the first) each hold ``/api/todos/``;
    ``identical``: ``count`` connections of one client, sending the same request."""
    client = ProxiedClient()
    etag = client.get("/api/todos/")["ETag"]
    out = []
    for number in range(start, start + count):
        extra = {} if identical else {"HTTP_X_CLIENT": f"client-{number}"}
        response = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag, **extra)
        assert response.status_code == 304 and response["Grip-Hold"] == "response"
        out.append(response)
    return out


def held_channels(count: int, start: int = 0, *, identical: bool = False) -> list[str]:
    return [
        r["Grip-Channel"].split(";")[0]
        for r in held_responses(count, start, identical=identical)
    ]


def test_holds_fill_buckets_in_order_and_are_hinted_one_bucket_at_a_time(shared_cache):
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()  # its publish confirmed: every hold below counts at one version
        channels = held_channels(10)
        assert channels == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"] * 3 + [
            "drf.testapp.todo~b2"
        ] * 3 + ["drf.testapp.todo~b3"]
        sink.settle()  # nothing of the holds' setup still on its way
        Todo.objects.create(title="b")
        hinted = [
            c for c in sink.channels()
            if c == "drf.testapp.todo" or c.startswith("drf.testapp.todo~b")
        ]
    assert hinted == [
        "drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2", "drf.testapp.todo~b3"
    ]


def test_few_holds_keep_the_plain_channel(shared_cache):
    with RecordingSink():
        Todo.objects.create(title="a")
        assert set(held_channels(3)) == {"drf.testapp.todo"}


def test_a_process_that_never_saw_the_holds_hints_every_bucket(settings, monkeypatch):
    """A per-process cache: a shell publishing for runserver has no counts, so it hints
    every bucket at once rather than miss the clients past the first."""
    from drf_grip.rest import buckets
    from drf_grip.rest.buckets import bucket_channels

    settings.DRF_GRIP = {"HINT_BUCKETS": 4, "HINT_BUCKET_SIZE": 1}
    cache.clear()
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        held_channels(3)  # records the policy and spreads 3 holds over 3 buckets
        sink.settle()
        # Now play the shell: no counts, and this process never counted a hold.
        cache.delete_many([k.split(":", 2)[2] for k in list(cache._cache) if "holds" in k])
        monkeypatch.setattr(buckets, "_counts_holds_here", False)
        Todo.objects.create(title="b")
        hinted = [
            c
            for c in sink.channels()
            if c == "drf.testapp.todo" or c.startswith("drf.testapp.todo~b")
        ]
    assert (
        hinted
        == bucket_channels("drf.testapp.todo", None)
        == ["drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2", "drf.testapp.todo~b3"]
    )


def test_the_serving_process_of_a_per_process_cache_hints_only_buckets_in_use(settings):
    """With a per-process cache the process that counts the holds is the one origin process
    (README: a per-process cache is right for one process only), so a change after a quiet
    period hints the buckets its holds took, not every bucket: with 64 buckets, every PATCH
    of a private view once published 128 hints, at 0.45x the throughput of the view
    without the mixin (bench/run.py --extras)."""
    settings.DRF_GRIP = {"HINT_BUCKETS": 6, "HINT_BUCKET_SIZE": 1}
    cache.clear()
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        assert held_channels(3) == [
            "drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2"
        ]
        sink.settle()
        Todo.objects.create(title="b")  # wakes the three; none holds again
        sink.settle()
        Todo.objects.create(title="c")  # nobody counted at this version
        hinted = [
            c for c in sink.channels()
            if c == "drf.testapp.todo" or c.startswith("drf.testapp.todo~b")
        ]
    assert hinted == ["drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2"]


def held_on(response, prefix: str) -> list[str]:
    """The channels a hold names that start with ``prefix``."""
    return [c.split(";")[0].strip() for c in response["Grip-Channel"].split(",")
            if c.strip().startswith(prefix)]


#: Where the buckets' wall clock stands still in these tests: the start of a window.
_STILL = 55.0 * 3600 * 24 * 365  # HOLD_TIMEOUT (55) divides it


def later(monkeypatch, seconds: float) -> None:
    """The buckets' clock stopped ``seconds`` after where the ``shared_cache`` fixture
    stops it, the start of a window of the wall clock (more than the hold timeout: a hold
    timed out in between)."""
    from drf_grip.rest import buckets

    monkeypatch.setattr(buckets, "time", SimpleNamespace(
        time=lambda: _STILL + seconds, monotonic=time.monotonic, sleep=time.sleep))


def test_a_client_that_holds_again_after_a_timeout_keeps_its_bucket(shared_cache, monkeypatch):
    """Clients that reconnect while nothing changes (their holds timed out) are counted
    once: they neither move to later buckets nor make the publisher pace through buckets
    nobody holds."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        first = held_channels(4)
        later(monkeypatch, 60)  # HOLD_TIMEOUT is 55 s
        again = held_channels(4)
        later(monkeypatch, 120)
        assert first == again == held_channels(4)
        assert first == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"]
        sink.settle()
        Todo.objects.create(title="b")
        hinted = [c for c in sink.channels() if c.startswith("drf.testapp.todo~b")]
    assert hinted == ["drf.testapp.todo~b1"]


def test_a_client_that_holds_again_after_its_answer_keeps_its_bucket(shared_cache):
    """Every private long-poll loop: after a change the proxy's re-request is answered with
    the new representation, and the client asks again at once, at the same version. Counted
    twice there, each client took two places, buckets half full, and the publisher waited
    out the empty halves (``bench/run.py --cases grip-priv-pp --rounds 2``: the second round
    delivered 879 of 1,000)."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        held = held_responses(4)
        sink.settle()
        Todo.objects.create(title="b")
        sink.settle()
        client = ProxiedClient()
        etag = client.get("/api/todos/")["ETag"]
        again = []
        for number, response in enumerate(held):
            extra = {"HTTP_X_CLIENT": f"client-{number}"}
            name = response["Grip-Channel"].split(";")[0]
            answered = client.get("/api/todos/", HTTP_IF_NONE_MATCH=response["ETag"],
                                  HTTP_GRIP_LAST=f"{name}; last-id=1", **extra)
            assert answered.status_code == 200
            holds = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag, **extra)
            assert holds.status_code == 304
            again.append(holds["Grip-Channel"].split(";")[0])
        assert again == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"]
        assert held_channels(1, start=9) == ["drf.testapp.todo~b1"]  # the fifth client


def test_re_requests_held_again_count_at_the_new_version(shared_cache):
    """A change to one user's note hints every hold of ``/api/notes/`` (no partition), and
    the other users' re-requests render what they hold and are held again. Not counted at
    the new version, the next change would find none of them there and pace nothing: all
    their buckets hinted at once."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from tests.testapp.models import Note

    users = [get_user_model().objects.create_user(f"reader-{i}") for i in range(8)]
    auths = [f"Token {Token.objects.create(user=u).key}" for u in users]
    client = ProxiedClient()

    def hold(auth: str, **extra: str):
        etag = client.get("/api/notes/", HTTP_AUTHORIZATION=auth)["ETag"]
        response = client.get("/api/notes/", HTTP_IF_NONE_MATCH=etag, HTTP_AUTHORIZATION=auth,
                              **extra)
        assert response.status_code == 304 and response["Grip-Hold"] == "response"
        return held_on(response, "drf.testapp.note")[0]

    with RecordingSink() as sink:
        Note.objects.create(owner=users[0], text="a")
        sink.settle()
        held = [hold(auth) for auth in auths[:7]]
        assert held == ["drf.testapp.note"] * 3 + ["drf.testapp.note~b1"] * 3 + [
            "drf.testapp.note~b2"
        ]
        sink.settle()
        Note.objects.create(owner=users[7], text="b")  # none of the seven sees it
        sink.settle()
        again = [hold(auth, HTTP_GRIP_LAST=f"{name}; last-id=1")
                 for auth, name in zip(auths, held)]
        assert again == held
        assert hold(auths[7]) == "drf.testapp.note~b2"  # the eighth, after the seven


def test_identical_connections_held_again_still_pace_their_buckets(shared_cache):
    """One token on seven connections of ``/api/notes/``; a change another user's view
    shows hints them all and each is held again. Identical, they are counted once there;
    the next change must still know seven holds, or its pacer hints every bucket at once."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from drf_grip.rest import buckets
    from drf_grip.rest.versions import hold_versions
    from tests.testapp.models import Note

    reader, writer = (get_user_model().objects.create_user(n) for n in ("tabs", "writer"))
    auth = f"Token {Token.objects.create(user=reader).key}"
    client = ProxiedClient()
    with RecordingSink() as sink:
        Note.objects.create(owner=reader, text="a")
        sink.settle()
        etag = client.get("/api/notes/", HTTP_AUTHORIZATION=auth)["ETag"]
        held = [client.get("/api/notes/", HTTP_IF_NONE_MATCH=etag, HTTP_AUTHORIZATION=auth)
                for _ in range(7)]
        sink.settle()
        Note.objects.create(owner=writer, text="b")  # not in the reader's view
        sink.settle()
        for response in held:
            name = held_on(response, "drf.testapp.note")[0]
            again = client.get("/api/notes/", HTTP_IF_NONE_MATCH=etag, HTTP_AUTHORIZATION=auth,
                               HTTP_GRIP_LAST=f"{name}; last-id=1")
            assert again.status_code == 304 and again["Grip-Hold"] == "response"
        version = hold_versions(["drf.testapp.note"])["drf.testapp.note"]
        assert buckets._held("drf.testapp.note", version) == 7


def test_the_proxys_re_request_of_a_hold_keeps_its_bucket(shared_cache):
    """Pushpin re-sends a held request, with ``Grip-Last`` naming the channel and prev-id
    the hold named, about a second after a channel's first subscription (PUSHPIN.md): that
    is the same client, not a new one."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        client = ProxiedClient()
        etag = client.get("/api/todos/")["ETag"]
        for number, response in enumerate(held_responses(4)):
            again = client.get(
                "/api/todos/",
                HTTP_IF_NONE_MATCH=etag,
                HTTP_X_CLIENT=f"client-{number}",
                HTTP_GRIP_LAST=response["Grip-Channel"].replace("prev-id", "last-id"),
            )
            assert again["Grip-Channel"] == response["Grip-Channel"]
        assert held_channels(1, start=9) == ["drf.testapp.todo~b1"]  # the fifth client


def test_the_proxys_re_requests_of_identical_connections_keep_their_buckets(shared_cache):
    """Pushpin's first-subscription retry of each of one token's connections: counted as
    new clients, 300 holds took 12 buckets and the publisher waited out each half-empty
    one (``bench/run.py --cases grip-same-pp``)."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        client = ProxiedClient()
        etag = client.get("/api/todos/")["ETag"]
        held = held_responses(7, identical=True)
        for response in held:
            again = client.get(
                "/api/todos/",
                HTTP_IF_NONE_MATCH=etag,
                HTTP_GRIP_LAST=response["Grip-Channel"].replace("prev-id", "last-id"),
            )
            assert again.status_code == 304
            assert again["Grip-Channel"].split(";")[0] == response["Grip-Channel"].split(";")[0]
        assert held_channels(2, identical=True) == ["drf.testapp.todo~b2"] * 2  # 8th, 9th


def test_identical_requests_on_many_connections_fill_buckets_in_order(shared_cache):
    """One token on many screens, or anonymous clients that send the same headers: each
    connection is a client of its own. Counted as one, 150 of them were all hinted at once
    and Pushpin answered 45 of them ``502`` (tests/integration/test_hint_storms.py)."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        channels = held_channels(7, identical=True)
        assert channels == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"] * 3 + [
            "drf.testapp.todo~b2"
        ]
        sink.settle()
        Todo.objects.create(title="b")
        hinted = [
            c for c in sink.channels()
            if c == "drf.testapp.todo" or c.startswith("drf.testapp.todo~b")
        ]
    assert hinted == ["drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2"]


def test_identical_requests_arriving_across_a_minute_fill_buckets_in_order(
    shared_cache, monkeypatch
):
    """Identical requests took slots per hold-timeout window of the wall clock: a burst that
    crossed a window's end started again at the first slot, its later half went to the
    first buckets and they held twice their size. Through Pushpin the first bucket took 100
    of 150, its hint re-requested them at once and the third bucket was never hinted
    (``tests/integration/test_hint_storms.py``, 1 run in 30 and once in CI)."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        later(monkeypatch, 54)  # HOLD_TIMEOUT is 55 s: one second before a wall-clock window ends
        first = held_channels(4, identical=True)
        later(monkeypatch, 56)
        second = held_channels(4, identical=True)
    assert first + second == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"] * 3 + [
        "drf.testapp.todo~b2"
    ] * 2


def test_identical_event_streams_keep_one_bucket(shared_cache):
    """Identical streams hold one next link, which Pushpin fetches once for all of them
    while their ``Grip-Last`` is the same (auto-share): spread over buckets, each bucket
    would cost a fetch and a render of its own."""
    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        client = ProxiedClient()
        held = []
        for _ in range(7):
            response = client.get("/api/todos/", HTTP_ACCEPT="text/event-stream")
            assert response["Grip-Hold"] == "stream"
            held += held_on(response, "drf.testapp.todo")
        assert held == ["drf.testapp.todo"] * 7
        assert held_channels(1) == ["drf.testapp.todo"]  # a long-poll: the second client


def test_a_bucket_counted_at_an_older_version_is_still_hinted(shared_cache):
    """A hold names the last id the proxy confirmed, which lags the counter while a publish
    is on its way: it is counted at that older version. The publisher counts at the
    counter; the hold's bucket must be hinted all the same (a gateway-free SSE subscriber
    of the multi-process test once kept an old representation)."""
    from drf_grip.rest import channels as names
    from drf_grip.rest.versions import next_version

    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        assert held_channels(4) == ["drf.testapp.todo"] * 3 + ["drf.testapp.todo~b1"]
        sink.settle()
        next_version(names.list_channel(Todo))  # a publish not yet confirmed by the proxy
        Todo.objects.create(title="b")
        hinted = [c for c in sink.channels() if c.startswith("drf.testapp.todo~b")]
    assert hinted == ["drf.testapp.todo~b1"]


def test_gateway_subscriptions_and_their_re_renders_are_not_counted_as_holds(shared_cache):
    """A private gateway subscription is delivered by the publisher's re-render, never by a
    hint, yet its subscribe and every re-render of it counted as a hold of the list's
    channel: the long-polls that came after them were put in later buckets, hinted only
    after the publisher paced through the first (the large soak's long-polls waited behind
    its gateway subscriptions)."""
    from drf_grip.rest.change_worker import wait_idle
    from drf_grip.test import WebSocketTestClient

    with RecordingSink() as sink:
        Todo.objects.create(title="a")
        sink.settle()
        sockets = [WebSocketTestClient().connect("/api/ws/") for _ in range(4)]
        for ws in sockets:
            ws.send_json({"id": 1, "subscribe": "/api/todos/"})
            assert ws.receive_json()["status"] == 200
        Todo.objects.create(title="b")  # re-renders the four subscriptions
        assert wait_idle(10)
        for ws in sockets:
            assert [t["title"] for t in ws.receive_json()["data"]["results"]] == ["b", "a"]
        sink.settle()
        assert held_channels(3) == ["drf.testapp.todo"] * 3


def test_a_change_of_many_objects_reads_their_hold_counts_at_once(shared_cache, monkeypatch):
    """Each hinted object channel read its hold count and its bucket marks in two round
    trips of its own: a burst of writes naming 50 objects cost 100 more round trips, and
    the publisher's pass (on a busy machine, a round trip is milliseconds) took seconds in
    the large soak. Now two for all of them, and a mark per channel says whether to look
    at its buckets' marks at all."""
    from drf_grip.rest import buckets

    with RecordingSink() as sink:
        todos = Todo.objects.bulk_create(Todo(title=f"t{i}") for i in range(50))
        held_channels(1)  # somebody watches the list
        sink.settle()
        reads, keys_read = [], []
        real = buckets.state_cache

        class Counting:
            def __init__(self, cache):
                self.cache = cache

            def __getattr__(self, name):
                if name == "get_many":
                    return lambda keys, *a, **k: (keys_read.extend(keys), reads.append(name),
                                                  self.cache.get_many(keys, *a, **k))[-1]
                if name == "get":
                    reads.append(name)
                return getattr(self.cache, name)

        monkeypatch.setattr(buckets, "state_cache", lambda: Counting(real()))
        with transaction.atomic():
            for todo in todos:
                todo.title += "!"
                todo.save()
        hinted = {c for c in sink.channels() if c.startswith("drf.testapp.todo")}
    assert len(hinted) == 51  # the list and each object
    assert len(reads) <= 2
    # Per channel its hold count, its re-requests back and one bucket mark; not the marks
    # of every bucket of every channel (8 buckets here, 64 by default).
    assert len(keys_read) <= 3 * len(hinted)


def test_many_holds_of_one_partition_are_hinted_a_bucket_at_a_time(shared_cache):
    """Convergence probe behind Pushpin: 150 long-polls of one user's partitioned notes
    (``realtime_partition = "owner"``; a tenant's or a board's partition is as busy) were
    all hinted at once, partition channels being left out of the buckets, and Pushpin
    answered a third of them ``502`` without asking the origin (PUSHPIN.md, "Hint storms")."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from drf_grip.rest import channels as names
    from tests.testapp.models import Note

    owner = get_user_model().objects.create_user("carol")
    auth = f"Token {Token.objects.create(user=owner).key}"
    partition = names.partition_channel(Note, str(owner.pk))
    with RecordingSink() as sink:
        Note.objects.create(owner=owner, text="a")
        sink.settle()
        client = ProxiedClient()
        etag = client.get("/api/pnotes/", HTTP_AUTHORIZATION=auth)["ETag"]
        held = []
        for number in range(7):
            response = client.get("/api/pnotes/", HTTP_IF_NONE_MATCH=etag,
                                  HTTP_AUTHORIZATION=auth, HTTP_X_CLIENT=f"tab-{number}")
            assert response.status_code == 304 and response["Grip-Hold"] == "response"
            held.append(held_on(response, partition))
        assert [[c.strip() for c in h] for h in held] == [[partition]] * 3 + [
            [f"{partition}~b1"]
        ] * 3 + [[f"{partition}~b2"]]
        sink.settle()
        Note.objects.create(owner=owner, text="b")
        hinted = [c for c in sink.channels() if c.startswith(partition)]
    assert hinted == [partition, f"{partition}~b1", f"{partition}~b2"]
