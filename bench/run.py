"""drf-grip against its peers: one change of a 10-row Todo list, N watchers, side by side.

Run from the repository root, after ``pip install -r bench/requirements.txt`` (the peers are
installed only for the benchmark) and with Pushpin installed::

    python bench/run.py --quick                 # N = 1, 100; 3 rounds; a few minutes
    python bench/run.py                         # N = 1, 100, 1000; 5 rounds; the extra cases
    python bench/run.py --cases grip-lp-emb,es-direct --sizes 1000 --rounds 5

Every system runs in one uvicorn process of its own (``bench/site/serve.py``, one Django
site whose ``BENCH_SYSTEM`` picks drf-grip, django-eventstream or djangochannelsrestframework)
over the same SQLite file; the Pushpin cases get a private Pushpin each
(``drf_grip.testing.PushpinServer``, no ``message_rate``). Django's cache, drf-grip's state,
is per process (``--cache locmem``, the default) or ``RedisCache`` (``--cache redis``: one
private ``redis-server`` for the run, ``drf_grip.testing.RedisServer``, a database per
origin). Rounds are interleaved: every case runs round 1 before any runs round 2, in
alternating order, so a noisy moment on a shared machine hurts all alike. Per round and case:

1. connect: a pilot watcher, then the others in batches of ``--batch`` (Pushpin answers 502
   to bursts of more than about 100 new connections), each batch subscribed before the next.
   "Subscribed" is read where it happens: Pushpin's handler log (``subscribe ... channel=``
   lines), the embedded proxy's subscriber counts (``/_bench/subscribers``), or the
   client's own acknowledgement (WebSocket subscribe replies, django-eventstream's first
   bytes when direct). On a channel's first subscription Pushpin re-requests the held
   clients about 1 s later; only the pilot is held then (the others connect after its
   ``retry``), so the wave does not land inside the measurement.
2. change, 0.5 s after the last watcher subscribed (past a gateway subscription's settle,
   which counts as connecting): the case's write (a ``PATCH`` to drf-grip, a ``POST
   /bench/change/`` that saves the row for the peers, an HTTP publish for raw Pushpin)
   carrying a fresh marker; each watcher's latency is from just before the write to the
   moment the marker arrived.
3. origin CPU: the origin process's CPU time (``time.process_time_ns()`` read by the origin
   itself at ``/_bench/cpu``, which counts every thread, exited ones too)
   over the connect phase (divided by N: connect cost per subscriber) and from the write
   until every watcher had the marker (per change; includes the write itself; for the
   embedded proxy it includes the proxy, which is the same process).
4. leave: the watchers close, and the run waits until the origin's CPU rests (under 5 % of
   one core for two 0.2 s windows); the CPU spent meanwhile, divided by N, is "leave CPU" (a
   closed WebSocket is a request to the origin behind Pushpin). The next round, and the
   extra cases, start on an origin at rest.

Watchers: long-poll (a ``GET``, then the same ``GET`` with ``If-None-Match`` on the same
connection, held), SSE (``Accept: text/event-stream``) and WebSocket (``websockets``) clients,
all in this process. The table shows medians over rounds of each round's p50/p99 and CPU;
``bench/results.json`` keeps every round.

The extra cases (``--extras``; on by default in the full run) use drf-grip behind Pushpin:
PATCH p50/p99 with 200 watchers held versus none; PATCH throughput with publishing on
(shared and private viewsets) versus the same viewset without ``RealtimeMixin``; and origin
CPU per change after one anonymous client held 200 distinct ``?search=`` URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE / "site")]

from serve import token_for  # noqa: E402

from drf_grip.testing import (  # noqa: E402
    PushpinServer,
    RedisServer,
    find_pushpin,
    find_redis,
    free_port,
)

SUBSCRIBE_TIMEOUT = 60.0
POLL = 0.02
# Longer than any round, so no hold times out while measured (drf-grip clamps to 300).
HOLD_WAIT = 280
#: Seconds from the last subscription to the change (see run_round).
SETTLED = 0.5
#: The share of one core under which an origin counts as at rest (``until_quiet``).
QUIET_SHARE = 0.05


# -- process figures -----------------------------------------------------------------------


def cpu_ns_from_proc(pid: int) -> int:
    """Process CPU in ns from /proc (clock ticks): for origins without ``/_bench/cpu``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return int((int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# -- watchers ------------------------------------------------------------------------------


class Watcher:
    """One client. ``start`` returns once the client's side of subscribing is done."""

    marker: bytes = b""
    got_at: float | None = None
    error: str | None = None

    def __init__(self) -> None:
        self.got = asyncio.get_running_loop().create_future()

    def _seen(self) -> None:
        if self.got_at is None:
            self.got_at = time.perf_counter()
            if not self.got.done():
                self.got.set_result(None)

    async def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    elif status in (204, 304):
        body = b""
    else:
        body = await reader.read()
    return status, headers, body


class LongPoll(Watcher):
    """``GET``, then the same ``GET`` with ``If-None-Match`` on the same connection, held.
    With ``loop``, re-holds after every answer (a client that keeps watching)."""

    def __init__(self, port: int, path: str, headers: dict[str, str], *, first_get: bool = True,
                 loop: bool = False) -> None:
        super().__init__()
        self.port, self.path, self.headers = port, path, headers
        self.first_get, self.loop = first_get, loop
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.answers = 0

    def _request(self, extra: dict[str, str]) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **extra}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        etag = None
        if self.first_get:
            self.writer.write(self._request({}))
            status, headers, _body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"first GET answered {status}")
            etag = headers.get("etag")
        self._hold(etag)
        self.task = asyncio.get_running_loop().create_task(self._wait(reader, etag))

    def _hold(self, etag: str | None) -> None:
        extra = {"Prefer": f"wait={HOLD_WAIT}"}
        if etag:
            extra["If-None-Match"] = etag
        assert self.writer is not None
        self.writer.write(self._request(extra))

    async def _wait(self, reader: asyncio.StreamReader, etag: str | None) -> None:
        try:
            while True:
                status, headers, body = await read_response(reader)
                self.answers += 1
                if self.marker and self.marker in body:
                    self._seen()
                elif status >= 400:
                    self.error = f"{status} {body[:60]!r}"
                if not self.loop or status >= 400:
                    return
                etag = headers.get("etag", etag)
                self._hold(etag)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if self.got_at is None and self.error is None:
                self.error = type(exc).__name__

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class EventStream(Watcher):
    """``Accept: text/event-stream``; subscribed (client side) once the first data arrived."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        super().__init__()
        self.port, self.path, self.headers = port, path, headers
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                 "Accept: text/event-stream", *(f"{k}: {v}" for k, v in self.headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            try:
                body = await asyncio.wait_for(reader.read(300), 2)
            except (asyncio.TimeoutError, OSError):
                body = b""
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise RuntimeError(f"{self.path}: {status}: {body.decode('latin-1')!r}")
        seen = b""
        while b"data" not in seen:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError("stream ended before its first event")
            seen = seen[-8:] + chunk
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    if self.got_at is None:
                        self.error = "stream ended"
                    return
                if self.marker and self.marker in tail + chunk:
                    self._seen()
                tail = chunk[-64:]
        except OSError as exc:
            self.error = type(exc).__name__

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class Socket(Watcher):
    """A WebSocket that sends one subscribe message and waits for its acknowledgement."""

    def __init__(self, url: str, subscribe: dict[str, Any], is_ack: Callable[[dict], bool]) -> None:
        super().__init__()
        self.url, self.subscribe, self.is_ack = url, subscribe, is_ack
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, ping_interval=None, open_timeout=30,
                                max_size=1 << 22, compression=None)
        await self.ws.send(json.dumps(self.subscribe))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if self.is_ack(message):
                break
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                if self.marker and self.marker in data:
                    self._seen()
        except Exception as exc:  # noqa: BLE001 - a closed socket ends the watcher
            if self.got_at is None:
                self.error = type(exc).__name__

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.close())


# -- servers ---------------------------------------------------------------------------------


class Origin:
    """One ``bench/site/serve.py`` process (optionally with its own Pushpin in front)."""

    #: Requests the origin served, as ``/_bench/cpu`` last said (the raw floor's origin has
    #: no such counter: it stays 0, and its row shows no requests per connect).
    requests_served = 0

    def __init__(self, system: str, *, pushpin: bool, db: str, profile_dir: Path | None,
                 name: str, redis_url: str = "") -> None:
        self.name = name
        self.pushpin: PushpinServer | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        grip_url = ""
        port = 0
        if pushpin:
            port = free_port()
            self.pushpin = PushpinServer(port, http_port=free_port(), publish_port=free_port())
            grip_url = self.pushpin.grip_url
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "site" / "serve.py"), "--system", system,
             "--port", str(port), "--grip-url", grip_url],
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "BENCH_DB": db, "BENCH_REDIS_URL": redis_url},
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            self.process.kill()
            raise RuntimeError(f"bench/site/serve.py --system {system} did not start")
        self.origin_port = int(line)
        self.client_port = self.origin_port
        if self.pushpin is not None:
            self.pushpin.start()
            self.client_port = self.pushpin.http_port
            self._log_offset = 0
            self._subs = 0
            self._retries = 0
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.origin_port}", timeout=60)
        if profile_dir is not None:
            out = profile_dir / f"profile-{name}.txt"
            self.profiler = subprocess.Popen(
                [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.process.pid), "--rate", "250",
                 "--format", "raw", "--output", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def cpu_ns(self) -> int:
        """The origin's CPU time so far, every thread included, as the process reads it."""
        if self.name == "raw":
            return cpu_ns_from_proc(self.pid)
        answer = await self.http.get("/_bench/cpu")
        self.requests_served = int(answer.headers.get("x-bench-requests", 0))
        return int(answer.text)

    def read_log(self) -> tuple[int, int]:
        """(subscribe lines, retry lines) in Pushpin's handler log so far."""
        assert self.pushpin is not None
        with open(self.pushpin.handler_log, "rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for match in re.finditer(rb"\bsubscribe \S+ channel=\S+( retry)?", data[:end]):
            if match[1]:
                self._retries += 1
            else:
                self._subs += 1
        return self._subs, self._retries

    async def embedded_subscribed(self) -> int:
        answer = await self.http.get("/_bench/subscribers")
        return sum(answer.json().values())

    async def publish(self, item: dict[str, Any]) -> None:
        assert self.pushpin is not None
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                self.pushpin.publish_uri + "/publish/", json={"items": [item]},
                headers={"Authorization": f"Bearer {self.pushpin.key}"},
            )
            answer.raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            try:
                self.profiler.wait(30)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
        if self.pushpin is not None:
            self.pushpin.stop()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RawOrigin(Origin):
    """Pushpin in front of ``bench/servers.py origin`` (plain ASGI): the floor."""

    def __init__(self, profile_dir: Path | None = None) -> None:  # noqa: D107
        self.name = "raw"
        self.profiler = None
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "servers.py"), "origin"], stdout=subprocess.PIPE, text=True
        )
        self.origin_port = int(self.process.stdout.readline())  # type: ignore[union-attr]
        self.pushpin = PushpinServer(self.origin_port).start()
        self.client_port = self.pushpin.http_port
        self._log_offset = self._subs = self._retries = 0
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.origin_port}", timeout=60)


