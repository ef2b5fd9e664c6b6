"""Shared realtime state: atomic, bounded, and costing what changed (DESIGN.md §3, §4)."""

from __future__ import annotations

import os
import re
import threading

import pytest
from django.core import checks
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from drf_grip.rest import change_worker, registry
from drf_grip.rest.changes import Changes
from drf_grip.rest.shared import render_stats
from drf_grip.rest.store import SlotIndex
from tests.drf_helpers import ProxiedClient, RecordingSink
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink():
    cache.clear()
    with RecordingSink() as recording:
        recording.settle()
        yield recording


def watch(url: str) -> None:
    assert ProxiedClient().get(url, HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def url_items(items):
    return [i for i in items if i["channel"].startswith("drf.url.")]


def test_concurrent_holds_on_different_filters_are_all_live(sink):
    """Two holds at the same moment used to rewrite one dict: one URL fell out."""
    Todo.objects.create(title="t")
    urls = [f"/api/shared-todos/?page_size={i + 1}" for i in range(24)]
    barrier = threading.Barrier(len(urls))

    def subscribe(url):
        barrier.wait()
        watch(url)

    threads = [threading.Thread(target=subscribe, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.settle()
    before = render_stats["renders"]
    Todo.objects.create(title="t-new")  # first on every page: every page changes
    items = url_items(sink.settle())
    assert render_stats["renders"] - before == len(urls)
    assert len({i["channel"] for i in items}) == len(urls)


def test_slot_index_is_bounded_and_lists_each_key_once():
    index = SlotIndex("test:slots", capacity=16, timeout=60)
    cache.clear()
    listed = [index.add(f"k{i}", {"n": i}) for i in range(40)]
    entries = index.entries()
    assert len(entries) <= 16 and sum(listed) == len(entries)
    assert len({e["k"] for e in entries}) == len(entries)
    assert index.add(entries[0]["k"], {"n": -1})  # a listed key is always listed again
    index.remove(entries[0]["k"])
    assert entries[0]["k"] not in {e["k"] for e in index.entries()}


def test_made_up_query_strings_cannot_raise_the_cost_of_a_write(sink, settings):
    settings.DRF_GRIP = {"LIVE_URL_MAX": 5}
    Todo.objects.create(title="t")
    for i in range(30):
        watch(f"/api/shared-todos/?search=x{i}")
    sink.settle()
    before = render_stats["renders"]
    Todo.objects.create(title="x-new")
    items = sink.settle()
    assert render_stats["renders"] - before <= 5
    # Past the cap, URLs are delivered like private data: a hint re-requests their holds.
    assert any(
        i["channel"] == "drf.testapp.todo" and i["formats"]["http-response"] == {"action": "hint"}
        for i in items
    )


def test_a_change_renders_only_the_changed_objects_detail_urls(sink):
    todos = Todo.objects.bulk_create([Todo(title=f"t{i}") for i in range(1000)])
    client = ProxiedClient()
    for todo in todos:
        assert (
            client.get(f"/api/shared-todos/{todo.pk}/", HTTP_IF_NONE_MATCH='"x"').status_code == 200
        )
    sink.settle()
    before = render_stats["renders"]
    todos[500].title = "changed"
    todos[500].save()
    items = url_items(sink.settle())
    assert render_stats["renders"] - before == 1
    assert len(items) == 1 and '"changed"' in items[0]["formats"]["http-response"]["body"]


def test_a_burst_in_one_transaction_renders_each_url_once(sink):
    from django.db import transaction

    watch("/api/shared-todos/")
    sink.settle()
    before = render_stats["renders"]
    with transaction.atomic():
        for i in range(20):
            Todo.objects.create(title=f"b{i}")
    sink.settle()
    assert render_stats["renders"] - before == 1


def test_writes_in_quick_succession_render_each_url_once(sink, settings):
    """Separate transactions committed within ``PUBLISH_INTERVAL`` of a publish go out
    together: one render of each live URL for all of them (a stream of PATCHes cost one
    render per PATCH; issue 10, throughput while watched). A change after a quiet moment is
    published at once."""
    settings.DRF_GRIP = {"PUBLISH_INTERVAL": 2.0}
    watch("/api/shared-todos/")
    sink.settle()
    before = render_stats["renders"]
    Todo.objects.create(title="after a quiet moment")
    assert url_items(sink.settle())
    assert render_stats["renders"] - before == 1

    for i in range(10):
        Todo.objects.create(title=f"quick {i}")  # each its own transaction
    items = url_items(sink.settle())
    assert render_stats["renders"] - before == 2
    assert len(items) == 1 and '"quick 9"' in items[0]["formats"]["http-response"]["body"]


def test_urlconf_import_in_another_thread_does_not_drop_a_change(sink, monkeypatch):
    """A thread that saved while another was importing the URLconf used to see the model
    as unregistered and drop its change."""
    watch("/api/todos/")
    sink.settle()
    started, release = threading.Event(), threading.Event()
    real = registry.ensure_loaded

    class SlowResolver:
        @property
        def url_patterns(self):
            started.set()
            release.wait(5)
            return []

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr("django.urls.get_resolver", lambda: SlowResolver())
    importer = threading.Thread(target=real)
    importer.start()
    assert started.wait(5)
    saver = threading.Thread(target=lambda: Todo.objects.create(title="during import"))
    saver.start()
    release.set()
    importer.join(5)
    saver.join(5)
    assert "drf.testapp.todo" in sink.channels()


def test_the_change_worker_closes_stale_connections(sink, monkeypatch):
    calls = []
    monkeypatch.setattr(change_worker, "close_old_connections", lambda: calls.append(1))
    watch("/api/todos/")
    Todo.objects.create(title="x")
    sink.settle()
    assert calls


def test_the_change_worker_survives_closing_connections_failing(sink, monkeypatch):
    """pytest-django refuses database access (closing connections too) in a test without
    the ``django_db`` mark: raised in the worker's ``finally``, that ended the thread and
    every later change stayed unpublished (a test kit probe)."""

    def refused() -> None:
        raise RuntimeError("Database access not allowed")

    monkeypatch.setattr(change_worker, "close_old_connections", refused)
    watch("/api/todos/")
    first = Todo.objects.create(title="x")
    assert f"drf.testapp.todo.{first.pk}" in sink.channels()
    second = Todo.objects.create(title="y")
    assert f"drf.testapp.todo.{second.pk}" in sink.channels()


def test_system_check_warns_about_a_per_process_cache_with_shared_delivery(settings):
    from drf_grip.checks import check_shared_state_cache

    assert [m.id for m in check_shared_state_cache()] == ["drf_grip.W002"]
    assert "drf_grip.W002" in {m.id for m in checks.run_checks()}  # registered with Django
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1",
        }
    }
    assert check_shared_state_cache() == []


def test_system_check_warns_about_a_per_process_cache_with_a_gateway(monkeypatch):
    from drf_grip.checks import check_shared_state_cache

    monkeypatch.setattr(registry, "shared_views", lambda: [])  # a gateway, no shared view

    (warning,) = check_shared_state_cache()

    assert warning.id == "drf_grip.W002"
    assert "gateway" in warning.msg and "RealtimeGateway" in warning.hint


def test_system_check_warns_about_a_per_process_cache_with_private_views_past_development(
    monkeypatch, settings
):
    """A project of private views only, served by two workers on a local-memory cache: a
    stream whose next link reached the other worker found its state gone and ended, and
    no check said why (deploying probe). Quiet while ``DEBUG`` is on (one process)."""
    from drf_grip.checks import check_shared_state_cache

    monkeypatch.setattr(registry, "shared_views", lambda: [])
    monkeypatch.setattr(registry, "gateway_views", lambda: [])
    settings.DEBUG = True
    assert check_shared_state_cache() == []
    settings.DEBUG = False

    (warning,) = check_shared_state_cache()

    assert warning.id == "drf_grip.W002"
    assert "event streams" in warning.msg and "TodoViewSet" in warning.hint


def test_a_shell_publishing_with_a_per_process_cache_says_who_misses_the_change(
    sink, monkeypatch, caplog
):
    """A shell (or Celery) that serves no requests cannot see the subscriptions the serving
    process keeps in its own memory, and no system check runs there: it says so, once."""
    from drf_grip.grip import middleware
    from drf_grip.rest import publishing

    monkeypatch.setattr(middleware, "_serving", False)
    monkeypatch.setattr(publishing, "_warned_unseen", False)

    from django.contrib.auth.models import Group

    with caplog.at_level("WARNING", logger="drf_grip.publish"):
        Group.objects.create(name="no live view")  # (migrate saves such models too)
        sink.settle()
        unseen = [r for r in caplog.records if "per-process cache" in r.getMessage()]
        assert not unseen
        Todo.objects.create(title="from a shell")
        Todo.objects.create(title="again")
        sink.settle()

    warnings = [r.getMessage() for r in caplog.records if "per-process cache" in r.getMessage()]
    assert len(warnings) == 1
    assert "SharedTodoViewSet" in warnings[0] and "RealtimeGateway" in warnings[0]


def test_a_serving_process_does_not_warn_of_unseen_subscribers(sink, monkeypatch, caplog):
    from drf_grip.rest import publishing

    monkeypatch.setattr(publishing, "_warned_unseen", False)
    ProxiedClient().get("/api/todos/")  # this process serves requests

    with caplog.at_level("WARNING", logger="drf_grip.publish"):
        Todo.objects.create(title="served here")
        sink.settle()

    assert not [r for r in caplog.records if "per-process cache" in r.getMessage()]


def test_a_slot_taken_by_another_view_after_a_flush_is_noticed(sink):
    """The process remembers which slot its subscription took; after the cache was flushed
    and another entry took that slot, the next hold records itself again."""
    from drf_grip.rest.policies import _index, recorded_views

    watch("/api/todos/")
    index = _index("testapp.todo")
    slot = next(
        s for s in index._slots("tests.testapp.realtime_views:TodoViewSet|private") if cache.get(s)
    )
    cache.clear()
    cache.set(slot, {"k": "someone.else:View|private", "view": "x:y", "delivery": "private"})
    watch("/api/todos/")
    views = {entry["view"] for entry in recorded_views(Todo)}
    assert "tests.testapp.realtime_views:TodoViewSet" in views


def test_listing_costs_what_is_listed_not_the_capacity():
    """A change lists the gateway connections and live URLs of its model: an empty index is
    a read of a few ring flags, a small set stays in the first ring."""

    class Counting:
        def __init__(self, inner):
            self.inner, self.read = inner, 0

        def get_many(self, keys):
            self.read += len(keys)
            return self.inner.get_many(keys)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    cache.clear()
    counting = Counting(cache)
    index = SlotIndex("test:rings", capacity=2048, timeout=60, cache=counting)
    assert index.entries() == [] and counting.read == len(index._rings) <= 8
    for i in range(5):
        assert index.add(f"conn{i}", {})
    counting.read = 0
    assert {e["k"] for e in index.entries()} == {f"conn{i}" for i in range(5)}
    assert counting.read <= len(index._rings) + 32


def test_entries_expired_in_a_file_based_cache_cost_no_500(sink, tmp_path, monkeypatch):
    """The sample keeps drf-grip's state in Django's FileBasedCache, whose ``touch`` of a
    key that has just expired raised (I/O operation on closed file): the first hold, stream
    or subscribe of a live URL after its entries expired answered 500."""
    import time

    file_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
    url = "/api/shared-todos/?search=a"
    with override_settings(CACHES=file_cache):
        Todo.objects.create(title="a")
        client = ProxiedClient()
        etag = client.get(url)["ETag"]
        assert client.get(url, HTTP_IF_NONE_MATCH=etag)["Grip-Hold"] == "response"

        # Everything drf-grip listed has expired (LIVE_URL_TIMEOUT is 360 s by default).
        wall, mono = time.time() + 3600, time.monotonic() + 3600
        monkeypatch.setattr(time, "time", lambda: wall)
        monkeypatch.setattr(time, "monotonic", lambda: mono)

        held = client.get(url, HTTP_IF_NONE_MATCH=etag)
        stream = client.get(url, HTTP_ACCEPT="text/event-stream")

    assert held.status_code == 304 and held["Grip-Hold"] == "response"
    assert stream.status_code == 200 and stream["Grip-Hold"] == "stream"


def test_a_publish_the_cache_failed_is_tried_again_when_the_cache_works_at_once(settings):
    """Redis refused a write for memory, and evicted or freed room a moment later: the
    publish that failed on it met a cache that took the next write, and was dropped at once
    ("failed to publish changes"), its held clients left on the old representation
    (multi-process probe, ``maxmemory`` 3-4 MB). A failure raised by the cache is tried
    again; one raised elsewhere (a bug) is not."""
    settings.DRF_GRIP = {"PUBLISH_BACKOFF": 0.01}
    calls: list[object] = []

    def refused_once(changes: object) -> None:
        calls.append(changes)
        if len(calls) == 1:
            cache.incr("drf_grip:test:absent")  # raised inside the cache backend

    change_worker._publish_once_the_cache_answers(refused_once, Changes())
    assert len(calls) == 2

    def broken(changes: object) -> None:
        calls.append(changes)
        raise RuntimeError("a bug, not the cache")

    with pytest.raises(RuntimeError):
        change_worker._publish_once_the_cache_answers(broken, Changes())
    assert len(calls) == 3


def test_a_proxied_read_the_cache_failed_is_answered_though_it_works_at_once(sink, monkeypatch):
    """Redis refused a write for memory as a long-poll or stream through the proxy recorded
    itself, and took writes again a moment later: the read answered 500, the cache seeming
    to work by the time its failure was looked at (multi-process probe, ``maxmemory`` 3-4
    MB). It is answered as a direct client's, as while the cache does not work at all."""
    from drf_grip.rest import policies

    def refused(policy):
        cache.incr("drf_grip:test:absent")  # raised inside the cache backend

    monkeypatch.setattr(policies, "record_policy", refused)
    todo = Todo.objects.create(title="t")
    client = ProxiedClient()
    stale = client.get(f"/api/todos/{todo.pk}/", HTTP_IF_NONE_MATCH='"stale"')
    assert stale.status_code == 200 and stale.json()["title"] == "t"
    stream = client.get(f"/api/todos/{todo.pk}/", HTTP_ACCEPT="text/event-stream")
    assert stream.status_code == 200 and b'"title":"t"' in stream.content


def test_what_counts_as_the_cache_failing():
    """A failure raised inside the cache's own work counts (``store.raised_by_cache``); one
    raised by the default a ``get_or_set`` computes (the caller's code) does not."""
    from drf_grip.rest.store import raised_by_cache

    with pytest.raises(ValueError) as refused:
        cache.incr("drf_grip:test:absent")
    assert raised_by_cache(refused.value)

    def default() -> int:
        raise RuntimeError("the view's bug")

    with pytest.raises(RuntimeError) as bug:
        cache.get_or_set("drf_grip:test:computed", default)
    assert not raised_by_cache(bug.value)


def test_a_views_own_cache_failing_is_not_the_state_cache_failing():
    """A view that keeps its own data in another cache alias and fails there: its failure
    counted as drf-grip's cache failing, so its read was answered as a direct one (and
    raised again) and its shared render's publish tried again (review of the seventeenth
    session's change)."""
    from django.core.cache.backends.locmem import LocMemCache

    from drf_grip.rest.store import raised_by_cache

    own = LocMemCache("the-views-own", {})
    with pytest.raises(ValueError) as failed:
        own.incr("absent")
    assert not raised_by_cache(failed.value)


def test_a_redis_that_refuses_scripts_keeps_djangos_incr() -> None:
    """The state cache's one-round-trip ``incr`` is a Lua script; a Redis whose user may not
    run scripts (an ACL without ``@scripting``, ``EVAL`` renamed away) answers an error,
    and the cache goes on with Django's ``EXISTS`` + ``INCRBY`` from then on."""
    from redis.exceptions import ResponseError

    from drf_grip.rest.store import _incr_in_one_trip

    evals: list[str] = []

    class Refusing:
        def eval(self, *args: object) -> object:
            evals.append("eval")
            raise ResponseError("NOPERM this user has no permissions to run the 'eval' command")

    django_calls: list[tuple[str, int]] = []

    class DjangosClient:  # the part of django.core.cache.backends.redis.RedisCacheClient used
        def get_client(self, key: object = None, *, write: bool = False) -> Refusing:
            return Refusing()

        def incr(self, key: str, delta: int) -> int:
            django_calls.append((key, delta))
            return 7

    class NotAnInteger:
        def eval(self, *args: object) -> object:
            raise ResponseError("value is not an integer or out of range script: ...")

    client = DjangosClient()
    _incr_in_one_trip(client)
    refusing = client.get_client
    client.get_client = lambda key=None, *, write=False: NotAnInteger()  # type: ignore[method-assign]
    with pytest.raises(ResponseError, match="not an integer"):
        client.incr("k", 1)  # the script ran: its error is the caller's, as Django's would be
    client.get_client = refusing  # type: ignore[method-assign]
    assert client.incr("k", 1) == 7
    assert client.incr("k", -2) == 7
    assert django_calls == [("k", 1), ("k", -2)]
    assert evals == ["eval"]  # refused once, not asked again


def test_a_change_renders_first_the_live_urls_a_hold_still_needs(sink, monkeypatch):
    """A live URL lasts six minutes after its last hold (``live_timeout()``): one client's
    brief holds of 150 ``?search=`` URLs made every later change render them before the
    URL a subscriber still held, 2-3 s late (DRF probe). The URLs whose holds are not
    renewed are rendered after those a hold still needs, and rendered all the same."""
    from drf_grip.rest import live_urls, shared

    Todo.objects.create(title="t")
    real_needed_until = live_urls._needed_until
    monkeypatch.setattr(live_urls, "_needed_until", lambda holds: real_needed_until(holds) - 600)
    stale = [f"/api/shared-todos/?search=s{i}" for i in range(30)]
    for url in stale:
        watch(url)
    monkeypatch.setattr(live_urls, "_needed_until", real_needed_until)
    watch("/api/shared-todos/?page_size=3")
    sink.settle()

    rendered = []
    real_publish = shared.publish_live_url

    def publish(entry):
        rendered.append(entry["url"])
        return real_publish(entry)

    monkeypatch.setattr(shared, "publish_live_url", publish)
    Todo.objects.create(title="t-new")
    sink.settle()
    assert rendered[0] == "/api/shared-todos/?page_size=3", rendered
    assert sorted(rendered[1:]) == sorted(stale)


def test_a_renewal_moves_an_entrys_need_later_never_earlier():
    """``NEED`` orders renders (above): a renewal by a hold that needs its URL for less
    time (a 5 s long-poll beside a stream) must not move it earlier, and a renewal writes
    it only once it moved by an eighth of the index's timeout (most renewals read only)."""
    from drf_grip.rest.store import NEED

    cache.clear()
    index = SlotIndex("test:need", capacity=16, timeout=80)
    memo: dict = {}
    index.renew("a", {"v": 1, NEED: 1000}, memo)
    index.renew("a", {"v": 1, NEED: 500}, {})  # another process, a shorter hold
    assert [e[NEED] for e in index.entries()] == [1000]
    index.renew("a", {"v": 1, NEED: 1005}, memo)
    assert [e[NEED] for e in index.entries()] == [1000]
    index.renew("a", {"v": 1, NEED: 1100}, memo)
    assert [e[NEED] for e in index.entries()] == [1100]


@pytest.mark.parametrize("size, gateway", [(400_000, 200), (1_200_000, 413)])
def test_a_shared_render_too_large_for_one_publish_hints_and_sends_the_gateway_what_fits(
    sink, size, gateway
):
    """A shared item carries the body three times, and Pushpin refuses a publish over 1 MB:
    a 400 KB representation's changes were published, refused and dropped. Its long-polls
    and streams are hinted instead, and gateway subscribers get the message if it fits."""
    import json

    from drf_grip.protocol.constants import MAX_PUBLISH_BODY

    todo = Todo.objects.create(title="x")
    url = f"/api/shared-todos/{todo.pk}/"
    watch(url)
    sink.settle()
    todo.title = "y" * size
    todo.save()
    [item] = url_items(sink.settle())
    assert len(json.dumps(item)) < MAX_PUBLISH_BODY
    assert item["formats"]["http-response"] == {"action": "hint"}
    assert item["formats"]["http-stream"] == {"action": "hint"}
    message = json.loads(item["formats"]["ws-message"]["content"])
    assert message["status"] == gateway and message["url"] == url
    if gateway == 200:
        assert message["data"]["title"] == "y" * size


def _long_lived(limit: float) -> list[str]:
    """The keys of the (local-memory) cache that outlive ``limit`` seconds from now."""
    import time

    now = time.time()
    return [key for key, expiry in cache._expire_info.items() if expiry - now > limit]


def test_made_up_query_strings_leave_nothing_that_outlives_their_live_urls(sink):
    """Each made-up query string (``?search=x1``, ``x2``...) held, streamed or subscribed
    over the gateway once left two day-long entries (its version, its render tickets): an
    anonymous client could pile them up by the thousand a minute until a cache culled
    everyone's state (security probe). What a URL leaves now lives about as long as the
    URL itself, whatever the number of URLs."""
    import json

    from drf_grip.rest.policies import live_timeout
    from drf_grip.test import WebSocketTestClient

    todo = Todo.objects.create(title="t")
    change_worker.wait_idle()
    ws = WebSocketTestClient().connect("/api/ws/")
    assert ws.accepted, ws.response

    def churn(first: int, count: int) -> None:
        for i in range(first, first + count):
            watch(f"/api/shared-todos/?search=lp{i}")
            assert ProxiedClient().get(
                f"/api/shared-todos/?search=sse{i}", HTTP_ACCEPT="text/event-stream"
            ).status_code == 200
            for kind in ("shared-todos", "todos"):
                ws.send(json.dumps({"id": 1, "subscribe": f"/api/{kind}/?search=ws{i}"}))
                assert ws.receive_json()["status"] == 200
                ws.send(json.dumps({"id": 2, "unsubscribe": 1}))
                assert ws.receive_json()["status"] == 200
        change_worker.wait_idle()

    bound = 2 * live_timeout() + 60
    churn(0, 3)
    todo.title = "a change, rendered for every live URL"
    todo.save()
    change_worker.wait_idle()
    before = _long_lived(bound)
    churn(3, 9)
    todo.title = "another change"
    todo.save()
    change_worker.wait_idle()
    after = _long_lived(bound)
    assert len(after) <= len(before), sorted(set(after) - set(before))


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_a_request_answered_with_an_error_leaves_no_live_url(sink, accept):
    """A long-poll or a stream of a page that does not exist is answered 404 at once and
    held by nobody, yet its live URL was listed first, and each write rendered it for the
    listing's lifetime (six minutes): a hundred made-up ``?page=`` values re-rendered a
    hundred URLs per write (hostile-input probe; clients of the embedded proxy then saw
    changes 0.7-1.6 s late)."""
    Todo.objects.create(title="t")
    client = ProxiedClient()
    etag = client.get("/api/shared-todos/")["ETag"]
    for page in ("zz1", "999", "0"):
        answer = client.get(
            f"/api/shared-todos/?page={page}", HTTP_IF_NONE_MATCH=etag, HTTP_ACCEPT=accept
        )
        assert answer.status_code == 404, answer.content[:200]
    sink.settle()
    before = render_stats["renders"]
    Todo.objects.create(title="t-new")
    sink.settle()
    assert render_stats["renders"] - before == 0


def test_a_page_that_answers_404_to_one_client_stays_live_for_its_holder(sink):
    """Only what the erring request listed itself is taken back: a URL that someone else
    holds stays listed."""
    todos = Todo.objects.bulk_create([Todo(title=f"t{i}") for i in range(3)])
    client = ProxiedClient()
    url = "/api/shared-todos/?page=2&page_size=2"
    watch(url)
    Todo.objects.filter(pk__in=[t.pk for t in todos[:2]]).delete()  # page 2 is gone...
    sink.settle()
    assert client.get(url, HTTP_IF_NONE_MATCH='"x"').status_code == 404
    before = render_stats["renders"]
    from django.db import transaction

    with transaction.atomic():  # ...and back
        for i in range(2):
            Todo.objects.create(title=f"n{i}")
    items = url_items(sink.settle())
    assert render_stats["renders"] - before == 1 and len(items) == 1


def test_a_private_channels_version_outlives_the_file_caches_default_timeout(
    sink, tmp_path, monkeypatch
):
    """Bad-input probe, behind Pushpin with the sample's file cache: Django's
    ``BaseCache.incr`` saves with the cache's default timeout (300 s), so five quiet minutes
    after a publish a private channel's counter expired while the id the proxy confirmed
    lived on; the counter restarted elsewhere and the next change's prev-id named an id the
    proxy never saw (Pushpin held it its 5 s: alice's notes 5.3 s late). The hold made after
    those minutes and the next publish must name the same prev-id."""
    import time

    from drf_grip.grip.items import channel_name
    from drf_grip.rest.versions import acknowledge

    file_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    with override_settings(CACHES=file_cache):
        todo = Todo.objects.create(title="a")
        client = ProxiedClient()
        watch("/api/todos/")
        for title in ("b", "c"):
            todo.title = title
            todo.save()
            acknowledge(sink.settle())  # the proxy confirms each id it was sent

        wall = time.time() + 301  # five quiet minutes and a second
        monkeypatch.setattr(time, "time", lambda: wall)
        etag = client.get("/api/todos/")["ETag"]
        held = client.get("/api/todos/", HTTP_IF_NONE_MATCH=etag)
        assert held["Grip-Hold"] == "response"
        prev_ids = dict(
            re.findall(r'([^\s,;]+); prev-id=([^\s,;]+)', held["Grip-Channel"])
        )
        todo.title = "d"
        todo.save()
        items = [i for i in sink.settle() if channel_name(i) in prev_ids and i.get("prev-id")]

    assert items, (held["Grip-Channel"], items)
    for item in items:
        assert item["prev-id"] == prev_ids[channel_name(item)], (held["Grip-Channel"], item)


@pytest.mark.parametrize("backend", ["filebased.FileBasedCache", "db.DatabaseCache"])
def test_the_caches_add_and_incr_are_one_step_across_processes(tmp_path, backend):
    """Convergence probe, runserver and three shells on the sample's file cache: Django's
    ``FileBasedCache.add`` is "has_key, then set" and ``incr`` "get, then set", so 3 × 500
    increments of one counter ended at 519; private channels' versions were handed out
    twice and streams moved back to older representations. The database cache's ``incr``
    is "get, then set" too (here 3 × 200 ended at 593). Three processes here each count 200
    and try to take the same 200 slots: every increment counts, and each slot has one
    owner."""
    import subprocess
    import sys
    from pathlib import Path

    location = str(tmp_path) if backend.startswith("filebased") else "drf_grip_state"
    caches_setting = {"BACKEND": f"django.core.cache.backends.{backend}",
                      "LOCATION": location, "OPTIONS": {"MAX_ENTRIES": 100_000}}
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3",
                             "NAME": str(tmp_path / "state.sqlite3"),
                             "OPTIONS": {"timeout": 60}}}
    script = f"""
import sys
import django
from django.conf import settings
settings.CACHES = {{"default": {caches_setting!r}}}
settings.DATABASES = {databases!r}
django.setup()
from django.core.management import call_command
from drf_grip.rest.store import incr, state_cache
if sys.argv[1] == "setup":
    call_command("createcachetable", verbosity=0)
    state_cache().add("n", 0, 600)
    sys.exit()
cache = state_cache()
sys.stdin.read()  # all three start together
for _ in range(200):
    incr(cache, "n", 600)
print(sum(cache.add(f"slot-{{i}}", sys.argv[1], 600) for i in range(200)))
"""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", script, "setup"], cwd=root, env=env, check=True)
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=root, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for n in range(3)
    ]
    for run in runs:
        run.stdin.close()
    slots = [int(run.stdout.read()) for run in runs]
    assert [run.wait(60) for run in runs] == [0, 0, 0]
    check = script.replace("sys.stdin.read()", "print(cache.get('n')); sys.exit()")
    counted = subprocess.run([sys.executable, "-c", check, "check"], cwd=root, env=env,
                             check=True, capture_output=True, text=True).stdout
    assert int(counted) == 600
    assert sum(slots) == 200, slots


