"""The README's test snippets, as written, run here.

``test_every_readme_test_snippet_is_here`` finds each Python block of README.rst that
defines a test or a fixture and checks that it appears below character for character, so
the README cannot drift from what runs. What the snippets take for granted (the models)
is set up around them; the fixtures they use are defined in them.
"""

import textwrap
from pathlib import Path

import pytest

from tests.testapp.models import Todo

ROOT = Path(__file__).resolve().parent.parent


def readme_test_snippets() -> list[str]:
    lines = (ROOT / "README.rst").read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: python":
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                body.append(lines[i])
                i += 1
            block = textwrap.dedent("\n".join(body)).strip("\n")
            if "def test_" in block or "@pytest.fixture" in block:
                blocks.append(block)
        else:
            i += 1
    return blocks


def test_every_readme_test_snippet_is_here():
    source = Path(__file__).read_text()
    snippets = readme_test_snippets()
    assert len(snippets) >= 3
    for snippet in snippets:
        assert snippet in source, f"README snippet not in {__file__}:\n{snippet}"


# -- README: Testing WebSocket views ------------------------------------------------------

import pytest
from drf_grip.test import WebSocketTestClient


@pytest.fixture
def user(django_user_model):  # pytest-django's fixture: your user model
    return django_user_model.objects.create_user("alice", password="secret")


@pytest.mark.django_db(transaction=True)       # changes publish after commit
def test_board_is_live(user):
    client = WebSocketTestClient()
    client.force_login(user)
    ws = client.connect("/api/ws/")
    ws.send_json({"id": 1, "subscribe": "/api/todos/"})
    assert ws.receive_json()["status"] == 200
    Todo.objects.create(title="new")
    assert ws.receive_json()["event"] == "change"


# -- README: Testing your app -------------------------------------------------------------

# conftest.py
import pytest
from drf_grip.test import capture_published, reset_realtime_state


@pytest.fixture(autouse=True)
def published():
    """What each test publishes, kept off the network; no realtime state of earlier
    tests (live URLs, versions, hold counts)."""
    reset_realtime_state()
    with capture_published() as outbox:
        yield outbox


import pytest
from drf_grip.test import GripAPIClient, assert_held, assert_not_held, wait_published


@pytest.mark.django_db(transaction=True)  # changes publish after commit
def test_a_new_todo_wakes_the_list(published):
    client = GripAPIClient()
    etag = client.get("/api/todos/")["ETag"]
    held = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag, HTTP_PREFER="wait=30")
    grip = assert_held(held, timeout=30)  # a 304 the proxy holds for 30 s
    Todo.objects.create(title="buy milk")
    wait_published()
    assert grip.channels[0] in published.channels  # the held client is woken...
    fresh = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag)  # ...and asks again
    assert_not_held(fresh)
    assert fresh.data["results"][0]["title"] == "buy milk"


@pytest.mark.django_db
def test_the_stream_starts_with_the_current_list():
    response = GripAPIClient().get("/api/todos/", HTTP_ACCEPT="text/event-stream")
    assert_held(response, stream=True)
    etag = GripAPIClient().get("/api/todos/")["ETag"]
    assert response.content.startswith(f"id: {etag}\n".encode())
