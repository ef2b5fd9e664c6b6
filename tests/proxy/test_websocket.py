"""Client WebSockets carried to the origin as WebSocket-over-HTTP, with GRIP control messages."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from drf_grip.protocol import WebSocketEvent, decode_events

from .conftest import EVENTS, Origin, ProxyServer, Response, control, in_thread, run, ws_answer


class Chat:
    """A WebSocket-over-HTTP origin: subscribes on open, echoes with and without the prefix."""

    def __init__(self) -> None:
        self.disconnected = threading.Event()
        self.events: list[list[WebSocketEvent]] = []

    def __call__(self, request) -> Response:
        events = decode_events(request.body)
        self.events.append(events)
        out: list[WebSocketEvent] = []
        headers: list[tuple[str, str]] = []
        for event in events:
            if event.type == "OPEN":
                out += [WebSocketEvent("OPEN"), control("subscribe", channel="room")]
                headers += [("Sec-WebSocket-Protocol", "chat.v1"), ("Set-Meta-User", "alice")]
            elif event.type == "TEXT":
                text = event.content.decode()
                if text == "leave":
                    out.append(control("unsubscribe", channel="room"))
                elif text == "bye":
                    out.append(WebSocketEvent("CLOSE", (4000).to_bytes(2, "big")))
                else:
                    out += [WebSocketEvent("TEXT", b"m:echo " + event.content), WebSocketEvent("TEXT", b"dropped: no prefix")]
            elif event.type in ("DISCONNECT", "CLOSE"):
                self.disconnected.set()
        return ws_answer(*out, headers=headers)


def test_websocket_over_http_round_trip(server: ProxyServer, origin: Origin):
    chat = origin.route("/ws/")(Chat())

    async def scenario():
        async with websockets.connect(
            server.ws_url + "/ws/?room=1", subprotocols=["chat.v1"],
            additional_headers={"Cookie": "sessionid=abc", "Meta-User": "mallory", "Grip-Sig": "forged"},
        ) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("hello")
            assert await ws.recv() == "echo hello"
            assert await in_thread(server.proxy.wait_for_subscribers, "room")
            await in_thread(server.publish, {"channel": "room", "formats": {"ws-message": {"content": "news"}}})
            assert await ws.recv() == "news"
            await in_thread(server.publish, {"channel": "room", "formats": {"ws-message": {"content-bin": "AAE="}}})
            assert await ws.recv() == b"\x00\x01"
        assert await in_thread(server.proxy.wait_for_idle, "room")
        assert await in_thread(chat.disconnected.wait, 5)

    run(scenario())
    opening, message, *_ = origin.requests_to("/ws/")
    assert opening.method == "POST" and opening.query == "room=1"
    assert opening.headers["content-type"] == EVENTS
    assert opening.headers["cookie"] == "sessionid=abc"
    assert "upgrade" not in opening.headers
    assert "meta-user" not in opening.headers  # a client cannot set meta
    assert opening.headers["grip-sig"] != "forged"
    assert message.headers["connection-id"] == opening.headers["connection-id"]
    assert message.headers["meta-user"] == "alice"  # set by the origin with Set-Meta-User
    assert decode_events(message.body) == [WebSocketEvent("TEXT", b"hello")]
    assert chat.events[-1][-1].type in ("CLOSE", "DISCONNECT")


def test_unsubscribe_and_close_from_the_origin(server: ProxyServer, origin: Origin):
    origin.route("/ws/")(Chat())

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            assert await in_thread(server.proxy.wait_for_subscribers, "room")
            await ws.send("leave")
            assert await in_thread(server.proxy.wait_for_idle, "room")
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(scenario()) == 4000


@pytest.mark.parametrize("code", [100, 1005, 2000])
def test_an_origins_close_code_that_may_not_go_on_the_wire_closes_with_1000(
    server: ProxyServer, origin: Origin, code: int
):
    """Another GRIP origin (gripcontrol's ``close(100)``) may answer a code RFC 6455 §7.4
    forbids: the client is still closed, with 1000, not left open. Pushpin 1.36 puts the code
    on the wire as it is and the client fails the connection (websockets answers 1002,
    measured; a browser reports 1006, RFC 6455 §7.1.7); uvicorn refuses to send it (websockets'
    ``Close.serialize``: "invalid status code"), a difference docs/websockets.rst lists."""

    @origin.route("/ws/")
    def closing(request) -> Response:
        events = decode_events(request.body)
        if events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        closing = WebSocketEvent("CLOSE", code.to_bytes(2, "big"))
        return ws_answer(WebSocketEvent("TEXT", b"m:last"), closing)

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            await ws.send("close me")
            assert await asyncio.wait_for(ws.recv(), 5) == "last"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(scenario()) == 1000


def test_publish_close_action_closes_the_socket(server: ProxyServer, origin: Origin):
    origin.route("/ws/")(Chat())

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            assert await in_thread(server.proxy.wait_for_subscribers, "room")
            await in_thread(server.publish, {"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4001}}})
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(scenario()) == 4001


def test_origin_refusal_rejects_the_handshake_with_its_status(
    server: ProxyServer, origin: Origin, caplog: pytest.LogCaptureFixture
):
    origin.route("/ws/")(lambda r: Response(403, [("Content-Type", "text/plain")], "bad origin"))
    caplog.set_level(logging.INFO, logger="uvicorn.error")

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(server.ws_url + "/ws/"):
                pass
        return refused.value.response

    response = run(scenario())
    assert response.status_code == 403
    assert response.body == b"bad origin"
    # uvicorn logs after the app returned, in the handshake's task: wait for it to end.
    deadline = time.monotonic() + 10
    while server.server.server_state.tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.server.server_state.tasks
    # Probe: every refused handshake logged uvicorn's "returned without completing
    # handshake" at ERROR although the client had its answer.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_keep_alive_interval_and_control_keep_alive_and_set_meta(server: ProxyServer, origin: Origin):
    calls = threading.Condition()
    bodies: list[bytes] = []

    @origin.route("/ws/")
    def ws_origin(request):
        with calls:
            bodies.append(request.body)
            calls.notify_all()
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(
                WebSocketEvent("OPEN"),
                control("set-meta", name="color", value="red"),  # the filters' only
                control("keep-alive", content="ka", timeout=0.5),
                headers=[("Keep-Alive-Interval", "1"), ("Set-Meta-Room", "blue")],
            )
        return ws_answer()

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            assert await ws.recv() == "ka"  # the proxy's keep-alive message to the client

            def two_keep_alive_calls() -> bool:
                with calls:
                    return calls.wait_for(lambda: len(bodies) >= 3, 5)

            assert await in_thread(two_keep_alive_calls)

    run(scenario())
    opening, keep_alive, *_ = origin.requests_to("/ws/")
    assert keep_alive.body == b""  # a keep-alive call carries no events
    assert keep_alive.headers["meta-room"] == "blue"
    assert "meta-color" not in keep_alive.headers  # Pushpin 1.36 (test_conformance.py)


def test_websockets_count_toward_the_held_limit(make_proxy, origin: Origin):
    server = make_proxy(max_held=1)
    origin.route("/ws/")(Chat())

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as first:
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(server.ws_url + "/ws/"):
                    pass
            await first.send("still here")
            return refused.value.response.status_code, await first.recv()

    assert run(scenario()) == (503, "echo still here")


def test_shutdown_sends_a_close_frame(make_proxy, origin: Origin):
    server = make_proxy()
    origin.route("/ws/")(Chat())

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            assert await in_thread(server.proxy.wait_for_subscribers, "room")
            stopping = asyncio.ensure_future(in_thread(server.stop))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            await stopping
            return closed.value.rcvd.code

    assert run(scenario()) == 1001


def test_a_burst_of_client_messages_gets_every_answer_on_an_open_socket(server: ProxyServer, origin: Origin):
    # A client that sends many messages without waiting for answers: the origin answers each
    # one; the proxy may pause reading the client (backpressure) but never drops it.
    chat = Chat()
    burst = 600

    @origin.route("/ws/")
    def slow_first_answer(request) -> Response:
        if len(chat.events) == 1:
            # Holds the proxy's loop (the scripted origin runs on it), so the rest of the burst
            # waits in the socket meanwhile and reaches the proxy all at once.
            time.sleep(0.5)
        return chat(request)

    async def scenario():
        async with websockets.connect(server.ws_url + "/ws/") as ws:
            assert await in_thread(server.proxy.wait_for_subscribers, "room")
            for n in range(burst):
                await ws.send(f"message {n}")
            for n in range(10):  # publishes meanwhile are delivered too, none drops the client
                await in_thread(server.publish, {"channel": "room", "formats": {"ws-message": {"content": f"news {n}"}}})
            received = [await asyncio.wait_for(ws.recv(), 10) for _ in range(burst + 10)]
            await ws.send("still here")
            last = await asyncio.wait_for(ws.recv(), 10)
            return received, last

    received, last = run(scenario())
    assert [r for r in received if r.startswith("echo")] == [f"echo message {n}" for n in range(burst)]
    assert [r for r in received if r.startswith("news")] == [f"news {n}" for n in range(10)]
    assert last == "echo still here"
    # Many small requests to the origin, not one per message nor one for the whole burst.
    texts = [len(events) for events in chat.events if events and events[0].type == "TEXT"]
    assert sum(texts) == burst + 1
    assert max(texts) <= server.proxy.ws_events_per_request


def test_a_client_that_leaves_while_its_handshake_waits_ends_the_keep_alive_calls(
    server: ProxyServer, origin: Origin
):
    """A handshake answered with no events and keep-alives on waits for the keep-alive call
    to post OPEN again. The embedded proxy went on posting OPEN every interval for ever
    after the client had left; Pushpin 1.36 posts it without pause (test_conformance.py).
    Now the calls end with the client."""
    origin.route("/ws/")(lambda request: ws_answer(headers=[("Keep-Alive-Interval", "1")]))

    async def scenario():
        with pytest.raises(TimeoutError):
            async with websockets.connect(server.ws_url + "/ws/", open_timeout=2.5):
                pass

    run(scenario())
    calls = len(origin.wait_for_requests("/ws/", 2))
    assert calls >= 2  # it waited, and was called again
    assert len(origin.wait_for_requests("/ws/", calls + 1, timeout=3)) == calls


def test_shutdown_answers_a_handshake_that_waits_for_its_keep_alive_call(
    make_proxy, origin: Origin
):
    """A handshake waiting for its keep-alive call gets Pushpin's 502 on shutdown, not a
    wait for the call or a dropped connection."""
    server = make_proxy()
    origin.route("/ws/")(lambda request: ws_answer(headers=[("Keep-Alive-Interval", "60")]))

    async def scenario():
        async def connect():
            async with websockets.connect(server.ws_url + "/ws/", open_timeout=30):
                pass

        opening = asyncio.ensure_future(connect())
        await in_thread(origin.wait_for_requests, "/ws/", 1)
        started = time.monotonic()
        await in_thread(server.stop)
        with pytest.raises(InvalidStatus) as refused:
            await opening
        return refused.value.response.status_code, time.monotonic() - started < 10

    assert run(scenario()) == (502, True)
