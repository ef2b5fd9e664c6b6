"""Helpers for DRF-layer tests: a proxied client and a sink that records publishes."""

from __future__ import annotations

import threading
import time

import jwt
from rest_framework.test import APIClient

from drf_grip.conf import embedded_key
from drf_grip.grip.destinations import register_local_sink, unregister_local_sink
from drf_grip.grip.publisher import get_publisher
from drf_grip.rest.registry import wait_idle


def grip_sig() -> str:
    """A Grip-Sig as the embedded proxy signs it (trusted when no GRIP_URL is set)."""
    return jwt.encode({"iss": "drf-grip", "exp": int(time.time()) + 600}, embedded_key())


class ProxiedClient(APIClient):
    """An APIClient whose requests look as if a GRIP proxy forwarded them."""

    def generic(self, *args, **extra):
        extra.setdefault("HTTP_GRIP_SIG", grip_sig())
        return super().generic(*args, **extra)


class RecordingSink:
    """Stands in for the embedded proxy: records every item published in this process."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.lock = threading.Lock()

    def publish_items(self, items):
        with self.lock:
            self.items.extend(items)

    def settle(self) -> list[dict]:
        from drf_grip.rest.buckets import wait_paced

        assert wait_idle(10)
        assert wait_paced(10)  # hints of later buckets, sent from a pacer thread
        assert get_publisher().flush(10)
        with self.lock:
            items, self.items = self.items, []
        return items

    def channels(self) -> list[str]:
        return [item["channel"] for item in self.settle()]

    def __enter__(self):
        register_local_sink(self)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:  # nothing published after the test reaches a proxy that is not there
            self.settle()
        unregister_local_sink(self)
