"""The origin as real worker processes: ``uvicorn --workers N`` in a subprocess.

``OriginServer`` runs the app in a thread of the test process; this runs it the way a
deployment does, as several processes that share nothing but the database, the cache and
the GRIP proxy. The settings module and its environment are the caller's.

The workers run as ``python -m drf_grip.testing.nodelay``: uvicorn with ``TCP_NODELAY`` on
its listening socket.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .process import ManagedProcess, free_port

__all__ = ["OriginWorkers", "WorkersError"]

_STARTED = re.compile(rb"Started server process \[(\d+)\]")


class WorkersError(RuntimeError):
    """The worker processes did not start or did not answer."""


class OriginWorkers(ManagedProcess):
    """``uvicorn --factory drf_grip.asgi:get_asgi_application --workers N``: the app a
    deployment serves (docs/deploying.rst), which flushes what is queued for the proxy at
    shutdown and embeds the proxy when no ``GRIP_URL`` is set. Another ``factory`` (Django's
    own ``django.core.asgi:get_asgi_application``) is served with lifespan off.

    Ready once every worker logged its start and the port answers an HTTP request (any
    status: a broken app fails its own tests). ``env`` is added to this process's
    environment; it must name ``DJANGO_SETTINGS_MODULE``.
    """

    program = "uvicorn"
    dir_prefix = "dg-workers-"
    error = WorkersError
    retryable_error = WorkersError
    log_lines = 30

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 2,
        cwd: str | os.PathLike[str] | None = None,
        probe_path: str = "/",
        startup_timeout: float = 30.0,
        factory: str = "drf_grip.asgi:get_asgi_application",
    ) -> None:
        self.env = dict(env)
        self.factory = factory
        self.workers = workers
        self.cwd = cwd
        self.probe_path = probe_path
        self.startup_timeout = startup_timeout
        self.port = 0
        self.dir = None
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "uvicorn.log"

    def log_files(self) -> list[Path]:
        return [] if self.dir is None else [self.log]

    def keeps_dir(self) -> bool:
        return bool(os.environ.get("DRF_GRIP_KEEP_WORKERS"))

    def worker_pids(self) -> list[int]:
        """PIDs the workers logged at start (``Started server process [PID]``)."""
        try:
            data = self.log.read_bytes()
        except (OSError, AssertionError):
            return []
        return [int(pid) for pid in _STARTED.findall(data)]

    def start(self) -> OriginWorkers:
        self._start_with_retries()
        return self

    def _launch(self) -> None:
        self._make_dir()
        self.port = free_port()
        self._spawn(self.command(), log=self.log, cwd=self.cwd, env={**os.environ, **self.env})

    def command(self) -> list[str]:
        """uvicorn's command line for the workers (``drf_grip.testing.nodelay``)."""
        return [
            sys.executable, "-m", "drf_grip.testing.nodelay",
            "--factory", self.factory,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            # Django's ASGI handler does not speak lifespan (the embedded proxy does).
            "--lifespan", "off" if self.factory.startswith("django.") else "on",
            "--no-access-log",
            "--log-level", "info",
            # Held connections must not keep a stopping worker alive for long.
            "--timeout-graceful-shutdown", "2",
            # Pushpin reuses idle connections to the origin: one uvicorn closed after its
            # default 5 s makes a next-link fetch fail, and Pushpin retries it ~2 s later.
            "--timeout-keep-alive", "300",
        ]

    def _wait_ready(self) -> None:
        self._wait_until(
            lambda: len(self.worker_pids()) >= self.workers and self._answers(),
            "every worker started and answering",
            deadline=time.monotonic() + self.startup_timeout,
            interval=0.05,
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.probe_path, timeout=5):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the supervisor (it stops its workers), then kill what is left of the
        process group it leads."""
        process = self._terminate(timeout)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only its workers
            except (ProcessLookupError, PermissionError):
                pass
            if process.poll() is None:
                process.wait()
        self._remove_dir()

    def __repr__(self) -> str:
        return f"OriginWorkers(url={self.url!r}, workers={self.workers})"
