"""Response holds, stream holds and pass-through, as a client of the embedded proxy sees them."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from .conftest import KEY, Origin, ProxyServer, Response, in_thread, run

HOLD = [("Grip-Hold", "response"), ("Content-Type", "text/plain")]


def test_plain_response_passes_through_signed_and_without_grip_headers(server: ProxyServer, origin: Origin):
    @origin.route("/plain/")
    def plain(request):
        return Response(200, [("Content-Type", "text/plain"), ("Grip-Anything", "x")], chunks=[b"a", b"b" * 100_000])

    response = httpx.get(server.url + "/plain/", headers={"Grip-Sig": "forged", "Grip-Last": "x"})

    assert response.status_code == 200
    assert response.content == b"a" + b"b" * 100_000
    assert not any(name.lower().startswith("grip-") for name in response.headers)
    (request,) = origin.requests_to("/plain/")
    claims = jwt.decode(request.headers["grip-sig"], KEY, algorithms=["HS256"])
    assert claims["iss"] == "drf-grip"
    assert "grip-last" not in request.headers
    assert "link:next" in request.headers["grip-feature"]


def _woken(server: ProxyServer, method: str, pushed: dict) -> httpx.Response:
    """The answer to a ``method`` request of ``/todo/`` held on channel ``todo`` and woken
    by a publish of the ``http-response`` format ``pushed``."""

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.request(method, "/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            await in_thread(server.publish, {"channel": "todo", "formats": {"http-response": pushed}})
            return await poll

    return run(scenario())


def test_long_poll_gets_the_published_response_merged_onto_the_hold(server: ProxyServer, origin: Origin):
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo"), ("ETag", '"v1"'), ("X-Kept", "yes")], "old"))

    response = _woken(server, "GET", {"code": 200, "headers": {"Content-Type": "application/json"}, "body": "{\"v\": 2}"})

    assert response.status_code == 200
    assert response.text == '{"v": 2}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"v1"'  # Pushpin merges: the hold's ETag stays
    assert response.headers["x-kept"] == "yes"
    assert "grip-hold" not in response.headers
    assert server.proxy.wait_for_idle("todo")


def test_a_long_poll_skips_an_item_its_skip_self_filter_drops_and_takes_the_next(
    server: ProxyServer, origin: Origin
):
    """Pushpin applies a channel's ``skip-self`` filter to response holds too: an item whose
    ``sender`` meta is the hold's ``user`` (``Grip-Set-Meta``) is not sent, and its id is
    taken as the hold's last all the same, so the next item follows (1.36,
    handler/httpsession.cpp, ``processItem``). The embedded proxy woke the hold with it."""
    origin.route("/todo/")(lambda r: Response(200, HOLD + [
        ("Grip-Channel", "todo; prev-id=1; filter=skip-self"), ("Grip-Set-Meta", 'user="1 a"'),
    ], "a"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            for item_id, prev_id, body in (("2", "1", "a"), ("3", "2", "b")):
                await in_thread(server.publish, {
                    "channel": "todo", "id": item_id, "prev-id": prev_id,
                    "meta": {"sender": f"{prev_id} {body}"},
                    "formats": {"http-response": {"body": body}},
                })
            return await poll

    assert run(scenario()).text == "b"
    assert len(origin.requests_to("/todo/")) == 1  # taken, not re-requested


def test_a_woken_head_long_poll_has_the_get_s_content_length_and_no_body(
    server: ProxyServer, origin: Origin
):
    """RFC 9110 §9.3.2/§8.6: a HEAD's Content-Length is what a GET's would be. The embedded
    proxy answered a woken HEAD ``content-length: 0``; Pushpin the body's length (probe)."""
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo"), ("ETag", '"v1"')], ""))
    pushed = '{"title": "new"}'

    response = _woken(server, "HEAD", {"code": 200, "headers": {"ETag": '"v2"'}, "body": pushed})

    assert response.status_code == 200 and response.headers["etag"] == '"v2"'
    assert response.headers["content-length"] == str(len(pushed)) and response.content == b""


