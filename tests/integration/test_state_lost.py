"""The shared cache loses drf-grip's state (Redis flushed or restarted) while the Pushpins
hold clients: the multi-process deployment (``conftest.py``), a write from another process.

The held clients were recorded only in the cache (which views they came through, the live
URLs of shared views); each records again only when the proxy re-requests it. The first
change after the loss must still reach them, within one second (DESIGN.md §4)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from unittest.mock import patch
from urllib.parse import urlsplit

import httpx
import pytest

from drf_grip.rest import channels as names
from drf_grip.rest.live_urls import LiveUrl
from tests.integration.conftest import Deployment
from tests.integration.fleet import ROOT
from tests.integration.realtime_clients import EventStream, LongPoll
from tests.testapp.models import Todo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

WITHIN = 1.0

_WRITE = r"""
import json, sys
import django
django.setup()
from tests.testapp.models import Todo
plan = json.loads(sys.argv[1])
for pk in plan["pks"]:
    todo = Todo.objects.get(pk=pk)
    todo.title = plan["title"]
    todo.save()
print(json.dumps([Todo.objects.create(title=title).pk for title in plan["create"]]))
"""  # then exits: its publisher flushes before the process ends


def _write(deployment: Deployment, pks: list[int], title: str, create: list[str]) -> list[int]:
    """Retitle ``pks`` and create todos titled ``create`` from another process; the new pks."""
    plan = {"pks": pks, "title": title, "create": create}
    done = subprocess.run([sys.executable, "-c", _WRITE, json.dumps(plan)], check=True,
                          cwd=ROOT, env={**os.environ, **deployment.env}, timeout=60,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


_WAIT = {"Accept": "application/json", "Prefer": "wait=30"}


def _live(pushpin: Any, path: str, query: str = "") -> str:
    """The channel of a shared live URL reached through ``pushpin``."""
    return LiveUrl("http", urlsplit(pushpin.url).netloc, path, query, "application/json").channel


def _hold_three(deployment: Deployment) -> tuple[int, int, str, list[LongPoll]]:
    """Two fresh todos and three long-polls held through the first Pushpin: a private
    detail, a shared search list (both todos) and a shared detail (the second). Fresh
    objects and a fresh search make channels whose first subscription Pushpin re-requests
    (PUSHPIN.md), awaited here so that nothing records after what the test does next."""
    pushpin = deployment.pushpins[0]
    word = uuid.uuid4().hex[:8]
    first, second = _write(deployment, [], "", [f"{word} 0", f"{word} 1"])
    held = []
    for path, channel in (
        (f"/api/todos/{first}/", names.object_channel(Todo, first)),
        (f"/api/shared-todos/?search={word}",
         _live(pushpin, "/api/shared-todos/", f"search={word}")),
        (f"/api/shared-todos/{second}/", _live(pushpin, f"/api/shared-todos/{second}/")),
    ):
        etag = LongPoll(pushpin.url + path, {"Accept": "application/json"}).result(10).headers["ETag"]
        mark = pushpin.mark()
        held.append(LongPoll(pushpin.url + path, {**_WAIT, "If-None-Match": etag}))
        pushpin.wait_rerequested(channel, since=mark)
    return first, second, word, held


def _subscribe_each(stack: contextlib.ExitStack, url: str, paths: Iterable[str]) -> dict[str, Any]:
    """A gateway connection per path, each subscribed to it (id 1) and answered 200."""
    from websockets.sync.client import connect

    sockets = {}
    for path in paths:
        ws = stack.enter_context(connect(url, proxy=None, open_timeout=10))
        ws.send(json.dumps({"id": 1, "subscribe": path}))
        while True:  # a settle of an earlier change may come first
            answer = json.loads(ws.recv(timeout=10))
            if answer.get("id") == 1 and "event" not in answer:
                break
        assert answer["status"] == 200
        sockets[path] = ws
    return sockets


def test_the_first_change_after_the_cache_lost_its_records_reaches_held_clients(
    fresh_deployment: Deployment,
) -> None:
    """Seen with two workers, two Pushpins and a writer process: after a FLUSHALL the write
    published nothing at all, and every held long-poll and stream, private and shared, kept
    the old representation (a long-poll until its timeout, a stream until a later change
    found its records again, which a re-request of some other hold had to make first)."""
    deployment = fresh_deployment
    first, second, word, held = _hold_three(deployment)

    deployment.flush_state()
    _write(deployment, [first, second], f"{word} new", [f"{word} 2"])

    detail, shared, shared_detail = (poll.result(WITHIN) for poll in held)
    assert detail.status_code == 200 and detail.json()["title"] == f"{word} new"
    assert shared.status_code == 200 and shared.json()["count"] == 3
    assert shared_detail.status_code == 200 and shared_detail.json()["title"] == f"{word} new"


def test_holds_the_cache_lost_get_the_first_change_after_others_recorded_again(
    fresh_deployment: Deployment,
) -> None:
    """Redis restarted empty under writes (a probe past one machine, 9 of 13 runs): the
    first hold that recorded again after the loss made the records look whole, so the next
    changes rendered only the live URLs recorded since and reached none of the streams and
    long-polls held before (streams until a later change of their object). The first
    change of a model after such a loss re-requests every hold of that model once."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    other = uuid.uuid4().hex[:8]
    [third] = _write(deployment, [], "", [f"{other} 0"])
    first, second, word, held = _hold_three(deployment)

    deployment.flush_state()
    # Subscribers that come after the loss record again, in the worker processes.
    for path, channel in (
        (f"/api/todos/{third}/", names.object_channel(Todo, third)),
        (f"/api/shared-todos/?search={other}",
         _live(pushpin, "/api/shared-todos/", f"search={other}")),
    ):
        etag = httpx.get(pushpin.url + path, timeout=10).headers["ETag"]
        mark = pushpin.mark()
        LongPoll(pushpin.url + path, {**_WAIT, "If-None-Match": etag})  # held on
        pushpin.wait_rerequested(channel, since=mark)
    _write(deployment, [first, second], f"{word} new", [])  # a process of its own

    detail, shared, shared_detail = (poll.result(WITHIN) for poll in held)
    assert detail.status_code == 200 and detail.json()["title"] == f"{word} new"
    assert shared.status_code == 200 and f"{word} new" in shared.text
    assert shared_detail.status_code == 200 and shared_detail.json()["title"] == f"{word} new"