# -- cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    label: str
    origin: str  # key in ORIGINS
    transport: str  # longpoll | sse | ws-gateway | ws-dcrf | raw
    path: str = "/api/todos/"
    change: str = "/api/todos/1/"  # drf-grip PATCH target, or "peer" / "raw"
    per_user: bool = False  # each watcher authenticates as its own user
    one_user: bool = False  # every watcher sends user 0's token: identical requests
    partitioned: bool = False  # only user 0's watcher should receive the change
    rounds: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None


# name -> (BENCH_SYSTEM, behind Pushpin)
ORIGINS: dict[str, tuple[str, bool]] = {
    "raw": ("raw", True),
    "es-direct": ("eventstream", False),
    "es-pushpin": ("eventstream", True),
    "dcrf": ("dcrf", False),
    "grip-pushpin": ("drfgrip", True),
    "grip-embedded": ("drfgrip", False),
}


def all_cases() -> list[Case]:
    return [
        Case("raw", "raw Pushpin publish (the floor)", "raw", "raw", change="raw"),
        Case("es-direct", "django-eventstream SSE, direct ASGI", "es-direct", "sse",
             path="/events/", change="peer"),
        Case("es-pushpin", "django-eventstream SSE via Pushpin", "es-pushpin", "sse",
             path="/events/", change="peer"),
        Case("dcrf", "djangochannelsrestframework WebSocket", "dcrf", "ws-dcrf", path="/ws/",
             change="peer"),
        Case("grip-lp-pp", "drf-grip shared long-poll via Pushpin", "grip-pushpin", "longpoll"),
        Case("grip-sse-pp", "drf-grip shared SSE via Pushpin", "grip-pushpin", "sse"),
        Case("grip-ws-pp", "drf-grip shared gateway via Pushpin", "grip-pushpin", "ws-gateway",
             path="/api/ws/"),
        Case("grip-lp-emb", "drf-grip shared long-poll, embedded", "grip-embedded", "longpoll"),
        Case("grip-sse-emb", "drf-grip shared SSE, embedded", "grip-embedded", "sse"),
        Case("grip-ws-emb", "drf-grip shared gateway, embedded", "grip-embedded", "ws-gateway",
             path="/api/ws/"),
        Case("grip-priv-pp", "drf-grip private long-poll via Pushpin", "grip-pushpin",
             "longpoll", path="/api/private-todos/", change="/api/private-todos/1/",
             per_user=True),
        Case("grip-priv-emb", "drf-grip private long-poll, embedded", "grip-embedded",
             "longpoll", path="/api/private-todos/", change="/api/private-todos/1/",
             per_user=True),
        Case("grip-same-pp", "drf-grip private long-poll, one token on all, via Pushpin",
             "grip-pushpin", "longpoll", path="/api/private-todos/",
             change="/api/private-todos/1/", one_user=True),
        Case("grip-part-pp", "drf-grip private, partitioned, via Pushpin", "grip-pushpin",
             "longpoll", path="/api/notes/", change="/api/notes/1/", per_user=True,
             partitioned=True),
        Case("grip-part-emb", "drf-grip private, partitioned, embedded", "grip-embedded",
             "longpoll", path="/api/notes/", change="/api/notes/1/", per_user=True,
             partitioned=True),
    ]


