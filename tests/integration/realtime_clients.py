"""Clients for the integration tests: a long-poll and an EventSource, each in its own thread,
talking to the proxy over real sockets (httpx), so a test can hold several at once and make
changes while they wait."""

from __future__ import annotations

import queue
import ssl
import threading
from dataclasses import dataclass, field

import httpx

#: One TLS context for every test client (they speak plain HTTP to 127.0.0.1): without one
#: httpx loads the CA bundle for each client it makes, about 19 ms of CPU under the
#: interpreter lock. Forty fleet clients reconnecting together after a proxy restart blocked
#: their event loop 0.7 s, so every first answer was read late (NOTES.rst, eighth session).
CLIENT_TLS = ssl.create_default_context()

__all__ = ["EventStream", "LongPoll", "SseEvent"]


class LongPoll:
    """``GET url`` (or HEAD) sent at once from a thread; :meth:`result` waits for the answer."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, *, method: str = "GET",
                 timeout: float = 60.0) -> None:
        self.url = url
        self.headers = headers or {}
        self.method = method
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)
        self._thread.start()

    def _run(self, timeout: float) -> None:
        try:
            self._response = httpx.request(self.method, self.url, headers=self.headers,
                                           timeout=timeout)
        except BaseException as exc:  # reported by result()
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, within: float) -> bool:
        """Whether the answer came within ``within`` seconds."""
        return self._done.wait(within)

    def result(self, within: float) -> httpx.Response:
        """The answer, which must arrive within ``within`` seconds."""
        assert self._done.wait(within), f"{self.method} {self.url} still held after {within}s"
        if self._error is not None:
            raise self._error
        assert self._response is not None
        return self._response


@dataclass
class SseEvent:
    data: str = ""
    id: str | None = None
    event: str | None = None
    #: The reconnection delay the block set (``retry:``), in milliseconds.
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


class EventStream:
    """An SSE client: events, comments and the end of the stream land in a queue.

    Items are :class:`SseEvent` (a comment-only block counts as an event with no data and
    only ``comments``), or ``None`` once the server ended the stream.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.items: queue.Queue[SseEvent | None] = queue.Queue()
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None), verify=CLIENT_TLS)
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._opened.wait(10), f"stream {url} did not open"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.response_headers = response.headers
                self._opened.set()
                current = SseEvent()
                seen_field = False
                for line in response.iter_lines():
                    if line == "":
                        if seen_field:
                            self.items.put(current)
                        current, seen_field = SseEvent(), False
                        continue
                    seen_field = True
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "":
                        current.comments.append(value)
                    elif name == "data":
                        current.data = f"{current.data}\n{value}" if current.data else value
                    elif name == "id":
                        current.id = value
                    elif name == "event":
                        current.event = value
                    elif name == "retry" and value.isdigit():
                        current.retry = int(value)
        except httpx.HTTPError:
            pass  # closed by the test
        finally:
            self._opened.set()
            self.items.put(None)

    def next(self, within: float, *, skip_comments: bool = True) -> SseEvent | None:
        """The next event (``None``: the stream ended) that arrives within ``within`` seconds."""
        while True:
            try:
                item = self.items.get(timeout=within)
            except queue.Empty:
                raise AssertionError(f"no event on {self.url} within {within}s") from None
            if item is None or not (skip_comments and not item.data and item.event is None
                                    and item.id is None):
                return item

    def pending(self, *, skip_comments: bool = True) -> list[SseEvent | None]:
        """What arrived and was not read yet."""
        out = []
        while True:
            try:
                item = self.items.get_nowait()
            except queue.Empty:
                return out
            if item is None or not (skip_comments and not item.data and item.event is None
                                    and item.id is None):
                out.append(item)

    def close(self) -> None:
        self._client.close()
