"""Published items in Pushpin's ``/publish`` JSON form: built once by the publisher, checked
once by the embedded proxy on the way in.

An item is ``{"channel": PREFIXED, "id": ..., "prev-id": ..., "formats": {...}}`` with the
formats ``http-response``, ``http-stream`` and ``ws-message`` (pushpin.org/docs/
publishing). :func:`build_item` makes one (a :data:`RawItem`, ready for JSON);
:func:`parse_items` checks raw items the way Pushpin does and reads them into :class:`Item`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .constants import SENDABLE_CLOSE_CODES

__all__ = [
    "InvalidItem",
    "Item",
    "MessageFormat",
    "RawItem",
    "ResponseFormat",
    "StreamFormat",
    "build_item",
    "json_safe",
    "parse_items",
]

#: An item in Pushpin's ``/publish`` JSON form, as the publisher sends it.
RawItem = dict[str, Any]


def build_item(
    channel: str,
    formats: Mapping[str, Mapping[str, Any]],
    id: str | None = None,
    prev_id: str | None = None,
    *,
    meta: Mapping[str, str] | None = None,
) -> RawItem:
    """An item for ``channel`` (already prefixed) from ``{format name: fields}``."""
    if not formats:
        raise ValueError("an item needs at least one format")
    item: RawItem = {
        "channel": channel,
        "formats": {str(name): json_safe(dict(fields)) for name, fields in formats.items()},
    }
    # Pushpin compares ids as strings; an int version must not become a JSON number. An empty
    # id is no id (gripcontrol leaves it out; Pushpin 1.36 delivers a repeated one).
    if id is not None and str(id):
        item["id"] = str(id)
    if prev_id is not None and str(prev_id):
        item["prev-id"] = str(prev_id)
    if meta:
        item["meta"] = {str(k): str(v) for k, v in meta.items()}
    return item


def json_safe(value: Any, key: str = "") -> Any:
    """Make a format's fields JSON-ready: ``content``/``body`` bytes become text, or base64
    under ``*-bin`` when not UTF-8; gripcontrol's ``*-bin`` values are already base64 bytes."""
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
                out[k] = json_safe(v, k)
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(v, key) for v in value]
    if isinstance(value, (bytes, bytearray)):
        if key.endswith("-bin"):
            return bytes(value).decode("ascii")  # already base64, as gripcontrol exports it
        return bytes(value).decode("latin-1")  # header values are bytes-as-latin-1 in HTTP
    return value


# -- validation ------------------------------------------------------------------------------

Action = Literal["send", "hint", "close"]

class InvalidItem(ValueError):
    """An item Pushpin would refuse (``400 Invalid format: ...``)."""


@dataclass(frozen=True)
class ResponseFormat:
    """``http-response``: what a held long-poll is answered with."""

    action: Action = "send"
    code: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: A JSON Patch for the held response's body, when the item has no body (the proxy
    #: applies it: ``drf_grip.proxy.jsonpatch``).
    body_patch: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class StreamFormat:
    """``http-stream``: bytes appended to held streams."""

    action: Action = "send"
    content: bytes = b""


@dataclass(frozen=True)
class MessageFormat:
    """``ws-message``: a message (or a close) for subscribed WebSockets."""

    action: Action = "send"
    content: bytes = b""
    binary: bool = False
    code: int | None = None
    #: A close's reason (gripcontrol publishes one; Pushpin 1.36 sends it to the client).
    reason: str = ""
    #: A sent message's ``type``: text, binary, ping or pong.
    kind: str = "text"


@dataclass(frozen=True)
class Item:
    channel: str
    id: str | None = None
    prev_id: str | None = None
    response: ResponseFormat | None = None
    stream: StreamFormat | None = None
    message: MessageFormat | None = None
    size: int = field(default=0, compare=False)
    #: The item's ``meta``, which subscription filters read (``filters.py``).
    meta: Mapping[str, str] = field(default_factory=dict, compare=False)


# RFC 9110 §5.6.2: a header name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters a header value, reason, id or channel may not hold (HTAB aside).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidItem(f"{what} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidItem(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def _latin1(value: Any, what: str) -> str:
    """A string that can travel in an HTTP header: Latin-1, no control characters."""
    value = _text(value, what)
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidItem(f"{what} is not latin-1") from None
    if _CONTROL.search(value):
        raise InvalidItem(f"{what} contains a control character")
    return value


