"""drf_grip.test for HTTP: a client whose requests arrive as proxied, hold assertions, the
outbox of published items and waiting for publishes."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings
from gripcontrol import HttpStreamFormat
from rest_framework.test import APIClient

from drf_grip import publish
from drf_grip.grip.publisher import get_publisher
from drf_grip.test import (
    ConnectionClosed,
    GripAPIClient,
    WebSocketTestClient,
    assert_held,
    assert_not_held,
    capture_published,
    reset_realtime_state,
    wait_published,
)
from drf_grip.testing.process import ManagedProcess
from tests.testapp.models import Todo


@pytest.mark.django_db
def test_requests_arrive_as_proxied_and_holds_are_read_back():
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    etag = client.get(f"/api/todos/{todo.pk}/")["ETag"]
    held = client.get(f"/api/todos/{todo.pk}/", HTTP_IF_NONE_MATCH=etag, HTTP_PREFER="wait=20")
    assert held.status_code == 304
    grip = assert_held(held, channels=[f"drf.testapp.todo.{todo.pk}"], timeout=20)
    assert grip.held and grip.status == 304
    assert set(grip.prev_ids) == set(grip.channels)
    # The same request without the proxy is an ordinary conditional GET: nothing held.
    direct = APIClient().get(f"/api/todos/{todo.pk}/", HTTP_IF_NONE_MATCH=etag)
    assert direct.status_code == 304
    assert_not_held(direct)


@pytest.mark.django_db
def test_streams_have_a_next_link():
    response = GripAPIClient().get("/api/todos/", HTTP_ACCEPT="text/event-stream")
    grip = assert_held(response, stream=True, channels=["drf.testapp.todo"])
    assert grip.next_link and "/_grip/next/" in grip.next_link
    assert response.content.startswith(b"id: ")


@pytest.mark.django_db
def test_assertions_say_what_was_wrong():
    plain = GripAPIClient().get("/api/todos/")
    assert_not_held(plain)
    with pytest.raises(AssertionError, match="expected a held response, got no hold"):
        assert_held(plain)
    etag = plain["ETag"]
    held = GripAPIClient().get("/api/todos/", HTTP_IF_NONE_MATCH=etag)
    with pytest.raises(AssertionError, match="not subscribed to"):
        assert_held(held, channels=["elsewhere"])
    with pytest.raises(AssertionError, match="held 55.0 s, not 30 s"):
        assert_held(held, timeout=30)
    with pytest.raises(AssertionError, match="held"):
        assert_not_held(held)
    with pytest.raises(AssertionError, match="expected a held stream"):
        assert_held(held, stream=True)


@override_settings(GRIP_PREFIX="site1-")
@pytest.mark.django_db
def test_channels_are_named_without_grip_prefix():
    etag = GripAPIClient().get("/api/todos/")["ETag"]
    held = GripAPIClient().get("/api/todos/", HTTP_IF_NONE_MATCH=etag)
    assert held["Grip-Channel"].startswith("site1-drf.testapp.todo")
    assert_held(held, channels=["drf.testapp.todo"])
    with capture_published() as outbox:
        publish("news", {"http-response": {"body": "hi"}})
        wait_published()
    assert outbox.channels == ["news"] and outbox[0]["channel"] == "site1-news"
    assert outbox.to("news") == [outbox[0]]


@pytest.mark.django_db(transaction=True)
def test_a_change_committed_as_the_block_ends_lands_in_its_outbox(monkeypatch):
    """What a test commits last publishes a moment after the block, from another thread:
    it must land in the outbox, not go out to GRIP_URL (a probe's listener got a test's
    publish once in 8 runs). The worker is slowed so that the moment is long."""
    import time

    from django.core.cache import cache

    from drf_grip.rest.change_worker import _ChangeWorker

    gather = _ChangeWorker._gather

    def slow_gather(self, changes, until):
        time.sleep(0.3)
        return gather(self, changes, until)

    cache.clear()
    monkeypatch.setattr(_ChangeWorker, "_gather", slow_gather)
    with capture_published() as outbox:
        GripAPIClient().get("/api/todos/", HTTP_IF_NONE_MATCH='"stale"')  # a watcher
        Todo.objects.create(title="last")
    assert "drf.testapp.todo" in outbox.channels


@pytest.mark.django_db(transaction=True)
def test_outbox_has_what_committed_changes_published():
    from django.core.cache import cache

    cache.clear()  # what earlier tests subscribed to
    with capture_published() as outbox:
        # Someone watches the todo list: changes are published for subscriptions.
        GripAPIClient().get("/api/todos/", HTTP_IF_NONE_MATCH='"stale"')
        with transaction.atomic():
            Todo.objects.create(title="one")
            Todo.objects.create(title="two")
        wait_published()
        assert outbox.channels.count("drf.testapp.todo") == 1  # one transaction, one publish
        hint = outbox.to("drf.testapp.todo")[0]
        assert hint["formats"]["http-response"] == {"action": "hint"}
        assert "id" in hint and "prev-id" in hint
    with capture_published() as later:
        with transaction.atomic():
            Todo.objects.create(title="rolled back")
            transaction.set_rollback(True)
        wait_published()
    assert later == []


@pytest.mark.django_db(transaction=True)
def test_an_outbox_has_only_what_was_published_while_it_captured():
    # The outer capture also keeps publishes off the network: with a local sink and no
    # GRIP_URL, the publisher has nowhere else to send.
    with capture_published() as outer:
        with capture_published() as inner:
            pass
        Todo.objects.create(title="after")
        wait_published()
    assert inner == [] and "drf.testapp.todo" in outer.channels


@pytest.mark.django_db
def test_commit_callbacks_run_by_the_test_publish_changes_saved_before_the_block(
    django_capture_on_commit_callbacks,
):
    # A plain django_db test (one transaction that never commits) that runs the commit
    # callbacks itself, as docs/testing.rst shows, after its setup saved something (a
    # user, a fixture): the change in the block is published, and so is one in a second
    # block (a savepoint there, as a view under ATOMIC_REQUESTS has). A change saved before
    # the block used to hold the publish back outside it.
    Todo.objects.create(title="setup")
    with capture_published() as outbox:
        with django_capture_on_commit_callbacks(execute=True):
            Todo.objects.create(title="new")
        wait_published()
    assert "drf.testapp.todo" in outbox.channels
    with capture_published() as again:
        with django_capture_on_commit_callbacks(execute=True):
            Todo.objects.get_or_create(title="newer")  # in a savepoint of its own
        wait_published()
    assert "drf.testapp.todo" in again.channels


class _Proxy:
    """A publish endpoint on a real socket, recording what reaches it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(b"Published\n")

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.grip_url = f"http://127.0.0.1:{self.server.server_port}/?key={'k' * 40}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("send", [False, True])
def test_nothing_captured_leaves_the_process_unless_asked(send):
    # A project whose settings name a real proxy (GRIP_URL), tested with the README's
    # autouse conftest: its tests must not publish to that proxy.
    proxy = _Proxy()
    try:
        with override_settings(GRIP_URL=proxy.grip_url):
            with capture_published(send=send) as outbox:
                publish("kept", HttpStreamFormat("in the process\n"))
                wait_published()
    finally:
        proxy.close()

    assert outbox.channels == ["kept"]
    assert len(proxy.received) == (1 if send else 0)


