"""WebSocket-over-HTTP at the GRIP level: the events codec, ``WebSocketContext``, and the
answer the proxy gets (``build_response`` / ``finish_response``)."""

from __future__ import annotations

import logging
import struct

import pytest
from django.http import HttpResponse, HttpResponseForbidden
from django.test import RequestFactory, override_settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from drf_grip.grip.websocket_context import WebSocketContext
from drf_grip.grip.websocket_origin import origin_allowed
from drf_grip.grip.websocket_over_http import build_response, context_from_request, finish_response
from drf_grip.protocol import (
    WEBSOCKET_EVENTS,
    MalformedEvents,
    WebSocketEvent,
    close_code_of,
    decode_events,
    encode_events,
)

E = WebSocketEvent


def ws_request(body: bytes = b"OPEN\r\n", cid: str = "conn-1", proxied: bool = True, **headers):
    request = RequestFactory().post(
        "/ws/", data=body, content_type=WEBSOCKET_EVENTS, HTTP_CONNECTION_ID=cid, **headers
    )
    request.grip_proxied = proxied
    return request


def ctx_of(*events: WebSocketEvent, **kwargs) -> WebSocketContext:
    return WebSocketContext("conn-1", kwargs.pop("meta", {}), list(events), **kwargs)


# -- the codec -----------------------------------------------------------------------------


def test_decode_every_event_type():
    body = (
        b"OPEN\r\nTEXT 5\r\nhello\r\nBINARY 3\r\n\x00\xff\r\r\nPING\r\nPONG 2\r\nhi\r\n"
        b"CLOSE 2\r\n\x03\xe8\r\nDISCONNECT\r\n"
    )
    assert decode_events(body) == [
        E("OPEN"),
        E("TEXT", b"hello"),
        E("BINARY", b"\x00\xff\r"),
        E("PING"),
        E("PONG", b"hi"),
        E("CLOSE", b"\x03\xe8"),
        E("DISCONNECT"),
    ]


def test_empty_body_is_an_empty_batch():
    # Pushpin's keep-alive requests (Keep-Alive-Interval) carry no events.
    assert decode_events(b"") == []


def test_no_length_differs_from_empty_content():
    assert decode_events(b"TEXT\r\nTEXT 0\r\n\r\n") == [E("TEXT"), E("TEXT", b"")]


def test_content_may_contain_crlf_and_uppercase_hex_lengths():
    assert decode_events(b"TEXT C\r\nline1\r\nline2\r\n") == [E("TEXT", b"line1\r\nline2")]


def test_encode_writes_lowercase_hex_like_pushpin():
    assert encode_events([E("OPEN"), E("TEXT", b"m:" + b"x" * 26), E("CLOSE", b"\x03\xe8")]) == (
        b"OPEN\r\nTEXT 1c\r\nm:" + b"x" * 26 + b"\r\nCLOSE 2\r\n\x03\xe8\r\n"
    )


def test_encode_refuses_an_unknown_type():
    with pytest.raises(ValueError):
        encode_events([E("HELLO")])


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"FOO\r\n", "unknown type"),
        (b"text 1\r\nx\r\n", "unknown type"),
        (b"\r\n", "unknown type"),
        (b"TEXT 5\r\nhello", "not followed by CRLF"),
        (b"OPEN", "does not end with CRLF"),
        (b"OPEN\r\nTEXT 5", "does not end with CRLF"),
        (b"TEXT 0x5\r\nhello\r\n", "not hexadecimal"),
        (b"TEXT +5\r\nhello\r\n", "not hexadecimal"),
        (b"TEXT 1_0\r\n0123456789abcdef\r\n", "not hexadecimal"),
        (b"TEXT \r\n\r\n", "not hexadecimal"),
        (b"TEXT  5\r\nhello\r\n", "not hexadecimal"),
        (b"TEXT 5 \r\nhello\r\n", "not hexadecimal"),
        (b"TEXT fffffffffffffffff\r\n", "not hexadecimal"),
        (b"TEXT 10\r\nhello\r\n", "truncated content"),
        (b"TEXT ffffffff\r\nhello\r\n", "truncated content"),
        (b"TEXT 5\r\nhelloXX", "not followed by CRLF"),
        (b"TEXT 2\r\n\xff\xfe\r\n", "invalid UTF-8"),
        (b"CLOSE 1\r\nx\r\n", "2-byte code"),
        (b"OPEN\r\nTE\xffXT 1\r\nx\r\n", "unknown type"),
    ],
)
def test_malformed_bodies_say_why(body, reason):
    with pytest.raises(MalformedEvents) as info:
        decode_events(body)
    assert reason in str(info.value)
    assert info.value.reason == str(info.value)


