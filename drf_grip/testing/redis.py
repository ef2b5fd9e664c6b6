"""A private ``redis-server`` for one test session: the shared cache of several processes.

Like the private Pushpin (``pushpin.py``), each instance has its own temporary directory and
listens only on a unix socket inside it, so it never meets a system Redis or another run.
Nothing is persisted (``--save ''``, ``--appendonly no``); it is ready once ``PING`` answers.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import NoReturn

from .process import ManagedProcess
from .tools import find_tool, tool_missing

__all__ = ["RedisError", "RedisServer", "find_redis", "redis_missing"]


class RedisError(RuntimeError):
    """redis-server could not be started or did not answer PING."""


def find_redis() -> str | None:
    """Path of ``redis-server``: ``$REDIS_SERVER`` if set, else the one on ``PATH``."""
    return find_tool("REDIS_SERVER", "redis-server")


def redis_missing() -> NoReturn:
    """Fail under CI, skip elsewhere (as ``pushpin_missing``)."""
    tool_missing(
        "redis-server is not installed (no executable at $REDIS_SERVER or on PATH). "
        "Install it with 'apt-get install -y redis-server', or run scripts/test, which does."
    )


def _ping(path: Path, timeout: float = 1.0) -> bool:
    """One ``PING`` in RESP over the unix socket; True on ``+PONG``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ManagedProcess):
    """``redis-server`` on a unix socket in a short temporary directory.

    Unix socket paths are limited to about 100 characters, so the directory is made directly
    under the system temp directory with a short prefix.
    """

    program = "redis-server"
    dir_prefix = "dg-redis-"
    error = RedisError
    retryable_error = RedisError

    def __init__(self, *, binary: str | None = None, startup_timeout: float = 10.0) -> None:
        self.binary = binary or find_redis()
        self.startup_timeout = startup_timeout
        self.dir = None
        self.process = None

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None, "redis-server is not started"
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        """A ``redis-py`` URL for Django's ``RedisCache`` (``LOCATION``)."""
        return f"unix://{self.socket_path}?db=0"

    def log_files(self) -> list[Path]:
        return [] if self.dir is None else [self.dir / "redis.log"]

    def start(self) -> RedisServer:
        if self.binary is None:
            raise RedisError("redis-server is not installed")
        # A unix socket in a fresh directory cannot be taken by another process: no retry.
        self._start_with_retries(attempts=1)
        return self

    def _launch(self) -> None:
        directory = self._make_dir()
        self._spawn(
            [
                str(self.binary),
                "--port", "0",  # no TCP listener at all
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
                "--daemonize", "no",
                "--protected-mode", "no",
                # A test run opens many short connections; each stays open as long as needed.
                "--maxclients", "2000",
            ],
            log=directory / "redis.log",
            cwd=directory,
        )

    def _wait_ready(self) -> None:
        self._wait_until(
            lambda: _ping(self.socket_path),
            "PING",
            deadline=time.monotonic() + self.startup_timeout,
            interval=0.01,
        )

    process_status: int | None = None

    def stop(self, timeout: float = 10.0) -> None:
        process = self._terminate(timeout)
        if process is not None:
            if process.poll() is None:
                process.kill()
                process.wait()
            self.process_status = process.returncode
        self._remove_dir()

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r})" if self.dir else "RedisServer(stopped)"
