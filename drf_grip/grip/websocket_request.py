"""``request.websocket`` and ``request.is_websocket()``: django-websocket's socket API over
the messages of the current batch (``request.wscontext``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest

from .websocket_context import WebSocketContext

__all__ = [
    "EndOfBatch",
    "InvalidMessage",
    "TOO_DEEP",
    "WebSocket",
    "attach",
    "decode_json",
    "encode_json",
]


class InvalidMessage(ValueError):
    """A client message a view cannot decode; ``str(exc)`` is a reason safe to send back."""


class EndOfBatch(BaseException):
    """What ``await request.receive()`` raises once the batch has no message left:
    django-pistoke's ``while True: await request.receive()`` would wait there for the next
    one, which comes with the next batch, to the view's next run. The WebSocket decorators
    and ``WebSocketView`` end the view there, its connection open. A ``BaseException``, as
    ``asyncio.CancelledError`` is, so that a view's ``except Exception`` does not take it."""


class WebSocket:
    """``request.websocket``: django-websocket's API over the messages of the current batch."""

    def __init__(self, context: WebSocketContext) -> None:
        self.context = context

    def __repr__(self) -> str:
        return f"<WebSocket {self.context.id!r}>"

    @property
    def protocols(self) -> list[str]:
        """The subprotocols the client offered."""
        return self.context.protocols

    @property
    def closed(self) -> bool:
        """True once the client closed or went away, or ``close()`` was called."""
        ctx = self.context
        return ctx.closed or ctx.close_code is not None or ctx.disconnected

    @property
    def close_code(self) -> int | None:
        """The client's close code, once its CLOSE has been read."""
        return self.context.close_code

    def accept(self, subprotocol: str | None = None) -> None:
        """Accept now, e.g. to choose a subprotocol; otherwise the decorators accept for you."""
        self.context.accept(subprotocol)

    def read(self, fallback: Any = None) -> Any:
        """The next message of the batch, or ``fallback`` if there is none (or the client
        closed)."""
        ctx = self.context
        if self.closed or not ctx.can_recv():
            return fallback
        return ctx.recv()

    def wait(self) -> str | bytes | None:
        """Same as ``read()``: a batch is all there is to wait for, so this never blocks."""
        return self.read()

    def read_json(self) -> Any:
        """The next message decoded as JSON, ``None`` at the end of the batch; raises
        ``InvalidMessage`` if it is not JSON."""
        message = self.read()
        return None if message is None else decode_json(message)

    def _remaining(self) -> list[Any]:
        ctx = self.context
        out = []
        for event in ctx.in_events[ctx.read_index :]:
            if event.type in ("CLOSE", "DISCONNECT"):
                break
            if event.type in ("TEXT", "BINARY"):
                out.append(event)
        return out

    def count_messages(self) -> int:
        """How many messages of this batch are still unread."""
        return 0 if self.closed else len(self._remaining())

    def has_messages(self) -> bool:
        return self.count_messages() > 0

    def __iter__(self) -> Iterator[str | bytes]:
        """Every unread message of the batch; stops at its end or when the client closes."""
        while True:
            message = self.read()
            if message is None:
                return
            yield message

    def send(self, message: Any) -> None:
        """Send ``str`` as a text message, ``bytes`` as a binary one, anything else as its
        ``str()`` (django-websocket's rule: a message is anything convertible to a string).
        ``None`` sends nothing: it is what :meth:`wait` returns for a batch with no message
        (the opening one), where django-websocket's ``wait()`` blocked, so its README's
        ``send(request.websocket.wait())`` sent the text "None" to every new client.

        After :meth:`close` nothing more is sent: no data frame follows a close frame
        (RFC 6455 §5.5.1), where the message went out before it (seeds probe)."""
        if message is None or self.context.closed:
            return
        if isinstance(message, (bytes, bytearray, memoryview)):
            self.context.send_binary(bytes(message))  # an echo keeps the frame's type
            return
        self.context.send(message if isinstance(message, str) else str(message))

    async def receive(self) -> str | bytes:
        """django-pistoke's ``await request.receive()``: the next message of the batch;
        :class:`EndOfBatch` past its end (or once the client closed)."""
        message = self.read()
        if message is None:
            raise EndOfBatch
        return message

    async def send_async(self, message: Any) -> None:
        """django-pistoke's ``await request.send(message)``: :meth:`send`."""
        self.send(message)

    def send_json(self, data: Any) -> None:
        """Send ``data`` as a JSON text message (:func:`encode_json`); nothing after
        :meth:`close`."""
        self.send(encode_json(data))

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Close the connection once this batch is answered; the first close is the one
        sent (``code`` 1000 by default), as a socket's would be."""
        if not self.context.closed:
            self.context.close(code, reason)


