"""Publishing into the embedded proxy: Pushpin's HTTP /publish format, and in-process."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest

from drf_grip.protocol import InvalidItem, dropped_by, parse_items
from drf_grip.proxy import GripProxy

from .conftest import KEY, Origin, ProxyServer, Response, in_thread, run

ITEM = {"channel": "todo", "formats": {"http-response": {"body": "pushed"}}}


def publish(server: ProxyServer, body, headers=None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"} if headers is None else headers
    if isinstance(body, (bytes, str)):
        return httpx.post(server.url + "/_grip/publish/", content=body, headers=headers)
    return httpx.post(server.url + "/_grip/publish/", json=body, headers=headers)


def test_readiness(server: ProxyServer):
    response = httpx.get(server.url + "/_grip/")
    assert response.status_code == 200 and "drf-grip embedded proxy" in response.text


def _held_then_published(
    server: ProxyServer, origin: Origin, channel: str, item: dict, publish_path: str
) -> tuple[httpx.Response, httpx.Response]:
    """A long-poll held on ``channel``, then ``item`` posted to ``publish_path``: the
    publish's answer and the long-poll's."""
    path = f"/{channel}/"
    origin.route(path)(lambda r: Response(200, [("Grip-Hold", "response"), ("Grip-Channel", channel)], ""))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            poll = asyncio.ensure_future(client.get(path))
            assert await in_thread(server.proxy.wait_for_subscribers, channel)
            answer = await client.post(publish_path, json={"items": [item]},
                                       headers={"Authorization": f"Bearer {KEY}"})
            return answer, await poll

    return run(scenario())


def test_publish_over_http_reaches_a_held_client(server: ProxyServer, origin: Origin):
    # gripcontrol posts to <control_uri>/publish/; the path without a slash works too.
    answer, poll = _held_then_published(server, origin, "todo", ITEM, "/_grip/publish")
    assert (answer.status_code, answer.text.strip()) == (200, "Published")
    assert poll.text == "pushed"


def test_publish_accepts_a_jwt_signed_with_the_key(server: ProxyServer):
    token = jwt.encode({"iss": "shell", "exp": int(time.time()) + 60}, KEY, algorithm="HS256")
    assert publish(server, {"items": [ITEM]}, {"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 403),
        ({"Authorization": "Basic " + KEY}, 403),
        ({"Authorization": "Bearer " + jwt.encode({"exp": 1}, KEY, algorithm="HS256")}, 403),
    ],
)
def test_publish_refuses_without_the_key(server: ProxyServer, headers, status):
    response = publish(server, {"items": [ITEM]}, headers)
    assert response.status_code == status
    assert KEY not in response.text


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "not JSON"),
        ({"nope": []}, "items"),
        ({"items": [{"formats": {}}]}, "channel"),
        ({"items": [{"channel": "c", "formats": {"http-response": {"code": "x"}}}]}, "code"),
        ({"items": [{"channel": "c", "formats": {"http-stream": {"content-bin": "!!"}}}]}, "base64"),
        ({"items": [{"channel": "c", "formats": {}}]}, "at least one format"),
    ],
)
def test_bad_items_answer_400_invalid_format(server: ProxyServer, body, reason):
    response = publish(server, body)
    assert response.status_code == 400
    assert response.text.startswith("Invalid format:") and reason in response.text


def _padded(size: int) -> bytes:
    """A publish body of exactly ``size`` bytes."""
    empty = json.dumps({"items": [{"channel": "c", "formats": {"http-stream": {"content": ""}}}]})
    pad = "x" * (size - len(empty))
    item = {"channel": "c", "formats": {"http-stream": {"content": pad}}}
    return json.dumps({"items": [item]}).encode()


def test_publish_body_limit_is_pushpins(make_proxy):
    """Pushpin 1.36 takes a body of 1,000,000 bytes and answers one more ``400 Request body
    too large.`` (measured); the embedded proxy took up to 1 MiB, so a publish that worked
    here was refused there (an embedded-versus-Pushpin probe)."""
    server = make_proxy(max_message_size=2_000_000)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    assert publish(server, _padded(1_000_000), headers).status_code == 200
    refused = publish(server, _padded(1_000_001), headers)
    assert (refused.status_code, refused.text.strip()) == (400, "Request body too large.")
    assert httpx.get(server.url + "/_grip/publish/").status_code == 405


def test_formats_for_other_transports_are_skipped(server: ProxyServer, origin: Origin):
    """Pushpin 1.36 publishes an item with a format it does not serve (Fanout's ``fcm``),
    and its HTTP formats with it; the embedded proxy refused the whole item (probe)."""
    formats = {"fcm": {"notification": {}}, "http-response": {"body": "hi"}}
    item = {"channel": "fcm", "formats": formats}
    answer, poll = _held_then_published(server, origin, "fcm", item, "/_grip/publish/")
    assert answer.status_code == 200 and poll.text == "hi"


def test_items_over_the_message_size_are_refused(make_proxy):
    server = make_proxy(max_message_size=10)
    item = {"channel": "c", "formats": {"http-stream": {"content": "x" * 11}}}
    assert publish(server, {"items": [item]}).status_code == 400
    with pytest.raises(InvalidItem):
        server.proxy.publish_items([item])


def test_the_proxy_registers_as_the_local_sink_for_its_lifetime(make_proxy):
    """Built for Django (drf_grip.asgi.embedded_proxy), the proxy is handed to this process's
    publisher for its lifetime; the proxy itself imports nothing of it."""
    destinations = pytest.importorskip("drf_grip.grip.destinations")
    server = make_proxy(
        attach=destinations.register_local_sink, detach=destinations.unregister_local_sink
    )
    assert any(sink is server.proxy for sink in destinations._local_sinks)
    server.stop()
    assert not any(sink is server.proxy for sink in destinations._local_sinks)


def test_publish_items_before_start_is_dropped_loudly(caplog):
    proxy = GripProxy(lambda *a: None, key=KEY, max_held=1, max_message_size=100)
    proxy.publish_items([ITEM])
    assert "not running" in caplog.text


def _item(**formats) -> dict:
    return {"items": [{"channel": "c", "formats": formats}]}


def _response_item(**response) -> dict:
    return _item(**{"http-response": response})


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"items": [{"channel": "c\\ud800", "formats": {"http-stream": {"content": "x"}}}]}', "surrogate"),
        (b'{"items": [{"channel": "c", "formats": {"http-stream": {"content": "\\udfff"}}}]}', "surrogate"),
        (b'{"items": [{"channel": "c", "formats": {"http-response": {"body": "\\ud800x"}}}]}', "surrogate"),
        (_response_item(code=100), "code"),
        (_response_item(code=101), "code"),
        (_response_item(code=99), "code"),
        (_response_item(code=600), "code"),
        (_response_item(code=True), "code"),
        (_response_item(headers={"X(": "1"}), "header name"),
        (_response_item(headers={"X Y": "1"}), "header name"),
        (_response_item(headers={"": "1"}), "header name"),
        (_response_item(headers=[["X-Snow", "\u2603"]]), "latin-1"),
        (_response_item(headers={"X-Bell": "a\x07b"}), "control character"),
        (_response_item(reason="OK\r\nX-Evil: 1"), "control character"),
        ({"items": [{"channel": "c", "id": "\u2603", "formats": {"http-stream": {"content": "x"}}}]}, "id is not latin-1"),
        ({"items": [{"channel": "c", "prev-id": "1\n", "formats": {"http-stream": {"content": "x"}}}]}, "prev-id contains"),
        ({"items": [{"channel": "\u2603", "formats": {"http-stream": {"content": "x"}}}]}, "channel is not latin-1"),
        ({"items": [{"channel": "c\x00", "formats": {"http-stream": {"content": "x"}}}]}, "channel contains"),
        (_item(**{"ws-message": {"action": "close", "code": 1006}}), "close code"),
        # Pushpin 1.36 (handler/publishformat.cpp): a sent message is text, binary, ping or
        # pong; a close is an action (measured: type close refused, taken here).
        (_item(**{"ws-message": {"type": "close", "code": 1000}}), "'type' with unknown value"),
        (_item(**{"ws-message": {"type": "shout", "content": "x"}}), "'type' with unknown value"),
        (_item(**{"ws-message": {"type": 1, "content": "x"}}), "'type' with wrong type"),
        (_item(**{"ws-message": {"type": "text"}}), "does not contain 'content'"),
        (_response_item(**{"body-patch": {"op": "add"}}), "'body-patch' with wrong type"),
        # Pushpin 1.36, measured (an embedded-versus-Pushpin probe: accepted here, an
        # empty 404 delivered at once, where Pushpin refused it and the client waited).
        (_response_item(code=404), "does not contain 'body'"),
        (_item(**{"http-stream": {}}), "does not contain 'content'"),
        (_item(**{"ws-message": {}}), "does not contain 'content'"),
    ],
)
def test_items_pushpin_refuses_answer_400_with_the_reason(server: ProxyServer, body, reason):
    response = publish(server, body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.text.startswith("Invalid format:") and reason in response.text


def test_a_refused_publish_disturbs_no_one(server: ProxyServer, origin: Origin):
    """Bad items are refused whole; a client held on the same channel still gets the next
    good publish, and re-requests of it (Grip-Last) still work."""
    origin.route("/todo/")(lambda r: Response(200, [("Grip-Hold", "response"), ("Grip-Channel", "todo")], ""))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            bad = [
                {"channel": "todo", "id": "\u2603", "formats": {"http-response": {"body": "poison"}}},
                {"channel": "todo", "formats": {"http-response": {"code": 101, "body": "upgrade"}}},
                {"channel": "todo", "formats": {"http-response": {"headers": {"X(": "1"}, "body": "x"}}},
            ]
            answers = [
                await client.post("/_grip/publish/", json={"items": [item]},
                                  headers={"Authorization": f"Bearer {KEY}"})
                for item in bad
            ]
            good = await client.post("/_grip/publish/", json={"items": [{"channel": "todo", "id": "2", "formats": {"http-response": {"body": "fine"}}}]},
                                     headers={"Authorization": f"Bearer {KEY}"})
            return answers, good, await poll

    answers, good, poll = run(scenario())
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert good.status_code == 200
    assert (poll.status_code, poll.text) == (200, "fine")


def test_a_ws_message_of_type_close_refuses_the_whole_batch(server: ProxyServer, origin: Origin):
    """Pushpin 1.36 reads every item before it publishes any (handler/engine.cpp,
    parseItems): one ``type: close`` refuses the batch, and the good item before it in the
    batch is not delivered either."""
    hold = [("Grip-Hold", "response"), ("Grip-Channel", "todo")]
    origin.route("/todo/")(lambda r: Response(200, hold, ""))
    fine = {"channel": "todo", "formats": {"http-response": {"body": "fine"}}}

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            poll = asyncio.ensure_future(client.get("/todo/"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            batch = [
                {"channel": "todo", "formats": {"http-response": {"body": "too soon"}}},
                {"channel": "room", "formats": {"ws-message": {"type": "close"}}},
            ]
            refused = await client.post("/_grip/publish/", json={"items": batch},
                                        headers={"Authorization": f"Bearer {KEY}"})
            await asyncio.sleep(0.2)
            assert not poll.done()
            await in_thread(server.publish, fine)
            return refused, await poll

    refused, poll = run(scenario())
    assert refused.status_code == 400
    assert refused.text.startswith("Invalid format: item 1:")
    assert "'type' with unknown value" in refused.text
    assert poll.text == "fine"


def test_ws_message_types_and_actions_as_pushpin_reads_them():
    # handler/publishformat.cpp: the type is read only for a send; a ping or pong needs no
    # content; a close action's type is not read.
    ping, pong, close, hint = (
        parse_items([{"channel": "c", "formats": {"ws-message": fmt}}])[0].message
        for fmt in (
            {"type": "ping"},
            {"type": "pong", "content": "x"},
            {"action": "close", "type": "close", "code": 4001},
            {"action": "hint", "type": "?"},
        )
    )
    assert (ping.action, ping.kind, ping.content) == ("send", "ping", b"")
    assert (pong.kind, pong.content) == ("pong", b"x")
    assert (close.action, close.code) == ("close", 4001)
    assert hint.action == "hint"


def test_an_empty_prev_id_is_kept_and_an_absent_one_is_none():
    # handler/sequencer.cpp tells a null prev-id from an empty one.
    empty, absent = parse_items([
        {"channel": "c", "prev-id": "", "formats": {"http-stream": {"content": "x"}}},
        {"channel": "c", "formats": {"http-stream": {"content": "x"}}},
    ])
    assert (empty.prev_id, absent.prev_id) == ("", None)


def test_a_body_patch_is_taken_as_published():
    (item,) = parse_items([{"channel": "c", "formats": {"http-response": {
        "body-patch": [{"op": "remove", "path": "/x"}]}}}])
    assert item.response.body_patch == ({"op": "remove", "path": "/x"},)
    assert item.response.body == b""
    # Pushpin prefers a body to a patch (handler/publishformat.cpp).
    (item,) = parse_items([{"channel": "c", "formats": {"http-response": {
        "body": "whole", "body-patch": []}}}])
    assert (item.response.body, item.response.body_patch) == (b"whole", None)


def test_an_items_meta_is_kept_and_a_bad_one_is_refused():
    [item] = parse_items([{**ITEM, "meta": {"skip_users": "a,b"}}])
    assert item.meta == {"skip_users": "a,b"}
    assert parse_items([ITEM])[0].meta == {}
    for bad in ([], {"skip_users": 3}, "a"):
        with pytest.raises(InvalidItem, match="meta"):
            parse_items([{**ITEM, "meta": bad}])


@pytest.mark.parametrize(
    ("filters", "connection", "item", "dropped"),
    [
        (["skip-users"], {"user": "u2"}, {"skip_users": "u1, u2"}, True),
        (["skip-users"], {"user": "u3"}, {"skip_users": "u1,u2"}, False),
        (["skip-users"], {}, {"skip_users": ",u1"}, False),  # no user: never skipped
        (["skip-self"], {"user": "u1"}, {"sender": "u1"}, True),
        (["skip-self"], {"user": "u1"}, {"skip_users": "u1"}, False),
        ([], {"user": "u1"}, {"skip_users": "u1"}, False),  # not asked for
        (["unknown"], {"user": "u1"}, {"skip_users": "u1"}, False),
    ],
)
def test_subscription_filters_follow_pushpins(filters, connection, item, dropped):
    """Pushpin 1.36's ``skip-users`` and ``skip-self`` (src/handler/filter.cpp)."""
    assert dropped_by(filters, connection, item) is dropped