def test_a_stream_whose_state_the_cache_lost_ends_for_its_client_to_reconnect(
    fresh_deployment: Deployment,
) -> None:
    """The next link of a held stream names its state in the cache; after a flush the next
    change's fetch finds none. The stream ended with ``event: error``, which means "no
    longer allowed" (docs/sse.rst): drf-grip's live.js then reported a 403 and stopped the
    subscription for good, and so does the documented EventSource snippet. It ends with
    no event; the client reconnects with Last-Event-ID and gets the change."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word = uuid.uuid4().hex[:8]
    first, second = _write(deployment, [], "", [f"{word} 0", f"{word} 1"])
    host = urlsplit(pushpin.url).netloc
    paths = {
        f"/api/todos/{first}/": names.object_channel(Todo, first),
        f"/api/shared-todos/{second}/": LiveUrl("http", host, f"/api/shared-todos/{second}/", "",
                                                "application/json").channel,
    }
    streams: dict[str, tuple[EventStream, str]] = {}
    try:
        for path, channel in paths.items():
            mark = pushpin.mark()
            events = EventStream(pushpin.url + path)
            opened = events.next(5)
            assert events.status == 200 and opened is not None and opened.id
            streams[path] = (events, opened.id)
            pushpin.wait_subscribed(channel, since=mark)

        deployment.flush_state()
        _write(deployment, [first, second], f"{word} new", [])

        for path, (events, seen) in streams.items():
            assert events.next(WITHIN) is None, f"{path}: the stream did not simply end"
            again = EventStream(pushpin.url + path, {"Last-Event-ID": seen})
            streams[path] = (again, seen)
            event = again.next(WITHIN)
            assert event is not None and json.loads(event.data)["title"] == f"{word} new"
            events.close()
    finally:
        for events, _seen in streams.values():
            events.close()


@contextlib.contextmanager
def _redis_down(deployment: Deployment) -> Iterator[None]:
    """The deployment's redis-server killed, then started again on the same socket."""
    server = deployment.redis
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    server.socket_path.unlink(missing_ok=True)
    directory = server.dir
    try:
        yield
    finally:
        # In the same directory: the same socket, which the workers' settings name.
        with patch.object(server, "_make_dir", lambda: directory):
            server._launch()
        server._wait_ready()
        assert server.dir == directory


def _a_todo(deployment: Deployment) -> tuple[str, int, str, str]:
    """A new todo, written by another process: its title's word, pk, path and ETag."""
    word = uuid.uuid4().hex[:8]
    [pk] = _write(deployment, [], "", [f"{word} 0"])
    path = f"/api/todos/{pk}/"
    etag = httpx.get(deployment.pushpins[0].url + path, timeout=10).headers["ETag"]
    return word, pk, path, etag


