"""Partitions (DESIGN.md §3): a change wakes only its partition's holds."""

from __future__ import annotations

import contextlib

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import path
from rest_framework import generics, permissions, serializers
from rest_framework.authtoken.models import Token

from drf_grip import ListRealtimeMixin
from drf_grip.rest import channels as names
from tests.drf_helpers import ProxiedClient, RecordingSink
from tests.testapp.models import Bookmark, Note, Project, Task, Todo


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["id", "title"]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink():
    cache.clear()
    with RecordingSink() as recording:
        recording.settle()
        yield recording


def hints(items):
    return [i["channel"] for i in items if i["formats"].get("http-response") == {"action": "hint"}]


def test_a_change_hints_only_its_owners_partition(sink):
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"u{i}") for i in range(1000)]
    )
    tokens = Token.objects.bulk_create([Token(user=u, key=f"{u.pk:040d}") for u in users])
    client = ProxiedClient()
    for token in tokens:
        response = client.get(
            "/api/pnotes/", HTTP_IF_NONE_MATCH='"x"', HTTP_AUTHORIZATION=f"Token {token.key}"
        )
        assert response.status_code == 200
    sink.settle()
    owner = users[123]
    Note.objects.create(owner=owner, text="mine")
    channels = hints(sink.settle())
    assert names.partition_channel(Note, str(owner.pk)) in channels
    assert not [
        c for c in channels if ".p." in c and c != names.partition_channel(Note, str(owner.pk))
    ]