def test_the_file_cache_counts_its_entries_at_most_once_a_second(tmp_path, monkeypatch):
    """Django's file cache lists its whole directory on every ``set``, to cull: with 5,000
    files a set of drf-grip's state took 7.7 ms instead of 0.6, and a cascade of 300
    deletes reached its clients 10 s late (publishing probe). It culls at most once a
    second per process now, and still culls."""
    from django.core.cache.backends.filebased import FileBasedCache

    from drf_grip.rest.store import state_cache

    file_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
            "OPTIONS": {"MAX_ENTRIES": 10},
        }
    }
    listed = []
    real = FileBasedCache._list_cache_files

    def counted(self):
        listed.append(1)
        return real(self)

    monkeypatch.setattr(FileBasedCache, "_list_cache_files", counted)
    with override_settings(CACHES=file_cache):
        cache = state_cache()
        for i in range(50):
            cache.set(f"key-{i}", i, 60)
        assert len(listed) == 1
        before = len(real(cache))
        monkeypatch.setattr(cache, "_culled_at", float("-inf"))  # a second later
        cache.set("one-more", 1, 60)
        assert len(listed) == 2 and len(real(cache)) < before  # counted, culled


@pytest.fixture
def recording_memory(monkeypatch):
    """This process's memory of the recording mark, as a fresh process has it."""
    from drf_grip.rest import policies

    monkeypatch.setattr(policies, "_memories", policies.weakref.WeakKeyDictionary())
    return policies


