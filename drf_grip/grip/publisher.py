"""Publishing items to GRIP proxies without making the caller wait on the network.

``publish()`` keeps django-grip's signature. It builds an item in Pushpin's ``/publish`` JSON
form and hands it to the process-wide :class:`Publisher`, whose background threads deliver it
to every destination: each endpoint of ``grip_settings.publish_endpoints`` over HTTP, and each
registered local sink (the embedded proxy of this process) by a direct call.

Each destination has its own bounded queue and thread (a *lane*), so an endpoint that is down
delays no other. Items that pile up while a request is in flight go out together in the next
request. Nothing here is created at import time and settings are read when an item is
published, so ``override_settings`` takes effect at once.

Rule for channel names: ``publish()`` and ``make_item()`` prepend ``GRIP_PREFIX``;
``publish_items()`` takes items whose channels are already prefixed (the form ``make_item()``
returns, and the form the embedded proxy receives).
"""

from __future__ import annotations

import atexit
import base64
import concurrent.futures
import http.client
import json
import logging
import os
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union
from urllib.parse import unquote, urlsplit

from pubcontrol import Format

from ..conf import GripEndpoint, embedded_key, grip_settings, redact_url
from .signature import hs256_encode

__all__ = [
    "Formats",
    "Item",
    "LocalSink",
    "MAX_BODY_SIZE",
    "PublishError",
    "PublishStats",
    "Publisher",
    "get_publisher",
    "get_pubcontrol",
    "PubControl",
    "make_item",
    "publish",
    "publish_items",
    "register_local_sink",
    "register_outdated_check",
    "register_delivered_hook",
    "unregister_local_sink",
]

logger = logging.getLogger("drf_grip.publish")

Item = dict[str, Any]
Formats = Union[Format, Sequence[Format], Mapping[str, Mapping[str, Any]]]

# Pushpin refuses a /publish body over 1 MB (Pushpin 1.36); batches are split to stay below it.
# An item that is larger on its own is still sent alone, and the server decides.
MAX_BODY_SIZE = 1_000_000

# A lane whose queue stayed empty this long ends its thread; the next publish starts another.
_IDLE_SECONDS = 60.0

# Statuses worth another try: the server or the network may get better. Any other 4xx says
# the request itself is wrong (Pushpin: "400 Invalid format"), so repeating it cannot help.
_RETRY_STATUSES = frozenset({408, 429})

# Statuses that may blame a single item of a batch: the batch is split to isolate it.
_SPLIT_STATUSES = frozenset({400, 413})

_COUNTERS = ("queued", "sent", "failed", "retried", "dropped", "batches", "superseded")


class LocalSink(Protocol):
    """Something in this process that takes items directly (the embedded proxy)."""

    def publish_items(self, items: list[Item]) -> None:
        """Deliver ``items``; called from a publisher thread, so it must be thread-safe."""


class PublishError(Exception):
    """A blocking publish failed at one or more destinations (named by URI, never by key)."""

    def __init__(self, failed: Sequence[str], channels: Sequence[str]) -> None:
        self.failed = list(failed)
        self.channels = list(channels)
        super().__init__(
            f"publish to {_describe_channels(self.channels)} failed at: {', '.join(self.failed)}"
        )


@dataclass(frozen=True)
class PublishStats:
    """Counters since the process started; one item sent to two destinations counts twice.

    ``queued``: deliveries accepted into a queue; ``sent``: deliveries confirmed (2xx or a
    local sink that returned); ``failed``: deliveries given up (a 4xx, retries exhausted, a
    sink that raised, unserializable item); ``retried``: requests repeated after a 5xx, 408,
    429 or a network error; ``dropped``: deliveries refused because a queue was full, or
    still queued at ``close()``; ``batches``: requests (or sink calls) that succeeded;
    ``superseded``: versioned items replaced by a newer item of their channel before sending;
    ``pending``: deliveries queued or in flight right now. Blocking publishes count in
    ``sent``, ``failed``, ``retried`` and ``batches`` but not in ``queued``.
    """

    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    batches: int = 0
    superseded: int = 0
    pending: int = 0