def auth(index: int) -> dict[str, str]:
    return {"Authorization": f"Token {token_for(index)}"}


def watcher_headers(case: Case, index: int) -> dict[str, str]:
    return auth(index) if case.per_user else auth(0) if case.one_user else {}


def make_watcher(case: Case, origin: Origin, index: int, channel: str) -> Watcher:
    headers = watcher_headers(case, index)
    port = origin.client_port
    if case.transport == "raw":
        return LongPoll(port, f"/hold/{channel}", {}, first_get=False)
    if case.transport == "longpoll":
        return LongPoll(port, case.path, headers)
    if case.transport == "sse":
        return EventStream(port, case.path, headers)
    if case.transport == "ws-gateway":
        return Socket(f"ws://127.0.0.1:{port}{case.path}", {"id": 1, "subscribe": "/api/todos/"},
                      lambda m: m.get("id") == 1 and m.get("status") == 200)
    return Socket(f"ws://127.0.0.1:{port}{case.path}",
                  {"action": "subscribe_todos", "request_id": 1},
                  lambda m: m.get("action") == "subscribe_todos" and m.get("response_status") == 200)


async def wait_subscribed(case: Case, origin: Origin, base: int, count: int, per_hold: int,
                          repair: Callable[[], Awaitable[None]] | None = None) -> None:
    """Until ``count`` watchers are subscribed where the proxy keeps subscriptions;
    ``repair`` replaces watchers that were answered before they could subscribe."""
    if case.transport.startswith("ws") or origin.name == "es-direct":
        return  # the client's acknowledgement already says so
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    while True:
        if origin.pushpin is not None:
            have = origin.read_log()[0] - base
        else:
            have = await origin.embedded_subscribed()
        if have >= count * per_hold:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{case.name}: {have} of {count * per_hold} subscriptions")
        if repair is not None:
            await repair()
        await asyncio.sleep(POLL)


