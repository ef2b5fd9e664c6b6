"""What DRF users combine with a realtime view, over DRF's test client (views in
``testapp/drf_views.py``; through real proxies: ``integration/test_drf_usage.py``)."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from drf_grip.test import (
    GripAPIClient,
    WebSocketTestClient,
    assert_held,
    capture_published,
    wait_published,
)
from tests.testapp.drf_views import BareCount, ProjectTasks
from tests.testapp.models import Project, Task, Todo

pytestmark = pytest.mark.django_db(transaction=True)  # changes publish after commit


@pytest.fixture(autouse=True)
def outbox():
    cache.clear()
    with capture_published() as published:
        yield published


@pytest.mark.parametrize(
    "path",
    [
        "/api/probe/upper-todos/",
        "/api/probe/shared-upper-todos/",
        "/api/probe/jsonapi-todos/",
        "/api/probe/shared-jsonapi-todos/",
    ],
)
def test_a_stream_carries_what_the_views_own_json_renderer_gives(path):
    """A view whose renderer is the project's own (camelCase keys...): its stream's events
    carry the bytes and ETag of a GET of its JSON, not those of DRF's plain JSONRenderer."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    fresh = client.get(path)
    assert b'"TITLE":"a"' in fresh.content
    stream = client.get(path, HTTP_ACCEPT="text/event-stream")
    assert_held(stream, stream=True)
    assert stream.content == f'id: {fresh["ETag"]}\ndata: '.encode() + fresh.content + b"\n\n"
    # Last-Event-ID with the GET's ETag: nothing new to send first.
    again = client.get(path, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID=fresh["ETag"])
    assert again.content == b""
    detail = client.get(f"{path}{todo.pk}/", HTTP_ACCEPT="text/event-stream")
    assert b'"ID":' in detail.content


@pytest.mark.parametrize("path", ["/api/probe/shared-upper-todos/", "/api/probe/shared-jsonapi-todos/"])
def test_shared_pushes_and_first_event_are_alike_with_the_views_renderer(outbox, path):
    """A stream's pushed events are renders of the media type its first event has: for a
    view whose JSON is ``application/vnd.api+json``, not ``application/json``, which it
    refuses (406: every stream got ``event: delete`` at the first change)."""
    Todo.objects.create(title="a")
    client = GripAPIClient()
    first = client.get(path, HTTP_ACCEPT="text/event-stream")
    channel = assert_held(first, stream=True).channels[1]
    Todo.objects.create(title="b")
    wait_published()
    pushed = outbox.to(channel)[-1]["formats"]["http-stream"]["content"]
    fresh = client.get(path)
    assert pushed == f'id: {fresh["ETag"]}\ndata: '.encode().decode() + fresh.content.decode() + "\n\n"
    assert b'{"COUNT":1,' in first.content.split(b"\ndata: ")[1]


@pytest.mark.parametrize("path", ["/api/probe/csv-todos/", "/api/probe/shared-csv-todos/"])
def test_a_stream_of_a_view_serving_no_json_gets_an_event_per_change(outbox, path):
    """A view whose only renderer is not JSON (CSV): its stream carries DRF's JSON, and a
    shared one's pushes were renders asking for application/json, which the view refused
    (406): every stream got ``event: delete`` at the first change (DRF probe)."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    assert client.get(path).content == f"{todo.pk},a,False".encode()
    stream = client.get(path, HTTP_ACCEPT="text/event-stream")
    held = assert_held(stream, stream=True)
    assert b'"title":"a"' in stream.content
    Todo.objects.create(title="b")
    wait_published()
    sent = [
        item["formats"]["http-stream"]["content"]
        for item in outbox
        if item["channel"] in held.channels
        and "content" in item["formats"].get("http-stream", {})
    ]
    if path.startswith("/api/probe/shared"):
        assert sent and "event: delete" not in sent[-1], sent
        assert '"title":"b"' in sent[-1]
        again = client.get(path, HTTP_ACCEPT="text/event-stream")
        assert sent[-1] == again.content.decode()
    else:  # a hint: the proxy fetches the next link, which renders the new list
        assert not sent


@pytest.mark.parametrize("path", ["/api/probe/csv-todos/", "/api/probe/shared-csv-todos/"])
def test_the_gateway_subscribes_to_a_view_serving_no_json_as_its_streams_do(path):
    """Its subscriptions carry the JSON its streams carry; they answered 406 with the CSV
    of the error as their data (DRF probe)."""
    Todo.objects.create(title="a")
    ws = WebSocketTestClient().connect("/api/ws/")
    ws.send_json({"id": 1, "subscribe": path})
    answer = ws.receive_json()
    assert answer["status"] == 200, answer
    assert [row["title"] for row in answer["data"]] == ["a"]


def test_if_match_from_the_browsable_api_is_checked_against_the_views_json():
    """The browsable API serves no ETag: its write is checked against the JSON one, as the
    view's own renderer gives it."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    etag = client.get(f"/api/probe/upper-todos/{todo.pk}/")["ETag"]
    response = client.patch(
        f"/api/probe/upper-todos/{todo.pk}/",
        {"title": "b"},
        format="json",
        HTTP_ACCEPT="text/html",
        HTTP_IF_MATCH=etag,
    )
    assert response.status_code == 200


