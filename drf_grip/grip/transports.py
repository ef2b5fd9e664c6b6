"""How items reach one destination: over HTTP to a GRIP endpoint's ``/publish/``, or by a
direct call to a local sink (the embedded proxy of this process).

A transport sends a batch in as few requests as Pushpin's body limit allows, retries what may
succeed later, and splits a refused batch to isolate the item that was refused. It reports
what happened through ``count(sent=..., failed=..., ...)`` (the publisher's counters).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, Union
from urllib.parse import unquote, urlsplit

from ..conf import GripEndpoint, InvalidKey, bearer_token, grip_settings, redact_url
from ..protocol.constants import MAX_PUBLISH_BODY
from ..protocol.items import RawItem
from ..protocol.signing import hs256_encode
from .items import channels_of, describe_channels

__all__ = [
    "Count",
    "HttpTarget",
    "LocalSink",
    "StopAt",
    "SUPERSEDED",
    "SinkTarget",
    "Superseded",
    "Target",
    "split_by_size",
]

logger = logging.getLogger("drf_grip.publish")

# Statuses worth another try: the server or the network may get better. Any other 4xx says
# the request itself is wrong (Pushpin: "400 Invalid format"), so repeating it cannot help.
_RETRY_STATUSES = frozenset({408, 429})

# Statuses that may blame a single item of a batch: the batch is split to isolate it.
_SPLIT_STATUSES = frozenset({400, 413})

#: Seconds between attempts while nothing listens at a publish endpoint (connection refused:
#: a proxy restarting). Such an attempt costs one refused connection, so within each wait of
#: the backoff the endpoint is tried again this often, and a proxy that is back gets the
#: items within about this long rather than at the end of a backoff that has grown to
#: ``PUBLISH_BACKOFF_MAX`` (DESIGN.md §4: clients reach the current state within a second).
#: Only the backoff's own attempts count as retries, are logged and use up
#: ``PUBLISH_RETRIES``.
DOWN_PROBE_INTERVAL = 0.5

#: What a transport's send answers when newer items of the batch's channels arrived while it
#: waited to retry: the batch goes back to its lane, to be coalesced with them.
SUPERSEDED = -1
#: ``superseded(channels)``: True when newer items of one of ``channels`` are waiting, or an
#: item of theirs would now be sent otherwise (``lanes._sent_otherwise``).
Superseded = Callable[[set[str]], bool]
#: ``count(sent=1, batches=1, ...)``: adds to the publisher's counters.
Count = Callable[..., None]


class LocalSink(Protocol):
    """Something in this process that takes items directly (the embedded proxy)."""

    def publish_items(self, items: list[RawItem]) -> None:
        """Deliver ``items``; called from a publisher thread, so it must be thread-safe."""


def endpoint_name(endpoint: GripEndpoint) -> str:
    """The name of ``endpoint``'s target, used in logs and errors (no user info, no query
    string, never a key), the same in every process of one deployment."""
    return redact_url(endpoint.control_uri).rstrip("/") + "/publish/"


class HttpTarget:
    """One GRIP endpoint reached over HTTP: ``POST {control_uri}/publish/``."""

    def __init__(self, endpoint: GripEndpoint) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint.control_uri)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port
        path = parts.path.rstrip("/") + "/publish/"
        self.path = path + (f"?{parts.query}" if parts.query else "")
        self.name = endpoint_name(endpoint)
        # Fastly Fanout takes an item only with an http-response, http-stream or ws-message
        # format (its publishing API reference, PublishItemFormats), where Pushpin 1.36
        # skips the formats it does not know: items that reach no client are not sent there.
        self.client_formats_only = self.host.endswith((".fastly.com", ".fanout.io"))
        extra = endpoint.extra
        user = extra.get("user", unquote(parts.username) if parts.username else None)
        password = extra.get("pass", unquote(parts.password) if parts.password else None)
        self.basic = (str(user), str(password or "")) if user is not None else None
        self.key: tuple[Any, ...] = (
            "http",
            endpoint.control_uri,
            endpoint.control_iss,
            endpoint.key,
            self.basic,
        )
        # One kept-alive connection and one signed token, reused while valid: a new TCP
        # connection and a fresh JWT per POST were a sixth of the publisher's time. (Pushpin
        # 1.36's publish endpoint closes every connection after its answer:
        # src/corelib/simplehttpserver.cpp; the embedded proxy's keeps it.)
        self._conn: http.client.HTTPConnection | None = None
        self._conn_lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        auth = self._authorization()
        if auth:
            headers["Authorization"] = auth
        return headers

    def _authorization(self) -> str | None:
        # Same precedence as pubcontrol: basic, then JWT (key + control_iss), then bearer.
        # pubcontrol's basic auth is broken on Python 3 (it sends "Basic b'...'").
        if self.basic is not None:
            token = base64.b64encode(":".join(self.basic).encode("utf-8")).decode("ascii")
            return f"Basic {token}"
        key = self.endpoint.key
        if key is None or key == "" or key == b"":
            return None
        if self.endpoint.control_iss:
            now = time.time()
            if self._token is None or self._token[1] - now < 60:
                expires = int(now) + 600
                claim = {"iss": self.endpoint.control_iss, "exp": expires}
                self._token = ("Bearer " + hs256_encode(claim, key), float(expires))
            return self._token[0]
        return "Bearer " + bearer_token(key)

    def _connect(self, connect_timeout: float, read_timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=connect_timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        return conn

    def post(self, body: bytes, connect_timeout: float, read_timeout: float) -> tuple[int, str]:
        """One POST; returns (status, start of the response body). Raises on network errors.

        The connection is kept for the next POST. A kept connection the server closed in the
        meantime fails at once, before anything was processed: that one is tried again on a
        new connection (a timeout or a reset after the request was read is not)."""
        with self._conn_lock:
            for attempt in (0, 1):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = self._connect(connect_timeout, read_timeout)
                conn = self._conn
                try:
                    conn.request("POST", self.path, body=body, headers=self.headers())
                    response = conn.getresponse()
                    data = response.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    self.close()
                    if reused and attempt == 0:
                        continue
                    raise
                except BaseException:
                    self.close()
                    raise
                if response.will_close:
                    self.close()
                return response.status, data[:4096].decode("utf-8", "replace").strip()
            raise AssertionError("unreachable")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def deliver(
        self,
        items: list[RawItem],
        count: Count,
        stop: threading.Event | StopAt,
        superseded: Superseded | None = None,
        requeue: list[RawItem] | None = None,
    ) -> bool:
        """Send ``items`` in as few requests as the body limit allows; True if all arrived.
        Items left unsent because newer items of their channels arrived while they were
        retried go to ``requeue`` (the lane sends the latest state instead: :func:`coalesce`)."""
        encoded: list[tuple[RawItem, bytes]] = []
        ok = True
        for item in items:
            try:
                encoded.append((item, json.dumps(item, separators=(",", ":")).encode("utf-8")))
            except (TypeError, ValueError) as exc:
                ok = False
                count(failed=1)
                logger.error(
                    "publish to %s: item for %s is not JSON-serializable (%s); not sent",
                    self.name,
                    describe_channels([str(item.get("channel"))]),
                    exc,
                )
        for chunk in split_by_size(encoded):
            ok = self._send(chunk, count, stop, superseded, requeue) and ok
        return ok

    def _send(
        self,
        chunk: list[tuple[RawItem, bytes]],
        count: Count,
        stop: threading.Event | StopAt,
        superseded: Superseded | None = None,
        requeue: list[RawItem] | None = None,
    ) -> bool:
        body = b'{"items":[' + b",".join(data for _, data in chunk) + b"]}"
        channels = channels_of(item for item, _ in chunk)
        versioned = {str(item.get("channel")) for item, _ in chunk if item.get("id") is not None}
        check = (lambda: superseded(versioned)) if superseded is not None and versioned else None
        status, reason = self._post_with_retries(body, channels, count, stop, check)
        if status == SUPERSEDED and requeue is not None:
            requeue.extend(item for item, _ in chunk)
            return True
        if status is not None and 200 <= status < 300:
            count(sent=len(chunk), batches=1)
            return True
        if status in _SPLIT_STATUSES and len(chunk) > 1:
            # Pushpin rejects the whole request for one bad item: halve to find it, so the
            # good items of the batch still arrive.
            half = len(chunk) // 2
            first = self._send(chunk[:half], count, stop, superseded, requeue)
            return self._send(chunk[half:], count, stop, superseded, requeue) and first
        count(failed=len(chunk))
        logger.error(
            "publish to %s failed for %s (%d item%s): %s",
            self.name,
            describe_channels(channels),
            len(chunk),
            "" if len(chunk) == 1 else "s",
            reason,
        )
        return False

    def _post_with_retries(
        self,
        body: bytes,
        channels: list[str],
        count: Count,
        stop: threading.Event | StopAt,
        superseded: Callable[[], bool] | None = None,
    ) -> tuple[int | None, str]:
        retries = max(0, int(grip_settings.PUBLISH_RETRIES))
        backoff = float(grip_settings.PUBLISH_BACKOFF)
        backoff_max = float(grip_settings.PUBLISH_BACKOFF_MAX)
        connect_timeout = float(grip_settings.PUBLISH_CONNECT_TIMEOUT)
        read_timeout = float(grip_settings.PUBLISH_READ_TIMEOUT)
        attempt = 0
        due = 0.0  # when the backoff's current wait ends (time.monotonic())
        while True:
            status: int | None
            refused = False
            if isinstance(stop, StopAt):
                left = stop.remaining()
                if left <= 0:
                    return None, "not sent: the exit's deadline passed"
                connect_timeout = min(connect_timeout, left)
                read_timeout = min(read_timeout, left)
            try:
                status, text = self.post(body, connect_timeout, read_timeout)
                reason = f"HTTP {status} {text[:200]}".rstrip()
            except (OSError, http.client.HTTPException) as exc:
                status, reason = None, f"{type(exc).__name__}: {exc}"
                refused = isinstance(exc, ConnectionRefusedError)
            except InvalidKey as exc:
                return None, str(exc)  # no retry mends the settings (W014 says so at start)
            if status is not None and 200 <= status < 300:
                return status, reason
            retriable = status is None or status >= 500 or status in _RETRY_STATUSES
            if not retriable:
                return status, reason
            now = time.monotonic()
            if now >= due:
                if attempt >= retries:
                    return status, f"{reason} (gave up after {attempt + 1} attempts)"
                delay = min(backoff * (2**attempt), backoff_max) * random.uniform(0.5, 1.0)
                logger.warning(
                    "publish to %s failed for %s: %s; retry %d of %d in %.2fs",
                    self.name,
                    describe_channels(channels),
                    reason,
                    attempt + 1,
                    retries,
                    delay,
                )
                count(retried=1)
                due = now + delay
                attempt += 1
            wait = due - now
            if refused:
                wait = min(wait, DOWN_PROBE_INTERVAL)
            if stop.wait(wait):
                return status, f"{reason} (publisher closed before retrying)"
            if superseded is not None and superseded():
                # Newer items of these channels are queued: retry with the latest state, so
                # a client never moves back to an older representation after an outage.
                return SUPERSEDED, "superseded by newer items"


class StopAt:
    """A stop that the clock sets: for sending from a thread that must not wait past
    ``deadline`` (a ``time.monotonic()``), where no other thread can be started to set an
    ``Event`` (from Python 3.12 none starts during interpreter shutdown). A send under it
    also waits on the network no longer than the time left."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def is_set(self) -> bool:
        return self.remaining() <= 0

    def wait(self, timeout: float | None = None) -> bool:
        left = self.remaining()
        time.sleep(left if timeout is None else max(0.0, min(timeout, left)))
        return self.is_set()


