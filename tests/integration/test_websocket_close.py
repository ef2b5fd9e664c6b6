"""How a WebSocket ends, through a real Pushpin and the embedded proxy alike: the close code
and reason the origin chose reach the client, and the origin hears of every close, also of
one it or a publish made, and after ``detach``."""

from __future__ import annotations

import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from drf_grip.testing.proxies import ProxyUnderTest
from tests.testapp.ws_views import CLOSES

pytestmark = pytest.mark.timeout(60)


def open_closer(proxy: ProxyUnderTest) -> tuple[ClientConnection, str]:
    channel = f"closer-{uuid.uuid4().hex[:12]}"
    mark = proxy.mark()
    ws = connect(f"{proxy.ws_url}/ws/closer/?ch={channel}", proxy=None, open_timeout=10)
    proxy.wait_subscribed(channel, since=mark)
    return ws, channel


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def origin_heard_close(channel: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if CLOSES.get(channel):
            return True
        time.sleep(0.05)
    return False


def test_the_origins_close_code_and_reason_reach_the_client(grip_proxy: ProxyUnderTest) -> None:
    # Found by a probe: the embedded proxy sent the code but dropped the reason, and never
    # told the origin the connection had closed (Pushpin 1.36 sends it a CLOSE event).
    ws, channel = open_closer(grip_proxy)
    with ws:
        ws.send("bye")
        assert closed_with(ws) == (4000, "later")
    assert origin_heard_close(channel)
    assert CLOSES[channel] == [(4000, "later")]  # Pushpin: the client's answer to it


def test_a_published_close_keeps_its_reason_and_is_told_to_the_origin(
    grip_proxy: ProxyUnderTest,
) -> None:
    # gripcontrol's WebSocketMessageFormat(action="close", code=..., reason=...) publishes a
    # reason, which Pushpin 1.36 sends; the embedded proxy dropped it.
    ws, channel = open_closer(grip_proxy)
    close = {"action": "close", "code": 4001, "reason": "kicked"}
    with ws:
        grip_proxy.publish_items([{"channel": channel, "formats": {"ws-message": close}}])
        assert closed_with(ws) == (4001, "kicked")
    assert origin_heard_close(channel)


def test_a_detached_connection_still_tells_the_origin_it_closed(
    grip_proxy: ProxyUnderTest,
) -> None:
    ws, channel = open_closer(grip_proxy)
    with ws:
        ws.send("detach")
        time.sleep(0.3)  # the detach answer is in before the client goes
    assert origin_heard_close(channel)


def test_the_clients_close_code_and_reason_reach_the_origin(grip_proxy: ProxyUnderTest) -> None:
    # Found by a probe: the embedded proxy told the origin the code but not the reason.
    ws, channel = open_closer(grip_proxy)
    with ws:
        ws.close(4002, "client bye")
    assert origin_heard_close(channel)
    assert CLOSES[channel] == [(4002, "client bye")]


def test_a_client_close_without_a_code_reaches_the_origin_as_a_normal_close(
    grip_proxy: ProxyUnderTest,
) -> None:
    """A close frame with no status code (RFC 6455 §7.1.5: the code "received" is 1005):
    Pushpin 1.36 tells the origin of a close, which reads as 1000; the embedded proxy told
    it the client went away (``websocket_close(None)``; seeds probe)."""
    ws, channel = open_closer(grip_proxy)
    with ws:
        with ws.protocol_mutex:
            ws.protocol.send_close()  # no code, no reason: an empty payload
            for data in ws.protocol.data_to_send():
                ws.socket.sendall(data)
        assert origin_heard_close(channel)
    assert CLOSES[channel] == [(1000, "")]


def test_returning_from_a_django_websocket_view_closes_the_connection(
    grip_proxy: ProxyUnderTest,
) -> None:
    """django-websocket's README: ``echo_once`` receives one message, sends it back "and
    closes the connection (by returning from the view)". Through either proxy it echoed
    every later message instead, one per batch (seeds probe)."""
    with connect(f"{grip_proxy.ws_url}/ws/echo-once/", proxy=None, open_timeout=10) as ws:
        ws.send("once")
        assert ws.recv(timeout=5) == "once"
        assert closed_with(ws) == (1000, "")


def test_a_view_that_reads_on_keeps_its_connection(grip_proxy: ProxyUnderTest) -> None:
    """``lower_case`` iterates ``request.websocket``: it asked for more than each batch
    held, as a socket's iteration would block for the next message, so it stays open."""
    with connect(f"{grip_proxy.ws_url}/ws/lowercase/", proxy=None, open_timeout=10) as ws:
        for word in ("ONE", "Two", "three"):
            ws.send(word)
            assert ws.recv(timeout=5) == word.lower()
