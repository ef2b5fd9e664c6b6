"""The processes the benchmark measures: a minimal GRIP origin, alone or inside the embedded proxy.

``python bench/servers.py origin`` serves the origin for Pushpin; ``python bench/servers.py
embedded --key K`` serves ``GripProxy`` around the same origin, in its own process so that
its memory can be read from ``/proc``. Either binds a free loopback port and prints it on
the first line of stdout, so the parent never races another process for a port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn

__all__ = ["BenchOrigin", "main"]

# Longer than any phase of the run, so no hold times out while it is measured.
HOLD_TIMEOUT = 300


class BenchOrigin:
    """``GET /hold/<channel>`` holds a long-poll on ``<channel>``; ``GET /requests`` reports
    how many hold requests each channel received (so the bench can see Pushpin's re-requests).

    Plain ASGI rather than Django: the benchmark measures the proxies, and an origin that
    answers in microseconds keeps the origin out of the figures.
    """

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith("/hold/"):
            channel = path[len("/hold/") :]
            self.requests[channel] += 1
            await _answer(
                send,
                200,
                b"timeout\n",
                [
                    (b"grip-hold", b"response"),
                    (b"grip-channel", channel.encode()),
                    (b"grip-timeout", str(HOLD_TIMEOUT).encode()),
                ],
            )
        elif path == "/requests":
            await _answer(send, 200, json.dumps(self.requests).encode())
        else:
            await _answer(send, 200, b"bench origin\n")


async def _answer(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _with_subscriber_counts(proxy: Any) -> Any:
    """``GET /_bench/subscribers`` answers the proxy's live subscriber count per channel,
    which the bench polls instead of sleeping (Pushpin's equivalent is its handler log)."""

    async def app(scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/subscribers":
            await _answer(send, 200, json.dumps(proxy.subscriber_counts()).encode())
            return
        await proxy(scope, receive, send)

    app.app = proxy  # so drf_grip.proxy.server.find_proxy reaches the proxy
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["origin", "embedded"])
    parser.add_argument("--key", help="publish key of the embedded proxy")
    args = parser.parse_args(argv)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets whose proto says
    # TCP, and with Nagle on, a response written as head + body waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "backlog": 4096,
        "timeout_graceful_shutdown": 2,
    }
    if args.kind == "origin":
        server: uvicorn.Server = uvicorn.Server(uvicorn.Config(BenchOrigin(), **options))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from drf_grip.proxy import GripProxy
        from drf_grip.proxy.server import Server

        if not args.key:
            parser.error("embedded needs --key")
        proxy = GripProxy(
            BenchOrigin(), key=args.key, max_held=1_000_000, max_message_size=1024 * 1024
        )
        server = Server(uvicorn.Config(_with_subscriber_counts(proxy), **options), proxy=proxy)
    sock.listen(options["backlog"])  # connections queue from now on, before uvicorn serves
    print(sock.getsockname()[1], flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
