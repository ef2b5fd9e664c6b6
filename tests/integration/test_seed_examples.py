"""django-grip's README examples, imports changed to drf_grip, used as its README says:
through a real Pushpin, with a plain HTTP client and a WebSocket client library.

The views are ``tests/testapp/seed_views.py`` at ``/seed/``. All three examples use the
channel ``test``; each item carries one format, so a stream never sees a long-poll's item.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
import websockets

from drf_grip.testing import OriginServer, PushpinServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    """Threads for clients that wait on a hold while the test publishes."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def current_etag(pushpin: PushpinServer) -> str:
    response = httpx.get(pushpin.url + "/seed/longpoll/")
    assert response.status_code == 200
    return response.headers["ETag"]


def hold_longpoll(
    pool: ThreadPoolExecutor, pushpin: PushpinServer, etag: str
) -> Future[httpx.Response]:
    return pool.submit(
        httpx.get,
        pushpin.url + "/seed/longpoll/",
        headers={"If-None-Match": etag},
        timeout=70,
    )


# -- HTTP streaming ---------------------------------------------------------------------------


def test_stream_receives_what_is_posted(grip_pushpin: PushpinServer) -> None:
    mark = grip_pushpin.mark()
    with httpx.stream("GET", grip_pushpin.url + "/seed/stream/", timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/plain")
        assert not any(name.lower().startswith("grip-") for name in stream.headers)
        chunks = stream.iter_raw()
        received = b""
        while b"[stream open]\n" not in received:
            received += next(chunks)
        grip_pushpin.wait_subscribed("test", since=mark)

        posted = httpx.post(grip_pushpin.url + "/seed/stream/", data={"data": "hello"})
        assert posted.status_code == 200
        assert posted.text == "Ok\n"
        posted = httpx.post(grip_pushpin.url + "/seed/stream/", data={"data": "world"})
        while b"world\n" not in received:
            received += next(chunks)

    assert received == b"[stream open]\nhello\nworld\n"


def test_stream_straight_to_the_origin_is_not_implemented(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    response = httpx.get(origin_server.url + "/seed/stream/")

    assert response.status_code == 501
    assert response.text == "Not Implemented\n"


# -- HTTP long-polling with ETag --------------------------------------------------------------


def test_longpoll_returns_the_object_and_its_etag_at_once_when_changed(
    grip_pushpin: PushpinServer,
) -> None:
    response = httpx.get(
        grip_pushpin.url + "/seed/longpoll/", headers={"If-None-Match": '"not-current"'}
    )

    assert response.status_code == 200
    assert response.headers["ETag"] == current_etag(grip_pushpin)


def test_longpoll_wakes_on_publish_with_the_new_body_and_etag(
    grip_pushpin: PushpinServer, background: ThreadPoolExecutor
) -> None:
    etag = current_etag(grip_pushpin)
    mark = grip_pushpin.mark()
    held = hold_longpoll(background, grip_pushpin, etag)
    grip_pushpin.wait_subscribed("test", since=mark)

    posted = httpx.post(grip_pushpin.url + "/seed/longpoll/", data={"data": "updated"})
    response = held.result(timeout=10)

    assert posted.status_code == 200
    assert response.status_code == 200
    assert response.text == "updated\n"
    new_etag = response.headers["ETag"]
    assert new_etag != etag
    assert new_etag == current_etag(grip_pushpin)
    assert not any(name.lower().startswith("grip-") for name in response.headers)


def test_longpoll_times_out_with_304_and_the_etag(
    grip_pushpin: PushpinServer, background: ThreadPoolExecutor
) -> None:
    # The README's view sets no timeout (Pushpin's default is 55 s); the view at
    # longpoll-5s/ is the same view with Pushpin's shortest, 5 s.
    etag = current_etag(grip_pushpin)
    started = time.monotonic()

    response = httpx.get(
        grip_pushpin.url + "/seed/longpoll-5s/", headers={"If-None-Match": etag}, timeout=30
    )

    assert response.status_code == 304
    assert response.headers["ETag"] == etag
    assert response.content == b""
    assert 4.5 <= time.monotonic() - started < 20


def test_longpoll_straight_to_the_origin_answers_a_plain_304(
    grip_pushpin: PushpinServer, origin_server: OriginServer
) -> None:
    etag = current_etag(grip_pushpin)

    response = httpx.get(origin_server.url + "/seed/longpoll/", headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert response.headers["ETag"] == etag
    assert not any(name.lower().startswith("grip-") for name in response.headers)


# -- WebSocket echo and broadcast -------------------------------------------------------------


def test_websocket_echo_and_broadcast(grip_pushpin: PushpinServer) -> None:
    async def scenario() -> None:
        mark = grip_pushpin.mark()
        async with websockets.connect(grip_pushpin.ws_url + "/seed/echo/") as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello"
            await ws.send(b"\x00\xffbinary")
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\xffbinary"

            await asyncio.to_thread(grip_pushpin.wait_subscribed, "test", since=mark)
            posted = await asyncio.to_thread(
                httpx.post, grip_pushpin.url + "/seed/broadcast/", data={"data": "to all"}
            )
            assert posted.status_code == 200
            assert posted.text == "Ok\n"
            assert await asyncio.wait_for(ws.recv(), 5) == "to all"

            await ws.send("still echoing")
            assert await asyncio.wait_for(ws.recv(), 5) == "still echoing"

    asyncio.run(scenario())


def test_broadcast_reaches_every_socket(grip_pushpin: PushpinServer) -> None:
    async def scenario() -> None:
        mark = grip_pushpin.mark()
        async with (
            websockets.connect(grip_pushpin.ws_url + "/seed/echo/") as first,
            websockets.connect(grip_pushpin.ws_url + "/seed/echo/") as second,
        ):
            # An echo round trip proves each connection is open (and subscribed) at the origin.
            for ws in (first, second):
                await ws.send("ping")
                assert await asyncio.wait_for(ws.recv(), 5) == "ping"
            await asyncio.to_thread(grip_pushpin.wait_subscribed, "test", since=mark)

            await asyncio.to_thread(
                httpx.post, grip_pushpin.url + "/seed/broadcast/", data={"data": "news"}
            )

            assert await asyncio.wait_for(first.recv(), 5) == "news"
            assert await asyncio.wait_for(second.recv(), 5) == "news"

    asyncio.run(scenario())


def test_echo_refuses_plain_http(grip_pushpin: PushpinServer) -> None:
    response = httpx.get(grip_pushpin.url + "/seed/echo/")

    assert 400 <= response.status_code < 500
