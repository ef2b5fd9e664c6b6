"""Conformance: the request headers the origin receives, behind the embedded proxy and
behind Pushpin 1.36 (``any_proxy`` in conftest.py).

A request header with an empty or blank value never reaches the origin through Pushpin (zurl
hands libcurl ``Name: `` lines, which it does not send; ``origin_headers`` in
drf_grip/proxy/origin.py cites the source). A black-box probe saw the difference matter: a
PATCH with ``If-Match:`` and nothing after it got 412 behind the embedded proxy (DRF views
take an empty ``If-Match`` as a precondition no ETag meets) and was applied behind Pushpin.
Headers are written on a raw socket: HTTP clients refuse a blank value, or strip it.
"""

from __future__ import annotations

import base64
import os

import pytest

from drf_grip.protocol import WebSocketEvent, decode_events

from .conftest import Origin, Response, status_line, ws_answer

#: Empty or blank lines among ordinary ones; ``X-Dup`` and ``X-Dup2`` each have one empty
#: line and one with a value, in both orders.
HEADER_LINES = (
    b"X-Empty:\r\n"
    b"X-Blank:  \t \r\n"
    b"X-Kept: 1\r\n"
    b"X-Dup: one\r\n"
    b"X-Dup:\r\n"
    b"X-Dup2: \r\n"
    b"X-Dup2: two\r\n"
    b"If-Match:\r\n"
    b"If-None-Match: \r\n"
    b"Cookie:\r\n"
    b"Authorization:\r\n"
)

#: What the origin should see of them.
EXPECTED = [("x-kept", "1"), ("x-dup", "one"), ("x-dup2", "two")]
NAMES = {"x-empty", "x-blank", "x-kept", "x-dup", "x-dup2", "if-match", "if-none-match",
         "cookie", "authorization"}


def _seen(request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.header_list if k in NAMES]


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_request_headers_with_empty_or_blank_values_do_not_reach_the_origin(
    any_proxy, origin: Origin, method: str
):
    """Each line on its own: an empty ``X-Dup:`` next to ``X-Dup: one`` leaves ``one``.
    The embedded proxy passed them all on (and an empty ``If-Match`` made DRF answer 412)."""
    origin.route("/h/")(lambda r: Response(200, [("Content-Type", "text/plain")], "ok"))
    body = b'{"title": "mine"}'
    status = status_line(
        any_proxy.url,
        f"{method} /h/ HTTP/1.1\r\nHost: x\r\n".encode()
        + HEADER_LINES
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body)
        + body,
    )
    assert status == b"HTTP/1.1 200 OK"
    (request,) = origin.requests_to("/h/")
    assert request.method == method and request.body == body
    assert _seen(request) == EXPECTED
    assert request.headers["content-type"] == "application/json"


def test_websocket_handshake_headers_with_empty_or_blank_values_do_not_reach_the_origin(
    any_proxy, origin: Origin
):
    """The same for WebSocket-over-HTTP: the handshake's headers, passed on with each
    request of events, lose their empty lines (Pushpin 1.36 sends those requests through
    zurl too)."""
    origin.route("/ws/")(lambda r: ws_answer(WebSocketEvent("OPEN")))
    key = base64.b64encode(os.urandom(16))
    status = status_line(
        any_proxy.ws_url.replace("ws://", "http://"),
        b"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
        + HEADER_LINES + b"\r\n",
    )
    assert status.startswith(b"HTTP/1.1 101 ")
    (request, *_) = origin.wait_for_requests("/ws/", 1)
    assert [e.type for e in decode_events(request.body)][:1] == ["OPEN"]
    assert _seen(request) == EXPECTED
