"""Gateway message URLs a browser would never send raw: a clear 400, and the socket stays."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from drf_grip.test import WebSocketTestClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("kind", ["url", "subscribe"])
@pytest.mark.parametrize(
    "url",
    [
        "/api/todos/?search=\u2603",  # a raw non-Latin-1 character
        "/api/todos/\u2603/",
        "/api/todos/?search=\ud800",  # a lone surrogate (JSON "\ud800")
    ],
)
def test_a_url_with_raw_non_ascii_or_a_lone_surrogate_is_a_400(kind: str, url: str):
    ws = WebSocketTestClient().connect("/api/ws/")
    assert ws.accepted, ws.response
    # json.dumps escapes both (\u2603, \ud800), as a browser's JSON.stringify would.
    ws.send(json.dumps({"id": 1, kind: url}))
    answer = ws.receive_json()
    assert answer["id"] == 1 and answer["status"] == 400, answer
    assert "percent-encode" in answer["error"]
    ws.send(json.dumps({"id": 2, "url": "/api/todos/?search=%E2%98%83"}))
    assert ws.receive_json()["status"] == 200
