"""Small measurements behind figures in NOTES.rst, each on a fresh origin (and Pushpin).

``python bench/probes.py cold-start``: anonymous SSE streams connect together to a *fresh*
Pushpin (no channel subscribed yet), and a todo changes ``--after`` seconds later, inside
the window in which Pushpin re-fetches every stream of a newly subscribed channel (about 1 s
after its first subscription, 10 next links a second: README, "One Pushpin behaviour to
know"). ``--urls one`` puts every stream on one shared URL (they share a next link),
``--urls each`` gives each stream a URL of its own (a link each). Prints, per run, how many
streams got the change and the median and slowest time from the PATCH.

``python bench/probes.py request-cpu PATH ...``: the origin's CPU per ``GET PATH`` sent
straight to it (no proxy), 200 requests 20 at a time, median of 5.

``python bench/probes.py write-latency``: ``bench/run.py``'s PATCH latency with 200
long-polls held versus none, repeated ``--runs`` times; ``--gc on,off,freeze`` runs one
origin per setting of Python's cyclic garbage collector (left on; disabled; start-up objects
frozen, ``BENCH_GC``), runs alternated, to see how much of the tail is collection pauses.

``python bench/probes.py nodelay``: a GET through Pushpin on a kept-alive connection, to an
origin served by ``uvicorn --workers 2`` (Nagle left on: uvicorn binds that socket with
protocol 0, and asyncio turns on ``TCP_NODELAY`` only when the protocol says TCP), by
drf-grip's test harness (``python -m drf_grip.testing.nodelay``), with uvloop and by gunicorn
with ``uvicorn_worker`` when installed, and by one uvicorn process. The app answers 20 bytes
(``bench/site/plain_asgi.py``). Prints the median over ``--requests`` of each, per round.

``python bench/probes.py hold-after-write``: clients each write their own private todo
(``PATCH /api/private-todos/N/`` with ``If-Match``, to the origin), then at once long-poll it
with the ETag the write answered and ``Prefer: wait=5`` through Pushpin (``--proxy
embedded``: the embedded proxy). Nothing else changes it, so every long-poll should be held
its whole 5 s and end in a 304;
prints how many were answered before 4 s instead (a write's item still on its way to the
proxy when the hold arrived made Pushpin ask again at once: NOTES.rst, issue 9,
twenty-second session), and how many holds Pushpin found behind on accept
(``DRF_GRIP_PUSHPIN_LOG_LEVEL=3``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402 - bench/run.py, beside this file


def _database(users: int) -> str:
    """A seeded SQLite file in a fresh temporary directory (Pushpin's files go there too)."""
    directory = Path(tempfile.mkdtemp(prefix="drf-grip-probe-"))
    tempfile.tempdir = str(directory)
    db = str(directory / "bench.sqlite3")
    subprocess.run([sys.executable, str(HERE / "site" / "serve.py"), "--system", "drfgrip",
                    "--seed", str(users)], check=True, env={**os.environ, "BENCH_DB": db})
    return db


def _search_terms(count: int) -> list[str]:
    """``count`` different ``?search=`` values that all match every todo ("todo N"), old or
    changed (``SearchFilter`` is case-insensitive): so many live URLs, one stream each."""
    terms: list[str] = []
    for word in ("t", "o", "d", "to", "od", "do", "tod", "odo", "todo"):
        for mask in range(2 ** len(word)):
            terms.append("".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(word)))
    if count > len(terms):
        raise SystemExit(f"--urls each: at most {len(terms)} streams")
    return terms[:count]


async def cold_start(args: argparse.Namespace) -> None:
    db = _database(5)
    for run in range(1, args.runs + 1):
        origin = bench.Origin("drfgrip", pushpin=True, db=db, profile_dir=None, name="cold")
        try:
            terms = _search_terms(args.streams) if args.urls == "each" else ["todo"] * args.streams
            paths = [f"/api/todos/?search={term}" for term in terms]
            streams = [bench.EventStream(origin.client_port, path, {}) for path in paths]
            await asyncio.gather(*(s.start() for s in streams))
            await asyncio.sleep(args.after)
            marker = "m" + secrets.token_hex(5)
            for stream in streams:
                stream.marker = marker.encode()
            sent = time.perf_counter()
            answer = await origin.http.patch("/api/todos/1/", json={"title": f"todo {marker}"},
                                             headers=bench.auth(0))
            answer.raise_for_status()
            await asyncio.wait([s.got for s in streams], timeout=30)
            took = sorted((s.got_at - sent) * 1000 for s in streams if s.got_at is not None)
            where = "one URL" if args.urls == "one" else "a URL each"
            print(f"run {run}: {len(took)}/{len(streams)} streams ({where}), "
                  f"PATCH {args.after} s after connecting: "
                  f"median {statistics.median(took):.0f} ms, slowest {took[-1]:.0f} ms", flush=True)
            for stream in streams:
                stream.close()
        finally:
            await origin.aclose()


