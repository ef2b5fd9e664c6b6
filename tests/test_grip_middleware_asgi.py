"""GripMiddleware under ASGI: an async-capable middleware, so Django's async handler does not
wrap what lies below it in ``async_to_sync`` (two more thread hops per request: a plain DRF
list GET cost 3.3-3.5 ms of origin CPU through uvicorn with the sync-only middleware and
3.1-3.2 ms async-capable, NOTES.rst); and the same answers in both modes."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.test import AsyncClient

from drf_grip.grip.middleware import GripMiddleware
from drf_grip.protocol import WEBSOCKET_EVENTS, decode_events, encode_events
from drf_grip.protocol import WebSocketEvent as E
from tests.drf_helpers import RecordingSink, grip_sig
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


def test_django_runs_grip_middleware_in_async_mode_under_asgi():
    """Django keeps an async handler under a middleware that is async-capable and, given an
    async ``get_response``, is a coroutine function itself (Django's middleware docs)."""

    async def get_response(request):
        return None

    assert GripMiddleware.async_capable and GripMiddleware.sync_capable
    assert iscoroutinefunction(GripMiddleware(get_response))
    assert not iscoroutinefunction(GripMiddleware(lambda request: None))


def test_a_held_long_poll_gets_its_grip_headers_under_asgi(settings):
    settings.MIDDLEWARE = ["drf_grip.middleware.GripMiddleware"]
    signed = {"Grip-Sig": grip_sig()}

    async def run():
        first = await AsyncClient().get("/api/todos/", headers=signed)
        held = await AsyncClient().get(
            "/api/todos/", headers={**signed, "If-None-Match": first["ETag"]}
        )
        direct = await AsyncClient().get("/api/todos/", headers={"If-None-Match": first["ETag"]})
        return first, held, direct

    with RecordingSink():
        Todo.objects.create(title="a")
        first, held, direct = async_to_sync(run)()
    assert first.status_code == 200 and "Grip-Hold" not in first
    assert held.status_code == 200 and held["Grip-Hold"] == "response"  # a 304 held as a 200
    assert held["Grip-Status"] == "304 Not Modified"
    assert "drf.testapp.todo; prev-id=" in held["Grip-Channel"]
    assert direct.status_code == 304 and "Grip-Hold" not in direct


@pytest.mark.urls("tests.test_websocket_views")
def test_websocket_over_http_answers_events_under_asgi(settings):
    settings.MIDDLEWARE = ["drf_grip.middleware.GripMiddleware"]

    async def post(body: bytes):
        return await AsyncClient().post(
            "/ws/echo/",
            data=body,
            content_type=WEBSOCKET_EVENTS,
            headers={"Connection-Id": "conn-asgi", "Grip-Sig": grip_sig()},
        )

    opened = async_to_sync(post)(encode_events([E("OPEN")]))
    assert opened.status_code == 200 and opened["Sec-WebSocket-Extensions"] == "grip"
    assert decode_events(opened.content)[0] == E("OPEN")
    echoed = async_to_sync(post)(encode_events([E("TEXT", b"hello")]))
    assert decode_events(echoed.content) == [E("TEXT", b"m:hello")]
    malformed = async_to_sync(post)(b"OPEN\r\nTEXT zz\r\n")
    assert malformed.status_code == 400 and b"Malformed WebSocket events" in malformed.content
