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


@pytest.mark.parametrize("kind", ["shared-todos", "todos"])
def test_a_gateway_answer_under_a_script_name_carries_the_prefix_in_its_links(kind: str):
    """Mounted under a prefix the server passes as ``SCRIPT_NAME`` (gunicorn's
    ``SCRIPT_NAME``, uvicorn's ``--root-path``): a fresh GET's pagination links carry
    ``/api-prefix/``, but the gateway's inner requests dropped it (deploy probe: the
    subscription's first answer and every pushed change linked ``/api/todos/?page=2``,
    a 404 through the front proxy, and their ETags differed from the GET's)."""
    from rest_framework.test import APIClient

    from tests.testapp.models import Todo

    for i in range(3):
        Todo.objects.create(title=f"t{i}")
    url = f"/api/{kind}/"
    fresh = APIClient(SCRIPT_NAME="/api-prefix").get(url)
    assert fresh.json()["next"] == f"http://testserver/api-prefix{url}?page=2"
    ws = WebSocketTestClient(SCRIPT_NAME="/api-prefix").connect("/api/ws/")
    assert ws.accepted, ws.response
    ws.send(json.dumps({"id": 1, "subscribe": url}))
    answer = ws.receive_json()
    assert answer["status"] == 200, answer
    assert answer["data"] == fresh.json()
    assert answer["etag"] == fresh["ETag"]
    ws.send(json.dumps({"id": 2, "method": "GET", "url": url}))
    assert ws.receive_json()["data"] == fresh.json()
    Todo.objects.create(title="t3")
    change = ws.receive_json(timeout=5)
    assert change["event"] == "change", change
    fresh = APIClient(SCRIPT_NAME="/api-prefix").get(url)
    assert change["data"] == fresh.json()
    assert change["etag"] == fresh["ETag"]
