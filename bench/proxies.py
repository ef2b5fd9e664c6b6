"""Embedded proxy vs Pushpin: memory per held long-poll and publish-to-delivery latency.

Run from the repository root (Pushpin must be installed: ``apt-get install -y pushpin``)::

    python bench/proxies.py          # 1,000 idle holds; 1, 100 and 1,000 subscribers; 9 rounds
    python bench/proxies.py --held 5000 --rounds 9 --subscribers 1,100,1000,2000

Both proxies stand in front of the same minimal origin (``bench/servers.py``: plain ASGI,
``Grip-Hold: response``, ``Grip-Channel: <channel>``) and are measured in one run, their
rounds interleaved so a noisy moment hurts both alike:

- the embedded proxy runs in its own process (uvicorn serving ``GripProxy`` around the
  origin, with drf-grip's own ``Server``), its memory read from ``/proc/PID/status``;
- Pushpin is a private instance from ``drf_grip.testing.PushpinServer`` (no
  ``message_rate``), its memory the sum over the runner and its services (condure, zurl,
  pushpin-proxy, pushpin-handler); its origin runs in a process of its own.

Memory: the RSS growth from before to while ``--held`` long-polls are held, divided by
their number. The embedded proxy's process also runs the origin, which keeps nothing per held
request; Pushpin's origin process is not counted.

Latency: each round holds S long-polls on a fresh channel, publishes one item over HTTP
(Pushpin: ``POST /publish/`` on its publish port; embedded: ``POST /_grip/publish/`` with
``Authorization: Bearer <key>``) and times, per client, the first byte of its response after
the publish was sent. Each round gives a p50 and a p99 (nearest rank); the table shows their
medians over the rounds. The clients are raw asyncio sockets in this process, so a large
fan-out also includes the time this process takes to read a thousand responses; that cost is
the same for both proxies.

Pushpin re-requests the clients held on a channel about 1 s after the channel's *first*
subscription (shared/PUSHPIN.md: 10 per second, ~100 s for 1,000 clients); a publish
arriving while a client is being re-requested misses it. Only the clients held when that
wave starts are re-requested, so every round (and the memory phase) first holds one pilot
client on a fresh channel, waits until Pushpin has re-requested and re-held it (its handler
log says ``subscribe ... retry``), and only then connects the others, whom Pushpin does not
re-request. The embedded proxy does not re-request; it gets the same pilot without the wait.
The others connect in batches (``--batch``, default 100; larger bursts of new connections got
502s from Pushpin) and the publish waits until every client is subscribed, polling Pushpin's
handler log (one ``subscribe`` line per held client) or, for the embedded proxy, its
subscriber counts at ``/_bench/subscribers`` (a route ``bench/servers.py`` puts in front of
the proxy). A client answered before the publish (Pushpin's ``500 Accept service
unavailable`` under a burst) is replaced and counted in ``replaced_clients``; a client whose
response does not carry the round's item by 15 s is counted in ``missed``.

Results go to stdout as a table and to ``bench/proxies.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drf_grip.testing import PushpinServer, find_pushpin  # noqa: E402

HERE = Path(__file__).resolve().parent

# How long a client or a wait may take before the bench gives up on it.
RESPONSE_TIMEOUT = 15.0
SUBSCRIBE_TIMEOUT = 30.0
POLL = 0.01


# -- clients -------------------------------------------------------------------------------


class HoldClient(asyncio.Protocol):
    """One long-poll: sends its request at once, records when its response's first byte came."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.first_byte_at: float | None = None
        self.buffer = bytearray()
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        self.buffer += data
        head, sep, body = bytes(self.buffer).partition(b"\r\n\r\n")
        if not sep:
            return
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match and len(body) >= int(match[1]) and not self.done.done():
            self.done.set_result(bytes(self.buffer))
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.buffer))

    @property
    def answered(self) -> bool:
        return self.first_byte_at is not None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_holds(target: Target, channel: str, count: int, batch: int) -> list[HoldClient]:
    """Hold ``count`` long-polls on ``channel``, ``batch`` at a time, each batch subscribed
    before the next; a client answered before the publish (a 5xx) is replaced."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET /hold/{channel} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    clients: list[HoldClient] = []

    async def connect(n: int) -> list[HoldClient]:
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda: HoldClient(request), "127.0.0.1", target.port)
                for _ in range(n)
            )
        )
        return [protocol for _transport, protocol in made]

    # A pilot first: the proxy's reaction to a channel's first subscription (Pushpin's
    # re-request wave) then concerns the pilot alone.
    sizes = [1] + [min(batch, count - start) for start in range(1, count, batch)]
    for number, size in enumerate(sizes):
        clients += await connect(size)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while await target.subscribed(channel) < len(clients):
            failed = [c for c in clients if c.answered]
            if failed:
                target.replaced += len(failed)
                clients = [c for c in clients if not c.answered] + await connect(len(failed))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target.name}: fewer than {len(clients)} held on {channel}")
            await asyncio.sleep(POLL)
        if number == 0:
            await target.first_subscription_settled(channel)
    return clients


# -- the two proxies ---------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from the parent pids in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def start_server(kind: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "servers.py"), kind, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"bench/servers.py {kind} did not start")
    return process, int(line)


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Target:
    name: str
    port: int
    http: httpx.AsyncClient
    replaced = 0  # clients answered before the publish (a proxy error) and replaced

    def rss_kib(self) -> int:
        raise NotImplementedError

    async def subscribed(self, channel: str) -> int:
        """Clients held on ``channel`` so far (Pushpin: subscriptions it logged)."""
        raise NotImplementedError

    async def first_subscription_settled(self, channel: str) -> None:
        """Return once the proxy is done reacting to ``channel``'s first subscription."""

    async def publish(self, item: dict[str, Any]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Embedded(Target):
    name = "embedded"

    def __init__(self) -> None:
        self.key = secrets.token_urlsafe(32)
        self.process, self.port = start_server("embedded", "--key", self.key)
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    async def subscribed(self, channel: str) -> int:
        return int((await self.http.get("/_bench/subscribers")).json().get(channel, 0))

    async def publish(self, item: dict[str, Any]) -> None:
        answer = await self.http.post(
            "/_grip/publish/",
            json={"items": [item]},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        answer.raise_for_status()

    def stop(self) -> None:
        stop_server(self.process)


class Pushpin(Target):
    name = "pushpin"

    def __init__(self) -> None:
        self.origin, origin_port = start_server("origin")
        self.pushpin = PushpinServer(origin_port).start()
        self.port = self.pushpin.http_port
        self.http = httpx.AsyncClient(timeout=10)
        self._log_offset = 0
        self._subscribed: dict[str, int] = {}
        self._retried: set[str] = set()

    def rss_kib(self) -> int:
        assert self.pushpin.process is not None
        return sum(rss_kib(pid) for pid in descendants(self.pushpin.process.pid))

    def _read_log(self) -> None:
        # "subscribe <uri> channel=NAME" per held client, "... retry" on a re-request.
        with open(self.pushpin.handler_log, "rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        lines = data.split(b"\n")[:-1]
        self._log_offset += sum(len(line) + 1 for line in lines)
        for line in lines:
            match = re.search(rb"\bsubscribe \S+ channel=(\S+)( retry)?", line)
            if match is None:
                continue
            channel = match[1].decode()
            if match[2]:
                self._retried.add(channel)
            else:
                self._subscribed[channel] = self._subscribed.get(channel, 0) + 1

    async def subscribed(self, channel: str) -> int:
        self._read_log()
        return self._subscribed.get(channel, 0)

    async def first_subscription_settled(self, channel: str) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self._read_log()
            if channel in self._retried:
                return
            await asyncio.sleep(POLL)
        raise TimeoutError(f"pushpin did not re-request the first client of {channel}")

    async def publish(self, item: dict[str, Any]) -> None:
        answer = await self.http.post(
            self.pushpin.publish_uri + "/publish/",
            json={"items": [item]},
            headers={"Authorization": f"Bearer {self.pushpin.key}"},
        )
        answer.raise_for_status()

    def stop(self) -> None:
        self.pushpin.stop()
        stop_server(self.origin)


# -- measurements --------------------------------------------------------------------------


def item_for(channel: str, marker: str) -> dict[str, Any]:
    body = f"{marker}\n"
    return {
        "channel": channel,
        "id": marker,
        "formats": {
            "http-response": {
                "code": 200,
                "headers": {"Content-Type": "text/plain", "ETag": f'"{marker}"'},
                "body": body,
            }
        },
    }


async def publish_round(
    target: Target, channel: str, count: int, batch: int
) -> tuple[list[float], int]:
    """Hold ``count`` clients on ``channel``, publish once; latencies (ms) and misses."""
    clients = await open_holds(target, channel, count, batch)
    marker = secrets.token_hex(6)
    sent_at = time.perf_counter()
    await target.publish(item_for(channel, marker))
    done, _pending = await asyncio.wait([c.done for c in clients], timeout=RESPONSE_TIMEOUT)
    latencies, missed = [], 0
    for client in clients:
        client.close()
        if client.done.done() and marker.encode() in client.done.result():
            latencies.append((client.first_byte_at - sent_at) * 1000)  # type: ignore[operator]
        else:
            missed += 1
    return latencies, missed


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


async def measure_memory(target: Target, held: int, batch: int) -> dict[str, Any]:
    before = target.rss_kib()
    clients = await open_holds(target, "idle", held, batch)
    await asyncio.sleep(1.0)  # let allocations settle
    during = target.rss_kib()
    await target.publish(item_for("idle", "release"))
    await asyncio.wait([c.done for c in clients], timeout=RESPONSE_TIMEOUT)
    for client in clients:
        client.close()
    return {
        "held": held,
        "rss_before_kib": before,
        "rss_held_kib": during,
        "kib_per_conn": round((during - before) / held, 2),
    }


async def warm_up(target: Target, batch: int) -> None:
    """One publish through each proxy before anything is measured: Pushpin's first proxied
    hold right after start can get ``500 Accept service unavailable``."""
    for attempt in range(50):
        channel = f"warmup-{attempt}"
        latencies, missed = await publish_round(target, channel, 1, batch)
        if latencies and not missed:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{target.name}: warm-up publish never arrived")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    targets: list[Target] = []
    try:
        for kind in args.proxies:
            targets.append(Embedded() if kind == "embedded" else Pushpin())
        for target in targets:
            await warm_up(target, args.batch)

        results: dict[str, Any] = {t.name: {"latency": {}} for t in targets}
        for target in targets:
            started = time.monotonic()
            results[target.name]["memory"] = await measure_memory(target, args.held, args.batch)
            print(f"  {target.name}: {args.held} held in {time.monotonic() - started:.1f}s",
                  file=sys.stderr)

        for count in args.subscribers:
            for target in targets:
                results[target.name]["latency"][str(count)] = {"rounds": []}
            for round_number in range(args.rounds):
                # Alternate who goes first, so neither always runs on a warmer machine.
                order = targets if round_number % 2 == 0 else targets[::-1]
                for target in order:
                    channel = f"lat-{count}-{round_number}"
                    latencies, missed = await publish_round(target, channel, count, args.batch)
                    results[target.name]["latency"][str(count)]["rounds"].append(
                        {
                            "p50_ms": round(percentile(latencies, 0.50), 3) if latencies else None,
                            "p99_ms": round(percentile(latencies, 0.99), 3) if latencies else None,
                            "max_ms": round(max(latencies), 3) if latencies else None,
                            "missed": missed,
                        }
                    )
            for target in targets:
                entry = results[target.name]["latency"][str(count)]
                for key in ("p50_ms", "p99_ms"):
                    values = [r[key] for r in entry["rounds"] if r[key] is not None]
                    entry[key] = round(statistics.median(values), 2) if values else None
                entry["missed"] = sum(r["missed"] for r in entry["rounds"])
                print(f"  {target.name}: {count} subscribers p50 {entry['p50_ms']} ms"
                      f" p99 {entry['p99_ms']} ms", file=sys.stderr)
        for target in targets:
            results[target.name]["replaced_clients"] = target.replaced
        return results
    finally:
        for target in targets:
            await target.http.aclose()
            target.stop()


def table(results: dict[str, Any], subscribers: list[int]) -> str:
    header = ("proxy", "subscribers", "p50 ms", "p99 ms", "held conns", "KiB/conn")
    rows = []
    for name, result in results.items():
        memory = result["memory"]
        for count in subscribers:
            entry = result["latency"][str(count)]
            rows.append(
                (name, str(count), f"{entry['p50_ms']:.2f}", f"{entry['p99_ms']:.2f}",
                 str(memory["held"]), f"{memory['kib_per_conn']:.1f}")
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        )

    separator = "-+-".join("-" * width for width in widths)
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Embedded GRIP proxy vs Pushpin: memory per held long-poll and "
        "publish-to-delivery latency.",
    )
    parser.add_argument("--held", type=int, default=1000, help="idle long-polls held for the "
                        "memory figure (default 1000)")
    parser.add_argument("--subscribers", default="1,100,1000",
                        help="comma-separated subscriber counts (default 1,100,1000)")
    parser.add_argument("--rounds", type=int, default=9, help="publishes per subscriber count "
                        "and proxy; the table shows medians (default 9)")
    parser.add_argument("--batch", type=int, default=100, help="clients connected at once "
                        "(default 100)")
    parser.add_argument("--proxies", default="embedded,pushpin",
                        help="comma-separated: embedded, pushpin (default both)")
    parser.add_argument("--json", default=str(HERE / "proxies.json"),
                        help="where to write the results (default bench/proxies.json; '' for none)")
    args = parser.parse_args(argv)
    args.subscribers = [int(n) for n in args.subscribers.split(",") if n]
    args.proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if "pushpin" in args.proxies and find_pushpin() is None:
        parser.error("Pushpin is not installed: apt-get install -y pushpin, "
                     "or run with --proxies embedded")

    # Every held client is a socket here and one in the proxy (Pushpin: two, it also
    # connects to the origin); the default soft limit of 1024 is far too low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * (max(args.held, *args.subscribers) + 256)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))

    started = time.monotonic()
    results = asyncio.run(bench(args))
    elapsed = time.monotonic() - started
    print(table(results, args.subscribers))
    print(f"\n{args.rounds} rounds per row, medians of per-round p50/p99; "
          f"{elapsed:.0f}s on {os.cpu_count()} CPUs")
    if args.json:
        document = {
            "command": " ".join(["python bench/proxies.py", *(sys.argv[1:] if argv is None else argv)]),
            "config": {
                "held": args.held,
                "subscribers": args.subscribers,
                "rounds": args.rounds,
                "batch": args.batch,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "pushpin": _pushpin_version(),
                "platform": platform.platform(),
            },
            "seconds": round(elapsed, 1),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


def _pushpin_version() -> str | None:
    binary = find_pushpin()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    main()
