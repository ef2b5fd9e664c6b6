"""Model-change paths through a real GRIP proxy (DESIGN.md §2): savepoints, fixtures,
many-to-many rows removed by a delete, inheritance and proxy models. Each test ends in "does
the client hold what a fresh GET returns?", against a private Pushpin and the embedded
proxy alike (``grip_proxy``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction

from drf_grip import publish_changes
from drf_grip.rest import channels as names
from drf_grip.testing.proxies import ProxyUnderTest
from tests.testapp.models import (
    Article,
    Bookmark,
    Comment,
    Member,
    Membership,
    OpenTodo,
    Post,
    Restaurant,
    Tag,
    Team,
    Todo,
)

from .realtime_clients import EventStream, LongPoll
from .test_realtime import WITHIN, get, hold, list_ch, obj_ch, settle, stream

pytestmark = pytest.mark.django_db(transaction=True)


def past_first_subscription(proxy: ProxyUnderTest) -> None:
    """Pushpin re-requests a channel's holds about 1 s after its first subscription
    (PUSHPIN.md), which would answer a hold that no publish woke: wait that out."""
    if proxy.name == "pushpin":
        time.sleep(1.5)


def held(proxy: ProxyUnderTest, path: str, channel: str) -> LongPoll:
    """A long-poll of ``path`` held on ``channel``, past Pushpin's first re-request."""
    poll = hold(proxy, path, channel)
    past_first_subscription(proxy)
    return poll


def woken(proxy: ProxyUnderTest, poll: LongPoll, path: str) -> Any:
    """The body a change woke ``poll`` with, which must be what a fresh GET of ``path``
    returns (its ETag)."""
    response = poll.result(WITHIN)
    body = response.json()
    assert response.headers["ETag"] == get(proxy, path).headers["ETag"]
    return body


def renamed_beside_a_delete_rolled_back(todo: Todo) -> None:
    """In one transaction: ``todo`` renamed "oat milk", and deleted in a savepoint that is
    rolled back."""
    with transaction.atomic():
        todo.title = "oat milk"
        todo.save()
        with pytest.raises(RuntimeError), transaction.atomic():
            Todo.objects.get(pk=todo.pk).delete()
            raise RuntimeError("rolled back to the savepoint")


def test_a_delete_rolled_back_to_a_savepoint_keeps_the_stream(
    grip_proxy: ProxyUnderTest, streams: list[EventStream]
) -> None:
    """The object survived: its stream must not get ``event: delete`` and end, while the
    change kept in the same transaction arrives."""
    todo = Todo.objects.create(title="milk")
    events = stream(grip_proxy, f"/api/todos/{todo.pk}/", obj_ch(todo))
    streams.append(events)
    assert events.next(WITHIN).data

    renamed_beside_a_delete_rolled_back(todo)
    settle()

    event = events.next(WITHIN)
    now = get(grip_proxy, f"/api/todos/{todo.pk}/")
    assert now.status_code == 200
    assert event.event is None and json.loads(event.data)["title"] == "oat milk"
    assert event.id == now.headers["ETag"]
    assert events.pending() == []  # still open: no delete, no end


def test_a_tag_deleted_wakes_the_posts_it_was_on(grip_proxy: ProxyUnderTest) -> None:
    """Deleting a Tag removes its rows of ``Post.tags`` without an ``m2m_changed``."""
    post = Post.objects.create(title="news")
    tag = Tag.objects.create(name="hot")
    post.tags.add(tag)
    settle()
    path = f"/api/posts/{post.pk}/"
    poll = held(grip_proxy, path, obj_ch(post))

    tag.delete()

    assert woken(grip_proxy, poll, path)["tags"] == []