async def request_cpu(args: argparse.Namespace) -> None:
    import httpx

    db = _database(5)
    origin = bench.Origin("drfgrip", pushpin=True, db=db, profile_dir=None, name="cpu")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{origin.origin_port}") as http:
            for path in args.paths:
                samples = []
                for _ in range(5):
                    await asyncio.gather(*(http.get(path) for _ in range(20)))  # warm
                    before = await origin.cpu_ns()
                    for _ in range(10):
                        await asyncio.gather(*(http.get(path) for _ in range(20)))
                    samples.append((await origin.cpu_ns() - before) / 1e6 / 200)
                print(f"GET {path}: {statistics.median(samples):.2f} ms origin CPU per request "
                      f"(median of 5; {', '.join(f'{s:.2f}' for s in sorted(samples))})")
    finally:
        await origin.aclose()


async def write_latency(args: argparse.Namespace) -> None:
    modes = args.gc.split(",")
    db = _database(args.held + 10)
    cases = {c.name: c for c in bench.all_cases()}
    origins: dict[str, bench.Origin] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    try:
        for mode in modes:  # one origin per mode, side by side
            os.environ["BENCH_GC"] = mode  # read by bench/site/serve.py
            origins[mode] = bench.Origin("drfgrip", pushpin=True, db=db, profile_dir=None,
                                         name=f"writes-gc-{mode}")
        warm: Any = argparse.Namespace(timeout=30, batch=100)
        for origin in origins.values():
            await bench.run_round(cases["grip-lp-pp"], origin, 1, warm, -1)
        for number in range(args.runs):
            for mode in modes if number % 2 == 0 else modes[::-1]:
                for name in args.cases.split(","):
                    await bench.until_quiet(origins[mode])
                    r = await bench.write_latency(origins[mode], cases[name], args.held,
                                                  args.patches, 100)
                    ratios.setdefault((name, mode), []).append(r["ratio_p99"])
                    print(f"{name} (gc {mode}): p50/p99 {r['idle_p50_ms']}/{r['idle_p99_ms']} "
                          f"ms with none held, {r['held_p50_ms']}/{r['held_p99_ms']} ms with "
                          f"{args.held} held: x{r['ratio_p99']} (p99); slowest held "
                          f"{r['held_slowest_ms']}", flush=True)
        for (name, mode), values in ratios.items():
            print(f"{name} (gc {mode}): median p99 ratio x{statistics.median(values):.2f} "
                  f"over {len(values)} runs ({', '.join(f'{v:.2f}' for v in values)})")
    finally:
        for origin in origins.values():
            await origin.aclose()


async def hold_after_write(args: argparse.Namespace) -> None:
    import httpx

    db = _database(11)  # user 0 writes; users 1-10 each read the todo of their number
    origin = bench.Origin("drfgrip", pushpin=args.proxy == "pushpin", db=db, profile_dir=None,
                          name="hold-after-write")
    early: list[str] = []
    held: list[float] = []

    async def client(proxy: httpx.AsyncClient, todo: int) -> None:
        path = f"/api/private-todos/{todo}/"
        etag = (await proxy.get(path, headers=bench.auth(todo))).headers["ETag"]
        for turn in range(args.turns):
            # With If-Match, the answer names the new ETag (RFC 9110 §8.8.3): the long-poll
            # follows the commit as closely as a client can.
            answer = await origin.http.patch(path, json={"title": f"t{todo}.{turn}"},
                                             headers={**bench.auth(0), "If-Match": etag})
            answer.raise_for_status()
            etag = answer.headers["ETag"]
            sent = time.perf_counter()
            poll = await proxy.get(path, headers={**bench.auth(todo), "If-None-Match": etag,
                                                  "Prefer": "wait=5"})
            took = time.perf_counter() - sent
            if took < 4:
                early.append(f"{poll.status_code} after {took * 1000:.0f} ms")
            else:
                held.append(took)

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{origin.client_port}",
                                     timeout=30) as proxy:
            await asyncio.gather(*(client(proxy, todo) for todo in range(1, args.clients + 1)))
        total = args.clients * args.turns
        # Holds Pushpin found behind the channel on accept and retried at once: a hold
        # answering such a retry is the one its proxy may lose (NOTES.rst, twenty-sixth
        # session). Its handler logs them at debug level: DRF_GRIP_PUSHPIN_LOG_LEVEL=3.
        retried = ""
        if origin.pushpin is not None:
            conflicts = origin.pushpin.handler_log.read_bytes().count(b"last ID inconsistency")
            retried = f"; {conflicts} holds conflicted on accept"
        print(f"{args.proxy}: {len(early)} of {total} long-polls answered before 4 s"
              f"{' (' + ', '.join(early[:10]) + ')' if early else ''}; "
              f"{len(held)} held, median {statistics.median(held) if held else 0:.2f} s"
              f"{retried}", flush=True)
    finally:
        await origin.aclose()