@pytest.mark.parametrize(
    "held_body, patch, expected",
    [
        # Pushpin 1.36 (handler/jsonpatch.cpp): ops in order, written compact with members
        # sorted, the held body's final newline kept.
        ('{"title": "old", "done": false, "tags": ["a"]}\n',
         [{"op": "replace", "path": "/title", "value": "new"},
          {"op": "add", "path": "/tags/-", "value": "b"},
          {"op": "test", "path": "/done", "value": False}],
         '{"done":false,"tags":["a","b"],"title":"new"}\n'),
        ('[1, 2, 3]', [{"op": "remove", "path": "/0"}, {"op": "move", "from": "/0", "path": "/-"}],
         '[3,2]'),
    ],
    ids=["object", "array"],
)
def test_a_body_patch_is_applied_to_the_held_json_body(
    server: ProxyServer, origin: Origin, held_body, patch, expected
):
    origin.route("/todo/")(lambda r: Response(200, [
        ("Grip-Hold", "response"), ("Grip-Channel", "todo"), ("Content-Type", "application/json"),
        ("ETag", '"v1"'),
    ], held_body))

    response = _woken(server, "GET", {"headers": {"ETag": '"v2"'}, "body-patch": patch})

    assert (response.status_code, response.text) == (200, expected)
    assert response.headers["etag"] == '"v2"'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(expected.encode()))


@pytest.mark.parametrize(
    "held_body, patch",
    [
        ('{"title": "old"}', [{"op": "test", "path": "/title", "value": "other"}]),
        ('{"title": "old"}', [{"op": "remove", "path": "/missing"}]),
        ('{"title": "old"}', [{"op": "frobnicate", "path": "/title"}]),
        ('{"title": "old"}', [{"op": "replace", "path": "/", "value": 5}]),  # not a container
        ("plain text", [{"op": "add", "path": "/x", "value": 1}]),
        ('"a JSON string"', []),
    ],
    ids=["test-fails", "remove-missing", "unknown-op", "scalar-result", "not-json",
         "not-container"],
)
def test_a_body_patch_that_cannot_be_applied_is_a_502(
    server: ProxyServer, origin: Origin, held_body, patch
):
    # Pushpin 1.36 (handler/httpsession.cpp): the failed patch leaves no body, a filter
    # error, and the held client is answered 502 Bad Gateway.
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo")], held_body))

    response = _woken(server, "GET", {"body-patch": patch})

    assert response.status_code == 502
    assert "body-patch could not be applied" in response.text


@pytest.mark.parametrize(
    "instruct, reason",
    [
        ([("Grip-Hold", "response"), ("Grip-Timeout", "5.5")], "failed to parse Grip-Timeout"),
        ([("Grip-Hold", "response"), ("Grip-Timeout", "1e3")], "failed to parse Grip-Timeout"),
        ([("Grip-Hold", "response"), ("Grip-Timeout", "-5")], "Grip-Timeout has invalid value"),
        ([("Grip-Hold", "stream"), ("Grip-Keep-Alive", "ka; timeout=1.5")],
         "failed to parse Grip-Keep-Alive timeout value"),
        ([("Grip-Hold", "stream"), ("Grip-Link", "</next/>; rel=next; timeout=2.5")],
         "failed to parse Grip-Link timeout value"),
    ],
    ids=["fraction", "exponent", "negative", "keep-alive", "link"],
)
def test_a_timeout_that_is_not_whole_seconds_is_a_502(
    server: ProxyServer, origin: Origin, instruct, reason
):
    # Pushpin 1.36 reads these timeouts as C ints (handler/instruct.cpp, fromResponse) and
    # answers the client 502; the embedded proxy held "5.5" for 5.5 s (a probe).
    origin.route("/todo/")(lambda r: Response(200, instruct + [("Grip-Channel", "todo")], "held"))

    started = time.monotonic()
    response = httpx.get(server.url + "/todo/", timeout=4)

    assert response.status_code == 502 and reason in response.text
    assert time.monotonic() - started < 2
    assert server.proxy.wait_for_idle("todo")


