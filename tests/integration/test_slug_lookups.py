"""Detail URLs looked up by a unique field (``lookup_field = "slug"``) through a real GRIP
proxy: renames, deletes, and an object that takes over a slug another one left. Each test
ends in "does the client hold what a fresh GET returns?", against a private Pushpin and the
embedded proxy alike (``grip_proxy``)."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from drf_grip.rest import channels as names
from drf_grip.testing.proxies import ProxyUnderTest
from tests.testapp.models import Article

from .realtime_clients import EventStream
from .test_model_changes import held, past_first_subscription
from .test_realtime import WITHIN, get, obj_ch, settle, shared_ch, stream

pytestmark = pytest.mark.django_db(transaction=True)

PATHS = ["/api/articles/", "/api/shared-articles/"]


def _channel(proxy: ProxyUnderTest, path: str, article: Article) -> str:
    if path == "/api/articles/":
        return obj_ch(article)
    return shared_ch(proxy, f"{path}{article.slug}/")


def _take_over(article: Article, slug: str) -> Article:
    """In one transaction: ``article`` renamed away from ``slug``, a new one made with it."""
    with transaction.atomic():
        article.slug = f"{slug}-old"
        article.save()
        return Article.objects.create(slug=slug, title="newcomer")


@pytest.mark.parametrize("path", PATHS)
def test_a_stream_of_a_slug_another_object_took_follows_that_object(
    grip_proxy: ProxyUnderTest, streams: list[EventStream], path: str
) -> None:
    """The URL now names the newcomer: its stream sends it, then the newcomer's changes."""
    first = Article.objects.create(slug="news", title="first")
    url = f"{path}news/"
    events = stream(grip_proxy, url, _channel(grip_proxy, path, first))
    streams.append(events)
    assert json.loads(events.next(WITHIN).data)["title"] == "first"
    past_first_subscription(grip_proxy)

    newcomer = _take_over(first, "news")
    event = events.next(WITHIN)
    assert event is not None and json.loads(event.data)["title"] == "newcomer"
    settle()

    newcomer.title = "edited"
    newcomer.save()
    event = events.next(WITHIN)
    assert event is not None and json.loads(event.data)["title"] == "edited"
    assert event.id == get(grip_proxy, url).headers["ETag"]


@pytest.mark.parametrize("path", PATHS)
def test_a_gateway_subscription_of_a_slug_another_object_took_follows_that_object(
    grip_proxy: ProxyUnderTest, path: str
) -> None:
    from .test_gateway_ws import ask, gateway, receive

    first = Article.objects.create(slug="news", title="first")
    url = f"{path}news/"
    settle()
    with gateway(grip_proxy) as ws:
        assert ask(ws, {"id": 1, "subscribe": url})["status"] == 200

        newcomer = _take_over(first, "news")
        change = receive(ws, timeout=WITHIN)
        assert (change["status"], change["data"]["title"]) == (200, "newcomer"), change
        settle()

        newcomer.title = "edited"
        newcomer.save()
        change = receive(ws, timeout=WITHIN)
        assert (change["status"], change["data"]["title"]) == (200, "edited"), change
        assert change["etag"] == get(grip_proxy, url).headers["ETag"]


@pytest.mark.parametrize("path", PATHS)
def test_a_renamed_objects_old_stream_ends_and_its_new_url_is_live(
    grip_proxy: ProxyUnderTest, streams: list[EventStream], path: str
) -> None:
    article = Article.objects.create(slug="old", title="t")
    old = stream(grip_proxy, f"{path}old/", _channel(grip_proxy, path, article))
    streams.append(old)
    assert old.next(WITHIN).data
    past_first_subscription(grip_proxy)

    article.slug = "new"
    article.save()
    assert old.next(WITHIN).event == "delete"
    assert old.next(WITHIN) is None
    settle()

    new = stream(grip_proxy, f"{path}new/", _channel(grip_proxy, path, article))
    streams.append(new)
    assert json.loads(new.next(WITHIN).data)["slug"] == "new"
    past_first_subscription(grip_proxy)
    article.title = "again"
    article.save()
    assert json.loads(new.next(WITHIN).data)["title"] == "again"

    article.delete()
    assert new.next(WITHIN).event == "delete"
    assert new.next(WITHIN) is None


