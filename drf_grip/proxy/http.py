"""One client HTTP request through the proxy: pass-through, response holds and stream holds."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

from ..protocol import (
    MAX_CHANNELS,
    Instruct,
    InstructError,
    Item,
    KeepAlive,
    NextLink,
    RawHeaders,
    dropped_by,
    get_header,
    is_websocket_events,
    parse_instruct,
)
from .headers import (
    loggable_target,
    replace_headers,
    target_length,
    target_too_long,
    without_headers,
)
from .jsonpatch import BodyPatchError, apply_body_patch
from .keep_alive import keep_alive_delay
from .mailbox import Mailbox
from .origin import (
    Exchange,
    Message,
    OriginError,
    OriginResponse,
    derive_scope,
    fetch,
    origin_headers,
)

if TYPE_CHECKING:
    from .app import GripProxy

__all__ = ["HttpSession"]

logger = logging.getLogger("drf_grip.proxy")

# An origin that keeps holding with a prev-id behind the channel would make the proxy
# re-request it in a loop; after this many immediate retries it holds anyway.
MAX_MISMATCH_RETRIES = 3
# Next-link answers that are not holds but carry a new link are followed at once (paging),
# at most this many times in a row.
MAX_LINK_CHAIN = 20
# A next link that fails (no answer, or any status outside 2xx, a 404 too) is fetched again
# after 1, 2, 4, 8 and 16 s, each plus up to 1 s at random, then the stream ends: six
# fetches in all, about 34 s, as Pushpin 1.36 (handler/httpsession.cpp ``outReq_error``:
# RETRY_TIMEOUT 1000 ms doubled per retry, RETRY_MAX 5, RETRY_RAND_MAX 1000; then
# ``doError`` ends the stream). The stream stays open and silent meanwhile. The embedded
# proxy fetched seven times (the intervals of a measurement read as six retries).
LINK_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
LINK_RETRY_RANDOM = 1.0

_NO_BODY_STATUSES = frozenset({204, 304})

@dataclass(eq=False)
class _Held:
    """The response a long-poll gets on timeout, and the base publishes are merged onto."""

    status: int
    headers: RawHeaders
    body: bytes
    # The last published response head built on this base: (format, headers, body).
    # Headers None: the format's body-patch could not be applied to this base.
    pushed: tuple[Any, RawHeaders | None, bytes] | None = None


# Holds that got the same answer share one _Held: a thousand watchers of one list keep one
# copy of its headers and body instead of a thousand, and a publish builds its response head
# once for all of them. Weak values: an entry lives as long as some hold uses it.
_held_bases: weakref.WeakValueDictionary[tuple[Any, ...], _Held] = weakref.WeakValueDictionary()


def _shared_held(status: int, headers: RawHeaders, body: bytes) -> _Held:
    key = (status, tuple(headers), body)
    held = _held_bases.get(key)
    if held is None:
        held = _held_bases[key] = _Held(status, headers, body)
    return held


#: What a held client gets when a published body-patch cannot be applied: Pushpin 1.36 answers
#: ``502 Bad Gateway`` (handler/httpsession.cpp: the patch's empty body is a filter error).
BODY_PATCH_FAILED = (
    "Bad Gateway: a published body-patch could not be applied to the held response"
)


def _pushed_body(held: _Held, fmt: Any) -> bytes | None:
    """A published response's body: its own, or the held body patched by its ``body-patch``
    (Pushpin 1.36 patches the hold's body, handler/httpsession.cpp); None when the patch
    fails."""
    if fmt.body_patch is None:
        return fmt.body
    try:
        return apply_body_patch(held.body, fmt.body_patch)
    except BodyPatchError as exc:
        logger.warning("body-patch not applied to a held response: %s", exc)
        return None


def _sendable_instruct(headers: RawHeaders) -> Instruct:
    """An origin's instruct, with only a ``Grip-Status`` this proxy can send. Pushpin 1.36
    sends any code from 0 to 999 (handler/instruct.cpp), but uvicorn writes status lines
    from a table of 100-599 (httptools_impl ``STATUS_LINE``, h11_impl ``STATUS_PHRASES``):
    any other code is an instruction error here, a 502."""
    instruct = parse_instruct(headers)
    if instruct.status is not None and not 100 <= instruct.status[0] <= 599:
        code = instruct.status[0]
        raise InstructError(f"Grip-Status {code}: an ASGI server sends 100-599 only")
    return instruct


class _Aborted(Exception):
    """The client was dropped (too slow); stop writing to it."""


class _Retry(Exception):
    """Ask the origin again with the client's original request."""


class HttpSession:
    """Plays Pushpin's part for one client request.

    A subscriber in the :class:`~drf_grip.proxy.hub.ChannelHub`: published items land in a
    bounded :class:`Mailbox` and are sent from this session's own task, so a slow client never
    delays the publisher or other clients.
    """

    def __init__(self, proxy: GripProxy, scope: dict[str, Any], receive, send) -> None:
        self.proxy = proxy
        self.scope = scope
        self._receive = receive
        self._send = send
        #: For logs: the path, and the query's parameter names without their values (a query
        #: may carry a token, e.g. ``?access_token=``).
        self.path = loggable_target(scope["path"], scope.get("query_string", b""))
        # Pushpin strips a client's own Grip-* headers (origin_headers) and Connection-Id:
        # only the proxy names a WebSocket connection.
        self._client_headers = without_headers(scope.get("headers", []), "connection-id")
        self.last_ids: dict[str, str] = {}
        self._channels: set[str] = set()
        # The held answer's filters per channel and its Grip-Set-Meta, which they read.
        self._filters: dict[str, tuple[str, ...]] = {}
        self._meta: dict[str, str] = {}
        self._mode: str = "response"
        self._mailbox: Mailbox[tuple[str, Any]] = Mailbox(
            proxy.max_queued_messages,
            proxy.max_origin_size,
            on_overflow=self._overflowed,
        )
        # Plain flags, no asyncio.Event: one allocates its waiters' deque at once, about
        # 0.5 KiB per held long-poll (tracemalloc, bench/run.py's embedded case).
        #: Set when a stream is dropped (its client reads too slowly).
        self._aborted = False
        #: The task of a stream's write in progress, which dropping the stream cancels.
        self._writing: asyncio.Task | None = None
        self._gone = False
        # Set by stop(): answer this hold now, as at the proxy's shutdown (see GripProxy._run).
        self._stopping = False
        self._body_lock = asyncio.Lock()
        self._body_complete = False
        self._retained: bytearray | None = bytearray()
        self._body_given = False  # the buffered body went to the origin (_buffered_body)
        self._exchange: Exchange | None = None
        self._admitted = False
        self._started_response = False
        # Stream state.
        self._holding = False
        self._keep_alive: KeepAlive | None = None
        self._link: NextLink | None = None
        self._link_due = 0.0
        self._link_failures = 0
        self._last_write = 0.0
        self._last_event: bytes | None = None
        self._next_keep_alive = 0.0
        # The write an idle keep-alive counts from, and its delay from it.
        self._idle_since = -1.0
        self._idle_delay = 0.0

    # -- the subscriber interface (called by the hub, on the loop, never blocks) ----------

    def wants(self, item: Item) -> bool:
        return (item.response if self._mode == "response" else item.stream) is not None

    @property
    def follows_own_ids(self) -> bool:
        """A long-poll takes only an item that follows its hold's prev-id (``ChannelHub``)."""
        return self._mode == "response"

    def skips(self, item: Item) -> bool:
        filters = self._filters.get(item.channel)
        return bool(filters) and dropped_by(filters, self._meta, item.meta)

    def deliver(self, item: Item) -> None:
        self._mailbox.put(("item", item), item.size)

    def _overflowed(self) -> None:
        if self._mode == "response":
            self._mailbox.overflowed = False  # a long-poll answers the first item; no loss
            return
        # A stream whose client cannot keep up is dropped, so memory stays bounded and the
        # other subscribers are not affected; a blocked write is abandoned.
        logger.warning("%s: the client reads too slowly; dropping its stream", self.path)
        self.proxy.hub.unsubscribe_all(self, self._channels)
        self._channels.clear()
        self._aborted = True
        if self._writing is not None:
            self._writing.cancel()  # its write is blocked: _write turns this into _Aborted

    def recover(self, channel: str, last_id: str | None) -> None:
        self._mailbox.put(("recover", channel), 0)

    def wake(self) -> None:
        self._mailbox.wake()

    def stop(self) -> None:
        """End the hold as the proxy's shutdown does (the timeout response, the end of a
        stream), for this connection only."""
        self._stopping = True
        self._mailbox.wake()

    # -- client side ----------------------------------------------------------------------

    async def _read_client_body(self) -> Message:
        async with self._body_lock:
            if self._body_complete:
                return {"type": "http.disconnect"} if self._gone else {
                    "type": "http.request", "body": b"", "more_body": False,
                }
            message = await self._receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if self._retained is not None:
                    if len(self._retained) + len(chunk) <= self.proxy.max_message_size:
                        self._retained += chunk
                    else:
                        self._retained = None  # too large to re-send: no re-requests
                if not message.get("more_body", False):
                    self._body_complete = True
            else:
                self._body_complete = True
                self._client_gone()
            return message

    def _has_body(self) -> bool:
        for name, value in self._client_headers:
            if name == b"transfer-encoding":
                return True
            if name == b"content-length" and value.strip() != b"0":
                return True
        return False

    async def _buffer_body(self) -> bool:
        """Read the client's whole body into ``_retained``; False when the client left or
        the body is over ``max_message_size`` (answered 413)."""
        while not self._body_complete:
            message = await self._read_client_body()
            if message["type"] == "http.disconnect":
                return False
            if self._retained is None:
                await self._error(
                    413, f"Payload Too Large: at most {self.proxy.max_message_size} bytes"
                )
                return False
        return True

    def _with_length(self, headers: RawHeaders) -> RawHeaders:
        """``headers`` for the buffered body: its ``Content-Length`` instead of chunked
        framing (Django's ASGI request reads ``Content-Length`` bytes, so a chunked body
        without it reached the view empty; a robustness probe)."""
        kept = without_headers(headers, "content-length", "transfer-encoding")
        return kept + [(b"content-length", str(len(self._retained or b"")).encode())]

    async def _buffered_body(self) -> Message:
        """The origin's ``receive`` once the body is buffered: all of it, then what the
        client side says (a disconnect)."""
        if not self._body_given:
            self._body_given = True
            body = bytes(self._retained or b"")
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._read_client_body()

    async def _watch_client(self) -> None:
        """Read the client side until it disconnects: that frees the hold at once."""
        try:
            while not self._gone:
                if not self._body_complete:
                    await self._read_client_body()
                    continue
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self._client_gone()
        except Exception:  # noqa: BLE001 - a broken transport is a gone client
            self._client_gone()

    def _client_gone(self) -> None:
        if not self._gone:
            self._gone = True
            if self._exchange is not None:
                self._exchange.abort()
            self._mailbox.wake()

    async def _start_response(self, status: int, headers: RawHeaders) -> None:
        self._started_response = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def _write(self, data: bytes, more: bool = True) -> None:
        if self._mode == "response":
            # Nothing aborts a response-mode write (only a stream's overflow does), so send
            # directly: two helper tasks and an asyncio.wait per write, times a thousand
            # subscribers of one publish, delayed every body (shared/PERFORMANCE.md).
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
            self._last_write = time.monotonic()
            return
        if self._aborted:
            raise _Aborted
        # A stream's write waits while its client reads too slowly (the server's flow
        # control); dropping the stream cancels the write where it waits. Sent directly:
        # a task for the write and one for the drop, with an asyncio.wait, per event and
        # subscriber, took a third of the embedded SSE delivery's CPU under uvicorn's h11,
        # and doubled its p99 under httptools (bench/run.py, grip-sse-emb, N = 1,000).
        task = asyncio.current_task()
        self._writing = task
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
        except asyncio.CancelledError:
            # Only the drop's own cancel becomes _Aborted; a server's cancel stays one.
            if self._aborted and task is not None and task.uncancel() == 0:
                raise _Aborted from None
            raise
        finally:
            self._writing = None
        self._last_write = time.monotonic()

    async def _respond(self, status: int, headers: RawHeaders, body: bytes) -> None:
        headers = without_headers(headers, "content-length", "transfer-encoding", grip=True)
        if status in _NO_BODY_STATUSES:
            body = b""
        else:
            headers.append((b"content-length", str(len(body)).encode()))
        if self.scope.get("method") == "HEAD":
            body = b""  # with the length a GET's body has (RFC 9110 §8.6), as Pushpin does
        await self._start_response(status, headers)
        await self._write(body, more=False)

    async def _respond_pushed(self, fmt: Any) -> None:
        """Answer a held long-poll with a published response.

        The subscribers of one channel whose holds answered alike share one ``_Held`` (see
        :func:`_shared_held`), so the merged response head is built once per publish for all
        of them rather than once per subscriber.
        """
        held = self._held
        pushed = held.pushed
        if pushed is None or pushed[0] is not fmt:
            body = _pushed_body(held, fmt)
            if body is None:
                # Failed once for every hold that shares this base: patched (and logged) once.
                held.pushed = (fmt, None, b"")
                await self._error(502, BODY_PATCH_FAILED)
                return
            headers = without_headers(
                replace_headers(held.headers, fmt.headers),
                "content-length", "transfer-encoding", grip=True,
            )
            if fmt.code in _NO_BODY_STATUSES:
                body = b""
            else:
                headers.append((b"content-length", str(len(body)).encode()))
            pushed = held.pushed = (fmt, headers, body)
        if pushed[1] is None:
            await self._error(502, BODY_PATCH_FAILED)
            return
        await self._start_response(fmt.code, pushed[1])
        # HEAD: the length a GET's body has (RFC 9110 §8.6), as Pushpin does; no body.
        await self._write(b"" if self.scope.get("method") == "HEAD" else pushed[2], more=False)

    async def _error(self, status: int, message: str) -> None:
        if self._started_response:
            return
        await self._respond(
            status, [(b"content-type", b"text/plain; charset=utf-8")], message.encode() + b"\n"
        )

    # -- the request ------------------------------------------------------------------------

    async def run(self) -> None:
        watcher: asyncio.Task[None] | None = None
        try:
            if is_websocket_events(self._client_headers):
                # A plain HTTP request posing as WebSocket-over-HTTP could hold gateway
                # subscriptions without a socket; Pushpin refuses it too.
                await self._error(403, "Forbidden: WebSocket-over-HTTP events come only from the proxy")
                return
            if target_length(self.scope) > self.proxy.max_request_target:
                await self._error(414, target_too_long(self.proxy.max_request_target))
                return
            headers = origin_headers(self._client_headers, self.proxy.signer)
            scope = derive_scope(self.scope, headers=headers)
            receive = self._read_client_body
            if self._has_body():
                # Read before taking a turn: Django reads the whole body first, so clients
                # that never finish theirs held every turn and no one else got an answer
                # (eight such POSTs; a robustness probe). Pushpin buffers bodies too.
                if not await self._buffer_body():
                    return
                receive = self._buffered_body
                scope = derive_scope(self.scope, headers=self._with_length(headers))
            turn: asyncio.Semaphore | None = self.proxy.origin_slots()
            await turn.acquire()
            try:
                # The exchange starts the origin's app at once: made only once it is our turn.
                self._exchange = exchange = Exchange(self.proxy.app, scope, receive)
                try:
                    status, resp_headers = await exchange.start()
                    instruct = _sendable_instruct(resp_headers)
                except OriginError as exc:
                    logger.warning("origin error for %s: %s", self.path, exc)
                    await self._error(502, "Bad Gateway: the origin did not answer")
                    return
                except InstructError as exc:
                    exchange.abort()
                    logger.warning("bad GRIP instruction from the origin for %s: %s", self.path, exc)
                    await self._error(502, f"Bad Gateway: invalid GRIP instruction: {exc}")
                    return
                watcher = asyncio.get_running_loop().create_task(self._watch_client())
                if not instruct.is_grip:
                    # A plain answer may stream for as long as it likes: its turn ends here.
                    turn.release()
                    turn = None
                    await self._pass_through(
                        exchange, instruct.client_status(status), resp_headers
                    )
                    return
                try:
                    body = await exchange.read_body(self.proxy.max_origin_size)
                except OriginError as exc:
                    logger.warning("origin error for %s: %s", self.path, exc)
                    await self._error(502, f"Bad Gateway: {exc}")
                    return
            finally:
                if turn is not None:
                    turn.release()
            # The answer is read: a hold may last minutes, and the exchange (its scope, queue
            # and the inner app's finished task) is a few KiB per held connection.
            self._exchange = None
            await self._handle(OriginResponse(status, resp_headers, body), instruct)
        except _Aborted:
            pass  # returning with the response unfinished makes the server drop the connection
        finally:
            if self._admitted:
                self.proxy.release(self)
            self.proxy.hub.unsubscribe_all(self, self._channels)
            self._channels.clear()
            if watcher is not None:
                watcher.cancel()
            if self._exchange is not None:
                self._exchange.abort()

    async def _pass_through(self, exchange: Exchange, status: int, headers: RawHeaders) -> None:
        await self._start_response(status, without_headers(headers, grip=True))
        try:
            async for chunk in exchange.chunks():
                await self._write(chunk)
        except OriginError:
            if self._gone:
                return
            logger.warning("the origin broke off its answer to %s", self.path)
        await self._write(b"", more=False)

    async def _handle(self, answer: OriginResponse, instruct: Instruct) -> None:
        mismatches = 0
        while True:
            if (
                instruct.hold == "stream"
                and instruct.next_link is None
                and any(spec.prev_id is not None for spec in instruct.channels)
            ):
                # Pushpin 1.36 does not hold such a stream: it answers it as a whole response,
                # and a later publish reaches nobody (PUSHPIN.md). The embedded proxy held it,
                # so a stream that worked here ended at once behind Pushpin (probe).
                logger.warning(
                    "%s: a stream held on a channel with a prev-id needs a Grip-Link rel=next; "
                    "answered without a hold, as Pushpin does", self.path,
                )
                await self._respond(
                    instruct.client_status(answer.status), answer.headers, answer.body
                )
                return
            if instruct.hold == "stream" or (instruct.hold is None and instruct.next_link):
                await self._stream(answer, instruct)
                return
            try:
                await self._hold_response(answer, instruct, mismatches)
                return
            except _Retry as retry:
                mismatches = mismatches + 1 if retry.args and retry.args[0] == "mismatch" else 0
            if self._retained is None:
                logger.warning("cannot re-request %s: its body was too large to keep", self.path)
                await self._respond(self._held.status, self._held.headers, self._held.body)
                return
            try:
                answer = await self._rerequest()
                instruct = _sendable_instruct(answer.headers)
            except (OriginError, InstructError) as exc:
                logger.warning("re-request of %s failed: %s", self.path, exc)
                await self._error(502, "Bad Gateway: the origin's answer to a retry was unusable")
                return
            if self._gone:
                return
            if not instruct.is_grip:
                await self._respond(
                    instruct.client_status(answer.status), answer.headers, answer.body
                )
                return

    def _grip_last(self) -> RawHeaders:
        """``Grip-Last`` per channel: the id this session has, as Pushpin 1.36 sends it on a
        long-poll's retry and a stream's next link (handler/httpsession.cpp: the session's
        channel prevId, which only the items it processed move on; for a hold that conflicts
        on accept, its own prev-id, handler/engine.cpp). Naming the channel's newest id
        instead told an origin that resumes from ``Grip-Last`` (django-grip's
        ``request.grip.last``) that its client had items it never got after a gap
        (differential probe against Pushpin)."""
        out: RawHeaders = []
        for channel in sorted(self._channels):
            last = self.last_ids.get(channel)
            if last is not None:
                out.append((b"grip-last", f"{channel}; last-id={last}".encode("latin-1")))
        return out

    async def _rerequest(self) -> OriginResponse:
        """Pushpin's retry: the client's original request, all its headers, plus Grip-Last."""
        logger.info("retry %s", self.path)
        async with self.proxy.rerequest_slots():
            # Grip-Last is read once it is this session's turn.
            headers = origin_headers(self._client_headers, self.proxy.signer, self._grip_last())
            if self._has_body():
                headers = self._with_length(headers)
            scope = derive_scope(self.scope, headers=headers)
            return await fetch(
                self.proxy.app,
                scope,
                bytes(self._retained or b""),
                limit=self.proxy.max_origin_size,
                timeout=self.proxy.origin_timeout,
            )

    def _admit(self) -> bool:
        if not self._admitted:
            self._admitted = self.proxy.admit(self)
        return self._admitted

    def _subscribe(
        self,
        instruct: Instruct,
        *,
        first_stream_hold: bool = False,
        retry_on_conflict: bool = False,
    ) -> bool:
        """Subscribe to the instruction's channels (dropping others); False on a prev-id gap.

        ``retry_on_conflict``: a long-poll's hold, re-requested at once on a gap: then it is
        no subscribe event on any of its channels (``ChannelHub.subscribe``, ``counted``)."""
        specs = instruct.channels[:MAX_CHANNELS]
        if len(instruct.channels) > MAX_CHANNELS:
            logger.warning("%s: only the first %d channels are subscribed", self.path, MAX_CHANNELS)
        wanted = {spec.name for spec in specs}
        for channel in self._channels - wanted:
            self.proxy.hub.unsubscribe(self, channel)
        self._channels = wanted
        # Each answer replaces both, as in Pushpin (handler/httpsession.cpp).
        self._filters = {spec.name: spec.filters for spec in specs if spec.filters}
        self._meta = dict(instruct.meta)
        hub = self.proxy.hub
        counted = not retry_on_conflict or all(hub.in_step(spec) for spec in specs)
        in_step = True
        for spec in specs:
            in_step = (
                hub.subscribe(self, spec, forget_on_conflict=first_stream_hold, counted=counted)
                and in_step
            )
        return in_step

    async def _refuse_over_limit(self) -> None:
        await self._error(
            503,
            "Service Unavailable: the drf-grip embedded proxy holds its maximum of "
            f"{self.proxy.max_held} connections (EMBEDDED_MAX_HELD)",
        )

    # -- response holds (long-polling) ---------------------------------------------------

    async def _hold_response(
        self, answer: OriginResponse, instruct: Instruct, mismatches: int
    ) -> None:
        status = instruct.client_status(answer.status)
        self._held = _shared_held(status, without_headers(answer.headers, grip=True), answer.body)
        self._mode = "response"
        if self._gone:
            return
        if not self._admit():
            await self._refuse_over_limit()
            return
        timeout = instruct.timeout
        if timeout is None:
            timeout = self.proxy.default_hold_timeout
        timeout = max(timeout, self.proxy.min_hold_timeout)
        in_step = self._subscribe(instruct, retry_on_conflict=mismatches < MAX_MISMATCH_RETRIES)
        if not in_step:
            if mismatches < MAX_MISMATCH_RETRIES:
                raise _Retry("mismatch")
            logger.warning(
                "%s: the origin keeps holding behind the channel's last id; holding anyway",
                self.path,
            )
        if len(self._mailbox):
            # Something was published while the origin was being asked: its answer may
            # predate it, so ask again rather than hold on possibly stale content.
            self._mailbox.clear()
            raise _Retry("published")
        deadline = time.monotonic() + timeout
        while True:
            if self._gone:
                return
            if self.proxy.closing or self._stopping:
                break
            entry = self._mailbox.pop()
            if entry is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await self._mailbox.wait(remaining)
                continue
            kind, value = entry
            if kind == "recover":
                self._mailbox.clear()
                raise _Retry("recover")
            fmt = value.response
            if fmt.action == "hint":
                self._mailbox.clear()
                raise _Retry("hint")
            if fmt.action == "close":
                # Pushpin 1.36 has no close for a long-poll: it ignores the item and the hold
                # waits on for what comes next (run against it).
                continue
            await self._respond_pushed(fmt)
            return
        await self._respond(self._held.status, self._held.headers, self._held.body)

    # -- stream holds ---------------------------------------------------------------------

    def _stream_headers(self, headers: RawHeaders) -> RawHeaders:
        return without_headers(headers, "content-length", "transfer-encoding", grip=True)

    def _apply_stream(self, instruct: Instruct, *, first: bool = False) -> bool:
        """Take a stream answer's keep-alive, link and channels; False on a prev-id gap."""
        now = time.monotonic()
        if instruct.keep_alive is not None:
            self._keep_alive = instruct.keep_alive
            self._idle_since = -1.0
            self._next_keep_alive = now + self._keep_alive_delay()
        self._link = instruct.next_link
        if self._link is not None:
            self._link_due = now + self._link.timeout
        if instruct.hold == "stream":
            self._holding = True
            return self._subscribe(instruct, first_stream_hold=first)
        return True

    def _keep_alive_due(self) -> float | None:
        if self._keep_alive is None:
            return None
        if self._keep_alive.mode == "idle":
            if self._idle_since != self._last_write:
                # Idle mode sets the timer afresh at each write (handler/httpsession.cpp
                # ``adjustKeepAlive``).
                self._idle_since = self._last_write
                self._idle_delay = self._keep_alive_delay()
            return self._last_write + self._idle_delay
        return self._next_keep_alive

    def _keep_alive_delay(self) -> float:
        assert self._keep_alive is not None
        return keep_alive_delay(self._keep_alive.timeout)

    async def _stream(self, answer: OriginResponse, instruct: Instruct) -> None:
        self._mode = "stream"
        if self._gone:
            return
        if instruct.hold == "stream" and not self._admit():
            await self._refuse_over_limit()
            return
        status = instruct.client_status(answer.status)
        await self._start_response(status, self._stream_headers(answer.headers))
        await self._write_events(answer.body)
        # Without a hold, a next link is paging: follow it at once. With a hold and a prev-id
        # gap, the link is how the stream catches up (Pushpin 1.36, the race).
        follow_now = not self._apply_stream(instruct, first=True) or instruct.hold is None
        chain = 0
        while not self._gone:
            if follow_now and self._link is not None:
                follow_now = False
                chain += 1
                outcome = await self._follow_link(allow_chain=chain < MAX_LINK_CHAIN)
                if outcome == "end":
                    break
                follow_now = outcome == "again"
                continue
            follow_now = False
            chain = 0
            if not self._holding and self._link is None:
                break
            if self.proxy.closing or self._stopping:
                break
            if self._aborted:
                raise _Aborted
            entry = self._mailbox.pop()
            if entry is not None:
                kind, value = entry
                if kind == "recover" or value.stream.action == "hint":
                    follow_now = self._link is not None  # without a next link: ignored
                    continue
                if value.stream.action == "close":
                    break
                await self._write_events(value.stream.content)
                continue
            now = time.monotonic()
            keep_alive_due = self._keep_alive_due()
            if keep_alive_due is not None and now >= keep_alive_due:
                assert self._keep_alive is not None
                await self._write(self._keep_alive.data)
                self._next_keep_alive = time.monotonic() + self._keep_alive_delay()
                continue
            if self._link is not None and now >= self._link_due:
                follow_now = True
                continue
            due = [t for t in (keep_alive_due, self._link_due if self._link else None) if t]
            await self._mailbox.wait(min(due) - now if due else None)
        if not self._gone:
            await self._write(b"", more=False)

    async def _write_events(self, data: bytes) -> None:
        """Write stream content, except an SSE event that repeats, byte for byte and id
        included, the last event this stream wrote (an event with the same id is the same
        event: WHATWG HTML, server-sent events). A next-link answer made as a change
        committed already carries the render that the change's publish then brings: the
        answer holds at the version read before it rendered, so that what is published
        during the fetch is not lost (rest/mixins.py, ``_grip_channels``), and the next
        item, or the fetch a gap makes, brings the same render again. live.js drops such a
        repeat by its ETag; a bare ``EventSource`` would dispatch it twice."""
        if data == self._last_event:
            return
        await self._write(data)
        if data.startswith(b"id: ") or b"\nid: " in data:
            self._last_event = data
        elif data.strip() and not data.startswith(b":"):
            self._last_event = None  # other content came between

    def _drop_unfollowing(self, instruct: Instruct) -> None:
        """Drop the items queued while a next link was fetched that do not follow the hold
        its answer made: of a channel no longer held, or whose prev-id is not the one the
        answer holds that channel at. As Pushpin 1.36 does on a stream's later holds
        (handler/httpsession.cpp, "Drop any non-matching queued items"), up to the first
        item that follows; the ones after it follow it (the hub checked them in turn).

        The answer's render may already have the change such an item carries, and more: a
        shared stream's fetch made as a change committed sent that change, and the push of
        an earlier change, queued meanwhile, was written after it: the stream went back to
        the older representation, then got the newer one again (a loaded CI run's
        ``test_a_stream_whose_catch_up_fetch_saw_the_change_gets_it_once``, reproduced with
        slowed renders). Unlike Pushpin, the embedded proxy does not lose a dropped item
        that was newer than the answer: it moved the channel past the hold, so the stream
        fetches its link again. Behind Pushpin such an item is lost for good, which is why
        drf-grip's answers hold at a version every later push follows.

        Unlike Pushpin, an item without a prev-id is kept: the hub delivers one whatever the
        stream holds (``hub.ChannelHub._publish_one``)."""
        held = {spec.name: spec.prev_id for spec in instruct.channels[:MAX_CHANNELS]}
        while True:
            entry = self._mailbox.peek()
            if entry is None or entry[0] != "item":
                return
            item: Item = entry[1]
            if item.channel in held:
                prev_id = held[item.channel]
                if prev_id is None or item.prev_id is None or item.prev_id == prev_id:
                    return
            self._mailbox.pop()

    def _link_scope(self, link: NextLink) -> dict[str, Any]:
        host = get_header(self.scope.get("headers", []), "host") or ""
        base = f"{self.scope.get('scheme', 'http')}://{host or 'localhost'}{self.scope['path']}"
        target = urlsplit(urljoin(base, link.uri))
        # Pushpin's next-link request is a bare GET: no cookies, no Authorization, only
        # Grip-Last (Pushpin 1.36; handler/httpsession.cpp requestNextLink). Host is the link's.
        headers: RawHeaders = [(b"host", (target.netloc or host).encode("latin-1"))]
        headers = origin_headers(headers, self.proxy.signer, self._grip_last())
        return derive_scope(
            self.scope,
            headers=headers,
            method="GET",
            path=unquote(target.path or "/"),
            query_string=target.query.encode("latin-1"),
        )

    def _link_failed(self, why: str) -> str:
        """'hold' until the link is due again (:data:`LINK_RETRY_DELAYS`), then 'end'."""
        if self._link_failures >= len(LINK_RETRY_DELAYS):
            logger.warning("next link of %s failed (%s): ending the stream", self.path, why)
            return "end"
        delay = LINK_RETRY_DELAYS[self._link_failures] + random.uniform(0, LINK_RETRY_RANDOM)
        self._link_failures += 1
        logger.info("next link of %s failed (%s): again in %.1f s", self.path, why, delay)
        self._link_due = time.monotonic() + delay
        return "hold"

    async def _follow_link(self, *, allow_chain: bool) -> str:
        """Fetch the next link and append its body; 'hold', 'again' (follow at once) or 'end'."""
        link = self._link
        assert link is not None
        # Not the link itself: its path carries a signed token.
        logger.info("next link for %s", self.path)
        try:
            answer = await fetch(
                self.proxy.app,
                self._link_scope(link),
                b"",
                limit=self.proxy.max_origin_size,
                timeout=self.proxy.origin_timeout,
            )
            instruct = _sendable_instruct(answer.headers)
        except (OriginError, InstructError) as exc:
            return self._link_failed(str(exc))
        if not 200 <= answer.status < 300:
            return self._link_failed(f"answered {answer.status}")
        self._link_failures = 0
        if answer.body and not self._gone:
            await self._write_events(answer.body)
        if instruct.hold == "stream":
            if not self._admit():
                logger.warning("%s: over EMBEDDED_MAX_HELD; ending the stream", self.path)
                return "end"
            in_step = self._apply_stream(instruct)
            self._drop_unfollowing(instruct)
            return "again" if (not in_step and allow_chain and self._link) else "hold"
        if instruct.next_link is not None:
            self._link = instruct.next_link
            self._link_due = time.monotonic() + self._link.timeout
            return "again" if (allow_chain and answer.body) else "hold"
        return "end"