async def connect_all(case: Case, origin: Origin, count: int, batch: int, channel: str,
                      first_user: int = 0) -> tuple[list[Watcher], int]:
    """Connect ``count`` watchers (pilot first, then batches); returns them and the errors."""
    watchers: list[Watcher] = []
    errors = 0
    base = origin.read_log()[0] if origin.pushpin is not None else 0
    per_hold = 1

    async def one(index: int) -> Watcher:
        nonlocal errors
        for _attempt in range(3):
            watcher = make_watcher(case, origin, first_user + index, channel)
            try:
                await watcher.start()
                return watcher
            except Exception:  # noqa: BLE001 - a 502 or a reset under a burst: try again
                errors += 1
                watcher.close()
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{case.name}: watcher {index} could not connect")

    async def repair() -> None:
        # A hold answered before the change (Pushpin's 502/500 under a burst) never
        # subscribes: replace it.
        nonlocal errors
        for position, watcher in enumerate(watchers):
            if isinstance(watcher, LongPoll) and watcher.answers:
                errors += 1
                watcher.close()
                watchers[position] = await one(position)

    watchers.append(await one(0))
    await wait_subscribed(case, origin, base, 1, 1)
    if origin.pushpin is not None and case.transport in ("longpoll", "sse", "raw"):
        await asyncio.sleep(0.1)
        per_hold = max(1, origin.read_log()[0] - base)
        # Pushpin's re-request of a channel's first subscriber (~1 s later): let it pass.
        retries = origin.read_log()[1]
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and origin.read_log()[1] == retries:
            await asyncio.sleep(POLL)
        base = origin.read_log()[0] - per_hold
    elif origin.name == "grip-embedded" and case.transport in ("longpoll", "sse"):
        per_hold = max(1, await origin.embedded_subscribed())
    for start in range(1, count, batch):
        size = min(batch, count - start)
        watchers += await asyncio.gather(*(one(i) for i in range(start, start + size)))
        await wait_subscribed(case, origin, base, len(watchers), per_hold, repair)
    return watchers, errors


async def settle_embedded(origin: Origin) -> None:
    if origin.name == "grip-embedded":
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and await origin.embedded_subscribed():
            await asyncio.sleep(POLL)


async def until_quiet(origin: Origin, limit: float = 30.0) -> float:
    """Wait until the origin's CPU rests; return the CPU (ms) it spent meanwhile.

    A closed WebSocket is one more request to the origin (Pushpin forwards its ``CLOSE`` or
    ``DISCONNECT``), so 1,000 closed gateway sockets keep the origin busy for a second or
    more after the round: left running, that work was counted in the next round's connect
    CPU and in the first PATCHes of the write-latency case, whichever case came next.
    """
    window = 0.2
    start = last = await origin.cpu_ns()
    quiet = 0
    deadline = time.monotonic() + limit
    while quiet < 2 and time.monotonic() < deadline:
        await asyncio.sleep(window)
        now = await origin.cpu_ns()
        quiet = quiet + 1 if now - last < window * QUIET_SHARE * 1e9 else 0
        last = now
    return (last - start) / 1e6


