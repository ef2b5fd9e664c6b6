"""django-pistoke's class-based views through a real Pushpin and the embedded proxy alike: the
subprotocol the client prefers, kept for the whole connection, and its JSON protocol in its own
loop (views in tests/testapp/ws_views.py)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from drf_grip.testing.proxies import ProxyUnderTest

pytestmark = pytest.mark.timeout(60)


def test_the_subprotocol_the_client_prefers_lasts_the_connection(
    grip_proxy: ProxyUnderTest,
) -> None:
    # Pushpin re-sends the handshake's headers with every batch; the choice was made on the
    # opening batch only, and later batches saw none (seeds probe).
    url = f"{grip_proxy.ws_url}/ws/versioned/"
    with connect(url, proxy=None, open_timeout=10, subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v1"
        ws.send("hi")
        assert ws.recv(timeout=5) == "v1:hi"
        ws.send("again")
        assert ws.recv(timeout=5) == "v1:again"


def test_a_function_views_subprotocol_lasts_the_connection(grip_proxy: ProxyUnderTest) -> None:
    """``accept(subprotocol)`` in a function view: later batches saw None (seeds probe)."""
    url = f"{grip_proxy.ws_url}/ws/chooses-subprotocol/"
    with connect(url, proxy=None, open_timeout=10, subprotocols=["a.v1", "b.v2"]) as ws:
        assert ws.subprotocol == "b.v2"
        for message in ("hi", "again"):
            ws.send(message)
            assert ws.recv(timeout=5) == f"b.v2:{message}"


def test_a_plain_class_view_allowing_websocket_takes_websockets(
    grip_proxy: ProxyUnderTest,
) -> None:
    """django-pistoke's rule for any ``View``: its handshake was refused 403 (seeds probe)."""
    with connect(f"{grip_proxy.ws_url}/ws/plain-view/", proxy=None, open_timeout=10) as ws:
        for message in ("hei", "moi"):
            ws.send(message)
            assert ws.recv(timeout=5) == f'You wrote "{message}".'


def test_a_client_offering_no_subprotocol_is_refused(grip_proxy: ProxyUnderTest) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{grip_proxy.ws_url}/ws/versioned/", proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 400


def test_pistokes_json_protocol_in_its_own_loop(grip_proxy: ProxyUnderTest) -> None:
    with connect(f"{grip_proxy.ws_url}/ws/pistoke-json/", proxy=None, open_timeout=10) as ws:
        ws.send('{"x": 1}')
        assert json.loads(ws.recv(timeout=5)) == {"type": "dict", "echo": {"x": 1}}
        ws.send("{nope")
        assert "invalid JSON" in json.loads(ws.recv(timeout=5))["error"]
        ws.send("[2]")
        assert json.loads(ws.recv(timeout=5)) == {"type": "list", "echo": [2]}


def test_meta_set_in_one_batch_is_read_as_set_in_the_next(grip_proxy: ProxyUnderTest) -> None:
    # Kept by the proxy as a header: a name with "_" came back folded to "-" (or not at all
    # from runserver) and, set in the view, was refused only after it returned, dropping the
    # connection; a value Latin-1 cannot carry came back RFC 2047-encoded (GRIP probe).
    with connect(f"{grip_proxy.ws_url}/ws/remember/", proxy=None, open_timeout=10) as ws:
        for message in ("user_id=u1", "snow=☃ café", "plain=x"):
            ws.send(message)
            assert ws.recv(timeout=5) == "ok"
        asked = {}
        for name in ("user_id", "user-id", "snow", "plain"):
            ws.send(f"?{name}")
            asked[name] = ws.recv(timeout=5)
    assert asked == {"user_id": "u1", "user-id": "u1", "snow": "☃ café", "plain": "x"}

