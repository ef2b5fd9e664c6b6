"""``runserver`` as a user starts it, in a subprocess: with the embedded proxy (held clients are
answered on Ctrl-C, with and without the autoreloader) and behind a private Pushpin with
``GRIP_URL`` set (the README's "Behind Pushpin" command).

Ctrl-C is a SIGINT to the terminal's foreground process group: each server gets its own
session here, and the tests signal its whole group, reloader parent and server child alike.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from drf_grip.testing import PushpinServer, find_pushpin, free_port, pushpin_missing

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)

RELOAD = pytest.mark.parametrize("reload", [False, True], ids=["noreload", "autoreload"])


class Runserver:
    """``python <args>`` in its own process group, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "Quit the server with" in line:
                self.started.set()
        self.started.set()  # exited: stop waiting

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_started(self, timeout: float = 90) -> None:
        assert self.started.wait(timeout), "runserver did not start:\n" + self.output
        assert self.process.poll() is None, "runserver exited:\n" + self.output

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Still running: every process of the group writes its threads' stacks (the
            # environment sets PYTHONFAULTHANDLER), so the failure says where it waits.
            os.killpg(self.process.pid, signal.SIGABRT)
            self.process.wait(10)
            self._reader.join(10)
            raise AssertionError(
                f"runserver did not exit within {timeout} s:\n{self.output}"
            ) from None
        self._reader.join(10)
        return code

    def __enter__(self) -> Runserver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def held(base: str) -> int:
    status = httpx.get(base + "/_grip/").text
    return int(status.split("held:")[1]) if "held:" in status else -1


def read_stream(url: str) -> tuple[bytes, bool]:
    """The whole body of a stream, and whether it ended properly (not cut)."""
    chunks = []
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
    except httpx.HTTPError:
        return b"".join(chunks), False
    return b"".join(chunks), True


def close_code(ws) -> int | None:
    try:
        while True:
            ws.recv(timeout=60)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


# -- the embedded proxy --------------------------------------------------------------------


@RELOAD
def test_ctrl_c_answers_held_clients_before_runserver_exits(reload: bool, pool: ThreadPoolExecutor):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-m", "django", "runserver", "--skip-checks", f"127.0.0.1:{port}"]
    if not reload:
        args.append("--noreload")
    with Runserver(args, {"DJANGO_SETTINGS_MODULE": "tests.settings"}) as server:
        server.wait_started()
        poll: Future[httpx.Response] = pool.submit(httpx.get, base + "/harness/hold/ctrl-c/", timeout=60)
        stream = pool.submit(read_stream, base + "/seed/stream/")
        with connect(f"ws://127.0.0.1:{port}/seed/echo/", open_timeout=30) as ws:
            closed = pool.submit(close_code, ws)
            wait_until(lambda: held(base) == 3, "three held connections")

            server.ctrl_c()

            response = poll.result(30)
            assert (response.status_code, response.text) == (200, "timeout\n")  # the hold's answer
            assert stream.result(30) == (b"[stream open]\n", True)  # ended, not cut
            assert closed.result(30) == 1001  # going away
            assert server.wait() == 0, server.output
    assert "Traceback" not in server.output


def test_runserver_logs_no_query_values_of_websocket_handshakes():
    """``runserver -v 2`` logs each request with its query parameter names only (a query may
    carry ``?token=``); uvicorn's own line for a WebSocket handshake showed the whole query
    (hostile-input probe: ``"WebSocket /api/ws/?token=QSECRET11" [accepted]``)."""
    port = free_port()
    args = ["-m", "django", "runserver", "--skip-checks", "--noreload", "-v", "2",
            f"127.0.0.1:{port}"]
    with Runserver(args, {"DJANGO_SETTINGS_MODULE": "tests.settings"}) as server:
        server.wait_started()
        with connect(f"ws://127.0.0.1:{port}/seed/echo/?token=QSECRET11", open_timeout=30) as ws:
            ws.send("hello")
            assert ws.recv(timeout=30)
        httpx.get(f"http://127.0.0.1:{port}/api/todos/?token=QSECRET12", timeout=30)
        wait_until(lambda: "/seed/echo/?token=*" in server.output, "the handshake's log line")
        wait_until(lambda: "/api/todos/?token=*" in server.output, "the GET's log line")
        server.ctrl_c()
        server.wait()
    assert "QSECRET" not in server.output, server.output