def test_a_mark_the_cache_lost_is_known_for_a_loss_and_recovered_once(recording_memory):
    """A probe past one machine: Redis restarted empty under writes, the first hold recorded
    again made the records look whole, and streams, long-polls and gateway subscriptions
    held before got no change (``test_state_lost`` shows it end to end)."""
    policies = recording_memory
    cache.clear()
    epoch = policies.recording_epoch()
    assert policies.recovery_due("testapp.todo") is None  # a fresh cache is no loss
    cache.clear()  # Redis restarted empty
    assert policies.records_lost() and policies.recovery_due("testapp.todo") is None
    policies.keep_recording(anew=True)  # the first subscriber after it records again
    assert not policies.records_lost()
    assert policies.recording_epoch() != epoch
    # Holds re-requested once per model; the epoch whose gateway connections lost their
    # subscriptions closed once.
    assert policies.recovery_due("testapp.todo") == (True, [epoch])
    assert policies.recovery_due("testapp.todo") is None
    assert policies.recovery_due("testapp.note") == (True, [])


def test_a_mark_set_anew_by_a_fresh_process_is_known_for_a_loss_by_one_that_saw_the_old(
    recording_memory,
):
    policies = recording_memory
    cache.clear()
    epoch = policies.recording_epoch()
    assert policies.recovery_due("testapp.todo") is None  # this process saw the mark
    cache.clear()
    fresh = {"since": policies.time.time(), "lost": False}
    cache.set(policies._RECORDING, fresh, 60)  # set anew by a fresh process
    assert policies.recovery_due("testapp.todo") == (True, [epoch])
    mark = cache.get(policies._RECORDING)
    assert mark["lost"] is True and mark["before"] == [float(epoch)]  # for every process


