"""Readiness for holds on a freshly started Pushpin, for the GRIP-layer integration tests."""

from __future__ import annotations

import threading
import time
import uuid

import httpx

from drf_grip.testing import PushpinServer

__all__ = ["ready_for_holds"]


def ready_for_holds(server: PushpinServer, timeout: float = 40.0) -> None:
    """Return once a held request through ``server`` reaches Pushpin's handler.

    The harness calls Pushpin ready when a plain request reaches the origin, but right after
    a start the proxy sometimes fails to hand the first *held* request to its handler: the
    client gets ``500 Accept service unavailable`` some 18 s later (about one start in 25
    on these machines). A hold on a throwaway channel, retried, proves the handler path; it
    costs one round trip once it works.
    """
    deadline = time.monotonic() + timeout
    while True:
        channel = f"ready-{uuid.uuid4().hex[:12]}"
        mark = server.mark()
        # A daemon thread: a request stuck in a not-yet-ready Pushpin must not block the test.
        threading.Thread(
            target=_get_quietly, args=(f"{server.url}/harness/hold/{channel}/",), daemon=True
        ).start()
        wait = min(2.0, max(0.1, deadline - time.monotonic()))
        try:
            server.wait_subscribed(channel, timeout=wait, since=mark)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise
            continue
        server.publish_items([{"channel": channel, "formats": {"http-response": {"body": ""}}}])
        return


def _get_quietly(url: str) -> None:
    try:
        httpx.get(url, timeout=30)
    except httpx.HTTPError:
        pass
