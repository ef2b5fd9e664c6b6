"""Renders of one live URL by several processes publish in the order they read the data.

Found by the soak (tests/integration/test_soak.py): with two writer processes, a shared
render that read the database before the other process's commit sometimes finished after
that process had published the newer render; publishing it then left SSE and gateway
subscribers on the older representation for good.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from django.core.cache import cache

from drf_grip.grip.items import reaches_clients
from drf_grip.rest import shared
from drf_grip.rest.render import RecordedRequest
from drf_grip.rest.versions import read_version
from tests.testapp.models import Todo

ENTRY = {
    "req": RecordedRequest("http", "/api/shared-todos/", "", {"HTTP_HOST": "testserver"}).as_dict(),
    "url": "/api/shared-todos/",
    "channel": "drf.url.order-test",
}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    cache.clear()
    sent: list[dict[str, Any]] = []

    def publish(channel: str, formats: dict[str, Any], id: str | None = None,
                prev_id: str | None = None, meta: dict[str, str] | None = None) -> None:
        sent.append({"channel": channel, "formats": formats, "id": id, "prev-id": prev_id,
                     "meta": meta or {}})

    monkeypatch.setattr(shared, "publish", publish)
    yield sent
    cache.clear()


def _rendered(body: bytes, etag: str) -> tuple[int, bytes, dict[str, str], str]:
    return 200, body, {"Content-Type": "application/json"}, f'"{etag}"'


def test_a_render_overtaken_by_a_later_render_is_not_published(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def render(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            # This render read the old rows; before it finishes, another process commits,
            # renders the new rows and publishes them.
            shared.publish_live_url(ENTRY)
            return _rendered(b'{"v": "old"}', "old")
        return _rendered(b'{"v": "new"}', "new")

    monkeypatch.setattr(shared, "render_live", render)
    shared.publish_live_url(ENTRY)

    bodies = [item["formats"]["ws-message"]["content"] for item in published]
    assert len(bodies) == 1 and '"new"' in bodies[0]
    assert read_version(ENTRY["channel"]).startswith("new.")


def test_a_render_preempted_after_its_check_does_not_publish_over_a_newer_one(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the soak: a process's render passed its "overtaken?" check, then another
    process committed, rendered and published the newer rows before the first one set its
    version; the older render then went out last and a gateway subscriber stayed on it."""
    bodies = iter([_rendered(b'{"v": "old"}', "old"), _rendered(b'{"v": "new"}', "new")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))
    check = shared._since_render_began
    calls = 0

    def overtaken_then_preempted(name: str, ticket: int) -> tuple[bool, Any]:
        nonlocal calls
        calls += 1
        answer = check(name, ticket)
        if calls == 1:
            shared.publish_live_url(ENTRY)  # the other process, all the way through
        return answer

    monkeypatch.setattr(shared, "_since_render_began", overtaken_then_preempted)
    shared.publish_live_url(ENTRY)

    bodies_sent = [item["formats"]["ws-message"]["content"] for item in published]
    assert len(bodies_sent) == 1 and '"new"' in bodies_sent[0], bodies_sent
    assert read_version(ENTRY["channel"]).startswith("new.")