def test_timeout_answers_the_held_response_with_grip_status(server: ProxyServer, origin: Origin):
    origin.route("/todo/")(lambda r: Response(
        200, HOLD + [("Grip-Channel", "todo"), ("Grip-Timeout", "1"), ("Grip-Status", "304"), ("ETag", '"v1"')], ""
    ))

    response = httpx.get(server.url + "/todo/", timeout=10)

    assert response.status_code == 304
    assert response.headers["etag"] == '"v1"'
    assert not any(name.lower().startswith("grip-") for name in response.headers)


def test_hint_resends_the_clients_original_request(server: ProxyServer, origin: Origin):
    versions = iter(["v1", "v2"])

    @origin.route("/todo/")
    def todo(request):
        version = next(versions)
        if request.headers.get("if-none-match") == '"v1"' and version == "v1":
            return Response(200, HOLD + [("Grip-Channel", "todo; prev-id=1"), ("ETag", '"v1"')], "")
        return Response(200, [("ETag", f'"{version}"')], f"body {version}")

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.post(
                "/todo/?page=2", content=b"payload",
                headers={"Authorization": "Token alice", "If-None-Match": '"v1"', "Cookie": "a=b"},
            ))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            await in_thread(server.publish, {"channel": "todo", "id": "2", "prev-id": "1",
                                             "formats": {"http-response": {"action": "hint"}}})
            return await poll

    response = run(scenario())
    assert response.status_code == 200
    assert response.text == "body v2"
    first, retry = origin.requests_to("/todo/")
    for name in ("authorization", "if-none-match", "cookie"):
        assert retry.headers[name] == first.headers[name]
    assert (retry.method, retry.query, retry.body) == ("POST", "page=2", b"payload")
    assert retry.headers["grip-last"] == "todo; last-id=2"
    assert "grip-sig" in retry.headers


def test_hint_re_holds_when_the_origin_holds_again(server: ProxyServer, origin: Origin):
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo")], "held"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscriptions, "todo", 1)
            await in_thread(server.publish, {"channel": "todo", "formats": {"http-response": {"action": "hint"}}})
            assert await in_thread(server.proxy.wait_for_subscriptions, "todo", 2)
            assert not poll.done()
            await in_thread(server.publish, {"channel": "todo", "formats": {"http-response": {"body": "pushed"}}})
            return await poll

    assert run(scenario()).text == "pushed"
    assert len(origin.requests_to("/todo/")) == 2


def test_hold_behind_the_channel_is_re_requested_at_once_with_grip_last(server: ProxyServer, origin: Origin):
    # The race: a change (id 2) was published after the origin read version 1 but before
    # the proxy subscribed. The hold's prev-id=1 differs from the channel's last id.
    server.publish({"channel": "todo", "id": "2", "prev-id": "1", "formats": {"http-response": {"body": "x"}}})

    @origin.route("/todo/")
    def todo(request):
        if "grip-last" in request.headers:
            return Response(200, [("ETag", '"v2"')], "fresh v2")
        return Response(200, HOLD + [("Grip-Channel", "todo; prev-id=1")], "")

    response = httpx.get(server.url + "/todo/", timeout=10)

    assert response.text == "fresh v2"
    # The id the hold has, as Pushpin 1.36 sends it (run against it): not the channel's.
    assert origin.requests_to("/todo/")[1].headers["grip-last"] == "todo; last-id=1"
    # Nor was the hold a subscription: Pushpin retries it before it creates the session and
    # logs no ``subscribe`` for it, so a test waiting for one waits for the retry's hold.
    assert server.proxy.subscription_counts().get("todo", 0) == 0