def _next_change(ws, answer):
    """The first change after a subscribe ``answer`` (skipping the answer's settle, README),
    as sent, and parsed."""
    while True:
        raw = ws.receive(timeout=5)
        change = json.loads(raw)  # a change that is not JSON fails here
        if change.get("etag") != answer["etag"]:
            return raw, change


@pytest.mark.parametrize(
    "path", ["/api/probe/json-csv-todos/", "/api/probe/shared-json-csv-todos/"]
)
@pytest.mark.parametrize("how", ["accept", "format"])
def test_a_gateway_subscription_that_asked_for_csv_gets_its_changes_as_csv_text(path, how):
    """A subscriber that asked for CSV (or YAML) of a view serving JSON too: a shared view's
    change spliced the CSV into the message raw, which is not JSON at all, and ``?format=``
    answered 406, the gateway asking for JSON alone (DRF probe). Each change's ``data`` is
    the text a fresh GET returns, as in the first answer."""
    Todo.objects.create(title="a")
    if how == "accept":
        message = {"id": 1, "subscribe": path, "headers": {"Accept": "text/csv"}}
        fresh_get = lambda: GripAPIClient().get(path, HTTP_ACCEPT="text/csv")  # noqa: E731
    else:
        message = {"id": 1, "subscribe": path + "?format=csv"}
        fresh_get = lambda: GripAPIClient().get(path + "?format=csv")  # noqa: E731
    ws = WebSocketTestClient().connect("/api/ws/")
    ws.send_json(message)
    answer = ws.receive_json()
    assert answer["status"] == 200, answer
    assert answer["data"] == fresh_get().content.decode()
    Todo.objects.create(title="b")
    _raw, change = _next_change(ws, answer)
    fresh = fresh_get()
    assert change["data"] == fresh.content.decode() and ",b," in change["data"]
    assert change["etag"] == fresh["ETag"]


@pytest.mark.parametrize("path", ["/api/probe/jsonapi-todos/", "/api/probe/shared-jsonapi-todos/"])
def test_gateway_changes_of_a_json_api_view_carry_its_json_as_the_answer_did(path):
    """A private view's change sent a ``+json`` body as a JSON string, where the answer and
    a shared change carry the document itself (DRF probe)."""
    Todo.objects.create(title="a")
    ws = WebSocketTestClient().connect("/api/ws/")
    ws.send_json({"id": 1, "subscribe": path})
    answer = ws.receive_json()
    assert isinstance(answer["data"], dict), answer
    Todo.objects.create(title="b")
    raw, change = _next_change(ws, answer)
    fresh = GripAPIClient().get(path)
    assert change["data"] == fresh.json() and change["etag"] == fresh["ETag"]
    assert fresh.content.decode() in raw  # spliced as rendered