def test_a_process_that_renewed_the_mark_names_its_epoch_when_another_sets_it_anew(
    recording_memory,
):
    """Gateway connections subscribed under the lost mark are closed at the recovery, and
    no other: the epoch is known to a process that only ever renewed the mark."""
    policies = recording_memory
    cache.clear()
    cache.set(policies._RECORDING, {"since": 1000.0, "lost": False}, 60)  # another's
    assert policies.recording_epoch() == "1000.0"  # renewed here, and read
    cache.clear()
    cache.set(policies._RECORDING, {"since": 2000.0, "lost": False}, 60)  # a fresh process
    policies.keep_recording(anew=True)  # a subscriber here after the loss
    assert policies.recording_epoch() == "2000.0"
    assert cache.get(policies._RECORDING)["before"] == [1000.0]


def test_a_connection_subscribes_under_the_mark_in_the_cache_not_the_one_remembered(
    recording_memory,
):
    """A probe past one machine (Redis restarted three times under writes, 1 run in 20):
    another process set the mark anew after a loss, and a connection subscribing here
    took the epoch this process remembered, read a few seconds before. At the next loss
    the recovery closed the connections of the epoch then lost, not that one, which kept
    subscriptions nothing published to."""
    policies = recording_memory
    cache.clear()
    remembered = policies.recording_epoch()
    cache.clear()  # lost; another process sets the mark anew, naming the one before
    again = {"since": 2000.0, "lost": True, "before": [float(remembered)]}
    cache.set(policies._RECORDING, again, 60)
    assert policies.recording_epoch() == "2000.0"
    assert policies.recording_epoch(renew=False) == "2000.0"


