"""Writes first (``grip/writes_first.py``): a proxy's re-holds wait while a write runs.

The defect: with 200 shared watchers held behind Pushpin on one origin process, every change
sent 200 re-holds into Django together and the next PATCH's p99 went from 25 ms to 2.2 s
(``python bench/run.py --cases grip-lp-pp --sizes 1 --rounds 1 --extras``). These tests
order events, not time: a re-hold must not start while a write runs.
"""

from __future__ import annotations

import asyncio

import pytest

from drf_grip.asgi import wrap_application
from drf_grip.grip.writes_first import WritesFirst, is_rehold


def _scope(method: str, *headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "method": method, "path": "/api/todos/", "headers": list(headers)}


SIG = (b"grip-sig", b"x.y.z")
INM = (b"if-none-match", b'"abc"')
LAST = (b"grip-last", b"drf.todo; last-id=3")


class _App:
    """Records when each request starts; a request named in ``block`` runs until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send) -> None:
        name = scope["name"]
        self.started.append(name)
        gate = self.release.get(name)
        if gate is not None:
            await gate.wait()


async def _until(predicate) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def test_what_counts_as_a_rehold() -> None:
    assert is_rehold(_scope("GET", SIG, INM))
    assert is_rehold(_scope("HEAD", SIG, LAST))
    assert not is_rehold(_scope("GET", INM))  # not from the proxy
    assert not is_rehold(_scope("GET", SIG))  # a first GET through the proxy
    assert not is_rehold(_scope("PATCH", SIG, INM))


def test_a_rehold_waits_for_a_running_write_and_other_requests_do_not() -> None:
    async def run() -> None:
        app = _App()
        gate = WritesFirst(app, concurrency=4, max_wait=60)
        app.release["patch"] = asyncio.Event()
        patch = asyncio.create_task(gate({**_scope("PATCH"), "name": "patch"}, None, None))
        await _until(lambda: "patch" in app.started)
        rehold = asyncio.create_task(gate({**_scope("GET", SIG, INM), "name": "rehold"}, None, None))
        first = asyncio.create_task(gate({**_scope("GET", SIG), "name": "first-get"}, None, None))
        await first
        for _ in range(50):
            await asyncio.sleep(0)
        assert "rehold" not in app.started
        app.release["patch"].set()
        await asyncio.gather(patch, rehold)
        assert app.started == ["patch", "first-get", "rehold"]

    asyncio.run(run())


@pytest.mark.parametrize("queued_past_max_wait", [False, True])
def test_reholds_queued_before_a_write_began_wait_for_it_too(queued_past_max_wait: bool) -> None:
    """A re-hold queued for a slot when a write begins waits for it. After a change the
    proxy's re-holds arrive together and queue for the slots longer than ``max_wait``:
    counted from its arrival, such a re-hold's wait was used up before it reached a slot,
    and it ran beside the write that had just begun (bench, write latency with 200
    watchers). The wait counts from when the writes began."""

    async def run() -> None:
        app = _App()
        gate = WritesFirst(app, concurrency=1, max_wait=0.2 if queued_past_max_wait else 60)
        app.release["r1"] = asyncio.Event()
        app.release["patch"] = asyncio.Event()
        r1 = asyncio.create_task(gate({**_scope("GET", SIG, INM), "name": "r1"}, None, None))
        await _until(lambda: "r1" in app.started)
        r2 = asyncio.create_task(gate({**_scope("GET", SIG, LAST), "name": "r2"}, None, None))
        if queued_past_max_wait:
            await asyncio.sleep(0.3)
        for _ in range(10):
            await asyncio.sleep(0)
        patch = asyncio.create_task(gate({**_scope("PATCH"), "name": "patch"}, None, None))
        await _until(lambda: "patch" in app.started)
        app.release["r1"].set()
        await r1
        for _ in range(50):
            await asyncio.sleep(0)
        assert "r2" not in app.started, "a queued re-hold overtook the running write"
        app.release["patch"].set()
        await asyncio.gather(patch, r2)
        assert app.started == ["r1", "patch", "r2"]

    asyncio.run(run())


def _rehold_runs_beside(running: dict, max_wait: float) -> None:
    """``running`` (a request that never ends by itself) is under way; a re-hold must still
    start (within 30 s, far beyond ``max_wait`` when that is short)."""

    async def run() -> None:
        app = _App()
        gate = WritesFirst(app, concurrency=1, max_wait=max_wait)
        app.release["running"] = asyncio.Event()
        task = asyncio.create_task(gate({**running, "name": "running"}, None, None))
        await _until(lambda: "running" in app.started)
        await asyncio.wait_for(gate({**_scope("GET", SIG, INM), "name": "rehold"}, None, None), 30)
        assert app.started == ["running", "rehold"]
        app.release["running"].set()
        await task

    asyncio.run(run())


def test_websocket_over_http_exchanges_are_not_writes() -> None:
    """Pushpin POSTs every WebSocket event of a gateway connection (open, keep-alive,
    subscribe): counted as writes, they would hold re-holds back all the time."""
    events = (b"content-type", b"application/websocket-events")
    _rehold_runs_beside(_scope("POST", SIG, events), max_wait=60)


def test_a_steady_stream_of_writes_does_not_starve_a_rehold() -> None:
    _rehold_runs_beside(_scope("PUT"), max_wait=0.01)


def test_at_most_concurrency_reholds_run_at_once() -> None:
    async def run() -> None:
        app = _App()
        gate = WritesFirst(app, concurrency=2, max_wait=60)
        names = [f"r{i}" for i in range(5)]
        for name in names:
            app.release[name] = asyncio.Event()
        tasks = [asyncio.create_task(gate({**_scope("GET", SIG, INM), "name": n}, None, None))
                 for n in names]
        await _until(lambda: len(app.started) == 2)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(app.started) == 2
        for name in names:
            app.release[name].set()
        await asyncio.gather(*tasks)
        assert sorted(app.started) == names

    asyncio.run(run())


@pytest.mark.parametrize("grip_url", [None, "http://127.0.0.1:5561"], ids=["embedded", "pushpin"])
def test_the_projects_asgi_app_puts_writes_first(settings, grip_url) -> None:
    settings.GRIP_URL = grip_url
    settings.GRIP_PROXIES = []
    settings.DRF_GRIP = {**getattr(settings, "DRF_GRIP", {}), "REHOLD_CONCURRENCY": 3}
    app = wrap_application(_App())
    gates = []
    while app is not None:
        if isinstance(app, WritesFirst):
            gates.append(app)
        app = getattr(app, "app", None)
    assert len(gates) == 1
    assert gates[0]._slots._value == 3