def _content(fmt: Mapping[str, Any], text_key: str, bin_key: str, what: str) -> tuple[bytes, bool]:
    if bin_key in fmt:
        try:
            return base64.b64decode(_text(fmt[bin_key], f"{what}.{bin_key}"), validate=True), True
        except (binascii.Error, ValueError):
            raise InvalidItem(f"{what}.{bin_key} is not valid base64") from None
    if text_key in fmt:
        return _text(fmt[text_key], f"{what}.{text_key}").encode("utf-8"), False
    return b"", False


def _action(fmt: Mapping[str, Any], what: str) -> Action:
    action = fmt.get("action", "send")
    if action not in ("send", "hint", "close"):
        raise InvalidItem(f"{what}.action must be send, hint or close")
    return action


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidItem(f"{what} must be an object")
    return value


def _response(fmt: Mapping[str, Any]) -> ResponseFormat:
    code = fmt.get("code", 200)
    # 1xx are not final responses: a 100 or 101 sent to a held client breaks its connection.
    if not isinstance(code, int) or isinstance(code, bool) or not 200 <= code <= 599:
        raise InvalidItem("http-response.code must be an HTTP status code from 200 to 599")
    reason = fmt.get("reason")
    if reason is not None:
        _latin1(reason, "http-response.reason")
    raw_headers = fmt.get("headers", {})
    headers: list[tuple[str, str]] = []
    if isinstance(raw_headers, Mapping):
        pairs = list(raw_headers.items())
    elif isinstance(raw_headers, list):
        pairs = []
        for pair in raw_headers:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InvalidItem("http-response.headers must be an object or [name, value] pairs")
            pairs.append((pair[0], pair[1]))
    else:
        raise InvalidItem("http-response.headers must be an object or [name, value] pairs")
    for name, value in pairs:
        name = _text(name, "http-response header name")
        if not _TOKEN.fullmatch(name):
            raise InvalidItem(f"http-response header name {name!r} is not a valid header name")
        value = _latin1(value, f"http-response header {name}")
        headers.append((name, value))
    action = _action(fmt, "http-response")
    # Pushpin 1.36 (handler/publishformat.cpp): body-bin, else body, else body-patch.
    has_body = "body" in fmt or "body-bin" in fmt
    if action == "send" and not has_body and "body-patch" not in fmt:
        # Pushpin 1.36 refuses such an item: a publisher that worked here lost its updates
        # behind it (an embedded-versus-Pushpin probe).
        raise InvalidItem("'http-response' does not contain 'body', 'body-bin', or 'body-patch'")
    body, _ = _content(fmt, "body", "body-bin", "http-response")
    body_patch = None
    if action == "send" and not has_body:
        body_patch = _body_patch(fmt["body-patch"])
    return ResponseFormat(action, code, reason, tuple(headers), body, body_patch)


def _body_patch(ops: Any) -> tuple[Any, ...]:
    """A list, as Pushpin 1.36 asks of it at publish time (handler/publishformat.cpp); its
    ops are read when applied, and a bad one fails that delivery (a 502), not the publish."""
    if not isinstance(ops, list):
        raise InvalidItem("'http-response' contains 'body-patch' with wrong type")
    return tuple(ops)


def _stream(fmt: Mapping[str, Any]) -> StreamFormat:
    action = _action(fmt, "http-stream")
    if action == "send" and "content" not in fmt and "content-bin" not in fmt:
        raise InvalidItem("'http-stream' does not contain 'content' or 'content-bin'")
    content, _ = _content(fmt, "content", "content-bin", "http-stream")
    return StreamFormat(action, content)


