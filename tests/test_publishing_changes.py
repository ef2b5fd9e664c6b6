"""Model changes become GRIP publishes after commit, once per resource per transaction."""

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from drf_grip import paused, publish_changes
from drf_grip.rest.shared import render_stats
from tests.drf_helpers import RecordingSink
from tests.testapp.models import (
    Bookmark,
    Comment,
    Member,
    Membership,
    OpenTodo,
    Place,
    Post,
    Restaurant,
    Tag,
    Team,
    Todo,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink():
    from django.core.cache import cache

    cache.clear()  # live URLs and versions of earlier tests
    with RecordingSink() as recording:
        recording.settle()
        # Someone watches the todo and post lists: the publisher follows recorded policies.
        watch("/api/todos/", "/api/posts/")
        yield recording


def watch(*urls):
    from tests.drf_helpers import ProxiedClient

    client = ProxiedClient()
    for url in urls:
        assert client.get(url, HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def test_nobody_watching_costs_no_publish(settings, tmp_path):
    """With a cache every process shares, the recorded subscriptions are the whole truth
    while it holds any (here those of another model's view)."""
    from django.core.cache import cache

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    cache.clear()
    watch("/api/posts/")
    with RecordingSink() as recording:
        recording.settle()
        Todo.objects.create(title="unwatched")
        assert recording.settle() == []
        watch("/api/todos/")
        Todo.objects.create(title="watched")
        assert "drf.testapp.todo" in recording.channels()


def test_a_cache_that_lost_every_record_publishes_for_the_views_classes(settings, tmp_path):
    """Redis flushed or restarted while the proxies hold clients: nothing says which views
    they came through until each is re-requested, so a change is published as the views'
    classes say, private channels hinted and shared holds hinted on their recovery channel
    (tests/integration/test_state_lost.py, with real Pushpins)."""
    from django.core.cache import cache

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    cache.clear()
    watch("/api/todos/", "/api/shared-todos/")
    with RecordingSink() as recording:
        recording.settle()
        cache.clear()
        todo = Todo.objects.create(title="after the flush")
        channels = set(recording.channels())
    assert {"drf.testapp.todo", f"drf.testapp.todo.{todo.pk}"} <= channels
    assert "drf.testapp.todo.*shared" in channels


def test_after_a_flush_deleting_a_token_or_a_session_publishes_no_channel_naming_it(
    settings, tmp_path
):
    """A model no realtime view serves has no held clients, so nothing is published for it.
    After the cache lost its records, each deleted row of any model was hinted on its object
    channel, and a Token's or a Session's primary key is the secret itself: it reached the
    proxy's log (``publish channel=drf.authtoken.token.<key>``, black-box probe)."""
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.cache import cache
    from rest_framework.authtoken.models import Token

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    cache.clear()
    watch("/api/todos/")
    token = Token.objects.create(user=User.objects.create_user("flushed"))
    session = SessionStore()
    session["k"] = 1
    session.create()
    with RecordingSink() as recording:
        recording.settle()
        cache.clear()
        key, session_key = token.key, session.session_key
        token.delete()
        session.delete()
        published = recording.settle()
    named = [str(item) for item in published if key in str(item) or session_key in str(item)]
    assert named == []


def test_signed_in_subscribers_of_a_shared_only_model_are_woken_after_a_flush(
    settings, tmp_path, monkeypatch
):
    """A token subscriber of an ``AllowAny`` shared view is delivered like private data and
    holds on the model's own channels. After the cache lost every record, a model served
    only by shared views hinted its recovery channel alone, and such a subscriber missed
    the change (the evicted-records path already hinted both)."""
    from django.core.cache import cache

    from drf_grip.rest import publishing
    from tests.testapp.realtime_views import SharedTodoViewSet

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    cache.clear()
    watch("/api/shared-todos/")
    monkeypatch.setattr(publishing, "views_for", lambda model: [SharedTodoViewSet])
    with RecordingSink() as recording:
        recording.settle()
        cache.clear()
        todo = Todo.objects.create(title="after the flush")
        channels = set(recording.channels())
    assert "drf.testapp.todo.*shared" in channels
    assert {"drf.testapp.todo", f"drf.testapp.todo.{todo.pk}"} <= channels


def test_save_publishes_hint_with_versions(sink):
    todo = Todo.objects.create(title="a")
    items = sink.settle()
    by_channel = {i["channel"]: i for i in items}
    assert {"drf.testapp.todo", f"drf.testapp.todo.{todo.pk}"} <= set(by_channel)
    item = by_channel[f"drf.testapp.todo.{todo.pk}"]
    assert item["formats"]["http-response"] == {"action": "hint"}
    assert item["id"]
    todo.title = "b"
    todo.save()
    again = {i["channel"]: i for i in sink.settle()}[f"drf.testapp.todo.{todo.pk}"]
    assert again["prev-id"] == item["id"] and again["id"] != item["id"]


def test_rollback_publishes_nothing(sink):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Todo.objects.create(title="never")
            raise RuntimeError
    assert sink.settle() == []
    Todo.objects.create(title="after")  # a later commit carries nothing of the rollback
    assert sum(c == "drf.testapp.todo" for c in sink.channels()) == 1


def test_changes_in_one_transaction_publish_once(sink):
    with transaction.atomic():
        todo = Todo.objects.create(title="a")
        for i in range(5):
            todo.title = f"v{i}"
            todo.save()
        Todo.objects.create(title="b")
    channels = sink.channels()
    assert channels.count("drf.testapp.todo") == 1
    assert channels.count(f"drf.testapp.todo.{todo.pk}") == 1


def test_changes_in_savepoints_and_around_callbacks_are_handed_over_once(monkeypatch):
    """Every change registers its own commit callback (so that a test's
    captureOnCommitCallbacks sees one), yet a transaction with savepoints released and
    rolled back, and the project's own callbacks between its changes, is handed to the
    publisher as one set of changes, whatever the publisher thread is doing meanwhile."""
    from drf_grip.rest import changes

    submitted = []
    monkeypatch.setattr(
        changes, "_submit", lambda changes, using=None: changes and submitted.append(changes)
    )
    with transaction.atomic():
        todo = Todo.objects.create(title="a")
        transaction.on_commit(lambda: None)  # the project's callback, say a task to queue
        Todo.objects.get_or_create(title="b")  # a savepoint, released
        with pytest.raises(RuntimeError), transaction.atomic():
            Todo.objects.create(title="rolled back")
            raise RuntimeError
        todo.title = "a2"
        todo.save()
    assert len(submitted) == 1
    assert set(submitted[0].updated[Todo]) == {todo.pk, Todo.objects.get(title="b").pk}


def test_delete_closes_streams_of_the_object(sink):
    todo = Todo.objects.create(title="a")
    sink.settle()
    pk = todo.pk
    todo.delete()
    items = [i for i in sink.settle() if i["channel"] == f"drf.testapp.todo.{pk}"]
    assert "event: delete" in items[0]["formats"]["http-stream"]["content"]
    assert items[-1]["formats"] == {"http-stream": {"action": "close"}}


def test_related_model_wakes_its_post(sink):
    post = Post.objects.create(title="p")
    sink.settle()
    Comment.objects.create(post=post, text="hi")
    assert f"drf.testapp.post.{post.pk}" in sink.channels()


def test_a_comment_moved_to_another_post_wakes_both_posts(sink):
    """ORM probe: ``affects`` was asked about the comment as saved only, so the post it
    left kept showing it; also when moved twice without being loaded again."""
    first, second, third = (Post.objects.create(title=t) for t in "abc")
    comment = Comment.objects.create(post=first, text="hi")
    comment = Comment.objects.get(pk=comment.pk)  # loaded, as in a view
    sink.settle()
    comment.post = second
    comment.save()
    assert {f"drf.testapp.post.{first.pk}", f"drf.testapp.post.{second.pk}"} <= set(
        sink.channels()
    )
    comment.post = third
    comment.save()
    channels = sink.channels()
    assert {f"drf.testapp.post.{second.pk}", f"drf.testapp.post.{third.pk}"} <= set(channels)
    assert f"drf.testapp.post.{first.pk}" not in channels
    comment.text = "edited"
    comment.save()
    assert f"drf.testapp.post.{second.pk}" not in sink.channels()


def test_a_comment_loaded_before_its_register_ran_wakes_the_post_it_left(sink):
    """Docs probe: ``register(Comment, affects=...)`` in a views module runs in a shell or a
    Celery worker only when the URLconf is imported, at the first change; a comment loaded
    before it and moved to another post woke only the new post, and the old one kept
    showing it."""
    from drf_grip.rest.relations import remember_keys
    from tests.drf_helpers import loaded_before_the_urlconf

    first, second = (Post.objects.create(title=t) for t in "ab")
    comment = Comment.objects.create(post=first, text="hi")
    sink.settle()
    comment = loaded_before_the_urlconf(
        Comment, comment.pk, "drf_grip.affects.testapp.comment", remember_keys
    )
    comment.post = second
    comment.save()
    assert {f"drf.testapp.post.{first.pk}", f"drf.testapp.post.{second.pk}"} <= set(
        sink.channels()
    )


def test_announced_comments_wake_their_posts(sink):
    """App probe: comments made by ``bulk_create()`` and announced with
    ``publish_changes(Comment, pks=...)`` left their posts' detail and list stale in every
    client, though ``register(Comment, affects=...)`` says a Comment wakes its Post."""
    first, second, third = (Post.objects.create(title=t) for t in "abc")
    sink.settle()
    made = Comment.objects.bulk_create(
        [Comment(post=first, text="a"), Comment(post=second, text="b")]
    )
    publish_changes(Comment, pks=[comment.pk for comment in made])
    channels = sink.channels()
    assert {f"drf.testapp.post.{first.pk}", f"drf.testapp.post.{second.pk}"} <= set(channels)
    assert f"drf.testapp.post.{third.pk}" not in channels
    Comment.objects.filter(post=third).update(text="none")  # no rows: nothing to follow
    comment = Comment.objects.create(post=third, text="c")
    sink.settle()
    Comment.objects.filter(pk=comment.pk).update(text="edited")
    publish_changes(comment)
    assert f"drf.testapp.post.{third.pk}" in sink.channels()
    with transaction.atomic():
        Comment.objects.bulk_create([Comment(post=third, text="d")])
        publish_changes(Comment, pks=[comment.pk])
        assert sink.settle() == []
    assert f"drf.testapp.post.{third.pk}" in sink.channels()


def test_comments_moved_by_update_and_announced_before_and_after_wake_both_posts(sink):
    """docs/concepts.rst: an announcement names where objects are after the change, so an
    ``update()`` that moves comments is announced before it too, in one transaction (a
    publishing probe saw the post they left stay stale when announced only after)."""
    first, second = (Post.objects.create(title=t) for t in "ab")
    moved = [Comment.objects.create(post=first, text=t).pk for t in "xy"]
    sink.settle()
    with transaction.atomic():
        publish_changes(Comment, pks=moved)
        Comment.objects.filter(pk__in=moved).update(post=second)
        publish_changes(Comment, pks=moved)
    assert {f"drf.testapp.post.{first.pk}", f"drf.testapp.post.{second.pk}"} <= set(
        sink.channels()
    )


def test_a_model_with_affects_announced_as_a_whole_says_its_objects_are_not_followed(
    sink, caplog
):
    """App probe: ``paused(Comment)`` around ``bulk_create()`` and ``publish_changes(Comment)``
    woke the comment views only; the posts' clients stayed stale without a word."""
    post = Post.objects.create(title="p")
    sink.settle()
    from drf_grip.rest import changes

    changes._warned_unfollowed.clear()
    with caplog.at_level("WARNING", logger="drf_grip.publish"):
        with paused(Comment):
            Comment.objects.bulk_create([Comment(post=post, text="a")])
        with paused(Comment, Post):  # names what a Comment affects
            Comment.objects.bulk_create([Comment(post=post, text="b")])
        for _ in range(2):  # once per process
            publish_changes(Comment)
        publish_changes(Post)
    warned = [r.getMessage() for r in caplog.records if "affects" in r.getMessage()]
    assert len(warned) == 2
    assert warned[0].startswith("drf-grip: paused(Comment)")
    assert warned[1].startswith("drf-grip: publish_changes(Comment)")


def test_m2m_change_publishes(sink):
    post = Post.objects.create(title="p")
    tag = Tag.objects.create(name="x")
    sink.settle()
    post.tags.add(tag)
    assert f"drf.testapp.post.{post.pk}" in sink.channels()


def test_update_needs_explicit_call(sink):
    Todo.objects.create(title="a")
    sink.settle()
    Todo.objects.update(done=True)
    assert sink.settle() == []
    publish_changes(Todo)
    assert set(sink.channels()) >= {"drf.testapp.todo", "drf.testapp.todo.*"}


def test_paused_publishes_once_at_the_end(sink):
    with paused(Todo):
        for i in range(10):
            Todo.objects.create(title=f"bulk{i}")
        Todo.objects.bulk_create([Todo(title="x"), Todo(title="y")])
        assert sink.settle() == []
    channels = sink.channels()
    assert channels.count("drf.testapp.todo") == 1 and "drf.testapp.todo.*" in channels


def test_a_paused_block_that_raises_still_publishes_what_it_committed(sink):
    """An import that fails halfway has committed rows (autocommit): watchers must hear of
    them (DESIGN.md §2: never drop changes silently)."""
    with pytest.raises(ValueError):
        with paused():
            todo = Todo.objects.create(title="committed")
            raise ValueError
    channels = sink.channels()
    assert channels.count("drf.testapp.todo") == 1
    assert f"drf.testapp.todo.{todo.pk}" in channels


def test_a_paused_block_publishes_nothing_that_rolled_back(sink):
    with paused():
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                Todo.objects.create(title="never")
                raise RuntimeError
    assert sink.settle() == []
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            with paused(Todo):
                Todo.objects.create(title="never either")
            raise RuntimeError
    assert sink.settle() == []
    with transaction.atomic():
        with paused():
            todo = Todo.objects.create(title="kept")
        assert sink.settle() == []  # not before its commit
    channels = sink.channels()
    assert channels.count("drf.testapp.todo") == 1
    assert f"drf.testapp.todo.{todo.pk}" in channels


def test_a_delete_rolled_back_to_a_savepoint_neither_ends_streams_nor_publishes(sink):
    """ORM probe: the batch of the transaction kept what a rolled-back savepoint recorded,
    so a delete undone by its savepoint sent ``event: delete`` and closed the object's
    streams, while a GET still answered 200."""
    todo, other = Todo.objects.create(title="a"), Todo.objects.create(title="b")
    sink.settle()
    with transaction.atomic():
        other.title = "kept"
        other.save()
        with pytest.raises(RuntimeError), transaction.atomic():
            Todo.objects.get(pk=todo.pk).delete()
            Todo.objects.create(title="rolled back")
            raise RuntimeError
        with transaction.atomic():  # a savepoint released: its change is kept
            with pytest.raises(RuntimeError), transaction.atomic():
                Todo.objects.filter(pk=other.pk).delete()
                raise RuntimeError
            Todo.objects.get(pk=other.pk).save()
    assert Todo.objects.filter(pk=todo.pk).exists()
    channels = sink.channels()
    assert f"drf.testapp.todo.{todo.pk}" not in channels
    assert channels.count(f"drf.testapp.todo.{other.pk}") == 1  # a hint, once
    assert channels.count("drf.testapp.todo") == 1


def test_an_object_deleted_and_created_again_in_one_transaction_is_not_deleted(sink):
    """The final state is published: the same key exists at the commit."""
    pk = Todo.objects.create(title="a").pk
    sink.settle()
    with transaction.atomic():
        Todo.objects.get(pk=pk).delete()
        Todo.objects.create(pk=pk, title="again")
    items = [i for i in sink.settle() if i["channel"] == f"drf.testapp.todo.{pk}"]
    assert [i["formats"] for i in items] == [{"http-response": {"action": "hint"},
                                              "http-stream": {"action": "hint"}}]


def test_loaddata_publishes_what_it_loaded(sink, tmp_path):
    """ORM probe: raw saves were skipped ("no live views yet"), but fixtures are loaded
    into live sites too, and their clients saw nothing."""
    from django.core.management import call_command

    fixture = tmp_path / "todos.json"
    fixture.write_text('[{"model": "testapp.todo", "pk": 4242, "fields": {"title": "fx"}}]')
    call_command("loaddata", str(fixture), verbosity=0)
    assert {"drf.testapp.todo", "drf.testapp.todo.4242"} <= set(sink.channels())


@pytest.fixture
def immediate_transactions(monkeypatch):
    """SQLite transactions as Django 5.1's ``"transaction_mode": "IMMEDIATE"`` names them:
    a delete then reads what it unlinks (relations.unlinked_by_delete). No other connection
    writes in these tests."""
    from drf_grip.rest import relations

    monkeypatch.setattr(relations, "_may_read_before_writing", lambda using: True)


def test_a_delete_waits_for_another_writer_on_sqlite(sink):
    """The soak: a writer process's ``todo.delete()`` failed with "database is locked" while
    another process wrote. The reads of what a delete unlinks ran inside Django's delete
    transaction before its first write, and SQLite refuses such a deferred transaction at
    once instead of waiting for the lock. With another connection holding the write lock
    for a moment, the delete now waits and succeeds, and the bookmark's holds still wake."""
    import sqlite3
    import threading

    from django.db import connection

    watch("/api/bookmarks/")
    todo = Todo.objects.create(title="a")
    bookmark = Bookmark.objects.create(todo=todo)
    sink.settle()
    writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None,
                             check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    done = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    done.start()
    try:
        todo.delete()
    finally:
        done.join()
        writer.close()
    channels = sink.channels()
    assert {f"drf.testapp.bookmark.{bookmark.pk}", "drf.testapp.bookmark.*"} & set(channels)


def test_deleting_a_tag_wakes_the_posts_it_was_on(sink, immediate_transactions):
    """ORM probe: Django deletes rows of an automatic many-to-many table without any
    signal, so the posts a deleted tag was on kept showing it."""
    post, lone = Post.objects.create(title="p"), Post.objects.create(title="q")
    tag = Tag.objects.create(name="x")
    post.tags.add(tag)
    sink.settle()
    tag.delete()
    channels = sink.channels()
    assert f"drf.testapp.post.{post.pk}" in channels
    assert f"drf.testapp.post.{lone.pk}" not in channels


def test_a_delete_that_sets_foreign_keys_to_null_wakes_their_objects(sink, immediate_transactions):
    """ORM probe: ``on_delete=SET_NULL`` is an UPDATE without signals: a held bookmark kept
    showing the deleted todo."""
    watch("/api/bookmarks/")
    todo = Todo.objects.create(title="a")
    bookmark, other = Bookmark.objects.create(todo=todo), Bookmark.objects.create()
    sink.settle()
    todo.delete()
    channels = sink.channels()
    assert f"drf.testapp.bookmark.{bookmark.pk}" in channels
    assert f"drf.testapp.bookmark.{other.pk}" not in channels


def test_deleting_a_queryset_reads_what_it_unlinks_in_one_query_per_relation(sink, immediate_transactions):
    """The posts of 50 tags deleted together, and the bookmarks of 50 todos, are read
    once per relation, not once per object (Django sends every pre_delete first)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    watch("/api/bookmarks/")
    posts = [Post.objects.create(title=t) for t in "pq"]
    tags = Tag.objects.bulk_create([Tag(name=f"t{i}") for i in range(50)])
    posts[0].tags.add(*tags)
    posts[1].tags.add(tags[-1])
    todos = Todo.objects.bulk_create([Todo(title=f"t{i}") for i in range(50)])
    bookmark = Bookmark.objects.create(todo=todos[-1])
    sink.settle()
    with CaptureQueriesContext(connection) as tag_queries:
        Tag.objects.filter(name__startswith="t").delete()
    with CaptureQueriesContext(connection) as todo_queries:
        Todo.objects.filter(title__startswith="t").delete()
    assert len(tag_queries) < 20 and len(todo_queries) < 20
    channels = sink.channels()
    assert {f"drf.testapp.post.{p.pk}" for p in posts} <= set(channels)
    assert f"drf.testapp.bookmark.{bookmark.pk}" in channels


def test_a_custom_through_row_wakes_both_sides(sink):
    """A ``Membership`` created or deleted directly (no ``m2m_changed``) changes its team,
    also when it goes with a deleted member."""
    watch("/api/teams/")
    team, member = Team.objects.create(name="t"), Member.objects.create(name="m")
    sink.settle()
    Membership.objects.create(team=team, member=member)
    assert f"drf.testapp.team.{team.pk}" in sink.channels()
    member.delete()
    assert f"drf.testapp.team.{team.pk}" in sink.channels()


def test_a_save_through_a_child_or_a_proxy_wakes_the_views_of_its_table(sink):
    """ORM probe: signals name the class that saved: a ``Restaurant`` (multi-table child
    of ``Place``) or an ``OpenTodo`` (a proxy of ``Todo``) woke no view of their tables."""
    watch("/api/places/")
    sink.settle()
    restaurant = Restaurant.objects.create(name="r")
    assert f"drf.testapp.place.{restaurant.pk}" in sink.channels()
    todo = OpenTodo.objects.create(title="through a proxy")
    assert {"drf.testapp.todo", f"drf.testapp.todo.{todo.pk}"} <= set(sink.channels())
    Place.objects.get(pk=restaurant.pk).delete()
    assert f"drf.testapp.place.{restaurant.pk}" in sink.channels()
    OpenTodo.objects.get(pk=todo.pk).delete()  # gone for Todo's streams too
    items = [i for i in sink.settle() if i["channel"] == f"drf.testapp.todo.{todo.pk}"]
    assert "event: delete" in items[0]["formats"]["http-stream"]["content"]
    assert items[-1]["formats"] == {"http-stream": {"action": "close"}}


@pytest.fixture
def shared_cache_sink(settings, tmp_path):
    """A sink with a cache every process shares: the publisher follows only what
    subscriptions recorded (a per-process cache falls back on the views' classes)."""
    from django.core.cache import cache

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    cache.clear()
    watch("/api/posts/")  # a record of some subscription, as in any live deployment
    with RecordingSink() as recording:
        recording.settle()
        yield recording


def test_a_private_view_made_by_a_factory_still_wakes_its_clients(shared_cache_sink):
    """Model-change probe: a viewset made by a function cannot be imported by the
    ``module:qualname`` its subscriptions record, and with Redis a change sent its private
    clients no hint at all (a long-poll got its 304 at the timeout), with nothing logged."""
    watch("/api/factory-bookmarks/")
    bookmark = Bookmark.objects.create(label="made")
    channels = set(shared_cache_sink.channels())
    assert {"drf.testapp.bookmark", f"drf.testapp.bookmark.{bookmark.pk}"} <= channels


def test_a_recorded_view_no_process_can_find_gets_the_default_hints_and_a_warning(
    shared_cache_sink, caplog
):
    from drf_grip.rest.policies import record_view

    record_view("testapp.bookmark", "gone.module:Vanished", "private")
    bookmark = Bookmark.objects.create(label="orphan")
    channels = set(shared_cache_sink.channels())
    assert {"drf.testapp.bookmark", f"drf.testapp.bookmark.{bookmark.pk}"} <= channels
    warned = [r.getMessage() for r in caplog.records if r.name == "drf_grip.publish"]
    assert any("gone.module:Vanished" in message for message in warned), warned


def test_a_parent_row_saved_or_announced_wakes_the_views_of_its_children(sink):
    """Model-change probe: a ``Place`` renamed left the views of its ``Restaurant`` stale
    (a child shows its parent's fields), whether saved or announced after an ``update()``."""
    watch("/api/restaurants/")
    restaurant = Restaurant.objects.create(name="r")
    sink.settle()
    place = Place.objects.get(pk=restaurant.pk)
    place.name = "renamed"
    place.save()
    assert f"drf.testapp.restaurant.{restaurant.pk}" in sink.channels()
    Place.objects.filter(pk=restaurant.pk).update(name="updated")
    publish_changes(Place, [restaurant.pk])
    assert f"drf.testapp.restaurant.{restaurant.pk}" in sink.channels()
    with paused(Place):
        Place.objects.update(name="imported")
    assert "drf.testapp.restaurant.*" in sink.channels()


def test_objects_announced_through_one_class_of_their_table_wake_the_others(sink):
    """Model-change probe: ``publish_changes(PostProxy, pks=...)`` after an ``update()``
    woke no view of ``Post``, and announcements of ``Post`` none of its proxy's, where a
    save wakes both."""
    todo = Todo.objects.create(title="a")
    sink.settle()
    OpenTodo.objects.filter(pk=todo.pk).update(title="b")
    publish_changes(OpenTodo, [todo.pk])
    assert {"drf.testapp.todo", f"drf.testapp.todo.{todo.pk}"} <= set(sink.channels())
    with paused(OpenTodo):
        OpenTodo.objects.update(title="c")
    assert "drf.testapp.todo.*" in sink.channels()


def test_a_deleted_parent_ends_its_childs_streams_once_deleted_by_its_own_signal(sink):
    """The child's row goes with its parent's (a cascade, with a signal of its own): a
    parent's delete that also counted the child as changed would undo its ``event: delete``."""
    watch("/api/restaurants/")
    restaurant = Restaurant.objects.create(name="r")
    sink.settle()
    Place.objects.get(pk=restaurant.pk).delete()
    items = [
        i for i in sink.settle() if i["channel"] == f"drf.testapp.restaurant.{restaurant.pk}"
    ]
    assert "event: delete" in items[0]["formats"]["http-stream"]["content"]
    assert items[-1]["formats"] == {"http-stream": {"action": "close"}}


class TodosOnOther:
    """A router that writes and reads todos on the ``other`` database."""

    def db_for_read(self, model, **hints):
        return "other" if model is Todo else None

    db_for_write = db_for_read


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_paused_block_in_a_transaction_of_another_database_publishes_at_its_commit(sink):
    """ORM probe: ``paused()`` looked only at the default database's transaction, so inside
    ``atomic(using="other")`` it published at once, before the changes that wait for that
    commit had joined it: the todo created there was never published."""
    with transaction.atomic(using="other"):
        with paused():
            todo = Todo.objects.using("other").create(title="elsewhere")
        assert sink.settle() == []  # not before its commit
    assert f"drf.testapp.todo.{todo.pk}" in sink.channels()


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_announcements_wait_for_the_database_the_router_writes_to(sink, settings):
    """ORM probe: ``publish_changes()`` and ``paused(Model)`` without ``using`` went out on
    the default database's terms, before the commit on the model's own database: a client
    woken then read the old row, and nothing woke it again."""
    settings.DATABASE_ROUTERS = [f"{__name__}.TodosOnOther"]
    todo = Todo.objects.create(title="a")
    sink.settle()
    with transaction.atomic(using="other"):
        Todo.objects.filter(pk=todo.pk).update(title="b")
        publish_changes(Todo, pks=[todo.pk])
        assert sink.settle() == []  # not before its commit
    assert f"drf.testapp.todo.{todo.pk}" in sink.channels()
    with transaction.atomic(using="other"):
        with paused(Todo):
            Todo.objects.all().update(done=True)
        assert sink.settle() == []
    assert "drf.testapp.todo.*" in sink.channels()


@pytest.mark.parametrize("path", ["/api/todos/0{pk}/", "/api/shared-todos/+{pk}/"])
def test_a_detail_url_holds_where_a_change_of_its_object_is_published(sink, path):
    """ORM probe: ``/api/todos/01/`` finds todo 1, but held on ``drf.testapp.todo.01`` (and
    a shared one was indexed under "+1"), while its changes go to ``drf.testapp.todo.1``:
    the client waited out its hold."""
    from tests.drf_helpers import ProxiedClient

    todo = Todo.objects.create(title="a")
    url = path.format(pk=todo.pk)
    etag = ProxiedClient().get(url)["ETag"]
    held = ProxiedClient().get(url, HTTP_IF_NONE_MATCH=etag)
    subscribed = {part.split(";")[0].strip() for part in held["Grip-Channel"].split(",")}
    sink.settle()
    todo.title = "b"
    todo.save()
    woken = {i["channel"] for i in sink.settle() if "drf.testapp.todo.*" not in i["channel"]}
    assert subscribed & woken


def test_shared_change_renders_once_per_live_url_whatever_the_subscribers(sink, settings):
    from tests.drf_helpers import ProxiedClient

    Todo.objects.create(title="a")
    etag = APIClient().get("/api/shared-todos/")["ETag"]
    for n in range(5):  # five subscribers, one of them with a cache-buster
        url = "/api/shared-todos/" + (f"?_={n}" if n else "")
        assert ProxiedClient().get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    sink.settle()
    before = render_stats["renders"]
    Todo.objects.create(title="b")
    items = sink.settle()
    assert render_stats["renders"] - before == 1
    pushed = [i for i in items if i["channel"].startswith("drf.url.")]
    assert len(pushed) == 1
    response = pushed[0]["formats"]["http-response"]
    assert response["code"] == 200 and '"title":"b"' in response["body"]
    assert response["headers"]["ETag"] == APIClient().get("/api/shared-todos/")["ETag"]


def test_shared_unchanged_page_is_not_pushed(sink):
    from tests.drf_helpers import ProxiedClient

    for i in range(4):
        Todo.objects.create(title=f"t{i}")
    etag = APIClient().get("/api/shared-todos/?page=2")["ETag"]
    ProxiedClient().get("/api/shared-todos/?page=2", HTTP_IF_NONE_MATCH=etag)
    sink.settle()
    first = Todo.objects.order_by("-id").first()
    first.title = "only on page 1"
    first.save()
    assert not [i for i in sink.settle() if i["channel"].startswith("drf.url.")]


def test_shared_representation_returning_to_an_earlier_state_gets_a_new_id(sink):
    """Pushpin drops an item whose (channel, id) it saw in the last 60 s: a page that goes
    A -> B -> A -> B must not reuse B's id."""
    from tests.drf_helpers import ProxiedClient

    todo = Todo.objects.create(title="a")
    etag = APIClient().get("/api/shared-todos/")["ETag"]
    ProxiedClient().get("/api/shared-todos/", HTTP_IF_NONE_MATCH=etag)
    sink.settle()
    ids = []
    for done in (True, False, True):
        todo.done = done
        todo.save()
        ids += [i["id"] for i in sink.settle() if i["channel"].startswith("drf.url.")]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_shared_push_not_skipped_when_a_hold_already_saw_the_change(sink):
    """A re-requested hold may compute the new representation before the publisher renders
    it; the others still hold the old one and must get the push."""
    from tests.drf_helpers import ProxiedClient

    Todo.objects.create(title="a")
    old = APIClient().get("/api/shared-todos/")["ETag"]
    ProxiedClient().get("/api/shared-todos/", HTTP_IF_NONE_MATCH=old)
    sink.settle()
    with paused():
        Todo.objects.create(title="b")
        new = APIClient().get("/api/shared-todos/")["ETag"]
        assert ProxiedClient().get("/api/shared-todos/", HTTP_IF_NONE_MATCH=new).status_code == 304
    pushed = [i for i in sink.settle() if i["channel"].startswith("drf.url.")]
    assert [i["formats"]["http-response"]["headers"]["ETag"] for i in pushed] == [new]


def test_holds_name_the_last_id_a_proxy_confirmed(sink):
    """A channel's counter moves before its item reaches the proxy: a hold made meanwhile
    names the id the proxy has seen (a hold naming an id it has not seen is a conflict that
    Pushpin resolves slowly)."""
    from drf_grip.rest.versions import acknowledge, hold_versions, next_version

    channel = "drf.testapp.todo"
    confirmed = hold_versions([channel])[channel]
    previous, new = next_version(channel)  # published, not yet confirmed
    assert previous == confirmed and hold_versions([channel])[channel] == confirmed
    acknowledge([{"channel": channel, "id": new}])
    assert hold_versions([channel])[channel] == new
    acknowledge([{"channel": channel, "id": previous}])  # a late confirmation never moves back
    assert hold_versions([channel])[channel] == new
    # The publisher confirms what a destination took: a change's ids become the holds' ids.
    Todo.objects.create(title="x")
    items = {i["channel"]: i for i in sink.settle()}
    assert hold_versions([channel])[channel] == items[channel]["id"]


def test_holds_name_the_confirmed_id_again_after_the_counter_restarts_below_it(monkeypatch):
    """A channel's counter expires (24 h after it started, however busy; with the file
    cache's ``incr``, 300 s after the last publish) and restarts at random: below the id
    the proxy last confirmed, that id outranked every later confirmation (never moved
    back), and for a day holds named the unconfirmed counter, the prev-id conflict that
    Pushpin resolves slowly, instead of the id the proxy had."""
    from django.core.cache import cache

    from drf_grip.rest import versions

    channel = "drf.testapp.todo.pk=restarts"
    monkeypatch.setattr(versions.secrets, "randbits", lambda bits: 1_000_000)
    _, new = versions.next_version(channel)
    versions.acknowledge([{"channel": channel, "id": new}])
    cache.delete("drf_grip:version:" + channel)  # the counter expires
    monkeypatch.setattr(versions.secrets, "randbits", lambda bits: 1_000)
    _, restarted = versions.next_version(channel)  # a quiet spell's first publish
    versions.acknowledge([{"channel": channel, "id": restarted}])
    assert versions.hold_versions([channel])[channel] == restarted
    previous, unconfirmed = versions.next_version(channel)  # published, not yet confirmed
    assert versions.hold_versions([channel])[channel] == previous == restarted
    versions.acknowledge([{"channel": channel, "id": unconfirmed}])
    assert versions.hold_versions([channel])[channel] == unconfirmed


def test_the_first_publish_of_a_channel_starts_its_counter_in_one_write(monkeypatch):
    """A burst of creates names many object channels nobody held: each first publish made
    four cache calls (the failed ``incr``, two ``add`` and the ``incr`` again), on a busy
    machine milliseconds each (the large soak's publisher). Now the failed ``incr`` and one
    ``add``; its item has no prev-id, and a hold made after it names its id."""
    from drf_grip.rest import versions

    calls = []
    real = versions.state_cache

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real(), name)

    monkeypatch.setattr(versions, "state_cache", Counting)
    channel = "drf.testapp.todo.pk=fresh"
    previous, new = versions.next_version(channel)
    assert previous is None and calls == ["incr", "add"]
    monkeypatch.setattr(versions, "state_cache", real)
    assert versions.hold_versions([channel])[channel] == new
    assert versions.next_version(channel) == (new, str(int(new) + 1))


def test_a_shared_channel_confirmed_late_keeps_the_newer_confirmed_version():
    """Two processes publish consecutive renders of one live URL and the proxy confirms the
    newer one first. The older one's confirmation must not move the id holds name back: a
    hold naming it conflicts with the proxy's last id, and Pushpin then forgets that id and
    lets the next item through unordered (seen in the soak: the last id went backwards)."""
    from drf_grip.rest.versions import acknowledge, set_version, shared_hold_versions

    channel = "drf.url.late-confirmed"
    set_version(channel, "older.1")
    set_version(channel, "newer.2")  # another process's later render, published after it
    acknowledge([{"channel": channel, "id": "newer.2"}])
    acknowledge([{"channel": channel, "id": "older.1"}])  # the older one, confirmed late
    assert shared_hold_versions([channel])[channel] == "newer.2"


def test_a_deleted_object_renders_its_404_for_subscribers_without_logging_it(sink, caplog):
    """Publishing probe: every worker that published a delete printed Django's ``Not
    Found: /api/shared-todos/9/`` for each live URL of the object, a 404 that is no client's
    request but the render that tells its subscribers it is gone. The subscribers still
    get it; the log stays for requests that clients made."""
    import logging

    todo = Todo.objects.create(title="gone soon")
    url = f"/api/shared-todos/{todo.pk}/"
    watch(url)
    sink.settle()
    with caplog.at_level(logging.WARNING, logger="django.request"):
        todo.delete()
        items = sink.settle()
        assert APIClient().get(url).status_code == 404  # a client's: logged
    assert any(
        "event: delete" in item["formats"].get("http-stream", {}).get("content", "")
        for item in items
    ), items
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert logged == [f"Not Found: {url}"], logged


@pytest.fixture
def tags_affect_their_posts(monkeypatch):
    """``register(Tag, affects=lambda tag: tag.post_set.all())``, for one test."""
    from drf_grip.rest import registry

    monkeypatch.setitem(registry._related, Tag, [lambda tag: tag.post_set.all()])


@pytest.mark.parametrize("how", ["remove", "clear", "set"])
def test_the_other_side_of_an_m2m_change_wakes_what_it_affects(
    sink, tags_affect_their_posts, how
):
    """``bob.projects.remove(p1)`` woke nothing ``register(Project, affects=...)`` names,
    where ``p1.members.remove(bob)`` did (visibility probe): the side a change is made from
    was followed, the other side's objects only recorded."""
    post, other = Post.objects.create(title="p"), Post.objects.create(title="q")
    tag = Tag.objects.create(name="x")
    post.tags.add(tag)
    other.tags.add(tag)
    sink.settle()
    {"remove": lambda: post.tags.remove(tag), "clear": post.tags.clear,
     "set": lambda: post.tags.set([])}[how]()
    assert f"drf.testapp.post.{other.pk}" in sink.channels()


@pytest.mark.parametrize("how", ["create", "delete", "queryset delete"])
def test_a_row_of_a_custom_through_model_wakes_what_its_sides_affect(
    sink, monkeypatch, how
):
    """README: "a row of a custom through model saved or deleted wakes both sides"; what
    the sides ``affects`` stayed stale (visibility probe: a membership deleted, the
    member's list of the team's notes unchanged)."""
    from drf_grip.rest import registry

    post = Post.objects.create(title="p")
    monkeypatch.setitem(registry._related, Team, [lambda team: [post]])
    team, member = Team.objects.create(name="t"), Member.objects.create(name="m")
    if how != "create":
        Membership.objects.create(team=team, member=member)
    sink.settle()
    if how == "create":
        Membership.objects.create(team=team, member=member)
    elif how == "delete":
        Membership.objects.get(team=team, member=member).delete()
    else:
        Membership.objects.filter(team=team).delete()
    assert f"drf.testapp.post.{post.pk}" in sink.channels()


def test_a_change_naming_no_object_does_not_wake_an_unchanged_shared_detail_hold(sink):
    """Publishing probe: a shared detail hold also held on the bulk channel that private
    views' holds are hinted on by a change naming no object (``publish_changes(Todo)``), so
    each such change re-requested it, and the proxy held it again with the whole timeout:
    ``Prefer: wait=5`` got no answer in 40 s under one every 1.5 s. The shared publisher
    renders the URL itself and, unchanged, sends nothing."""
    from tests.drf_helpers import ProxiedClient

    todo = Todo.objects.create(title="a")
    url = f"/api/shared-todos/{todo.pk}/"
    etag = ProxiedClient().get(url)["ETag"]
    held = ProxiedClient().get(url, HTTP_IF_NONE_MATCH=etag)
    assert held.status_code == 304
    subscribed = {part.split(";")[0].strip() for part in held["Grip-Channel"].split(",")}
    sink.settle()

    publish_changes(Todo)

    published = sink.channels()
    assert "drf.testapp.todo" in published  # the private list's holds are hinted
    assert subscribed.isdisjoint(published)


def test_the_hint_after_a_counter_a_subscriber_started_follows_a_sequence_reset(sink):
    """Redis restarted while a Pushpin still knew the last id of an object's channel. A
    subscriber's read after the loss started the channel's counter afresh, at a value no
    item carries; the next change's hint went chained onto it, an id no proxy had. A proxy
    knowing the older id held the hint 5 s in its sequencer, and its long-polls still
    held at that id got the change 5 s late (convergence harness, Redis restarted under
    two Pushpins: detail long-polls 2.5 to 6 s after the last commit). An item no client
    receives, with no id, goes just before it: each proxy forgets the older id."""
    from django.core.cache import cache

    from drf_grip.grip.items import reaches_clients
    from drf_grip.rest.versions import read_version
    from tests.drf_helpers import ProxiedClient

    todo = Todo.objects.create(title="a")
    url, channel = f"/api/todos/{todo.pk}/", f"drf.testapp.todo.{todo.pk}"
    sink.settle()
    cache.clear()  # the proxies still know the channel's last id
    # A read after the loss, answered at once (its ETag stale): it holds nothing.
    assert ProxiedClient().get(url, HTTP_IF_NONE_MATCH='"stale"').status_code == 200
    started = read_version(channel)
    assert started is not None
    done = len(sink.everything)
    todo.title = "b"
    todo.save()
    sink.settle()
    mine = [i for i in sink.everything[done:] if i["channel"] == channel]
    assert len(mine) == 2, mine
    reset, hint = mine
    assert "id" not in reset and "prev-id" not in reset and not reaches_clients(reset), reset
    assert hint["prev-id"] == started and hint["formats"]["http-response"] == {"action": "hint"}
    done = len(sink.everything)
    todo.title = "c"
    todo.save()
    sink.settle()
    [later] = [i for i in sink.everything[done:] if i["channel"] == channel]
    assert later["prev-id"] == hint["id"]  # the proxies saw that one: no reset