def test_an_epoch_named_after_the_recovery_ran_is_closed_at_the_next_change(recording_memory):
    """Each process names the epoch it knew when it next reads the mark. One that read it
    only after the first recovery ran (once per loss) had its connections closed by none."""
    policies = recording_memory
    cache.clear()
    now = policies.time.time()  # a mark set anew just now
    cache.set(policies._RECORDING, {"since": now, "lost": True, "before": [1000.0]}, 60)
    assert policies.recovery_due("testapp.todo") == (True, ["1000.0"])
    mark = cache.get(policies._RECORDING)
    cache.set(policies._RECORDING, {**mark, "before": [1000.0, 1500.0]}, 60)  # told late
    assert policies.recovery_due("testapp.note") == (True, ["1500.0"])
    assert policies.recovery_due("testapp.todo") is None
    assert policies.recovery_due("testapp.note") is None


def test_a_mark_that_expired_in_a_quiet_spell_is_no_loss(recording_memory, monkeypatch):
    policies = recording_memory
    cache.clear()
    policies.keep_recording(anew=True)
    cache.clear()
    later = policies._memory(policies.state_cache()).marked + policies._mark_timeout() + 1
    monkeypatch.setattr(policies.time, "monotonic", lambda: later)
    policies.keep_recording(anew=True)
    assert policies.recovery_due("testapp.todo") is None