def test_reads_through_the_proxy_while_the_cache_is_unreachable_are_answered(
    fresh_deployment: Deployment,
) -> None:
    """Redis down: every conditional GET, long-poll and stream through Pushpin answered
    500 (the hold path records, versions and lists in the cache); a plain GET worked. They
    are answered as a direct client's requests are (DESIGN.md §1), and held again once
    Redis is back."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, etag = _a_todo(deployment)
    with _redis_down(deployment):
        stale = httpx.get(pushpin.url + path, headers={"If-None-Match": '"old"'}, timeout=10)
        assert stale.status_code == 200 and stale.json()["title"] == f"{word} 0"
        current = httpx.get(pushpin.url + path, headers={"If-None-Match": etag}, timeout=10)
        assert current.status_code == 304
        events = EventStream(pushpin.url + "/api/shared-todos/")
        try:
            assert events.status == 200
            first = events.next(5)
            assert first is not None and json.loads(first.data)["count"] >= 1
        finally:
            events.close()
    # Redis is back (empty): the same long-poll is held again, and gets the next change.
    mark = pushpin.mark()
    poll = LongPoll(pushpin.url + path, {"If-None-Match": etag, "Prefer": "wait=30"})
    pushpin.wait_subscribed(names.object_channel(Todo, pk), since=mark)
    _write(deployment, [pk], f"{word} new", [])
    assert poll.result(WITHIN).json()["title"] == f"{word} new"


def test_a_current_long_poll_while_the_cache_is_unreachable_is_held_not_looped(
    fresh_deployment: Deployment,
) -> None:
    """Redis down: a long-poll with the current ETag through Pushpin was answered 304 at
    once, as a direct client's is, and came straight back: every watching client a request
    loop on the origin for as long as the outage lasted. It is held briefly on its channels
    (without the versions the cache keeps), then answered 304."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    _word, pk, path, etag = _a_todo(deployment)
    with _redis_down(deployment):
        mark = pushpin.mark()
        poll = LongPoll(pushpin.url + path, {"If-None-Match": etag})
        pushpin.wait_subscribed(names.object_channel(Todo, pk), since=mark)
        answer = poll.result(15)
        assert answer.status_code == 304 and answer.headers["ETag"] == etag


def test_a_change_committed_while_the_cache_is_unreachable_reaches_held_clients(
    fresh_deployment: Deployment,
) -> None:
    """A write through a worker while Redis is down succeeds, but its publish failed (the
    publisher reads the cache) and was dropped: a client held since before the outage kept
    the old representation after Redis came back. It is published once the cache answers."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, etag = _a_todo(deployment)
    mark = pushpin.mark()
    poll = LongPoll(pushpin.url + path, {"If-None-Match": etag, "Prefer": "wait=30"})
    pushpin.wait_rerequested(names.object_channel(Todo, pk), since=mark)
    with _redis_down(deployment):
        written = httpx.patch(pushpin.url + path, json={"title": f"{word} new"}, timeout=10)
        assert written.status_code == 200
    assert poll.result(WITHIN + 1.0).json()["title"] == f"{word} new"


def test_the_gateway_says_when_the_cache_is_unreachable(fresh_deployment: Deployment) -> None:
    """Redis down: a gateway handshake through Pushpin answered 500, and a message on a
    connection opened before it was dropped without a word (multi-process probe). A new
    connection is refused with 503 and an open one closed with 1013 (Try Again Later),
    which clients retry; once Redis is back the gateway answers again."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = fresh_deployment.pushpins[0].ws_url + "/api/ws/"
    ask = json.dumps({"id": 1, "method": "GET", "url": "/api/todos/"})
    with connect(url, proxy=None, open_timeout=10) as opened:
        opened.send(ask)
        assert json.loads(opened.recv(timeout=10))["status"] == 200
        with _redis_down(fresh_deployment):
            with pytest.raises(InvalidStatus) as refused:
                with connect(url, proxy=None, open_timeout=10):
                    pass
            assert refused.value.response.status_code == 503
            opened.send(ask)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    opened.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    with connect(url, proxy=None, open_timeout=10) as again:
        again.send(ask)
        assert json.loads(again.recv(timeout=10))["status"] == 200


def _assert_closed_to_subscribe_again(sockets: dict[str, Any], deadline: float) -> None:
    """Each of ``sockets`` (by the path it subscribed to) is closed with 1012 by
    ``deadline`` (``time.monotonic()``); a change that made it before the close is fine."""
    from websockets.exceptions import ConnectionClosed

    for path, ws in sockets.items():
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, path


