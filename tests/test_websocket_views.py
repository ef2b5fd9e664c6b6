"""The seeds' WebSocket view APIs, driven through Django's test client the way Pushpin drives
them: one ``application/websocket-events`` POST per batch (views in tests/testapp/ws_views.py)."""

from __future__ import annotations

import struct
import time

import jwt
import pytest
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from drf_grip import accept_websocket, require_websocket, websocket_only
from drf_grip.conf import embedded_key
from drf_grip.grip.middleware import GripMiddleware
from drf_grip.protocol import WEBSOCKET_EVENTS, decode_events, encode_events
from drf_grip.protocol import WebSocketEvent as E
from drf_grip.websocket import WebSocketView

pytestmark = pytest.mark.urls("tests.test_websocket_views")


def ws(client: Client, url: str, *events: E, cid: str = "conn-1", **headers):
    """POST one batch as Pushpin would; returns the response and its decoded events."""
    response = client.post(
        url,
        data=encode_events(events),
        content_type=WEBSOCKET_EVENTS,
        HTTP_CONNECTION_ID=cid,
        **headers,
    )
    out = decode_events(response.content) if response["Content-Type"] == WEBSOCKET_EVENTS else None
    return response, out


def text(message: str) -> E:
    return E("TEXT", message.encode("utf-8"))


def sent(message: str) -> E:
    return E("TEXT", b"m:" + message.encode("utf-8"))


def close(code: int, reason: bytes = b"") -> E:
    return E("CLOSE", struct.pack(">H", code) + reason)


SUBSCRIBE_TEST = E("TEXT", b'c:{"type":"subscribe","channel":"test"}')


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


# -- django-grip's echo example ------------------------------------------------------------


def test_grip_echo_accepts_subscribes_echoes_and_closes(client):
    response, events = ws(client, "/ws/echo/", E("OPEN"))
    assert response.status_code == 200
    assert response["Sec-WebSocket-Extensions"] == "grip"
    assert events == [E("OPEN"), SUBSCRIBE_TEST]

    # wscontext.send(bytes) is a text message, as gripcontrol's was, unless it is not UTF-8.
    _, events = ws(
        client, "/ws/echo/", text("hello"), E("BINARY", b"\x00\x01"), E("BINARY", b"\xff")
    )
    assert events == [sent("hello"), E("TEXT", b"m:\x00\x01"), E("BINARY", b"m:\xff")]

    _, events = ws(client, "/ws/echo/", close(1000))
    assert events == [close(1000)]


def test_grip_echo_survives_an_unclean_disconnect(client):
    response, events = ws(client, "/ws/echo/", E("DISCONNECT"))
    assert response.status_code == 200


def test_websocket_only_refuses_plain_http(client):
    response = client.get("/ws/echo/")
    assert response.status_code == 400
    assert b"only accepts WebSocket" in response.content


def test_malformed_events_get_400_with_the_reason(client):
    response = client.post(
        "/ws/echo/",
        data=b"TEXT 9\r\nabc\r\n",
        content_type=WEBSOCKET_EVENTS,
        HTTP_CONNECTION_ID="c",
    )
    assert response.status_code == 400
    assert b"truncated content" in response.content


@override_settings(MIDDLEWARE=[])
def test_decorators_work_without_the_middleware(client):
    _, events = ws(client, "/ws/echo/", E("OPEN"))
    assert events == [E("OPEN"), SUBSCRIBE_TEST]
    response = client.post(
        "/ws/echo/", data=b"BOGUS\r\n", content_type=WEBSOCKET_EVENTS, HTTP_CONNECTION_ID="c"
    )
    assert response.status_code == 400 and b"unknown type" in response.content


# -- the Origin check ----------------------------------------------------------------------