def test_plain_uvicorn_sigterm_answers_held_clients_without_a_500(pool: ThreadPoolExecutor):
    """docs/deploying.rst's one-process command, ``uvicorn ... --timeout-graceful-shutdown 5``,
    then SIGTERM (a deploy, a container stop) while clients are held. uvicorn waits for open
    connections before it sends lifespan shutdown, then cancels what is left: the held
    long-poll got ``500 Internal Server Error`` after 5 s, a stream was cut mid-chunk, and the
    log had two "Exception in ASGI application" tracebacks (deploy probe). The hold's own
    answer and a properly ended stream are what runserver's Ctrl-C gives."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        "-m", "uvicorn", "--factory", "drf_grip.asgi:get_asgi_application",
        "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "5",
    ]
    with Runserver(args, {"DJANGO_SETTINGS_MODULE": "tests.settings"}) as server:
        wait_until(lambda: "Application startup complete" in server.output, "uvicorn", 90)
        poll: Future[httpx.Response] = pool.submit(httpx.get, base + "/harness/hold/ctrl-c/", timeout=60)
        stream = pool.submit(read_stream, base + "/seed/stream/")
        wait_until(lambda: held(base) == 2, "two held connections")

        os.killpg(server.process.pid, signal.SIGTERM)

        response = poll.result(30)
        assert (response.status_code, response.text) == (200, "timeout\n")  # the hold's answer
        assert stream.result(30) == (b"[stream open]\n", True)  # ended, not cut
        # uvicorn re-raises the signal once it has shut down.
        assert server.wait() in (0, -signal.SIGTERM), server.output
    assert "Traceback" not in server.output
    assert "Exception in ASGI application" not in server.output


# -- behind Pushpin: the README's command ------------------------------------------------------


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "sample_api/manage.py", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=True,
    )


def _hold(
    pushpin: PushpinServer, pool: ThreadPoolExecutor, url: str, etag: str
) -> Future[httpx.Response]:
    """A long-poll through ``pushpin``, once Pushpin's handler holds it."""
    mark = pushpin.mark()
    poll = pool.submit(httpx.get, url, headers={"If-None-Match": etag}, timeout=60)

    def subscribed() -> bool:
        with open(pushpin.handler_log, "rb") as log:
            log.seek(mark)
            return re.search(rb" subscribe \S+ channel=", log.read()) is not None

    wait_until(lambda: subscribed() or poll.done(), "Pushpin to hold the long-poll", 40)
    if poll.done():
        answer = poll.result()
        raise AssertionError(f"answered at once: {answer.status_code} {answer.text[:300]!r}")
    return poll


@pytest.mark.parametrize(
    "reload, key",
    [(False, None), (True, "SECRET")],
    ids=["noreload", "autoreload-short-key"],
)
def test_readme_behind_pushpin_command_serves_and_holds(
    reload: bool, key: str | None, tmp_path: Path, pool: ThreadPoolExecutor
):
    if find_pushpin() is None:
        pushpin_missing()
    port, publish_port = free_port(), free_port()
    pushpin = PushpinServer(port, publish_port=publish_port, probe_path="/api/todos/")
    if key is not None:
        pushpin.key = key  # the README's old 6-byte key: warned about once, never printed
    grip_url = f"http://127.0.0.1:{publish_port}/?iss=pushpin&key={pushpin.key}"
    env = {
        # pytest-django exports tests.settings; a user's shell has none, manage.py picks its own.
        "DJANGO_SETTINGS_MODULE": "sample_api.settings",
        "GRIP_URL": grip_url,
        "SAMPLE_API_DB": str(tmp_path / "db.sqlite3"),
        "SAMPLE_API_CACHE": str(tmp_path / "cache"),
    }
    _manage("migrate", "-v", "0", env=env)
    args = ["sample_api/manage.py", "runserver", f"127.0.0.1:{port}"]
    if not reload:
        args.append("--noreload")
    with Runserver(args, env) as server:
        server.wait_started()
        assert f"behind the GRIP proxy at http://127.0.0.1:{publish_port} (GRIP_URL)" in server.output
        with pushpin:
            first = httpx.get(pushpin.url + "/api/todos/", timeout=30)
            assert first.status_code == 200 and first.json()["results"] == []
            poll = _hold(pushpin, pool, pushpin.url + "/api/todos/", first.headers["ETag"])
            # Another process (a shell) writes; its change is published to Pushpin.
            _manage("shell", "-c", "from board.models import Todo; Todo.objects.create(title='milk')", env=env)
            answer = poll.result(30)
            assert answer.status_code == 200, answer.text
            assert [todo["title"] for todo in answer.json()["results"]] == ["milk"]

            server.ctrl_c()
            assert server.wait() == 0, server.output
    output = server.output
    assert "lifespan" not in output and "Traceback" not in output, output
    assert pushpin.key not in output  # neither the banner nor a warning shows the key
    assert "InsecureKeyLengthWarning" not in output
    if key is not None:
        assert output.count("is 6 bytes long") == 1, output
