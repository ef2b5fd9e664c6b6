"""Conformance: the same scripted origin behind the embedded proxy and behind Pushpin 1.36,
and the client sees the same (``any_proxy`` in conftest.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from drf_grip.protocol import WebSocketEvent, close_payload, decode_events, encode_events

from .conftest import (
    EVENTS,
    Origin,
    Response,
    control,
    in_thread,
    run,
    status_line,
    ws_answer,
)

CHARSET_EVENTS = [
    ("Content-Type", EVENTS + "; charset=utf-8"), ("Sec-WebSocket-Extensions", "grip")
]


async def _messages_until_closed(ws) -> tuple[list, object]:
    """The messages the client receives, and the close frame it got (None: dropped, 1006)."""
    got = []
    try:
        while True:
            got.append(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as exc:
        return got, exc.rcvd


@pytest.mark.parametrize("event", ["DISCONNECT", "OPEN"])
def test_an_origins_disconnect_drops_the_connection_without_a_close_frame(
    any_proxy, origin: Origin, event: str
):
    """Pushpin 1.36 takes an origin's ``DISCONNECT`` (or a second ``OPEN``) as an error of
    the origin side (proxy/websocketoverhttp.cpp: ``disconnected`` -> ``error``) and deletes
    the client's socket without a close (proxy/wsproxysession.cpp ``out_error`` ->
    ``cleanupInSock``):
    no close frame, the client sees 1006, and a message in the same answer never leaves
    (the socket's writes are queued, corelib/zwebsocket.cpp). The origin hears nothing more.
    The embedded proxy sent the message, closed with 1000 and then posted a CLOSE (a second
    OPEN it ignored)."""

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        if events and events[0].type == "TEXT" and events[0].content == b"first":
            return ws_answer(WebSocketEvent("TEXT", b"m:one"))
        if events and events[0].type == "TEXT":
            return ws_answer(WebSocketEvent("TEXT", b"m:lost"), WebSocketEvent(event))
        return ws_answer()

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/") as ws:
            await ws.send("first")
            assert await ws.recv() == "one"
            await ws.send("go")
            return await _messages_until_closed(ws)

    got, close_frame = run(scenario())
    assert got == [] and close_frame is None  # 1006 for the client
    assert [decode_events(r.body)[0].type for r in origin.requests_to("/ws/")] == [
        "OPEN", "TEXT", "TEXT"
    ]


def test_an_origin_error_after_the_handshake_drops_the_connection(any_proxy, origin: Origin):
    """An answer that is not ``200 application/websocket-events`` after the handshake is
    an error of the origin side for Pushpin 1.36 (proxy/websocketoverhttp.cpp
    ``ErrorGeneric``), which drops the client's connection without a close frame
    (proxy/wsproxysession.cpp ``out_error``). The embedded proxy closed with 1011."""

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        return Response(500, [("Content-Type", "text/plain")], "oops")

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/") as ws:
            await ws.send("go")
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return exc.rcvd

    assert run(scenario()) is None
    assert len(origin.requests_to("/ws/")) == 2


def test_header_meta_goes_to_the_origin_and_control_meta_to_the_filters(any_proxy, origin: Origin):
    """Pushpin 1.36 keeps two metas per connection. ``Set-Meta-*`` response headers are
    the proxy's: sent back as ``Meta-*`` on each later request, an empty value removes one
    (proxy/websocketoverhttp.cpp). ``set-meta`` control messages are the handler's, read only
    by subscription filters (handler/engine.cpp, ``WsControlMessage::SetMeta`` into
    ``s->meta``; ``fc.subscriptionMeta = s->meta``), never sent to the origin, names
    compared as given (a ``QHash``). The embedded proxy kept one dict for both."""

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(
                WebSocketEvent("OPEN"),
                control("subscribe", channel="room", filters=["skip-self"]),
                control("set-meta", name="color", value="red"),
                control("set-meta", name="User", value="dave"),  # not "user" for the filter
                headers=[("Set-Meta-User", "bob"), ("Set-Meta-Drop", "d")],
            )
        if events and events[0].content == b"second":
            return ws_answer(
                control("set-meta", name="user", value="carol"),
                control("subscribe", channel="sync"),
                WebSocketEvent("TEXT", b"m:ok"),
                headers=[("Set-Meta-Drop", "")],
            )
        return ws_answer(WebSocketEvent("TEXT", b"m:ok"))

    def item(sender: str, content: str) -> dict:
        return {"channel": "room", "meta": {"sender": sender},
                "formats": {"ws-message": {"content": content}}}

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10) as ws:

            def recv():
                return asyncio.wait_for(ws.recv(), 10)

            assert await in_thread(any_proxy.wait_subscribed, "room")
            # The header's user (bob) and the control's "User" (dave) are no filter's user.
            await in_thread(any_proxy.publish, item("bob", "a"), item("dave", "b"))
            assert [await recv(), await recv()] == ["a", "b"]
            await ws.send("second")
            assert await recv() == "ok"
            assert await in_thread(any_proxy.wait_subscribed, "sync")
            # The control's user (carol) is.
            await in_thread(any_proxy.publish, item("carol", "dropped"), item("bob", "c"))
            assert await recv() == "c"
            await ws.send("third")
            assert await recv() == "ok"

    run(scenario())
    second, third = origin.requests_to("/ws/")[1:3]
    meta = [{k: v for k, v in r.header_list if k.startswith("meta-")} for r in (second, third)]
    assert meta == [{"meta-user": "bob", "meta-drop": "d"}, {"meta-user": "bob"}]


@pytest.mark.parametrize(
    "kind", ["no OPEN", "no events", "malformed", "403", "200 text", "events; charset"]
)
def test_a_handshake_the_origin_does_not_accept(any_proxy, origin: Origin, kind: str):
    """Pushpin 1.36 relays an answer to the opening POST that is not ``200
    application/websocket-events`` as it is, a 200 too (proxy/websocketoverhttp.cpp
    ``ErrorRejected``); an events answer that does not open is its own 502 ``Error while
    proxying to origin.`` (proxy/wsproxysession.cpp ``reject``). The
    embedded proxy answered 502 ``Bad Gateway: not accepted`` and turned a 200 into a 502.
    The type is compared byte for byte (``contentType != "application/websocket-events"``):
    with a parameter (``; charset=utf-8``) an events answer is relayed too, where the
    embedded proxy ignored the parameter and opened."""
    answers = {
        "no OPEN": ws_answer(WebSocketEvent("TEXT", b"m:x")),
        "no events": ws_answer(),
        "malformed": Response(200, [("Content-Type", EVENTS)], b"TEXT zz\r\n"),
        "403": Response(403, [("Content-Type", "text/plain"), ("X-A", "1")], "nope\n"),
        "200 text": Response(200, [("Content-Type", "text/plain"), ("X-A", "1")], "plain\n"),
        "events; charset": Response(200, CHARSET_EVENTS, encode_events([WebSocketEvent("OPEN")])),
    }
    origin.route("/ws/")(lambda request: answers[kind])

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10):
                pass
        response = refused.value.response
        return response.status_code, response.headers.get("Content-Type"), bytes(response.body)

    if kind in ("403", "200 text", "events; charset"):
        answer = answers[kind]
        body = answer.body.encode() if isinstance(answer.body, str) else answer.body
        assert run(scenario()) == (answer.status, dict(answer.headers)["Content-Type"], body)
    else:
        # Pushpin sends no Content-Type; uvicorn adds a text/plain one to an ASGI answer.
        status, _, body = run(scenario())
        assert (status, body) == (502, b"Error while proxying to origin.\n")


def _stream_with_a_link(origin: Origin, link_answers) -> None:
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev"),
        ("Grip-Link", "</events/next/>; rel=next; timeout=120"),
    ], "first\n"))
    origin.route("/events/next/")(lambda r: next(link_answers))


async def _lines_after_a_hint(any_proxy) -> list[str]:
    async with httpx.AsyncClient(base_url=any_proxy.url, timeout=60) as client:
        async with client.stream("GET", "/events/") as response:
            lines = response.aiter_lines()
            assert await lines.__anext__() == "first"
            assert await in_thread(any_proxy.wait_subscribed, "ev")
            await in_thread(any_proxy.publish, {"channel": "ev",
                                                "formats": {"http-stream": {"action": "hint"}}})
            return [line async for line in lines]


def _gone() -> Response:
    return Response(404, [("Content-Type", "text/plain")], "gone\n")


def test_a_next_link_answering_404_is_fetched_again(any_proxy, origin: Origin):
    """A 404 is a failed fetch like a 500 for Pushpin 1.36 (handler/httpsession.cpp
    ``tryProcessOutReq``: any status outside 2xx -> ``outReq_error``, a retry about 1 s
    later): the stream stays open, silent, and gets the next answer. (NOTES said the
    embedded proxy ended the stream at a 404; no longer so on main.)"""
    answers = iter([_gone(), Response(200, [], "recovered\n")])
    _stream_with_a_link(origin, answers)
    assert run(_lines_after_a_hint(any_proxy)) == ["recovered"]
    assert len(origin.requests_to("/events/next/")) == 2


@pytest.mark.waits_out_a_hold
@pytest.mark.timeout(150)
def test_a_next_link_that_keeps_failing_is_fetched_six_times_then_the_stream_ends(
    any_proxy, origin: Origin
):
    """Pushpin 1.36 retries a failing next link RETRY_MAX = 5 times, after 1, 2, 4, 8 and
    16 s plus up to 1 s each (handler/httpsession.cpp ``outReq_error``), then ends the
    stream with nothing more written (``doError``): six fetches, about 34 s. The embedded
    proxy fetched seven times."""
    _stream_with_a_link(origin, iter(_gone() for _ in range(10)))
    assert run(_lines_after_a_hint(any_proxy)) == []
    assert len(origin.requests_to("/events/next/")) == 6


def test_an_answer_with_a_parameter_on_the_events_type_after_the_handshake_drops_it(
    any_proxy, origin: Origin
):
    """Once open, such an answer is an error of the origin side for Pushpin 1.36
    (proxy/websocketoverhttp.cpp ``ErrorGeneric``): the client's connection is dropped with
    no close frame and the answer's message never leaves. The embedded proxy relayed it."""

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        return Response(200, CHARSET_EVENTS, encode_events([WebSocketEvent("TEXT", b"m:x")]))

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10) as ws:
            await ws.send("go")
            return await _messages_until_closed(ws)

    assert run(scenario()) == ([], None)


