"""One interface for "a GRIP proxy in front of the app", so the conformance suite runs the
same tests against a real Pushpin and against the embedded proxy (DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from .server import OriginServer

__all__ = ["EmbeddedProxyServer", "ProxyUnderTest"]


@runtime_checkable
class ProxyUnderTest(Protocol):
    """What a conformance test may use: where clients connect, and how to wait on holds."""

    name: str

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...

    def mark(self) -> int:
        """An opaque position; ``wait_subscribed(..., since=mark)`` waits for a *new* subscription."""
        ...

    def wait_subscribed(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        """Block until a subscription to ``channel`` happened after ``since``; returns a new mark."""
        ...

    def publish_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Publish raw items in Pushpin's ``/publish`` form, blocking."""
        ...


class EmbeddedProxyServer:
    """The embedded proxy (``drf_grip.proxy.GripProxy``) around an ASGI app, on a real socket.

    The proxy exposes subscriber *counts*, not a log of events. To keep one interface,
    :meth:`mark` snapshots the counts of every channel, and :meth:`wait_subscribed` waits for
    the count of ``channel`` to exceed its count at the mark.
    """

    name = "embedded"

    def __init__(self, proxy: Any, server: OriginServer) -> None:
        self.proxy = proxy
        self.server = server
        self._marks: list[dict[str, int]] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def _counts(self) -> dict[str, int]:
        counts = getattr(self.proxy, "subscriber_counts", None)
        return dict(counts()) if counts is not None else {}

    def mark(self) -> int:
        self._marks.append(self._counts())
        return len(self._marks)

    def wait_subscribed(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        before = self._marks[since - 1].get(channel, 0) if since else 0
        self.proxy.wait_for_subscribers(channel, before + 1, timeout)
        return self.mark()

    def publish_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        self.proxy.publish_items(list(items))

    def stop(self) -> None:
        self.server.stop()

    def __repr__(self) -> str:
        return f"EmbeddedProxyServer(url={self.url!r})"