def test_the_first_change_after_the_cache_lost_its_records_closes_gateway_connections(
    fresh_deployment: Deployment,
) -> None:
    """Redis flushed under open gateway connections: their subscriptions (private ones in
    the connections' index, shared ones by their live URLs) were gone, the next change
    reached none of them, and each connection found out only at its next request, the
    proxy's keep-alive call up to ``WS_KEEP_ALIVE`` (25 s) later (multi-process probe:
    9.9-11.0 s late). That change now closes them with 1012 at once; the client's new
    connection subscribes again and its answer is the current representation."""
    from websockets.sync.client import connect

    deployment = fresh_deployment
    url = deployment.pushpins[0].ws_url + "/api/ws/"
    word = uuid.uuid4().hex[:8]
    [pk] = _write(deployment, [], "", [f"{word} 0"])
    subscriptions = {"/api/todos/": f"{word} new", f"/api/shared-todos/?search={word}": None,
                     f"/api/todos/{pk}/": f"{word} new"}
    with contextlib.ExitStack() as stack:
        sockets = _subscribe_each(stack, url, subscriptions)

        deployment.flush_state()
        _write(deployment, [pk], f"{word} new", [])  # returns once the writer published
        deadline = time.monotonic() + WITHIN

        _assert_closed_to_subscribe_again(sockets, deadline)
    for path in subscriptions:
        with connect(url, proxy=None, open_timeout=10) as again:
            again.send(json.dumps({"id": 1, "subscribe": path}))
            answer = json.loads(again.recv(timeout=10))
            data = answer["data"]
            titles = [row["title"] for row in data["results"]] if "results" in data else (
                [row["title"] for row in data] if isinstance(data, list) else [data["title"]])
            assert f"{word} new" in titles, (path, titles)


def test_the_recovery_after_a_cache_loss_closes_only_gateway_connections_subscribed_before(
    fresh_deployment: Deployment,
) -> None:
    """Redis flushed under open gateway connections, and a new connection subscribed before
    the next change (it records again, so that change is a recovery, not a total loss):
    the connections subscribed before the loss got nothing, and each found out only at its
    next keep-alive call up to ``WS_KEEP_ALIVE`` (25 s) later. They are closed with 1012 at
    that change; the connection subscribed since stays open and gets the change."""

    deployment = fresh_deployment
    url = deployment.pushpins[0].ws_url + "/api/ws/"
    word = uuid.uuid4().hex[:8]
    [pk] = _write(deployment, [], "", [f"{word} 0"])
    before = ["/api/todos/", f"/api/shared-todos/?search={word}", f"/api/todos/{pk}/"]
    with contextlib.ExitStack() as stack:
        old = _subscribe_each(stack, url, before)

        deployment.flush_state()
        [new] = _subscribe_each(stack, url, [f"/api/todos/{pk}/"]).values()
        _write(deployment, [pk], f"{word} new", [])  # returns once the writer published
        deadline = time.monotonic() + WITHIN

        _assert_closed_to_subscribe_again(old, deadline)
        change = json.loads(new.recv(timeout=max(0.01, deadline - time.monotonic())))
        assert change["event"] == "change" and change["data"]["title"] == f"{word} new"
        new.send(json.dumps({"id": 2, "method": "GET", "url": f"/api/todos/{pk}/"}))
        assert json.loads(new.recv(timeout=10))["status"] == 200  # still open