def test_a_hold_subscribes_to_its_partition_and_the_bulk_channel():
    user = get_user_model().objects.create_user("alice")
    token = Token.objects.create(user=user)
    response = ProxiedClient().get(
        "/api/pnotes/", HTTP_IF_NONE_MATCH=None or '"x"', HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    etag = response["ETag"]
    held = ProxiedClient().get(
        "/api/pnotes/", HTTP_IF_NONE_MATCH=etag, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    channels = held["Grip-Channel"]
    assert names.partition_channel(Note, str(user.pk)) in channels
    assert names.bulk_channel(Note) in channels
    assert f"{names.list_channel(Note)};" not in channels + ";"


def test_moving_an_object_to_another_partition_wakes_both(sink):
    alice = get_user_model().objects.create_user("alice")
    bob = get_user_model().objects.create_user("bob")
    for user in (alice, bob):
        token = Token.objects.create(user=user)
        ProxiedClient().get(
            "/api/pnotes/", HTTP_IF_NONE_MATCH='"x"', HTTP_AUTHORIZATION=f"Token {token.key}"
        )
    note = Note.objects.create(owner=alice, text="hand over")
    sink.settle()
    note = Note.objects.get(pk=note.pk)  # loaded: remembers its partition
    note.owner = bob
    note.save()
    channels = hints(sink.settle())
    assert names.partition_channel(Note, str(alice.pk)) in channels
    assert names.partition_channel(Note, str(bob.pk)) in channels


def test_an_object_moved_again_wakes_the_partition_it_left(sink):
    """A created object, or one saved before, is in the partitions of its last save: moved
    (a task that creates a note and hands it over, a second reassignment), the list it
    left wakes. It remembered only what it was loaded with: alice kept bob's note."""
    alice, bob, carol = (get_user_model().objects.create_user(n) for n in ("a", "b", "c"))
    note = Note.objects.create(owner=alice, text="hand over")
    sink.settle()
    for previous, owner in ((alice, bob), (bob, carol)):
        note.owner = owner
        note.save()
        channels = hints(sink.settle())
        assert names.partition_channel(Note, str(previous.pk)) in channels
        assert names.partition_channel(Note, str(owner.pk)) in channels


@contextlib.contextmanager
def _urlconf_imported_at_the_first_change(monkeypatch, model):
    """As in a shell or a Celery worker: ``model``'s views register only when drf-grip
    imports the URLconf, at the process's first change (``registry.ensure_loaded``)."""
    from drf_grip.rest import registry

    views = registry._views.pop(model)

    class Resolver:
        @property
        def url_patterns(self):
            registry._views[model] = views  # the views module's classes, defined now
            return []

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr("django.urls.get_resolver", lambda: Resolver())
    try:
        yield
    finally:
        registry._views.setdefault(model, views)
        monkeypatch.undo()


def test_an_object_loaded_before_the_views_were_imported_wakes_the_partition_it_left(
    sink, monkeypatch
):
    """Docs probe: in ``manage.py shell`` (or Celery) the URLconf, and with it the views that
    partition notes, is imported at the first change, after the note was loaded: handed
    from alice to bob there, only bob's list woke and alice's kept showing it. Then every
    partition woke, each fresh process's first change re-requesting every held client of
    the model (multi-process probe). Where it was is read from its row: alice's and bob's
    lists wake, and nobody else's."""
    from drf_grip.rest.registry import remember_partitions
    from tests.drf_helpers import loaded_before_the_urlconf

    alice, bob = (get_user_model().objects.create_user(n) for n in ("alice", "bob"))
    note = Note.objects.create(owner=alice, text="hand over")
    sink.settle()
    note = loaded_before_the_urlconf(
        Note, note.pk, "drf_grip.partitions.testapp.note", remember_partitions
    )
    note.owner = bob
    with _urlconf_imported_at_the_first_change(monkeypatch, Note):
        note.save()
    woken = hints(sink.settle())
    assert names.partition_channel(Note, str(alice.pk)) in woken
    assert names.partition_channel(Note, str(bob.pk)) in woken
    assert names.bulk_channel(Note) not in woken


def test_an_object_loaded_before_the_views_were_imported_wakes_its_partition_as_it_goes(
    sink, monkeypatch
):
    """The same for a delete (``note.delete()``, or a queryset's, which loads its rows
    first): its own partition wakes, not every one; no query is spent on it."""
    from drf_grip.rest.registry import remember_partitions
    from tests.drf_helpers import loaded_before_the_urlconf

    alice = get_user_model().objects.create_user("alice")
    note = Note.objects.create(owner=alice, text="gone soon")
    sink.settle()
    note = loaded_before_the_urlconf(
        Note, note.pk, "drf_grip.partitions.testapp.note", remember_partitions
    )
    with _urlconf_imported_at_the_first_change(monkeypatch, Note):
        with CaptureQueriesContext(connection) as queries:
            note.delete()
    assert not [q for q in queries if q["sql"].startswith("SELECT")]
    woken = hints(sink.settle())
    assert names.partition_channel(Note, str(alice.pk)) in woken
    assert names.bulk_channel(Note) not in woken


def test_a_change_without_instances_wakes_every_partition(sink):
    from drf_grip import publish_changes

    user = get_user_model().objects.create_user("alice")
    token = Token.objects.create(user=user)
    ProxiedClient().get(
        "/api/pnotes/", HTTP_IF_NONE_MATCH='"x"', HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    publish_changes(Note)
    assert names.bulk_channel(Note) in hints(sink.settle())


def test_a_change_of_named_objects_in_unknown_partitions_wakes_every_partition(sink):
    """ORM probe: ``publish_changes(Note, pks=[...])`` after ``update()`` (or a fixture, or
    the other side of a many-to-many) knows no partitions and hinted only the list channel,
    which no partitioned list holds on: the owner's held list never woke."""
    from drf_grip import publish_changes

    user = get_user_model().objects.create_user("alice")
    token = Token.objects.create(user=user)
    note = Note.objects.create(owner=user, text="a")
    sink.settle()
    etag = ProxiedClient().get(
        "/api/pnotes/", HTTP_IF_NONE_MATCH='"x"', HTTP_AUTHORIZATION=f"Token {token.key}"
    )["ETag"]
    held = ProxiedClient().get(
        "/api/pnotes/", HTTP_IF_NONE_MATCH=etag, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    subscribed = {part.split(";")[0].strip() for part in held["Grip-Channel"].split(",")}
    Note.objects.filter(pk=note.pk).update(text="b")
    publish_changes(Note, pks=[note.pk])
    assert subscribed & set(hints(sink.settle()))


#: This module's URLconf, for the test that serves a view of its own.
urlpatterns: list = []


@pytest.fixture
def board_view(settings):
    """The README's board, as a partition taken from the URL, served for one test (and
    forgotten after it: a realtime view class registers its model for every test)."""
    from drf_grip.rest import registry

    before = {model: list(views) for model, views in registry._views.items()}

    class BoardTasks(ListRealtimeMixin, generics.ListAPIView):
        serializer_class = TaskSerializer
        permission_classes = [permissions.AllowAny]
        realtime_model = Task
        realtime_partition = "project"

        def get_queryset(self):
            return Task.objects.filter(project_id=self.kwargs["board"])

        def get_realtime_partition(self):
            return str(self.kwargs["board"])

    with _served_alone(settings, before, "boards/<int:board>/", BoardTasks):
        yield BoardTasks


@contextlib.contextmanager
def _served_alone(settings, before, route, view):
    """``view`` at ``route`` as this module's URLconf, until the realtime registry is put
    back as it was ``before`` the view's class registered its model."""
    from drf_grip.rest import registry

    urlpatterns[:] = [path(route, view.as_view())]
    settings.ROOT_URLCONF = __name__
    try:
        yield
    finally:
        urlpatterns.clear()
        registry._views.clear()
        registry._views.update(before)


def test_a_partition_from_the_url_wakes_its_board_when_a_card_moves_or_goes(sink, board_view):
    """ORM probe: the README's ``get_changed_channels()`` board reads the changed cards after
    the commit, so a deleted card (or the board a card left) woke nothing; a partition is
    read when the card changes, before and after, as the README now says."""
    owner = get_user_model().objects.create_user("alice")
    board, other = Project.objects.create(owner=owner), Project.objects.create(owner=owner)
    task = Task.objects.create(project=board, title="t")
    etag = ProxiedClient().get(f"/boards/{board.pk}/", HTTP_IF_NONE_MATCH='"x"')["ETag"]
    held = ProxiedClient().get(f"/boards/{board.pk}/", HTTP_IF_NONE_MATCH=etag)
    channel = names.partition_channel(Task, str(board.pk))
    assert held["Grip-Channel"].startswith(channel + ";")
    sink.settle()
    task.project = other
    task.save()
    assert channel in hints(sink.settle())
    task.project = board
    task.save()
    sink.settle()
    task.delete()
    assert channel in hints(sink.settle())


class BookmarkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Bookmark
        fields = ["id", "label"]


@pytest.fixture
def bookmarks_view(settings):
    """Bookmarks partitioned by ``todo`` the way notes are by ``owner``: a subscriber reads
    the rows whose ``todo`` is its user's key, so one not signed in reads those with none."""
    from drf_grip.rest import registry

    before = {model: list(views) for model, views in registry._views.items()}

    class Bookmarks(ListRealtimeMixin, generics.ListAPIView):
        serializer_class = BookmarkSerializer
        permission_classes = [permissions.AllowAny]
        realtime_partition = "todo"

        def get_queryset(self):
            return Bookmark.objects.filter(todo=self.request.user.pk)

    with _served_alone(settings, before, "bookmarks/", Bookmarks):
        yield Bookmarks


def test_rows_with_nothing_at_the_partition_path_wake_the_anonymous_partition(
    sink, bookmarks_view
):
    """An anonymous subscriber holds on the anonymous partition and reads the rows with no
    owner; such a row woke no partition, so its list missed every change of them, also
    when a row moved out of it (publishing probe)."""
    etag = ProxiedClient().get("/bookmarks/", HTTP_IF_NONE_MATCH='"x"')["ETag"]
    held = ProxiedClient().get("/bookmarks/", HTTP_IF_NONE_MATCH=etag)
    channel = names.partition_channel(Bookmark, "anonymous")
    assert held["Grip-Channel"].startswith(channel + ";")
    sink.settle()
    bookmark = Bookmark.objects.create(label="nobody's")
    assert channel in hints(sink.settle())
    bookmark.todo = Todo.objects.create(title="t")
    bookmark.save()
    assert channel in hints(sink.settle())  # it left the anonymous list
