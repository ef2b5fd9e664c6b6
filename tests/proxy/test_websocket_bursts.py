"""A client that sends many WebSocket messages at once, through the embedded proxy in front of
the test Django app on a real socket: every message is answered, the connection stays open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from drf_grip.testing.proxies import EmbeddedProxyServer
from tests.testapp.models import Todo

from .conftest import read_status_line

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

#: More than the proxy's per-connection queue (``GripProxy.max_queued_messages``, 256).
BURST = 600


def is_answer(text: str) -> bool:
    """Not a gateway event pushed by the server (a change, the settle of a subscription)."""
    try:
        return "event" not in json.loads(text)
    except ValueError:
        return True


async def send_all_then_read(url: str, messages: list[str], answers: int) -> tuple[list[str], str]:
    """Send every message without waiting, then read ``answers`` answers and the answer to
    one more message, proving the connection is still open."""
    async with websockets.connect(url, open_timeout=10) as ws:

        async def answer() -> str:
            while True:
                text = str(await asyncio.wait_for(ws.recv(), 30))
                if is_answer(text):
                    return text

        for message in messages:
            await ws.send(message)
        received = [await answer() for _ in range(answers)]
        await ws.send(messages[-1])
        last = await answer()
    return received, last


def test_a_gateway_client_sending_a_burst_gets_an_answer_to_every_message(
    embedded_proxy: EmbeddedProxyServer,
) -> None:
    Todo.objects.create(title="one")
    messages: list[dict[str, Any]] = []
    for n in range(BURST):
        if n % 100 == 0:
            messages.append({"id": n, "subscribe": f"/api/todos/?_={n}"})
        elif n % 7 == 0:
            messages.append({"id": n, "method": "GET", "url": "/api/no-such-thing/"})
        else:
            messages.append({"id": n, "method": "GET", "url": "/api/todos/"})

    received, last = asyncio.run(send_all_then_read(
        embedded_proxy.ws_url + "/api/ws/", [json.dumps(m) for m in messages], BURST,
    ))

    answers = [json.loads(text) for text in received]
    assert [a["id"] for a in answers] == list(range(BURST))
    for message, answer in zip(messages, answers):
        if "subscribe" in message or message["url"] == "/api/todos/":
            assert answer["status"] == 200, answer
        else:
            assert answer["status"] == 404, answer
    assert json.loads(last) == answers[-1]


def test_a_websocket_view_client_sending_a_burst_gets_every_echo(
    embedded_proxy: EmbeddedProxyServer,
) -> None:
    messages = [f"message {n}" for n in range(BURST)]

    received, last = asyncio.run(
        send_all_then_read(embedded_proxy.ws_url + "/ws/echo/", messages, BURST)
    )

    assert received == messages
    assert last == messages[-1]


def test_a_client_that_sends_a_burst_and_closes_without_reading_is_let_go(
    embedded_proxy: EmbeddedProxyServer,
) -> None:
    """2,000 messages in one write, then a close without reading an answer: the connection
    stayed counted as held for good (each kept about 380 KB), and enough of them made every
    new client's hold a 503 at EMBEDDED_MAX_HELD (a robustness probe)."""
    import base64
    import os
    import socket
    import struct
    import time
    from urllib.parse import urlsplit

    proxy = embedded_proxy.proxy
    before = proxy.held_count
    host, port = urlsplit(embedded_proxy.url).hostname, urlsplit(embedded_proxy.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /api/ws/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert b" 101 " in read_status_line(sock)
        mask = b"\x01\x02\x03\x04"
        frame = bytes([0x81, 0x80 | 1]) + mask + bytes([ord("{") ^ mask[0]])
        sock.sendall(frame * 2000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 30
    while proxy.held_count > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.held_count == before
