"""Detail URLs looked up by a unique field (``lookup_field = "slug"``) as DRF users write
them: another URL kwarg, a queryset that hides the object, a ``get_object()`` of their own;
and a read that subscribes to nothing looks no primary key up."""

import pytest
from django.db import connection
from django.shortcuts import get_object_or_404
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from rest_framework import viewsets

from drf_grip import RealtimeMixin
from tests.drf_helpers import ProxiedClient, RecordingSink
from tests.testapp.models import Article
from tests.testapp.realtime_views import (
    AnyCaseArticleViewSet,
    ArticleViewSet,
    SharedArticleViewSet,
)


class ByKey(ArticleViewSet):
    lookup_url_kwarg = "key"


class Hidden(ArticleViewSet):
    def get_queryset(self):
        return Article.objects.exclude(title="secret").order_by("id")


class SharedHidden(SharedArticleViewSet):
    def get_queryset(self):
        return Article.objects.exclude(title="secret").order_by("id")


class CaseInsensitive(ArticleViewSet):
    def get_object(self):
        obj = get_object_or_404(self.get_queryset(), slug__iexact=self.kwargs["slug"])
        self.check_object_permissions(self.request, obj)
        return obj


class Canonical(ArticleViewSet):
    """``get_object()`` through DRF's, then another object: an article's canonical one."""

    def get_object(self):
        found = super().get_object()
        return Article.objects.filter(title=found.title).order_by("id").first()


class AnyCaseLookup:
    def get_object(self):
        return Article.objects.filter(slug__iexact=self.kwargs["slug"]).order_by("id").first()


class AfterTheMixin(RealtimeMixin, AnyCaseLookup, viewsets.ReadOnlyModelViewSet):
    """A ``get_object()`` of its own in a class after the mixin, which calls it."""

    queryset = ArticleViewSet.queryset
    serializer_class = ArticleViewSet.serializer_class
    lookup_field = "slug"