def test_a_one_byte_close_is_a_close_without_a_code_as_pushpin_reads_an_answer():
    events = decode_events(b"CLOSE 1\r\nx\r\n", short_close=True)
    assert events == [WebSocketEvent("CLOSE", b"x")]
    assert close_code_of(events[0].content) == 1000


def test_reason_names_the_event_and_never_echoes_much_of_the_body():
    with pytest.raises(MalformedEvents) as info:
        decode_events(b"OPEN\r\n" + b"A" * 10_000 + b"\r\n")
    assert str(info.value).startswith("event 2")
    assert len(str(info.value)) < 120


def test_non_bytes_body_is_malformed_not_a_type_error():
    with pytest.raises(MalformedEvents):
        decode_events("OPEN\r\n")  # type: ignore[arg-type]


@given(st.binary(max_size=300))
@hsettings(max_examples=500)
def test_decode_raises_nothing_but_malformed_events(body):
    try:
        events = decode_events(body)
    except MalformedEvents:
        return
    # Whatever decodes encodes back to the same bytes, modulo hex case.
    assert decode_events(encode_events(events)) == events


_types = st.sampled_from(["OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"])


@st.composite
def events(draw):
    etype = draw(_types)
    if etype == "TEXT":
        content = draw(st.none() | st.text(max_size=12).map(lambda s: s.encode("utf-8")))
    elif etype == "CLOSE":
        content = draw(st.none() | st.binary(min_size=2, max_size=8) | st.just(b""))
    else:
        content = draw(st.none() | st.binary(max_size=12))
    return E(etype, content)


@given(st.lists(events(), max_size=8))
def test_encode_decode_round_trip(batch):
    assert decode_events(encode_events(batch)) == batch