@pytest.mark.django_db
def test_published_websocket_messages_reach_a_test_socket_as_a_proxy_reads_them():
    """The test kit reads a ``ws-message`` like the embedded proxy and Pushpin: text, binary
    (``content-bin`` or ``type: binary``) and a close (``action`` or ``type``)."""
    import base64


    ws = WebSocketTestClient().connect("/ws/echo/")  # subscribes to channel "test"
    assert ws.accepted and ws.channels
    publish("test", {"ws-message": {"content": "text"}})
    assert ws.receive() == "text"
    publish("test", {"ws-message": {"content-bin": base64.b64encode(b"\x00\xff").decode()}})
    assert ws.receive() == b"\x00\xff"
    publish("test", {"ws-message": {"type": "binary", "content": "raw"}})
    assert ws.receive() == b"raw"
    publish("elsewhere", {"ws-message": {"content": "not for it"}})
    publish("test", {"ws-message": {"action": "hint"}})
    assert ws.receive_nothing()
    publish("test", {"ws-message": {"action": "close", "code": 4001}})
    wait_published()
    assert ws.closed and ws.close_code == 4001


@pytest.mark.django_db
@pytest.mark.timeout(20)
def test_a_test_socket_does_not_wait_for_a_proxy_that_is_not_running():
    """``GRIP_URL`` names a Pushpin that is not running (a CI job without it): a message
    published to a test socket's channel waited for that proxy, and each ``receive()``
    returned only when its whole timeout had run out (seeds probe)."""
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/?iss=pushpin&key={'k' * 32}"
    try:
        with override_settings(GRIP_URL=url):
            ws = WebSocketTestClient().connect("/ws/echo/")  # subscribes to channel "test"
            for n in range(3):
                publish("test", {"ws-message": {"content": f"m{n}"}})
                assert ws.receive(timeout=600) == f"m{n}"  # the test's timeout fails a wait
    finally:
        get_publisher().close(timeout=0)  # drops what is retried for the closed port
        closed.close()