def test_a_bookmark_whose_todo_is_deleted_wakes(grip_proxy: ProxyUnderTest) -> None:
    """``on_delete=SET_NULL``: Django clears the key with an UPDATE, no signal."""
    todo = Todo.objects.create(title="milk")
    bookmark = Bookmark.objects.create(todo=todo, label="shopping")
    path = f"/api/bookmarks/{bookmark.pk}/"
    poll = held(grip_proxy, path, obj_ch(bookmark))

    todo.delete()

    assert woken(grip_proxy, poll, path)["todo"] is None


def test_loaddata_wakes_the_list(grip_proxy: ProxyUnderTest, tmp_path) -> None:
    poll = held(grip_proxy, "/api/todos/", list_ch())
    fixture = tmp_path / "todos.json"
    fixture.write_text(json.dumps([
        {"model": "testapp.todo", "pk": 4242, "fields": {"title": "from a fixture"}},
    ]))

    call_command("loaddata", str(fixture), verbosity=0)

    assert woken(grip_proxy, poll, "/api/todos/")["results"][0]["title"] == "from a fixture"


def test_a_save_through_a_child_class_wakes_the_parents_view(grip_proxy: ProxyUnderTest) -> None:
    restaurant = Restaurant.objects.create(name="Chez Nous")
    path = f"/api/places/{restaurant.pk}/"
    poll = held(grip_proxy, path, obj_ch(restaurant.place_ptr))

    restaurant.name = "Chez Vous"
    restaurant.save()

    assert woken(grip_proxy, poll, path)["name"] == "Chez Vous"


def test_a_save_through_a_proxy_class_wakes_the_list(grip_proxy: ProxyUnderTest) -> None:
    poll = held(grip_proxy, "/api/todos/", list_ch())

    OpenTodo.objects.create(title="through a proxy")

    assert woken(grip_proxy, poll, "/api/todos/")["results"][0]["title"] == "through a proxy"


def test_a_membership_created_directly_wakes_its_team(grip_proxy: ProxyUnderTest) -> None:
    team, member = Team.objects.create(name="core"), Member.objects.create(name="ada")
    path = f"/api/teams/{team.pk}/"
    poll = held(grip_proxy, path, obj_ch(team))

    Membership.objects.create(team=team, member=member, role="lead")

    assert woken(grip_proxy, poll, path)["members"] == ["ada"]


@pytest.mark.parametrize(
    "path, bulk",
    [("/api/todos/", names.bulk_channel), ("/api/shared-todos/", names.shared_bulk_channel)],
)
def test_a_detail_url_with_its_key_written_otherwise_wakes(
    grip_proxy: ProxyUnderTest, path: str, bulk: Callable[[type[Todo]], str]
) -> None:
    """``/api/todos/01/`` finds todo 1 (Django's lookup converts the text), and must wake
    when todo 1 changes, as ``/api/todos/1/`` does: a client that formats keys its own way
    (zero-padded, upper-case UUIDs) otherwise waits out its whole hold."""
    todo = Todo.objects.create(title="milk")
    url = f"{path}0{todo.pk}/"
    poll = held(grip_proxy, url, bulk(Todo))

    todo.title = "oat milk"
    todo.save()

    assert woken(grip_proxy, poll, url)["title"] == "oat milk"


@pytest.mark.parametrize("path", ["/api/articles/", "/api/shared-articles/"])
def test_a_detail_url_looked_up_by_slug_wakes_on_its_objects_change(
    grip_proxy: ProxyUnderTest, path: str
) -> None:
    """Looked up by a unique slug, a detail URL is held on its object's channel (private)
    or listed under its object (shared), no longer as a list, and still wakes with the
    change, a rename included (its URL then answers 404)."""
    article = Article.objects.create(slug="hello", title="first")
    Article.objects.create(slug="other", title="x")
    url = f"{path}hello/"
    private = path == "/api/articles/"
    poll = held(grip_proxy, url, obj_ch(article) if private else names.shared_bulk_channel(Article))

    article.title = "second"
    article.save()
    assert woken(grip_proxy, poll, url)["title"] == "second"

    poll = held(grip_proxy, url, obj_ch(article) if private else names.shared_bulk_channel(Article))
    article.slug = "hello-again"
    article.save()
    assert poll.result(WITHIN).status_code == 404


