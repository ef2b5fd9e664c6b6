"""A private Pushpin for one test session, in front of a given origin port.

Each instance gets its own temporary directory, ipc sockets and free loopback ports, so two
can run side by side and neither touches a system Pushpin (the recipe and its pitfalls were
checked by running Pushpin 1.36). Tests wait on Pushpin's handler log for subscriptions and
publishes instead of sleeping.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .process import ManagedProcess, free_port
from .tools import find_tool, tool_missing

__all__ = ["PushpinError", "PushpinServer", "find_pushpin", "pushpin_missing"]

# How often a waiter re-reads the handler log. Pushpin writes a line per event, so a short
# poll on the file is cheap and never a fixed delay before an assertion.
_POLL_INTERVAL = 0.01

_CONFIG = """\
[global]
include={{libdir}}/internal.conf
rundir={dir}/run
ipc_prefix=pushpin-
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{http_port}
logdir={dir}/log
log_level={log_level}
condure_bin=condure
zurl_bin=zurl
[proxy]
routesfile=routes
sig_iss=pushpin
sig_key={key}
updates_check=off
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out
[handler]
push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in
push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub
push_in_http_addr=127.0.0.1
push_in_http_port={publish_port}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=ipc://{{rundir}}/{{ipc_prefix}}command
"""
# message_rate is deliberately absent: Debian's stock 2500/s slows fan-out (Pushpin 1.36).

# Pushpin's built-in ``test`` route target holds a stream on channel ``test`` (any path ending
# in ``/stream``); readiness sends one item through it. The prefix keeps it off an app's paths.
_READY_PREFIX = "/.drf-grip-ready"


class PushpinError(RuntimeError):
    """Pushpin could not be started or did not become ready."""


class _NotListening(PushpinError):
    """Pushpin exited or never opened its publish port: likely a port taken meanwhile."""


def find_pushpin() -> str | None:
    """Path of the ``pushpin`` runner: ``$PUSHPIN`` if set, else the one on ``PATH``."""
    return find_tool("PUSHPIN", "pushpin")


def pushpin_missing() -> NoReturn:
    """Fail under CI, skip elsewhere: a CI run that silently skips Pushpin proves nothing."""
    tool_missing(
        "Pushpin is not installed (no executable 'pushpin' at $PUSHPIN or on PATH). "
        "Install it with 'apt-get install -y pushpin', or run scripts/test, which does."
    )


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (the runner's services)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; field 2 (comm) may contain spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


class PushpinServer(ManagedProcess):
    """A private Pushpin proxying every path to ``127.0.0.1:origin_port`` (with WebSocket-over-HTTP).

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``probe_path`` is the
    origin path requested once to prove the proxy path works; any answer from the origin
    (even a 404) counts, Pushpin's own 5xx does not. ``http_port`` / ``publish_port`` fix
    the ports (0: a free one each start), so a test can stop and restart Pushpin where
    clients and the publisher expect it.
    """

    #: Identifies the proxy in parametrized conformance tests.
    name = "pushpin"
    program = "pushpin"
    dir_prefix = "drf-grip-pushpin-"
    error = PushpinError
    retryable_error = _NotListening

    def __init__(
        self,
        origin_port: int,
        *,
        binary: str | None = None,
        probe_path: str = "/",
        startup_timeout: float = 15.0,
        log_level: int | None = None,
        keep_logs: bool | None = None,
        http_port: int = 0,
        publish_port: int = 0,
    ) -> None:
        self.origin_port = origin_port
        self._fixed_ports = (http_port, publish_port)
        self.binary = binary or find_pushpin()
        self.probe_path = probe_path
        self.startup_timeout = startup_timeout
        # 3 logs Pushpin's debug lines (prev-id conflicts, rate-limited updates).
        self.log_level = (
            int(os.environ.get("DRF_GRIP_PUSHPIN_LOG_LEVEL") or 2) if log_level is None else log_level
        )
        self.keep_logs = (
            bool(os.environ.get("DRF_GRIP_KEEP_PUSHPIN")) if keep_logs is None else keep_logs
        )
        # 32 random bytes as 43 URL-safe characters: long enough that PyJWT does not warn,
        # and safe inside a GRIP URL's query string.
        self.key = secrets.token_urlsafe(32)
        # Fixed ports are known before start(): an origin started first (Pushpin's start
        # probes it) takes its GRIP_URL from ``grip_url``. Free ones are picked at start.
        self.http_port = http_port
        self.publish_port = publish_port
        self.dir = None
        self.process = None
        self._child_pids: set[int] = set()
        self._restart_ports = (0, 0)

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Client-facing HTTP base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        """Client-facing WebSocket base URL, without a trailing slash."""
        return f"ws://127.0.0.1:{self.http_port}"

    @property
    def publish_uri(self) -> str:
        """Base of the publish (control) API; items go to ``publish_uri + '/publish/'``."""
        return f"http://127.0.0.1:{self.publish_port}"

    @property
    def grip_url(self) -> str:
        """The ``GRIP_URL`` setting for this instance, in django-grip's format."""
        return f"{self.publish_uri}/?iss=pushpin&key={self.key}"

    @property
    def handler_log(self) -> Path:
        assert self.dir is not None, "Pushpin is not started"
        return self.dir / "log" / "pushpin-handler.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PushpinServer:
        """Start Pushpin and return once it proxies a request to the origin."""
        if self.binary is None:
            raise PushpinError("pushpin is not installed")
        # Not listening is retried on fresh ports; listening but not reaching the origin
        # is not.
        self._start_with_retries()
        return self

    def _launch(self) -> None:
        self._make_dir()
        assert self.dir is not None
        (self.dir / "run").mkdir()
        (self.dir / "log").mkdir()
        self.http_port = self._fixed_ports[0] or free_port()
        self.publish_port = self._fixed_ports[1] or free_port()
        while self.publish_port == self.http_port and not self._fixed_ports[1]:
            self.publish_port = free_port()
        (self.dir / "routes").write_text(
            f"*,path_beg={_READY_PREFIX}/ test\n* 127.0.0.1:{self.origin_port},over_http\n"
        )
        config = self.dir / "pushpin.conf"
        config.write_text(
            _CONFIG.format(
                dir=self.dir,
                http_port=self.http_port,
                publish_port=self.publish_port,
                key=self.key,
                log_level=self.log_level,
            )
        )
        self._spawn(
            [str(self.binary), "--config", str(config)],
            log=self.dir / "log" / "runner.out",
            cwd=self.dir,
        )

    def _wait_ready(self) -> None:
        """Publish port answering is not enough: the first proxied request can get a 500
        ("Accept service unavailable") or hang right after start (Pushpin 1.36, readiness)."""
        deadline = time.monotonic() + self.startup_timeout
        self._wait_until(self._api_answers, "publish port", deadline=deadline, interval=0.02)
        # Listening, but not reaching the origin: a new port would not help.
        self._wait_until(
            self._probe_origin, "proxy", deadline=deadline, interval=0.02, late_error=PushpinError
        )
        self._wait_until(
            self._handler_delivers, "handler", deadline=deadline, interval=0.02,
            late_error=PushpinError,
        )
        assert self.process is not None
        # Its services, to kill should the runner die before them.
        self._child_pids = set(_children(self.process.pid))

    def serving(self) -> bool:
        """Whether it runs, answers its publish port and proxies to the origin. A runner
        whose service failed stops the others before it exits (``runnerapp.cpp``,
        ``service_error``), so "still running" alone can be a Pushpin with nothing
        listening."""
        if self.process is None or self.process.poll() is not None:
            return False
        return self._api_answers() and self._probe_origin()

    def _api_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.publish_uri + "/", timeout=1) as resp:
                return b"Pushpin API" in resp.read()
        except OSError:  # URLError included
            return False

    def _probe_origin(self) -> bool:
        """True once a request reached the origin, whatever the origin answered: a broken
        app should fail its tests with its own error, not time out here."""
        request = urllib.request.Request(self.url + self.probe_path)
        try:
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return True
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
        except OSError:  # not accepting yet, or the request hung
            return False
        # Pushpin's own answers while its services are still connecting (Pushpin 1.36).
        if status in (502, 503, 504):
            return False
        return not (status == 500 and b"Accept service unavailable" in body)

    def _handler_delivers(self) -> bool:
        """True once an item published to a held stream reached its client.

        The proxy answering is not enough: right after a start the first request the handler
        holds can be dropped with no answer at all ("Server disconnected"), or answered
        ``500 Accept service unavailable``, about 1 in 75 and 1 in 12 starts on a loaded
        2-core machine (Pushpin 1.36, ``NOTES.rst``). Once one item went through, later
        holds are delivered.
        """
        since = self.mark()
        token = secrets.token_hex(8)
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
        try:
            connection.request("GET", _READY_PREFIX + "/stream")
            response = connection.getresponse()
            if response.status != 200 or not response.readline().startswith(b"[stream open"):
                return False
            self.wait_subscribed("test", timeout=2, since=since)
            line = token + "\n"
            self.publish_items([{"channel": "test", "formats": {"http-stream": {"content": line}}}])
            return response.readline() == line.encode()
        except (OSError, http.client.HTTPException, TimeoutError, PushpinError):
            return False
        finally:
            connection.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the runner and wait: it stops its services. SIGKILL on the runner would
        orphan them, so services still alive after it are killed by PID."""
        children = set(self._child_pids)
        if self.process is not None:
            children |= set(_children(self.process.pid))
        process = self._terminate(timeout)
        if process is not None:
            if process.poll() is None:
                children |= set(_children(process.pid))
                process.kill()
                process.wait()
            for pid in children:
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self._child_pids = set()
        self._remove_dir()

    def keeps_dir(self) -> bool:
        return self.keep_logs

    def restart(self, *, down: float = 0.0) -> PushpinServer:
        """Stop and start again on the same ports with the same key, as an operator's
        restart: clients and publishers find it where they left it. ``down`` seconds pass
        in between. Connections it held are gone; subscriptions start afresh."""
        self.stop_for_restart()
        time.sleep(down)
        return self.start_again()

    def stop_for_restart(self) -> None:
        """:meth:`stop`, remembering the ports for :meth:`start_again`."""
        self._restart_ports = (self.http_port, self.publish_port)
        self.stop()

    def start_again(self) -> PushpinServer:
        fixed = self._fixed_ports
        self._fixed_ports = self._restart_ports
        try:
            return self.start()
        finally:
            self._fixed_ports = fixed

    # -- publishing --------------------------------------------------------------------------

    def publish_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        """POST items in Pushpin's ``/publish`` form, blocking; raises on any non-200 answer.

        For tests that publish by hand; the product's publisher is under test elsewhere.
        """
        body = json.dumps({"items": list(items)}).encode()
        request = urllib.request.Request(
            self.publish_uri + "/publish/",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise PushpinError(f"publish answered {exc.code}: {exc.read()!r}") from None

    # -- waiting on the handler log --------------------------------------------------------

    def mark(self) -> int:
        """A position in the handler log; pass it as ``since`` to wait for *new* events only."""
        try:
            return self.handler_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_subscribed(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        """Wait until Pushpin logs a subscription to ``channel`` after ``since``.

        Returns the log position after the matching line, usable as the next mark. Pushpin
        logs ``subscribe <uri> channel=NAME`` once a hold is active on a channel.
        """
        return self._wait_for("subscribe", channel, timeout, since)

    def wait_published(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        """Wait until Pushpin logs a publish to ``channel`` (``publish channel=NAME ...``)."""
        return self._wait_for("publish", channel, timeout, since)

    def wait_rerequested(self, channel: str, timeout: float = 5.0, since: int = 0) -> int:
        """Wait until a held request on ``channel`` is held again after Pushpin re-requested it.

        On a channel's first subscription Pushpin re-requests its held clients about a second
        later (PUSHPIN.md); while that re-request is at the origin, an item published without
        an ``id`` finds no subscriber. The handler logs the renewed hold as ``subscribe <uri>
        channel=NAME retry``.
        """
        return self._wait_for("subscribe", channel, timeout, since, suffix=rb" retry")

    def _wait_for(
        self, event: str, channel: str, timeout: float, since: int, suffix: bytes = b""
    ) -> int:
        pattern = re.compile(
            rb"\b" + re.escape(event.encode()) + rb"\b.*\bchannel=" + re.escape(channel.encode())
            + re.escape(suffix) + rb"(?:\s|$)"
        )
        deadline = time.monotonic() + timeout
        position = since  # start of the first line not yet matched
        while True:
            try:
                with open(self.handler_log, "rb") as log:
                    log.seek(position)
                    data = log.read()
            except FileNotFoundError:
                data = b""
            # Only whole lines: a line being written may not yet show its channel.
            for line in data.split(b"\n")[:-1]:
                position += len(line) + 1
                if pattern.search(line):
                    return position
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Pushpin logged no {event!r} for channel {channel!r} within {timeout}s"
                    f" (after log offset {since}).\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def log_files(self) -> list[Path]:
        return [] if self.dir is None else sorted((self.dir / "log").glob("*"))

    def __repr__(self) -> str:  # never show the key
        return f"PushpinServer(url={self.url!r}, origin_port={self.origin_port})"