@override_settings(ALLOWED_HOSTS=["testserver", "example.com"])
def test_foreign_origin_is_refused_at_the_handshake(client):
    response, _ = ws(client, "/ws/echo/", E("OPEN"), HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert b"Origin" in response.content
    # An allowed host on another scheme or port is another origin (Django's CSRF rule).
    response, _ = ws(client, "/ws/echo/", E("OPEN"), HTTP_ORIGIN="https://example.com")
    assert response.status_code == 403
    response, events = ws(client, "/ws/echo/", E("OPEN"), HTTP_ORIGIN="http://testserver")
    assert events[0] == E("OPEN")


@override_settings(ALLOWED_HOSTS=["testserver"])
def test_foreign_origin_on_an_established_connection_is_closed(client):
    _, events = ws(client, "/ws/echo/", text("x"), HTTP_ORIGIN="https://evil.example")
    assert events == [close(1008, b"HTTP 403 Forbidden")]


@override_settings(ALLOWED_HOSTS=["testserver"])
def test_websocket_views_need_no_csrf_token_but_plain_posts_do():
    client = Client(enforce_csrf_checks=True)
    _, events = ws(client, "/ws/lowercase/", E("OPEN"))
    assert events == [E("OPEN")]
    # accept_websocket had to mark the view csrf_exempt; plain HTTP is still checked.
    assert client.post("/ws/lowercase/", {"message": "X"}).status_code == 403


# -- django-websocket's examples -----------------------------------------------------------


def test_echo_once_accepts_without_being_asked(client):
    _, events = ws(client, "/ws/echo-once/", E("OPEN"))
    assert events == [E("OPEN")]


def test_echo_once_closes_once_it_returns(client, caplog):
    """django-websocket's README: "Receive one message from the client, send that message
    back to the client and close the connection (by returning from the view)". The view
    runs once per batch, so it echoed one message of every batch and never closed (seeds
    probe). Its second message is dropped with the connection, not warned of."""
    _, events = ws(client, "/ws/echo-once/", text("one"), text("two"))
    assert events == [sent("one"), close(1000)]
    assert not [r for r in caplog.records if "unread" in r.getMessage()]


def test_a_view_that_leaves_messages_of_its_batch_unread_says_so_once(client, caplog):
    """Messages a view that stays open does not read are dropped with the batch (seeds
    probe: 5 of 100 messages of a burst echoed without a word). The log says so, once."""
    from drf_grip.grip import websocket_over_http

    websocket_over_http._unread_warned.discard("/ws/first-only/")
    ws(client, "/ws/first-only/", text("one"), text("two"), text("three"))
    ws(client, "/ws/first-only/", text("four"), text("five"))
    said = [r.getMessage() for r in caplog.records if "unread" in r.getMessage()]
    assert said == [
        "WebSocket view for /ws/first-only/ returned with 2 messages of its batch unread; "
        "they are dropped. A view runs once per batch of events: read them all (iterate "
        "request.websocket). Said once for this path."
    ]
    caplog.clear()
    ws(client, "/ws/echo/", text("a"), text("b"))  # reads every message: nothing to say
    assert not [r for r in caplog.records if "unread" in r.getMessage()]


@pytest.mark.parametrize("path", ["/ws/pistoke-echo/", "/ws/pistoke-function/"])
def test_django_pistokes_receive_and_send_loop_runs_per_batch_and_stays_open(client, path):
    """django-pistoke's README view reads with ``await request.receive()`` in a ``while
    True`` loop and answers with ``await request.send()``: neither existed, and its
    handshake was refused with 500 (seeds probe). The loop runs over each batch and the
    connection stays open between them."""
    _, events = ws(client, path, E("OPEN"))
    assert events == [E("OPEN")]
    _, events = ws(client, path, text("hei"), text("moi"))
    if "function" in path:
        assert events == [sent("HEI"), sent("MOI")]
    else:
        assert events == [sent('You wrote "hei".'), sent('You wrote "moi".')]
    _, events = ws(client, path, close(1001))
    assert events == [close(1001)]
    assert client.get(path).content == b"page"


class PlainSyncView(View):
    """django-pistoke's rule for any class-based view: allow the ``websocket`` method and
    ``View.dispatch`` routes WebSocket requests to it (its README); ``/ws/plain-view/`` is
    one with ``async def`` handlers."""

    http_method_names = [*View.http_method_names, "websocket"]

    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("page")

    def websocket(self, request: HttpRequest) -> None:
        for message in request.websocket:
            request.websocket.send(message.upper())


@pytest.mark.parametrize("path", ["/ws/plain-view/", "/plain-sync-view/"])
def test_a_plain_class_view_that_allows_websocket_takes_websockets(client, path):
    """Without ``WebSocketView`` the handshake was refused: 405 here, 403 (CSRF) through a
    proxy (seeds probe). Its HTTP requests are served as before."""
    response, events = ws(client, path, E("OPEN"))
    assert response.status_code == 200 and events == [E("OPEN")]
    _, events = ws(client, path, text("hei"))
    assert events == ([sent('You wrote "hei".')] if "/ws/" in path else [sent("HEI")])
    _, events = ws(client, path, close(1000))
    assert events == [close(1000)]
    assert client.get(path).content == b"page"
    assert client.post(path).status_code == 405


def test_a_view_with_the_accept_websocket_attribute_takes_websockets(client):
    """django-websocket's README: with its middleware, "set the ``accept_websocket``
    attribute on a view to allow websockets". The handshake was answered 500, "didn't
    return an HttpResponse" (seeds probe)."""
    _, events = ws(client, "/ws/lowercase-attribute/", E("OPEN"))
    assert events == [E("OPEN")]
    _, events = ws(client, "/ws/lowercase-attribute/", text("ABC"))
    assert events == [sent("abc")]
    assert client.get("/ws/lowercase-attribute/", {"message": "HeLLo"}).content == b"hello"


def test_websocket_accept_all_lets_every_view_take_websockets(client, settings):
    """django-websocket's ``WEBSOCKET_ACCEPT_ALL = True``: every view takes WebSockets. A
    view that returns without reading past its batch closes the connection, as there."""
    settings.WEBSOCKET_ACCEPT_ALL = True
    _, events = ws(client, "/ws/greet/", E("OPEN"))
    assert events == [E("OPEN"), sent("hello"), close(1000)]
    assert client.get("/ws/greet/").content == b"hello"


def test_require_websocket_refuses_plain_http(client):
    assert client.get("/ws/echo-once/").status_code == 400


def test_lowercase_serves_http_and_websocket(client):
    assert client.get("/ws/lowercase/", {"message": "HeLLo"}).content == b"hello"
    _, events = ws(client, "/ws/lowercase/", text("ABC"), text("Déf"))
    assert events == [sent("abc"), sent("déf")]


def test_closing_client_gets_its_close_echoed(client):
    _, events = ws(client, "/ws/lowercase/", text("A"), close(1001))
    assert events == [sent("a"), close(1001)]


# -- request.websocket ---------------------------------------------------------------------


@accept_websocket
def inspect(request: HttpRequest) -> HttpResponse | None:
    if not request.is_websocket():
        return HttpResponse(f"websocket={request.websocket!r}")
    websocket = request.websocket
    websocket.send_json(
        {
            "count": websocket.count_messages(),
            "has": websocket.has_messages(),
            "first": websocket.read(),
            "json": websocket.read_json(),
            "rest": [m if isinstance(m, str) else repr(m) for m in websocket],
            "after": websocket.wait(),
            "count_after": websocket.count_messages(),
            "closed": websocket.closed,
            "code": websocket.close_code,
        }
    )
    return None


def test_request_websocket_reads_the_batch(client):
    batch = [text("a"), E("PING", b"p"), text('{"b": 1}'), text("c"), E("BINARY", b"d")]
    _, events = ws(client, "/inspect/", *batch)
    assert events == [
        E("PONG", b"p"),
        sent('{"count":4,"has":true,"first":"a","json":{"b":1},"rest":["c","b\'d\'"],"after":null,'
             '"count_after":0,"closed":false,"code":null}'),
    ]


def test_request_websocket_stops_at_close(client):
    _, events = ws(client, "/inspect/", text("a"), close(4000, b"bye"))
    assert events[0] == sent(
        '{"count":1,"has":true,"first":"a","json":null,"rest":[],"after":null,'
        '"count_after":0,"closed":true,"code":4000}'
    )
    assert events[-1] == close(4000)


@accept_websocket
def add_one(request: HttpRequest) -> HttpResponse | None:
    """django-websocket's README example shape: numbers in, numbers plus one out."""
    if not request.is_websocket():
        return HttpResponse(str(int(request.GET["value"]) + 1))
    for message in request.websocket:
        request.websocket.send(int(message) + 1)
    request.websocket.send(request.websocket.read("no more"))
    return None


def test_send_takes_anything_convertible_to_a_string_and_read_a_fallback(client):
    _, events = ws(client, "/add-one/", text("1"), text("41"))

    assert events == [sent("2"), sent("42"), sent("no more")]
    assert client.get("/add-one/", {"value": "23"}).content == b"24"


@require_websocket
def close_then_send(request: HttpRequest) -> None:
    request.websocket.close(4101, "first")
    request.websocket.send("after")
    request.websocket.send_json({"after": True})
    request.websocket.close(4102, "second")


def test_nothing_is_sent_after_close_and_the_first_close_is_the_one_sent(client):
    """A socket sends no data frame after its close frame (RFC 6455 §5.5.1): "after" went
    out before the close, and a second close replaced the first (seeds probe)."""
    _, events = ws(client, "/close-then-send/", text("x"))
    assert events == [close(4101, b"first")]


def test_plain_http_request_has_no_websocket(client):
    assert client.get("/inspect/").content == b"websocket=None"


@require_websocket
def crash(request: HttpRequest) -> None:
    raise RuntimeError("boom")


def test_a_crashing_view_closes_an_established_connection_with_1011(client):
    _, events = ws(client, "/crash/", text("x"))
    assert events == [close(1011, b"HTTP 500 Internal Server Error")]


def test_a_crashing_view_refuses_the_handshake(client):
    response, _ = ws(client, "/crash/", E("OPEN"))
    assert response.status_code == 500


@require_websocket
def refuse(request: HttpRequest) -> HttpResponse:
    return HttpResponseForbidden("members only\n")


def test_a_view_refuses_a_connection_with_an_http_error(client):
    response, _ = ws(client, "/refuse/", E("OPEN"))
    assert response.status_code == 403 and response.content == b"members only\n"


@require_websocket
async def async_echo(request: HttpRequest) -> None:
    for message in request.websocket:
        request.websocket.send(message)


def test_async_views_are_decorated_too(client):
    _, events = ws(client, "/async-echo/", E("OPEN"))
    assert events == [E("OPEN")]
    _, events = ws(client, "/async-echo/", text("hi"))
    assert events == [sent("hi")]
    assert client.get("/async-echo/").status_code == 400


# -- meta, through a signed (proxied) request ----------------------------------------------


@websocket_only
def counter(request: HttpRequest) -> None:
    ctx = request.wscontext
    if ctx.is_opening():
        ctx.accept()
        ctx.meta["count"] = "0"
    while ctx.can_recv():
        if ctx.recv() is None:
            break
        ctx.meta["count"] = str(int(ctx.meta["count"]) + 1)
        ctx.send(ctx.meta["count"])


def raw_events(request: HttpRequest) -> HttpResponse:
    """django-grip's style without a decorator: the view reads ``request.wscontext``."""
    ctx = request.wscontext
    if ctx is None:
        return HttpResponse("plain")
    ctx.accept()
    ctx.send("the view ran")
    return HttpResponse()


@csrf_exempt
def http_only(request: HttpRequest) -> HttpResponse | None:
    """django-websocket's idiom in a view that never said it takes WebSockets (no decorator,
    no ``accept_websocket`` attribute): with its middleware the socket branch never ran."""
    if not request.is_websocket():
        return HttpResponse("page")
    for message in request.websocket:
        request.websocket.send(message)
    return None


def test_a_handshake_to_a_view_that_takes_no_websockets_is_refused_not_a_500(client):
    """django-websocket's README: its middleware "will still reject websockets for normal
    views". A view in its idiom without the attribute saw ``request.is_websocket()`` true,
    took the socket branch, returned None and answered the handshake 500 ("didn't return
    an HttpResponse object"; seeds probe). Such a view sees no WebSocket: it answers as
    for HTTP, and the handshake is refused."""
    response, _ = ws(client, "/http-only/", E("OPEN"))
    assert response.status_code == 403, response.content
    assert client.get("/http-only/").content == b"page"


def grip_sig() -> str:
    return jwt.encode({"iss": "drf-grip", "exp": int(time.time()) + 60}, embedded_key())


def test_meta_round_trips_through_set_meta_and_meta_headers(client):
    response, _ = ws(client, "/counter/", E("OPEN"), HTTP_GRIP_SIG=grip_sig())
    assert response["Set-Meta-count"] == "0"
    # Pushpin sends the meta back as Meta-* headers on every later request.
    response, events = ws(
        client, "/counter/", text("x"), text("y"), HTTP_GRIP_SIG=grip_sig(), HTTP_META_COUNT="0"
    )
    assert events == [sent("1"), sent("2")]
    assert response["Set-Meta-count"] == "2"


def test_meta_headers_from_a_direct_client_are_ignored(client):
    response, _ = ws(client, "/counter/", text("x"), HTTP_META_COUNT="41")
    # Not proxied: "count" is unknown, the view fails, and the connection is closed cleanly.
    assert decode_events(response.content)[-1].type == "CLOSE"


# -- django-pistoke's class-based views ----------------------------------------------------


def test_class_view_with_an_async_websocket_method(client):
    """django-pistoke's views define ``async def websocket``: the handshake answered 500
    ('coroutine' object has no attribute 'status_code'; a seeds probe)."""
    response, events = ws(client, "/ws/async-class/", E("OPEN"))
    assert response.status_code == 200 and events == [E("OPEN")]
    _, events = ws(client, "/ws/async-class/", text("hi"))
    assert events == [sent("HI")]


def test_class_view_serves_get_like_any_view(client):
    response = client.get("/ws/room/lobby/")
    assert response.status_code == 200 and b"Room lobby" in response.content


def test_class_view_opens_with_the_subprotocol_the_client_prefers(client):
    """The client lists its offers in its order of preference (RFC 6455 §4.1) and
    django-pistoke took the first it spoke; the view's own order won (seeds probe)."""
    response, events = ws(
        client, "/ws/room/lobby/", E("OPEN"), HTTP_SEC_WEBSOCKET_PROTOCOL="chat.v2, chat.v1"
    )
    assert response["Sec-WebSocket-Protocol"] == "chat.v2"
    assert events == [
        E("OPEN"),
        E("TEXT", b'c:{"type":"subscribe","channel":"room-lobby"}'),
        sent('{"joined":"lobby"}'),
    ]
    response, _ = ws(client, "/ws/versioned/", E("OPEN"), HTTP_SEC_WEBSOCKET_PROTOCOL="v1, v2")
    assert response["Sec-WebSocket-Protocol"] == "v1"


def test_class_view_with_subprotocols_refuses_a_client_that_offers_none(client):
    """django-pistoke refused it; it was accepted without a subprotocol (seeds probe)."""
    response, events = ws(client, "/ws/room/lobby/", E("OPEN"))
    assert response.status_code == 400 and events is None
    assert b"offered none" in response.content and b"chat.v1" in response.content
    response, events = ws(client, "/ws/async-class/", E("OPEN"))
    assert response.status_code == 200 and "Sec-WebSocket-Protocol" not in response


def test_class_view_keeps_its_subprotocol_after_the_opening_batch(client):
    """``request.wscontext.subprotocol`` was None from the second batch on (seeds probe);
    django-pistoke's ``request.protokolla`` lasted the connection."""
    offer = {"HTTP_SEC_WEBSOCKET_PROTOCOL": "v1"}
    response, _ = ws(client, "/ws/versioned/", E("OPEN"), **offer)
    assert response["Sec-WebSocket-Protocol"] == "v1"
    response, events = ws(client, "/ws/versioned/", text("hi"), **offer)
    assert events == [sent("v1:hi")]
    assert "Sec-WebSocket-Protocol" not in response  # only the opening answer names it


@accept_websocket
def chooses_b(request: HttpRequest) -> None:
    if request.wscontext.is_opening():
        request.websocket.accept("b.v2")
    for message in request.websocket:
        request.websocket.send(f"{request.wscontext.subprotocol}:{message}")


def test_function_view_keeps_the_subprotocol_it_accepted_with(client):
    """``accept(subprotocol)`` in a function view: the opening answer named it and every
    later batch saw ``wscontext.subprotocol`` None (seeds probe). The proxy keeps the
    connection's meta and sends it back with each batch, as Pushpin and the embedded proxy
    do."""
    offer = {"HTTP_SEC_WEBSOCKET_PROTOCOL": "a.v1, b.v2", "HTTP_GRIP_SIG": grip_sig()}
    response, _ = ws(client, "/choose-b/", E("OPEN"), **offer)
    assert response["Sec-WebSocket-Protocol"] == "b.v2"
    meta = {f"HTTP_META_{k[9:].upper().replace('-', '_')}": v
            for k, v in response.items() if k.lower().startswith("set-meta-")}
    _, events = ws(client, "/choose-b/", text("hi"), **offer, **meta)
    assert events == [sent("b.v2:hi")]


def test_pistoke_json_loop_receives_parsed_json_and_sends_json(client):
    """A ``JSONWebSocketView`` with django-pistoke's own loop got the raw text from
    ``receive()`` and sent Python's repr of a dict from ``send()`` (seeds probe); pistoke's
    JSON protocol decoded and encoded both. A message that is not JSON gets the view's error
    answer and the loop goes on."""
    response, events = ws(client, "/ws/pistoke-json/", E("OPEN"))
    assert response.status_code == 200
    _, events = ws(client, "/ws/pistoke-json/", text('{"x": 1}'), text("{nope"), text("[2]"))
    assert events == [
        sent('{"type":"dict","echo":{"x":1}}'),
        sent(
            '{"error":"invalid JSON: Expecting property name enclosed in double quotes'
            ' at position 1"}'
        ),
        sent('{"type":"list","echo":[2]}'),
    ]


def test_class_view_hooks_may_be_async(client):
    """An ``async def websocket_message`` was called and never awaited: no answer, and only
    a RuntimeWarning in the log (seeds probe)."""
    _, events = ws(client, "/ws/async-hooks/", E("OPEN"))
    assert events == [E("OPEN"), sent("welcome")]
    _, events = ws(client, "/ws/async-hooks/", text("hi"))
    assert events == [sent("HI")]


def test_class_view_refuses_when_no_subprotocol_matches(client):
    response, _ = ws(client, "/ws/room/lobby/", E("OPEN"), HTTP_SEC_WEBSOCKET_PROTOCOL="mqtt")
    assert response.status_code == 400
    assert b"offered mqtt" in response.content and b"chat.v1" in response.content


def test_json_view_echoes_and_answers_bad_json_without_closing(client):
    _, events = ws(client, "/ws/room/lobby/", text('{"say": "hi"}'), text("{nope"), text("[1]"))
    assert events == [
        sent('{"echo":{"say":"hi"}}'),
        sent(
            '{"error":"invalid JSON: Expecting property name enclosed in double quotes'
            ' at position 1"}'
        ),
        sent('{"echo":[1]}'),
    ]


def test_json_view_answers_what_python_reads_but_json_is_not_without_closing(client):
    """An array nested 5,000 deep raised RecursionError (a 500, the connection closed), and
    ``NaN``, ``Infinity`` or ``1e999`` were echoed back as text no browser parses (seeds
    probe): each is answered with an error, and the connection serves on."""
    deep = "[" * 5000 + "]" * 5000
    _, events = ws(
        client, "/ws/room/lobby/",
        text(deep), text('{"a": NaN}'), text("[Infinity]"), text("1e999"), text("[1.5]"),
        text("[1" + "0" * 5000 + "]"),
    )
    assert events[0] == sent('{"error":"invalid JSON: nested too deeply"}')
    assert events[1] == sent('{"error":"invalid JSON: NaN is not JSON"}')
    assert events[2] == sent('{"error":"invalid JSON: Infinity is not JSON"}')
    assert events[3] == sent('{"error":"invalid JSON: 1e999 is out of range"}')
    assert events[4] == sent('{"echo":[1.5]}')
    # Python's own refusal named its setting (sys.set_int_max_str_digits): bad-input probe.
    assert events[5] == sent('{"error":"invalid JSON: a number of 5001 characters is too long"}')


class Hooks(WebSocketView):
    calls: list = []

    def websocket_open(self, request):
        self.calls.append(("open", self.kwargs))
        if request.GET.get("deny"):
            return HttpResponseForbidden()
        return None

    def websocket_message(self, request, message):
        self.calls.append(("message", message))

    def websocket_close(self, request, code):
        self.calls.append(("close", code))


def test_class_view_hooks_and_refusal(client):
    Hooks.calls.clear()
    ws(client, "/hooks/7/", E("OPEN"))
    ws(client, "/hooks/7/", text("m"), E("BINARY", b"b"), close(1000))
    ws(client, "/hooks/7/", E("DISCONNECT"))
    assert Hooks.calls == [
        ("open", {"pk": 7}),
        ("message", "m"),
        ("message", b"b"),
        ("close", 1000),
        ("close", None),
    ]
    response, _ = ws(client, "/hooks/7/?deny=1", E("OPEN"))
    assert response.status_code == 403


PUSHPIN_WITH_KEY = "http://127.0.0.1:5561/?iss=pushpin&key=a-pushpin-key-long-enough-for-hs256-0123"


@pytest.mark.parametrize("signature", [None, "forged.jwt.value", "expired"])
@pytest.mark.parametrize(
    "url", ["/add-one/", "/hooks/7/", "/raw-events/"], ids=["function", "class", "undecorated"]
)
def test_events_without_a_valid_signature_are_refused_where_a_key_is_configured(
    client, url, signature
):
    """DESIGN.md §6: with a proxy key configured, a request counts as proxied only with a
    valid ``Grip-Sig``. WebSocket-over-HTTP events POSTed straight to the origin, unsigned
    or forged, ran ``accept_websocket`` views and ``WebSocketView`` hooks under a
    ``Connection-Id`` of the sender's choosing (browser probe; the gateway refused them)."""
    Hooks.calls.clear()
    key = "a-pushpin-key-long-enough-for-hs256-0123"
    headers = {}
    if signature == "expired":
        headers["HTTP_GRIP_SIG"] = jwt.encode({"iss": "pushpin", "exp": int(time.time()) - 60}, key)
    elif signature is not None:
        headers["HTTP_GRIP_SIG"] = signature
    with override_settings(GRIP_URL=PUSHPIN_WITH_KEY):
        refused, _ = ws(client, url, E("OPEN"), text("1"), cid="someone-elses", **headers)
        signed = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 60}, key)
        served, events = ws(client, url, E("OPEN"), text("1"), HTTP_GRIP_SIG=signed)
    assert refused.status_code == 403 and b"GRIP proxy" in refused.content, refused.content
    assert served.status_code == 200 and events[0] == E("OPEN")
    assert [call[0] for call in Hooks.calls] == (["open", "message"] if "hooks" in url else [])


def test_class_view_without_http_methods_answers_405_to_http(client):
    assert client.get("/hooks/7/").status_code == 405


def test_middleware_attaches_request_websocket_for_every_request():
    request = RequestFactory().get("/")
    GripMiddleware(lambda r: HttpResponse(str(r.is_websocket())))(request)
    assert request.websocket is None and request.is_websocket() is False


urlpatterns = [
    path("ws/", include("tests.testapp.ws_views")),
    path("inspect/", inspect),
    path("close-then-send/", close_then_send),
    path("plain-sync-view/", PlainSyncView.as_view()),
    path("choose-b/", chooses_b),
    path("add-one/", add_one),
    path("crash/", crash),
    path("async-echo/", async_echo),
    path("refuse/", refuse),
    path("counter/", counter),
    path("raw-events/", raw_events),
    path("http-only/", http_only),
    path("hooks/<int:pk>/", Hooks.as_view()),
]