def test_gateway_subscriptions_follow_the_same_changes(grip_proxy: ProxyUnderTest) -> None:
    """Over the WebSocket gateway: a delete rolled back to a savepoint sends no 404, the
    change kept beside it arrives, and a deleted tag leaves its post."""
    from .test_gateway_ws import ask, gateway, receive

    todo = Todo.objects.create(title="milk")
    post, tag = Post.objects.create(title="news"), Tag.objects.create(name="hot")
    post.tags.add(tag)
    settle()
    with gateway(grip_proxy) as ws:
        assert ask(ws, {"id": 1, "subscribe": f"/api/todos/{todo.pk}/"})["status"] == 200
        assert ask(ws, {"id": 2, "subscribe": f"/api/posts/{post.pk}/"})["status"] == 200

        renamed_beside_a_delete_rolled_back(todo)
        change = receive(ws, timeout=WITHIN)
        assert (change["id"], change["status"], change["data"]["title"]) == (1, 200, "oat milk")

        tag.delete()
        change = receive(ws, timeout=WITHIN)
        assert (change["id"], change["status"], change["data"]["tags"]) == (2, 200, [])
        assert change["etag"] == get(grip_proxy, f"/api/posts/{post.pk}/").headers["ETag"]


def test_a_comment_moved_to_another_post_leaves_the_first(grip_proxy: ProxyUnderTest) -> None:
    first, second = Post.objects.create(title="a"), Post.objects.create(title="b")
    comment = Comment.objects.create(post=first, text="hi")
    path = f"/api/posts/{first.pk}/"
    poll = held(grip_proxy, path, obj_ch(first))

    comment = Comment.objects.get(pk=comment.pk)
    comment.post = second
    comment.save()

    assert woken(grip_proxy, poll, path)["comments"] == []


def test_bulk_created_comments_announced_by_key_wake_their_post(
    grip_proxy: ProxyUnderTest,
) -> None:
    """App probe: ``bulk_create()`` announced with ``publish_changes(Comment, pks=...)``, as
    the README says, left the post's long-polls holding the old comments."""
    post = Post.objects.create(title="news")
    settle()
    path = f"/api/posts/{post.pk}/"
    poll = held(grip_proxy, path, obj_ch(post))

    made = Comment.objects.bulk_create([Comment(post=post, text="a"), Comment(post=post, text="b")])
    publish_changes(Comment, pks=[comment.pk for comment in made])

    assert sorted(woken(grip_proxy, poll, path)["comments"]) == ["a", "b"]


def test_a_shared_long_poll_times_out_under_changes_naming_no_object(
    grip_proxy: ProxyUnderTest,
) -> None:
    """Publishing probe: ``Prefer: wait=5`` on an unchanged shared detail URL got no answer
    in 40 s while another todo changed every 1.5 s with ``publish_changes(Todo)``: the
    private views' hint of each change re-requested the hold, and the proxy held it again
    with its whole timeout. Here a change a second: the 304 comes when the wait is over."""
    todo, other = Todo.objects.create(title="milk"), Todo.objects.create(title="tea")
    # Someone watches the private list: each change hints its holds.
    watcher = hold(grip_proxy, "/api/todos/", list_ch())
    path = f"/api/shared-todos/{todo.pk}/"
    poll = hold(grip_proxy, path, names.shared_bulk_channel(Todo), {"Prefer": "wait=5"})
    started = time.monotonic()
    while not poll.done and time.monotonic() - started < 15:
        Todo.objects.filter(pk=other.pk).update(title=f"tea {time.monotonic()}")
        publish_changes(Todo)
        poll.wait(1.0)  # the next change, unless the answer comes first

    assert poll.done, "still held 15 s into a 5 s wait"
    assert poll.result(1).status_code == 304
    assert watcher.result(WITHIN).status_code == 200  # the private list did change