@pytest.mark.django_db
def test_requests_arrive_as_proxied_under_fanouts_settings():
    # Found by a probe: with Fanout's GRIP_URL and its public key as GRIP_VERIFY_KEY, the
    # client's Grip-Sig (HS256 with the entry's key) was checked with the public key only,
    # so every request of the test kit was direct and nothing was held.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    with override_settings(
        GRIP_URL="https://api.fastly.com/service/sid?key=a-fastly-api-token&verify-iss=fastly:sid",
        GRIP_VERIFY_KEY=public,
    ), capture_published():
        etag = client.get(f"/api/todos/{todo.pk}/")["ETag"]
        held = client.get(f"/api/todos/{todo.pk}/", HTTP_IF_NONE_MATCH=etag)
    assert_held(held, channels=[f"drf.testapp.todo.{todo.pk}"])


@pytest.mark.django_db
def test_a_close_the_server_makes_is_told_to_the_view_as_a_proxy_does():
    """Found by a probe: after a close the view or a publish made, Pushpin 1.36 sends the
    origin a CLOSE event (a view's websocket_close runs) and the client sees the close's
    reason; the test kit did neither."""
    from tests.testapp.ws_views import CLOSES

    client = WebSocketTestClient()
    with client.connect("/ws/closer/?ch=kit-bye") as ws:
        ws.send("bye")
        assert (ws.closed, ws.close_code, ws.close_reason) == (True, 4000, "later")
    assert CLOSES["kit-bye"] == [(4000, "later")]

    with client.connect("/ws/closer/?ch=kit-kicked") as ws:
        # The exported form of gripcontrol's WebSocketMessageFormat(action="close", ...), which
        # gripcontrol 4.2 (setup.cfg's minimum) does not have.
        close = {"action": "close", "code": 4001, "reason": "kicked"}
        publish("kit-kicked", {"ws-message": close})
        with pytest.raises(ConnectionClosed, match="closed: code 4001 .kicked."):
            ws.receive(timeout=0.2)
        assert (ws.closed, ws.close_code, ws.close_reason) == (True, 4001, "kicked")
        assert CLOSES["kit-kicked"]


