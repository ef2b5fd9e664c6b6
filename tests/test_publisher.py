"""The publisher, seen from the publish port: what a GRIP proxy receives, and when.

Each test runs a real HTTP server on a free loopback port standing in for Pushpin's publish
port; it records every request and can answer with errors or hold requests on demand.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from gripcontrol import HttpResponseFormat, HttpStreamFormat, WebSocketMessageFormat

import drf_grip
from drf_grip.conf import embedded_key
from drf_grip.grip import destinations
from drf_grip.grip import publisher as publisher_module
from drf_grip.grip.destinations import register_local_sink, unregister_local_sink
from drf_grip.grip.items import make_item
from drf_grip.grip.lanes import Publisher, PublishStats
from drf_grip.grip.publisher import PublishError, get_publisher, publish, publish_items
from drf_grip.protocol import MAX_PUBLISH_BODY

WAIT = 15.0  # a safety net for waits on events, never an assertion about speed

FAST_RETRIES = {"PUBLISH_BACKOFF": 0.001, "PUBLISH_BACKOFF_MAX": 0.005}


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    size: int

    @property
    def channels(self) -> list[str]:
        return [item["channel"] for item in self.body["items"]]


class PublishServer:
    """A stand-in for Pushpin's publish port: records requests, answers as told."""

    def __init__(self, port: int = 0, keep_alive: bool = False) -> None:
        self.connections = 0
        self.drop_idle = False  # close kept connections silently after each answer
        self.requests: list[Received] = []
        self.statuses: deque[int] = deque()  # answers to give first, then 200
        self.responder: Callable[[Received], int] | None = None
        self.gate: threading.Event | None = None  # when set, requests wait on it to be answered
        self.cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                with server.cond:
                    server.connections += 1

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(size)
                received = Received(self.path, dict(self.headers.items()), json.loads(raw), size)
                with server.cond:
                    server.requests.append(received)
                    gate = server.gate
                    if server.statuses:
                        status = server.statuses.popleft()
                    elif server.responder is not None:
                        status = server.responder(received)
                    else:
                        status = 200
                    server.cond.notify_all()
                if gate is not None:
                    gate.wait(WAIT)
                text = b"Published\n" if status == 200 else b"Invalid format: nope\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                if server.drop_idle:
                    self.close_connection = True  # without telling the client

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def hold(self) -> None:
        self.gate = threading.Event()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
            self.gate = None

    def wait_for(self, count: int) -> list[Received]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= count, WAIT):
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            return list(self.requests)

    @property
    def items(self) -> list[dict[str, Any]]:
        with self.cond:
            return [item for r in self.requests for item in r.body["items"]]

    @property
    def channels(self) -> list[str]:
        return [item["channel"] for item in self.items]

    def stop(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server() -> Iterator[PublishServer]:
    srv = PublishServer()
    yield srv
    srv.stop()


@pytest.fixture
def other_server() -> Iterator[PublishServer]:
    srv = PublishServer()
    yield srv
    srv.stop()


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch) -> Iterator[Publisher]:
    """A fresh process-wide publisher for each test, so counters start at zero."""
    fresh = Publisher()
    monkeypatch.setattr(publisher_module, "_publisher", fresh)
    monkeypatch.setattr(destinations, "_local_sinks", [])
    yield fresh
    fresh.close(timeout=WAIT)


@pytest.fixture
def grip(settings: Any, server: PublishServer, publisher: Publisher) -> Any:
    """Settings publishing to ``server`` with quick retries."""
    settings.GRIP_URL = server.url
    settings.DRF_GRIP = dict(FAST_RETRIES)
    return settings


def stream(text: str) -> HttpStreamFormat:
    return HttpStreamFormat(text)


class RecordingSink:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.fail = False

    def publish_items(self, items: list[dict[str, Any]]) -> None:
        if self.fail:
            raise RuntimeError("sink broke")
        self.items.extend(items)


# -- items -----------------------------------------------------------------------------------


def test_item_has_pushpin_form_with_prefix(settings: Any) -> None:
    settings.GRIP_PREFIX = "myapp-"
    item = make_item("todos", HttpStreamFormat("hi\n"), id=7, prev_id="6")
    assert item == {
        "channel": "myapp-todos",
        "id": "7",
        "prev-id": "6",
        "formats": {"http-stream": {"content": "hi\n"}},
    }


def test_binary_content_becomes_base64_text() -> None:
    item = make_item(
        "c",
        [
            HttpStreamFormat(b"\xff\x00"),
            HttpResponseFormat(body=b"\xfe", headers={"ETag": '"1"'}),
            WebSocketMessageFormat(b"\x01\x02", binary=True),
        ],
    )
    json.dumps(item)  # JSON-safe as it is
    formats = item["formats"]
    assert base64.b64decode(formats["http-stream"]["content-bin"]) == b"\xff\x00"
    assert base64.b64decode(formats["http-response"]["body-bin"]) == b"\xfe"
    assert base64.b64decode(formats["ws-message"]["content-bin"]) == b"\x01\x02"


def test_formats_as_dict_and_errors() -> None:
    item = make_item("c", {"ws-message": {"content": b"text"}})
    assert item["formats"] == {"ws-message": {"content": "text"}}
    with pytest.raises(ValueError):
        make_item("c", [stream("a"), stream("b")])
    with pytest.raises(ValueError):
        make_item("c", [])


def test_stats_names() -> None:
    names = [f.name for f in dataclasses.fields(PublishStats)]
    assert names == ["queued", "sent", "failed", "retried", "dropped", "batches", "superseded", "pending"]


def test_exported_from_package() -> None:
    assert drf_grip.publish is publish
    assert drf_grip.get_publisher is get_publisher


# -- delivery --------------------------------------------------------------------------------


def test_publish_reaches_the_proxy_with_prefix_and_ids(grip: Any, server: PublishServer) -> None:
    grip.GRIP_PREFIX = "app-"
    publish("todos", HttpStreamFormat("data: 1\n\n"), id="v2", prev_id="v1")
    assert get_publisher().flush(WAIT)
    [request] = server.requests
    assert request.path == "/publish/"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {
        "items": [
            {
                "channel": "app-todos",
                "id": "v2",
                "prev-id": "v1",
                "formats": {"http-stream": {"content": "data: 1\n\n"}},
            }
        ]
    }
    stats = get_publisher().stats
    assert (stats.queued, stats.sent, stats.batches, stats.pending) == (1, 1, 1, 0)


def test_publish_takes_django_grips_arguments_positionally(grip: Any, server: PublishServer) -> None:
    """django-grip 3.5's ``publish(channel, formats, id, prev_id, blocking, callback, meta)``:
    ``blocking`` and ``callback`` passed by position raised TypeError (a seeds probe)."""
    answers: list[tuple[bool, str]] = []
    publish("todos", HttpStreamFormat("x\n"), "v2", "v1", True, lambda ok, m: answers.append((ok, m)))
    assert answers == [(True, "")]
    [request] = server.requests
    assert request.body["items"][0]["id"] == "v2"


