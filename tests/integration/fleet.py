"""Many live clients in one asyncio loop, writer processes, and the convergence check of
the multi-process tests (DESIGN.md §4, "the guarantee").

A *subscription* is what one client watches on one URL: a long-poll loop (``If-None-Match``
with the last ETag), an EventSource (``Last-Event-ID`` on reconnect) or one subscription of
a gateway WebSocket (several per connection; resubscribed on reconnect). Each remembers the
representation it holds and when it last changed. After the last commit the test asks for a
fresh GET of every URL with each client's own credentials and waits until every
subscription holds exactly that; the time from the last commit to that moment is what the
guarantee bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from .realtime_clients import CLIENT_TLS

__all__ = [
    "GONE",
    "Pacer",
    "Subscription",
    "LongPollClient",
    "StreamClient",
    "GatewayClient",
    "Fleet",
    "Convergence",
    "run_writer",
    "ROOT",
]

ROOT = Path(__file__).parents[2]

#: What a subscription holds once its object is gone (a 404 from a fresh GET).
GONE = "<gone>"

#: Long-poll wait (``Prefer: wait=N``); holds that time out are simply renewed.
HOLD_WAIT = 25


class Pacer:
    """At most ``batch`` new connections per ``interval`` seconds: Pushpin answers some
    502s to bursts of more than about 100 new connections (PUSHPIN.md, throughput)."""

    def __init__(self, batch: int = 50, interval: float = 0.25) -> None:
        self.batch = batch
        self.interval = interval
        self._window = 0.0
        self._used = 0
        self._lock = asyncio.Lock()
        self._open = asyncio.Event()
        self._open.set()

    def close(self) -> None:
        """No new connections until :meth:`open` (a load balancer's readiness check)."""
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def __call__(self) -> None:
        await self._open.wait()
        async with self._lock:
            now = time.monotonic()
            if now - self._window >= self.interval:
                self._window, self._used = now, 0
            if self._used >= self.batch:
                await asyncio.sleep(self._window + self.interval - now)
                self._window, self._used = time.monotonic(), 0
            self._used += 1


@dataclass
class Subscription:
    """One URL watched by one client, and what it holds."""

    transport: str  # "longpoll", "sse", "ws"
    url: str
    token: str | None = None
    #: The client's HTTP base URL (its proxy): absolute links in a body name it.
    base: str = ""
    body: Any = None
    etag: str | None = None
    #: ``time.time()`` of the last change of ``body`` (comparable across processes).
    at: float = 0.0
    updates: int = 0
    #: ``X-Origin-Pid`` of the answers that subscribed it (long-poll and SSE).
    pids: set[str] = field(default_factory=set)
    #: When the client's current connection attempt started, and the one that brought
    #: ``body`` (a client that reconnects is measured from its reconnection).
    attempt_started: float = 0.0
    reached_in_attempt: float = 0.0
    #: When the current attempt's connection was open (a WebSocket's handshake done), for
    #: failure reports: a late answer then says whether the wait was before or after it.
    opened: float = 0.0
    #: ``(time.time(), etag)`` of every representation received, for failure reports.
    history: list[tuple[float, str | None]] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def hold(self, body: Any, etag: str | None) -> None:
        if body != self.body or self.at == 0.0:
            self.body, self.at = body, time.time()
            self.reached_in_attempt = self.attempt_started
        self.etag = etag
        self.updates += 1
        self.history.append((time.time(), etag if body != GONE else GONE))

    def describe(self) -> str:
        who = f" as {self.token[:6]}…" if self.token else ""
        via = f" via :{self.base.rsplit(':', 1)[-1]}" if self.base else ""
        return f"{self.transport} {self.url}{who}{via}"


class _Client:
    """A connection loop that reconnects after errors and when kicked, resuming where it
    left off (the subclass decides how)."""

    def __init__(self, base: str, pacer: Pacer) -> None:
        self.base = base
        self.pacer = pacer
        self.kicks = 0
        self.errors: list[str] = []
        self.connections = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscriptions: list[Subscription] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def kick(self) -> None:
        """Drop the connection now; the client reconnects with what it holds."""
        self.kicks += 1
        self._kick.set()

    async def _run(self) -> None:
        while True:
            self._kick.clear()
            await self.pacer()
            self.connections += 1
            started = time.time()
            for sub in self.subscriptions:
                sub.attempt_started, sub.opened = started, 0.0
            conn = asyncio.create_task(self._connect_once())
            kicked = asyncio.create_task(self._kick.wait())
            try:
                done, _pending = await asyncio.wait({conn, kicked}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                conn.cancel()
                kicked.cancel()
                raise
            kicked.cancel()
            if conn in done:
                try:
                    finished = conn.result()
                except (httpx.HTTPError, OSError, WebSocketException, asyncio.TimeoutError,
                        ValueError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    finished = False
                if finished:
                    return  # nothing left to watch (the object is gone)
                await asyncio.sleep(random.uniform(0.05, 0.3))
            else:
                conn.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn

    async def _connect_once(self) -> bool:
        raise NotImplementedError


def _json(text: str) -> Any:
    return json.loads(text)


class LongPollClient(_Client):
    def __init__(self, base: str, pacer: Pacer, sub: Subscription) -> None:
        super().__init__(base, pacer)
        self.sub = sub
        self.subscriptions = [sub]
        sub.base = base

    async def _connect_once(self) -> bool:
        sub = self.sub
        timeout = httpx.Timeout(10.0, read=HOLD_WAIT + 20)
        async with httpx.AsyncClient(timeout=timeout, verify=CLIENT_TLS) as http:
            while True:
                headers = {"Accept": "application/json", **sub.auth}
                if sub.etag:
                    headers["If-None-Match"] = sub.etag
                    headers["Prefer"] = f"wait={HOLD_WAIT}"
                response = await http.get(self.base + sub.url, headers=headers)
                if "X-Origin-Pid" in response.headers:
                    sub.pids.add(response.headers["X-Origin-Pid"])
                if response.status_code == 200:
                    sub.hold(_json(response.text), response.headers.get("ETag"))
                elif response.status_code == 404:
                    sub.hold(GONE, None)
                    return True
                elif response.status_code != 304:
                    self.errors.append(f"HTTP {response.status_code}")
                    return False


class StreamClient(_Client):
    def __init__(self, base: str, pacer: Pacer, sub: Subscription) -> None:
        super().__init__(base, pacer)
        self.sub = sub
        self.subscriptions = [sub]
        sub.base = base
        self.last_event_id: str | None = None

    async def _connect_once(self) -> bool:
        sub = self.sub
        headers = {"Accept": "text/event-stream", **sub.auth}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), verify=CLIENT_TLS) as http:
            async with http.stream("GET", self.base + sub.url, headers=headers) as response:
                if "X-Origin-Pid" in response.headers:
                    sub.pids.add(response.headers["X-Origin-Pid"])
                if response.status_code == 404:
                    sub.hold(GONE, None)
                    return True
                if response.status_code != 200:
                    self.errors.append(f"HTTP {response.status_code}")
                    return False
                data: list[str] = []
                event: str | None = None
                event_id: str | None = None
                async for line in response.aiter_lines():
                    if line:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        elif name == "event":
                            event = value
                        elif name == "id":
                            event_id = value
                        continue
                    if event == "delete":
                        sub.hold(GONE, None)
                        return True
                    if event == "error":
                        return False  # the server ended the stream: reconnect
                    if data and event in (None, "message"):
                        sub.hold(_json("\n".join(data)), event_id)
                        if event_id:
                            self.last_event_id = event_id
                    data, event, event_id = [], None, None
        return False


class GatewayClient(_Client):
    """One WebSocket to ``/api/ws/`` with several subscriptions."""

    def __init__(self, ws_base: str, pacer: Pacer, subs: list[Subscription]) -> None:
        super().__init__(ws_base, pacer)
        self.subscriptions = subs
        for sub in subs:
            sub.base = "http" + ws_base.removeprefix("ws")

    async def _connect_once(self) -> bool:
        async with ws_connect(self.base + "/api/ws/", open_timeout=10, proxy=None,
                              max_size=2**22) as ws:
            opened = time.time()
            by_id: dict[int, Subscription] = {}
            for number, sub in enumerate(self.subscriptions, 1):
                message: dict[str, Any] = {"id": number, "subscribe": sub.url}
                if sub.token:
                    message["token"] = sub.token
                by_id[number] = sub
                sub.opened = opened
                await ws.send(json.dumps(message))
            live: dict[str, list[Subscription]] = {}  # shared live URL -> its subscriptions
            async for raw in ws:
                message = json.loads(raw)
                sub = by_id.get(message.get("id")) if isinstance(message.get("id"), int) else None
                if message.get("event") == "change":
                    targets = [sub] if sub is not None else live.get(message.get("url"), [])
                    for target in targets:
                        if message.get("status") == 200:
                            target.hold(message.get("data"), message.get("etag"))
                        elif message.get("status") == 404:
                            target.hold(GONE, None)
                        else:
                            self.errors.append(f"change status {message.get('status')}")
                    continue
                if message.get("event") is not None:
                    self.errors.append(f"event {message.get('event')}: {message.get('error')}")
                    return False
                if sub is None:
                    continue
                status = message.get("status")
                if status == 200:
                    sub.hold(message.get("data"), message.get("etag"))
                    # Shared changes name the live URL the answer named, and carry no id.
                    live.setdefault(message.get("url") or sub.url, []).append(sub)
                elif status == 404:
                    sub.hold(GONE, None)
                else:
                    self.errors.append(f"subscribe {sub.url}: {status} {message.get('error')}")
                    return False
        return False


class Fleet:
    """Every client of a test, started in batches, kicked at random, stopped together."""

    def __init__(self, pacer: Pacer | None = None) -> None:
        self.pacer = pacer or Pacer()
        self.clients: list[_Client] = []

    def add(self, client: _Client) -> _Client:
        self.clients.append(client)
        return client

    @property
    def subscriptions(self) -> list[Subscription]:
        return [sub for client in self.clients for sub in client.subscriptions]

    def start(self) -> None:
        for client in self.clients:
            client.start()

    async def held(self, timeout: float) -> None:
        """Wait until every subscription holds a first representation."""
        deadline = time.monotonic() + timeout
        while any(sub.at == 0.0 for sub in self.subscriptions):
            if time.monotonic() > deadline:
                missing = [s.describe() for s in self.subscriptions if s.at == 0.0]
                errors = [e for c in self.clients for e in c.errors][-10:]
                raise AssertionError(
                    f"{len(missing)} subscriptions got no first representation within "
                    f"{timeout}s: {missing[:10]}; last errors: {errors}"
                )
            await asyncio.sleep(0.05)

    async def chaos(self, stop: asyncio.Event, rate: float, rng: random.Random) -> None:
        """Kick about ``rate`` random clients per second until ``stop``."""
        while not stop.is_set():
            await asyncio.sleep(rng.expovariate(rate))
            if self.clients:
                rng.choice(self.clients).kick()

    async def stop(self) -> None:
        await asyncio.gather(*(client.stop() for client in self.clients))


@dataclass
class Convergence:
    """What the clients held after the last commit, against a fresh GET of each."""

    subscriptions: int
    last_commit: float
    worst: float
    late: list[str]
    wrong: list[str]
    slowest: str = ""
    basis: str = "the last commit"

    def summary(self) -> str:
        return (
            f"{self.subscriptions} subscriptions; worst convergence after {self.basis} "
            f"{self.worst:.3f}s ({self.slowest}); {len(self.wrong)} never converged, "
            f"{len(self.late)} late"
        )


def _key(sub: Subscription) -> tuple[str, str, str | None]:
    return (sub.base, sub.url, sub.token)


async def fresh(subs: Iterable[Subscription]) -> dict[tuple[str, str, str | None], Any]:
    """A fresh GET by each client (its proxy, URL and credentials): what it must hold."""
    out: dict[tuple[str, str, str | None], Any] = {}
    async with httpx.AsyncClient(timeout=30, verify=CLIENT_TLS) as http:
        for sub in subs:
            key = _key(sub)
            if key in out:
                continue
            response = await http.get(sub.base + sub.url, headers={"Accept": "application/json", **sub.auth})
            if response.status_code == 404:
                out[key] = GONE
            else:
                assert response.status_code == 200, f"fresh GET {sub.url}: {response.status_code}"
                out[key] = response.json()
    return out


async def converge(
    fleet: Fleet, since: float, *, within: float, patience: float = 10.0,
    from_reconnect: bool = False,
) -> Convergence:
    """Wait (at most ``patience`` s) until every subscription holds its fresh GET; report how
    long after ``since`` (the last commit) each got there. ``from_reconnect``: a client
    that had to reconnect after ``since`` (the proxy was down) is measured from the start
    of the connection that brought it the representation."""
    subs = fleet.subscriptions
    want = await fresh(subs)
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if all(sub.body == want[_key(sub)] for sub in subs):
            break
        await asyncio.sleep(0.02)
    worst = 0.0
    slowest = ""
    late: list[str] = []
    wrong: list[str] = []
    client_of = {id(sub): client for client in fleet.clients for sub in client.subscriptions}
    for sub in subs:
        expected = want[_key(sub)]
        if sub.body != expected:
            steps = ", ".join(f"{t - since:+.2f}s {e}" for t, e in sub.history[-6:])
            client = client_of[id(sub)]
            wrong.append(
                f"{sub.describe()}: holds {_brief(sub.body)} (etag {sub.etag}, "
                f"{sub.updates} updates, last ones after the last commit: {steps}; its "
                f"connection started {sub.attempt_started - since:+.2f}s, "
                f"{client.connections} connections, errors: {client.errors[-3:]}), "
                f"a fresh GET returns {_brief(expected)}"
            )
            continue
        start = max(since, sub.reached_in_attempt) if from_reconnect else since
        took = max(0.0, sub.at - start)
        if took >= worst:
            worst, slowest = took, sub.describe()
        if took > within:
            steps = ", ".join(f"{t - since:+.2f}s {e}" for t, e in sub.history[-4:])
            opened = f", open {sub.opened - since:+.2f}s" if sub.opened else ""
            late.append(
                f"{sub.describe()}: {took:.3f}s (last ones after the last commit: {steps}; "
                f"its connection started {sub.attempt_started - since:+.2f}s{opened}; "
                f"{client_of[id(sub)].connections} connections, "
                f"errors: {client_of[id(sub)].errors[-3:]})"
            )
    basis = "the proxies' return or the client's reconnection" if from_reconnect else "the last commit"
    return Convergence(len(subs), since, worst, late, wrong, slowest, basis)


def _brief(body: Any) -> str:
    text = json.dumps(body) if not isinstance(body, str) else body
    return text if len(text) <= 160 else text[:157] + "..."


# -- processes that write ---------------------------------------------------------------------

_WRITER = r"""
import json, random, sys, time
import django
django.setup()
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from tests.testapp.models import Note, Todo

plan = json.loads(sys.argv[1])
WORDS = ["milk", "tax", "box", "fix", "eggs", "mail", "read", "walk", "next", "plan"]

if plan.get("seed"):
    out = {"users": {}, "todos": [], "notes": []}
    for name in plan["seed"]["users"]:
        user = get_user_model().objects.create_user(name, password="pw")
        out["users"][name] = {"id": user.pk, "token": Token.objects.create(user=user).key}
    rng = random.Random(0)
    for i in range(plan["seed"]["todos"]):
        todo = Todo.objects.create(title=f"{rng.choice(WORDS)} {i}", done=i % 3 == 0)
        out["todos"].append(todo.pk)
    for i, name in enumerate(plan["seed"]["users"]):
        note = Note.objects.create(owner_id=out["users"][name]["id"], text=f"note of {name}")
        out["notes"].append(note.pk)
    print(json.dumps(out), flush=True)
    sys.exit(0)

rng = random.Random(plan["rng"])
keep = set(plan["keep"])
users = plan["users"]
pace = plan["pace"]
last = 0.0
for i in range(plan["writes"]):
    op = rng.random()
    if op < 0.25:
        Todo.objects.create(title=f"{rng.choice(WORDS)} w{plan['rng']}.{i}", done=rng.random() < 0.5)
    elif op < 0.40:
        victim = Todo.objects.exclude(pk__in=keep).order_by("?").first()
        if victim is not None:
            victim.delete()
    elif op < 0.75:
        todo = Todo.objects.order_by("?").first()
        if todo is not None:
            if rng.random() < 0.5:
                todo.done = not todo.done
            else:
                todo.title = f"{rng.choice(WORDS)} r{plan['rng']}.{i}"
            todo.save()
    elif op < 0.90:
        note = Note.objects.filter(owner_id=rng.choice(users)).order_by("?").first()
        if note is not None:
            note.text = f"edited {plan['rng']}.{i}"
            note.save()
        else:
            Note.objects.create(owner_id=rng.choice(users), text=f"new {plan['rng']}.{i}")
    else:
        Note.objects.create(owner_id=rng.choice(users), text=f"new {plan['rng']}.{i}")
    last = time.time()  # autocommit: the save above has committed
    print("wrote", i + 1, last, flush=True)
    if pace:
        time.sleep(rng.uniform(0, 2 * pace))
print("done", last, flush=True)
"""  # then exits: its publisher flushes (PUBLISH_FLUSH_TIMEOUT) before the process ends


def writer_command(plan: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", _WRITER, json.dumps(plan)]


def run_writer(env: dict[str, str], plan: dict[str, Any], timeout: float = 120) -> str:
    """Run a writer to its end (blocking); its stdout."""
    import subprocess

    result = subprocess.run(
        writer_command(plan), env={**os.environ, **env}, cwd=ROOT, capture_output=True,
        text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"writer failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


class Writer:
    """A writer process run from the event loop; reports each commit as it happens."""

    def __init__(self, env: dict[str, str], plan: dict[str, Any]) -> None:
        self.env = env
        self.plan = plan
        self.written = 0
        self.last_commit = 0.0
        self.done = asyncio.Event()
        self.output: list[str] = []
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *writer_command(self.plan), env={**os.environ, **self.env}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            parts = line.split()
            if len(parts) == 3 and parts[0] == "wrote":
                self.written, self.last_commit = int(parts[1]), float(parts[2])
            elif len(parts) == 2 and parts[0] == "done":
                self.done.set()
            else:
                self.output.append(line)
        self.done.set()

    async def wait_written(self, count: int) -> None:
        while self.written < count and not self.done.is_set():
            await asyncio.sleep(0.01)

    async def exit(self, timeout: float = 120) -> int:
        """Wait for the process to end (its publisher flushed); its exit status."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)


__all__ += ["Writer", "converge", "fresh", "writer_command", "subscribing_pids"]


# -- what the deployment logged ----------------------------------------------------------------


def logged_about(log: Path, writers: list[Writer], failures: list[str], since: float = 0.0) -> str:
    """What the writers and the workers (``log``) logged about the failing subscriptions'
    URLs (each shared render's and subscription's decision: multiprocess_settings), and any
    error, from ``since`` (a ``time.time()``) on, in the order written, hex names shortened;
    empty when nothing failed. Short: CI keeps only the head of a long failure."""
    urls = {f"({_live_relative(line.split()[1].rstrip(':'))})" for line in failures[:5]}
    lines = [f"writer {w.plan['rng']}: {line}" for w in writers for line in w.output]
    if log.exists():
        lines += [f"workers: {line}" for line in log.read_text(errors="replace").splitlines()]
    picked = [
        _HEX.sub(r"\1", line) for line in lines
        if (any(url in line for url in urls)
            or ("live URL" not in line and ("drf" in line or "Error" in line)))
        and _logged_at(line) >= since
    ]
    picked.sort(key=_logged_at)
    return "" if not failures or not picked else "\nlogged:\n" + "\n".join(picked[-60:])


def subscribing_pids(log: Path, since: float, until: float) -> set[str]:
    """The worker processes that logged a shared subscription (``drf_grip.subscribe``,
    multiprocess_settings) between ``since`` and ``until``: gateway subscriptions included,
    whose answers carry no ``X-Origin-Pid``. (After the last commit, :func:`fresh`'s GETs
    log subscriptions of their own.)"""
    if not log.exists():
        return set()
    return {
        line.split()[1]
        for line in log.read_text(errors="replace").splitlines()
        if " drf_grip.subscribe " in line and since <= _logged_at(line) <= until
    }


#: A 32-digit hex name (a channel, an ETag) in a log line: its first 8 digits identify it.
_HEX = re.compile(r"\b([0-9a-f]{8})[0-9a-f]{24}\b")


def fail(report: str, *sections: tuple[str, list[str]], logged: str = "") -> None:
    """Fail when a section lists any subscription: the report, the failing subscriptions,
    then ``logged``, with no traceback (CI shows the head of a failure's output only)."""
    listed = [
        f"{title}:\n" + "\n".join(_HEX.sub(r"\1", item) for item in items[:20])
        for title, items in sections if items
    ]
    if listed:
        pytest.fail("\n".join([report, *listed]) + logged, pytrace=False)


def _live_relative(url: str) -> str:
    """A client's URL as the log names its live URL: the query sorted (live_urls.live_url)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return f"{parts.path}?{query}" if query else parts.path


def _logged_at(line: str) -> float:
    """The time a line of the deployment's log was written (multiprocess_settings)."""
    for word in line.split()[:4]:
        try:
            return float(word)
        except ValueError:
            continue
    return 0.0


__all__ += ["fail", "logged_about"]