def test_a_gap_re_requests_with_the_id_the_client_has_not_the_one_it_missed(
    server: ProxyServer, origin: Origin
):
    """An origin that resumes from ``Grip-Last`` (django-grip's ``request.grip.last``) must
    be told what its client has: item 2 never reached it. The embedded proxy said 3, the
    item it did not deliver, so the origin skipped 2 and 3 (differential probe against
    Pushpin 1.36, which says 1)."""

    @origin.route("/feed/")
    def feed(request):
        if "grip-last" in request.headers:
            return Response(200, [], "resumed after " + request.headers["grip-last"])
        return Response(200, HOLD + [("Grip-Channel", "feed; prev-id=1")], "")

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            poll = asyncio.ensure_future(client.get("/feed/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "feed")
            await in_thread(server.publish, {"channel": "feed", "id": "3", "prev-id": "2",
                                             "formats": {"http-response": {"body": "three"}}})
            return await poll

    assert run(scenario()).text == "resumed after feed; last-id=1"


def test_publish_with_a_gap_in_ids_re_requests_instead_of_delivering(server: ProxyServer, origin: Origin):
    @origin.route("/todo/")
    def todo(request):
        if "grip-last" in request.headers:
            return Response(200, [], "fresh")
        return Response(200, HOLD + [("Grip-Channel", "todo; prev-id=1")], "")

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            # id 2 was missed: this publish follows 2, not 1.
            await in_thread(server.publish, {"channel": "todo", "id": "3", "prev-id": "2",
                                             "formats": {"http-response": {"body": "stale-3"}}})
            return await poll

    assert run(scenario()).text == "fresh"


def test_an_origin_that_keeps_holding_behind_the_channel_does_not_spin(server: ProxyServer, origin: Origin):
    """Held anyway after 3 retries; the next item, which does not follow the hold's own
    prev-id, asks the origin afresh (as Pushpin's session does) instead of answering."""
    server.publish({"channel": "todo", "id": "9", "formats": {"http-response": {"body": "x"}}})
    published = []

    def todo(request):
        if published:
            return Response(200, [], "fresh")
        return Response(200, HOLD + [("Grip-Channel", "todo; prev-id=1")], "")

    origin.route("/todo/")(todo)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            # The hold taken after 3 retries: the holds it re-requested were no subscribe events.
            assert await in_thread(server.proxy.wait_for_subscriptions, "todo", 1)
            assert len(origin.requests_to("/todo/")) == 4  # the hold and 3 retries, then held
            published.append(True)
            await in_thread(server.publish, {"channel": "todo", "id": "10", "prev-id": "9",
                                             "formats": {"http-response": {"body": "ten"}}})
            return await poll

    assert run(scenario()).text == "fresh"
    assert len(origin.requests_to("/todo/")) == 5


@pytest.mark.parametrize(
    "published, delivered",
    [
        # Pushpin 1.36 delivers an id published again (measured); the embedded proxy dropped
        # it for 60 s, so a representation that went A, B, A with its ETag as the id was
        # lost here (an embedded-versus-Pushpin probe).
        ([("1", None, "one"), ("1", None, "one again"), ("2", None, "two"), ("1", None, "one once more")],
         ["one", "one again", "two", "one once more"]),
        # Pushpin 1.36 delivers both; the embedded proxy dropped the second as a duplicate
        # of the first's id "" (GRIP probe).
        ([("", None, "one"), ("", None, "two")], ["one", "two"]),
        # Pushpin 1.36 tells an absent prev-id (null) from an empty one (handler/sequencer.cpp,
        # addItem): ids a, a, b, a published with prev-id "" on a stream with no prev-id
        # delivered only the first (measured); the embedded proxy read "" as none and sent all.
        ([("a", "", "one"), ("a", "", "two"), ("b", "", "three"), ("a", "", "four")], ["one"]),
    ],
    ids=["repeated", "empty", "empty-prev-id"],
)
def test_repeated_ids_are_delivered(server: ProxyServer, origin: Origin, published, delivered):
    origin.route("/s/")(lambda r: Response(200, [("Grip-Hold", "stream"), ("Grip-Channel", "s")], "start\n"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/s/") as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "start"
                assert await in_thread(server.proxy.wait_for_subscribers, "s")
                for item_id, prev_id, line in published:
                    item = {"channel": "s", "id": item_id,
                            "formats": {"http-stream": {"content": line + "\n"}}}
                    if prev_id is not None:
                        item["prev-id"] = prev_id
                    await in_thread(server.publish, item)
                await in_thread(server.publish, {"channel": "s", "formats": {"http-stream": {"action": "close"}}})
                return [line async for line in lines]

    assert run(scenario()) == delivered


def test_stream_appends_publishes_keeps_alive_and_closes(server: ProxyServer, origin: Origin):
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev"), ("Content-Type", "text/event-stream"),
        ("Content-Length", "9"), ("Grip-Keep-Alive", ":\\n; format=cstring; timeout=1"),
    ], "event: a\n"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/events/") as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert "content-length" not in response.headers
                lines = response.aiter_lines()
                assert await lines.__anext__() == "event: a"
                assert await lines.__anext__() == ":"  # the keep-alive, after 1 s of silence
                assert await in_thread(server.proxy.wait_for_subscribers, "ev")
                await in_thread(server.publish, {"channel": "ev", "formats": {"http-stream": {"content": "event: b\n"}}})
                assert await lines.__anext__() == "event: b"
                await in_thread(server.publish, {"channel": "ev", "formats": {"http-stream": {"action": "close"}}})
                return [line async for line in lines]

    assert run(scenario()) == []
    assert server.proxy.wait_for_idle("ev")


def test_a_stream_whose_first_event_is_over_the_client_message_limit_is_served(
    server: ProxyServer, origin: Origin
):
    """The origin is trusted: its GRIP answer of a 1.05 MB representation was answered
    ``502 ... exceeds 1048576 bytes`` (the limit of what clients send) while the plain GET
    of it worked (black-box probe)."""
    event = b"data: " + b"x" * 1_100_000 + b"\n\n"
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev"), ("Content-Type", "text/event-stream"),
    ], event))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("GET", "/events/") as response:
                received = b""
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if len(received) >= len(event):
                        break
                return response.status_code, received

    status, received = run(scenario())
    assert status == 200 and received == event


