"""uvicorn's command line with ``TCP_NODELAY`` on the socket it binds:
``python -m drf_grip.testing.nodelay UVICORN-ARGS`` (the harness's origin workers).

With ``--workers`` (and ``--fd``, ``--uds``) uvicorn binds the socket itself as
``socket.socket(family)``, whose protocol reads 0, and asyncio turns on ``TCP_NODELAY`` only
for sockets whose protocol says TCP (``asyncio.base_events._set_nodelay``; uvloop sets it on
every TCP socket, gunicorn on its listening socket). With Nagle on, a response written as
head then body waits for the client's delayed ACK: a GET through Pushpin to ``uvicorn
--workers 2`` took about 50 ms against 9 ms (``python bench/probes.py nodelay``; NOTES.rst,
nineteenth session).
"""

from __future__ import annotations

import socket
import sys

__all__ = ["bind_without_nagle", "nodelay_listener"]


def nodelay_listener(sock: socket.socket) -> socket.socket:
    """``TCP_NODELAY`` on a TCP listening socket; Linux gives it to every accepted one."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bind_without_nagle() -> None:
    """Make uvicorn's ``Config.bind_socket`` (which ``--workers`` uses) return a socket with
    :func:`nodelay_listener` applied, in this process."""
    import uvicorn.config

    bind = uvicorn.config.Config.bind_socket
    uvicorn.config.Config.bind_socket = lambda config: nodelay_listener(bind(config))  # type: ignore[method-assign]


def main() -> None:
    import uvicorn

    bind_without_nagle()
    sys.argv[0] = "uvicorn"
    uvicorn.main()


if __name__ == "__main__":
    main()
