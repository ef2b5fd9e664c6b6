"""Test harness for drf-grip's own suite: a private Pushpin and a real origin server.

Not the user-facing test kit (that is ``drf_grip.test``); this starts real processes and
sockets for integration tests.
"""

from .pushpin import PushpinError, PushpinServer, find_pushpin, free_port, pushpin_missing
from .server import OriginServer

__all__ = [
    "OriginServer",
    "PushpinError",
    "PushpinServer",
    "find_pushpin",
    "free_port",
    "pushpin_missing",
]
