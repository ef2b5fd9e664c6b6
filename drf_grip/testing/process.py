"""What the harness's servers share: start and stop as a context manager and, for those that
run as child processes, a private temporary directory for their files and logs, a child
that cannot outlive the test run, an orderly stop, and a start retried on a taken port.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ManagedProcess", "Service", "free_port", "terminate_with_parent"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies.

    A test run killed without teardown (a CI timeout, ``kill -9``) would otherwise leave the
    server running for good; SIGTERM lets it stop in order (Pushpin's runner stops its
    services). Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing happens.

    The signal comes when the *thread* that started the child ends, not the process
    (prctl(2)), so children are started on :func:`_spawner`'s thread, which lives as long
    as the process.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _spawner() -> ThreadPoolExecutor:
    """The one thread every child is started on. A server started on a thread that then
    ended was sent SIGTERM at once: a test that restarted Pushpin with
    ``asyncio.to_thread`` lost it when ``asyncio.run`` shut its executor down, and the next
    test found nothing listening (CI; ``tests/test_test_kit.py``). A forked process has
    no copy of the thread, so it makes its own."""
    return _spawner_of(os.getpid())


@functools.cache
def _spawner_of(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="drf-grip-spawner")


class Service:
    """Something a test starts and stops: ``with server:`` or :meth:`start` / :meth:`stop`."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(Service):
    """A server run as a child process, with its own temporary directory.

    A subclass names its directory (``dir_prefix``), its errors (``error``; a failure of
    type ``retryable_error`` while starting is retried), its logs (:meth:`log_files`), and
    implements ``_launch`` and ``_wait_ready`` for :meth:`_start_with_retries`.
    """

    #: The server's name in errors.
    program = "the server"
    dir_prefix = "drf-grip-"
    startup_timeout = 10.0
    error: type[Exception] = RuntimeError
    retryable_error: type[Exception] = RuntimeError
    #: Lines of each log :meth:`log_tail` shows by default.
    log_lines = 20

    dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    # -- files --------------------------------------------------------------------------------

    def _make_dir(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix=self.dir_prefix))
        return self.dir

    def keeps_dir(self) -> bool:
        """Whether :meth:`stop` leaves the directory (and its logs) for a look afterwards."""
        return False

    def _remove_dir(self) -> None:
        if self.dir is not None and not self.keeps_dir():
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log_files(self) -> list[Path]:
        return []

    def log_tail(self, lines: int | None = None) -> str:
        """The last lines of each log, for failure messages."""
        if self.dir is None:
            return ""
        count = self.log_lines if lines is None else lines
        out = []
        for path in self.log_files():
            try:
                text = path.read_text(errors="replace").splitlines()[-count:]
            except OSError:
                continue
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # -- the child ----------------------------------------------------------------------------

    def _spawn(
        self,
        command: Sequence[str],
        *,
        log: Path,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run ``command`` with its output in ``log``, as :attr:`process`."""
        with open(log, "wb") as output:  # the child keeps its own descriptor
            self.process = _spawner().submit(
                subprocess.Popen,
                list(command),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session, so a Ctrl-C in the terminal reaches pytest, which stops
                # the server in order, rather than the server directly.
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            ).result()
        return self.process

    def _terminate(self, timeout: float) -> subprocess.Popen[bytes] | None:
        """Take :attr:`process`, SIGTERM it and wait up to ``timeout`` seconds; returns it
        (still running if it did not stop in time), or None when none was running."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return process

    def _wait_until(
        self,
        ready: Callable[[], bool],
        waiting_for: str,
        *,
        deadline: float,
        interval: float,
        late_error: type[Exception] | None = None,
    ) -> None:
        """Poll ``ready()`` every ``interval`` seconds until it is true. The process exiting
        meanwhile raises ``retryable_error`` (likely a port taken since it was chosen); the
        ``deadline`` (a ``time.monotonic()``) passing raises ``late_error``, by default
        ``retryable_error`` too."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise self.retryable_error(
                    f"{self.program} exited with status {self.process.returncode}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise (late_error or self.retryable_error)(
                    f"{self.program} not ready after {self.startup_timeout}s"
                    f" (waiting for: {waiting_for})"
                )
            time.sleep(interval)

    def _launch(self) -> None:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _start_with_retries(self, attempts: int = 3) -> None:
        """``_launch()`` and ``_wait_ready()``; a ``retryable_error`` starts again.

        Free ports are found by binding and releasing, so another process can take one in
        between; fresh ports on a retry make that harmless. Whatever fails, nothing is left
        running, and the error carries the logs' tails.
        """
        if self.process is not None:
            raise self.error("already started")
        last: Exception | None = None
        for _attempt in range(attempts):
            self._launch()
            try:
                self._wait_ready()
                return
            except self.retryable_error as exc:
                last = self.error(f"{exc}\n{self.log_tail()}")
                self.stop()
            except self.error as exc:
                diagnostics = self.log_tail()
                self.stop()
                raise self.error(f"{exc}\n{diagnostics}") from None
            except BaseException:
                self.stop()  # never leave a server running behind an unexpected error
                raise
        assert last is not None
        raise last