# -- items -----------------------------------------------------------------------------------


def make_item(
    channel: str,
    formats: Formats,
    id: str | None = None,
    prev_id: str | None = None,
    *,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """An item in Pushpin's ``/publish`` form for ``channel``, with ``GRIP_PREFIX`` applied."""
    item: Item = {"channel": grip_settings.prefix + channel, "formats": _export_formats(formats)}
    # Pushpin compares ids as strings; an int version must not become a JSON number.
    if id is not None:
        item["id"] = str(id)
    if prev_id is not None:
        item["prev-id"] = str(prev_id)
    if meta:
        item["meta"] = {str(k): str(v) for k, v in meta.items()}
    return item


def _export_formats(formats: Formats) -> dict[str, Any]:
    if isinstance(formats, Format):
        formats = [formats]
    out: dict[str, Any] = {}
    if isinstance(formats, Mapping):
        for name, exported in formats.items():
            out[str(name)] = _json_safe(dict(exported))
    else:
        for fmt in formats:
            name = fmt.name()
            if name in out:
                raise ValueError(f"more than one {name!r} format in one item")
            exported = fmt.export()
            if name == "http-response":
                exported = _response_code_fixed(exported)
            out[name] = _json_safe(exported)
    if not out:
        raise ValueError("an item needs at least one format")
    return out


def _response_code_fixed(exported: dict[str, Any]) -> dict[str, Any]:
    """Make ``code`` a number, reading a text "code" as the body it was meant to be.

    django-grip's README publishes ``HttpResponseFormat(obj.serialize(), headers=...)``: the
    first argument of gripcontrol's format is ``code``, so the body went out as the status and
    Pushpin answered the client ``HTTP/1.1 0 Undefined Reason``, which clients reject.
    """
    code = exported.get("code")
    if code is None or isinstance(code, int):
        return exported
    text = code.decode("utf-8", "replace") if isinstance(code, (bytes, bytearray)) else str(code)
    if text.strip().isdigit():
        return {**exported, "code": int(text)}
    if exported.get("body") or exported.get("body-bin"):
        raise ValueError(f"http-response code must be a number, not {text[:40]!r}")
    fixed = {k: v for k, v in exported.items() if k not in ("code", "body", "body-bin")}
    fixed["body"] = bytes(code) if isinstance(code, (bytes, bytearray)) else text
    return fixed


def _json_safe(value: Any, key: str = "") -> Any:
    """Make gripcontrol's exports JSON-ready: its ``*-bin`` values are base64 *bytes*."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            k = str(k)
            if k in ("content", "body") and isinstance(v, (bytes, bytearray)):
                try:
                    out[k] = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    out[k + "-bin"] = base64.b64encode(v).decode("ascii")
            else:
                out[k] = _json_safe(v, k)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, key) for v in value]
    if isinstance(value, (bytes, bytearray)):
        if key.endswith("-bin"):
            return bytes(value).decode("ascii")  # already base64, as gripcontrol exports it
        return bytes(value).decode("latin-1")  # header values are bytes-as-latin-1 in HTTP
    return value


def _describe_channels(channels: Iterable[str]) -> str:
    unique = list(dict.fromkeys(channels))
    shown = ", ".join(repr(c) for c in unique[:5])
    more = f" and {len(unique) - 5} more" if len(unique) > 5 else ""
    return f"channel{'s' if len(unique) != 1 else ''} {shown}{more}"


def _channels_of(items: Iterable[Item]) -> list[str]:
    return [str(item.get("channel")) for item in items]


# -- destinations ----------------------------------------------------------------------------


_SUPERSEDED = -1
Superseded = Callable[[set[str]], bool]


def _closes(item: Item) -> bool:
    formats = item.get("formats") or {}
    return any(isinstance(f, dict) and f.get("action") == "close" for f in formats.values())


def coalesce(items: Sequence[Item]) -> tuple[list[Item], int]:
    """Latest wins per channel: of several versioned items (with an ``id``) for one channel,
    keep the newest, carrying the ``prev-id`` of the oldest, so a proxy that has the oldest's
    predecessor delivers the latest state at once (and any other re-requests instead). A
    ``close`` keeps the item before it (a stream's last event). Items without an ``id`` (a
    connection's messages) all stay. Returns the items and how many were dropped."""
    last: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.get("id") is not None and not _closes(item):
            last[str(item.get("channel"))] = index
    first_prev: dict[str, Any] = {}
    out: list[Item] = []
    dropped = 0
    for index, item in enumerate(items):
        channel = str(item.get("channel"))
        if item.get("id") is None or _closes(item) or channel not in last:
            out.append(item)
            continue
        first_prev.setdefault(channel, item.get("prev-id"))
        if index != last[channel]:
            dropped += 1
            continue
        kept = dict(item)
        if first_prev[channel] is None:
            kept.pop("prev-id", None)
        else:
            kept["prev-id"] = first_prev[channel]
        out.append(kept)
    return out, dropped


class _HttpTarget:
    """One GRIP endpoint reached over HTTP: ``POST {control_uri}/publish/``."""

    def __init__(self, endpoint: GripEndpoint) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint.control_uri)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port
        path = parts.path.rstrip("/") + "/publish/"
        self.path = path + (f"?{parts.query}" if parts.query else "")
        # The name used in logs and errors: no user info, no query string, never a key.
        self.name = redact_url(endpoint.control_uri).rstrip("/") + "/publish/"
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
        # connection and a fresh JWT per POST were a sixth of the publisher's time.
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
        return "Bearer " + (key.decode("utf-8") if isinstance(key, bytes) else key)

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
        items: list[Item],
        publisher: Publisher,
        stop: threading.Event,
        superseded: Superseded | None = None,
        requeue: list[Item] | None = None,
    ) -> bool:
        """Send ``items`` in as few requests as the body limit allows; True if all arrived.
        Items left unsent because newer items of their channels arrived while they were
        retried go to ``requeue`` (the lane sends the latest state instead: :func:`coalesce`)."""
        encoded: list[tuple[Item, bytes]] = []
        ok = True
        for item in items:
            try:
                encoded.append((item, json.dumps(item, separators=(",", ":")).encode("utf-8")))
            except (TypeError, ValueError) as exc:
                ok = False
                publisher._count(failed=1)
                logger.error(
                    "publish to %s: item for %s is not JSON-serializable (%s); not sent",
                    self.name,
                    _describe_channels([str(item.get("channel"))]),
                    exc,
                )
        for chunk in _split_by_size(encoded):
            ok = self._send(chunk, publisher, stop, superseded, requeue) and ok
        return ok

    def _send(
        self,
        chunk: list[tuple[Item, bytes]],
        publisher: Publisher,
        stop: threading.Event,
        superseded: Superseded | None = None,
        requeue: list[Item] | None = None,
    ) -> bool:
        body = b'{"items":[' + b",".join(data for _, data in chunk) + b"]}"
        channels = _channels_of(item for item, _ in chunk)
        versioned = {str(item.get("channel")) for item, _ in chunk if item.get("id") is not None}
        check = (lambda: superseded(versioned)) if superseded is not None and versioned else None
        status, reason = self._post_with_retries(body, channels, publisher, stop, check)
        if status == _SUPERSEDED and requeue is not None:
            requeue.extend(item for item, _ in chunk)
            return True
        if status is not None and 200 <= status < 300:
            publisher._count(sent=len(chunk), batches=1)
            return True
        if status in _SPLIT_STATUSES and len(chunk) > 1:
            # Pushpin rejects the whole request for one bad item: halve to find it, so the
            # good items of the batch still arrive.
            half = len(chunk) // 2
            first = self._send(chunk[:half], publisher, stop, superseded, requeue)
            return self._send(chunk[half:], publisher, stop, superseded, requeue) and first
        publisher._count(failed=len(chunk))
        logger.error(
            "publish to %s failed for %s (%d item%s): %s",
            self.name,
            _describe_channels(channels),
            len(chunk),
            "" if len(chunk) == 1 else "s",
            reason,
        )
        return False

    def _post_with_retries(
        self,
        body: bytes,
        channels: list[str],
        publisher: Publisher,
        stop: threading.Event,
        superseded: Callable[[], bool] | None = None,
    ) -> tuple[int | None, str]:
        retries = max(0, int(grip_settings.PUBLISH_RETRIES))
        backoff = float(grip_settings.PUBLISH_BACKOFF)
        backoff_max = float(grip_settings.PUBLISH_BACKOFF_MAX)
        connect_timeout = float(grip_settings.PUBLISH_CONNECT_TIMEOUT)
        read_timeout = float(grip_settings.PUBLISH_READ_TIMEOUT)
        attempt = 0
        while True:
            status: int | None
            try:
                status, text = self.post(body, connect_timeout, read_timeout)
                reason = f"HTTP {status} {text[:200]}".rstrip()
            except (OSError, http.client.HTTPException) as exc:
                status, reason = None, f"{type(exc).__name__}: {exc}"
            if status is not None and 200 <= status < 300:
                return status, reason
            retriable = status is None or status >= 500 or status in _RETRY_STATUSES
            if not retriable:
                return status, reason
            if attempt >= retries:
                return status, f"{reason} (gave up after {attempt + 1} attempts)"
            delay = min(backoff * (2**attempt), backoff_max) * random.uniform(0.5, 1.0)
            logger.warning(
                "publish to %s failed for %s: %s; retry %d of %d in %.2fs",
                self.name,
                _describe_channels(channels),
                reason,
                attempt + 1,
                retries,
                delay,
            )
            publisher._count(retried=1)
            if stop.wait(delay):
                return status, f"{reason} (publisher closed before retrying)"
            if superseded is not None and superseded():
                # Newer items of these channels are queued: retry with the latest state, so
                # a client never moves back to an older representation after an outage.
                return _SUPERSEDED, "superseded by newer items"
            attempt += 1


