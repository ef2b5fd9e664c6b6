"""A real Chromium against the sample's live board, served the way a user runs it.

- ``chromium`` (package): Debian's ``/usr/bin/chromium`` (or ``$CHROMIUM``) driven by
  Playwright's Python package; Playwright never downloads a browser here. Missing browser or
  package: a failure under ``CI``, a skip elsewhere.
- ``sample_servers`` (package): ``python sample_api/manage.py runserver`` in a subprocess, once
  with the embedded GRIP proxy and once as the origin of a private Pushpin, each with its own
  database, so a test can stop and restart "the server" where the browser expects it.
- ``board``: one of them per test run (parametrized: ``embedded``, ``pushpin``).
- ``browser_context``: a fresh browser context (cookies, storage) per test.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drf_grip.testing.tools import find_tool, tool_missing

from drf_grip.testing import PushpinServer, find_pushpin, free_port, pushpin_missing

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "sample_api" / "manage.py"

# Flags for a quiet, reproducible headless run: no GPU, no QUIC (loopback HTTP/1.1 only), no
# first-run UI, no background traffic to Google services. Background tabs must keep their
# timers: the two pages of a test are both "tabs", and only one is in front.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in CI, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


def find_chromium() -> str | None:
    """``$CHROMIUM`` if set, else Debian's ``chromium`` on ``PATH``."""
    return find_tool("CHROMIUM", "chromium", "chromium-browser")


def browser_missing(reason: str) -> None:
    """Fail under CI, skip elsewhere: a CI run that skips the browser proves nothing."""
    tool_missing(
        f"{reason} Install them with 'apt-get install -y chromium' and "
        "'pip install -e .[browser]' (scripts/test does both)."
    )


# Package scope, not session: Playwright's sync API runs an event loop in the main thread
# while it is open, and tests after this package call asyncio.run(), which refuses to start
# inside a running loop.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), launched once for the browser tests."""
    executable = find_chromium()
    if executable is None:
        browser_missing("Chromium is not installed (no 'chromium' on PATH or at $CHROMIUM).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("Playwright's Python package is not installed.")
    with sync_playwright() as playwright:
        # launch() gives every run a fresh temporary --user-data-dir of its own.
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


class SampleServer:
    """``manage.py runserver`` of the sample in a subprocess on a fixed port.

    ``stop()`` and ``start()`` again keep the port and the database: a restart as a user does
    it, with the browser's pages still open.
    """

    def __init__(self, workdir: Path, *, grip_url: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.grip_url = grip_url
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def database(self) -> Path:
        return self.workdir / "db.sqlite3"

    @property
    def origin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DJANGO_SETTINGS_MODULE", "GRIP_URL", "SAMPLE_DEMO_LOGIN"):
            env.pop(name, None)
        env.update(
            PYTHONUNBUFFERED="1",
            SAMPLE_API_DB=str(self.database),
            SAMPLE_API_CACHE=str(self.workdir / "cache"),
            SAMPLE_API_URL=self.origin_url,
            DJANGO_DEBUG="1",
        )
        if self.grip_url:
            env["GRIP_URL"] = self.grip_url
        return env

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, str(MANAGE), "migrate", "-v0"],
            env=self.env(), check=True, cwd=ROOT, timeout=120,
        )

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None, "already running"
        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", "--noreload", "--skip-checks",
             f"127.0.0.1:{self.port}"],
            env=self.env(), cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._read_output, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the sample did not start in {timeout}s:\n{self.log()}")
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the sample exited at start:\n{self.log()}")

    def _read_output(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)
            if "Quit the server" in line:
                ready.set()
        ready.set()  # exited: start() reports it

    def stop(self) -> None:
        """Ctrl-C, as a user stops runserver; it answers held clients before it exits."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        return "".join(self.output[-40:])

    def insert_todo(self, title: str) -> None:
        """A row written straight into the database, as another program would (no signal,
        no publish)."""
        with sqlite3.connect(self.database, timeout=20) as db:
            db.execute("INSERT INTO board_todo (title, done) VALUES (?, 0)", (title,))


class Board:
    """Where the browser opens the board, and the parts behind it."""

    def __init__(self, name: str, server: SampleServer, pushpin: PushpinServer | None) -> None:
        self.name = name
        self.server = server
        self.pushpin = pushpin

    @property
    def url(self) -> str:
        return self.pushpin.url if self.pushpin else self.server.origin_url

    def restart_origin(self, while_down: Any = None) -> None:
        self.server.stop()
        if while_down is not None:
            while_down()
        self.server.start()

    def __repr__(self) -> str:
        return f"Board({self.name}, {self.url})"


def _hold_once(pushpin: PushpinServer, timeout: float = 40.0) -> None:
    """Return once a held request through a fresh Pushpin reaches its handler: right after a
    start the first hold sometimes fails (PUSHPIN.md, readiness), which would cost a browser
    subscription one backoff."""
    deadline = time.monotonic() + timeout
    url = pushpin.url + "/api/todos/"
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            etag = response.headers["ETag"]
        mark = pushpin.mark()
        request = urllib.request.Request(url, headers={"If-None-Match": etag, "Prefer": "wait=5"})
        threading.Thread(target=_quietly, args=(request,), daemon=True).start()
        attempt_ends = min(deadline, time.monotonic() + 2)
        while time.monotonic() < attempt_ends:
            try:
                with open(pushpin.handler_log, "rb") as log:
                    log.seek(mark)
                    if b" subscribe " in log.read():
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"Pushpin never held a request:\n{pushpin.log_tail()}")


def _quietly(request: urllib.request.Request) -> None:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except (OSError, urllib.error.URLError):
        pass


@pytest.fixture(scope="package")
def sample_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Board]]:
    """Both boards, started once; a test that restarts one leaves it running again."""
    first = SampleServer(tmp_path_factory.mktemp("sample-embedded"))
    first.migrate()
    boards: dict[str, Board] = {}
    servers: list[SampleServer] = [first]
    pushpin: PushpinServer | None = None
    try:
        first.start()
        boards["embedded"] = Board("embedded", first, None)
        if find_pushpin() is not None:
            origin = SampleServer(tmp_path_factory.mktemp("sample-pushpin"))
            shutil.copy(first.database, origin.database)  # migrated already
            servers.append(origin)
            # Fixed ports: the origin needs GRIP_URL before Pushpin starts, and Pushpin
            # proves it reaches the origin before it counts as started.
            publish_port = free_port()
            pushpin = PushpinServer(
                origin.port, probe_path="/api/todos/", http_port=free_port(),
                publish_port=publish_port,
            )
            origin.grip_url = f"http://127.0.0.1:{publish_port}/?iss=pushpin&key={pushpin.key}"
            origin.start()
            pushpin.start()
            _hold_once(pushpin)
            boards["pushpin"] = Board("pushpin", origin, pushpin)
        yield boards
    finally:
        for server in servers:
            server.stop()
        if pushpin is not None:
            pushpin.stop()


@pytest.fixture(params=["embedded", "pushpin"])
def board(
    request: pytest.FixtureRequest, chromium: Any, sample_servers: dict[str, Board]
) -> Board:
    """The board behind the embedded proxy or behind Pushpin (the browser is checked first:
    without one, starting the servers is wasted)."""
    if request.param not in sample_servers:
        pushpin_missing()
    found = sample_servers[request.param]
    if found.server.process is None:  # a failed restart in an earlier test
        found.server.start()
    return found
