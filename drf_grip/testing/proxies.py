"""One interface for "a GRIP proxy in front of the app", so the conformance suite runs the
same tests against a real Pushpin and against the embedded proxy."""

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

    Where Pushpin has a log, the proxy counts subscribe events per channel; a mark is a
    snapshot of those counts, so "a new subscription" means the same thing for both.
    """

    name = "embedded"

    def __init__(self, proxy: Any, server: OriginServer) -> None:
        self.proxy = proxy
        self.server = server
        self._marks: list[dict[str, int]] = [{}]  # mark 0: before anything happened

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def mark(self) -> int:
        self._marks.append(dict(self.proxy.subscription_counts()))
        return len(self._marks) - 1

    def wait_subscribed(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        before = self._marks[since].get(channel, 0)
        if not self.proxy.wait_for_subscriptions(channel, before + 1, timeout):
            raise TimeoutError(
                f"the embedded proxy saw no new subscription to {channel!r} within {timeout}s"
            )
        return self.mark()

    def publish_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        self.proxy.publish_items(list(items))

    def __repr__(self) -> str:
        return f"EmbeddedProxyServer(url={self.url!r})"
