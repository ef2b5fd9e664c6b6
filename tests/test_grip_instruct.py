"""Instructions become the Grip-* headers Pushpin reads."""

import base64
import time

import jwt
from django.http import HttpResponse, HttpResponseNotModified
from django.test import RequestFactory, override_settings

from drf_grip import set_hold_longpoll, set_hold_stream
from drf_grip.conf import embedded_key
from drf_grip.grip.middleware import GripMiddleware
from drf_grip.protocol import Channel, Instruct


def proxied_get(path="/", **extra):
    token = jwt.encode({"iss": "drf-grip", "exp": int(time.time()) + 60}, embedded_key())
    return RequestFactory().get(path, HTTP_GRIP_SIG=token, **extra)


def run(view, request):
    return GripMiddleware(view)(request)


def test_longpoll_headers_and_304_status_kept():
    def view(request):
        set_hold_longpoll(request, [Channel("todos", prev_id="v1"), "other"], timeout=2)
        return HttpResponseNotModified()

    resp = run(view, proxied_get())
    # Held as a 200, as django-grip holds a 304: Apache httpd sends a 304 with a fixed list
    # of headers only, and the Grip-* ones are not on it. The proxy answers Grip-Status.
    assert (resp.status_code, resp.reason_phrase) == (200, "OK")
    assert resp["Grip-Hold"] == "response"
    assert resp["Grip-Channel"] == "todos; prev-id=v1, other"
    assert resp["Grip-Timeout"] == "5"  # Pushpin's minimum
    assert resp["Grip-Status"] == "304 Not Modified"


@override_settings(GRIP_PREFIX="myapp-")
def test_prefix_applies_to_channels():
    def view(request):
        set_hold_longpoll(request, "todos")
        return HttpResponse()

    assert run(view, proxied_get())["Grip-Channel"] == "myapp-todos"


def test_keep_alive_bytes_survive_exactly():
    def view(request):
        set_hold_stream(request, "s", keep_alive="back\\slash\n", keep_alive_timeout=15,
                        next_link="/next/", next_link_timeout=30)
        return HttpResponse("open\n")

    resp = run(view, proxied_get())
    value, *params = [p.strip() for p in resp["Grip-Keep-Alive"].split(";")]
    assert "format=base64" in params and "timeout=15" in params
    assert base64.b64decode(value) == b"back\\slash\n"
    assert resp["Grip-Link"] == "</next/>; rel=next; timeout=30"
    assert "Grip-Timeout" not in resp


def test_direct_request_gets_no_grip_headers():
    def view(request):
        set_hold_longpoll(request, "todos")
        return HttpResponseNotModified()

    resp = run(view, RequestFactory().get("/"))
    assert resp.status_code == 304 and not any(h.startswith("Grip-") for h in resp.headers)


@override_settings(GRIP_PROXY_REQUIRED=True)
def test_proxy_required_gives_501_for_direct_hold():
    def view(request):
        set_hold_longpoll(request, "todos")
        return HttpResponseNotModified()

    assert run(view, RequestFactory().get("/")).status_code == 501
    held = run(view, proxied_get())
    assert (held.status_code, held["Grip-Status"]) == (200, "304 Not Modified")


def test_meta():
    i = Instruct()
    i.meta["user"] = "a b"
    assert i.headers()["Grip-Set-Meta"] == 'user="a b"'


# -- values a header cannot carry raw (django-grip's own test keeps alive with "keepalive\n") --


def test_keep_alive_ending_in_a_newline_goes_cstring_as_django_grip_wrote_it():
    def view(request):
        set_hold_stream(request, "s", keep_alive_data="keepalive\n", keep_alive_timeout=25)
        return HttpResponse("open\n")

    resp = run(view, proxied_get())
    assert resp.status_code == 200
    assert resp["Grip-Keep-Alive"] == "keepalive\\n; format=cstring; timeout=25"


def test_keep_alive_encodings():
    from drf_grip.protocol import encode_keep_alive

    assert encode_keep_alive("ka") == ("ka", "raw")
    assert encode_keep_alive("ka\r\n") == ("ka\\r\\n", "cstring")
    assert encode_keep_alive(":\n") == (":\\n", "cstring")
    for data in ("a b\n", 'q"\n', "back\\slash", "\x00", "caf\u00e9\n", b"\xff\n"):
        value, fmt = encode_keep_alive(data)
        raw = data.encode() if isinstance(data, str) else data
        assert (fmt, base64.b64decode(value)) == ("base64", raw)


def test_set_hold_stream_takes_django_grips_keyword_names():
    def view(request):
        set_hold_stream(request, "s", keep_alive_data="ping", keep_alive_timeout=7)
        return HttpResponse("open\n")

    assert run(view, proxied_get())["Grip-Keep-Alive"] == "ping; format=raw; timeout=7"


def test_a_prev_id_or_meta_value_ending_in_a_newline_is_never_a_500(caplog):
    def view(request):
        instruct = request.grip.start_instruct()
        instruct.add_channel(Channel("ok", prev_id="v1\n"))
        instruct.add_channel(Channel("snow", prev_id="\u2603"))
        instruct.add_channel(Channel("fine", prev_id='"quoted"'))
        instruct.set_hold_longpoll()
        instruct.meta = {"user": "alice\n", "room": "a b", "bad name": "x"}
        return HttpResponse("held\n")

    resp = run(view, proxied_get())
    assert resp.status_code == 200
    # Left out rather than sent raw: a missing prev-id costs a re-request, never an update.
    assert resp["Grip-Channel"] == 'ok, snow, fine; prev-id="\\"quoted\\""'
    assert resp["Grip-Set-Meta"] == 'room="a b"'
    assert "cannot be sent in a header" in caplog.text


