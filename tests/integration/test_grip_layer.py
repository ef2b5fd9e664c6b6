"""The GRIP layer through a real Pushpin: who counts as proxied, what a direct client gets,
bad WebSocket-over-HTTP input, publishing while Pushpin is down, and one test per django-grip
bug listed in ``shared/PUSHPIN.md`` (last section) showing drf-grip gets it right.

Views: the django-grip README's (``/seed/``), the harness's raw hold (``/harness/hold/<ch>/``)
and a keep-alive stream defined here.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import jwt
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import include, path
from gripcontrol import HttpResponseFormat

from drf_grip import publish, set_hold_stream
from drf_grip.grip.publisher import get_publisher
from drf_grip.testing import OriginServer, PushpinServer, find_pushpin, free_port, pushpin_missing

# Data with backslashes, quotes and a newline: django-grip's cstring encoding tripled the
# backslashes, so the client read different bytes than the view set.
KEEP_ALIVE = 'ka \\n \\\\ "q"\n'


def keep_alive_stream(request: HttpRequest, channel: str) -> HttpResponse:
    set_hold_stream(request, channel, keep_alive=KEEP_ALIVE, keep_alive_timeout=1)
    return HttpResponse("[open]\n", content_type="text/plain")


urlpatterns = [
    path("", include("tests.urls")),
    path("grip/keep-alive/<str:channel>/", keep_alive_stream),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.timeout(60)]


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_pushpin(origin_server: OriginServer) -> Iterator[PushpinServer]:
    """Another private Pushpin in front of the same app, for "which proxy got it" tests."""
    if find_pushpin() is None:
        pushpin_missing()
    with PushpinServer(origin_server.port) as server:
        yield server


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def new_channel() -> str:
    return f"grip-{uuid.uuid4().hex[:12]}"


def hold(pool: ThreadPoolExecutor, server: PushpinServer, channel: str) -> Future[httpx.Response]:
    """A client long-polling ``channel`` through ``server``; returns once it is subscribed
    for good. These tests publish without ids: an item that reached Pushpin while its
    re-request of a fresh channel's holds (about 1 s after the first subscription, PUSHPIN.md)
    was at the origin found nobody subscribed (twice in CI), so wait for that re-request."""
    mark = server.mark()
    held = pool.submit(httpx.get, f"{server.url}/harness/hold/{channel}/", timeout=40)
    server.wait_subscribed(channel, since=mark)
    server.wait_rerequested(channel, since=mark)
    return held


def sig(key: str, *, iss: str = "pushpin", expires_in: int = 3600) -> str:
    return jwt.encode({"iss": iss, "exp": int(time.time()) + expires_in}, key, algorithm="HS256")


def first_chunk(url: str, **kwargs) -> tuple[int, bytes]:
    """Status and the first bytes of a (possibly endless) stream."""
    with httpx.stream("GET", url, timeout=10, **kwargs) as response:
        return response.status_code, next(response.iter_raw(), b"")


def current_etag(server: PushpinServer) -> str:
    return httpx.get(server.url + "/seed/longpoll/").headers["ETag"]


# -- Grip-Sig: who counts as proxied ----------------------------------------------------------


def test_grip_sig_with_a_wrong_key_straight_to_the_origin_is_direct(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    forged = sig("not-the-key-of-this-pushpin-0123456789abcdef")

    response = httpx.get(origin_server.url + "/seed/stream/", headers={"Grip-Sig": forged})

    assert response.status_code == 501
    assert "Grip-Hold" not in response.headers


def test_expired_grip_sig_straight_to_the_origin_is_direct(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    expired = sig(grip_pushpin.key, expires_in=-60)

    response = httpx.get(origin_server.url + "/seed/stream/", headers={"Grip-Sig": expired})

    assert response.status_code == 501


def test_garbage_grip_sig_straight_to_the_origin_is_direct(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    for garbage in ("x", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "\u00e9" * 10):
        response = httpx.get(
            origin_server.url + "/seed/stream/", headers={"Grip-Sig": garbage.encode()}
        )
        assert response.status_code == 501, garbage


def test_valid_grip_sig_counts_as_proxied(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    response = httpx.get(
        origin_server.url + "/seed/stream/", headers={"Grip-Sig": sig(grip_pushpin.key)}
    )

    assert response.status_code == 200
    assert response.headers["Grip-Hold"] == "stream"


def test_through_pushpin_is_proxied_even_with_a_forged_client_grip_sig(
    grip_pushpin: PushpinServer,
) -> None:
    # Pushpin drops the client's own Grip-Sig and signs the request itself (PUSHPIN.md).
    status, body = first_chunk(
        grip_pushpin.url + "/seed/stream/", headers={"Grip-Sig": sig("forged-" * 6)}
    )

    assert status == 200
    assert body == b"[stream open]\n"


# -- GRIP_PROXY_REQUIRED ----------------------------------------------------------------------


@override_settings(GRIP_PROXY_REQUIRED=True)
def test_proxy_required_direct_hold_is_501_and_through_pushpin_holds(
    grip_pushpin: PushpinServer, origin_server: OriginServer, background: ThreadPoolExecutor
) -> None:
    etag = current_etag(grip_pushpin)

    direct = httpx.get(origin_server.url + "/seed/longpoll/", headers={"If-None-Match": etag})
    direct_no_hold = httpx.get(origin_server.url + "/seed/longpoll/")

    assert direct.status_code == 501
    assert not any(name.lower().startswith("grip-") for name in direct.headers)
    assert direct_no_hold.status_code == 200  # nothing to hold: answered as usual

    mark = grip_pushpin.mark()
    held = background.submit(
        httpx.get, grip_pushpin.url + "/seed/longpoll/", headers={"If-None-Match": etag}
    )
    grip_pushpin.wait_subscribed("test", since=mark)
    httpx.post(grip_pushpin.url + "/seed/longpoll/", data={"data": "released"})

    assert held.result(10).text == "released\n"


# -- malformed WebSocket-over-HTTP ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"Connection-Id": "c1"}, b"TEXT zz\r\nhi\r\n", "length"),
        ({"Connection-Id": "c1"}, b"TEXT 5\r\nhi\r\n", "event 1"),
        ({"Connection-Id": "c1"}, b"OPEN", "CRLF"),
        ({}, b"OPEN\r\n", "Connection-Id"),
    ],
)
def test_malformed_websocket_events_straight_to_the_origin_get_400_with_a_reason(
    grip_pushpin: PushpinServer,
    origin_server: OriginServer,
    headers: dict[str, str],
    body: bytes,
    reason: str,
) -> None:
    response = httpx.post(
        origin_server.url + "/seed/echo/",
        content=body,
        headers={"Content-Type": "application/websocket-events", **headers},
    )

    assert response.status_code == 400
    assert "Malformed WebSocket events" in response.text
    assert reason.lower() in response.text.lower()


# -- Pushpin down while publishing ------------------------------------------------------------


class _RetryGate(logging.Handler):
    """Holds the publisher's thread inside its first retry warning for ``channel``.

    The warning is logged before the backoff wait, so while the thread is held no retry can
    reach the restarted Pushpin before the test's client subscribes (a publish to a channel
    with no subscriber is dropped, PUSHPIN.md). No timing guess is involved.
    """

    def __init__(self, channel: str) -> None:
        super().__init__(logging.WARNING)
        self.channel = channel
        self.reached = threading.Event()
        self.opened = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.channel in record.getMessage() and not self.reached.is_set():
            self.reached.set()
            self.opened.wait(30)


def test_publish_while_pushpin_is_down_is_logged_and_delivered_when_it_is_back(
    origin_server: OriginServer,
    background: ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if find_pushpin() is None:
        pushpin_missing()
    # Fixed ports: restarted, it is where the publisher and the client expect it.
    server = PushpinServer(origin_server.port, http_port=free_port(), publish_port=free_port())
    server.start()
    channel = new_channel()
    gate = _RetryGate(channel)
    publish_logger = logging.getLogger("drf_grip.publish")
    retry_settings = {"PUBLISH_RETRIES": 20, "PUBLISH_BACKOFF": 0.05, "PUBLISH_BACKOFF_MAX": 0.2}
    try:
        with (
            override_settings(GRIP_URL=server.grip_url, DRF_GRIP=retry_settings),
            caplog.at_level(logging.WARNING, logger="drf_grip.publish"),
        ):
            server.stop()
            publish_logger.addHandler(gate)
            sent_before = get_publisher().stats.sent

            started = time.monotonic()
            publish(channel, HttpResponseFormat(body="survived\n"))
            assert time.monotonic() - started < 0.5  # the caller never waits on the network

            assert gate.reached.wait(10), "the failed publish was not logged"
            server.start()
            held = hold(background, server, channel)
            gate.opened.set()

            response = held.result(10)
            assert get_publisher().flush(10)
    finally:
        publish_logger.removeHandler(gate)
        gate.opened.set()
        server.stop()

    assert response.status_code == 200
    assert response.text == "survived\n"
    assert get_publisher().stats.sent > sent_before
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name == "drf_grip.publish" and channel in r.getMessage()
    ]
    assert failures, "the failure was not logged with its channel"
    assert "retry" in failures[0]
    assert not any(server.key in message for message in failures)


# -- django-grip's bugs (PUSHPIN.md, last section) --------------------------------------------


def test_override_settings_changes_where_publish_goes(
    grip_pushpin: PushpinServer, second_pushpin: PushpinServer, background: ThreadPoolExecutor
) -> None:
    # django-grip built its publisher at import time, so GRIP_URL was read once for good.
    channel = new_channel()
    on_first = hold(background, grip_pushpin, channel)
    on_second = hold(background, second_pushpin, channel)

    with override_settings(GRIP_URL=second_pushpin.grip_url):
        publish(channel, HttpResponseFormat(body="to second\n"))
        assert on_second.result(10).text == "to second\n"
    publish(channel, HttpResponseFormat(body="to first\n"))

    assert on_first.result(10).text == "to first\n"


def test_grip_proxies_are_not_mutated_when_grip_url_is_also_set(
    grip_pushpin: PushpinServer, second_pushpin: PushpinServer, background: ThreadPoolExecutor
) -> None:
    # django-grip appended GRIP_URL to GRIP_PROXIES on every request.
    proxies = [{"control_uri": second_pushpin.publish_uri, "key": second_pushpin.key}]
    expected = copy.deepcopy(proxies)
    channel = new_channel()
    with override_settings(GRIP_PROXIES=proxies, GRIP_URL=grip_pushpin.grip_url):
        for _ in range(3):
            status, body = first_chunk(grip_pushpin.url + "/seed/stream/")
            assert (status, body) == (200, b"[stream open]\n")
        assert settings.GRIP_PROXIES == expected

        on_first = hold(background, grip_pushpin, channel)
        on_second = hold(background, second_pushpin, channel)
        publish(channel, HttpResponseFormat(body="both\n"))

        assert on_first.result(10).text == "both\n"
        assert on_second.result(10).text == "both\n"
        assert get_publisher().flush(10)
    assert proxies == expected


def test_proxy_with_verify_key_but_no_key_is_no_500(
    pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    # django-grip: KeyError 'key' (HTTP 500) on every signed request with this config.
    proxies = [
        {"control_uri": pushpin.publish_uri, "verify_key": pushpin.key, "verify_iss": "pushpin"}
    ]
    with override_settings(GRIP_PROXIES=proxies, GRIP_URL=None):
        through_pushpin = first_chunk(pushpin.url + "/seed/stream/")
        valid = httpx.get(
            origin_server.url + "/seed/stream/", headers={"Grip-Sig": sig(pushpin.key)}
        )
        forged = httpx.get(
            origin_server.url + "/seed/stream/", headers={"Grip-Sig": sig("x" * 40)}
        )

    assert through_pushpin == (200, b"[stream open]\n")
    assert valid.status_code == 200
    assert valid.headers["Grip-Hold"] == "stream"
    assert forged.status_code == 501


def test_fanouts_verify_key_beside_pushpin_leaves_pushpin_trusted(pushpin: PushpinServer) -> None:
    # Found by a probe: Fanout's public key as GRIP_VERIFY_KEY, with Pushpin and Fanout both in
    # GRIP_PROXIES, replaced Pushpin's key: every stream through Pushpin got the README's 501.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    proxies = [
        {"control_uri": pushpin.publish_uri, "control_iss": "pushpin", "key": pushpin.key},
        {
            "control_uri": "https://api.fastly.com/service/sid",
            "key": "a-fastly-api-token",
            "verify_iss": "fastly:sid",
        },
    ]
    with override_settings(GRIP_PROXIES=proxies, GRIP_URL=None, GRIP_VERIFY_KEY=public):
        through_pushpin = first_chunk(pushpin.url + "/seed/stream/")

    assert through_pushpin == (200, b"[stream open]\n")


def test_garbage_grip_sig_is_direct_when_one_proxy_has_no_key(
    pushpin: PushpinServer, second_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    # django-grip: with one keyless proxy configured, any Grip-Sig at all counted as proxied.
    proxies = [
        {"control_uri": second_pushpin.publish_uri},
        {"control_uri": pushpin.publish_uri, "key": pushpin.key},
    ]
    with override_settings(GRIP_PROXIES=proxies, GRIP_URL=None):
        garbage = httpx.get(origin_server.url + "/seed/stream/", headers={"Grip-Sig": "garbage"})
        through_pushpin = first_chunk(pushpin.url + "/seed/stream/")

    assert garbage.status_code == 501
    assert through_pushpin == (200, b"[stream open]\n")


def test_keep_alive_with_backslashes_arrives_byte_exact(grip_pushpin: PushpinServer) -> None:
    # django-grip's cstring encoding tripled backslashes.
    channel = new_channel()
    expected = b"[open]\n" + KEEP_ALIVE.encode() * 2
    received = b""
    with httpx.stream("GET", f"{grip_pushpin.url}/grip/keep-alive/{channel}/", timeout=10) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        while len(received) < len(expected):
            received += next(chunks)

    assert received == expected


def test_publish_servers_is_read(
    pushpin: PushpinServer, second_pushpin: PushpinServer, background: ThreadPoolExecutor
) -> None:
    # django-grip documented PUBLISH_SERVERS but never read it.
    channel = new_channel()
    held = hold(background, second_pushpin, channel)
    servers = [{"uri": second_pushpin.publish_uri, "key": second_pushpin.key}]

    with override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=servers):
        publish(channel, HttpResponseFormat(body="via PUBLISH_SERVERS\n"))
        response = held.result(10)

    assert response.text == "via PUBLISH_SERVERS\n"