def test_the_first_render_after_a_cache_loss_reaches_gateway_subscribers_at_once(
    fresh_deployment: Deployment,
) -> None:
    """Redis flushed while Pushpin still knew the id of a live URL's last render. A
    client's GET after the loss gave the URL a first version; a gateway connection
    subscribed since named that version too. The next render went with that
    version as its prev-id, an id Pushpin never had: its sequencer held the render 5 s,
    and the gateway subscriber got it 5 s late, after newer renders, and stayed on it
    (convergence harness, Redis restarted: 3 runs of 13). It reaches the subscriber at
    once now (DESIGN.md §4)."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word = uuid.uuid4().hex[:8]
    [pk] = _write(deployment, [], "", [f"{word} 0"])
    path = f"/api/shared-todos/?search={word}"
    channel = _live(pushpin, "/api/shared-todos/", f"search={word}")

    # A render of the URL that Pushpin delivers: the channel's last id there.
    etag = LongPoll(pushpin.url + path, {"Accept": "application/json"}).result(10).headers["ETag"]
    mark = pushpin.mark()
    held = LongPoll(pushpin.url + path, {**_WAIT, "If-None-Match": etag})
    pushpin.wait_rerequested(channel, since=mark)
    _write(deployment, [pk], f"{word} 1", [])
    assert f"{word} 1" in held.result(10).text

    deployment.flush_state()
    # A client back with the ETag it had before: answered at once, and its answer names
    # the URL's first version since the loss (held at, it would conflict: Pushpin then
    # forgets the old id).
    again = LongPoll(pushpin.url + path, {**_WAIT, "If-None-Match": etag}).result(10)
    assert again.status_code == 200 and f"{word} 1" in again.text
    with contextlib.ExitStack() as stack:
        [ws] = _subscribe_each(stack, pushpin.ws_url + "/api/ws/", [path]).values()
        _write(deployment, [pk], f"{word} 2", [])  # returns once the writer published
        deadline = time.monotonic() + WITHIN
        while True:
            change = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if change.get("event") == "change":
                break
        assert [row["title"] for row in change["data"]["results"]] == [f"{word} 2"]


_START_LOW = r"""
import sys
import django
django.setup()
from drf_grip.rest import versions
versions.secrets.randbits = lambda bits: 1
versions.ensure_versions([sys.argv[1]])
"""


def _start_counter_low(deployment: Deployment, channel: str) -> None:
    """Start ``channel``'s counter as a subscriber's read does, at its lowest value."""
    subprocess.run([sys.executable, "-c", _START_LOW, channel], check=True, cwd=ROOT,
                   env={**os.environ, **deployment.env}, timeout=60)


def test_the_change_after_a_cache_loss_reaches_a_private_hold_at_once(
    fresh_deployment: Deployment,
) -> None:
    """Redis restarted while one Pushpin held a long-poll of a private detail at the last id
    of its object's channel. A subscriber through the other Pushpin after the loss
    started the channel's counter afresh, at a value no item carries, and held at it; the
    model's first change since re-requested the long-poll, held again at the id its
    Pushpin had (``Grip-Last``). The next change's hint went chained onto the counter's
    start, an id that Pushpin never had:
    its sequencer held the hint 5 s, and the long-poll got the change 5 s late
    (convergence harness, Redis restarted under two Pushpins: detail long-polls 2.5 to
    6 s after the last commit). It reaches the long-poll at once now (DESIGN.md §4)."""
    deployment = fresh_deployment
    first, second = deployment.pushpins
    word = uuid.uuid4().hex[:8]
    pk, other = _write(deployment, [], "", [f"{word} 0", f"{word} other"])
    path = f"/api/todos/{pk}/"
    channel = names.object_channel(Todo, pk)

    # A hint both Pushpins deliver: the channel's last id there.
    etag = LongPoll(second.url + path, {"Accept": "application/json"}).result(10).headers["ETag"]
    mark = second.mark()
    held = LongPoll(second.url + path, {**_WAIT, "If-None-Match": etag})
    second.wait_rerequested(channel, since=mark)
    _write(deployment, [pk], f"{word} 1", [])
    woken = held.result(10)
    assert f"{word} 1" in woken.text
    mark = second.mark()
    held = LongPoll(second.url + path, {**_WAIT, "If-None-Match": woken.headers["ETag"]})
    second.wait_subscribed(channel, since=mark, timeout=10)  # held at that id

    deployment.flush_state()
    # A subscriber's read after the loss starts the counter at random: below the id the
    # Pushpins had, as here, a re-requested hold keeps that id (``_hold_prev_ids``).
    _start_counter_low(deployment, channel)
    mark = first.mark()
    elsewhere = LongPoll(first.url + path, {**_WAIT, "If-None-Match": woken.headers["ETag"]})
    first.wait_subscribed(channel, since=mark)  # its read started the counter
    # The model's first change since re-requests every hold of it (the recovery) when the
    # worker that served the subscriber saw the loss: held again, at the ids each Pushpin
    # had. Not at the change below, which would re-request the long-poll itself.
    mark = second.mark()
    _write(deployment, [other], f"{word} other 1", [])
    with contextlib.suppress(TimeoutError):
        second.wait_rerequested(channel, since=mark, timeout=3)
    assert not held.done and not elsewhere.done
    _write(deployment, [pk], f"{word} 2", [])  # returns once the writer published
    assert f"{word} 2" in elsewhere.result(WITHIN).text
    assert f"{word} 2" in held.result(WITHIN).text


@contextlib.contextmanager
def _redis_full(deployment: Deployment) -> Iterator[None]:
    """The deployment's redis-server out of memory under ``noeviction``: it answers every
    read and refuses every write (``OOM command not allowed when used memory >
    'maxmemory'``), as a Redis whose data outgrew its ``maxmemory`` does; then room again."""
    import redis

    client = redis.Redis.from_url(deployment.redis.url)
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")
        client.config_set("maxmemory-policy", policy)
        client.close()


def test_reads_through_the_proxy_while_the_cache_refuses_writes_are_answered(
    fresh_deployment: Deployment,
) -> None:
    """Redis out of memory (``noeviction``): it still answered reads, so the degraded path
    for an unreachable cache was never taken, and every conditional GET, long-poll and
    stream through Pushpin answered 500 (multi-process probe, ``maxmemory`` 1-4 MB). They
    are answered as while the cache does not answer at all."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, etag = _a_todo(deployment)
    shared = f"/api/shared-todos/{pk}/"
    with _redis_full(deployment):
        stale = httpx.get(pushpin.url + path, headers={"If-None-Match": '"old"'}, timeout=10)
        assert stale.status_code == 200 and stale.json()["title"] == f"{word} 0"
        mark = pushpin.mark()
        poll = LongPoll(pushpin.url + path, {"If-None-Match": etag})
        pushpin.wait_subscribed(names.object_channel(Todo, pk), since=mark)
        answer = poll.result(15)
        assert answer.status_code == 304 and answer.headers["ETag"] == etag
        for url in (path, shared):
            events = EventStream(pushpin.url + url)
            try:
                first = events.next(5)
                assert events.status == 200, url
                assert first is not None and json.loads(first.data)["title"] == f"{word} 0"
            finally:
                events.close()


