"""A connection that goes silent without closing: a network change, a NAT that forgot it.
No FIN or RST reaches the browser, so an open stream or socket looks open for ever. A TCP
relay in front of the embedded board stands for the network: once it goes quiet, the
connections open then carry nothing more either way, while new ones work (a browser probe:
SSE and WebSocket pages said "live" for 150 s, and never showed the change made meanwhile)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from drf_grip.testing import free_port

from .conftest import Board
from .test_live_client import _SETUP


class QuietRelay:
    """Forwards 127.0.0.1:``port`` to ``target_port``; :meth:`go_quiet` leaves every
    connection open so far silent (what arrives is dropped, nothing is closed)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.lock = threading.Lock()
        self.open: list[dict[str, bool]] = []
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            link = {"quiet": False}
            with self.lock:
                self.open.append(link)
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, link), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, link: dict[str, bool]) -> None:
        try:
            while data := source.recv(65536):
                if not link["quiet"]:
                    sink.sendall(data)
        except OSError:
            return
        if not link["quiet"]:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def go_quiet(self) -> None:
        with self.lock:
            for link in self.open:
                link["quiet"] = True

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()


@pytest.fixture
def relayed_page(browser_context: Any, sample_servers: dict[str, Board]) -> Iterator[Any]:
    board = sample_servers["embedded"]
    relay = QuietRelay(int(board.url.rsplit(":", 1)[1]))
    page = browser_context.new_page()
    page.goto(f"http://127.0.0.1:{relay.port}/?transport=longpoll")
    page.wait_for_selector('#state[data-state="live"]')
    page.evaluate(_SETUP)
    page.relay, page.board = relay, board
    try:
        yield page
    finally:
        page.close()
        relay.close()


@pytest.mark.parametrize(
    "options",
    [
        {"transport": "sse"},
        {"transport": "sse", "headers": {"X-Client": "relay"}},  # read with fetch()
        {"transport": "ws", "gatewayUrl": "/api/ws/"},
    ],
    ids=["eventsource", "sse-fetch", "gateway"],
)
def test_a_connection_gone_silent_is_replaced_and_the_change_made_meanwhile_arrives(
    relayed_page: Any, options: dict[str, Any]
) -> None:
    page = relayed_page
    title = f"made while silent {uuid.uuid4().hex[:6]}"
    page.evaluate(
        """async (options) => {
          window.record = watch("/api/todos/", {...options, quietMs: 1500, minDelay: 100});
          await record.ready;
        }""",
        options,
    )
    page.relay.go_quiet()
    # Written past the relay, as the page's user (its session and CSRF token).
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    made = httpx.post(f"{page.board.url}/api/todos/", json={"title": title}, cookies=cookies,
                      headers={"X-CSRFToken": cookies.get("csrftoken", "")}, timeout=10)
    assert made.status_code == 201, made.text
    # Silent for quietMs (three times that for EventSource), then checked and replaced.
    seen = page.evaluate(
        """async (title) => {
          const deadline = Date.now() + 15000;
          while (Date.now() < deadline) {
            const last = record.changes[record.changes.length - 1].data;
            if (last && last.results && last.results.some((todo) => todo.title === title)) {
              return {seen: true, states: record.states};
            }
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          return {seen: false, states: record.states, errors: record.errors};
        }""",
        title,
    )
    page.evaluate("() => record.handle.stop()")
    assert seen["seen"], seen