def _split_by_size(encoded: list[tuple[Item, bytes]]) -> list[list[tuple[Item, bytes]]]:
    chunks: list[list[tuple[Item, bytes]]] = []
    current: list[tuple[Item, bytes]] = []
    size = len(b'{"items":[]}')
    for entry in encoded:
        extra = len(entry[1]) + 1  # the comma
        if current and size + extra > MAX_BODY_SIZE:
            chunks.append(current)
            current, size = [], len(b'{"items":[]}')
        current.append(entry)
        size += extra
    if current:
        chunks.append(current)
    return chunks


class _SinkTarget:
    """A local sink: items are handed over in-process, no network hop."""

    def __init__(self, sink: LocalSink) -> None:
        self.sink = sink
        self.key: tuple[Any, ...] = ("sink", id(sink))
        self.name = f"local sink {type(sink).__name__}"

    def deliver(
        self,
        items: list[Item],
        publisher: Publisher,
        stop: threading.Event,
        superseded: Superseded | None = None,
        requeue: list[Item] | None = None,
    ) -> bool:
        try:
            self.sink.publish_items(list(items))
        except Exception:
            publisher._count(failed=len(items))
            logger.exception(
                "publish to %s failed for %s", self.name, _describe_channels(_channels_of(items))
            )
            return False
        publisher._count(sent=len(items), batches=1)
        return True