@pytest.mark.django_db
def test_assert_held_takes_one_channel_by_name():
    """Test-kit probe: ``assert_held(held, "drf.x")`` checked the name's letters one by one
    and failed with ``not subscribed to ['d', 'r', 'f', ...]``."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    etag = client.get(f"/api/todos/{todo.pk}/")["ETag"]
    held = client.get(f"/api/todos/{todo.pk}/", HTTP_IF_NONE_MATCH=etag)
    assert_held(held, f"drf.testapp.todo.{todo.pk}")
    with pytest.raises(AssertionError, match=r"not subscribed to \['drf.nothing'\]"):
        assert_held(held, "drf.nothing")


@pytest.mark.parametrize(
    "url", ["/api/shared-todos/", "/api/todos/", "/api/probe/shared-fields-todos/"]
)
@pytest.mark.django_db(transaction=True)
def test_a_change_right_after_a_subscribe_reaches_a_test_socket_once(url):
    """README's ``test_board_is_live``, asserting one change: a change made right after a
    shared subscription's answer came twice, the live URL's push (which names the fresh
    connection in ``skip_users``) and the answer's settle; the test kit's sockets ignored
    the filter a proxy applies (test-kit probe)."""
    with capture_published(), WebSocketTestClient().connect("/api/ws/") as ws:
        ws.send_json({"id": 1, "subscribe": url})
        assert ws.receive_json()["status"] == 200
        Todo.objects.create(title="new")
        change = ws.receive_json()
        assert change["event"] == "change", change
        assert ws.receive_nothing(timeout=1.0), ws.receive_json()


class TestCommitCallbacksRunInsideATestCase(__import__("django.test").test.TestCase):
    """``captureOnCommitCallbacks(execute=True)`` runs the commit callbacks inside the
    test's transaction, whose rows only this thread's connection reads: publishing from the
    change worker's thread rendered a 500 on SQLite ("database table is locked", pushed to
    the stream as ``event: delete``) or the old rows elsewhere (day-one probe). docs/testing.rst
    says this does the same as a transactional test."""

    def test_a_change_reaches_a_shared_stream_with_the_new_rows(self) -> None:
        from django.core.cache import cache

        cache.clear()
        Todo.objects.create(title="a")
        with capture_published() as published:
            client = GripAPIClient()
            stream = client.get("/api/shared-todos/", HTTP_ACCEPT="text/event-stream")
            channels = assert_held(stream, stream=True).channels
            channel = next(c for c in channels if c.startswith("drf.url."))
            with self.captureOnCommitCallbacks(execute=True):
                Todo.objects.create(title="b")
            wait_published()
            pushed = [i for i in published if i["channel"] == channel]
        assert pushed, list(published)
        content = pushed[-1]["formats"]["http-stream"].get("content", "")
        assert '"title":"b"' in content and "event: delete" not in content, pushed[-1]
        fresh = client.get("/api/shared-todos/", HTTP_ACCEPT="text/event-stream")
        assert content == fresh.content.decode()


class TestAChangeInATestWhoseClassMadeRows(__import__("django.test").test.TestCase):
    """Test-kit probe: a ``TestCase`` whose ``setUpTestData`` made a user, a signed-in gateway
    subscriber of a shared list, and a change under ``captureOnCommitCallbacks(execute=True)``:
    nothing was published. The change was in the test's savepoint, newer than the batch the
    class's rows began, and the callback that marks that savepoint kept had been registered
    by the first change in it (the login's), before the block, which runs only its own."""

    @classmethod
    def setUpTestData(cls) -> None:
        from django.contrib.auth import get_user_model

        cls.user = get_user_model().objects.create_user("kit-class-user", password="pw")

    def test_a_signed_in_gateway_subscriber_gets_the_change(self) -> None:
        from django.core.cache import cache

        cache.clear()
        client = WebSocketTestClient()
        client.force_login(self.user)
        with client.connect("/api/ws/") as ws:
            ws.send_json({"id": 1, "subscribe": "/api/shared-todos/"})
            assert ws.receive_json()["status"] == 200
            with self.captureOnCommitCallbacks(execute=True):
                Todo.objects.create(title="made in the test")
            change = ws.receive_json()
        assert change["event"] == "change", change
        assert [t["title"] for t in change["data"]["results"]] == ["made in the test"]


class _Sleeper(ManagedProcess):
    """A child that runs until stopped."""

    program = "sleep"

    def start(self) -> _Sleeper:
        self._spawn(["sleep", "60"], log=self._make_dir() / "out")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process = self._terminate(timeout)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._remove_dir()


def test_a_server_started_on_a_thread_that_ends_keeps_running() -> None:
    """Seen in CI: Pushpin restarted with ``asyncio.to_thread`` was sent SIGTERM as soon as
    ``asyncio.run`` ended that thread (the child's death signal follows the thread that
    started it, prctl(2)), and the next test found nothing listening."""
    import subprocess
    import threading

    server = _Sleeper()
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        assert server.process is not None
        with pytest.raises(subprocess.TimeoutExpired):
            server.process.wait(timeout=2)  # the death signal comes at once, if at all
    finally:
        server.stop()


# -- a test afresh (test-kit probe) ---------------------------------------------------------


def _shared_url_channels(outbox) -> list[str]:
    return [c for c in outbox.channels if c.startswith("drf.url.")]


@pytest.mark.django_db(transaction=True)
def test_reset_realtime_state_forgets_the_live_urls_of_earlier_tests():
    """A shared URL only an earlier test subscribed to was still rendered and pushed at
    a later test's change, and a live-URL cap filled by earlier tests made a later hold
    fall back to hints. After ``reset_realtime_state()`` a change pushes nothing for the
    earlier URL, and a new subscription is listed and pushed as in a fresh process."""
    client = GripAPIClient()
    etag = client.get("/api/shared-todos/?search=earlier")["ETag"]
    assert_held(client.get("/api/shared-todos/?search=earlier", HTTP_IF_NONE_MATCH=etag))
    reset_realtime_state()
    with capture_published() as outbox:
        Todo.objects.create(title="later")
        wait_published()
    assert _shared_url_channels(outbox) == []

    etag = client.get("/api/shared-todos/")["ETag"]
    held = assert_held(client.get("/api/shared-todos/", HTTP_IF_NONE_MATCH=etag))
    with capture_published() as outbox:
        Todo.objects.create(title="again")
        wait_published()
    assert _shared_url_channels(outbox) == [held.channels[0]]


@pytest.mark.django_db(transaction=True)
def test_a_change_nobody_holds_publishes_the_same_whatever_ran_before(monkeypatch):
    """A process with a per-process cache that never counted a hold hinted every one of a
    channel's 64 buckets; once an earlier test had held, one bucket. After
    ``reset_realtime_state()`` the process is the one origin of its tests' holds."""
    from drf_grip.rest import buckets

    monkeypatch.setattr(buckets, "_counts_holds_here", False)  # as in a fresh process
    reset_realtime_state()
    with capture_published() as outbox:
        Todo.objects.create(title="nobody holds it")
        wait_published()
    assert outbox and not [c for c in outbox.channels if "~b" in c], outbox.channels


@pytest.mark.django_db(transaction=True)
def test_an_outbox_gets_nothing_committed_before_it_opened():
    """A change committed before ``capture_published()`` opened (a module fixture's) landed
    in the new outbox or went elsewhere, as the publisher's thread went."""
    with capture_published() as before:
        Todo.objects.create(title="before")
        with capture_published() as outbox:
            pass
        wait_published()
    assert before and not outbox


def test_the_innermost_capture_decides_whether_items_leave_the_process(settings):
    """``capture_published(send=True)`` inside a conftest's autouse capture sent nothing,
    and the publisher counted its items as sent."""
    from drf_grip.grip.destinations import targets
    from drf_grip.grip.transports import HttpTarget

    settings.GRIP_URL = "http://127.0.0.1:9/publish/"
    with capture_published():
        assert not any(isinstance(t, HttpTarget) for t in targets())
        with capture_published(send=True):
            assert any(isinstance(t, HttpTarget) for t in targets())
            with capture_published():
                assert not any(isinstance(t, HttpTarget) for t in targets())
        assert not any(isinstance(t, HttpTarget) for t in targets())


@pytest.mark.django_db(transaction=True)
def test_wait_published_in_a_capture_waits_for_nothing_that_went_elsewhere_before(settings):
    """A module fixture's change, handed to the publisher before the test's capture opened,
    went to the configured proxy, which no test runs: retried for a minute, it made the
    test's ``wait_published()`` raise ``TimeoutError`` after 10 s (a test-kit probe)."""
    from drf_grip.rest.change_worker import wait_idle

    settings.GRIP_URL = "http://127.0.0.1:9/"  # nothing listens there
    try:
        Todo.objects.create(title="a module fixture's")
        assert wait_idle(10)  # handed over, for the network
        with capture_published() as outbox:
            Todo.objects.create(title="the test's")
            wait_published(timeout=5)
        assert outbox
    finally:
        get_publisher().close(0.1)  # its retries end here, not in later tests