async def make_change(case: Case, origin: Origin, marker: str, channel: str) -> None:
    if case.change == "raw":
        await origin.publish({
            "channel": channel, "id": marker,
            "formats": {"http-response": {
                "code": 200, "headers": {"Content-Type": "text/plain", "ETag": f'"{marker}"'},
                "body": f"{marker}\n"}},
        })
    elif case.change == "peer":
        (await origin.http.post("/bench/change/", json={"title": marker})).raise_for_status()
    else:
        field_name = "text" if "notes" in case.change else "title"
        answer = await origin.http.patch(case.change, json={field_name: marker}, headers=auth(0))
        answer.raise_for_status()


async def run_round(case: Case, origin: Origin, count: int, args: argparse.Namespace,
                    number: int) -> dict[str, Any]:
    channel = f"raw-{count}-{number}-{secrets.token_hex(3)}"
    rss_before = rss_kib(origin.pid)
    cpu0 = await origin.cpu_ns()
    served0 = origin.requests_served
    watchers, errors = await connect_all(case, origin, count, args.batch, channel)
    # Past the settle of a gateway subscription (0.4 s after its answer,
    # drf_grip.rest.gateway.view.SETTLE_DELAY), which is part of connecting: the change then
    # measures the fan-out to subscribed watchers, in every case alike. A change within a
    # gateway subscription's first 0.4 s reaches it at its settle (NOTES.rst, issue 9).
    await asyncio.sleep(SETTLED)
    cpu1 = await origin.cpu_ns()
    served1 = origin.requests_served
    rss_held = rss_kib(origin.pid)
    marker = "m" + secrets.token_hex(6)
    expected = [watchers[0]] if case.partitioned else watchers
    for watcher in watchers:
        watcher.marker = marker.encode()
    cpu2 = await origin.cpu_ns()
    sent = time.perf_counter()
    await make_change(case, origin, marker, channel)
    await asyncio.wait([w.got for w in expected], timeout=args.timeout)
    done_at = time.perf_counter()
    cpu3 = await origin.cpu_ns()
    latencies = [(w.got_at - sent) * 1000 for w in expected if w.got_at is not None]
    failures = [w.error for w in expected if w.got_at is None and w.error]
    for watcher in watchers:
        watcher.close()
    await settle_embedded(origin)
    leave_ms = await until_quiet(origin)
    result = {
        "n": count,
        "delivered": len(latencies),
        "expected": len(expected),
        "p50_ms": round(percentile(latencies, 0.5), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "connect_errors": errors,
        "failures": failures[:5],
        "connect_cpu_ms_per_client": round((cpu1 - cpu0) / 1e6 / count, 3),
        # Requests the origin served while they connected (the proxy's re-requests and
        # next-link fetches included; none counted for the raw floor, which has no origin).
        "connect_requests_per_client": round((served1 - served0) / count, 2),
        "cpu_per_change_ms": round((cpu3 - cpu2) / 1e6, 2),
        # What the origin spent after the watchers left, until it rested (a gateway
        # socket's CLOSE reaches the origin; a long-poll or a stream that ends does not).
        "leave_cpu_ms_per_client": round(leave_ms / count, 3),
        "change_wall_ms": round((done_at - sent) * 1000, 1),
    }
    if origin.name == "grip-embedded":
        result["kib_per_held"] = round((rss_held - rss_before) / count, 1)
        result["rss_held_kib"] = rss_held
    return result


# -- extra cases (drf-grip behind Pushpin) ---------------------------------------------------


async def cpu_per_patch(origin: Origin, path: str, changes: int, settle: float) -> float:
    """Origin CPU (ms) per PATCH of ``path``, with ``settle`` s after each for its publish."""
    total = 0
    for _ in range(changes):
        before = await origin.cpu_ns()
        answer = await origin.http.patch(path, json={"title": "c" + secrets.token_hex(4)},
                                         headers=auth(0))
        answer.raise_for_status()
        await asyncio.sleep(settle)
        total += await origin.cpu_ns() - before
    return total / changes / 1e6


async def patch_latencies(origin: Origin, path: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        answer = await origin.http.patch(path, json={"title": "w" + secrets.token_hex(4)},
                                         headers=auth(0))
        answer.raise_for_status()
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return out


async def write_latency(origin: Origin, case: Case, held: int, patches: int, batch: int
                        ) -> dict[str, Any]:
    """PATCH p50/p99 with no watcher, then with ``held`` watchers that keep re-holding."""
    idle = await patch_latencies(origin, case.change, patches)
    watchers: list[Watcher] = []
    for start in range(0, held, batch):
        group = [LongPoll(origin.client_port, case.path, watcher_headers(case, i), loop=True)
                 for i in range(start, min(held, start + batch))]
        await asyncio.gather(*(w.start() for w in group))
        watchers += group
    await asyncio.sleep(1.5)  # past Pushpin's first-subscription re-request
    loaded = await patch_latencies(origin, case.change, patches)
    for watcher in watchers:
        watcher.close()
    return {
        "case": case.name, "held": held, "patches": patches,
        "idle_p50_ms": round(percentile(idle, 0.5), 1),
        "idle_p99_ms": round(percentile(idle, 0.99), 1),
        "held_p50_ms": round(percentile(loaded, 0.5), 1),
        "held_p99_ms": round(percentile(loaded, 0.99), 1),
        "ratio_p99": round(percentile(loaded, 0.99) / percentile(idle, 0.99), 2),
        "idle_slowest_ms": [round(v, 1) for v in sorted(idle)[-3:]],
        "held_slowest_ms": [round(v, 1) for v in sorted(loaded)[-3:]],
    }


async def throughput(origin: Origin, path: str, seconds: float, workers: int) -> dict[str, float]:
    """PATCHes per second with ``workers`` concurrent clients, and origin CPU per PATCH."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            answer = await origin.http.patch(path, json={"title": "t" + secrets.token_hex(4)},
                                             headers=auth(0))
            answer.raise_for_status()
            done += 1

    before = await origin.cpu_ns()
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    await asyncio.sleep(0.5)  # the publisher's tail
    elapsed = time.monotonic() - started - 0.5
    return {"per_second": round(done / elapsed, 1),
            "cpu_ms_per_patch": round((await origin.cpu_ns() - before) / 1e6 / max(done, 1), 2)}


async def many_live_urls(origin: Origin, urls: int, changes: int, batch: int) -> dict[str, Any]:
    before = await cpu_per_patch(origin, "/api/todos/1/", changes, 0.5)
    for start in range(0, urls, batch):
        group = [LongPoll(origin.client_port, f"/api/todos/?search=s{i}", {})
                 for i in range(start, min(urls, start + batch))]
        await asyncio.gather(*(w.start() for w in group))
        await asyncio.sleep(0.2)
        for watcher in group:
            watcher.close()
    await asyncio.sleep(1.0)
    after = await cpu_per_patch(origin, "/api/todos/1/", changes, 1.0)
    return {"urls": urls, "cpu_per_change_ms_before": round(before, 1),
            "cpu_per_change_ms_after": round(after, 1), "ratio": round(after / before, 2)}


async def extras(origins: dict[str, Origin], cases: dict[str, Case], args: argparse.Namespace
                 ) -> dict[str, Any]:
    origin = origins["grip-pushpin"]
    out: dict[str, Any] = {"write_latency": [], "throughput": {}}
    for name in ("grip-lp-pp", "grip-priv-pp"):
        print(f"  extra: write latency, {name}", file=sys.stderr)
        out["write_latency"].append(
            await write_latency(origin, cases[name], args.held_writers, args.write_patches,
                                args.batch))
    for label, path in (("off", "/api/plain-todos/1/"), ("shared", "/api/todos/1/"),
                        ("private", "/api/private-todos/1/")):
        print(f"  extra: throughput, {label}", file=sys.stderr)
        runs = [await throughput(origin, path, args.throughput_seconds, 4) for _ in range(3)]
        out["throughput"][label] = {
            "per_second": statistics.median(r["per_second"] for r in runs),
            "cpu_ms_per_patch": statistics.median(r["cpu_ms_per_patch"] for r in runs),
        }
    off = out["throughput"]["off"]["per_second"]
    for label in ("shared", "private"):
        out["throughput"][label]["ratio_to_off"] = round(
            out["throughput"][label]["per_second"] / off, 2)
    print("  extra: many live URLs", file=sys.stderr)
    out["many_live_urls"] = await many_live_urls(origin, 200, 5, args.batch)
    return out


# -- the run ---------------------------------------------------------------------------------


def summarize(case: Case, count: int) -> dict[str, Any]:
    rounds = [r for r in case.rounds if r["n"] == count]
    summary: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("p50_ms", "p99_ms", "cpu_per_change_ms", "connect_cpu_ms_per_client",
                "connect_requests_per_client", "leave_cpu_ms_per_client", "kib_per_held"):
        value = median_or_none([r.get(key) for r in rounds])
        summary[key] = round(value, 2) if value is not None else None
    summary["delivered"] = f"{sum(r['delivered'] for r in rounds)}/{sum(r['expected'] for r in rounds)}"
    summary["connect_errors"] = sum(r["connect_errors"] for r in rounds)
    return summary


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    cases = [c for c in all_cases() if c.name in args.cases]
    db_dir = Path(tempfile.mkdtemp(prefix="drf-grip-bench-"))
    # Pushpin's run and log directories go in here too, not beside other test sessions'
    # /tmp/drf-grip-pushpin-* (a concurrent cleanup of those once removed a run's logs).
    tempfile.tempdir = str(db_dir)
    db = str(db_dir / "bench.sqlite3")
    users = max(args.sizes) + args.held_writers + 1
    subprocess.run([sys.executable, str(HERE / "site" / "serve.py"), "--system", "drfgrip",
                    "--seed", str(users)], check=True, env={**os.environ, "BENCH_DB": db})
    profile_dir = Path(args.profile) if args.profile else None
    origins: dict[str, Origin] = {}
    redis = RedisServer().start() if args.cache == "redis" else None
    try:
        for index, key in enumerate(dict.fromkeys(c.origin for c in cases)):
            system, behind = ORIGINS[key]
            profiled = profile_dir if key in args.profile_origins else None
            # Each origin its own Redis database: as isolated from the others as a per-process
            # cache. Not flushed between rounds, as the per-process cache is not (and a flush
            # under drf-grip is state lost: it re-requests its holds, a cost of its own).
            redis_url = f"unix://{redis.socket_path}?db={index}" if redis else ""
            origins[key] = (RawOrigin() if key == "raw" else
                            Origin(system, pushpin=behind, db=db, profile_dir=profiled, name=key,
                                   redis_url=redis_url))
        for case in cases:
            if case.partitioned and not partitions_supported():
                case.skipped = ("realtime_partition has no effect in this drf-grip: every "
                                    "user's hold would be re-requested (see grip-priv-*)")
        live = [c for c in cases if c.skipped is None]
        for case in live:  # one round at N = 1 each, unmeasured: imports, caches, Pushpin
            await run_round(case, origins[case.origin], 1, args, -1)
        memory = None
        lp_emb = next((c for c in live if c.name == "grip-lp-emb"), None)
        if lp_emb is not None and max(args.sizes) >= 100:
            # Whole-process RSS per held long-poll, on a process that has not yet served
            # N GETs: later rounds reuse the heap those left behind and look cheaper.
            first = await run_round(lp_emb, origins["grip-embedded"], max(args.sizes), args, -1)
            memory = {"held": max(args.sizes), "kib_per_held": first["kib_per_held"],
                      "rss_held_kib": first["rss_held_kib"]}
            print(f"  grip-lp-emb: {memory['kib_per_held']} KiB per held long-poll (first "
                  f"{max(args.sizes)} holds of the process)", file=sys.stderr)
        for count in args.sizes:
            for number in range(args.rounds):
                order = live if number % 2 == 0 else live[::-1]
                for case in order:
                    result = await run_round(case, origins[case.origin], count, args, number)
                    case.rounds.append(result)
                    print(f"  {case.name} N={count} round {number + 1}: p99 {result['p99_ms']} ms,"
                          f" {result['delivered']}/{result['expected']},"
                          f" cpu/change {result['cpu_per_change_ms']} ms", file=sys.stderr)
        results: dict[str, Any] = {
            "cases": {
                c.name: {"label": c.label, "skipped": c.skipped, "rounds": c.rounds,
                         "by_n": {str(n): summarize(c, n) for n in args.sizes}}
                for c in cases
            },
            "embedded_memory": memory,
        }
        if args.extras and "grip-pushpin" in origins:
            results["extras"] = await extras(origins, {c.name: c for c in all_cases()}, args)
        return results
    finally:
        for origin in origins.values():
            await origin.aclose()
        if redis is not None:
            redis.stop()
        lost = [c.name for c in cases if any(r["delivered"] < r["expected"] for r in c.rounds)]
        if args.keep or lost:
            why = f" ({', '.join(lost)} lost deliveries)" if lost else ""
            print(f"  kept the run's folder (database, Pushpin logs){why}: {db_dir}",
                  file=sys.stderr)
        else:
            shutil.rmtree(db_dir, ignore_errors=True)


def partitions_supported() -> bool:
    """Does this drf-grip read ``realtime_partition`` at all? (The bench site's notes view
    sets it; without support the attribute is inert and the case would repeat grip-priv-*.)"""
    return any("realtime_partition" in path.read_text()
               for path in (ROOT / "drf_grip").rglob("*.py"))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def table(results: dict[str, Any], sizes: list[int]) -> str:
    header = ("system", "N", "p50 ms", "p99 ms", "×floor p99", "delivered", "CPU/change ms",
              "connect CPU ms", "req/connect", "leave CPU ms", "KiB/held")
    rows = []
    floor = results["cases"].get("raw", {}).get("by_n", {})
    for name, case in results["cases"].items():
        if case["skipped"]:
            rows.append((case["label"], "–", "skipped", "", "", "", "", "", "", "", ""))
            continue
        for n in sizes:
            s = case["by_n"][str(n)]
            base = floor.get(str(n), {}).get("p99_ms")
            ratio = s["p99_ms"] / base if base and s["p99_ms"] else None
            rows.append((case["label"], str(n), fmt(s["p50_ms"]), fmt(s["p99_ms"]),
                         fmt(ratio, 2), s["delivered"],
                         "–" if name == "raw" else fmt(s["cpu_per_change_ms"]),
                         "–" if name == "raw" else fmt(s["connect_cpu_ms_per_client"], 2),
                         "–" if name == "raw" else fmt(s.get("connect_requests_per_client"), 2),
                         "–" if name == "raw" else fmt(s.get("leave_cpu_ms_per_client"), 2),
                         fmt(s["kib_per_held"])))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                          for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]
    out.append("")
    memory = results.get("embedded_memory")
    if memory:
        out.append(f"Embedded proxy memory: {memory['kib_per_held']} KiB whole-process RSS per held "
                   f"long-poll (first {memory['held']} holds of a fresh process; KiB/held above "
                   f"is after earlier rounds)")
    extra = results.get("extras")
    if extra:
        for w in extra["write_latency"]:
            out.append(f"PATCH latency, {w['case']}: p50/p99 {w['idle_p50_ms']}/{w['idle_p99_ms']} ms"
                       f" with none held, {w['held_p50_ms']}/{w['held_p99_ms']} ms with"
                       f" {w['held']} held: ×{w['ratio_p99']} (p99)")
        t = extra["throughput"]
        out.append(f"PATCH throughput: off {t['off']['per_second']}/s"
                   f" ({t['off']['cpu_ms_per_patch']} ms CPU), shared {t['shared']['per_second']}/s"
                   f" (×{t['shared']['ratio_to_off']}, {t['shared']['cpu_ms_per_patch']} ms CPU),"
                   f" private {t['private']['per_second']}/s (×{t['private']['ratio_to_off']},"
                   f" {t['private']['cpu_ms_per_patch']} ms CPU)")
        m = extra["many_live_urls"]
        out.append(f"Many live URLs: origin CPU per change {m['cpu_per_change_ms_before']} ms, after"
                   f" one client held {m['urls']} ?search= URLs {m['cpu_per_change_ms_after']} ms"
                   f" (×{m['ratio']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="drf-grip against its peers (see the docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="N = 1, 100; 3 rounds; no extra cases (a few minutes)")
    parser.add_argument("--sizes", help="comma-separated watcher counts (default 1,100,1000)")
    parser.add_argument("--rounds", type=int, help="rounds per case and N (default 5; quick 3)")
    parser.add_argument("--cases", default="all",
                        help="comma-separated case names (default all): "
                        + ", ".join(c.name for c in all_cases()))
    parser.add_argument("--batch", type=int, default=100, help="watchers connected at once")
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds a change may take to reach every watcher")
    parser.add_argument("--extras", action=argparse.BooleanOptionalAction, default=None,
                        help="the write-latency, throughput and many-URL cases (default: on "
                        "unless --quick)")
    parser.add_argument("--held-writers", type=int, default=200,
                        help="watchers held while PATCH latency is measured (default 200)")
    parser.add_argument("--write-patches", type=int, default=100,
                        help="PATCHes timed each way in the write-latency case (default 100: "
                        "its p99 is then the second slowest, not the slowest of 20)")
    parser.add_argument("--throughput-seconds", type=float, default=4.0)
    parser.add_argument("--profile", default="",
                        help="directory for py-spy profiles (raw collapsed stacks) of the origins "
                        "named by --profile-origins")
    parser.add_argument("--profile-origins", default="grip-pushpin,grip-embedded")
    parser.add_argument("--cache", choices=("locmem", "redis"), default="locmem",
                        help="the origins' Django cache (drf-grip's state): per-process memory "
                        "(default) or RedisCache on one private redis-server for the run")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's temporary folder (database, Pushpin logs); "
                        "kept anyway when a round lost deliveries")
    parser.add_argument("--json", default=str(HERE / "results.json"),
                        help="where to write every round (default bench/results.json; '' for none)")
    args = parser.parse_args(argv)
    args.sizes = [int(n) for n in (args.sizes or ("1,100" if args.quick else "1,100,1000")).split(",")]
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.extras = (not args.quick) if args.extras is None else args.extras
    names = [c.name for c in all_cases()]
    args.cases = names if args.cases == "all" else [c.strip() for c in args.cases.split(",")]
    unknown = set(args.cases) - set(names)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if args.extras and "grip-lp-pp" not in args.cases:
        args.extras = False
    args.profile_origins = set(args.profile_origins.split(",")) if args.profile else set()
    if find_pushpin() is None:
        parser.error("Pushpin is not installed: apt-get install -y pushpin")
    if args.cache == "redis" and find_redis() is None:
        parser.error("redis-server is not installed: apt-get install -y redis-server")
    if not all(importlib.util.find_spec(m) for m in ("django_eventstream",
                                                    "djangochannelsrestframework", "daphne")):
        parser.error("the peers are missing: pip install -r bench/requirements.txt")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * (max(args.sizes) + args.held_writers + 256)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))

    started = time.monotonic()
    results = asyncio.run(bench(args))
    elapsed = time.monotonic() - started
    print(table(results, args.sizes))
    print(f"\n{args.rounds} rounds per row, medians of per-round figures; cache {args.cache}; "
          f"{elapsed:.0f}s on {os.cpu_count()} CPUs")
    if args.json:
        document = {
            "command": " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "seconds": round(elapsed, 1),
            "cache": args.cache,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