_Target = Union[_HttpTarget, _SinkTarget]

_local_sinks: list[LocalSink] = []
_sinks_lock = threading.Lock()
_warned_unconfigured = False


#: Checks that an item is outdated by a newer item of its channel that any process
#: published (``register_outdated_check``).
_outdated_checks: list[Callable[[Item], bool]] = []


def register_outdated_check(check: Callable[[Item], bool]) -> None:
    """``check(item)`` True means a newer item of the item's channel was published, maybe by
    another process: the item is not sent, nor retried. :func:`coalesce` is latest-wins
    within one process; this makes it hold across processes, whose lanes deliver in no
    order relative to each other (after an outage each retries on its own timer)."""
    if check not in _outdated_checks:
        _outdated_checks.append(check)


#: Called with the items a destination confirmed (``register_delivered_hook``).
_delivered_hooks: list[Callable[[list[Item]], None]] = []


def register_delivered_hook(hook: Callable[[list[Item]], None]) -> None:
    """``hook(items)`` after a destination confirmed ``items`` (2xx, or a local sink took
    them): a higher layer learns which ids the proxy has seen, without this layer knowing
    what they mean."""
    if hook not in _delivered_hooks:
        _delivered_hooks.append(hook)


def _delivered(items: list[Item]) -> None:
    for hook in list(_delivered_hooks):
        try:
            hook(items)
        except Exception:  # noqa: BLE001 - a hook must not stop delivery
            logger.exception("publish: a delivered hook failed")