@pytest.mark.parametrize("reply", ["CLOSE 4002", "CLOSE", "no CLOSE"])
def test_a_clients_close_is_answered_with_the_origins_close(
    any_proxy, origin: Origin, request: pytest.FixtureRequest, reply: str
):
    """Pushpin 1.36 does not answer a client's close frame itself: it posts the CLOSE to
    the origin and closes the client with the origin's CLOSE, its code and reason (an empty
    CLOSE as 1000), and without a keep-alive interval the origin has that one answer to
    close: an answer with no CLOSE drops the client with no close frame
    (proxy/websocketoverhttp.cpp, "the server has only one chance to respond to a close").

    The embedded proxy cannot: every WebSocket protocol of uvicorn, the server it runs in,
    answers a close frame itself, echoing the client's code, before the app hears of it
    (websockets' sans-I/O ``Protocol.recv_frame`` echoes it, and uvicorn's
    websockets_sansio_impl ``handle_close`` writes it and closes the transport; its
    wsproto_impl sends ``event.response()`` alike). So its client always gets its own code
    back, while the origin still gets the CLOSE."""
    if any_proxy.name == "embedded":
        request.applymarker(pytest.mark.xfail(strict=True, reason="uvicorn echoes the close"))
    answers = {
        "CLOSE 4002": ws_answer(WebSocketEvent("CLOSE", close_payload(4002, "bye"))),
        "CLOSE": ws_answer(WebSocketEvent("CLOSE")),
        "no CLOSE": ws_answer(),
    }

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        return answers[reply] if events and events[-1].type == "CLOSE" else ws_answer()

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10) as ws:
            await ws.close(4001, "client")
            return ws.protocol.close_rcvd

    close = run(scenario())
    sent = origin.wait_for_requests("/ws/", 2)[1]
    assert decode_events(sent.body) == [WebSocketEvent("CLOSE", close_payload(4001, "client"))]
    expected = {"CLOSE 4002": (4002, "bye"), "CLOSE": (1000, ""), "no CLOSE": None}[reply]
    assert (close and (close.code, close.reason)) == expected