def test_stream_hint_fetches_the_next_link_as_a_bare_get(server: ProxyServer, origin: Origin):
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev; prev-id=1"),
        ("Grip-Link", "</events/next/tok123/?after=1>; rel=next; timeout=120"),
    ], "first\n"))
    origin.route("/events/next/tok123/")(lambda r: Response(200, [], "from the next link\n"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/events/", headers={"Cookie": "s=1", "Authorization": "Token t"}) as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "first"
                assert await in_thread(server.proxy.wait_for_subscribers, "ev")
                await in_thread(server.publish, {"channel": "ev", "id": "2", "prev-id": "1",
                                                 "formats": {"http-stream": {"action": "hint"}}})
                # The link's answer has no hold and no further link: the stream ends.
                return [line async for line in lines]

    assert run(scenario()) == ["from the next link"]
    (link,) = origin.requests_to("/events/next/tok123/")
    assert link.method == "GET" and link.query == "after=1"
    assert {name for name, _ in link.header_list} == {"host", "grip-last", "grip-sig", "grip-feature"}
    assert link.headers["grip-last"] == "ev; last-id=2"
    assert link.headers["host"] == f"127.0.0.1:{server.port}"


def test_a_stream_held_at_a_prev_id_without_a_next_link_is_answered_whole(
    server: ProxyServer, origin: Origin
):
    """Pushpin 1.36 does not hold such a stream: the client gets the answer whole, and a
    publish reaches nobody. The embedded proxy held it, so a stream that worked here ended
    at once behind Pushpin (an embedded-versus-Pushpin probe)."""
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev; prev-id=1"), ("Content-Type", "text/plain"),
    ], "start\n"))
    response = httpx.get(server.url + "/events/", timeout=5)
    assert response.status_code == 200 and response.text == "start\n"
    assert response.headers["content-length"] == "6"
    assert not any(name.lower().startswith("grip-") for name in response.headers)