@pytest.mark.parametrize(
    "how,view",
    [
        ("partial_update", "write-todos"),
        ("update", "write-todos"),
        ("action", "write-todos"),
        ("partial_update", "method-todos"),
        ("update", "generic-method-todos"),
    ],
)
def test_if_match_is_the_detail_etag_whatever_serializer_writes(how, view):
    """A view writing with another serializer than it reads with (``get_serializer_class``
    by action or by method, an ``@action``'s own): ``If-Match`` compares the detail
    representation's ETag, the one a GET gave, and the answer names the new one."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    url = f"/api/probe/{view}/{todo.pk}/"
    etag = client.get(url)["ETag"]
    write = {
        "partial_update": lambda headers: client.patch(url, {"title": "b"}, format="json", **headers),
        "update": lambda headers: client.put(url, {"title": "b"}, format="json", **headers),
        "action": lambda headers: client.patch(
            f"{url}rename/", {"title": "b"}, format="json", **headers
        ),
    }[how]
    stale = write({"HTTP_IF_MATCH": '"stale"'})
    assert stale.status_code == 412 and stale["ETag"] == etag
    response = write({"HTTP_IF_MATCH": etag})
    assert response.status_code == 200, response.content
    assert response["ETag"] == client.get(url)["ETag"] != etag


def test_a_partition_along_a_field_path_wakes_its_owners_holds(outbox):
    """``realtime_partition = "project__owner"``: a new task wakes the list its project's
    owner holds (it woke nobody: the path stopped at ``project_id``)."""
    alice, bob = (get_user_model().objects.create_user(name) for name in ("alice", "bob"))
    project = Project.objects.create(owner=alice, name="p")
    client = GripAPIClient()
    client.force_authenticate(alice)
    path = "/api/probe/project-tasks/"
    held = client.get(path, HTTP_IF_NONE_MATCH=client.get(path)["ETag"])
    partition = assert_held(held).channels[0]
    Task.objects.create(project=project, title="t")
    Task.objects.create(project=Project.objects.create(owner=bob, name="q"), title="u")
    wait_published()
    assert outbox.to(partition)
    assert [task["title"] for task in client.get(path).json()] == ["t"]
    assert ProjectTasks.get_instance_partitions(Task.objects.get(title="u")) == [str(bob.pk)]


def test_a_task_moved_to_another_owners_project_wakes_both(outbox, django_assert_max_num_queries):
    """Loaded, a task remembers the project it was in, without reading the project (a list
    of tasks must not cost a query per task); moved, the lists of both owners wake."""
    alice, bob = (get_user_model().objects.create_user(name) for name in ("alice", "bob"))
    first = Project.objects.create(owner=alice, name="p")
    second = Project.objects.create(owner=bob, name="q")
    Task.objects.bulk_create([Task(project=first, title=f"t{i}") for i in range(5)])
    with django_assert_max_num_queries(1):
        tasks = list(Task.objects.all())
    task = tasks[0]
    task.project = second
    task.save()
    wait_published()
    partitions = {item["channel"] for item in outbox if ".p." in item["channel"]}
    assert {c.split("~")[0] for c in partitions} == {
        f"drf.testapp.task.p.{alice.pk}",
        f"drf.testapp.task.p.{bob.pk}",
    }


def test_the_gateway_subscribes_to_a_json_api_view():
    """A view serving JSON only as ``application/vnd.api+json``: a gateway message asks for
    that JSON (it asked for application/json: 406), and its changes follow."""
    path = "/api/probe/shared-jsonapi-todos/"
    Todo.objects.create(title="a")
    ws = WebSocketTestClient().connect("/api/ws/")
    ws.send_json({"id": 1, "subscribe": path})
    answer = ws.receive_json()
    assert answer["status"] == 200, answer
    assert answer["data"] == GripAPIClient().get(path).json()
    Todo.objects.create(title="b")
    change = ws.receive_json(timeout=5)
    while change.get("etag") == answer["etag"]:  # the answer's settle (README)
        change = ws.receive_json(timeout=5)
    fresh = GripAPIClient().get(path)
    assert change["data"] == fresh.json() and change["etag"] == fresh["ETag"]


@pytest.mark.parametrize("query", ["?fields=id,title", "?fields=id,title&_=1700000000"])
@pytest.mark.parametrize("view", ["shared-fields-todos", "shared-lazy-fields-todos"])
def test_a_shared_view_keeps_the_query_parameters_its_serializer_reads(outbox, query, view):
    """A serializer that reads ``?fields=`` when it is made (drf-flex-fields'
    ``FlexFieldsModelSerializer``, ``?expand=`` alike) or when it builds its fields
    (drf-dynamic-fields): a shared view dropped the parameter before it ran, so even a
    plain GET of ``?fields=id,title`` answered every field, and subscribers were pushed
    every field. A cache-buster is still dropped."""
    path = f"/api/probe/{view}/"
    Todo.objects.create(title="a")
    client = GripAPIClient()
    first = client.get(path + query)
    assert first.json() == [{"id": Todo.objects.get().pk, "title": "a"}]
    stream = client.get(path + query, HTTP_ACCEPT="text/event-stream")
    channel = assert_held(stream, stream=True).channels[1]
    assert channel == assert_held(
        client.get(path + "?fields=id,title", HTTP_ACCEPT="text/event-stream"), stream=True
    ).channels[1]
    Todo.objects.create(title="b")
    wait_published()
    pushed = outbox.to(channel)[-1]["formats"]["http-response"]["body"]
    assert pushed == client.get(path + query).content.decode()
    assert '"done"' not in pushed


def test_only_anonymous_subscribers_share_the_renders():
    """A signed-in subscriber of a shared view holds the model's private channel (its own
    GET is re-run on each change, so a revoked token ends it:
    ``integration/test_drf_usage.py``), also of a view anyone may read, where a deleted
    token's GET answers 401 too; an anonymous subscriber shares the URL's renders."""
    user = get_user_model().objects.create_user("alice")
    Todo.objects.create(title="a")
    client = GripAPIClient()
    client.force_authenticate(user)
    signed_in = client.get("/api/probe/signed-in-todos/", HTTP_ACCEPT="text/event-stream")
    assert assert_held(signed_in, stream=True).channels[1:] == ["drf.testapp.todo"]
    public = client.get("/api/probe/shared-fields-todos/", HTTP_ACCEPT="text/event-stream")
    assert assert_held(public, stream=True).channels[1:] == ["drf.testapp.todo"]
    anonymous = GripAPIClient().get(
        "/api/probe/shared-fields-todos/", HTTP_ACCEPT="text/event-stream"
    )
    assert assert_held(anonymous, stream=True).channels[1].startswith("drf.url.")
    plain = client.get("/api/probe/signed-in-todos/")
    held = client.get("/api/probe/signed-in-todos/", HTTP_IF_NONE_MATCH=plain["ETag"])
    assert assert_held(held).channels[0].startswith("drf.testapp.todo")


def test_a_session_shares_the_renders_of_a_view_anyone_may_read():
    """A subscriber signed in by a session, of a shared view anyone may read, shares the
    URL's renders: its session ended (a logout, a deactivated user), its GET reads the view
    as anonymous and gets the same bytes, so there is nothing to end. (A signed-in board
    of the sample was delivered like private data, a render per visitor per change.) Of a
    view behind ``IsAuthenticated`` the session is what lets it read, and it holds the
    model's private channel."""
    get_user_model().objects.create_user("alice", password="pw")
    Todo.objects.create(title="a")
    client = GripAPIClient()
    assert client.login(username="alice", password="pw")
    public = client.get("/api/probe/shared-fields-todos/", HTTP_ACCEPT="text/event-stream")
    assert assert_held(public, stream=True).channels[1].startswith("drf.url.")
    signed_in = client.get("/api/probe/signed-in-todos/", HTTP_ACCEPT="text/event-stream")
    assert assert_held(signed_in, stream=True).channels[1:] == ["drf.testapp.todo"]