@pytest.mark.parametrize("path", PATHS)
def test_a_gateway_subscription_of_a_renamed_object_gets_its_404(
    grip_proxy: ProxyUnderTest, path: str
) -> None:
    from .test_gateway_ws import ask, gateway, receive

    article = Article.objects.create(slug="old", title="t")
    settle()
    with gateway(grip_proxy) as ws:
        assert ask(ws, {"id": 1, "subscribe": f"{path}old/"})["status"] == 200
        missing = ask(ws, {"id": 2, "subscribe": f"{path}nobody/"})
        assert missing["status"] == 404, missing
        article.slug = "new"
        article.save()
        change = receive(ws, timeout=WITHIN)
        assert change["status"] == 404 and change.get("id", 1) == 1, change


@pytest.mark.parametrize("path", PATHS)
def test_a_long_poll_of_a_slug_another_object_took_is_woken(
    grip_proxy: ProxyUnderTest, path: str
) -> None:
    first = Article.objects.create(slug="news", title="first")
    url = f"{path}news/"
    channel = obj_ch(first) if path == "/api/articles/" else names.shared_bulk_channel(Article)
    poll = held(grip_proxy, url, channel)
    _take_over(first, "news")
    response = poll.result(WITHIN)
    assert response.status_code == 200 and response.json()["title"] == "newcomer"
    assert response.headers["ETag"] == get(grip_proxy, url).headers["ETag"]


def test_a_stream_whose_next_link_met_a_newcomer_follows_it_after_reconnecting(
    grip_proxy: ProxyUnderTest, streams: list[EventStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced race inside the next-link fetch a change of the first object makes: its
    primary-key query finds the first object, the render the newcomer. The stream sends the
    newcomer and ends with ``retry: 0``; an EventSource reconnects at once with its
    Last-Event-ID, and gets the newcomer's changes. Held on the first one's channel, it got
    none of them."""
    from tests.test_slug_lookups import race_the_next_key_query

    first = Article.objects.create(slug="news", title="first")
    url = "/api/articles/news/"
    events = stream(grip_proxy, url, obj_ch(first))
    streams.append(events)
    assert json.loads(events.next(WITHIN).data)["title"] == "first"
    past_first_subscription(grip_proxy)

    taken = race_the_next_key_query(monkeypatch, first, "newcomer")
    first.title = "changed"
    first.save()  # wakes the stream: its next-link fetch meets the race
    event = events.next(WITHIN)
    assert taken and event is not None and json.loads(event.data)["title"] == "newcomer"
    assert event.retry == 0 and events.next(WITHIN) is None

    again = stream(grip_proxy, url, obj_ch(taken[0]), {"Last-Event-ID": event.id or ""})
    streams.append(again)
    taken[0].title = "edited"
    taken[0].save()
    edited = again.next(WITHIN)
    assert edited is not None and json.loads(edited.data)["title"] == "edited"
    assert edited.id == get(grip_proxy, url).headers["ETag"]


ANY_CASE = "/api/any-case-articles/hello/"


def test_a_long_poll_of_a_view_that_finds_another_row_is_woken_by_that_row(
    grip_proxy: ProxyUnderTest,
) -> None:
    """The view's own ``get_object()`` shows ``Hello`` for ``/hello/`` while ``hello``
    exists: a change of ``Hello``, the object the client was shown, wakes it."""
    shown = Article.objects.create(slug="Hello", title="first")
    Article.objects.create(slug="hello", title="other")
    poll = held(grip_proxy, ANY_CASE, names.bulk_channel(Article))  # held on it either way
    shown.title = "edited"
    shown.save()
    response = poll.result(WITHIN)
    assert response.status_code == 200 and response.json()["title"] == "edited"
    assert response.headers["ETag"] == get(grip_proxy, ANY_CASE).headers["ETag"]


def test_a_stream_of_a_view_that_finds_another_row_gets_that_rows_changes(
    grip_proxy: ProxyUnderTest, streams: list[EventStream]
) -> None:
    shown = Article.objects.create(slug="Hello", title="first")
    Article.objects.create(slug="hello", title="other")
    events = stream(grip_proxy, ANY_CASE, names.bulk_channel(Article))
    streams.append(events)
    assert json.loads(events.next(WITHIN).data)["title"] == "first"
    past_first_subscription(grip_proxy)
    shown.title = "edited"
    shown.save()
    event = events.next(WITHIN)
    assert event is not None and json.loads(event.data)["title"] == "edited"
    assert event.id == get(grip_proxy, ANY_CASE).headers["ETag"]