def test_a_next_link_that_fails_is_fetched_again_before_the_stream_ends(
    server: ProxyServer, origin: Origin
):
    """Pushpin 1.36 fetches a failing next link again, about 1 s later and then less and
    less often, for about half a minute (measured); the embedded proxy ended the stream at
    the first 500, where Pushpin's stream got the next answer (an embedded-versus-Pushpin
    probe)."""
    answers = iter([Response(500, [], "oops"), Response(200, [], "recovered\n")])
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev"),
        ("Grip-Link", "</events/next/>; rel=next; timeout=120"),
    ], "first\n"))
    origin.route("/events/next/")(lambda r: next(answers))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            async with client.stream("GET", "/events/") as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "first"
                assert await in_thread(server.proxy.wait_for_subscribers, "ev")
                await in_thread(server.publish, {"channel": "ev",
                                                 "formats": {"http-stream": {"action": "hint"}}})
                return [line async for line in lines]

    assert run(scenario()) == ["recovered"]
    assert len(origin.requests_to("/events/next/")) == 2


def _linked_stream(origin: Origin, *, next_prev_id: str, next_body: str) -> None:
    """``/events/`` holds a stream on ``ev`` at prev-id 1 with a next link, whose answer
    holds again at ``next_prev_id``."""
    link = ("Grip-Link", "</events/next/>; rel=next; timeout=120")
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev; prev-id=1"), link,
    ], "first\n"))
    origin.route("/events/next/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", f"ev; prev-id={next_prev_id}"), link,
    ], next_body))


async def _line_after_publishing(server: ProxyServer, item: dict, *, holds: int = 1) -> str:
    """Open ``/events/``, publish ``item`` once ``ev`` has been held ``holds`` times (the
    first answer's hold, then each next-link answer's); the next line the client reads."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with client.stream("GET", "/events/") as response:
            lines = response.aiter_lines()
            assert await lines.__anext__() == "first"
            assert await in_thread(server.proxy.wait_for_subscriptions, "ev", holds)
            await in_thread(server.publish, item)
            return await lines.__anext__()


def test_a_stream_that_missed_an_item_fetches_its_link_naming_what_it_has(server: ProxyServer, origin: Origin):
    """A publish whose prev-id does not follow the stream's (one item never arrived) is not
    delivered; the stream fetches its next link with ``Grip-Last`` naming the id the stream
    *has*, as Pushpin does (handler/httpsession.cpp: Grip-Last from the session's channel
    prevId, which only items it processed move on). Naming the channel's newest id instead
    told an origin that the stream had seen what it missed: drf-grip's public stream links
    then answered "unchanged" and the stream kept the older representation."""
    _linked_stream(origin, next_prev_id="3", next_body="caught up\n")
    gap = {"channel": "ev", "id": "3", "prev-id": "2", "formats": {"http-stream": {"content": "three\n"}}}

    assert run(_line_after_publishing(server, gap)) == "caught up"
    (link,) = origin.requests_to("/events/next/")
    assert link.headers["grip-last"] == "ev; last-id=1"


def test_a_stream_held_behind_the_channel_recovers_once(server: ProxyServer, origin: Origin):
    """A stream's first hold names a prev-id other than the channel's last id (one left by
    earlier subscribers, say): Pushpin fetches the next link at once, naming the stream's
    own id, and forgets the channel's last id (handler/httpsession.cpp, "If conflict on
    first hold, immediately recover"), so the link's answer holding at that same id is in
    step. The embedded proxy fetched the link again and again with the channel's stale id."""
    server.publish({"channel": "ev", "id": "old", "formats": {"http-stream": {"content": "x\n"}}})
    _linked_stream(origin, next_prev_id="1", next_body="")
    follows = {"channel": "ev", "id": "2", "prev-id": "1", "formats": {"http-stream": {"content": "two\n"}}}

    # Published once the link's answer holds: published while the recovery fetch is in
    # flight, "two" moves the channel past the link answer's prev-id 1 and the stream
    # rightly fetches again (an origin that still answers at 1 is then behind).
    assert run(_line_after_publishing(server, follows, holds=2)) == "two"
    links = origin.requests_to("/events/next/")
    assert [link.headers["grip-last"] for link in links] == ["ev; last-id=1"]