@given(st.lists(events(), min_size=1, max_size=6), st.data())
@hsettings(max_examples=300)
def test_damaged_valid_bodies_raise_only_malformed_events(batch, data):
    body = bytearray(encode_events(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if action == "flip" and body:
            body[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del body[at:]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decode_events(bytes(body))
    except MalformedEvents:
        pass


# -- receiving -----------------------------------------------------------------------------


def test_recv_gives_str_for_text_bytes_for_binary_none_on_close():
    ctx = ctx_of(E("TEXT", "héllo".encode()), E("BINARY", b"\x00\x01"), E("CLOSE", b"\x0f\xa1bye"))
    assert ctx.can_recv() and ctx.recv() == "héllo"
    assert ctx.recv() == b"\x00\x01"
    assert ctx.recv() is None
    assert (ctx.close_code, ctx.close_reason) == (4001, "bye")
    assert not ctx.can_recv()


def test_empty_text_without_length_is_an_empty_string():
    ctx = ctx_of(E("TEXT"), E("BINARY"))
    assert ctx.recv() == ""
    assert ctx.recv() == b""


def test_disconnect_reads_as_none_like_close_not_an_exception():
    # django-grip's echo loop: `if message is None: ws.close(); break`.
    ctx = ctx_of(E("TEXT", b"a"), E("DISCONNECT"))
    assert ctx.recv() == "a"
    assert ctx.recv() is None
    assert ctx.disconnected and ctx.close_code is None


def test_recv_past_the_batch_raises_index_error_like_gripcontrol():
    ctx = ctx_of(E("OPEN"))
    assert ctx.is_opening()
    assert not ctx.can_recv()
    with pytest.raises(IndexError):
        ctx.recv()


def test_pings_are_answered_with_their_payload():
    ctx = ctx_of(E("PING", b"p1"), E("TEXT", b"x"), E("PING"), E("PONG", b"ignored"))
    assert ctx.recv() == "x"
    assert not ctx.can_recv()
    assert ctx.out_events == [E("PONG", b"p1"), E("PONG")]


def test_gripcontrols_handle_upcoming_pings_and_pongs():
    # Part of gripcontrol's WebSocketContext, which django-grip views call (GRIP probe).
    ctx = ctx_of(E("PING", b"p"), E("PONG"), E("TEXT", b"x"), E("PING", b"q"))
    ctx.handle_upcoming_pings_and_pongs()
    assert ctx.read_index == 2 and ctx.out_events == [E("PONG", b"p")]
    assert ctx.recv() == "x"


def test_unread_pings_are_answered_too():
    ctx = ctx_of(E("PING", b"late"))
    assert encode_events([E("PONG", b"late")]) in build_response(ctx).content


# -- sending -------------------------------------------------------------------------------


def test_send_prefixes_messages_for_the_grip_extension():
    ctx = ctx_of(E("TEXT", b"x"))
    ctx.send("hé")
    ctx.send_binary("bin")
    assert ctx.out_events == [E("TEXT", "m:hé".encode()), E("BINARY", b"m:bin")]
    with pytest.raises(TypeError):
        ctx.send(42)  # type: ignore[arg-type]


def test_send_of_utf8_bytes_is_a_text_message_as_gripcontrols_was():
    """gripcontrol's own test: ``send(b"apple")`` is TEXT. A page's ``JSON.parse(event.data)``
    needs a string; a binary message reaches it as a Blob."""
    ctx = ctx_of(E("TEXT", b"x"))
    ctx.send('{"a": "é"}'.encode())
    ctx.send(bytearray(b""))
    assert ctx.out_events == [E("TEXT", 'm:{"a": "é"}'.encode()), E("TEXT", b"m:")]


def test_send_of_bytes_that_are_not_utf8_is_a_binary_message():
    # A text frame that is not UTF-8 makes the browser fail the connection (RFC 6455 §8.1).
    ctx = ctx_of(E("TEXT", b"x"))
    ctx.send(b"\xff\x00")
    assert ctx.out_events == [E("BINARY", b"m:\xff\x00")]


def test_a_django_websocket_echo_keeps_the_frame_type():
    from drf_grip.grip.websocket_request import WebSocket as Socket

    ctx = ctx_of(E("TEXT", b"t"), E("BINARY", b"b"))
    socket = Socket(ctx)
    for message in socket:
        socket.send(message)
    assert ctx.out_events == [E("TEXT", b"m:t"), E("BINARY", b"m:b")]


def test_control_messages():
    ctx = ctx_of(E("TEXT", b"x"), grip_prefix="")
    ctx.subscribe("news")
    ctx.unsubscribe("news")
    ctx.detach()
    ctx.send_control('{"type":"session"}')
    assert [e.content for e in ctx.out_events] == [
        b'c:{"type":"subscribe","channel":"news"}',
        b'c:{"type":"unsubscribe","channel":"news"}',
        b'c:{"type":"detach"}',
        b'c:{"type":"session"}',
    ]
    with pytest.raises(ValueError):
        ctx.subscribe("")


@override_settings(GRIP_PREFIX="app-")
def test_subscribe_applies_grip_prefix_read_at_call_time():
    ctx = ctx_of(E("OPEN"))
    ctx.subscribe("news")
    assert ctx.out_events[-1].content == b'c:{"type":"subscribe","channel":"app-news"}'


def test_keep_alive_control_message():
    ctx = ctx_of(E("OPEN"))
    ctx.set_keep_alive(30)
    ctx.set_keep_alive(20, content=b"\x01", message_type="binary", mode="interval")
    ctx.set_keep_alive(None)
    assert [e.content for e in ctx.out_events] == [
        b'c:{"type":"keep-alive","message-type":"ping","timeout":30,"mode":"idle",'
        b'"content":"keep-alive"}',
        b'c:{"type":"keep-alive","message-type":"binary","timeout":20,"mode":"interval",'
        b'"content-bin":"AQ=="}',
        b'c:{"type":"keep-alive"}',
    ]


def test_a_negative_keep_alive_timeout_is_refused_not_sent():
    """Configuration probe: ``set_keep_alive(-25)`` sent ``"timeout":-25`` to the proxy."""
    ctx = ctx_of(E("OPEN"))
    with pytest.raises(ValueError, match="must not be negative"):
        ctx.set_keep_alive(-25)
    assert not [e for e in ctx.out_events if b"keep-alive" in e.content]


@pytest.mark.parametrize("code", [0, 100, 999, 1005, 1006, 1015, 2000, 5000])
def test_a_close_code_that_may_not_go_on_the_wire_is_kept_and_sent_as_1000(code, caplog):
    """gripcontrol's own test closes with 100 and reads it back from ``out_close_code``;
    a browser fails the connection on a reserved code (RFC 6455 §7.4.1)."""
    ctx = ctx_of(E("TEXT", b"hi"))
    ctx.send("last")
    ctx.close(code)
    assert (ctx.closed, ctx.out_close_code) == (True, code)
    with caplog.at_level(logging.WARNING, logger="drf_grip"):
        events = parse(build_response(ctx))
    assert events == [E("TEXT", b"m:last"), E("CLOSE", struct.pack(">H", 1000))]
    assert code == 0 or f"close({code})" in caplog.text


@pytest.mark.parametrize("code", [-1, 65536])
def test_a_close_code_is_two_bytes(code):
    with pytest.raises(ValueError, match="two bytes"):
        ctx_of(E("OPEN")).close(code)


def test_close_reason_fits_a_control_frame():
    with pytest.raises(ValueError):
        ctx_of(E("OPEN")).close(4000, "x" * 124)


# -- context_from_request ------------------------------------------------------------------


def test_not_a_websocket_request():
    factory = RequestFactory()
    assert context_from_request(factory.get("/ws/")) is None
    assert context_from_request(factory.post("/ws/", {"a": "b"})) is None


def test_context_from_a_pushpin_request():
    request = ws_request(
        b"OPEN\r\n",
        cid="abc",
        HTTP_META_USER_ID="7",
        HTTP_SEC_WEBSOCKET_PROTOCOL="chat.v2, chat.v1",
        HTTP_ACCEPT_ENCODING="gzip, br",
    )
    ctx = context_from_request(request)
    assert ctx.id == "abc" and ctx.is_opening()
    assert ctx.meta == {"user-id": "7"}
    assert ctx.protocols == ["chat.v2", "chat.v1"]
    # An events answer must never be compressed by GZipMiddleware.
    assert "HTTP_ACCEPT_ENCODING" not in request.META


def test_meta_is_not_trusted_from_a_direct_client():
    request = ws_request(b"OPEN\r\n", proxied=False, HTTP_META_USER_ID="1")
    assert context_from_request(request).meta == {}


def test_missing_connection_id_is_malformed():
    request = RequestFactory().post("/ws/", data=b"OPEN\r\n", content_type=WEBSOCKET_EVENTS)
    with pytest.raises(MalformedEvents, match="Connection-Id"):
        context_from_request(request)


def test_malformed_body_raises_malformed_events():
    with pytest.raises(MalformedEvents, match="truncated"):
        context_from_request(ws_request(b"TEXT 9\r\nabc\r\n"))


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10)
def test_oversized_body_is_malformed_not_a_500():
    with pytest.raises(MalformedEvents, match="DATA_UPLOAD_MAX_MEMORY_SIZE"):
        context_from_request(ws_request(b"TEXT 20\r\n" + b"x" * 32 + b"\r\n"))


# -- build_response ------------------------------------------------------------------------


def parse(response: HttpResponse) -> list[WebSocketEvent]:
    assert response.status_code == 200
    assert response["Content-Type"] == WEBSOCKET_EVENTS  # exactly: Pushpin compares the string
    return decode_events(response.content)


def test_accepting_an_opening_connection():
    ctx = ctx_of(E("OPEN"), grip_prefix="")
    ctx.accept(subprotocol="chat.v1")
    ctx.subscribe("room")
    ctx.send("welcome")
    response = build_response(ctx)
    assert parse(response) == [
        E("OPEN"),
        E("TEXT", b'c:{"type":"subscribe","channel":"room"}'),
        E("TEXT", b"m:welcome"),
    ]
    assert response["Sec-WebSocket-Extensions"] == "grip"
    assert response["Sec-WebSocket-Protocol"] == "chat.v1"


def test_accept_on_a_later_request_sends_no_second_open():
    # Pushpin drops a connection that receives OPEN once connected.
    ctx = ctx_of(E("TEXT", b"hi"))
    ctx.accept()
    assert parse(build_response(ctx)) == []


def test_close_sends_the_code_and_reason_last():
    ctx = ctx_of(E("TEXT", b"hi"))
    ctx.close(4000, "done")
    ctx.send("after")
    assert parse(build_response(ctx)) == [E("TEXT", b"m:after"), E("CLOSE", b"\x0f\xa0done")]


def test_close_without_a_code_is_normal_closure():
    ctx = ctx_of(E("TEXT", b"hi"))
    ctx.close()
    assert parse(build_response(ctx)) == [E("CLOSE", struct.pack(">H", 1000))]


def test_client_close_is_echoed_even_if_the_view_ignores_it():
    ctx = ctx_of(E("CLOSE", b"\x03\xe9going"))
    assert parse(build_response(ctx)) == [E("CLOSE", b"\x03\xe9")]
    ctx = ctx_of(E("CLOSE"))
    assert parse(build_response(ctx)) == [E("CLOSE", b"\x03\xe8")]


def test_no_close_after_a_disconnect():
    ctx = ctx_of(E("DISCONNECT"))
    assert ctx.recv() is None
    assert parse(build_response(ctx)) == []


def test_meta_changes_become_set_meta_headers():
    ctx = ctx_of(E("TEXT", b"x"), meta={"user": "1", "room": "a", "keep": "same"})
    ctx.meta["room"] = "b"
    del ctx.meta["user"]
    ctx.meta["New"] = "v"
    ctx.keep_alive_interval = 30
    response = build_response(ctx)
    assert response["Set-Meta-room"] == "b"
    assert response["Set-Meta-user"] == ""  # empty value removes the meta in Pushpin
    assert response["Set-Meta-new"] == "v"
    assert "Set-Meta-keep" not in response
    assert response["Keep-Alive-Interval"] == "30"


@pytest.mark.parametrize(
    "name, value", [("bad name", "v"), ("é", "v"), ("ok", "line\nbreak"), ("ok", 5)]
)
def test_meta_that_cannot_be_a_header_is_refused_where_the_view_sets_it(name, value):
    # Refused only in build_response, after the view returned, it dropped the connection
    # (Pushpin) or closed it with 1011 (embedded proxy); a GRIP probe.
    ctx = ctx_of(E("OPEN"))
    with pytest.raises(ValueError, match="meta"):
        ctx.meta[name] = value
    with pytest.raises(ValueError, match="meta"):
        ctx.meta.update({name: value})
    ctx.meta = {name: value}  # a dict of the view's own: still refused
    with pytest.raises(ValueError, match="meta"):
        build_response(ctx)


def test_meta_names_are_header_names():
    # A name with "_" came back as "-" (Django's request.META folds them), or not at all
    # behind runserver (its WSGI server drops such headers): one entry under "-".
    ctx = ctx_of(E("TEXT", b"x"), meta={"user-id": "7"})
    assert ctx.meta["user_id"] == ctx.meta["User-Id"] == "7" and "USER_ID" in ctx.meta
    ctx.meta["user_id"] = "8"
    ctx.meta.setdefault("Room_Name", "a")
    assert dict(ctx.meta) == {"user-id": "8", "room-name": "a"}
    response = build_response(ctx)
    assert response["Set-Meta-user-id"] == "8" and response["Set-Meta-room-name"] == "a"
    assert ctx.meta.pop("user_id") == "8" and ctx.meta.get("user_id") is None


def test_a_meta_value_beyond_latin_1_comes_back_as_set():
    # Django sends it as an RFC 2047 encoded word, which the proxy sends back as is.
    ctx = ctx_of(E("TEXT", b"x"))
    ctx.meta["snow"] = "☃ café"
    sent = build_response(ctx)["Set-Meta-snow"]
    assert sent.startswith("=?utf-8?b?")
    request = ws_request(b"TEXT 1\r\ny\r\n", HTTP_META_SNOW=sent, HTTP_META_PLAIN="café")
    assert context_from_request(request).meta == {"snow": "☃ café", "plain": "café"}
    assert ctx_of(meta={"odd": "=?utf-8?b?!!?="}).meta["odd"] == "=?utf-8?b?!!?="


# -- finish_response -----------------------------------------------------------------------


def finished(body: bytes, response, **headers) -> HttpResponse:
    request = ws_request(body, **headers)
    request.wscontext = context_from_request(request)
    if callable(response):
        response = response(request.wscontext)
    return finish_response(request, response)


def test_none_from_the_view_is_an_events_answer():
    def view(ctx):
        ctx.send("hi")

    assert parse(finished(b"TEXT 1\r\nx\r\n", view)) == [E("TEXT", b"m:hi")]


def test_refused_handshake_passes_through_to_the_client():
    response = finished(b"OPEN\r\n", HttpResponseForbidden("no"))
    assert response.status_code == 403 and response.content == b"no"


def test_error_on_an_established_connection_closes_it_cleanly():
    def denied(ctx):
        ctx.send("partial")
        return HttpResponseForbidden()

    assert parse(finished(b"TEXT 1\r\nx\r\n", denied)) == [
        E("TEXT", b"m:partial"),
        E("CLOSE", struct.pack(">H", 1008) + b"HTTP 403 Forbidden"),
    ]
    crashed = finished(b"TEXT 1\r\nx\r\n", HttpResponse(status=500))
    reason = b"HTTP 500 Internal Server Error"
    assert parse(crashed) == [E("CLOSE", struct.pack(">H", 1011) + reason)]


def test_opening_not_accepted_is_refused():
    response = finished(b"OPEN\r\n", None)
    assert response.status_code == 403
    assert b"did not accept" in response.content


def test_view_headers_and_cookies_are_kept_but_its_body_dropped(caplog):
    def view(ctx):
        ctx.accept()
        response = HttpResponse("ignored body")
        response["X-Thing"] = "1"
        response.set_cookie("session", "abc")
        return response

    with caplog.at_level(logging.WARNING, logger="drf_grip"):
        response = finished(b"OPEN\r\n", view)
    assert parse(response) == [E("OPEN")]
    assert response["X-Thing"] == "1"
    assert response.cookies["session"].value == "abc"
    assert "returned a body" in caplog.text


def test_finish_is_idempotent():
    request = ws_request(b"OPEN\r\n")
    request.wscontext = context_from_request(request)
    request.wscontext.accept()
    once = finish_response(request, None)
    assert finish_response(request, once) is once


def test_plain_requests_pass_through():
    request = RequestFactory().get("/")
    request.wscontext = None
    response = HttpResponse("x")
    assert finish_response(request, response) is response


# -- the Origin check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (None, True),  # not a browser
        ("https://example.com", True),  # the request's own origin
        ("http://example.com", False),  # another scheme
        ("https://example.com:8443", False),  # another port of the same host: another origin
        ("https://api.example.com", False),  # an allowed host, but not this origin
        ("https://evil.com", False),
        ("https://example.com.evil.com", False),
        ("null", False),
        ("file://", False),
        ("https://partner.org", True),
        ("https://partner.org:444", False),
        ("https://a.trusted.net", True),
        ("https://a.trusted.net:8443", False),  # the wildcard entry has no port
        ("http://a.trusted.net", False),  # scheme must match the wildcard entry
        ("not a url", False),
    ],
)
@override_settings(
    ALLOWED_HOSTS=["example.com", "api.example.com"],
    CSRF_TRUSTED_ORIGINS=["https://partner.org", "https://*.trusted.net"],
)
def test_origin_allowed_like_djangos_csrf_origin_check(origin, allowed):
    headers = {} if origin is None else {"HTTP_ORIGIN": origin}
    request = RequestFactory().get("/", secure=True, HTTP_HOST="example.com", **headers)
    assert origin_allowed(request) is allowed


