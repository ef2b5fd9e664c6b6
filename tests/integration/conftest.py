"""Fixtures of the multi-process tests: a private redis-server, the origin as two uvicorn
worker processes sharing it, and two private Pushpins in front of them, both in
``GRIP_PROXIES`` (``multiprocess_settings.py``); and the streams a test opened, closed after
it."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from drf_grip.testing import (
    OriginWorkers,
    PushpinServer,
    RedisServer,
    find_pushpin,
    find_redis,
    free_port,
    pushpin_missing,
    redis_missing,
)
from tests.integration.fleet import ROOT
from tests.integration.realtime_clients import EventStream


@pytest.fixture
def streams() -> Iterator[list[EventStream]]:
    """Streams opened by a test, closed after it."""
    opened: list[EventStream] = []
    yield opened
    for events in opened:
        events.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server; fails under ``CI``, skips elsewhere."""
    if find_redis() is None:
        redis_missing()
    with RedisServer() as server:
        yield server


@dataclass
class Deployment:
    """Everything the multi-process tests run against."""

    redis: RedisServer
    workers: OriginWorkers
    pushpins: list[PushpinServer]
    #: The environment of every process of the deployment (workers and writers); it holds
    #: the GRIP key, so it stays out of the repr that pytest prints on a failure.
    env: dict[str, str] = field(repr=False)

    def flush_state(self) -> None:
        """Forget the shared realtime state of a previous test (a FLUSHDB), and the keys
        Redis evicted for it (``evicted_keys``: a publish after evictions hints every hold
        of its model and closes gateway connections, publishing.py)."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushdb()
            client.config_resetstat()
        finally:
            client.close()


@pytest.fixture(scope="session")
def deployment(django_db_setup: None, redis_server: RedisServer) -> Iterator[Deployment]:
    """Two uvicorn workers behind two Pushpins, sharing the test database and Redis."""
    if find_pushpin() is None:
        pushpin_missing()
    from django.db import connection

    # The workers must know both Pushpins (where to publish, whose Grip-Sig to trust)
    # before the Pushpins know the workers' port: fix the Pushpins' ports and keys first.
    pushpins = [
        PushpinServer(0, http_port=free_port(), publish_port=free_port()) for _ in range(2)
    ]
    proxies = [
        {
            "control_uri": p.publish_uri,
            "control_iss": "pushpin",
            "key": p.key,
        }
        for p in pushpins
    ]
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.integration.multiprocess_settings",
        "TEST_DB": str(connection.settings_dict["NAME"]),
        "TEST_REDIS_URL": redis_server.url,
        "TEST_GRIP_PROXIES": json.dumps(proxies),
        "PYTHONPATH": str(ROOT),
    }
    with OriginWorkers(env, workers=2, cwd=ROOT, probe_path="/harness/ping/") as workers:
        started: list[PushpinServer] = []
        try:
            for pushpin in pushpins:
                pushpin.origin_port = workers.port
                started.append(pushpin.start())
            yield Deployment(redis_server, workers, pushpins, env)
        finally:
            for pushpin in started:
                pushpin.stop()


@pytest.fixture
def fresh_deployment(deployment: Deployment) -> Iterator[Deployment]:
    """``deployment`` with the shared state of earlier tests forgotten and both Pushpins up."""
    for pushpin in deployment.pushpins:
        if pushpin.serving():
            continue
        if pushpin.process is not None:
            # It failed after an earlier test: say so in the run's warnings, with its logs
            # (a restart removes them).
            warnings.warn(f"{pushpin!r} stopped serving:\n{pushpin.log_tail()}", stacklevel=1)
        # Stopped first (leftover services killed), then started on the same ports, which
        # the workers' settings name.
        pushpin.stop_for_restart()
        pushpin.start_again()
    deployment.flush_state()
    yield deployment