def test_a_shared_view_keeps_the_query_parameters_its_filter_methods_read(outbox):
    """A django-filter ``FilterSet`` method that reads a parameter no filter declares
    (``?whole=1`` beside ``?starts=``): a shared view dropped it before it ran, so even a
    plain GET answered as if it was not there, and so were subscribers pushed."""
    path = "/api/probe/shared-filtered-todos/?starts=apple&whole=1&_=1700000000"
    Todo.objects.create(title="apple")
    Todo.objects.create(title="apple pie")
    client = GripAPIClient()
    first = client.get(path)
    assert [todo["title"] for todo in first.json()] == ["apple"]
    stream = client.get(path, HTTP_ACCEPT="text/event-stream")
    channel = assert_held(stream, stream=True).channels[1]
    Todo.objects.create(title="apple tart")
    Todo.objects.create(title="apple")
    wait_published()
    pushed = outbox.to(channel)[-1]["formats"]["http-response"]["body"]
    assert pushed == client.get(path).content.decode()
    assert [todo["title"] for todo in json.loads(pushed)] == ["apple", "apple"]


def test_a_shared_view_keeps_the_query_parameters_its_paginators_methods_read(outbox, caplog):
    """A paginator whose ``get_page_size()`` reads ``?per=``: a shared view dropped it
    before it ran, so even a plain GET answered the default page size (DRF probe). A
    parameter dropped is said once, with the hook that keeps it."""
    path = "/api/probe/shared-per-page-todos/?per=1&_=1700000000"
    for title in "abc":
        Todo.objects.create(title=title)
    client = GripAPIClient()
    with caplog.at_level("INFO", logger="drf_grip.subscribe"):
        first = client.get(path).json()
    assert [todo["title"] for todo in first["results"]] == ["a"]
    assert "per=1" in first["next"] and "_=" not in first["next"]
    noted = [r.getMessage() for r in caplog.records if "realtime_query_params" in r.getMessage()]
    assert len(noted) == 1 and "'_'" in noted[0], noted
    stream = client.get(path, HTTP_ACCEPT="text/event-stream")
    channel = assert_held(stream, stream=True).channels[1]
    Todo.objects.filter(title="a").update(title="a2")
    Todo.objects.create(title="0")
    wait_published()
    pushed = outbox.to(channel)[-1]["formats"]["http-response"]["body"]
    assert pushed == client.get(path).content.decode()
    assert [todo["title"] for todo in json.loads(pushed)["results"]] == ["a2"]