def _nodelay_servers(port: int) -> dict[str, list[str]]:
    import importlib.util

    app = ["plain_asgi:app", "--port", str(port), "--log-level", "warning"]
    uvicorn = [sys.executable, "-m", "uvicorn", *app]
    servers = {
        "uvicorn --workers 2": [*uvicorn, "--workers", "2", "--loop", "asyncio"],
        "harness workers (2)": [sys.executable, "-m", "drf_grip.testing.nodelay", *app,
                                "--workers", "2", "--loop", "asyncio"],
        "uvicorn, one process": [*uvicorn, "--loop", "asyncio"],
    }
    if importlib.util.find_spec("uvloop"):
        servers["uvicorn --workers 2 --loop uvloop"] = [*uvicorn, "--workers", "2", "--loop",
                                                       "uvloop"]
    if importlib.util.find_spec("gunicorn") and importlib.util.find_spec("uvicorn_worker"):
        servers["gunicorn -k uvicorn_worker (2)"] = [
            sys.executable, "-m", "gunicorn", "plain_asgi:app", "-k",
            "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning"]
    return servers


async def nodelay(args: argparse.Namespace) -> None:
    import httpx

    from drf_grip.testing import PushpinServer
    from drf_grip.testing.process import free_port

    site = HERE / "site"
    results: dict[str, list[float]] = {}
    for _round in range(args.rounds):
        port = free_port()
        for name, command in _nodelay_servers(port).items():
            server = subprocess.Popen(command, cwd=site, start_new_session=True)
            pushpin = PushpinServer(origin_port=port, startup_timeout=30)
            try:
                pushpin.start()
                async with httpx.AsyncClient(base_url=pushpin.url) as http:
                    took = []
                    for _ in range(args.requests + 1):
                        started = time.perf_counter()
                        (await http.get("/")).raise_for_status()
                        took.append((time.perf_counter() - started) * 1000)
                results.setdefault(name, []).append(statistics.median(took[1:]))
            finally:
                pushpin.stop()
                os.killpg(server.pid, 15)
                server.wait(10)
    print(f"{'origin server':34} | GET through Pushpin, ms (median of {args.requests}, "
          f"per round)")
    for name, medians in results.items():
        print(f"{name:34} | {' '.join(f'{m:6.1f}' for m in medians)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cold = commands.add_parser("cold-start")
    cold.add_argument("--streams", type=int, default=30)
    cold.add_argument("--urls", choices=["one", "each"], default="one")
    cold.add_argument("--after", type=float, default=1.3, help="seconds from connect to PATCH")
    cold.add_argument("--runs", type=int, default=3)
    cpu = commands.add_parser("request-cpu")
    cpu.add_argument("paths", nargs="+")
    writes = commands.add_parser("write-latency")
    writes.add_argument("--cases", default="grip-lp-pp,grip-priv-pp")
    writes.add_argument("--runs", type=int, default=3)
    writes.add_argument("--held", type=int, default=200)
    writes.add_argument("--patches", type=int, default=40)
    writes.add_argument("--gc", default="on",
                        help="comma-separated: on, off (gc.disable()), freeze (gc.freeze() "
                        "after start-up); one origin each, runs alternated")
    delay = commands.add_parser("nodelay")
    delay.add_argument("--rounds", type=int, default=3)
    delay.add_argument("--requests", type=int, default=30)
    after = commands.add_parser("hold-after-write")
    after.add_argument("--clients", type=int, default=10, choices=range(1, 11),
                       metavar="1-10", help="one private todo each (the bench seeds 10)")
    after.add_argument("--turns", type=int, default=6)
    after.add_argument("--proxy", choices=["pushpin", "embedded"], default="pushpin")
    args = parser.parse_args()
    runner = {"cold-start": cold_start, "request-cpu": request_cpu,
              "write-latency": write_latency, "nodelay": nodelay,
              "hold-after-write": hold_after_write}[args.command]
    asyncio.run(runner(args))


if __name__ == "__main__":
    main()