def test_a_token_check_is_a_full_match():
    i = Instruct()
    i.add_channel(Channel("c", prev_id="v1"))
    i.meta["user"] = "123"
    headers = i.headers()
    assert headers["Grip-Channel"] == "c; prev-id=v1"
    assert headers["Grip-Set-Meta"] == 'user="123"'  # values always quoted, as django-grip


# -- django-grip's middleware hooks, for code that drives the middleware by hand -----------------


def test_process_request_and_process_response_as_django_grip_had_them():
    middleware = GripMiddleware(lambda request: HttpResponse())
    request = proxied_get()
    assert middleware.process_request(request) is None
    assert request.grip_proxied is True and request.grip_signed is True
    assert request.wscontext is None
    set_hold_longpoll(request, "todos")
    resp = middleware.process_response(request, HttpResponseNotModified())
    assert resp["Grip-Hold"] == "response" and resp["Grip-Channel"] == "todos"


def test_process_view_refuses_plain_requests_to_views_marked_websocket_only():
    middleware = GripMiddleware(lambda request: HttpResponse())
    request = RequestFactory().get("/")
    middleware.process_request(request)

    def marked(request):
        return HttpResponse()

    marked.websocket_only = True
    assert middleware.process_view(request, marked, (), {}).status_code == 400
    assert middleware.process_view(request, lambda r: HttpResponse(), (), {}) is None


def test_grip_signed_is_set_by_the_installed_middleware():
    seen = {}

    def view(request):
        seen["signed"] = request.grip_signed
        return HttpResponse()

    run(view, proxied_get())
    assert seen == {"signed": True}
    run(view, RequestFactory().get("/"))
    assert seen == {"signed": False}


def test_a_zero_timeout_means_the_default_as_in_django_grip():
    """Found by a probe: django-grip reads a timeout of 0 as "none given". drf-grip held a
    long-poll for 5 s instead of the proxy's default, sent ``timeout=0`` on a next link, and a
    keep-alive with ``timeout=0``, which a proxy reads as 1 s (Pushpin 1.36)."""

    def longpoll(request):
        set_hold_longpoll(request, "todos", timeout=0)
        return HttpResponseNotModified()

    def stream(request):
        set_hold_stream(
            request, "todos", keep_alive_data="ka", keep_alive_timeout=0,
            next_link="/next/", next_link_timeout=0,
        )
        return HttpResponse("open\n")

    held = run(longpoll, proxied_get())
    assert held["Grip-Hold"] == "response" and "Grip-Timeout" not in held
    streamed = run(stream, proxied_get())
    assert streamed["Grip-Keep-Alive"] == "ka; format=raw; timeout=20"
    assert streamed["Grip-Link"] == "</next/>; rel=next"


def test_a_negative_keep_alive_or_next_link_timeout_is_refused_where_it_is_given():
    """Configuration probe: ``set_hold_stream(request, "c", keep_alive_timeout=-5,
    next_link="/n/", next_link_timeout=-3)`` sent ``timeout=-5`` and ``timeout=-3`` to the
    proxy (the embedded one answers such a keep-alive with an error); a negative
    ``set_hold_longpoll()`` timeout is already the proxies' minimum."""
    import pytest

    instruct = Instruct()
    with pytest.raises(ValueError, match="keep-alive timeout must not be negative"):
        instruct.set_keep_alive("x", -5)
    with pytest.raises(ValueError, match="next link timeout must not be negative"):
        instruct.set_next_link("/n/", -3)
    instruct.add_channels("c")
    instruct.set_hold_stream()
    instruct.set_keep_alive("x", 0)  # none given: the default
    instruct.set_next_link("/n/", 0)
    headers = instruct.headers()
    assert "timeout=-" not in headers["Grip-Keep-Alive"] + headers["Grip-Link"]


def test_a_channels_filters_go_in_its_grip_channel_and_come_back():
    """Pushpin takes a channel's message filters as ``filter`` parameters of Grip-Channel
    (``skip-self``: drop an item whose ``sender`` meta is the subscription's ``user``)."""
    from drf_grip.protocol import parse_instruct

    instruct = Instruct()
    instruct.add_channel(Channel("a", "1", ("skip-self",)))
    instruct.add_channel(Channel("b", "2", ("not a token",)))
    instruct.meta["user"] = "v1 tag"
    headers = instruct.headers()
    assert headers["Grip-Channel"] == "a; prev-id=1; filter=skip-self, b; prev-id=2"
    assert headers["Grip-Set-Meta"] == 'user="v1 tag"'
    parsed = parse_instruct([(k.encode(), v.encode()) for k, v in headers.items()])
    assert [(c.name, c.prev_id, c.filters) for c in parsed.channels] == [
        ("a", "1", ("skip-self",)), ("b", "2", ())
    ]
    assert parsed.meta == {"user": "v1 tag"}