def test_pings_go_through_to_the_origin_and_back(
    any_proxy, origin: Origin, request: pytest.FixtureRequest
):
    """Pushpin 1.36 answers no ping itself: a client's ping is posted to the origin as a
    PING event and answered only with the origin's PONG, and an origin's PING is a ping
    frame to the client, whose pong comes back as a PONG event (proxy/websocketoverhttp.cpp,
    ``Frame::Ping`` <-> ``PING``). The embedded proxy cannot: ASGI has no ping or pong
    messages, and uvicorn answers a client's pings itself; the origin hears of none."""
    if any_proxy.name == "embedded":
        request.applymarker(pytest.mark.xfail(strict=True, reason="ASGI has no ping frames"))

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        if events and events[0].type == "PING":
            pong = WebSocketEvent("PONG", events[0].content)
            return ws_answer(pong, WebSocketEvent("PING", b"hi"))
        if events and events[0].type == "PONG":
            return ws_answer(WebSocketEvent("TEXT", b"m:pong " + (events[0].content or b"")))
        return ws_answer()

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", ping_interval=None) as ws:
            await asyncio.wait_for(await ws.ping(b"abc"), 10)
            return await asyncio.wait_for(ws.recv(), 5)

    assert run(scenario()) == "pong hi"
    pings = [decode_events(r.body)[0] for r in origin.requests_to("/ws/")[1:3]]
    assert pings == [WebSocketEvent("PING", b"abc"), WebSocketEvent("PONG", b"hi")]