def test_control_uri_path_is_kept(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    # Fanout's control URI has a path: https://api.fastly.com/service/ID
    settings.GRIP_PROXIES = [{"control_uri": server.url + "/service/abc", "key": "token"}]
    publish("c", stream("x"))
    assert publisher.flush(WAIT)
    assert server.requests[0].path == "/service/abc/publish/"
    assert server.requests[0].headers["Authorization"] == "Bearer token"


def test_key_without_iss_is_a_bearer_token(grip: Any, server: PublishServer) -> None:
    grip.GRIP_URL = server.url + "/?key=plain-secret"
    publish("c", stream("x"), blocking=True)
    assert server.requests[0].headers["Authorization"] == "Bearer plain-secret"


def test_a_key_that_is_no_text_without_an_issuer_is_refused_not_a_traceback(
    grip: Any, server: PublishServer, caplog: Any
) -> None:
    # A GRIP probe: key=base64: of random bytes with no iss= passed the checks, and every
    # publish raised UnicodeDecodeError from inside the transport (blocking) or logged a
    # traceback and lost the item (background).
    grip.GRIP_URL = server.url + "/?key=base64:/+7/"
    with pytest.raises(PublishError):
        publish("c", stream("x"), blocking=True)
    assert server.requests == [] and "sent as a Bearer token" in caplog.text
    grip.GRIP_URL = server.url + "/?iss=pushpin&key=base64:/+7/"  # signs a JWT: fine
    publish("c", stream("x"), blocking=True)
    assert server.requests[-1].headers["Authorization"].startswith("Bearer ey")


def test_a_transport_given_a_key_no_header_can_carry_fails_its_publish_cleanly(
    grip: Any, server: PublishServer
) -> None:
    from drf_grip.conf import GripEndpoint
    from drf_grip.grip.transports import HttpTarget

    target = HttpTarget(GripEndpoint(control_uri=server.url, key=b"\xff\xfe"))
    counts: dict[str, int] = {}

    def count(**kwargs: int) -> None:
        for name, n in kwargs.items():
            counts[name] = counts.get(name, 0) + n

    assert not target.deliver([make_item("c", stream("x"))], count, threading.Event())
    assert counts == {"failed": 1} and server.requests == []


def test_an_empty_id_is_no_id() -> None:
    # gripcontrol leaves it out; the embedded proxy dropped a second item with id "" as a
    # duplicate, where Pushpin delivers it (GRIP probe).
    assert make_item("c", stream("x"), id="", prev_id="") == {
        "channel": "c", "formats": {"http-stream": {"content": "x"}}
    }
    assert make_item("c", stream("x"), id=0)["id"] == "0"


def test_key_with_iss_is_a_jwt(grip: Any, server: PublishServer) -> None:
    key = b"\x00binary-key-of-thirty-two-bytes!!"
    grip.GRIP_URL = server.url + "/?iss=pushpin&key=base64:" + base64.b64encode(key).decode()
    publish("c", stream("x"), blocking=True)
    scheme, token = server.requests[0].headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert claims["iss"] == "pushpin"
    assert time.time() < claims["exp"] <= time.time() + 600


def test_basic_auth_from_proxy_entry(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    settings.GRIP_PROXIES = [{"control_uri": server.url, "user": "ann", "pass": "pässword"}]
    publish("c", stream("x"), blocking=True)
    expected = "Basic " + base64.b64encode("ann:pässword".encode()).decode()
    assert server.requests[0].headers["Authorization"] == expected


def test_items_that_pile_up_go_in_one_request(grip: Any, server: PublishServer) -> None:
    server.hold()
    publish("first", stream("x"))
    server.wait_for(1)  # in flight, held by the server
    for n in range(10):
        publish(f"ch{n}", stream(str(n)))
    server.release()
    assert get_publisher().flush(WAIT)
    assert [r.channels for r in server.requests] == [["first"], [f"ch{n}" for n in range(10)]]
    assert get_publisher().stats.batches == 2


def test_batch_size_is_bounded(grip: Any, server: PublishServer) -> None:
    grip.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_BATCH_SIZE": 4}
    server.hold()
    publish("first", stream("x"))
    server.wait_for(1)
    for n in range(10):
        publish(f"ch{n}", stream(str(n)))
    server.release()
    assert get_publisher().flush(WAIT)
    assert [len(r.channels) for r in server.requests] == [1, 4, 4, 2]
    assert server.channels == ["first"] + [f"ch{n}" for n in range(10)]


def test_batches_stay_under_pushpins_body_limit(grip: Any, server: PublishServer) -> None:
    big = "x" * 300_000
    publish_items([make_item(f"big{n}", stream(big)) for n in range(5)])
    assert get_publisher().flush(WAIT)
    assert [len(r.channels) for r in server.requests] == [3, 2]
    assert all(r.size <= MAX_PUBLISH_BODY for r in server.requests)
    assert server.channels == [f"big{n}" for n in range(5)]


def test_server_errors_are_retried_until_success(grip: Any, server: PublishServer) -> None:
    server.statuses.extend([503, 502])
    publish("todos", stream("x"))
    assert get_publisher().flush(WAIT)
    assert [r.channels for r in server.requests] == [["todos"]] * 3
    stats = get_publisher().stats
    assert (stats.sent, stats.retried, stats.failed) == (1, 2, 0)


def test_a_bad_request_is_not_retried(grip: Any, server: PublishServer, caplog: Any) -> None:
    server.statuses.extend([400])
    publish("todos", stream("x"))
    assert get_publisher().flush(WAIT)
    assert len(server.requests) == 1
    stats = get_publisher().stats
    assert (stats.sent, stats.retried, stats.failed) == (0, 0, 1)
    assert "'todos'" in caplog.text and "HTTP 400" in caplog.text


def test_one_bad_item_does_not_sink_its_batch(grip: Any, server: PublishServer) -> None:
    server.responder = lambda r: 400 if "bad" in r.channels else 200
    publish_items([make_item(ch, stream("x")) for ch in ("good1", "bad", "good2")])
    assert get_publisher().flush(WAIT)
    delivered = [r.channels for r in server.requests if "bad" not in r.channels]
    assert sum(delivered, []) == ["good1", "good2"]
    stats = get_publisher().stats
    assert (stats.sent, stats.failed, stats.retried) == (2, 1, 0)


def test_retries_are_bounded(grip: Any, server: PublishServer, caplog: Any) -> None:
    grip.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_RETRIES": 2}
    server.responder = lambda r: 500
    publish("todos", stream("x"))
    assert get_publisher().flush(WAIT)
    assert len(server.requests) == 3
    stats = get_publisher().stats
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 2)
    assert "gave up after 3 attempts" in caplog.text


def test_proxy_down_then_back_gets_the_item(settings: Any, publisher: Publisher) -> None:
    """Pushpin is down while a change is published: the item arrives once it is back."""
    port = free_port()
    settings.GRIP_URL = f"http://127.0.0.1:{port}"
    settings.DRF_GRIP = {
        "PUBLISH_RETRIES": 1000,
        "PUBLISH_BACKOFF": 0.01,
        "PUBLISH_BACKOFF_MAX": 0.02,
    }
    failed_once = threading.Event()

    class Signal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retry" in record.getMessage():
                failed_once.set()

    handler = Signal()
    logging.getLogger("drf_grip.publish").addHandler(handler)
    try:
        publish("todos", stream("x"))
        assert failed_once.wait(WAIT)
        srv = PublishServer(port)
        try:
            assert publisher.flush(WAIT)
            assert srv.channels == ["todos"]
        finally:
            srv.stop()
    finally:
        logging.getLogger("drf_grip.publish").removeHandler(handler)
    assert publisher.stats.sent == 1 and publisher.stats.retried >= 1


def test_one_endpoint_down_does_not_hold_up_another(
    settings: Any, server: PublishServer, other_server: PublishServer, publisher: Publisher
) -> None:
    settings.GRIP_PROXIES = [{"control_uri": server.url}, {"control_uri": other_server.url}]
    server.hold()  # the first endpoint hangs
    publish("todos", stream("x"))
    other_server.wait_for(1)
    assert other_server.channels == ["todos"]
    assert server.gate is not None  # still holding the first endpoint's request
    server.release()
    assert publisher.flush(WAIT)
    assert server.channels == ["todos"]
    assert publisher.stats.sent == 2  # one per destination


def test_a_delivered_hook_sees_what_is_queued_behind_at_its_destination(
    settings: Any,
    server: PublishServer,
    other_server: PublishServer,
    publisher: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``queued_behind``: the gateway's repair of a crossed push asks it, from the delivered
    hook, whether the later item still waits behind the one just confirmed at that
    destination (rerender._queued_behind). Each destination answers for its own queue: one
    that already sent "2" does not have it queued; one held on "1" does."""
    from drf_grip.grip import publish_hooks

    settings.GRIP_PROXIES = [{"control_uri": server.url}, {"control_uri": other_server.url}]
    seen: list[tuple[str, bool]] = []
    confirmed = threading.Condition()

    def hook(items: list[dict[str, Any]]) -> None:
        behind = publisher.queued_behind(lambda item: item.get("id") == "2")
        with confirmed:
            seen.extend((item["id"], behind) for item in items)
            confirmed.notify_all()

    monkeypatch.setattr(publish_hooks, "delivered_hooks", [hook])
    server.hold()
    publish("board", stream("v1"), id="1")
    server.wait_for(1)  # "1" in flight to the first destination, held there
    with confirmed:  # and confirmed by the second
        assert confirmed.wait_for(lambda: len(seen) == 1, WAIT)
    publish("board", stream("v2"), id="2")  # behind "1" at the first destination
    other_server.wait_for(2)
    server.release()
    assert publisher.flush(WAIT)
    assert sorted(seen) == [("1", False), ("1", True), ("2", False), ("2", False)]
    assert not publisher.queued_behind(lambda item: True)  # not a lane's thread


def test_an_endpoint_refusing_and_retrying_holds_up_no_publish_to_another(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    """GRIP_PROXIES names two Pushpins and one is down (connection refused): its retries
    wait out their backoff while every publish reaches the other at once, one after another
    (DESIGN.md §4, §9: the live proxy's clients within a second). What the dead one gets
    once back: test_after_an_outage_the_latest_state_of_a_channel_wins."""
    port = free_port()
    settings.GRIP_PROXIES = [{"control_uri": f"http://127.0.0.1:{port}"},
                             {"control_uri": server.url}]
    # A backoff far longer than the whole test: any publish to the live endpoint that
    # waited on the dead one's retry cycle would not arrive before it ends.
    settings.DRF_GRIP = {"PUBLISH_RETRIES": 1000, "PUBLISH_BACKOFF": 60.0,
                         "PUBLISH_BACKOFF_MAX": 60.0}
    for n in range(1, 6):
        publish("board", stream(f"v{n}"), id=str(n), prev_id=str(n - 1))
        server.wait_for(n)  # each one arrives before the next is published
    assert [i["id"] for i in server.items] == ["1", "2", "3", "4", "5"]
    # All while the dead endpoint's lane was still in its first backoff, its items queued.
    stats = publisher.stats
    assert stats.retried <= 1 and stats.pending >= 1, stats
    publisher.close(timeout=0)  # ends the backoff's wait


def test_logs_name_channel_and_endpoint_never_a_key(
    settings: Any, server: PublishServer, publisher: Publisher, caplog: Any
) -> None:
    settings.GRIP_PROXIES = [
        {
            "control_uri": server.url + "/a",
            "control_iss": "me",
            "key": "jwt-signing-key-0123456789abcdef",
        },
        {"control_uri": server.url + "/b", "key": "bearer-token-0123456789"},
        {"control_uri": server.url + "/c", "user": "ann", "pass": "basic-password-0123"},
    ]
    settings.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_RETRIES": 1}
    server.responder = lambda r: 500
    publish("secret-free-channel", stream("x"))
    assert publisher.flush(WAIT)
    sent_auth = {r.headers["Authorization"].split(" ")[1] for r in server.requests}
    assert len(sent_auth) == 3
    assert "secret-free-channel" in caplog.text
    for path in ("/a/publish/", "/b/publish/", "/c/publish/"):
        assert server.url + path in caplog.text
    for secret in ["jwt-signing-key", "bearer-token", "basic-password", "Bearer", *sent_auth]:
        assert secret not in caplog.text


def test_full_queue_drops_count_and_log_the_channel(
    grip: Any, server: PublishServer, caplog: Any
) -> None:
    grip.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_QUEUE_SIZE": 3}
    server.hold()
    publish("first", stream("x"))
    server.wait_for(1)  # in flight: the queue is empty again
    for n in range(5):
        publish(f"ch{n}", stream("x"))  # returns at once even though the queue is full
    stats = get_publisher().stats
    assert (stats.queued, stats.dropped, stats.pending) == (4, 2, 4)
    assert "'ch3'" in caplog.text and "'ch4'" in caplog.text and "full" in caplog.text
    server.release()
    assert get_publisher().flush(WAIT)
    assert server.channels == ["first", "ch0", "ch1", "ch2"]


def test_override_settings_switches_endpoint(
    server: PublishServer, other_server: PublishServer, publisher: Publisher
) -> None:
    with override_settings(GRIP_URL=server.url):
        publish("one", stream("x"))
        assert get_publisher().flush(WAIT)
    with override_settings(GRIP_URL=other_server.url):
        publish("two", stream("x"))
        assert get_publisher().flush(WAIT)
    assert server.channels == ["one"]
    assert other_server.channels == ["two"]


def test_publisher_is_created_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "_publisher", None)
    first = get_publisher()
    assert isinstance(first, Publisher) and get_publisher() is first
    first.close()


def test_close_drops_what_is_queued_and_restarts_on_next_publish(
    grip: Any, server: PublishServer, caplog: Any
) -> None:
    publisher = get_publisher()
    server.hold()
    publish("first", stream("x"))
    server.wait_for(1)
    publish("queued1", stream("x"))
    publish("queued2", stream("x"))
    assert publisher.close(timeout=0) is False
    assert publisher.stats.dropped == 2
    assert "'queued1'" in caplog.text
    server.release()
    publish("after-close", stream("x"))
    assert publisher.flush(WAIT)
    assert server.channels == ["first", "after-close"]


def test_flush_times_out_while_the_proxy_hangs(grip: Any, server: PublishServer) -> None:
    server.hold()
    publish("todos", stream("x"))
    server.wait_for(1)
    assert get_publisher().flush(timeout=0) is False
    server.release()
    assert get_publisher().flush(WAIT) is True


# -- blocking --------------------------------------------------------------------------------


def test_blocking_publish_has_arrived_when_it_returns(grip: Any, server: PublishServer) -> None:
    publish("todos", stream("x"), blocking=True)
    assert server.channels == ["todos"]


def test_blocking_publish_raises_naming_failed_endpoints_only(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    settings.GRIP_PROXIES = [
        {"control_uri": down, "key": "never-shown-key"},
        {"control_uri": server.url, "key": "other-key"},
    ]
    settings.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_RETRIES": 1}
    with pytest.raises(PublishError) as info:
        publish("todos", stream("x"), blocking=True)
    assert info.value.failed == [down + "/publish/"]
    assert "never-shown-key" not in str(info.value)
    assert "'todos'" in str(info.value)
    assert server.channels == ["todos"]  # the healthy endpoint still got it


def test_a_failed_blocking_publish_is_caught_as_django_grip_code_catches_it(
    settings: Any, publisher: Publisher
) -> None:
    # Found by a probe: gripcontrol (django-grip's publish) raises ValueError when a
    # blocking publish fails; code written for it catches that, and PublishError got past.
    settings.GRIP_URL = f"http://127.0.0.1:{free_port()}"
    settings.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_RETRIES": 1}
    with pytest.raises(ValueError):
        publish("todos", stream("x"), blocking=True)


# -- where items go without configuration ----------------------------------------------------


def test_unconfigured_publishes_to_embedded_url_and_warns_once(
    settings: Any, server: PublishServer, publisher: Publisher, caplog: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(destinations, "_warned_unconfigured", False)
    settings.DRF_GRIP = {"EMBEDDED_URL": server.url}
    publish("one", stream("x"))
    publish("two", stream("x"))
    assert publisher.flush(WAIT)
    assert [r.path for r in server.requests][0] == "/_grip/publish/"
    assert server.requests[0].headers["Authorization"] == f"Bearer {embedded_key()}"
    assert server.channels == ["one", "two"]
    warnings = [r for r in caplog.records if "GRIP_URL is unset" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert server.url + "/_grip" in warnings[0].getMessage()
    assert embedded_key() not in caplog.text


def test_the_embedded_default_target_is_built_once_while_the_settings_stay(
    settings: Any, server: PublishServer, publisher: Publisher, monkeypatch: Any
) -> None:
    """A shell publishing to ``runserver``'s embedded proxy made its endpoint afresh on every
    publish (its key an HMAC of SECRET_KEY), so no target was kept for it."""
    monkeypatch.setattr(destinations, "_warned_unconfigured", False)
    settings.DRF_GRIP = {"EMBEDDED_URL": server.url}
    [first] = destinations.targets()
    [again] = destinations.targets()
    assert again is first
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    [after] = destinations.targets()
    assert after is not first
    assert after.headers()["Authorization"] == f"Bearer {embedded_key()}"


def test_an_embedded_url_with_credentials_and_a_query_is_published_to_and_never_logged(
    settings: Any, server: PublishServer, publisher: Publisher, caplog: Any, monkeypatch: Any
) -> None:
    """``EMBEDDED_URL`` may carry a user:password and a query (a reverse proxy in front of
    ``runserver``). The warning printed it whole, and ``/_grip`` was appended after the
    query, so the publishes went to ``/?key=.../_grip`` (black-box probe)."""
    monkeypatch.setattr(destinations, "_warned_unconfigured", False)
    host = server.url.split("://", 1)[1]
    settings.DRF_GRIP = {"EMBEDDED_URL": f"http://emb:SEKRITPW@{host}/?key=SEKRITQ"}
    publish("one", stream("x"))
    assert publisher.flush(WAIT)
    assert [r.path for r in server.requests] == ["/_grip/publish/"]
    assert server.channels == ["one"]
    assert "GRIP_URL is unset" in caplog.text
    assert "SEKRIT" not in caplog.text


def test_local_sink_replaces_the_network_hop(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    settings.DRF_GRIP = {"EMBEDDED_URL": server.url}
    sink = RecordingSink()
    register_local_sink(sink)
    try:
        publish("todos", stream("x"), id="1")
        assert publisher.flush(WAIT)
    finally:
        unregister_local_sink(sink)
    assert sink.items == [make_item("todos", stream("x"), id="1")]
    assert server.requests == []


@pytest.mark.django_db(transaction=True)
def test_capture_published_with_send_still_sends_to_the_embedded_url(
    settings: Any, server: PublishServer, publisher: Publisher
) -> None:
    """``capture_published(send=True)`` "also sends as usual": in a process with no proxy
    of its own (a shell, a worker beside ``runserver``) that is ``EMBEDDED_URL``. The
    outbox, a sink of this process, was taken for an embedded proxy running here, and
    nothing went out (publishing probe: watchers never woke)."""
    from drf_grip.test import capture_published, wait_published
    from tests.testapp.models import Todo

    settings.DRF_GRIP = {"EMBEDDED_URL": server.url}
    with capture_published(send=True) as outbox:
        publish("todos", stream("x"), id="1")
        Todo.objects.create(title="sent")
        wait_published(WAIT)
    assert publisher.flush(WAIT)
    # What the change published depends on what earlier tests subscribed (a live URL, the
    # model's channel): whatever it was, it went out as it was captured.
    assert sorted(server.channels) == sorted(outbox.channels)
    assert "todos" in server.channels and len(server.channels) > 1


def test_local_sink_beside_an_endpoint_and_a_failing_sink(grip: Any, server: PublishServer) -> None:
    good, bad = RecordingSink(), RecordingSink()
    bad.fail = True
    register_local_sink(good)
    register_local_sink(bad)
    publish("todos", stream("x"))
    assert get_publisher().flush(WAIT)
    assert server.channels == ["todos"]
    assert [i["channel"] for i in good.items] == ["todos"]
    stats = get_publisher().stats
    assert (stats.sent, stats.failed) == (2, 1)


# -- processes -------------------------------------------------------------------------------

EXIT_SCRIPT = """
import sys, django
from django.conf import settings
settings.configure(
    SECRET_KEY="x" * 40,
    GRIP_URL=sys.argv[1],
    DRF_GRIP={"PUBLISH_FLUSH_TIMEOUT": float(sys.argv[2]), "PUBLISH_READ_TIMEOUT": 60},
)
django.setup()
from gripcontrol import HttpStreamFormat
from drf_grip import publish
for n in range(3):
    publish("exit%d" % n, HttpStreamFormat("x"))
print("script done", flush=True)
"""


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a Python process of its own, from the project's root, configuring its
    own settings (pytest-django's are not passed on)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_script(url: str, flush_timeout: float) -> subprocess.CompletedProcess[str]:
    return run_python(EXIT_SCRIPT, url, str(flush_timeout))


def test_items_published_just_before_exit_are_flushed(server: PublishServer) -> None:
    result = run_script(server.url, 10)
    assert result.returncode == 0, result.stderr
    assert sorted(server.channels) == ["exit0", "exit1", "exit2"]


def test_flush_at_exit_is_bounded(server: PublishServer) -> None:
    server.hold()  # the proxy never answers
    result = run_script(server.url, 0.2)
    assert result.returncode == 0, result.stderr
    assert "script done" in result.stdout
    assert "not delivered" in result.stderr or "did not finish" in result.stderr


def test_a_send_from_the_exiting_thread_ends_at_the_exits_deadline(
    server: PublishServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From Python 3.12 no thread starts during interpreter shutdown, so what is published
    at exit is sent from the exiting thread itself. Those sends waited out
    ``PUBLISH_RETRIES`` of network timeouts past the exit's deadline: a shell whose proxy
    did not answer took 16 s, not 1.5, to exit (CI on 3.12). Here no thread can start, as
    at exit; the publish gives up at the deadline and says so."""
    from drf_grip.grip import lanes

    settings.GRIP_URL = server.url
    settings.DRF_GRIP = {"PUBLISH_FLUSH_TIMEOUT": 1.0, "PUBLISH_READ_TIMEOUT": 60}
    monkeypatch.setattr(lanes, "_exit_deadline", None, raising=False)
    monkeypatch.setattr(Publisher, "_start", lambda self, lane: False)
    server.hold()  # the proxy never answers
    publisher = Publisher()
    started = time.monotonic()
    publisher.enqueue([make_item("at-exit", {"http-stream": {"content": "x"}})])
    took = time.monotonic() - started
    assert server.requests, "nothing was sent"
    assert took < 1.0 + WAIT / 10, f"the send went on {took:.1f}s past a 1.0s deadline"
    assert publisher.stats.failed == 1
    # Not the exit's clock: a thread that cannot start is not always the exit.
    assert lanes._exit_deadline is None


SIGTERM_SCRIPT = """
import sys, django
from django.conf import settings
settings.configure(
    SECRET_KEY="x" * 40,
    ROOT_URLCONF=[],
    GRIP_URL=sys.argv[1],
    DRF_GRIP={"PUBLISH_FLUSH_TIMEOUT": 1.0, "PUBLISH_READ_TIMEOUT": 60},
)
django.setup()
import uvicorn
from gripcontrol import HttpStreamFormat
from drf_grip import publish
from drf_grip.asgi import get_asgi_application

publish("before-sigterm", HttpStreamFormat("x"))  # queued: the proxy does not answer yet
uvicorn.Server(uvicorn.Config(get_asgi_application(), port=0, log_level="info")).run()
"""


def test_an_origin_stopped_with_sigterm_flushes_what_is_queued(server: PublishServer) -> None:
    """Publishing probe: uvicorn (and ``runserver``) stop on SIGTERM by raising it again
    once they have shut down, with the default handler back, so the process died without
    ``atexit``: what was queued for a proxy that was slow or restarting (a deploy) was
    dropped without a word, in 0.13 s. The origin app now runs the bounded exit flush on
    lifespan shutdown; here the proxy never answers, so the flush says what it left."""
    server.hold()  # the proxy does not answer
    logged = _served_then_stopped(server, [SIGTERM_SCRIPT, server.url])
    assert "did not finish within 1.0s" in logged or "not delivered" in logged, logged


def _served_then_stopped(
    server: PublishServer, script: list[str], request: Callable[[str], None] | None = None
) -> str:
    """Run ``python -c *script``, a uvicorn server publishing to ``server``; once it serves,
    ``request(its base URL)``, then SIGTERM: what it logged."""
    process = subprocess.Popen(
        [sys.executable, "-c", *script],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            found = re.search(r"running on (http://\S+)", line)
            if found:
                break
        assert found, "".join(lines)
        if request is not None:
            request(found[1])
        server.wait_for(1)  # the publish reaches the proxy from the publisher's own thread
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=30)[1]
    finally:
        process.kill()
        server.release()
    return "".join(lines) + rest


SERVING_SCRIPT = """
import sys, django
from django.conf import settings
urlpatterns = []  # every path a 404
settings.configure(
    SECRET_KEY="x" * 40,
    ROOT_URLCONF="__main__",
    GRIP_URL=sys.argv[1],
    DRF_GRIP={"PUBLISH_FLUSH_TIMEOUT": 1.0, "PUBLISH_READ_TIMEOUT": 60},
)
django.setup()
import importlib, uvicorn
from gripcontrol import HttpStreamFormat
from drf_grip import publish

served = importlib.import_module(sys.argv[2]).get_asgi_application()

async def app(scope, receive, send):
    if scope["type"] == "http":
        publish("while-serving", HttpStreamFormat("x"))  # a view's change, say
    await served(scope, receive, send)

uvicorn.Server(uvicorn.Config(app, port=0, log_level="info")).run()
"""


@pytest.mark.parametrize(
    ("module", "warned"), [("django.core.asgi", True), ("drf_grip.asgi", False)]
)
def test_serving_an_app_that_cannot_flush_at_sigterm_says_so(
    server: PublishServer, module: str, warned: bool
) -> None:
    """Publishing probe: uvicorn serving Django's own ASGI app exited 0.67 s after SIGTERM
    with publishes still queued, and said nothing (Django's app refuses the lifespan whose
    shutdown flushes them; uvicorn's SIGTERM skips ``atexit``). The first publish of such a
    process says so; one served by ``drf_grip.asgi`` flushes, and says nothing of it."""
    server.hold()  # the proxy does not answer: what is queued stays queued

    def get(url: str) -> None:
        try:
            urllib.request.urlopen(url + "/", timeout=30).close()
        except urllib.error.HTTPError:
            pass  # Django's 404 for "/": served all the same

    logged = _served_then_stopped(server, [SERVING_SCRIPT, server.url, module], get)
    assert ("changes still queued for the GRIP proxy when it stops are lost" in logged) is warned
    assert ("not delivered" in logged or "did not finish" in logged) is not warned, logged


SAVE_THEN_EXIT_SCRIPT = """
import atexit, sys, time
import django
from django.conf import settings
from tests import settings as base

# Registered first, so it runs last (atexit is last-in first-out): after every flush.
atexit.register(lambda: print("flushed in %.2f" % (time.monotonic() - saved), flush=True))
settings.configure(**{
    **{name: getattr(base, name) for name in dir(base) if name.isupper()},
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "GRIP_URL": sys.argv[1],
    "DRF_GRIP": {"PUBLISH_FLUSH_TIMEOUT": float(sys.argv[2]), "PUBLISH_READ_TIMEOUT": 60},
})
django.setup()
from django.core.management import call_command
call_command("migrate", run_syncdb=True, verbosity=0)
from tests.testapp.models import Todo
Todo.objects.create(title="saved just before exit")
saved = time.monotonic()
"""


def test_a_save_just_before_exit_waits_at_most_the_flush_timeout(server: PublishServer) -> None:
    """``manage.py shell -c`` saving a model while the proxy does not answer: the change
    worker's exit handler and the publisher's each waited the whole ``PUBLISH_FLUSH_TIMEOUT``
    (twice the documented bound); they now share one deadline. The time is measured inside
    the process, from the save to the last exit handler, so a slow start does not count."""
    server.hold()  # the proxy never answers
    timeout = 1.5
    result = run_python(SAVE_THEN_EXIT_SCRIPT, server.url, str(timeout))
    assert result.returncode == 0, result.stderr
    assert server.requests, "the save published nothing"
    assert "did not finish within 1.5s" in result.stderr
    flushed = float(result.stdout.split("flushed in ")[1])
    # One bound, not two: the waits end at the deadline, so only scheduling adds to it.
    assert flushed < 1.5 * timeout, result.stdout


SAVE_WITH_HOLDS_IN_THREE_BUCKETS_SCRIPT = """
import sys
import django
from django.conf import settings
from tests import settings as base

settings.configure(**{
    **{name: getattr(base, name) for name in dir(base) if name.isupper()},
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "GRIP_URL": sys.argv[1],
    "DRF_GRIP": {"HINT_BUCKET_SIZE": 2, "PUBLISH_FLUSH_TIMEOUT": 5.0},
})
django.setup()
from django.core.management import call_command
call_command("migrate", run_syncdb=True, verbosity=0)
from drf_grip.rest import channels as names
from drf_grip.rest.buckets import assign_buckets
from drf_grip.rest.versions import counters_and_hold_versions
from tests.testapp.models import Todo

channel = names.list_channel(Todo)
for n in range(6):  # six long-polls of the list held, two a bucket, as a view counts them
    counters, held = counters_and_hold_versions([channel])
    assign_buckets([channel], held, counters, 60, client="client-%d" % n)
Todo.objects.create(title="saved just before exit")
"""


def test_a_save_just_before_exit_hints_every_bucket_of_its_held_clients(
    server: PublishServer,
) -> None:
    """``manage.py shell -c`` saving a model whose private list is held by more clients than
    a hint bucket takes (deploying probe, ``HINT_BUCKET_SIZE=2``, 12 long-polls): only the
    first bucket was hinted; the pacer thread that hints the others one after another died
    with the process, and their clients never got the change."""
    result = run_python(SAVE_WITH_HOLDS_IN_THREE_BUCKETS_SCRIPT, server.url)
    assert result.returncode == 0, result.stderr
    hinted = set(server.channels)
    assert {"drf.testapp.todo", "drf.testapp.todo~b1", "drf.testapp.todo~b2"} <= hinted, hinted


SAVE_WHILE_THE_CACHE_IS_DOWN_SCRIPT = """
import socket, sys
import django
from django.conf import settings
from tests import settings as base

closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
settings.configure(**{
    **{name: getattr(base, name) for name in dir(base) if name.isupper()},
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "CACHES": {
        **base.CACHES,
        "realtime": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:%d" % closed.getsockname()[1],
        },
    },
    "GRIP_URL": sys.argv[1],
    "DRF_GRIP": {"PUBLISH_FLUSH_TIMEOUT": 2.0, "VERSION_CACHE": "realtime"},
})
django.setup()
from django.core.management import call_command
call_command("migrate", run_syncdb=True, verbosity=0)
from tests.testapp.models import Todo
todo = Todo.objects.create(title="saved while Redis is down")
print("saved %d" % todo.pk, flush=True)
"""


def test_a_change_the_state_cache_kept_from_publishing_is_announced_at_exit(
    server: PublishServer,
) -> None:
    """``manage.py shell -c`` (or a worker stopped by a deploy) saving while Redis does not
    answer: publishing waits for the cache, and the process exited first. The change was
    dropped with one line, "did not finish", naming nothing, and the SSE and gateway
    subscribers never got it (publishing probe). It is now announced with hints that need
    no cache, to every hold the views may have made, and the log names the model."""
    result = run_python(SAVE_WHILE_THE_CACHE_IS_DOWN_SCRIPT, server.url)
    assert result.returncode == 0, result.stderr
    pk = int(result.stdout.split("saved ")[1])
    channels = set(server.channels)
    assert {"drf.testapp.todo", "drf.testapp.todo~b63", f"drf.testapp.todo.{pk}"} <= channels
    assert "drf.testapp.todo.*shared" in channels  # the shared views' holds
    assert "drf.ws.*recover" in channels  # gateway connections: closed, to subscribe again
    assert "changes of testapp.Todo were not published before exit" in result.stderr


@pytest.mark.django_db
def test_announcing_many_objects_at_exit_names_model_wide_channels_first() -> None:
    """A shell deleted a post with 1,000 comments and exited before they were published: the
    announcement named each comment's channel, as all 64 hint buckets, before the post's,
    and a publish queue of 10,000 dropped the post's hints (publishing probe). Past
    ``FALLBACK_OBJECTS`` objects of a model, its bulk channel stands for them, and model-wide
    channels go first."""
    from drf_grip.rest.changes import Changes
    from drf_grip.rest.publishing import FALLBACK_OBJECTS, publish_without_state
    from drf_grip.test import capture_published, wait_published
    from tests.testapp.models import Comment, Post

    changes = Changes()
    changes.add(Comment, range(1, 1001), deleted=True)
    changes.add(Post, [7], deleted=True)
    with capture_published() as outbox:
        publish_without_state(changes)
        wait_published()
    channels = outbox.channels
    assert len(channels) < 1000, len(channels)
    assert "drf.testapp.comment.*" in channels and "drf.testapp.comment.5" not in channels
    one_object = re.compile(r"^drf\.testapp\.\w+\.\d+(~b\d+)?$")
    first = next(i for i, c in enumerate(channels) if one_object.match(c))
    assert channels[first].startswith("drf.testapp.post.7")
    assert all(one_object.match(c) for c in channels[first:] if c.startswith("drf.testapp."))
    few = Changes()
    few.add(Comment, range(1, FALLBACK_OBJECTS + 1), deleted=True)
    with capture_published() as outbox:
        publish_without_state(few)
        wait_published()
    assert f"drf.testapp.comment.{FALLBACK_OBJECTS}" in outbox.channels


LATER_THEN_EXIT_SCRIPT = """
import sys, django
from django.conf import settings
settings.configure(SECRET_KEY="x" * 40, GRIP_URL=sys.argv[1])
django.setup()
from gripcontrol import HttpStreamFormat
from drf_grip import publish
from drf_grip.grip.later import call_later
# What a gateway subscription's settle does 0.4 s after its answer left (gateway/view.py).
call_later(0.4, lambda: publish("settled", HttpStreamFormat("x")))
"""


def test_a_call_scheduled_just_before_a_process_stops_still_runs(server: PublishServer) -> None:
    """A worker restarted (a deploy, an autoreload) right after a gateway subscription was
    answered: its settle, a call scheduled for 0.4 s later on a daemon thread, was dropped
    with the process, and the change it was to send reached the client only with the next
    change. The process now runs what it scheduled before the publisher's exit flush."""
    result = run_python(LATER_THEN_EXIT_SCRIPT, server.url)
    assert result.returncode == 0, result.stderr
    assert server.channels == ["settled"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_publishes_with_its_own_thread(grip: Any, server: PublishServer) -> None:
    publish("parent", stream("x"))
    assert get_publisher().flush(WAIT)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            publish("child", stream("x"))
            code = 0 if get_publisher().flush(WAIT) and get_publisher().stats.sent == 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.channels == ["parent", "child"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_target_is_built_once_per_endpoint_and_never_shared_with_a_forked_child(
    grip: Any, server: PublishServer
) -> None:
    """Each publish named its destinations afresh, and each HTTP one parsed its URL again for
    a target the lane dropped (the lane keeps the first). One target per endpoint now; a
    forked child builds its own, not sharing the parent's kept connection or its lock."""
    from drf_grip.grip.destinations import targets

    [first] = targets()
    publish("parent", stream("x"))
    assert get_publisher().flush(WAIT)
    [again] = targets()
    assert again is first
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            [own] = targets()
            publish("child", stream("x"))
            code = 0 if own is not first and get_publisher().flush(WAIT) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.channels == ["parent", "child"]
    grip.GRIP_PREFIX = "changed-"  # settings changed: the endpoint is read again
    [after] = targets()
    assert after is not first and after.name == first.name


# -- manage.py grip_publish ------------------------------------------------------------------


def test_command_sends_every_format_by_default(grip: Any, server: PublishServer) -> None:
    grip.GRIP_PREFIX = "app-"
    out = io.StringIO()
    call_command("grip_publish", "todos", "hello", "--id", "2", "--prev-id", "1", stdout=out)
    [item] = server.items
    assert item == {
        "channel": "app-todos",
        "id": "2",
        "prev-id": "1",
        "formats": {
            "http-response": {"body": "hello\n"},
            "http-stream": {"content": "hello\n"},
            "ws-message": {"content": "hello"},
        },
    }
    assert "app-todos" in out.getvalue() and server.url in out.getvalue()


def test_command_ends_http_payloads_with_one_newline(grip: Any, server: PublishServer) -> None:
    """The README's ``grip_publish test "hello"`` shows a line in a ``curl -N`` stream (as
    ``pushpin-publish`` does); content that has its newline, or ``--no-eol``, is kept as is."""
    call_command("grip_publish", "test", "hello", stdout=io.StringIO())
    call_command("grip_publish", "test", "line\n", stdout=io.StringIO())
    call_command("grip_publish", "test", "raw", "--no-eol", stdout=io.StringIO())
    assert [i["formats"]["http-stream"]["content"] for i in server.items] == [
        "hello\n", "line\n", "raw",
    ]
    assert [i["formats"]["http-response"]["body"] for i in server.items] == [
        "hello\n", "line\n", "raw",
    ]
    assert [i["formats"]["ws-message"]["content"] for i in server.items] == [
        "hello", "line\n", "raw",
    ]


def test_command_hint_and_close(grip: Any, server: PublishServer) -> None:
    call_command("grip_publish", "todos", "--action", "hint", stdout=io.StringIO())
    call_command(
        "grip_publish", "todos", "--action", "close", "--format", "ws-message", stdout=io.StringIO()
    )
    assert [i["formats"] for i in server.items] == [
        {"http-response": {"action": "hint"}, "http-stream": {"action": "hint"}},
        {"ws-message": {"action": "close"}},
    ]


def test_command_response_headers(grip: Any, server: PublishServer) -> None:
    call_command(
        "grip_publish", "todos", "{}", "--format", "http-response",
        "--header", 'ETag: "v2"', "--header", "Content-Type: application/json",
        stdout=io.StringIO(),
    )
    assert server.items[0]["formats"] == {
        "http-response": {
            "body": "{}\n",
            "headers": {"ETag": '"v2"', "Content-Type": "application/json"},
        }
    }


def test_command_rejects_bad_usage(grip: Any, server: PublishServer) -> None:
    with pytest.raises(CommandError, match="does not support"):
        call_command("grip_publish", "todos", "--action", "hint", "--format", "ws-message")
    with pytest.raises(CommandError, match="required"):
        call_command("grip_publish", "todos")
    assert server.requests == []


def test_command_fails_clearly_when_the_proxy_is_down(settings: Any, publisher: Publisher) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    settings.GRIP_URL = down + "/?key=hidden-key-value"
    settings.DRF_GRIP = {**FAST_RETRIES, "PUBLISH_RETRIES": 0}
    with pytest.raises(CommandError) as info:
        call_command("grip_publish", "todos", "hello")
    assert down + "/publish/" in str(info.value)
    assert "hidden-key-value" not in str(info.value)


# -- django-grip's publish(callback=) and get_pubcontrol() -----------------------------------------


def recording_callback() -> tuple[threading.Event, list[tuple[bool, str]], Callable[[bool, str], None]]:
    done = threading.Event()
    results: list[tuple[bool, str]] = []

    def callback(success: bool, message: str) -> None:
        results.append((success, message))
        done.set()

    return done, results, callback


def test_publish_with_a_callback_tells_it_once_every_destination_answered(
    grip: Any, server: PublishServer
) -> None:
    done, results, callback = recording_callback()
    publish("todos", stream("x\n"), callback=callback)
    assert done.wait(WAIT)
    assert results == [(True, "")]
    assert server.channels == ["todos"]


def test_publish_callback_hears_of_a_failure_without_the_key(
    grip: Any, server: PublishServer
) -> None:
    grip.GRIP_URL = server.url + "/?iss=me&key=very-secret-publish-key-0123456789abc"
    server.responder = lambda received: 400
    done, results, callback = recording_callback()
    publish("todos", stream("x\n"), callback=callback)
    assert done.wait(WAIT)
    [(success, message)] = results
    assert success is False and "todos" in message and "very-secret" not in message


def test_blocking_publish_with_a_callback_calls_it_then_raises_on_failure(
    grip: Any, server: PublishServer
) -> None:
    server.responder = lambda received: 400
    results: list[tuple[bool, str]] = []
    with pytest.raises(PublishError):
        publish("todos", stream("x\n"), blocking=True, callback=lambda ok, msg: results.append((ok, msg)))
    assert results and results[0][0] is False


def test_get_pubcontrol_publishes_as_gripcontrol_did(grip: Any, server: PublishServer) -> None:
    from pubcontrol import Item

    grip.GRIP_PREFIX = "app-"
    pub = drf_grip.get_pubcontrol()
    pub.publish("raw", Item(stream("a\n"), id="2", prev_id="1"), blocking=True)
    pub.publish_http_response("poll", "body\n", blocking=True)
    pub.publish_http_stream("stream", b"chunk\n", blocking=True)
    # gripcontrol's GripPubControl never applied GRIP_PREFIX; django-grip's publish() did.
    assert server.channels == ["raw", "poll", "stream"]
    first, second, third = server.items
    assert (first["id"], first["prev-id"]) == ("2", "1")
    assert second["formats"]["http-response"]["body"] == "body\n"
    assert third["formats"]["http-stream"]["content"] == "chunk\n"


def test_after_an_outage_the_latest_state_of_a_channel_wins(grip: Any, server: PublishServer) -> None:
    """A retried item whose channel got newer items meanwhile is replaced by the newest,
    which carries the first one's prev-id: subscribers never move back to an older state."""
    server.statuses.extend([503, 503])
    publish("board", stream("v1"), id="1", prev_id="0")
    server.wait_for(1)  # the first attempt failed; the retry waits its backoff
    publish("board", stream("v2"), id="2", prev_id="1")
    publish("board", stream("v3"), id="3", prev_id="2")
    publish("log", stream("a"))  # items without an id are never merged
    publish("log", stream("b"))
    assert get_publisher().flush(WAIT)
    delivered = list(server.requests[-1].body["items"])
    board = [item for r in server.requests[2:] for item in r.body["items"] if item["channel"] == "board"]
    assert board == [
        {"channel": "board", "id": "3", "prev-id": "0",
         "formats": {"http-stream": {"content": "v3"}}}
    ]
    assert [i["formats"]["http-stream"]["content"] for r in server.requests[2:]
            for i in r.body["items"] if i["channel"] == "log"] == ["a", "b"]
    assert delivered and get_publisher().stats.superseded == 2


def test_a_retried_item_is_rewritten_again_with_what_happened_since(
    grip: Any, server: PublishServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry sent the bytes its first attempt encoded, so a rewrite that depends on what
    happened meanwhile had no say (a push that must now skip a gateway subscriber answered
    ahead of it: tests/integration/test_gateway_ws.py, a Pushpin back from a restart gave
    that subscriber an older render). Such an item goes back to its lane and is sent as
    the rewrite now makes it; one that rewrites the same is retried as it was."""
    from drf_grip.grip import publish_hooks

    skip: list[str] = []

    def rewrite(item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "meta": {"skip_users": ",".join(skip)}} if skip else item

    monkeypatch.setattr(publish_hooks, "item_rewrites", [rewrite])
    server.statuses.extend([503])
    publish("board", stream("v1"), id="1", prev_id="0")
    server.wait_for(1)  # the first attempt failed; the retry waits its backoff
    skip.append("answered-ahead")
    assert get_publisher().flush(WAIT)
    first, *retries = [r.body["items"] for r in server.requests]
    assert "meta" not in first[0]
    assert retries and all(i[0]["meta"] == {"skip_users": "answered-ahead"} for i in retries)
    assert len(retries) == 1  # rewritten once, then sent


def test_a_proxy_back_after_an_outage_gets_the_items_within_a_second(
    settings: Any, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listened at the publish port (a proxy restarting). A proxy back while the
    backoff waited 1.6 s got the items only when that wait ended, and its clients waited as
    long (DESIGN.md §4: within a second; the backoff grows to ``PUBLISH_BACKOFF_MAX``, 10 s).
    While the connection is refused, the endpoint is tried again every
    ``DOWN_PROBE_INTERVAL``; only the backoff's own attempts count as retries."""
    from drf_grip.grip import transports

    monkeypatch.setattr(transports.random, "uniform", lambda low, high: high)  # no jitter
    fourth_retry = threading.Event()

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retry 4 of" in record.getMessage():
                fourth_retry.set()

    handler = Retries(logging.WARNING)
    logging.getLogger("drf_grip.publish").addHandler(handler)
    port = free_port()  # nothing listens there yet
    settings.GRIP_URL = f"http://127.0.0.1:{port}"
    settings.DRF_GRIP = {"PUBLISH_BACKOFF": 0.2, "PUBLISH_BACKOFF_MAX": 10.0}
    try:
        publish("board", stream("v1"), id="1", prev_id="0")
        # Attempts at 0, 0.2, 0.6 and 1.4 s; the fourth retry waits until 3.0 s.
        assert fourth_retry.wait(WAIT)
    finally:
        logging.getLogger("drf_grip.publish").removeHandler(handler)
    server = PublishServer(port=port)
    try:
        back = time.monotonic()
        server.wait_for(1)
        late = time.monotonic() - back
        assert late < 1.0, f"the proxy got the items {late:.2f} s after it was back"
        assert [i["id"] for i in server.items] == ["1"]
        assert publisher.stats.retried == 4
    finally:
        server.stop()


def test_coalesce_keeps_a_streams_last_event_before_close() -> None:
    from drf_grip.grip.lanes import coalesce

    items = [
        {"channel": "c", "id": "1", "prev-id": "0", "formats": {"http-stream": {"content": "a"}}},
        {"channel": "c", "id": "2", "prev-id": "1", "formats": {"http-stream": {"content": "gone"}}},
        {"channel": "c", "id": "3", "prev-id": "2", "formats": {"http-stream": {"action": "close"}}},
    ]
    kept, dropped = coalesce(items)
    assert dropped == 1
    assert [(i["id"], i["prev-id"]) for i in kept] == [("2", "0"), ("3", "2")]


def test_posts_reuse_one_kept_alive_connection_and_token(settings, publisher):
    """A publish endpoint that keeps connections alive (the embedded proxy's; Pushpin 1.36's
    closes every one): a new TCP connection and a new JWT per POST were a sixth of the
    publisher's time."""
    server = PublishServer(keep_alive=True)
    try:
        settings.GRIP_PROXIES = [{"control_uri": server.url, "control_iss": "me", "key": "k" * 32}]
        for i in range(5):
            publish("c", stream(str(i)), blocking=False)
            assert get_publisher().flush(WAIT)
        assert len(server.requests) == 5 and server.connections == 1
        assert len({r.headers["Authorization"] for r in server.requests}) == 1
        # The server drops the idle connection: the next POST finds it closed, opens a new
        # one and loses nothing.
        server.drop_idle = True
        publish("c", stream("5"), blocking=False)
        assert get_publisher().flush(WAIT)
        publish("c", stream("6"), blocking=False)
        assert get_publisher().flush(WAIT)
        assert [i["formats"]["http-stream"]["content"] for i in server.items][-2:] == ["5", "6"]
        assert server.connections == 2 and get_publisher().stats.failed == 0
    finally:
        server.release()


def test_coalesce_merges_only_a_chain_this_queue_holds_whole() -> None:
    """Ids are counters every process moves: 2 was published by another process, so 1 and
    3 must both go, or 3 would name prev-id 0 and Pushpin would hold 2 back for 5 s."""
    from drf_grip.grip.lanes import coalesce

    items = [
        {"channel": "c", "id": "1", "prev-id": "0", "formats": {"http-response": {}}},
        {"channel": "c", "id": "3", "prev-id": "2", "formats": {"http-response": {}}},
        {"channel": "c", "id": "4", "prev-id": "3", "formats": {"http-response": {}}},
        {"channel": "d", "id": "9", "formats": {"http-response": {}}},
        {"channel": "d", "id": "10", "prev-id": "9", "formats": {"http-response": {}}},
    ]
    kept, dropped = coalesce(items)
    assert [(i["channel"], i["id"], i.get("prev-id")) for i in kept] == [
        ("c", "1", "0"), ("c", "4", "2"), ("d", "10", None)
    ]
    assert dropped == 2


def test_items_that_reach_no_client_are_not_sent_to_fanout(
    grip: Any, server: PublishServer, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fastly Fanout takes an item only with an ``http-response``, ``http-stream`` or
    ``ws-message`` format (its publishing API reference); Pushpin skips others. drf-grip's
    sequence reset (an item with only its own format, ``rest.shared._publish_turn``) would
    have made Fanout refuse the whole batch, the render after it too. Fanout does not get
    it; Pushpin and other GRIP proxies do."""
    from drf_grip.conf import GripEndpoint
    from drf_grip.grip import destinations, transports

    fanout = transports.HttpTarget(GripEndpoint("https://api.fastly.com/service/abc"))
    legacy = transports.HttpTarget(GripEndpoint("https://api.fanout.io/realm/abc"))
    assert fanout.client_formats_only and legacy.client_formats_only
    assert not transports.HttpTarget(GripEndpoint(server.url)).client_formats_only

    reset = {"drf-grip-sequence": {}}
    publish("pushpin", reset)
    publish("pushpin", stream("x"), id="1")
    assert publisher.flush(WAIT)
    assert server.channels == ["pushpin", "pushpin"]

    made = transports.HttpTarget.__init__

    def as_fanout(self: Any, endpoint: Any) -> None:
        made(self, endpoint)
        self.client_formats_only = True

    monkeypatch.setattr(transports.HttpTarget, "__init__", as_fanout)
    monkeypatch.setattr(destinations, "_http_targets", {})  # built again, as Fanout's
    fresh = Publisher()
    monkeypatch.setattr(publisher_module, "_publisher", fresh)
    publish("fanout", reset)
    publish("fanout", stream("y"), id="2")
    assert fresh.flush(WAIT)
    fresh.close(timeout=WAIT)
    assert server.channels == ["pushpin", "pushpin", "fanout"]
    assert server.items[-1]["formats"] == {"http-stream": {"content": "y"}}