def _outdated(item: Item) -> bool:
    for check in list(_outdated_checks):
        try:
            if check(item):
                return True
        except Exception:  # noqa: BLE001 - a failing check must not stop delivery
            logger.exception("drf-grip: an outdated-item check failed")
    return False


def register_local_sink(sink: LocalSink) -> None:
    """Also deliver every item to ``sink`` (the embedded proxy running in this process)."""
    with _sinks_lock:
        if not any(s is sink for s in _local_sinks):
            _local_sinks.append(sink)


def unregister_local_sink(sink: LocalSink) -> None:
    """Stop delivering to ``sink``; items already queued for it are still handed over."""
    with _sinks_lock:
        _local_sinks[:] = [s for s in _local_sinks if s is not sink]


def _targets() -> list[_Target]:
    """Where an item published now goes, read from the settings of this moment."""
    global _warned_unconfigured
    endpoints = list(grip_settings.publish_endpoints)
    with _sinks_lock:
        sinks = list(_local_sinks)
    if not endpoints and not sinks:
        url = str(grip_settings.EMBEDDED_URL).rstrip("/") + "/_grip"
        endpoints = [GripEndpoint(control_uri=url, key=embedded_key())]
        if not _warned_unconfigured:
            _warned_unconfigured = True
            logger.warning(
                "GRIP_URL is unset (and no GRIP_PROXIES or PUBLISH_SERVERS), and no embedded "
                "proxy runs in this process: publishing to the embedded proxy at %s "
                "(DRF_GRIP['EMBEDDED_URL']). Set GRIP_URL to publish to Pushpin or Fanout.",
                url,
            )
    return [_HttpTarget(ep) for ep in endpoints] + [_SinkTarget(s) for s in sinks]


# -- the background publisher ----------------------------------------------------------------


class _Lane:
    """The queue and thread of one destination."""

    def __init__(self, target: _Target, lock: threading.Lock) -> None:
        self.target = target
        self.items: deque[Item] = deque()
        self.wake = threading.Condition(lock)
        self.thread: threading.Thread | None = None
        self.accepted = 0  # items ever queued here
        self.finished = 0  # of those, sent or given up
        self.in_flight = 0


