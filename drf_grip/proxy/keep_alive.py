"""When the proxy sends the next keep-alive, on a held stream and on a WebSocket."""

from __future__ import annotations

import random

__all__ = ["keep_alive_delay"]


def keep_alive_delay(timeout: float) -> float:
    """Pushpin 1.36 sets each keep-alive timer up to 1 s short of the timeout, at random
    (handler/httpsession.cpp and proxy/wsproxysession.cpp ``setupKeepAlive``,
    ``KEEPALIVE_RAND_MAX``): the timeout is the longest a connection stays silent, not the
    time between keep-alives."""
    return max(timeout - random.random(), 0.0)
