"""Gateway message URLs a browser would never send raw: a clear 400, and the socket stays."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from drf_grip.rest.change_worker import wait_idle
from drf_grip.test import WebSocketTestClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sink():
    """Publishes go to a sink of this process, not over HTTP to EMBEDDED_URL (retried there
    long enough to hold up the next test's flush)."""
    from tests.drf_helpers import RecordingSink

    with RecordingSink() as recording:
        yield recording
        recording.settle()


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


@pytest.mark.parametrize(
    "message",
    [
        {"method": "GET", "url": "/api/todos/", "data": {"page": "\ud800"}},
        {"subscribe": "/api/todos/", "data": {"search": "\ud800"}},
        {"subscribe": "/api/todos/", "data": {"\ud800": "x"}},
    ],
)
def test_a_lone_surrogate_in_a_gets_data_is_a_400_not_a_500(message: dict):
    """A GET's (or a subscription's) ``data`` becomes its query string; a lone surrogate
    (JSON ``"\\ud800"``) cannot be encoded and answered 500 (security probe)."""
    ws = WebSocketTestClient().connect("/api/ws/")
    assert ws.accepted, ws.response
    ws.send(json.dumps({"id": 1, **message}))
    answer = ws.receive_json()
    assert answer["id"] == 1 and answer["status"] == 400, answer
    assert "surrogate" in answer["error"]
    ws.send(json.dumps({"id": 2, "url": "/api/todos/", "data": {"search": "\u2603"}}))
    assert ws.receive_json()["status"] == 200


@pytest.mark.parametrize("debug", [False, True])
def test_a_handshake_without_the_urls_trailing_slash_is_a_404_naming_it(settings, debug):
    """The proxy sends a handshake as a POST; APPEND_SLASH's redirect of a POST raises in
    Django under DEBUG (a 500, the sample's default; security probe), and a handshake cannot
    follow a redirect anyway."""
    settings.DEBUG = debug
    ws = WebSocketTestClient().connect("/api/ws")
    assert not ws.accepted
    assert ws.response.status_code == 404, ws.response
    assert b"/api/ws/" in ws.response.content
    assert connect_ok()


def connect_ok() -> bool:
    return WebSocketTestClient().connect("/api/ws/").accepted


@pytest.mark.parametrize("kind", ["shared-todos", "todos"])
def test_a_gateway_answer_under_a_script_name_carries_the_prefix_in_its_links(kind: str, sink):
    """Mounted under a prefix the server passes as ``SCRIPT_NAME`` (gunicorn's
    ``SCRIPT_NAME``, uvicorn's ``--root-path``): a fresh GET's pagination links carry
    ``/api-prefix/``, but the gateway's inner requests dropped it (deploy probe: the
    subscription's first answer and every pushed change linked ``/api/todos/?page=2``,
    a 404 through the front proxy, and their ETags differed from the GET's)."""
    from rest_framework.test import APIClient

    from tests.testapp.models import Todo

    for i in range(3):
        Todo.objects.create(title=f"t{i}")
    wait_idle()  # their publishes, before the subscription
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


def test_a_gateway_url_carrying_the_script_name_is_served(sink):
    """Under a mount point the gateway names a subscription by its canonical live URL, which
    carries the prefix (``"url": "/api-prefix/api/todos/"``), as do the pagination links of
    every answer; sending either back (subscribing to a ``next`` page, a REST call on a
    hyperlink) answered ``404 not found: /api-prefix/api/todos/`` (deploy probe)."""
    from django.urls import set_script_prefix

    from tests.testapp.models import Todo

    for i in range(3):
        Todo.objects.create(title=f"t{i}")
    wait_idle()  # their publishes, before the subscription
    # What Django's WSGI and ASGI handlers do for each request (its test client does not).
    set_script_prefix("/api-prefix/")
    try:
        _send_back_prefixed_urls()
    finally:
        set_script_prefix("/")


def _send_back_prefixed_urls():
    ws = WebSocketTestClient(SCRIPT_NAME="/api-prefix").connect("/api/ws/")
    assert ws.accepted, ws.response
    ws.send(json.dumps({"id": 1, "subscribe": "/api/shared-todos/"}))
    first = ws.receive_json()
    assert first["status"] == 200, first
    assert first["url"] == "/api-prefix/api/shared-todos/"
    ws.send(json.dumps({"id": 2, "method": "GET", "url": first["url"]}))
    again = ws.receive_json()
    assert again["status"] == 200, again
    assert again["data"] == first["data"]
    next_page = first["data"]["next"].removeprefix("http://testserver")
    ws.send(json.dumps({"id": 3, "subscribe": next_page}))
    page_two = ws.receive_json()
    assert page_two["id"] == 3 and page_two["status"] == 200, page_two
    assert [t["title"] for t in page_two["data"]["results"]] == ["t0"]
    # Unprefixed URLs, relative to the URLconf, keep working.
    ws.send(json.dumps({"id": 4, "method": "GET", "url": "/api/shared-todos/?page=2"}))
    assert ws.receive_json()["data"] == page_two["data"]
