"""One benchmark origin: ``python bench/site/serve.py --system S [--grip-url U] [--port P]``.

Binds a loopback port (``--port`` or a free one), prints it on the first line of stdout,
then serves ``benchsite.asgi`` with uvicorn (one process, one event loop). ``--seed USERS``
instead creates the SQLite database (10 todos, USERS users with tokens, one note each) and
exits. Environment: ``BENCH_DB`` (the SQLite file), ``BENCH_SYSTEM`` is set from ``--system``,
``BENCH_GC=off`` disables Python's cyclic garbage collector in the served process;
``BENCH_GC=freeze`` leaves it on but moves everything loaded at start-up (URLconf included)
out of its way with ``gc.freeze()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]


def token_for(index: int) -> str:
    """User ``index``'s DRF token (deterministic, so the runner needs no database access)."""
    return f"benchtoken{index:030d}"


def seed(users: int) -> None:
    import django

    django.setup()
    from benchsite.models import Note, PlainTodo, PrivateTodo, Todo
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    call_command("migrate", run_syncdb=True, verbosity=0)
    for model in (Todo, PlainTodo, PrivateTodo):
        model.objects.bulk_create(model(id=i, title=f"todo {i}") for i in range(1, 11))
    User.objects.bulk_create(User(id=i + 1, username=f"u{i}") for i in range(users))
    Token.objects.bulk_create(Token(key=token_for(i), user_id=i + 1) for i in range(users))
    Note.objects.bulk_create(Note(owner_id=i + 1, text=f"note of u{i}") for i in range(users))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["drfgrip", "eventstream", "dcrf"], required=True)
    parser.add_argument("--grip-url", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, help="create the database with this many users")
    args = parser.parse_args()
    os.environ["BENCH_SYSTEM"] = args.system
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchsite.settings"
    if args.grip_url:
        os.environ["GRIP_URL"] = args.grip_url
    else:
        os.environ.pop("GRIP_URL", None)
    if args.seed is not None:
        seed(args.seed)
        return

    import uvicorn

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets whose proto says
    # TCP, and with Nagle on, a response written as head + body waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    config = uvicorn.Config(
        "benchsite.asgi:application",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
        ws_max_size=1 << 20,
        ws_ping_interval=None,
    )
    if args.system == "drfgrip" and not args.grip_url:
        from drf_grip.proxy.server import Server

        server: uvicorn.Server = Server(config)
    else:
        server = uvicorn.Server(config)
    config.load()
    if os.environ.get("BENCH_GC") == "off":  # bench/probes.py write-latency --gc off
        gc.disable()
    elif os.environ.get("BENCH_GC") == "freeze":  # docs/performance.rst, "Tuning"
        from django.urls import get_resolver

        get_resolver().url_patterns  # Django imports the URLconf (the views) on first use
        gc.freeze()
    if isinstance(server, uvicorn.Server) and hasattr(server, "proxy") and server.proxy is None:
        from drf_grip.proxy.server import find_proxy

        server.proxy = find_proxy(config.loaded_app)
    print(sock.getsockname()[1], flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