def test_a_change_committed_while_the_cache_refuses_writes_reaches_held_clients(
    fresh_deployment: Deployment,
) -> None:
    """Redis out of memory: a PATCH through a worker succeeded, but its publish failed on
    the first version it moved (``INCR``: OOM) and was dropped at once, the cache being
    "reachable"; the long-polls and the stream held since before kept the old
    representation after Redis had room again. It is published once the cache takes
    writes again."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, etag = _a_todo(deployment)
    shared = f"/api/shared-todos/{pk}/"
    shared_etag = httpx.get(pushpin.url + shared, timeout=10).headers["ETag"]
    wait = {"Prefer": "wait=30"}
    # The stream first: Pushpin's re-fetch of it after its channel's first subscription
    # comes before the long-polls' re-request, awaited below, so none meets the full cache
    # (a next link that fails is fetched again only 1-2 s later: handler/httpsession.cpp).
    events = EventStream(pushpin.url + path)
    try:
        opened = events.next(5)
        assert opened is not None and opened.id
        mark = pushpin.mark()
        polls = [
            LongPoll(pushpin.url + path, {**wait, "If-None-Match": etag}),
            LongPoll(pushpin.url + shared, {**wait, "If-None-Match": shared_etag}),
        ]
        pushpin.wait_rerequested(names.object_channel(Todo, pk), since=mark)
        host = urlsplit(pushpin.url).netloc
        live = LiveUrl("http", host, shared, "", "application/json").channel
        pushpin.wait_rerequested(live, since=mark)
        with _redis_full(deployment):
            written = httpx.patch(pushpin.url + path, json={"title": f"{word} new"}, timeout=10)
            assert written.status_code == 200
            time.sleep(1.0)  # the change's publish meets the full cache
        for poll in polls:
            answer = poll.result(WITHIN + 1.0)
            assert answer.status_code == 200 and answer.json()["title"] == f"{word} new"
        event = events.next(WITHIN)
        if event is None:
            # A fetch of its next link met the full cache (Pushpin re-fetches a stream of a
            # fresh channel about a second after it subscribed): the stream ended for its
            # client to reconnect, as an EventSource does.
            events.close()
            events = EventStream(pushpin.url + path, {"Last-Event-ID": opened.id})
            event = events.next(WITHIN)
        assert event is not None and json.loads(event.data)["title"] == f"{word} new"
    finally:
        events.close()


def test_the_gateway_says_when_the_cache_refuses_writes(fresh_deployment: Deployment) -> None:
    """Redis out of memory: a subscription over the gateway was answered ``{"status": 500,
    "error": "server error"}`` with a traceback logged, and the client, told nothing it
    could act on, kept the connection with no subscription. The connection is closed with
    1013 (Try Again Later), as while the cache does not answer at all; once Redis has room
    the client's new connection subscribes."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = fresh_deployment.pushpins[0].ws_url + "/api/ws/"
    subscribe = json.dumps({"id": 1, "subscribe": "/api/todos/"})
    with connect(url, proxy=None, open_timeout=10) as opened:
        with _redis_full(fresh_deployment):
            opened.send(subscribe)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    answer = json.loads(opened.recv(timeout=10))
                    assert answer.get("status") != 500, answer
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    with connect(url, proxy=None, open_timeout=10) as again:
        again.send(subscribe)
        assert json.loads(again.recv(timeout=10))["status"] == 200