class Publisher:
    """Delivers items from background threads: one bounded queue and thread per destination.

    Use :func:`get_publisher` for the process-wide instance. It restarts its threads after a
    fork (the child does not re-send what the parent had queued) and after :meth:`close`.
    """

    def __init__(self) -> None:
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._lanes: dict[tuple[Any, ...], _Lane] = {}
        self._stop = threading.Event()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    def _check_fork(self) -> None:
        # Threads do not survive fork() and the inherited lock may be held by one of them.
        if self._pid != os.getpid():
            self._setup()

    # -- public --------------------------------------------------------------------------

    def enqueue(self, items: Sequence[Item]) -> None:
        """Queue ``items`` for every destination; never blocks on the network or a full queue."""
        if not items:
            return
        self._check_fork()
        targets = _targets()
        limit = max(1, int(grip_settings.PUBLISH_QUEUE_SIZE))
        dropped: list[tuple[str, list[str]]] = []
        now: list[tuple[_Target, list[Item]]] = []
        with self._lock:
            for target in targets:
                lane = self._lanes.get(target.key)
                if lane is None:
                    lane = self._lanes[target.key] = _Lane(target, self._lock)
                lost: list[str] = []
                for item in items:
                    if len(lane.items) >= limit:
                        lost.append(str(item.get("channel")))
                    else:
                        lane.items.append(item)
                        lane.accepted += 1
                self._counts["queued"] += len(items) - len(lost)
                self._counts["dropped"] += len(lost)
                if lost:
                    dropped.append((target.name, lost))
                if len(lost) < len(items) and not self._start(lane):
                    # No thread can start (Python 3.12+ refuses during interpreter
                    # shutdown, when a script's last changes arrive): send from this thread.
                    now.append((target, list(lane.items)))
                    self._counts["queued"] -= len(lane.items)
                    lane.accepted -= len(lane.items)
                    lane.items.clear()
                lane.wake.notify()
        for target, pending in now:
            target.deliver(pending, self, threading.Event())  # logs and counts failures
        for name, lost in dropped:
            logger.warning(
                "publish queue for %s is full (PUBLISH_QUEUE_SIZE=%d): dropped %d item%s for %s",
                name,
                limit,
                len(lost),
                "" if len(lost) == 1 else "s",
                _describe_channels(lost),
            )

    def send(self, items: Sequence[Item]) -> list[str]:
        """Deliver ``items`` now, from this thread, to every destination; return their names.

        Raises :class:`PublishError` naming the destinations that failed.
        """
        if not items:
            return []
        self._check_fork()
        targets = _targets()
        failed = [t.name for t in targets if not t.deliver(list(items), self, threading.Event())]
        if failed:
            raise PublishError(failed, _channels_of(items))
        return [t.name for t in targets]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent or given up; False on timeout."""
        self._check_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            marks = [(lane, lane.accepted) for lane in self._lanes.values()]
            while any(lane.finished < mark for lane, mark in marks):
                if deadline is None:
                    self._progress.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._progress.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush for at most ``timeout`` seconds, then stop the threads; True if all was sent.

        What is still queued afterwards is counted as dropped and logged. The publisher stays
        usable: the next publish starts new threads.
        """
        flushed = self.flush(timeout)
        with self._lock:
            self._stop.set()
            lanes = list(self._lanes.values())
            self._lanes.clear()
            self._stop = threading.Event()
            lost: list[str] = []
            for lane in lanes:
                lost.extend(_channels_of(lane.items))
                lane.finished += len(lane.items)  # given up: a concurrent flush() may return
                lane.items.clear()
                lane.wake.notify_all()
            self._counts["dropped"] += len(lost)
            self._progress.notify_all()
        if lost:
            logger.warning(
                "publisher closed with %d item%s not delivered, for %s",
                len(lost),
                "" if len(lost) == 1 else "s",
                _describe_channels(lost),
            )
        return flushed and not lost

    @property
    def stats(self) -> PublishStats:
        """A snapshot of the counters (see :class:`PublishStats`)."""
        self._check_fork()
        with self._lock:
            pending = sum(len(lane.items) + lane.in_flight for lane in self._lanes.values())
            return PublishStats(**self._counts, pending=pending)

    # -- worker --------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def _start(self, lane: _Lane) -> bool:
        """Start the lane's thread unless it runs (lock held); False if none can be started."""
        if lane.thread is not None and lane.thread.is_alive():
            return True
        thread = threading.Thread(
            target=self._run,
            args=(lane, self._stop),
            name=f"drf-grip publish to {lane.target.name}",
            daemon=True,
        )
        lane.thread = thread
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            lane.thread = None
            return False
        return True

    def _run(self, lane: _Lane, stop: threading.Event) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                while not lane.items and not stop.is_set():
                    if not lane.wake.wait(_IDLE_SECONDS) and not lane.items:
                        if self._lanes.get(lane.target.key) is lane:
                            del self._lanes[lane.target.key]
                        break
                if stop.is_set() or not lane.items:
                    if lane.thread is me:
                        lane.thread = None
                    return
                size = max(1, int(grip_settings.PUBLISH_BATCH_SIZE))
                taken = [lane.items.popleft() for _ in range(min(size, len(lane.items)))]
                batch, superseded_count = coalesce(taken)
                lane.in_flight = len(batch)

            if _outdated_checks:  # outside the lock: a check may read a shared cache
                current = [item for item in batch if not _outdated(item)]
                superseded_count += len(batch) - len(current)
                batch = current

            def superseded(channels: set[str], lane: _Lane = lane, batch: list[Item] = batch) -> bool:
                with self._lock:
                    if any(
                        item.get("id") is not None and item.get("channel") in channels
                        for item in lane.items
                    ):
                        return True
                return any(_outdated(item) for item in batch if item.get("channel") in channels)

            requeue: list[Item] = []
            try:
                if batch and lane.target.deliver(batch, self, stop, superseded, requeue):
                    if _delivered_hooks:
                        _delivered([item for item in batch if all(item is not r for r in requeue)])
            except Exception:  # a bug must not kill the lane and strand its queue
                self._count(failed=len(batch))
                logger.exception(
                    "publish to %s failed for %s",
                    lane.target.name,
                    _describe_channels(_channels_of(batch)),
                )
            if requeue and _outdated_checks:
                current = [item for item in requeue if not _outdated(item)]
                superseded_count += len(requeue) - len(current)
                requeue = current
            with self._lock:
                lane.in_flight = 0
                # Unsent items whose channels have newer ones go back in front, to be
                # coalesced with those on the next round.
                lane.items.extendleft(reversed(requeue))
                lane.finished += len(taken) - len(requeue)
                self._counts["superseded"] += superseded_count
                self._progress.notify_all()

    def _flush_at_exit(self) -> None:
        if self._pid != os.getpid():
            return
        timeout = float(grip_settings.PUBLISH_FLUSH_TIMEOUT)
        if not self.close(timeout):
            logger.warning("publish flush at exit did not finish within %.1fs", timeout)