def test_a_plain_viewset_with_the_mixin_is_live_at_its_detail_urls(outbox):
    """``RealtimeMixin`` on a ``viewsets.ViewSet`` with hand-written ``retrieve()``: every
    request to a detail URL was a 500 (no ``lookup_url_kwarg``; DRF probe)."""
    todo = Todo.objects.create(title="a")
    client = GripAPIClient()
    url = f"/api/probe/hand-todos/{todo.pk}/"
    fresh = client.get(url)
    assert fresh.status_code == 200 and fresh.json()["title"] == "a" and fresh["ETag"]
    assert_held(client.get(url, HTTP_IF_NONE_MATCH=fresh["ETag"]), [f"drf.testapp.todo.{todo.pk}"])
    stream = client.get(url, HTTP_ACCEPT="text/event-stream")
    assert_held(stream, stream=True)
    assert stream.content == f'id: {fresh["ETag"]}\ndata: '.encode() + fresh.content + b"\n\n"
    assert client.get("/api/probe/hand-todos/999999/").status_code == 404
    todo.title = "b"
    todo.save()
    wait_published()
    assert f"drf.testapp.todo.{todo.pk}" in outbox.channels
    woken = client.get(url, HTTP_IF_NONE_MATCH=fresh["ETag"])
    assert woken.status_code == 200 and woken.json()["title"] == "b"


def test_a_view_naming_no_model_refuses_streams_and_is_named_by_a_check():
    """An ``APIView`` with the mixin and only ``get()`` answered ``Accept:
    text/event-stream`` with bare JSON labelled as a stream, and nothing said it could not
    be live (DRF probe)."""
    from django.core import checks

    client = GripAPIClient()
    stream = client.get("/api/probe/bare-count/", HTTP_ACCEPT="text/event-stream")
    assert stream.status_code == 406
    plain = client.get("/api/probe/bare-count/")
    assert plain.status_code == 200 and plain.json() == {"n": 0}
    ws = WebSocketTestClient().connect("/api/ws/")
    ws.send_json({"id": 1, "method": "GET", "url": "/api/probe/bare-count/",
                  "headers": {"Accept": "text/event-stream"}})
    assert ws.receive_json()["status"] == 406
    named = {m.obj.__name__ for m in checks.run_checks() if m.id == "drf_grip.W012"}
    assert named == {BareCount.__name__, "ListQuerysetView"}  # a queryset that is a list