@override_settings(ALLOWED_HOSTS=["example.com"])
def test_origin_with_the_requests_port_is_allowed_and_another_port_is_not():
    factory = RequestFactory()
    host = {"HTTP_HOST": "example.com:8000"}
    assert origin_allowed(factory.get("/", HTTP_ORIGIN="http://example.com:8000", **host))
    assert not origin_allowed(factory.get("/", HTTP_ORIGIN="http://example.com:3000", **host))
    assert not origin_allowed(factory.get("/", HTTP_ORIGIN="http://example.com", **host))


@override_settings(ALLOWED_HOSTS=["example.com"])
def test_origin_of_a_disallowed_host_is_refused():
    request = RequestFactory().get("/", HTTP_HOST="evil.com", HTTP_ORIGIN="http://evil.com")
    assert not origin_allowed(request)


@override_settings(DEBUG=True, ALLOWED_HOSTS=[], CSRF_TRUSTED_ORIGINS=["http://localhost:3000"])
def test_a_dev_frontend_on_another_port_needs_csrf_trusted_origins_as_with_django():
    factory = RequestFactory()
    host = {"HTTP_HOST": "localhost:8000"}
    assert origin_allowed(factory.get("/", HTTP_ORIGIN="http://localhost:8000", **host))
    assert origin_allowed(factory.get("/", HTTP_ORIGIN="http://localhost:3000", **host))
    assert not origin_allowed(factory.get("/", HTTP_ORIGIN="http://localhost:3001", **host))
    assert not origin_allowed(factory.get("/", HTTP_ORIGIN="http://evil.com", **host))