def test_a_change_renders_only_the_changed_objects_detail_urls_looked_up_by_slug(sink):
    """A detail URL looked up by a unique field other than the primary key
    (``lookup_field = "slug"``) named no object when it was listed, so every change of
    the model rendered it, as a list (50 renders for one change here)."""
    from tests.testapp.models import Article

    articles = Article.objects.bulk_create(
        [Article(slug=f"a-{i}", title=f"t{i}") for i in range(50)]
    )
    for article in articles:
        watch(f"/api/shared-articles/{article.slug}/")
    sink.settle()
    before = render_stats["renders"]
    articles[20].title = "changed"
    articles[20].save()
    items = url_items(sink.settle())
    assert render_stats["renders"] - before == 1
    assert len(items) == 1 and '"changed"' in items[0]["formats"]["http-response"]["body"]

    articles[21].slug = "renamed"  # its old URL now answers 404: its streams end
    articles[21].save()
    gone = url_items(sink.settle())
    assert render_stats["renders"] - before == 2, gone
    assert len({i["channel"] for i in gone}) == 1 and gone[-1]["id"].startswith("status-404")


def test_a_private_detail_url_looked_up_by_slug_holds_on_its_objects_channel(sink):
    """Held on the model's list channel, a slug detail URL was re-requested by every change
    of the model; now only by its object's changes (and model-wide ones)."""
    from tests.testapp.models import Article

    article = Article.objects.create(slug="only-me", title="t")
    client = ProxiedClient()
    first = client.get("/api/articles/only-me/")
    held = client.get("/api/articles/only-me/", HTTP_IF_NONE_MATCH=first["ETag"])
    channels = [c.split(";")[0].strip() for c in held["Grip-Channel"].split(",")]
    assert f"drf.testapp.article.{article.pk}" in channels
    assert "drf.testapp.article" not in channels  # every change of the model
    with CaptureQueriesContext(connection) as plain:
        assert client.get("/api/articles/only-me/").status_code == 200
    assert len(plain) == 1  # a read that subscribes to nothing looks nothing up
    missing = client.get("/api/articles/nobody/", HTTP_IF_NONE_MATCH='"x"')
    assert missing.status_code == 404 and "Grip-Hold" not in missing