def split_by_size(encoded: list[tuple[RawItem, bytes]]) -> list[list[tuple[RawItem, bytes]]]:
    chunks: list[list[tuple[RawItem, bytes]]] = []
    current: list[tuple[RawItem, bytes]] = []
    size = len(b'{"items":[]}')
    for entry in encoded:
        extra = len(entry[1]) + 1  # the comma
        if current and size + extra > MAX_PUBLISH_BODY:
            chunks.append(current)
            current, size = [], len(b'{"items":[]}')
        current.append(entry)
        size += extra
    if current:
        chunks.append(current)
    return chunks


class SinkTarget:
    """A local sink: items are handed over in-process, no network hop."""

    #: A sink (the embedded proxy, a test's outbox) takes every item (``HttpTarget``).
    client_formats_only = False

    def __init__(self, sink: LocalSink) -> None:
        self.sink = sink
        self.key: tuple[Any, ...] = ("sink", id(sink))
        self.name = f"local sink {type(sink).__name__}"

    def deliver(
        self,
        items: list[RawItem],
        count: Count,
        stop: threading.Event | StopAt,
        superseded: Superseded | None = None,
        requeue: list[RawItem] | None = None,
    ) -> bool:
        try:
            self.sink.publish_items(list(items))
        except Exception:
            count(failed=len(items))
            logger.exception(
                "publish to %s failed for %s", self.name, describe_channels(channels_of(items))
            )
            return False
        count(sent=len(items), batches=1)
        return True



Target = Union[HttpTarget, SinkTarget]
