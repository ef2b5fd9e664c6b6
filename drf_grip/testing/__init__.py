"""Test harness for drf-grip's own suite: a private Pushpin and Redis, real origin servers.

Not the user-facing test kit (that is ``drf_grip.test``); this starts real processes and
sockets for integration tests.
"""

from .process import free_port
from .pushpin import PushpinError, PushpinServer, find_pushpin, pushpin_missing
from .redis import RedisError, RedisServer, find_redis, redis_missing
from .server import OriginServer
from .workers import OriginWorkers, WorkersError

__all__ = [
    "OriginServer",
    "OriginWorkers",
    "PushpinError",
    "PushpinServer",
    "RedisError",
    "RedisServer",
    "WorkersError",
    "find_pushpin",
    "find_redis",
    "free_port",
    "pushpin_missing",
    "redis_missing",
]