@pytest.mark.django_db(transaction=True)
def test_the_database_caches_add_tries_again_a_write_the_database_refused(monkeypatch):
    """Django's database cache answers ``add`` False on any database error of its write,
    and SQLite refuses a deferred transaction that has read the key the write lock while
    another connection writes: three processes adding 200 keys each left one key to nobody
    (CI, Django 6). A refused write is tried again; a key someone has stays theirs."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.management import call_command

    from drf_grip.rest.store import _AtomicDatabaseCache

    call_command("createcachetable", "drf_grip_test_add", verbosity=0)
    cache = _AtomicDatabaseCache("drf_grip_test_add", {})
    real = DatabaseCache._base_set
    refused = []

    def locked_once(self, mode, key, value, timeout=None):
        if mode == "add" and not refused:
            refused.append(key)
            return False  # as Django answers "database is locked"
        return real(self, mode, key, value, timeout)

    monkeypatch.setattr(DatabaseCache, "_base_set", locked_once)
    assert cache.add("slot", "mine", 60) is True
    assert refused and cache.get("slot") == "mine"
    assert cache.add("slot", "theirs", 60) is False
    assert cache.get("slot") == "mine"


def test_the_database_caches_set_tries_again_a_write_the_database_refused(monkeypatch):
    """Django's database cache drops a ``set`` the database refused (SQLite's write lock, as
    for ``add`` above) without a word: a channel's version written that way was lost."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.management import call_command

    from drf_grip.rest.store import _AtomicDatabaseCache

    call_command("createcachetable", "drf_grip_test_set", verbosity=0)
    cache = _AtomicDatabaseCache("drf_grip_test_set", {})
    real = DatabaseCache._base_set
    refused = []

    def locked_twice(self, mode, key, value, timeout=None):
        if mode == "set" and len(refused) < 2:
            refused.append(key)
            return False  # as Django answers "database is locked"
        return real(self, mode, key, value, timeout)

    monkeypatch.setattr(DatabaseCache, "_base_set", locked_twice)
    cache.set("version", "7", 60)
    cache.set_many({"a": 1, "b": 2}, 60)
    assert len(refused) == 2
    assert cache.get("version") == "7"
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}