def test_an_origins_close_with_a_one_byte_payload_closes_without_a_code(
    any_proxy, origin: Origin
):
    """Pushpin 1.36 reads a CLOSE event's code only from a payload of two bytes or more
    (proxy/websocketoverhttp.cpp, ``e.content.size() >= 2``): a one-byte payload is a CLOSE
    without a code, and the client gets the answer's messages, then a close with 1000. The
    embedded proxy took the whole answer as malformed and dropped the connection, the
    messages with it."""

    @origin.route("/ws/")
    def answer(request) -> Response:
        events = decode_events(request.body)
        if events and events[0].type == "OPEN":
            return ws_answer(WebSocketEvent("OPEN"))
        return ws_answer(WebSocketEvent("TEXT", b"m:last"), WebSocketEvent("CLOSE", b"\x03"))

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10) as ws:
            await ws.send("go")
            return await _messages_until_closed(ws)

    got, close = run(scenario())
    assert (got, close and (close.code, close.reason)) == (["last"], (1000, ""))


def _events_of_size(size: int) -> list[WebSocketEvent]:
    """``m:`` TEXT messages of 10,000 bytes and one more, encoded in exactly ``size`` bytes.
    Not one large message: Pushpin 1.36 sends the rest of a message over 16,384 bytes only
    when the client sends a frame (``INLINE_MESSAGE_MAX`` in drf_grip/protocol/constants.py);
    one of 50 KB reached no client within 10 s."""
    chunk = WebSocketEvent("TEXT", b"m:" + b"x" * 9_998)
    events = [chunk] * (size // len(encode_events([chunk])) - 1)
    rest = size - len(encode_events(events))
    length = rest - len(f"TEXT {rest:x}\r\n\r\n")
    if len(f"{length:x}") < len(f"{rest:x}"):  # one hex digit fewer in the event's length
        length += 1
    events.append(WebSocketEvent("TEXT", b"m:" + b"x" * (length - 2)))
    assert len(encode_events(events)) == size
    return events


@pytest.mark.parametrize("size", [1_000_000, 1_000_001])
def test_an_origin_answer_over_1000000_bytes_drops_the_connection(
    any_proxy, origin: Origin, size: int
):
    """Pushpin 1.36 reads an origin's answer body up to RESPONSE_BODY_MAX = 1,000,000 bytes
    (proxy/websocketoverhttp.cpp ``req_readyRead``: ``inBuf.size() + bytesAvailable() >
    RESPONSE_BODY_MAX`` -> ``error``); one byte more is an error of the origin side, and the
    client is dropped with no close frame and none of the answer's messages
    (proxy/wsproxysession.cpp ``out_error``). The embedded proxy read up to
    max(4 x max_message_size, 1 MiB) and relayed it."""
    events = _events_of_size(size)

    @origin.route("/ws/")
    def answer(request) -> Response:
        if decode_events(request.body)[:1] == [WebSocketEvent("OPEN")]:
            return ws_answer(WebSocketEvent("OPEN"))
        return Response(200, [("Content-Type", EVENTS)], encode_events(events))

    async def scenario():
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10) as ws:
            await ws.send("go")
            if size > 1_000_000:
                return await _messages_until_closed(ws)
            return [await asyncio.wait_for(ws.recv(), 10) for _ in events], "open"

    got, close = run(scenario())
    if size > 1_000_000:
        assert (got, close) == ([], None)
    else:
        assert ([len(m) for m in got], close) == ([len(e.content) - 2 for e in events], "open")


