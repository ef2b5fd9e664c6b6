"""What a client may not do through the embedded proxy, and what its logs never show."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from .conftest import Origin, ProxyServer, Response, in_thread, run

SECRET = "s3cr3t-token-value-0123456789"


def test_plain_post_of_websocket_events_is_refused_before_the_origin(server: ProxyServer, origin: Origin):
    origin.route("/api/ws/")(lambda r: Response(200, [("Content-Type", "application/websocket-events")], b"OPEN\r\n"))

    response = httpx.post(
        server.url + "/api/ws/",
        content=b"OPEN\r\nTEXT 2\r\nhi\r\n",
        headers={"Content-Type": "application/websocket-events; charset=utf-8", "Connection-Id": "mallory-1"},
    )

    assert response.status_code == 403
    assert origin.requests_to("/api/ws/") == []


def test_client_connection_id_and_grip_headers_never_reach_the_origin(server: ProxyServer, origin: Origin):
    origin.route("/echo/")(lambda r: Response(200, [("Content-Type", "text/plain")], "ok"))

    response = httpx.get(
        server.url + "/echo/",
        headers={"Connection-Id": "mallory-1", "Grip-Last": "todos; last-id=9", "Grip-Feature": "evil"},
    )

    assert response.status_code == 200
    (request,) = origin.requests_to("/echo/")
    assert "connection-id" not in request.headers
    assert "grip-last" not in request.headers
    assert "evil" not in request.headers["grip-feature"]


def test_logs_show_neither_query_values_nor_next_link_tokens(
    server: ProxyServer, origin: Origin, caplog: pytest.LogCaptureFixture
):
    link = f"/_grip/next/{SECRET}{SECRET}/"
    origin.route("/stream/")(lambda r: Response(200, [
        ("Grip-Hold", "stream"), ("Grip-Channel", "s"), ("Grip-Link", f"<{link}>; rel=next"),
        ("Content-Type", "text/plain"),
    ], "open\n"))
    origin.route(link)(lambda r: Response(200, [], ""))  # no hold, no link: the end
    origin.route("/todo/")(lambda r: Response(200, [
        ("Grip-Hold", "response"), ("Grip-Channel", "todo"), ("Content-Type", "text/plain"),
    ], "held"))

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream("GET", f"/stream/?access_token={SECRET}") as stream:
                assert await in_thread(server.proxy.wait_for_subscribers, "s")
                # A hint makes the proxy fetch the next link, which it logs.
                await in_thread(server.publish, {"channel": "s", "formats": {"http-stream": {"action": "hint"}}})
                body = b"".join([chunk async for chunk in stream.aiter_bytes()])
            poll = asyncio.ensure_future(client.get(f"/todo/?access_token={SECRET}&page=2"))
            assert await in_thread(server.proxy.wait_for_subscribers, "todo")
            # A hint re-requests the long-poll, which the proxy logs too. The origin's answer
            # changes first, or a quick re-request would be held again.
            origin.route("/todo/")(lambda r: Response(200, [("Content-Type", "text/plain")], "fresh"))
            await in_thread(server.publish, {"channel": "todo", "formats": {"http-response": {"action": "hint"}}})
            return body, await poll

    with caplog.at_level(logging.DEBUG, logger="drf_grip"):
        body, poll = run(scenario())

    assert body == b"open\n" and poll.text == "fresh"
    assert origin.requests_to(link), "the next link was fetched"
    assert "next link for /stream/?access_token=*" in caplog.text
    assert "retry /todo/?access_token=*&page=*" in caplog.text
    assert SECRET not in caplog.text


def test_clients_that_never_finish_their_bodies_hold_up_no_one_else(
    server: ProxyServer, origin: Origin
):
    """Ten POSTs that announce 100,000 bytes and send one: each took one of the proxy's
    origin turns (eight) while the origin waited for its body, and no other request got an
    answer until they closed (a robustness probe)."""
    import socket
    from urllib.parse import urlsplit

    origin.route("/todos/")(lambda r: Response(200, [("Content-Type", "text/plain")], "ok"))
    where = urlsplit(server.url)
    stuck = []
    try:
        for _ in range(10):
            sock = socket.create_connection((where.hostname, where.port), timeout=10)
            sock.sendall(
                b"POST /todos/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 100000\r\n\r\nx"
            )
            stuck.append(sock)
        response = httpx.get(server.url + "/todos/", timeout=5)
        assert response.status_code == 200 and response.text == "ok"
    finally:
        for sock in stuck:
            sock.close()


def test_a_body_over_the_limit_is_refused_with_413(make_proxy, origin: Origin):
    origin.route("/todos/")(lambda r: Response(201, [], "made"))
    server = make_proxy(max_message_size=1000)
    too_large = httpx.post(server.url + "/todos/", content=b"x" * 1001, timeout=10)
    assert too_large.status_code == 413 and "at most 1000 bytes" in too_large.text
    assert httpx.post(server.url + "/todos/", content=b"x" * 1000, timeout=10).status_code == 201


def test_a_chunked_body_reaches_the_origin_with_its_length(server: ProxyServer, origin: Origin):
    """Django's ASGI request reads ``Content-Length`` bytes: a chunked body without it
    reached the view empty (a robustness probe)."""
    origin.route("/todos/")(lambda r: Response(201, [], "made"))

    def chunks():
        yield b'{"title": '
        yield b'"milk"}'

    assert httpx.post(server.url + "/todos/", content=chunks(), timeout=10).status_code == 201
    (request,) = origin.requests_to("/todos/")
    assert request.body == b'{"title": "milk"}'
    assert request.headers["content-length"] == "17" and "transfer-encoding" not in request.headers


def test_a_request_target_past_pushpins_limit_is_a_414_before_the_origin(
    server: ProxyServer, origin: Origin
):
    """A robustness probe's ``?search=`` of 60 KB reached DRF's ``SearchFilter``, which
    failed on SQLite with a 500; Pushpin resets a connection whose request head passes its
    8 KiB buffer. The embedded proxy answers 414, and a target within the limit goes on."""
    origin.route("/api/todos/")(lambda r: Response(200, [("Content-Type", "text/plain")], "ok"))
    limit = server.proxy.max_request_target
    within = "/api/todos/?search=" + "a" * (limit - len("/api/todos/?search="))

    assert httpx.get(server.url + within).status_code == 200
    refused = httpx.get(server.url + within + "a")
    huge = httpx.get(server.url + "/api/todos/?search=" + "a" * 60_000)

    assert (refused.status_code, huge.status_code) == (414, 414)
    assert "URI Too Long" in refused.text and str(limit) in refused.text
    assert [len(r.path) + 1 + len(r.query) for r in origin.requests_to("/api/todos/")] == [limit]