urlpatterns = [
    path("", include("tests.urls")),
    path("k/<str:key>/", ByKey.as_view({"get": "retrieve"})),
    path("h/<str:slug>/", Hidden.as_view({"get": "retrieve"})),
    path("sh/<str:slug>/", SharedHidden.as_view({"get": "retrieve"})),
    path("ci/<str:slug>/", CaseInsensitive.as_view({"get": "retrieve"})),
    path("canonical/<str:slug>/", Canonical.as_view({"get": "retrieve"})),
    path("after/<str:slug>/", AfterTheMixin.as_view({"get": "retrieve"})),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def channels(response):
    return [c.split(";")[0].strip() for c in response.get("Grip-Channel", "").split(",") if c]


def test_lookup_url_kwarg():
    """``lookup_url_kwarg`` names the URL's part, ``lookup_field`` the model field."""
    a = Article.objects.create(slug="a", title="t")
    c = ProxiedClient()
    first = c.get("/k/a/")
    assert first.status_code == 200
    held = c.get("/k/a/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert f"drf.testapp.article.{a.pk}" in channels(held), channels(held)


def _shape(r):
    skip = {"date", "grip-sig"}
    return r.status_code, r.content, sorted((k, v) for k, v in r.items() if k.lower() not in skip)


@pytest.mark.parametrize("prefix", ["/h/", "/sh/"])
def test_hidden_is_like_missing(prefix):
    """The pk is looked up past the view's queryset: a subscriber must not tell an object it
    may not see from one that does not exist."""
    Article.objects.create(slug="sec", title="secret")
    c = ProxiedClient()
    for headers in ({}, {"HTTP_IF_NONE_MATCH": '"x"'}, {"HTTP_ACCEPT": "text/event-stream"}):
        hidden = c.get(f"{prefix}sec/", **headers)
        missing = c.get(f"{prefix}nobody/", **headers)
        assert _shape(hidden) == _shape(missing), headers


def test_case_insensitive_override():
    """Its own lookup finds what the field's does not: held like a list, woken by every
    change of the model, none missed."""
    Article.objects.create(slug="abc", title="t")
    c = ProxiedClient()
    first = c.get("/ci/ABC/")
    assert first.status_code == 200
    held = c.get("/ci/ABC/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert held.status_code == 304 and "drf.testapp.article" in channels(held)


def test_plain_reads_make_no_extra_query():
    """Only a subscription looks the primary key up."""
    Article.objects.create(slug="a", title="t")
    c = ProxiedClient()
    for url in ("/api/articles/a/", "/api/shared-articles/a/", "/k/a/"):
        with CaptureQueriesContext(connection) as q:
            assert c.get(url).status_code == 200
        assert len(q) == 1, (url, [x["sql"] for x in q])
        with CaptureQueriesContext(connection) as q:
            assert c.head(url).status_code == 200
        assert len(q) == 1, (url, [x["sql"] for x in q])


def test_a_value_the_database_refuses_is_a_404_for_a_subscriber_too(monkeypatch):
    """A value the field takes (``to_python``) and the database driver refuses: psycopg2
    raises ValueError for a NUL character (``/articles/a%00b/`` through a router's
    ``[^/.]+``). DRF's ``get_object_or_404`` answers 404; the subscriber's primary-key
    query raised it, a 500."""
    field = Article._meta.get_field("slug")
    prep = field.get_prep_value

    def refused(value):
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        return prep(value)

    monkeypatch.setattr(field, "get_prep_value", refused)
    c = ProxiedClient(raise_request_exception=False)
    assert c.get("/h/a%00b/").status_code == 404
    assert c.get("/h/a%00b/", HTTP_IF_NONE_MATCH='"x"').status_code == 404
    assert c.get("/h/a%00b/", HTTP_ACCEPT="text/event-stream").status_code == 404


def _taken_over(article, slug, title=None):
    """In one transaction: ``article`` renamed away from ``slug``, a new one made with it
    and ``title`` (by default the same as ``article``'s)."""
    from django.db import transaction

    with transaction.atomic():
        article.slug = f"{slug}-old"
        article.save()
        return Article.objects.create(slug=slug, title=title or article.title)


def race_the_next_key_query(monkeypatch, article, title=None, view=None) -> list:
    """Force the race: the next subscription's primary-key query (``view``'s own
    ``get_object()``, given a view that has one) finds ``article``, then, before its
    render, a newcomer takes ``article``'s slug over (:func:`_taken_over`), and is put in
    the list returned. Later queries are not raced."""
    from drf_grip.rest import hooks

    owner, name = (view, "_pk_of_found") if view is not None else (hooks, "_pk_of_unique")
    looked_up = getattr(owner, name)
    taken: list = []

    def racing(*args):
        pk = looked_up(*args)
        if not taken:
            taken.append(_taken_over(article, article.slug, title))
        return pk

    monkeypatch.setattr(owner, name, racing)
    return taken


@pytest.mark.parametrize("view", [None, AnyCaseArticleViewSet], ids=["drf", "own"])
@pytest.mark.parametrize("accept", ["text/event-stream", "application/json"])
def test_a_slug_taken_over_between_the_key_query_and_the_render_holds_on_the_newcomer(
    monkeypatch, accept, view
):
    """Forced race: the subscriber's primary-key query found the first object, another one
    took the slug over before the render, which shows the newcomer. Held on the first
    one's channel, the stream (or a long-poll whose ETag is the newcomer's) missed every
    change of the newcomer. Now it is not held, and the client's next request is."""
    first = Article.objects.create(slug="news", title="same")
    c = ProxiedClient()
    taken = race_the_next_key_query(monkeypatch, first, view=view)
    # A representation without the primary key: the newcomer's has the same ETag.
    monkeypatch.setattr(
        "tests.testapp.realtime_views.ArticleSerializer.Meta.fields", ["slug", "title"]
    )
    url = "/api/any-case-articles/news/" if view else "/api/articles/news/"
    etag = c.get(url)["ETag"]
    headers = {"HTTP_ACCEPT": accept, "HTTP_IF_NONE_MATCH": etag}
    answered = c.get(url, **headers)
    assert taken and "Grip-Hold" not in answered, channels(answered)  # the client asks again
    if accept == "text/event-stream":
        assert answered.content.startswith(b"retry: 0\n") and b'"same"' in answered.content
    else:
        assert answered.status_code == 304 and answered["ETag"] == etag
    again = c.get(url, **headers)
    assert f"drf.testapp.article.{taken[0].pk}" in channels(again)


def test_a_next_link_render_past_its_key_query_ends_the_stream_for_a_reconnection(monkeypatch):
    """The same race inside a stream's next-link fetch: the fetch's primary-key query found
    the first object, the render the newcomer. Held again on the first one's channel, the
    stream missed every change of the newcomer until the first one changed. Now it ends as
    the first request does: the newcomer's event with ``retry: 0``, and the client's
    reconnection (its Last-Event-ID) holds on the newcomer."""
    from tests.test_realtime_mixin import _last_of, _link_of

    first = Article.objects.create(slug="news", title="first")
    c = ProxiedClient()
    opened = c.get("/api/articles/news/", HTTP_ACCEPT="text/event-stream")
    assert f"drf.testapp.article.{first.pk}" in channels(opened)
    taken = race_the_next_key_query(monkeypatch, first, "newcomer")
    fetched = c.get(_link_of(opened), **_last_of(opened))
    assert taken and "Grip-Hold" not in fetched, channels(fetched)  # the stream ends
    assert fetched.content.startswith(b"retry: 0\n") and b'"newcomer"' in fetched.content
    event_id = next(
        line[4:] for line in fetched.content.decode().splitlines() if line.startswith("id: ")
    )
    again = c.get("/api/articles/news/", HTTP_ACCEPT="text/event-stream",
                  HTTP_LAST_EVENT_ID=event_id)
    assert again.content == b"" and f"drf.testapp.article.{taken[0].pk}" in channels(again)


@pytest.mark.django_db(transaction=True)  # the change is published on commit
@pytest.mark.parametrize("prefix", ["/api/any-case-articles/", "/canonical/", "/after/"])
@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_a_get_object_that_finds_another_row_than_the_exact_match_holds_on_what_it_shows(
    prefix, accept
):
    """``Hello`` and ``hello`` both exist; the view's own ``get_object()`` shows ``Hello``
    for ``hello``. Held on the exact match's channel (``hello``'s), a change of ``Hello``,
    the object the subscriber was shown, woke nobody."""
    with RecordingSink() as sink:
        shown = Article.objects.create(slug="Hello", title="same")
        Article.objects.create(slug="hello", title="same")
        sink.settle()
        c = ProxiedClient()
        first = c.get(f"{prefix}hello/")
        assert first.json()["slug"] == "Hello"
        held = c.get(f"{prefix}hello/", HTTP_ACCEPT=accept, HTTP_IF_NONE_MATCH=first["ETag"])
        assert held["Grip-Hold"] in ("response", "stream")
        shown.title = "edited"
        shown.save()
        published = sink.channels()
    assert set(published) & set(channels(held)), (published, channels(held))