def _message(fmt: Mapping[str, Any]) -> MessageFormat:
    action = _action(fmt, "ws-message")
    kind = _message_type(fmt) if action == "send" else None
    # Pushpin 1.36 (handler/publishformat.cpp): content is required of a text or binary
    # message (or one with no type); a ping or pong may go without.
    if action == "send" and kind in (None, "text", "binary"):
        if "content" not in fmt and "content-bin" not in fmt:
            raise InvalidItem("'ws-message' does not contain 'content' or 'content-bin'")
    content, binary = _content(fmt, "content", "content-bin", "ws-message")
    if kind is not None:
        binary = kind == "binary"
    code = fmt.get("code")
    if code is not None and (
        not isinstance(code, int) or isinstance(code, bool) or code not in SENDABLE_CLOSE_CODES
    ):
        raise InvalidItem("ws-message.code must be a close code an endpoint may send")
    reason = fmt.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidItem("ws-message.reason must be a string")
    kind = kind or ("binary" if binary else "text")
    return MessageFormat(action, content, binary, code, reason, kind)


def _message_type(fmt: Mapping[str, Any]) -> str | None:
    """A sent ``ws-message``'s ``type``. Pushpin 1.36 (handler/publishformat.cpp) reads it
    only for ``action: send`` and knows text, binary, ping and pong: ``type: close`` is
    refused (a close is ``action: close``), and with it the whole publish (handler/engine.cpp,
    parseItems: nothing of the batch is published)."""
    kind = fmt.get("type")
    if kind is None:
        return None
    if not isinstance(kind, str):
        raise InvalidItem("'ws-message' contains 'type' with wrong type")
    if kind not in ("text", "binary", "ping", "pong"):
        raise InvalidItem(
            f"'ws-message' contains 'type' with unknown value {kind!r} (text, binary, ping or "
            "pong; a close is 'action': 'close')"
        )
    return kind


def parse_items(items: Any, *, max_size: int | None = None) -> list[Item]:
    """Check a list of raw items; raise :class:`InvalidItem` for the first bad one."""
    if not isinstance(items, list):
        raise InvalidItem("items must be a list")
    out = []
    for n, raw in enumerate(items):
        try:
            out.append(_parse_item(raw, max_size))
        except InvalidItem as exc:
            raise InvalidItem(f"item {n}: {exc}") from None
    return out


def _parse_item(raw: Any, max_size: int | None) -> Item:
    raw = _mapping(raw, "item")
    channel = raw.get("channel")
    if not isinstance(channel, str) or not channel:
        raise InvalidItem("channel must be a non-empty string")
    # Channels and ids go back to the origin in Grip-Last headers: a value no header can
    # carry would make every later re-request of that channel fail.
    _latin1(channel, "channel")
    # An empty id is none, as for Pushpin 1.36, which delivers an item repeating one.
    item_id = raw.get("id") if raw.get("id") != "" else None
    # An empty prev-id is one, not none: Pushpin 1.36 reads it as a string (handler/
    # publishitem.cpp) and its sequencer tells only an absent (null) prev-id from a present
    # one (handler/sequencer.cpp, addItem): "" follows no channel whose last id is another
    # (ids a, a, b, a published with prev-id "" delivered only the first; measured).
    prev_id = raw.get("prev-id")
    if item_id is not None:
        _latin1(item_id, "id")
    if prev_id is not None:
        _latin1(prev_id, "prev-id")
    formats = _mapping(raw.get("formats"), "formats")
    if not formats:
        raise InvalidItem("formats must name at least one format")
    # Formats for other transports (Fanout's ``fcm``, ``apns``) are skipped, as Pushpin 1.36
    # skips them: the whole item was refused, and its HTTP formats with it.
    response = stream = message = None
    if "http-response" in formats:
        response = _response(_mapping(formats["http-response"], "http-response"))
    if "http-stream" in formats:
        stream = _stream(_mapping(formats["http-stream"], "http-stream"))
    if "ws-message" in formats:
        message = _message(_mapping(formats["ws-message"], "ws-message"))
    size = max(
        len(response.body) if response else 0,
        len(stream.content) if stream else 0,
        len(message.content) if message else 0,
    )
    if max_size is not None and size > max_size:
        raise InvalidItem(f"content of {size} bytes exceeds the limit of {max_size}")
    meta = _meta(raw.get("meta"))
    return Item(channel, item_id, prev_id, response, stream, message, size, meta)


def _meta(raw: Any) -> dict[str, str]:
    """An item's ``meta``: an object of strings (Pushpin's publish format), or absent."""
    if raw is None:
        return {}
    meta = _mapping(raw, "meta")
    return {_text(k, "meta name"): _text(v, f"meta {k!r}") for k, v in meta.items()}