def test_items_queued_during_a_next_link_fetch_that_do_not_follow_its_hold_are_dropped(
    server: ProxyServer, origin: Origin
):
    """An item published while a stream's next link is fetched waits for the answer; the
    answer's render already has that change and holds at the id naming it, so the item
    does not follow the hold. Pushpin drops such queued items (1.36, handler/
    httpsession.cpp, "Drop any non-matching queued items"); the embedded proxy wrote them
    after the answer, so the stream went back to an older representation (drf-grip's
    shared streams: a catch-up fetch sent "c" and the queued push of "b" followed it)."""
    link = ("Grip-Link", "</events/next/>; rel=next; timeout=120")
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev; prev-id=1"), link,
    ], "first\n"))

    def next_link(request):
        # Runs on the proxy's loop, inside the fetch: the item is queued for the stream.
        server.publish({"channel": "ev", "id": "3", "prev-id": "2",
                        "formats": {"http-stream": {"content": "three\n"}}})
        return Response(200, [
            ("Grip-Hold", "stream"), ("Grip-Channel", "ev; prev-id=3"), link,
        ], "three, rendered\n")

    origin.route("/events/next/")(next_link)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/events/") as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "first"
                assert await in_thread(server.proxy.wait_for_subscribers, "ev")
                await in_thread(server.publish, {"channel": "ev", "id": "2", "prev-id": "1",
                                                 "formats": {"http-stream": {"action": "hint"}}})
                got = [await lines.__anext__()]
                assert await in_thread(server.proxy.wait_for_subscriptions, "ev", 2)
                await in_thread(server.publish, {"channel": "ev", "id": "4", "prev-id": "3",
                                                 "formats": {"http-stream": {"content": "four\n"}}})
                got.append(await lines.__anext__())
                return got

    assert run(scenario()) == ["three, rendered", "four"]
    assert len(origin.requests_to("/events/next/")) == 1


def test_next_link_answer_with_a_new_hold_keeps_the_stream(server: ProxyServer, origin: Origin):
    origin.route("/events/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev"), ("Grip-Link", "</events/next/>; rel=next; timeout=1"),
    ], "first\n"))
    origin.route("/events/next/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "ev2"),
    ], "caught up\n"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            async with client.stream("GET", "/events/") as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "first"
                assert await lines.__anext__() == "caught up"  # after the link's 1 s timeout
                assert await in_thread(server.proxy.wait_for_subscribers, "ev2")
                assert server.proxy.subscriber_counts().get("ev", 0) == 0
                await in_thread(server.publish, {"channel": "ev2", "formats": {"http-stream": {"content": "live\n"}}})
                assert await lines.__anext__() == "live"
                await in_thread(server.publish, {"channel": "ev2", "formats": {"http-stream": {"action": "close"}}})
                return [line async for line in lines]

    assert run(scenario()) == []


def test_held_connections_past_the_limit_get_503_and_others_are_undisturbed(make_proxy, origin: Origin):
    server = make_proxy(max_held=1)
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo")], ""))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            first = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            second = await client.get("/todo/")
            await in_thread(server.publish, {"channel": "todo", "formats": {"http-response": {"body": "ok"}}})
            return second, await first

    second, first = run(scenario())
    assert second.status_code == 503
    assert "EMBEDDED_MAX_HELD" in second.text
    assert first.text == "ok"


def test_a_client_that_disconnects_frees_its_subscription_at_once(server: ProxyServer, origin: Origin):
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo")], ""))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            poll.cancel()
        assert await in_thread(server.proxy.wait_for_idle, "todo")

    run(scenario())
    assert server.proxy.held_count == 0