# -- module API ------------------------------------------------------------------------------

_publisher: Publisher | None = None
_publisher_lock = threading.Lock()
_atexit_registered = False


def get_publisher() -> Publisher:
    """The process-wide publisher, created on first use (never at import time)."""
    global _publisher, _atexit_registered
    publisher = _publisher
    if publisher is None:
        with _publisher_lock:
            if _publisher is None:
                _publisher = Publisher()
                if not _atexit_registered:
                    _atexit_registered = True
                    atexit.register(_flush_at_exit)
            publisher = _publisher
    return publisher


def _flush_at_exit() -> None:
    """A bounded flush at interpreter exit (``PUBLISH_FLUSH_TIMEOUT``)."""
    if _publisher is not None:
        try:
            _publisher._flush_at_exit()
        except Exception:  # settings gone, logging torn down: never fail the exit
            pass


def _after_fork_in_child() -> None:
    global _publisher_lock, _sinks_lock, _callback_pool
    _callback_pool = None  # its thread did not survive the fork
    _publisher_lock = threading.Lock()
    _sinks_lock = threading.Lock()
    if _publisher is not None:
        _publisher._check_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def publish_items(items: Sequence[Item], *, blocking: bool = False) -> None:
    """Publish items already in Pushpin's form, channels already prefixed (see ``make_item``).

    Not blocking: queued, the call returns at once. Blocking: sent now to every destination,
    raising :class:`PublishError` if any of them failed.
    """
    publisher = get_publisher()
    if blocking:
        publisher.send(list(items))
    else:
        publisher.enqueue(list(items))


PublishCallback = Callable[[bool, str], Any]

_callback_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _send_then_call(items: list[Item], callback: PublishCallback) -> None:
    try:
        get_publisher().send(items)
        ok, message = True, ""
    except PublishError as exc:  # names destinations by redacted URI, never a key
        ok, message = False, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the callback, as pubcontrol does
        ok, message = False, f"{type(exc).__name__}: {exc}"
    try:
        callback(ok, message)
    except Exception:  # noqa: BLE001
        logger.exception("publish callback raised")