@pytest.mark.parametrize("interval", ["1.5", "abc", "0", "-5"])
def test_a_handshake_answer_with_no_events_and_no_whole_keep_alive_interval_is_refused(
    any_proxy, origin: Origin, interval: str
):
    """Pushpin 1.36 reads ``Keep-Alive-Interval`` as a whole number of seconds
    (proxy/websocketoverhttp.cpp: ``toInt(&ok)``, kept only if ``ok && x > 0``, raised to
    20); anything else turns keep-alives off. A handshake answer with no events is accepted
    only with keep-alives on ("server must respond with events or enable keep alive"), so
    with these values it is Pushpin's 502."""
    origin.route("/ws/")(lambda request: ws_answer(headers=[("Keep-Alive-Interval", interval)]))

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10):
                pass
        response = refused.value.response
        return response.status_code, bytes(response.body)

    assert run(scenario()) == (502, b"Error while proxying to origin.\n")
    assert len(origin.requests_to("/ws/")) == 1


@pytest.mark.waits_out_a_hold
@pytest.mark.timeout(60)
def test_a_handshake_answer_with_no_events_and_a_keep_alive_interval_waits_for_the_next_call(
    any_proxy, origin: Origin
):
    """With keep-alives on, Pushpin 1.36 takes a handshake answer with no events as "not
    yet": the client's handshake waits, and the keep-alive call, 20 s later (the interval is
    raised to at least 20, proxy/websocketoverhttp.cpp), posts OPEN again (``update``: while
    ``Connecting`` the events are ``OPEN``); an OPEN then opens. The embedded proxy answered
    502 at once. Pushpin sets no bound on such calls while the client waits (run against
    it: 30 OPENs in 600 s, every 20 s, until the client gave up)."""
    answers = iter([ws_answer(headers=[("Keep-Alive-Interval", "5")]),
                    ws_answer(WebSocketEvent("OPEN"), WebSocketEvent("TEXT", b"m:hi"))])
    origin.route("/ws/")(lambda request: next(answers))

    async def scenario():
        started = time.monotonic()
        async with websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=40) as ws:
            # Qt's coarse timers may fire up to 5 % early (QTimer, Qt::CoarseTimer).
            return time.monotonic() - started >= 19, await asyncio.wait_for(ws.recv(), 10)

    assert run(scenario()) == (True, "hi")
    first, second = origin.requests_to("/ws/")[:2]  # then the client's CLOSE
    assert [decode_events(r.body) for r in (first, second)] == [[WebSocketEvent("OPEN")]] * 2


@pytest.mark.parametrize("grip_status", ["299 Fine", "404", "201 Made"])
def test_grip_status_sets_the_status_of_an_answer_that_does_not_hold(
    any_proxy, origin: Origin, grip_status: str
):
    """Pushpin 1.36 hands every answer with a ``Grip-*`` header to its handler
    (proxy/proxysession.cpp, ``acceptHeaderPrefixes``), which answers the client with
    ``Grip-Status``'s code whether or not the answer holds (handler/instruct.cpp,
    ``newResponse.code``). The embedded proxy passed a non-holding answer's own status
    through."""
    origin.route("/plain/")(lambda request: Response(
        200, [("Grip-Status", grip_status), ("Content-Type", "text/plain")], "hi"
    ))
    response = httpx.get(any_proxy.url + "/plain/", timeout=10)
    assert (response.status_code, response.text) == (int(grip_status.split()[0]), "hi")
    assert not [name for name in response.headers if name.lower().startswith("grip-")]