def test_a_slow_reader_is_dropped_and_does_not_delay_others(make_proxy, origin: Origin):
    import socket

    server = make_proxy()
    server.proxy.max_queued_messages = 4
    origin.route("/s/")(lambda r: Response(200, [("Grip-Hold", "stream"), ("Grip-Channel", "s")], "start\n"))
    chunk = "x" * (256 * 1024) + "\n"

    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(b"GET /s/ HTTP/1.1\r\nHost: test\r\n\r\n")  # and never reads
    try:
        assert server.proxy.wait_for_subscribers("s", 1)

        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                async with client.stream("GET", "/s/") as response:
                    lines = response.aiter_lines()
                    assert await lines.__anext__() == "start"
                    assert await in_thread(server.proxy.wait_for_subscribers, "s", 2)
                    received = 0
                    for _ in range(40):
                        await in_thread(server.publish, {"channel": "s", "formats": {"http-stream": {"content": chunk}}})
                        assert len(await lines.__anext__()) == len(chunk) - 1
                        received += 1
                    # The slow reader was dropped when its queue overflowed; the fast one stays.
                    assert server.proxy.subscriber_counts()["s"] == 1
                    return received

        assert run(scenario()) == 40
        # Its write, blocked on a socket nobody reads, was abandoned: its session ended
        # with the slow client still not reading (the fast one's ended with its stream).
        deadline = time.monotonic() + 10
        while server.proxy._sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.proxy._sessions
    finally:
        slow.close()


def test_shutdown_answers_held_clients(make_proxy, origin: Origin):
    server = make_proxy()
    origin.route("/todo/")(lambda r: Response(200, HOLD + [("Grip-Channel", "todo"), ("Grip-Status", "304"), ("ETag", '"v1"')], ""))
    origin.route("/s/")(lambda r: Response(200, [("Grip-Hold", "stream"), ("Grip-Channel", "s")], "start\n"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))

            async def read_stream():
                async with client.stream("GET", "/s/") as response:
                    return [line async for line in response.aiter_lines()]

            stream = asyncio.ensure_future(read_stream())
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            assert await in_thread(server.proxy.wait_for_subscribers, "s")
            await in_thread(server.stop)
            return await poll, await stream

    poll, stream = run(scenario())
    assert poll.status_code == 304 and poll.headers["etag"] == '"v1"'
    assert stream == ["start"]


def test_at_most_20_channels_per_connection(server: ProxyServer, origin: Origin):
    channels = ", ".join(f"c{n}" for n in range(25))
    origin.route("/many/")(lambda r: Response(200, HOLD + [("Grip-Channel", channels)], ""))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get("/many/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "c19")
            counts = server.proxy.subscriber_counts()
            await in_thread(server.publish, {"channel": "c0", "formats": {"http-response": {"body": "ok"}}})
            return counts, await poll

    counts, poll = run(scenario())
    assert sorted(counts) == sorted(f"c{n}" for n in range(20))
    assert poll.text == "ok"


def test_a_compressed_hold_reaches_the_client_decoded(server: ProxyServer, origin: Origin):
    """An origin's compression middleware (Django's ``GZipMiddleware``) compresses a stream's
    first event for a browser that accepts gzip; the proxy appends each published event as
    it comes. Passed on compressed, the client's decoder got plain events after the gzip
    data: the stream broke (DRF probe). Like Pushpin, which decodes what it asked of the
    origin, the proxy hands the client plain events."""
    import gzip

    def events(request):
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return Response(200, [("Grip-Hold", "stream"), ("Grip-Channel", "ev")], "event: a\n")
        return Response(200, [
            ("Grip-Hold", "stream"), ("Grip-Channel", "ev"), ("Content-Type", "text/event-stream"),
            ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"),
        ], gzip.compress(b"event: a\n"))

    origin.route("/events/")(events)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            headers = {"Accept-Encoding": "br, gzip;q=0.8, zstd"}
            async with client.stream("GET", "/events/", headers=headers) as response:
                assert "content-encoding" not in response.headers
                lines = response.aiter_lines()
                assert await lines.__anext__() == "event: a"
                assert await in_thread(server.proxy.wait_for_subscribers, "ev")
                await in_thread(server.publish, {"channel": "ev", "formats": {"http-stream": {"content": "event: b\n"}}})
                assert await lines.__anext__() == "event: b"

    run(scenario())