def encode_json(data: Any) -> str:
    """``data`` as one JSON text message: compact, dates, decimals and UUIDs as in Django;
    ``NaN`` and infinities are refused (``ValueError``), which no JSON parser reads."""
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), allow_nan=False)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _integer(text: str) -> int:
    # Python refuses to convert more than 4,300 digits (sys.get_int_max_str_digits()), with
    # a message naming its own setting, which a client was sent (bad-input probe).
    if len(text.lstrip("-")) > 4300:
        raise ValueError(f"a number of {len(text)} characters is too long")
    return int(text)


#: The deepest nesting :func:`decode_json` takes. Python's own parser gives up at a depth
#: that differs by version (RecursionError on 3.11 and 3.12 for 5,000; 3.13 parses it, CI):
#: one bound, the same answer everywhere.
MAX_JSON_DEPTH = 500
TOO_DEEP = "invalid JSON: nested too deeply"

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _nested_deeper_than(message: str | bytes, limit: int) -> bool:
    """Whether the arrays and objects of ``message`` nest deeper than ``limit``: counted
    outside strings, and only for a message with that many opening brackets at all."""
    data = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b"", data)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def decode_json(message: str | bytes) -> Any:
    """Parse one JSON message (RFC 8259, strictly); ``InvalidMessage`` with a reason if it
    is not JSON. Python's parser also takes ``NaN``, ``Infinity`` and ``1e999`` (echoed back
    as text no browser parses) and raised ``RecursionError`` for an array nested a few
    thousand deep, which ended the connection with a 500 (seeds probe)."""
    if _nested_deeper_than(message, MAX_JSON_DEPTH):
        raise InvalidMessage(TOO_DEEP)
    try:
        return json.loads(
            message, parse_constant=_not_json, parse_float=_finite, parse_int=_integer
        )
    except UnicodeDecodeError:
        raise InvalidMessage("invalid JSON: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:  # a parser that recurses less deeply than the bound allows
        raise InvalidMessage(TOO_DEEP) from None
    except ValueError as exc:
        raise InvalidMessage(f"invalid JSON: {exc}") from None


def attach(request: HttpRequest) -> None:
    """Give ``request`` django-websocket's ``is_websocket()`` and ``websocket`` (``None`` for
    plain HTTP), from ``request.wscontext``; and, for WebSocket requests, django-pistoke's
    ``await request.receive()`` and ``await request.send()``."""
    ctx: WebSocketContext | None = getattr(request, "wscontext", None)
    request.websocket = websocket = WebSocket(ctx) if ctx is not None else None
    request.is_websocket = lambda: ctx is not None
    if websocket is not None:
        # django-pistoke's ``async def websocket(self, request)`` reads and writes with these.
        request.receive = websocket.receive
        request.send = websocket.send_async


def hide(request: HttpRequest) -> None:
    """Take django-websocket's API off a WebSocket request whose view takes no WebSockets:
    with its middleware such a view never saw one (django-websocket's README: it "will still
    reject websockets for normal views"), so its ``if request.is_websocket()`` branch must
    not run. ``request.wscontext`` (django-grip's API) stays."""
    request.websocket = None
    request.is_websocket = lambda: False
    for name in ("receive", "send"):
        request.__dict__.pop(name, None)