def test_grip_status_gives_the_client_its_reason_phrase(
    any_proxy, origin: Origin, request: pytest.FixtureRequest
):
    """Pushpin 1.36 sends ``Grip-Status``'s reason phrase as it is (handler/instruct.cpp,
    ``newResponse.reason``; the standard one only when none is given). The embedded proxy
    cannot: an ASGI response has no reason phrase, and uvicorn writes the standard one."""
    if any_proxy.name == "embedded":
        request.applymarker(pytest.mark.xfail(strict=True, reason="ASGI has no reason phrase"))
    origin.route("/plain/")(lambda request: Response(
        200, [("Grip-Status", "200 Fine Thanks"), ("Content-Type", "text/plain")], "hi"
    ))
    response = httpx.get(any_proxy.url + "/plain/", timeout=10)
    assert (response.status_code, response.reason_phrase) == (200, "Fine Thanks")


async def _keep_alives_in(any_proxy, path: str, window: float = 7) -> int:
    """How many ``ka`` lines a stream from ``path`` writes after its first line in ``window`` s."""
    async with httpx.AsyncClient(base_url=any_proxy.url, timeout=10) as client:
        async with client.stream("GET", path) as response:
            lines = response.aiter_lines()
            assert await lines.__anext__() == "first"
            until = time.monotonic() + window
            count = 0
            while (left := until - time.monotonic()) > 0:
                try:
                    assert await asyncio.wait_for(lines.__anext__(), left) == "ka"
                except asyncio.TimeoutError:
                    break
                count += 1
            return count


def _stream_with_keep_alive(origin: Origin, keep_alive: str) -> None:
    origin.route("/s/")(lambda request: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ka"), ("Content-Type", "text/plain"),
        ("Grip-Keep-Alive", keep_alive),
    ], "first\n"))


@pytest.mark.waits_out_a_hold
@pytest.mark.parametrize("mode", ["idle", "interval"])
def test_a_streams_keep_alives_come_up_to_a_second_before_their_timeout(
    any_proxy, origin: Origin, mode: str
):
    """Pushpin 1.36 sets each keep-alive timer of a stream to the ``Grip-Keep-Alive``
    timeout less a random part of a second (handler/httpsession.cpp ``setupKeepAlive``,
    ``KEEPALIVE_RAND_MAX`` = 1000 ms): with ``timeout=1`` a keep-alive every half second on
    average, about fourteen in 7 s. Eight or more but for 1 in 40,320 runs (eight gaps of
    a uniform part of a second each add up past 7 s only that rarely: 1/8!); the embedded
    proxy wrote one every full second, seven."""
    _stream_with_keep_alive(origin, f"ka\\n; format=cstring; timeout=1; mode={mode}")
    assert run(_keep_alives_in(any_proxy, "/s/")) >= 8


@pytest.mark.waits_out_a_hold
def test_a_streams_keep_alive_timeout_of_0_is_1_second(any_proxy, origin: Origin):
    """Pushpin 1.36 raises a ``Grip-Keep-Alive`` timeout under 1 to 1 (handler/instruct.cpp,
    end of ``fromResponse``): ``timeout=0`` writes keep-alives as ``timeout=1`` does, about
    fourteen in 7 s (run against it). The embedded proxy answered 502."""
    _stream_with_keep_alive(origin, "ka\\n; format=cstring; timeout=0")
    assert run(_keep_alives_in(any_proxy, "/s/")) >= 8


def test_a_keep_alive_timeout_of_0_on_a_response_hold_holds(any_proxy, origin: Origin):
    """A response hold has no keep-alives, but Pushpin 1.36 still reads ``Grip-Keep-Alive``
    (handler/instruct.cpp): ``timeout=0`` is valid there too, and the hold is held. The
    embedded proxy answered 502 at once."""
    origin.route("/r/")(lambda request: Response(200, [
        ("Grip-Hold", "response"), ("Grip-Channel", "kr"), ("Content-Type", "text/plain"),
        ("Grip-Keep-Alive", "ka; timeout=0"),
    ], "held"))

    async def scenario():
        async with httpx.AsyncClient(base_url=any_proxy.url, timeout=10) as client:
            held = asyncio.ensure_future(client.get("/r/"))
            assert await in_thread(any_proxy.wait_subscribed, "kr")
            await in_thread(any_proxy.publish, {
                "channel": "kr", "formats": {"http-response": {"body": "pushed"}}
            })
            response = await held
            return response.status_code, response.text

    assert run(scenario()) == (200, "pushed")