def _taken_over(article, slug):
    """In one transaction: ``article`` renamed away from ``slug``, a new one made with it."""
    from django.db import transaction

    from tests.testapp.models import Article

    with transaction.atomic():
        article.slug = f"{slug}-old"
        article.save()
        return Article.objects.create(slug=slug, title="newcomer")


def test_a_slug_url_another_object_took_is_rendered_by_that_objects_changes(sink):
    """Listed under the object it named when it was subscribed to, a slug detail URL was
    rendered by that object's changes only: once another object took the slug over, the
    newcomer's changes reached none of its streams (slug probe)."""
    from tests.testapp.models import Article

    first = Article.objects.create(slug="news", title="first")
    watch("/api/shared-articles/news/")
    sink.settle()
    newcomer = _taken_over(first, "news")
    [pushed] = url_items(sink.settle())
    assert '"newcomer"' in pushed["formats"]["http-response"]["body"]

    newcomer.title = "edited"
    newcomer.save()
    [pushed] = url_items(sink.settle())
    assert '"edited"' in pushed["formats"]["http-response"]["body"]


def test_a_gateway_listing_of_a_slug_url_follows_the_object_that_took_it(sink):
    """A gateway subscription renews its listing as it first made it (``relist``): under
    the first object, after the newcomer's listing lapsed, the newcomer's changes rendered
    the URL no more."""
    from drf_grip.rest import live_urls
    from tests.testapp.models import Article

    first = Article.objects.create(slug="news", title="first")
    watch("/api/shared-articles/news/")
    sink.settle()
    [entry] = [e for e in live_urls._object_table("testapp.article", first.pk).entries()]
    listing = {
        "model": "testapp.article", "pk": str(first.pk), "key": entry["k"], "holds": "gateway",
        "entry": {k: entry[k] for k in ("req", "url", "channel")}, "by_value": True,
    }
    newcomer = _taken_over(first, "news")
    sink.settle()
    # The newcomer's listing lapses; only the gateway's renewal lists the URL again.
    live_urls._object_table("testapp.article", newcomer.pk).remove(entry["k"])
    live_urls._recent.clear()
    live_urls.relist(listing)
    assert [e["k"] for e in live_urls.affected_live_urls(Article, {newcomer.pk}, set())] == [
        entry["k"]
    ]