def _redis_evicts(deployment: Deployment, *patterns: str) -> None:
    """The deployment's Redis evicts the keys that match ``patterns``, as one under
    ``maxmemory`` with an eviction policy drops keys: the others are made persistent for
    the moment, so that ``volatile-lru`` may take only these, and a write past a tiny
    ``maxmemory`` makes it evict them (then is refused); then everything as it was."""
    from fnmatch import fnmatchcase

    import redis

    client = redis.Redis.from_url(deployment.redis.url)
    try:
        keys = [key.decode() for key in client.scan_iter("*")]
        targets = [k for k in keys if any(fnmatchcase(k, p) for p in patterns)]
        assert targets, f"nothing matches {patterns}"
        kept = {k: client.pttl(k) for k in keys if k not in targets}
        for key, ttl in kept.items():
            if ttl > 0:
                client.persist(key)
        before = client.info("stats")["evicted_keys"]
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
        client.config_set("maxmemory-policy", "volatile-lru")
        client.config_set("maxmemory", "1")
        try:
            with contextlib.suppress(redis.exceptions.OutOfMemoryError):
                client.set("drf_grip:test:evict", 1)
        finally:
            client.config_set("maxmemory", "0")
            client.config_set("maxmemory-policy", policy)
            for key, ttl in kept.items():
                if ttl > 0:
                    client.pexpire(key, ttl)
        # At least these: a key a worker wrote since the scan (a renewed mark) may go too.
        assert client.info("stats")["evicted_keys"] - before >= len(targets)
        assert not client.exists(*targets)
    finally:
        client.close()


def test_a_change_reaches_held_clients_whose_records_redis_evicted(
    fresh_deployment: Deployment,
) -> None:
    """Redis under ``maxmemory`` with ``allkeys-lru`` (or ``volatile-lru``: every key
    drf-grip writes expires) evicts keys of held clients while they wait: the live URL of
    a shared view, the views a model's subscribers came through. The mark that says
    subscriptions are recorded survived, so the publisher trusted what it found and
    rendered or hinted nobody: 4 of 128 subscriptions never converged in a multi-process
    run with 4 MB (multi-process probe). Evictions since a model's last publish now make
    its change go out as after a flush."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    first, second, word, held = _hold_three(deployment)

    # A second client of the shared list: the first of the two that the change's
    # re-request lists the URL again renders it; the other must not be held as current.
    path = f"/api/shared-todos/?search={word}"
    etag = held[1].headers["If-None-Match"]
    mark = pushpin.mark()
    held.append(LongPoll(pushpin.url + path, {**_WAIT, "If-None-Match": etag}))
    pushpin.wait_subscribed(_live(pushpin, "/api/shared-todos/", f"search={word}"), since=mark)

    _redis_evicts(deployment, ":1:drf_grip:live:*", ":1:drf_grip:views:*")
    _write(deployment, [first, second], f"{word} new", [f"{word} 2"])

    detail, shared, shared_detail, shared_again = (poll.result(WITHIN) for poll in held)
    assert detail.status_code == 200 and detail.json()["title"] == f"{word} new"
    assert shared.status_code == 200 and shared.json()["count"] == 3
    assert shared_detail.status_code == 200 and shared_detail.json()["title"] == f"{word} new"
    assert shared_again.status_code == 200 and shared_again.json()["count"] == 3


def test_a_change_reaches_gateway_subscriptions_whose_records_redis_evicted(
    fresh_deployment: Deployment,
) -> None:
    """The same evictions under open gateway connections (the index of connections with
    private subscriptions to a model, the live URLs and views): the change reached neither
    subscription and nothing closed the connections, whose own state was still there.
    They get the change, or are closed with 1012 and subscribe again to it."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    deployment = fresh_deployment
    url = deployment.pushpins[0].ws_url + "/api/ws/"
    word = uuid.uuid4().hex[:8]
    [pk] = _write(deployment, [], "", [f"{word} 0"])
    paths = [f"/api/todos/{pk}/", f"/api/shared-todos/?search={word}"]

    def titles(data: Any) -> list[str]:
        rows = data["results"] if "results" in data else [data]
        return [row["title"] for row in rows]

    with contextlib.ExitStack() as stack:
        sockets = _subscribe_each(stack, url, paths)

        _redis_evicts(deployment, ":1:drf_grip:ws:model:*", ":1:drf_grip:live:*",
                      ":1:drf_grip:views:*")
        _write(deployment, [pk], f"{word} new", [])
        deadline = time.monotonic() + WITHIN

        for path, ws in sockets.items():
            try:
                while True:
                    message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                    if message.get("event") == "change" and f"{word} new" in titles(message["data"]):
                        break
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1012, path
                with connect(url, proxy=None, open_timeout=10) as again:
                    again.send(json.dumps({"id": 1, "subscribe": path}))
                    answer = json.loads(again.recv(timeout=10))
                    assert f"{word} new" in titles(answer["data"]), path
            except TimeoutError:
                pytest.fail(f"{path}: neither the change nor a close within {WITHIN}s")