@pytest.mark.parametrize("hold", ["stream", "response"])
@pytest.mark.parametrize("timeout", ["-1", "abc", "1.5"])
def test_a_keep_alive_timeout_that_is_no_whole_number_is_a_502(
    any_proxy, origin: Origin, hold: str, timeout: str
):
    """Pushpin 1.36 refuses a ``Grip-Keep-Alive`` timeout that ``toInt`` cannot read or that
    is negative, on either hold (handler/instruct.cpp: "failed to parse Grip-Keep-Alive
    timeout value", "... has invalid value"): the client gets a 502 at once."""
    origin.route("/h/")(lambda request: Response(200, [
        ("Grip-Hold", hold), ("Grip-Channel", "kb"), ("Content-Type", "text/plain"),
        ("Grip-Keep-Alive", f"ka; timeout={timeout}"),
    ], "first\n"))
    assert httpx.get(any_proxy.url + "/h/", timeout=10).status_code == 502


@pytest.mark.parametrize(
    "grip_status, hold",
    [("+201", False), ("0", False), ("99", False), ("600", False), ("999", False),
     pytest.param("+201", True, marks=pytest.mark.waits_out_a_hold),
     pytest.param("600", True, marks=pytest.mark.waits_out_a_hold)],
)
def test_grip_status_takes_any_code_from_0_to_999(
    any_proxy, origin: Origin, request: pytest.FixtureRequest, grip_status: str, hold: bool
):
    """Pushpin 1.36 reads ``Grip-Status``'s code with ``toInt`` and takes 0 to 999
    (handler/instruct.cpp, "Grip-Status contains invalid status code" otherwise), on a hold
    and on an answer that does not hold, and sends it as it is, a code it has no reason
    phrase for with "Undefined Reason" (run against it). The embedded proxy refused
    ``+201`` (502). It cannot send a code outside 100-599: uvicorn writes status lines from
    a table of those (httptools_impl ``STATUS_LINE``, h11_impl ``STATUS_PHRASES``), so it
    answers 502 for them."""
    code = int(grip_status)
    if any_proxy.name == "embedded" and not 100 <= code <= 599:
        request.applymarker(pytest.mark.xfail(strict=True, reason="uvicorn sends 100-599 only"))
    headers = [("Grip-Status", grip_status), ("Content-Type", "text/plain")]
    if hold:  # answered when the hold times out
        headers += [("Grip-Hold", "response"), ("Grip-Channel", "st"), ("Grip-Timeout", "5")]
    origin.route("/st/")(lambda request: Response(200, headers, "hi"))
    reason = "Created" if code == 201 else "Undefined Reason"
    request = b"GET /st/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    assert status_line(any_proxy.url, request) == f"HTTP/1.1 {code} {reason}".encode()


@pytest.mark.parametrize("hold", [False, True])
@pytest.mark.parametrize("grip_status", ["abc", "-1", "1000", "200abc"])
def test_a_grip_status_that_is_no_code_from_0_to_999_is_a_502(
    any_proxy, origin: Origin, hold: bool, grip_status: str
):
    """Pushpin 1.36 answers 502 at once for a ``Grip-Status`` ``toInt`` cannot read, or
    outside 0 to 999, on a hold too (handler/instruct.cpp)."""
    headers = [("Grip-Status", grip_status), ("Content-Type", "text/plain")]
    if hold:
        headers += [("Grip-Hold", "response"), ("Grip-Channel", "st")]
    origin.route("/st/")(lambda request: Response(200, headers, "hi"))
    assert httpx.get(any_proxy.url + "/st/", timeout=10).status_code == 502


def _ws_with_keep_alive(origin: Origin, *keep_alives: dict) -> None:
    """A WebSocket whose origin sets the first keep-alive on open, the next on each message."""
    answers = iter([ws_answer(WebSocketEvent("OPEN"), control("keep-alive", **keep_alives[0]))]
                   + [ws_answer(control("keep-alive", **k)) for k in keep_alives[1:]])
    origin.route("/ws/")(lambda request: next(answers, ws_answer()))