def _publish_with_callback(items: list[Item], callback: PublishCallback) -> None:
    """Send from one worker thread, in call order, then tell ``callback(success, message)``."""
    global _callback_pool
    with _publisher_lock:
        if _callback_pool is None:
            _callback_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="drf-grip-publish-callback"
            )
        pool = _callback_pool
    try:
        pool.submit(_send_then_call, items, callback)
    except RuntimeError:  # interpreter shutting down: no new threads
        _send_then_call(items, callback)


def publish(
    channel: str,
    formats: Formats,
    id: str | None = None,
    prev_id: str | None = None,
    *,
    blocking: bool = False,
    callback: PublishCallback | None = None,
    meta: Mapping[str, str] | None = None,
) -> None:
    """django-grip's ``publish``: send ``formats`` to subscribers of ``channel`` (prefixed).

    ``formats`` is a gripcontrol format (``HttpStreamFormat``, ``HttpResponseFormat``,
    ``WebSocketMessageFormat``), a list of them, or ``{format name: exported dict}``.
    ``callback(success, message)`` is called once every destination answered (pubcontrol's
    contract); without it, failures are logged and counted.
    """
    _deliver([make_item(channel, formats, id, prev_id, meta=meta)], blocking, callback)


def _deliver(items: list[Item], blocking: bool, callback: PublishCallback | None) -> None:
    if callback is None:
        publish_items(items, blocking=blocking)
    elif not blocking:
        _publish_with_callback(items, callback)
    else:
        try:
            publish_items(items, blocking=True)
        except PublishError as exc:
            callback(False, str(exc))
            raise
        callback(True, "")


class PubControl:
    """What django-grip's ``get_pubcontrol()`` returned (gripcontrol's ``GripPubControl``),
    for code that publishes through it: the same calls, sent by drf-grip's publisher.

    As with gripcontrol, channels are taken as given (no ``GRIP_PREFIX``).
    """

    def publish(
        self,
        channel: str,
        item: Any,
        blocking: bool = False,
        callback: PublishCallback | None = None,
    ) -> None:
        """Publish a ``pubcontrol.Item`` (its formats, id, prev_id and meta)."""
        formats = item.formats if hasattr(item, "formats") else item
        made = make_item(
            channel,
            formats,
            getattr(item, "id", None),
            getattr(item, "prev_id", None),
            meta=getattr(item, "meta", None),
        )
        made["channel"] = channel
        _deliver([made], blocking, callback)

    def publish_http_response(
        self,
        channel: str,
        http_response: Any,
        id: str | None = None,
        prev_id: str | None = None,
        blocking: bool = False,
        callback: PublishCallback | None = None,
    ) -> None:
        """A body (``str``/``bytes``) or an ``HttpResponseFormat`` for held long-polls."""
        from gripcontrol import HttpResponseFormat

        if isinstance(http_response, (str, bytes)):
            http_response = HttpResponseFormat(body=http_response)
        self.publish(channel, _PubItem(http_response, id, prev_id), blocking, callback)

    def publish_http_stream(self, channel: str, http_stream: Any, *args: Any, **kwargs: Any) -> None:
        """Content (``str``/``bytes``) or an ``HttpStreamFormat`` for open streams; the other
        arguments as :meth:`publish_http_response`."""
        from gripcontrol import HttpStreamFormat

        if isinstance(http_stream, (str, bytes)):
            http_stream = HttpStreamFormat(http_stream)
        self.publish_http_response(channel, http_stream, *args, **kwargs)

    def wait_all_sent(self) -> None:
        """Block until everything queued so far was sent or given up."""
        get_publisher().flush()

    finish = wait_all_sent


@dataclass
class _PubItem:
    formats: Any
    id: str | None = None
    prev_id: str | None = None
    meta: Mapping[str, str] | None = None


def get_pubcontrol() -> PubControl:
    """django-grip's ``get_pubcontrol()``: publish through drf-grip's publisher."""
    return PubControl()