def test_a_stream_whose_next_link_meets_a_cache_that_refuses_writes_ends_for_its_client(
    fresh_deployment: Deployment,
) -> None:
    """Redis out of memory when Pushpin fetches a held stream's next link (a hint, its
    re-fetch of a fresh channel): the fetch moves the stream's state in the cache, which
    answered 500, and Pushpin fetched again 1-2 s later, and again, for as long as Redis
    stayed full: the client, told nothing, kept the old representation (a multi-process
    run under ``maxmemory`` 4 MB: two private streams stale for the whole run). The stream
    ends with no event, as when its state is gone; the client reconnects with
    ``Last-Event-ID`` and is answered as a direct client: the current representation."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, _etag = _a_todo(deployment)
    events = EventStream(pushpin.url + path)
    try:
        first = events.next(5)
        assert first is not None and first.id
        with _redis_full(deployment):
            written = httpx.patch(pushpin.url + path, json={"title": f"{word} new"}, timeout=10)
            assert written.status_code == 200
            # The change's own publish waits for the cache; a hint from elsewhere (Pushpin's
            # re-fetch, another publisher) makes Pushpin fetch the next link now.
            pushpin.publish_items([{"channel": names.object_channel(Todo, pk),
                                    "formats": {"http-stream": {"action": "hint"}}}])
            assert events.next(WITHIN + 1.0) is None, "the stream did not simply end"
            again = EventStream(pushpin.url + path, {"Last-Event-ID": first.id})
            try:
                event = again.next(WITHIN)
                assert again.status == 200
                assert event is not None and json.loads(event.data)["title"] == f"{word} new"
            finally:
                again.close()
    finally:
        events.close()


def test_a_change_committed_while_the_cache_refuses_writes_reaches_shared_holds(
    fresh_deployment: Deployment,
) -> None:
    """Redis out of memory, and only shared views of the model held: the publish failed
    on the first live URL's render ticket (``INCR``: OOM), which was logged and skipped
    one URL after the other, so the publish "succeeded" and nothing tried again; and the
    URLs it had begun counted as rendered after the change, so no later try rendered them
    either (multi-process probe, ``noeviction``: 19 of 128 subscriptions, most of them
    shared, never got a change). It is published once the cache takes writes again."""
    deployment = fresh_deployment
    pushpin = deployment.pushpins[0]
    word, pk, path, _etag = _a_todo(deployment)
    shared = f"/api/shared-todos/{pk}/"
    listed = f"/api/shared-todos/?search={word}"
    host = urlsplit(pushpin.url).netloc
    wait = {"Prefer": "wait=30"}
    polls = []
    for url, channel in (
        (shared, LiveUrl("http", host, shared, "", "application/json").channel),
        (listed, LiveUrl("http", host, "/api/shared-todos/", f"search={word}",
                         "application/json").channel),
    ):
        etag = httpx.get(pushpin.url + url, timeout=10).headers["ETag"]
        mark = pushpin.mark()
        polls.append(LongPoll(pushpin.url + url, {**wait, "If-None-Match": etag}))
        pushpin.wait_rerequested(channel, since=mark)
    with _redis_full(deployment):
        written = httpx.patch(pushpin.url + path, json={"title": f"{word} new"}, timeout=10)
        assert written.status_code == 200
        time.sleep(1.0)  # the change's publish meets the full cache
    detail, listing = (poll.result(WITHIN + 1.0) for poll in polls)
    assert detail.status_code == 200 and detail.json()["title"] == f"{word} new"
    assert listing.status_code == 200 and listing.json()["results"][0]["title"] == f"{word} new"