async def _ws_messages_in(ws, window: float) -> list:
    got = []
    until = time.monotonic() + window
    while (left := until - time.monotonic()) > 0:
        try:
            got.append(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            break
    return got


def _connect(any_proxy):
    # No pings: Pushpin 1.36 posts them to the origin, which would have to answer them.
    return websockets.connect(any_proxy.ws_url + "/ws/", open_timeout=10, ping_interval=None)


@pytest.mark.waits_out_a_hold
@pytest.mark.parametrize(
    "keep_alive",
    [{"timeout": 1}, {"timeout": 1, "mode": "interval"}, {"timeout": "1", "mode": "other"}],
    ids=["idle", "interval", "string-timeout-other-mode"],
)
def test_a_websockets_keep_alives_come_up_to_a_second_before_their_timeout(
    any_proxy, origin: Origin, keep_alive: dict
):
    """Pushpin 1.36 sets a WebSocket's keep-alive timer as a stream's: the control message's
    timeout less a random part of a second (proxy/wsproxysession.cpp ``setupKeepAlive``,
    ``KEEPALIVE_RAND_MAX``), so ``timeout: 1`` gives about fourteen keep-alives in 7 s (and
    eight or more but for 1 run in 40,320, see the stream's test above), in ``idle`` mode
    (the default, and any unknown mode) and ``interval`` alike; a timeout in a string is read
    as a number (a ``QVariant``'s ``toInt``, handler/wscontrolmessage.cpp). The embedded
    proxy sent one every full second, seven, and none for ``"1"``."""
    _ws_with_keep_alive(origin, {"content": "ka", **keep_alive})

    async def scenario():
        async with _connect(any_proxy) as ws:
            return await _ws_messages_in(ws, 7)

    got = run(scenario())
    assert len(got) >= 8 and set(got) == {"ka"}


def test_a_websocket_keep_alive_without_content_turns_keep_alives_off(
    any_proxy, origin: Origin
):
    """Pushpin 1.36 sets a keep-alive only from a control message with ``content`` or
    ``content-bin``; without, keep-alives are off (handler/engine.cpp, ``KeepAlive``:
    ``cm.content.isNull()``). The embedded proxy sent an empty message every second."""
    _ws_with_keep_alive(origin, {"timeout": 1})

    async def scenario():
        async with _connect(any_proxy) as ws:
            return await _ws_messages_in(ws, 3)

    assert run(scenario()) == []


def test_a_websocket_keep_alive_with_a_negative_timeout_is_ignored(any_proxy, origin: Origin):
    """A negative timeout makes the control message invalid for Pushpin 1.36
    (handler/wscontrolmessage.cpp, "contains 'timeout' with invalid value"), and an invalid
    control message is dropped (handler/engine.cpp): the keep-alive set before goes on. The
    embedded proxy turned keep-alives off."""
    _ws_with_keep_alive(origin, {"content": "ka", "timeout": 1}, {"content": "no", "timeout": -1})

    async def scenario():
        async with _connect(any_proxy) as ws:
            assert await asyncio.wait_for(ws.recv(), 10) == "ka"
            await ws.send("negative")
            await asyncio.wait_for(in_thread(origin.wait_for_requests, "/ws/", 2), 10)
            return await _ws_messages_in(ws, 4)

    got = run(scenario())
    assert len(got) >= 3 and set(got) == {"ka"}


@pytest.mark.waits_out_a_hold
@pytest.mark.timeout(150)
def test_a_websocket_keep_alive_without_a_timeout_comes_after_55_seconds(
    any_proxy, origin: Origin
):
    """Pushpin 1.36 takes a keep-alive control message with no timeout, or ``timeout: 0``,
    as 55 s (handler/engine.cpp ``DEFAULT_WS_KEEPALIVE_TIMEOUT``): the first keep-alive
    comes up to a second before 55 s (run against it: at 53.9 and 54.9 s). The embedded
    proxy turned keep-alives off."""
    @origin.route("/ws/")
    def answer(request) -> Response:
        if decode_events(request.body)[:1] != [WebSocketEvent("OPEN")]:
            return ws_answer()
        timeout = {"timeout": 0} if request.query == "zero" else {}
        return ws_answer(WebSocketEvent("OPEN"), control("keep-alive", content="ka", **timeout))

    async def first_keep_alive(query: str) -> tuple[list, list]:
        url = any_proxy.ws_url + "/ws/" + query
        async with websockets.connect(url, open_timeout=10, ping_interval=None) as ws:
            return await _ws_messages_in(ws, 40), await _ws_messages_in(ws, 30)

    async def scenario():
        return await asyncio.gather(first_keep_alive(""), first_keep_alive("?zero"))

    assert run(scenario()) == [([], ["ka"])] * 2
