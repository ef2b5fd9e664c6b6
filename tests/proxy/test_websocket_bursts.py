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