def test_renders_in_turn_each_publish(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = iter([_rendered(b'{"v": 1}', "one"), _rendered(b'{"v": 2}', "two")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))

    shared.publish_live_url(ENTRY)
    shared.publish_live_url(ENTRY)

    assert [item["id"].split(".")[0] for item in published] == ["one", "two"]
    assert published[1]["prev-id"] == published[0]["id"]


def test_a_render_begun_before_a_subscribers_own_newer_render_goes_out_as_a_hint(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos probe behind Pushpin: a subscriber's own GET rendered a commit the publisher had
    not published, its hold held at the version before, and the publisher's render of the
    rows before that commit, pushed whole, moved it back (t45, then t41, then t45 again).
    Such a render goes out as a hint to long-polls and streams (each then runs its own GET,
    and the version names no render), the gateway message as it is; the render begun after
    the subscriber's is pushed whole, and so is one equal to the subscriber's."""
    channel = ENTRY["channel"]

    def render_while_a_subscriber_renders_newer(recorded: RecordedRequest) -> Any:
        shared.mark_ahead(channel, "two")  # a commit, then a subscriber's render of it
        return _rendered(b'{"v": 1}', "one")

    monkeypatch.setattr(shared, "render_live", render_while_a_subscriber_renders_newer)
    shared.publish_live_url(ENTRY)
    hinted = published[-1]["formats"]
    assert hinted["http-response"] == {"action": "hint"}
    assert hinted["http-stream"] == {"action": "hint"}
    assert json.loads(hinted["ws-message"]["content"])["data"] == {"v": 1}
    assert not read_version(channel).startswith("one.")

    monkeypatch.setattr(shared, "render_live", lambda recorded: _rendered(b'{"v": 2}', "two"))
    shared.publish_live_url(ENTRY)
    assert published[-1]["formats"]["http-response"]["body"] == '{"v": 2}'
    assert published[-1]["prev-id"] == published[-2]["id"]

    shared.mark_ahead(channel, "three")
    bodies = iter([_rendered(b'{"v": 3}', "three"), _rendered(b'{"v": 4}', "four")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))
    shared.publish_live_url(ENTRY)  # began after the mark: pushed whole
    assert published[-1]["formats"]["http-stream"]["content"].startswith("id: ")
    assert read_version(channel).startswith("three.")


def _live_item(channel: str, version: str) -> dict[str, Any]:
    return {"channel": channel, "id": version,
            "formats": {"ws-message": {"content": version}, "http-stream": {"content": "x"}}}


def test_an_item_outdated_by_another_process_is_not_sent(published: list[dict[str, Any]]) -> None:
    """Two processes each queue their render of one live URL; the one whose version is no
    longer current (the other process set a newer one) is not delivered, so a gateway
    subscriber never ends on the older render whatever order the lanes send in."""
    from drf_grip.grip import destinations, publish_hooks, publisher
    from drf_grip.rest.versions import set_version

    class Sink:
        def __init__(self) -> None:
            self.items: list[dict[str, Any]] = []

        def publish_items(self, items: list[dict[str, Any]]) -> None:
            self.items.extend(items)

    channel = "drf.url.order-test"
    sink = Sink()
    destinations.register_local_sink(sink)
    publish_hooks.register_outdated_check(shared.outdated_item)
    try:
        set_version(channel, "new.2")  # another process published its newer render
        publisher.publish_items([_live_item(channel, "old.1"), _live_item("drf.ws.conn", "c1")])
        publisher.publish_items([_live_item(channel, "new.2")])
        assert publisher.get_publisher().flush(5)
    finally:
        destinations.unregister_local_sink(sink)

    assert [(i["channel"], i["id"]) for i in sink.items] == [
        ("drf.ws.conn", "c1"), (channel, "new.2")
    ]


def test_outdated_item_only_judges_live_url_items() -> None:
    from drf_grip.rest.versions import set_version

    cache.clear()
    set_version("drf.url.a", "v2")
    assert shared.outdated_item(_live_item("drf.url.a", "v1"))
    assert not shared.outdated_item(_live_item("drf.url.a", "v2"))
    assert not shared.outdated_item(_live_item("drf.url.unknown", "v1"))  # no version: keep
    assert not shared.outdated_item(_live_item("drf.testapp.todo", "v1"))  # private hint channel
    assert not shared.outdated_item({"channel": "drf.url.a", "id": "v1.closed",
                                     "formats": {"http-stream": {"action": "close"}}})
    cache.clear()


def test_a_recent_older_render_is_still_sent_as_the_link_pushpin_waits_for() -> None:
    """Pushpin holds an item whose prev-id it has not seen for up to 5 s, waiting for the
    missing one (src/handler/sequencer.cpp). A render that another process's newer render
    chains onto is that link: dropped, the newer one reached nobody for 5 s (soak test).
    Sent as a hint with its id and no prev-id, it is never held itself and releases the
    newer one at once; a second hint without an id then clears the channel's last id, which
    the older id would otherwise have taken back (``test_an_older_render_arriving_after_a_
    newer_one_does_not_hold_the_next`` in tests/integration/test_gateway_ws.py)."""
    import time

    from drf_grip.rest.versions import set_version

    cache.clear()
    older = shared.new_version("a")
    set_version("drf.url.a", shared.new_version("b"))
    assert shared.rendered_at(older) == pytest.approx(time.time(), abs=1)
    item = _live_item("drf.url.a", older)
    assert not shared.outdated_item(item)
    item["prev-id"] = "a.0"
    link, forget = shared.live_item_as_sent(item)
    hints = {"http-response": {"action": "hint"}, "http-stream": {"action": "hint"}}
    assert link == {"channel": "drf.url.a", "id": older, "formats": hints}
    assert forget == {"channel": "drf.url.a", "formats": hints}
    stale = "a." + f"{int((time.time() - 10) * 1000):012x}" + "abcd"
    assert shared.outdated_item(_live_item("drf.url.a", stale))
    assert shared.live_item_as_sent(_live_item("drf.url.a", stale)) is None
    current = _live_item("drf.url.a", shared.read_version("drf.url.a"))
    assert shared.live_item_as_sent(current) is current
    cache.clear()


def _copies_to_a_fresh_subscriber(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Connection ``conn-1`` subscribed to ``ENTRY`` a moment ago; the items published to
    connections' own channels, in order."""
    from drf_grip.rest.gateway import connections

    items: list[dict[str, Any]] = []

    def to_connection(channel: str, formats: dict[str, Any], id: str | None = None,
                      prev_id: str | None = None) -> None:
        items.append({"channel": channel, "formats": formats, "id": id})

    monkeypatch.setattr(connections, "publish", to_connection)
    _fresh_slots["conn-1"] = connections.fresh_subscribers(ENTRY["channel"]).take("conn-1", {})
    return items


#: The slot each fresh connection took in its channel's fresh subscribers.
_fresh_slots: dict[str, str | None] = {}


def _answer_settles(active_by: float = 0.0, *, listed: bool = True) -> None:
    """The settle of conn-1's subscribe answer, which rendered before any push; not
    ``listed`` among the fresh subscribers (the index was full), it goes by ``active_by``."""
    slot = _fresh_slots["conn-1"] if listed else None
    shared.send_after_answer("conn-1", ENTRY["channel"], None, active_by, slot=slot)


def _skips(item: dict[str, Any]) -> list[str]:
    return item["meta"].get("skip_users", "").split(",")


def test_a_fresh_gateway_subscriber_gets_a_render_made_before_its_subscription_once(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render published before the proxy applied a new gateway subscription missed it,
    and nothing says when the proxy applied it: until the subscribe's settle, the live URL's
    item skips the connection (``skip_users``), and the settle sends it the render. After
    the settle the live URL's channel carries the next render, which is not copied. Before,
    every render within 10 s of subscribing was also copied to the connection's own
    channel: a client got each change twice, and an older copy after the next change
    (tests/integration/test_gateway_ws.py, one message per change)."""
    from drf_grip.rest.gateway.connections import proxy_user

    to_proxy = _copies_to_a_fresh_subscriber(monkeypatch)
    bodies = iter([_rendered(b'{"v": 1}', "one"), _rendered(b'{"v": 2}', "two")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))

    shared.publish_live_url(ENTRY)
    assert to_proxy == [] and proxy_user("conn-1") in _skips(published[-1])
    _answer_settles()
    [copy] = to_proxy
    assert json.loads(copy["formats"]["ws-message"]["content"])["etag"] == '"one"'
    shared.publish_live_url(ENTRY)
    assert proxy_user("conn-1") not in _skips(published[-1])
    assert len(to_proxy) == 1


def test_a_fresh_gateway_subscriber_not_listed_gets_a_render_made_before_it_was_applied(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that found its channel's fresh subscribers full is skipped by nothing:
    its settle sends a render made before the proxy surely applied its subscription (a
    render made once the proxy had, reached it through the live URL's channel)."""
    to_proxy = _copies_to_a_fresh_subscriber(monkeypatch)
    from drf_grip.rest.gateway import connections

    fresh = connections.fresh_subscribers(ENTRY["channel"])
    fresh.remove("conn-1")
    fresh.add("conn-2", {})  # listed: the channel's renders are kept
    monkeypatch.setattr(shared, "render_live", lambda recorded: _rendered(b'{"v": 1}', "one"))

    shared.publish_live_url(ENTRY)
    assert to_proxy == [] and _skips(published[-1]) == [connections.proxy_user("conn-2")]
    _answer_settles(active_by=time.time() - 0.5, listed=False)  # the proxy had applied it
    assert to_proxy == []
    _answer_settles(active_by=time.time() + 1, listed=False)  # it may not have
    [copy] = to_proxy
    assert json.loads(copy["formats"]["ws-message"]["content"])["etag"] == '"one"'


def test_a_fresh_subscriber_whose_settle_never_ran_gets_the_next_render(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI (the browser board behind Pushpin, the server restarted right after the
    page subscribed): the settle runs in the subscribing process, and a restart drops it.
    The connection stayed listed unsettled, every render skipped it for the next 10 s, and
    the page never showed the change made after the restart. Past its due time, the next
    render is sent to it on its own channel, with the id its settle would have used, and
    the ones after reach it through the live URL's channel."""
    from drf_grip.rest.gateway import connections

    to_proxy = _copies_to_a_fresh_subscriber(monkeypatch)
    fresh = connections.fresh_subscribers(ENTRY["channel"])
    fresh.add("conn-1", {"until": time.time() - 1})  # its settle was due a second ago
    bodies = iter([_rendered(b'{"v": 1}', "one"), _rendered(b'{"v": 2}', "two")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))

    shared.publish_live_url(ENTRY)
    assert connections.proxy_user("conn-1") in _skips(published[-1])
    [copy] = to_proxy
    assert copy["formats"]["ws-message"] == published[-1]["formats"]["ws-message"]
    _answer_settles()  # a settle that was only late: the same copy, the same id
    assert [c["id"] for c in to_proxy] == [copy["id"]] * len(to_proxy)
    shared.publish_live_url(ENTRY)
    assert connections.proxy_user("conn-1") not in _skips(published[-1])
    assert {c["id"] for c in to_proxy} == {copy["id"]}


def test_a_settle_during_a_publishers_step_waits_for_the_render_it_was_skipped_for(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher moves the version, reads the fresh subscribers (this connection not
    settled: skipped) and only then keeps its render. A settle that marked itself settled
    and read in between found the version moved but no render kept for it; it must wait
    for the publisher's step and send that render, which nothing else sends it."""
    import threading

    from drf_grip.rest.gateway.connections import proxy_user
    from drf_grip.rest.tickets import exclusive
    from drf_grip.rest.versions import set_version

    to_proxy = _copies_to_a_fresh_subscriber(monkeypatch)
    channel = ENTRY["channel"]
    waiting = threading.Event()
    real = shared.exclusive

    def noted(name: str, wait: float = 2.0) -> Any:
        waiting.set()
        return real(name, wait)

    monkeypatch.setattr(shared, "exclusive", noted)
    message = {"content": json.dumps({"event": "change", "etag": '"two"'})}
    settle = threading.Thread(target=_answer_settles)
    with exclusive(channel):  # the publisher's step, half done
        set_version(channel, "v2")
        settle.start()
        assert waiting.wait(5)
        cache.set(shared._FRESH_LAST + channel, ("v2", message, [proxy_user("conn-1")]), 10)
    settle.join(5)
    [copy] = to_proxy
    assert copy["formats"]["ws-message"] == message


def test_a_copy_for_a_fresh_gateway_subscriber_is_not_sent_once_a_newer_render_exists(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a render sent to a fresh gateway subscriber's own channel (its settle:
    shared.send_after_answer) is ordered by nothing against the live URL's channel. Seen
    in CI: such a subscriber received an older render 2.3 s after the last commit, after
    the newer one. A copy still queued (or retried after an outage) when a newer render
    exists is not sent; the newer render reaches the connection itself."""
    from drf_grip.grip.publish_hooks import as_sent

    copies = _copies_to_a_fresh_subscriber(monkeypatch)
    bodies = iter([_rendered(b'{"v": "old"}', "old"), _rendered(b'{"v": "new"}', "new")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))

    shared.publish_live_url(ENTRY)
    _answer_settles()
    [older] = copies
    assert as_sent(older) == [older]  # current: sent as it is
    shared.publish_live_url(ENTRY)  # a newer render, made while the older copy waited
    assert as_sent(older) == []
    # Other items of connection channels are not judged by live URLs' versions.
    other = {"channel": "drf.ws.conn-1", "id": "7.abc", "formats": {"ws-message": {"content": "{}"}}}
    assert as_sent(other) == [other]


def test_a_copy_that_reaches_the_proxy_after_a_newer_render_is_followed_by_it_again(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI (the steady soak, two writer processes): a gateway subscriber that had
    just subscribed got render 15, then render 16 (the last), then render 15 again 10 ms
    later, and kept it. The copy of 15 for the fresh connection passed its check before
    the other process made 16, and reached the proxy after 16: nothing orders a
    connection's own channel. Once such a copy is delivered, the newest render follows."""
    from drf_grip.grip.publish_hooks import as_sent, notify_delivered

    to_proxy = _copies_to_a_fresh_subscriber(monkeypatch)  # as the proxy sees them
    bodies = iter([_rendered(b'{"v": "old"}', "old"), _rendered(b'{"v": "new"}', "n@w")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))

    shared.publish_live_url(ENTRY)
    _answer_settles()
    [older] = to_proxy
    assert as_sent(older) == [older]  # checked while current: it goes out, slowly
    to_proxy.clear()
    shared.publish_live_url(ENTRY)  # the other process's newer render reaches the client
    notify_delivered([published[-1]])
    to_proxy.append(older)  # the older copy reaches the proxy last
    notify_delivered([older])

    received = [json.loads(i["formats"]["ws-message"]["content"]) for i in to_proxy]
    assert received[-1]["etag"] == '"n@w"', received  # an ETag may hold "@" (RFC 9110)
    ids = [i["id"] for i in to_proxy]
    assert len(set(ids)) == len(ids)  # a proxy drops an id it has seen on a channel
    # Delivered again (a second proxy confirms it, say): the same id, dropped there.
    notify_delivered([older])
    assert to_proxy[-1]["id"] == ids[-1]
    # A copy that is current when delivered is followed by nothing.
    count = len(to_proxy)
    notify_delivered([to_proxy[-1]])
    assert len(to_proxy) == count


def test_a_render_that_raises_hints_the_subscribers_and_a_later_one_is_not_skipped(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared render that raised (a lost database connection, a serializer bug) published
    nothing: the URL's subscribers kept what they held until the next change, and a render
    that had stepped aside for it (``overtaken``) was never sent. Now its subscribers are
    hinted (each long-poll and stream runs its own GET), and the next render is sent even
    when it equals the one before the failure."""
    renders = iter([
        _rendered(b'{"v": 1}', "one"),
        RuntimeError("the database went away"),
        _rendered(b'{"v": 1}', "one"),
    ])

    def render(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str]:
        result = next(renders)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(shared, "render_live", render)
    shared.publish_live_url(ENTRY)
    shared.publish_live_url(ENTRY)  # raises inside
    shared.publish_live_url(ENTRY)

    assert [item["formats"].get("http-response", {}).get("action") for item in published] == [
        None, "hint", None
    ]
    assert published[1]["prev-id"] == published[0]["id"]
    assert published[2]["prev-id"] == published[1]["id"]


def test_a_url_whose_render_another_process_began_after_the_change_is_left_to_it(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four writer processes each rendered every live URL a change affected, and of two
    renders of one URL only the later one is sent: under concurrent writers most renders
    were thrown away while the last change waited behind them (the large soak). A render
    another process began after this change committed reads that change, so this process
    leaves the URL to it; one begun before the change does not count."""
    from drf_grip.rest.tickets import take_ticket

    before, after = dict(ENTRY, channel="drf.url.order-before"), dict(
        ENTRY, channel="drf.url.order-after"
    )
    monkeypatch.setattr(
        shared, "affected_live_urls", lambda model, pks, deleted: [ENTRY, before, after]
    )
    take_ticket(before["channel"])  # another process's render, begun before the change
    rendered: list[str] = []

    def render(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str]:
        if not rendered:
            # Meanwhile another process, publishing a later commit, begins its render of
            # the third URL.
            take_ticket(after["channel"])
        rendered.append("x")
        return _rendered(b'{"v": 1}', f"v{len(rendered)}")

    monkeypatch.setattr(shared, "render_live", render)
    shared.publish_shared(Todo, {1}, set())

    assert sorted(item["channel"] for item in published) == sorted(
        [ENTRY["channel"], before["channel"]]
    )
    assert len(rendered) == 2


def test_a_render_counter_that_expired_before_its_sent_mark_does_not_hold_back_renders() -> None:
    """Found by a black-box probe: with Django's file cache (the sample's), ``incr`` stores
    the counter with the cache's default timeout (300 s), so after five quiet minutes a
    URL's render counter was gone while its ``:sent`` mark (24 h) still named ticket N.
    Tickets restarted at 1, every render looked older than the last one sent, and the next
    N changes reached no subscriber, over every transport and both proxies."""
    from drf_grip.rest import tickets

    cache.clear()
    name = "url:quiet"
    for _ in range(5):
        ticket = tickets.take_ticket(name)
    tickets.mark_sent(name, ticket)
    cache.delete("drf_grip:render:" + name)  # the counter expires; the mark does not

    after_the_quiet_spell = tickets.take_ticket(name)
    assert after_the_quiet_spell > ticket
    assert not tickets.sent_after(name, after_the_quiet_spell)


def test_a_render_in_flight_when_the_render_counter_expires_is_not_published_over_a_newer_one(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``incr`` keeps the expiry ``add`` gave (Redis, local memory), so a URL's render
    counter expired a day (now ``2 * live_timeout()``) after its first render however busy the URL was. Restarted at the
    ``:sent`` mark + 1, it gave a render that began after a later commit the very ticket of
    a render still in flight with the older rows; the newer one was published, then the
    older one over it, and the URL's subscribers stayed on the older representation. The
    counter is renewed while in use (here its expiry is shrunk to a second)."""
    from drf_grip.rest import tickets

    monkeypatch.setattr(tickets, "_timeout", lambda: 1)
    monkeypatch.setattr(tickets, "_renewed", {})
    bodies = iter([_rendered(b'{"v": 0}', "zero")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))
    shared.publish_live_url(ENTRY)  # the counter's first render, sent
    time.sleep(0.6)  # busy: renders go on
    calls = 0

    def render(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            # This render read the old rows; past the counter's first expiry, another
            # process commits, renders the new rows and publishes them.
            time.sleep(0.6)
            shared.publish_live_url(ENTRY)
            return _rendered(b'{"v": "old"}', "old")
        return _rendered(b'{"v": "new"}', "new")

    monkeypatch.setattr(shared, "render_live", render)
    shared.publish_live_url(ENTRY)

    bodies_sent = [item["formats"]["ws-message"]["content"] for item in published[1:]]
    assert len(bodies_sent) == 1 and '"new"' in bodies_sent[0], bodies_sent
    assert read_version(ENTRY["channel"]).startswith("new.")


def test_a_url_this_process_began_rendering_after_the_change_is_not_rendered_again(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed while this process's publish of an earlier one was rendering
    waited for it to end, then rendered every live URL again, though the ones rendered after
    the commit had read it (the multi-process test: all its last URLs' subscribers a second
    late, their re-renders "not sent: unchanged"). Such URLs are left out."""
    import time as clock

    renders: list[str] = []

    def render(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str]:
        renders.append(recorded.path)
        return _rendered(f'{{"n": {len(renders)}}}'.encode(), f"n{len(renders)}")

    monkeypatch.setattr(shared, "render_live", render)
    monkeypatch.setattr(shared, "affected_live_urls", lambda model, pks, deleted: [ENTRY])
    committed = clock.monotonic()
    shared.publish_live_url(ENTRY)  # the earlier publish reaches this URL after the commit
    shared.publish_shared(Todo, None, set(), committed_at=committed)
    assert len(renders) == 1
    later = clock.monotonic()  # a change committed after that render began
    shared.publish_shared(Todo, None, set(), committed_at=later)
    assert len(renders) == 2
    shared.publish_shared(Todo, None, set())  # published with no commit time: rendered
    assert len(renders) == 3


@pytest.mark.parametrize("status", [500, 403])
def test_a_render_that_fails_is_no_deletion_for_streams(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """A shared list whose render failed (a serializer raising, the database down) sent its
    streams ``event: delete``, which a client closes on for good (the README's EventSource
    snippet), though the list still exists (day-one probe). Long-polls and streams are
    hinted, and each asks again as its subscriber; gateway subscribers get the status."""
    monkeypatch.setattr(
        shared, "render_live", lambda recorded: (status, b"", {"Content-Type": "text/html"}, "")
    )
    shared.publish_live_url(ENTRY)
    formats = published[-1]["formats"]
    assert formats["http-stream"] == {"action": "hint"}, formats
    assert formats["http-response"] == {"action": "hint"}
    assert f'"status": {status}' in formats["ws-message"]["content"]
    assert not any(
        item["formats"].get("http-stream", {}).get("action") == "close" for item in published
    )


def test_a_url_gone_without_an_etag_still_ends_its_streams(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 404 has no ETag of its own (``render_live`` gives ``None``). Marking each push for
    the ``skip-self`` filter read the render's ETag for it too, and raised: the URL's
    subscribers never got the end (a browser test's long-poll of a deleted todo waited)."""
    gone = (404, b'{"detail": "Not found."}', {"Content-Type": "application/json"}, None)
    monkeypatch.setattr(shared, "render_live", lambda recorded: gone)
    shared.publish_live_url(ENTRY)
    assert "event: delete" in published[0]["formats"]["http-stream"]["content"]
    assert "sender" not in (published[0].get("meta") or {})


def test_a_url_still_gone_at_the_next_change_is_not_sent_its_404_again(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that went 404 ends its streams with an item whose id is the channel's version
    (``<404's version>.closed``). A later change that leaves it 404 names the same
    representation: nothing is sent (its streams are closed, its gateway subscribers hold
    the 404). Read by its raw id, the version named no ETag and the 404 and the closing item
    went out again at every change of the model."""
    gone = (404, b'{"detail": "Not found."}', {"Content-Type": "application/json"}, '"gone"')
    monkeypatch.setattr(shared, "render_live", lambda recorded: gone)
    shared.publish_live_url(ENTRY)
    sent = len(published)
    assert sent == 2 and published[1]["id"] == published[0]["id"] + ".closed"

    shared.publish_live_url(ENTRY)
    assert len(published) == sent, published[sent:]

    # The page comes back: its render chains onto the closing item, as the proxy last saw.
    monkeypatch.setattr(shared, "render_live", lambda recorded: _rendered(b'{"v": 1}', "back"))
    shared.publish_live_url(ENTRY)
    assert published[-1]["prev-id"] == published[1]["id"]


def test_the_render_after_one_a_proxy_never_got_follows_an_item_that_resets_its_sequence(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A render given up for a proxy (the process's proxy URL wrong, the proxy down past the
    retries) still moved the channel's version in the shared cache, so the next render
    named its id as prev-id: Pushpin held that render 5 s in its sequencer, and the
    embedded proxy gave it to no WebSocket (publishing probe: shared gateway subscribers
    stayed on the old representation until the change after the next). An item that no
    client receives, and that has no id, goes first: a proxy then forgets the channel's
    last id (Pushpin's sequencer), and delivers the render, chained as the holds are, at
    once."""
    from drf_grip.grip.publisher import get_publisher
    from drf_grip.testing import free_port
    from tests.drf_helpers import RecordingSink

    cache.clear()
    bodies = iter([_rendered(b'{"v": 1}', "one"), _rendered(b'{"v": 2}', "two")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))
    settings.GRIP_URL = f"http://127.0.0.1:{free_port()}/"  # nothing listens: given up
    settings.DRF_GRIP = {"PUBLISH_RETRIES": 1, "PUBLISH_BACKOFF": 0.001,
                         "PUBLISH_BACKOFF_MAX": 0.005}
    failed = get_publisher().stats.failed
    shared.publish_live_url(ENTRY)
    get_publisher().flush(10)
    assert get_publisher().stats.failed > failed
    lost = read_version(ENTRY["channel"])
    assert lost.startswith("one.")

    settings.GRIP_URL = None
    with RecordingSink() as sink:
        shared.publish_live_url(ENTRY)
        [item] = [i for i in sink.settle() if i["channel"] == ENTRY["channel"]]
        [reset] = [i for i in sink.silent if i["channel"] == ENTRY["channel"]]
    assert item["id"].startswith("two.") and item["prev-id"] == lost, item
    assert "id" not in reset and "prev-id" not in reset, reset
    cache.clear()


def test_the_render_after_a_subscribers_first_version_follows_an_item_that_resets_its_sequence(
    settings: Any,
) -> None:
    """A subscriber's first version of a live URL is never an item's id, and a proxy may
    still know an older id of the channel (the cache flushed while it ran on). The render
    after it, chained onto it, waited 5 s in Pushpin's sequencer and reached its
    WebSocket subscribers after newer renders (convergence harness, Redis restarted); sent
    without a prev-id, every long-poll held at that version was re-requested instead of
    pushed to. An item no client receives, with no id, goes just before it."""
    from tests.drf_helpers import RecordingSink

    cache.clear()
    first = shared.first_version(ENTRY["channel"], '"one"')
    with RecordingSink() as sink:
        with patch.object(shared, "render_live", lambda recorded: _rendered(b'{"v": 2}', "two")):
            shared.publish_live_url(ENTRY)
            sink.settle()
        mine = [i for i in sink.everything if i["channel"] == ENTRY["channel"]]
    assert len(mine) == 2, mine
    reset, render = mine
    assert "id" not in reset and "prev-id" not in reset and not reaches_clients(reset), reset
    assert render["prev-id"] == first and render["id"].startswith("two."), render
    with RecordingSink() as sink:
        with patch.object(shared, "render_live", lambda recorded: _rendered(b'{"v": 3}', "three")):
            shared.publish_live_url(ENTRY)
            sink.settle()
        [later] = [i for i in sink.everything if i["channel"] == ENTRY["channel"]]
    assert later["prev-id"] == render["id"]  # the proxy saw that one: no reset
    cache.clear()


def test_a_subscribers_first_version_is_known_unseen_without_a_cache_write(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber's first GET of a live URL wrote an unseen mark to the shared cache on
    every call, also when the channel already had a version (one more cache write per
    subscriber on the connect path, issue 10). The first version says so itself: with
    its marks gone (a cache that evicted them), the render after it still resets the
    proxies' sequence, and a first GET of a URL that already has a version writes
    nothing."""
    from drf_grip.rest.store import state_cache
    from tests.drf_helpers import RecordingSink

    cache.clear()
    first = shared.first_version(ENTRY["channel"], '"one"')
    state_cache().delete(shared._unseen_key(ENTRY["channel"], first))  # evicted, if written
    with RecordingSink() as sink:
        with patch.object(shared, "render_live", lambda recorded: _rendered(b'{"v": 2}', "two")):
            shared.publish_live_url(ENTRY)
            sink.settle()
        mine = [i for i in sink.everything if i["channel"] == ENTRY["channel"]]
    assert [("id" in i, reaches_clients(i)) for i in mine] == [(False, False), (True, True)]
    assert mine[1]["prev-id"] == first

    writes: list[str] = []
    store = state_cache()
    for name in ("set", "set_many", "add"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _r=real, _n=name, **k: (
            writes.append(_n), _r(*a, **k))[1])
    current = read_version(ENTRY["channel"])
    assert shared.first_version(ENTRY["channel"], f'"{shared.tag_of(current)}"') == current
    assert writes == ["add"], writes  # the refused add only
    cache.clear()


def test_a_settles_copy_reaches_the_proxies_before_a_newer_render_is_published(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen past one machine (a probe's resubscribing gateway client): v28, v24, then v28
    again. The settle's copy of the render a fresh subscriber was skipped for (v24) was
    queued; another process published a newer render (v28) to the live URL's channel
    meanwhile, and it reached the proxy first: nothing orders two channels. The copy is
    delivered while the settle holds the channel's lock, so a newer render is published
    only once the copy has reached the proxies."""
    import threading

    from drf_grip.rest.gateway import connections

    bodies = iter([_rendered(b'{"v": "old"}', "old"), _rendered(b'{"v": "new"}', "new")])
    monkeypatch.setattr(shared, "render_live", lambda recorded: next(bodies))
    _copies_to_a_fresh_subscriber(monkeypatch)
    shared.publish_live_url(ENTRY)  # skips the fresh connection: its settle sends it
    order: list[str] = []
    newer_published = threading.Event()

    def another_process_publishes() -> None:
        shared.publish_live_url(ENTRY)
        order.append("newer render published")
        newer_published.set()

    racing = threading.Thread(target=another_process_publishes)

    def copy_delivered(*args: Any, **kwargs: Any) -> None:
        racing.start()
        newer_published.wait(0.5)  # a publisher not held back is done well within it
        order.append("copy delivered")

    monkeypatch.setattr(connections, "publish", copy_delivered)
    _answer_settles()
    racing.join(5)
    assert order == ["copy delivered", "newer render published"]
    assert [item["id"] for item in published][-1] == read_version(ENTRY["channel"])


def test_a_subscribe_answer_ahead_of_its_version_waits_for_the_push_of_that_version(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen past one machine (a probe's gateway client): answered v17, then given v15. The
    push of the version the subscribe read (v15) was published before the connection
    listed itself as a fresh subscriber, so it did not skip it, and it reached the proxy
    after the subscription: Pushpin orders no ``ws-message`` items. An answer whose render
    is ahead of that version is sent once a proxy confirmed that push (or another), at
    most ``CONFIRM_WAIT`` later; one that shows what the version names is sent at once."""
    import threading

    from drf_grip.rest.versions import acknowledge, set_version

    channel = ENTRY["channel"]
    read = shared.new_version("v15")
    set_version(channel, read)  # published, not yet confirmed
    shared.await_the_push_read(channel, read, '"v15"')  # names it: no wait at all

    confirmed = threading.Event()
    waited = threading.Thread(
        # Only a confirmation ends a wait of 30 s within this test.
        target=lambda: (
            shared.await_the_push_read(channel, read, '"v17"', within=30.0),
            confirmed.set(),
        )
    )
    waited.start()
    assert not confirmed.wait(0.2)  # ahead: waits for the push of v15
    acknowledge([{"channel": channel, "id": read, "formats": {"ws-message": {}}}])
    assert confirmed.wait(10)
    waited.join(1)


def test_the_push_an_answer_was_ahead_of_skips_its_subscriber_where_it_arrives_late(
    published: list[dict[str, Any]],
) -> None:
    """Seen past one machine with one of two Pushpins restarted (a probe's gateway client):
    answered v28, then given v26. The other Pushpin had confirmed the push of v26, so the
    answer went at once (a proxy confirmed it), and the restarted one got that push from
    the publisher's retry after it had applied the subscription. Wherever that push is sent
    from then on, it skips the connection answered ahead of it (Pushpin's ``skip-users``
    filter, which a shared gateway subscription asks for), and still reaches every other
    subscriber, for whom it is news."""
    from drf_grip.protocol import SKIP_USERS, dropped_by
    from drf_grip.rest.versions import acknowledge, set_version

    channel = ENTRY["channel"]
    read = shared.new_version("v26")
    set_version(channel, read)
    push = {"channel": channel, "id": read, "meta": {"skip_users": "fresh-one"},
            "formats": {"ws-message": {"content": "v26"}}}
    acknowledge([push])  # by the first proxy
    started = time.monotonic()
    shared.await_the_push_read(channel, read, '"v28"', "answered", within=30.0)
    assert time.monotonic() - started < 10  # confirmed: the answer leaves at once

    retried = shared.live_item_as_sent(push)  # to the second proxy, late
    meta = retried["meta"]
    assert dropped_by([SKIP_USERS], {"user": "answered"}, meta)
    assert dropped_by([SKIP_USERS], {"user": "fresh-one"}, meta)  # what it skipped before
    assert not dropped_by([SKIP_USERS], {"user": "another"}, meta)
    assert retried["formats"] == push["formats"]
    # An answer that shows what its version names is no reason to skip anyone.
    other = shared.new_version("v29")
    set_version(channel, other)
    shared.await_the_push_read(channel, other, '"v29"', "current")
    later = {"channel": channel, "id": other, "formats": {"ws-message": {"content": "v29"}}}
    assert shared.live_item_as_sent(later) is later


def test_with_two_proxies_an_answer_ahead_waits_for_the_push_to_reach_each_of_them(
    published: list[dict[str, Any]], settings: Any
) -> None:
    """The probe past one machine, both Pushpins up, 3 of 40 runs: a shared gateway
    subscriber answered v18, then given v17 at once. The first proxy had confirmed the push
    of v17, so the answer left; the second still had that push on its way, sent before the
    subscribe named the connection as one it skips, and it arrived after the answer. The
    answer now waits for each proxy's confirmation of that push (or of another since)."""
    import threading

    from drf_grip.grip.destinations import endpoint_names
    from drf_grip.grip.publish_hooks import notify_delivered
    from drf_grip.rest.versions import set_version

    settings.GRIP_URL = None
    settings.GRIP_PROXIES = [
        {"control_uri": "http://127.0.0.1:1/", "key": "k" * 32},
        {"control_uri": "http://127.0.0.1:2/", "key": "k" * 32},
    ]
    first_proxy, second_proxy = endpoint_names()
    channel = ENTRY["channel"]
    read = shared.new_version("v17")
    set_version(channel, read)
    push = {"channel": channel, "id": read, "formats": {"ws-message": {"content": "v17"}}}
    notify_delivered([push], first_proxy)

    answered = threading.Event()

    def subscribe() -> None:
        shared.await_the_push_read(channel, read, '"v18"', "answered", within=30.0)
        answered.set()

    waiter = threading.Thread(target=subscribe)
    waiter.start()
    try:
        # Waiting on the second proxy: the answer has not left after the first's confirmation.
        assert not answered.wait(0.5)
        notify_delivered([push], second_proxy)
        assert answered.wait(10)
    finally:
        notify_delivered([push], second_proxy)
        waiter.join(30)
    # With both confirmed, the next answer ahead of that version leaves at once.
    started = time.monotonic()
    shared.await_the_push_read(channel, read, '"v18"', "another", within=30.0)
    assert time.monotonic() - started < 10


def test_a_lock_released_soon_is_not_read_first_and_one_past_its_half_life_only_if_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each send to a gateway subscription and each shared render takes ``exclusive``; its
    release read the lock back before deleting it, a round trip per send (the large soak's
    writers were mostly such trips). Well within its expiry it is still ours, so it goes at
    once; later, another process may hold it since ours expired, and that one stays."""
    from drf_grip.rest import tickets
    from drf_grip.rest.store import state_cache

    cache.clear()
    store = state_cache()
    reads: list[str] = []
    real_get = store.get

    def get(key: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(key)
        return real_get(key, *args, **kwargs)

    monkeypatch.setattr(store, "get", get)
    lock = "drf_grip:render:release-test:lock"
    with tickets.exclusive("release-test"):
        assert store.get(lock) is not None
        reads.clear()
    assert reads == [] and real_get(lock) is None

    clock = [1000.0]
    # tickets.py's own clock only: the publisher's threads keep theirs.
    monkeypatch.setattr(tickets, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                         sleep=time.sleep))
    with tickets.exclusive("release-test"):
        clock[0] += tickets._LOCK_SECONDS  # ours expired meanwhile; another took it
        store.set(lock, "another's", 5)
    assert real_get(lock) == "another's"
    store.delete(lock)
    with tickets.exclusive("release-test"):
        clock[0] += tickets._LOCK_SECONDS - 1  # late, but still ours
    assert real_get(lock) is None


def test_a_renders_step_writes_the_new_version_and_its_sent_mark_in_one_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step of a shared render (``_take_version``, under the channel's lock) moved the
    channel's version, then marked the render sent: two writes, two round trips, for every
    live URL a change renders. Both live as long (twice a live URL's life), so one."""
    from drf_grip.rest.tickets import sent_key, take_ticket
    from drf_grip.rest.versions import version_key
    from tests.drf_helpers import StateCacheCalls

    cache.clear()
    channel = ENTRY["channel"]
    ticket = take_ticket(channel)
    writes = StateCacheCalls(monkeypatch, ("set", "set_many"))

    turn = shared._take_version(channel, ticket, '"t1"')

    assert turn is not None and read_version(channel) == turn.version
    ours = [(method, keys) for method, keys in writes.calls
            if {version_key(channel), sent_key(channel)} & set(keys)]
    assert ours == [("set_many", [version_key(channel), sent_key(channel)])]


def test_a_pass_does_not_read_again_the_tickets_it_just_read_before_its_first_render(
    published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass reads every URL's ticket at once, then, before each render, reads that URL's
    ticket again (another process may have begun rendering it while this pass rendered the
    ones before). Before the pass's first render nothing ran since the first read: a round
    trip for nothing on every change, most of which render one or two URLs."""
    from drf_grip.rest.tickets import counter_key
    from tests.drf_helpers import StateCacheCalls

    other = dict(ENTRY, channel="drf.url.order-other")
    monkeypatch.setattr(
        shared, "affected_live_urls", lambda model, pks, deleted: [ENTRY, other]
    )
    reads = StateCacheCalls(monkeypatch, ("get",))
    monkeypatch.setattr(shared, "render_live", lambda recorded: _rendered(b"{}", "v1"))

    shared.publish_shared(Todo, {1}, set())

    assert [keys for _method, keys in reads.calls if keys == [counter_key(ENTRY["channel"])]] == []
    # After a render, the next URL's ticket is read again (as the test above needs).
    assert [counter_key(other["channel"])] in [keys for _method, keys in reads.calls]
    assert len(published) == 2
