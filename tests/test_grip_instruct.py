"""Instructions become the Grip-* headers Pushpin reads."""

import base64

from django.http import HttpResponse, HttpResponseNotModified
from django.test import RequestFactory, override_settings

from drf_grip import set_hold_longpoll, set_hold_stream
from drf_grip.conf import embedded_key
from drf_grip.grip.instruct import Channel, Instruct
from drf_grip.grip.middleware import GripMiddleware

import jwt
import time


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
    assert run(view, proxied_get()).status_code == 304


def test_meta():
    i = Instruct()
    i.meta["user"] = "a b"
    assert i.headers()["Grip-Set-Meta"] == 'user="a b"'
