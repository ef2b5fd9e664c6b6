"""GRIP instructions: what an origin asks the proxy to do with one response, and their
``Grip-*`` headers both ways.

The origin builds an :class:`Instruct` (django-grip's API: ``add_channels``,
``set_hold_longpoll``, ...) and renders it with :meth:`Instruct.headers`; the embedded proxy
reads a response's headers back into the same model with :func:`parse_instruct`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from .constants import MAX_CHANNELS, MIN_HOLD_TIMEOUT
from .headers import (
    TOKEN,
    RawHeaders,
    get_all_headers,
    get_header,
    parse_header_list,
    parse_header_value,
    quote_param,
)

__all__ = [
    "Channel",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_LINK_TIMEOUT",
    "Instruct",
    "InstructError",
    "KeepAlive",
    "NextLink",
    "decode_cstring",
    "encode_keep_alive",
    "parse_channels",
    "parse_instruct",
]

logger = logging.getLogger("drf_grip")

#: What the proxy assumes when a header leaves out a timeout (the embedded proxy's values).
DEFAULT_KEEP_ALIVE_TIMEOUT: Final = 55.0
DEFAULT_LINK_TIMEOUT: Final = 120.0
#: What an origin asks for when it sets a keep-alive without a timeout (django-grip's callers
#: always named one; ``set_hold_stream`` documents 20).
DEFAULT_KEEP_ALIVE_INTERVAL: Final = 20

HoldMode = Literal["response", "stream"]
KeepAliveMode = Literal["idle", "interval"]

# What a cstring keep-alive may hold: token characters, and CR/LF written as \r / \n.
_CSTRING: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:/@=\r\n]+")
# Pushpin's timeouts are C ints of ASCII digits (handler/instruct.cpp).
_DIGITS: Final = re.compile(r"[0-9]+")
_INT_MAX: Final = 2**31 - 1
_CSTRING_ESCAPES: Final = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", '"': '"', "0": "\0"}


class InstructError(ValueError):
    """``Grip-*`` headers the proxy cannot follow (the client gets a 502)."""


@dataclass(frozen=True)
class Channel:
    """A channel to subscribe to, optionally with the id of the last item the client has,
    and the proxy's message filters for it (``filters.py``: ``skip-self``, ...)."""

    name: str
    prev_id: str | None = None
    filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeepAlive:
    """Bytes the proxy sends on a held stream after ``timeout`` idle seconds (``idle``) or
    every ``timeout`` seconds (``interval``)."""

    data: bytes
    timeout: float
    mode: KeepAliveMode = "idle"


@dataclass(frozen=True)
class NextLink:
    """The URL the proxy fetches when a stream's response ends. ``timeout`` is ``None`` only
    on an instruct being built (the header then names none); :func:`parse_instruct` fills in
    ``DEFAULT_LINK_TIMEOUT``."""

    uri: str
    timeout: float | None = None


def parse_channels(channels: Any) -> list[Channel]:
    """Accept what django-grip accepted: a name, a Channel (ours or gripcontrol's), or a list."""
    if isinstance(channels, (str, Channel)) or hasattr(channels, "prev_id"):
        channels = [channels]
    out = []
    for ch in channels:
        if isinstance(ch, Channel):
            out.append(ch)
        elif isinstance(ch, str):
            out.append(Channel(ch))
        elif hasattr(ch, "name"):  # gripcontrol.Channel
            out.append(Channel(ch.name, getattr(ch, "prev_id", None)))
        else:
            raise TypeError(f"not a channel: {ch!r}")
    if not out:
        raise ValueError("at least one channel is needed")
    return out


def _number(value: float) -> str:
    """Seconds as a header writes them: ``20``, not ``20.0``."""
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Instruct:
    """What the proxy should do with one response: hold, channels, keep-alive, next link.

    ``prefix`` (``GRIP_PREFIX``) is put before each channel name when rendered; a parsed
    instruct has the names as they were on the wire and no prefix.
    """

    prefix: str = ""
    hold: HoldMode | None = None
    channels: list[Channel] = field(default_factory=list)
    timeout: float | None = None
    #: The status the proxy answers the client with, and its reason (``Grip-Status``): on
    #: a hold's answer, and on an answer that does not hold (Pushpin 1.36 applies it to
    #: every answer with a ``Grip-*`` header, handler/instruct.cpp ``newResponse``).
    status: tuple[int, str | None] | None = None
    keep_alive: KeepAlive | None = None
    next_link: NextLink | None = None
    meta: dict[str, str] = field(default_factory=dict)

    # -- django-grip's Instruct API ------------------------------------------------------

    def add_channel(self, channel: Any, prev_id: str | None = None) -> None:
        for ch in parse_channels(channel):
            if prev_id is not None:
                ch = replace(ch, prev_id=prev_id)
            self._add(ch)

    def add_channels(self, channels: Any) -> None:
        for ch in parse_channels(channels):
            self._add(ch)

    def _add(self, channel: Channel) -> None:
        self.channels = [c for c in self.channels if c.name != channel.name]
        if len(self.channels) >= MAX_CHANNELS:
            raise ValueError(f"a GRIP hold takes at most {MAX_CHANNELS} channels")
        self.channels.append(channel)

    # As in django-grip, a timeout of 0 (or None) is none given: the proxy's default.

    def set_hold_longpoll(self, timeout: int | None = None) -> None:
        self.hold = "response"
        self.timeout = max(int(timeout), MIN_HOLD_TIMEOUT) if timeout else None

    def set_hold_stream(self) -> None:
        self.hold = "stream"
        self.timeout = None

    def set_keep_alive(
        self, data: str | bytes, timeout: int | None = None, mode: str = "idle"
    ) -> None:
        if mode not in ("idle", "interval"):
            raise ValueError("keep-alive mode is 'idle' or 'interval'")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        seconds = _whole_seconds(timeout, "keep-alive") or DEFAULT_KEEP_ALIVE_INTERVAL
        self.keep_alive = KeepAlive(raw, seconds, mode)  # type: ignore[arg-type]

    def set_next_link(self, uri: str, timeout: int | None = None) -> None:
        self.next_link = NextLink(uri, _whole_seconds(timeout, "next link") or None)

    # -- what it amounts to ----------------------------------------------------------------

    def client_status(self, status: int) -> int:
        """The status the client gets for an origin's answer of ``status``."""
        return self.status[0] if self.status else status

    @property
    def holds(self) -> bool:
        return self.hold is not None

    @property
    def is_grip(self) -> bool:
        """True when the response needs the proxy at all (a hold or a next link to follow)."""
        return self.hold is not None or self.next_link is not None

    def is_empty(self) -> bool:
        return not (self.hold or self.channels or self.next_link or self.meta)

    # -- rendering -------------------------------------------------------------------------

    def headers(self, status: int = 200, reason: str = "") -> dict[str, str]:
        """The ``Grip-*`` headers for a response with this status (``self.status``, when
        set, wins)."""
        if self.status is not None:
            status, reason = self.status[0], self.status[1] or ""
        out: dict[str, str] = {}
        if self.hold:
            out["Grip-Hold"] = self.hold
        if self.channels:
            parts = []
            for ch in self.channels:
                part = self.prefix + ch.name
                if ch.prev_id is not None:
                    prev_id = quote_param(str(ch.prev_id))
                    if prev_id is not None:
                        part += "; prev-id=" + prev_id
                    else:
                        # Without a prev-id the proxy may re-request once; never a lost update.
                        logger.warning(
                            "prev-id of channel %s cannot be sent in a header; "
                            "subscribing without it",
                            ch.name,
                        )
                for name in ch.filters:
                    if TOKEN.fullmatch(name):
                        part += "; filter=" + name
                    else:
                        logger.warning("filter %r cannot be sent in a header; left out", name)
                parts.append(part)
            out["Grip-Channel"] = ", ".join(parts)
        if self.hold == "response" and self.timeout is not None:
            out["Grip-Timeout"] = _number(self.timeout)
        if self.keep_alive is not None:
            value, fmt = encode_keep_alive(self.keep_alive.data)
            keep_alive = f"{value}; format={fmt}; timeout={_number(self.keep_alive.timeout)}"
            if self.keep_alive.mode != "idle":  # Pushpin's default mode
                keep_alive += f"; mode={self.keep_alive.mode}"
            out["Grip-Keep-Alive"] = keep_alive
        if self.next_link is not None:
            link = f"<{self.next_link.uri}>; rel=next"
            if self.next_link.timeout is not None:
                link += f"; timeout={int(self.next_link.timeout)}"
            out["Grip-Link"] = link
        if self.meta:
            meta = []
            for name, value in self.meta.items():
                quoted = quote_param(str(value), always=True)  # always quoted, as django-grip did
                if not TOKEN.fullmatch(str(name)) or "=" in str(name) or quoted is None:
                    logger.warning("meta %r cannot be sent in a header; left out", str(name))
                    continue
                meta.append(f"{name}={quoted}")
            if meta:
                out["Grip-Set-Meta"] = ", ".join(meta)
        if self.hold and status != 200:
            # Pushpin relays the held (and timeout) response with this status.
            out["Grip-Status"] = f"{status} {reason}".strip()
        return out


# -- keep-alive data -----------------------------------------------------------------------


def encode_keep_alive(data: str | bytes) -> tuple[str, str]:
    """Choose the ``Grip-Keep-Alive`` encoding that carries ``data`` byte for byte.

    Returns ``(value, format)``. A token goes raw; a token with CR/LF (``"keepalive\\n"``, as
    django-grip's own test sends) goes cstring with ``\\r``/``\\n``; anything else (quotes,
    backslashes, spaces, bytes past ASCII) goes base64, which Pushpin decodes exactly
    (django-grip's cstring escaping tripled backslashes).
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    text = raw.decode("latin-1")
    if TOKEN.fullmatch(text):
        return text, "raw"
    if _CSTRING.fullmatch(text):
        return text.replace("\r", "\\r").replace("\n", "\\n"), "cstring"
    return base64.b64encode(raw).decode("ascii"), "base64"


def decode_cstring(text: str) -> bytes:
    """GRIP's ``format=cstring``: backslash escapes ``\\\\ \\r \\n \\t`` (and ``\\"``)."""
    out: list[str] = []
    it = iter(text)
    for ch in it:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(it, None)
        if nxt is None:
            raise InstructError("cstring ends with a backslash")
        if nxt not in _CSTRING_ESCAPES:
            raise InstructError(f"unknown cstring escape \\{nxt}")
        out.append(_CSTRING_ESCAPES[nxt])
    return "".join(out).encode("utf-8")


def _whole_seconds(timeout: float | None, what: str) -> int | None:
    """A timeout for a header; 0 and None are none given, as in django-grip. A negative one
    is refused here rather than sent: the embedded proxy answers it with an error, and
    what Pushpin makes of it is not documented."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"a {what} timeout must not be negative, not {timeout!r}")
    return int(timeout) if timeout else None


# -- parsing -------------------------------------------------------------------------------


def whole_number(text: str) -> int | None:
    """``text`` read as Pushpin 1.36 reads a number (Qt's ``QByteArray::toInt``): spaces
    around, a sign at most and digits that fit a C int; anything else (``5.5``, ``abc``)
    is None."""
    text = text.strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not _DIGITS.fullmatch(digits) or len(digits) > 10 or int(digits) > _INT_MAX:
        return None
    return -int(digits) if text.startswith("-") else int(digits)


def _seconds(text: str, what: str) -> float:
    """Whole seconds, read as Pushpin 1.36 reads them (handler/instruct.cpp, fromResponse:
    ``QByteArray::toInt``). ``5.5`` is no timeout: Pushpin answers the client 502, and so
    does the embedded proxy (it held)."""
    seconds = whole_number(text)
    if seconds is None:
        raise InstructError(
            f"failed to parse {what}: {text.strip()!r} is not a whole number of seconds"
        )
    if seconds < 0:
        raise InstructError(f"{what} has invalid value {text.strip()!r}")
    return float(seconds)


def _keep_alive(text: str) -> KeepAlive:
    data, params = parse_header_value(text)
    fmt = params.get("format", "raw")
    if fmt == "raw":
        raw = data.encode("utf-8")
    elif fmt == "cstring":
        raw = decode_cstring(data)
    elif fmt == "base64":
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InstructError("Grip-Keep-Alive data is not valid base64") from None
    else:
        raise InstructError(f"unknown Grip-Keep-Alive format {fmt!r}")
    mode = params.get("mode", "idle")
    if mode not in ("idle", "interval"):
        raise InstructError(f"unknown Grip-Keep-Alive mode {mode!r}")
    timeout = DEFAULT_KEEP_ALIVE_TIMEOUT
    if "timeout" in params:
        # 0 is 1 s for Pushpin 1.36 (handler/instruct.cpp, end of fromResponse).
        timeout = max(_seconds(params["timeout"], "Grip-Keep-Alive timeout value"), 1.0)
    return KeepAlive(data=raw, timeout=timeout, mode=mode)  # type: ignore[arg-type]


def parse_instruct(headers: RawHeaders) -> Instruct:
    """Read the GRIP instructions of a response; raises :class:`InstructError` when malformed."""
    out = Instruct()
    hold = get_header(headers, "Grip-Hold")
    channels = parse_header_list(get_all_headers(headers, "Grip-Channel"))
    # Channels without Grip-Hold are no hold: Pushpin 1.36 relays such an answer at once
    # (run against it; a GET answered with Grip-Channel and Grip-Timeout only).
    if hold is not None:
        hold = hold.strip().lower()
        if hold not in ("response", "stream"):
            raise InstructError(f"unknown Grip-Hold {hold!r}")
        out.hold = hold  # type: ignore[assignment]
    for name, params in channels:
        if not name:
            raise InstructError("empty channel name in Grip-Channel")
        if any(c.name == name for c in out.channels):
            continue
        filters = (params["filter"],) if params.get("filter") else ()
        out.channels.append(Channel(name, params.get("prev-id"), filters))
    if out.hold is not None and not out.channels:
        raise InstructError("Grip-Hold without Grip-Channel")

    timeout = get_header(headers, "Grip-Timeout")
    if timeout is not None:
        out.timeout = _seconds(timeout.strip(), "Grip-Timeout")

    status = get_header(headers, "Grip-Status")
    if status is not None:
        text, _, reason = status.strip().partition(" ")
        code = whole_number(text)
        # Pushpin 1.36 takes 0-999 (handler/instruct.cpp).
        if code is None or not 0 <= code <= 999:
            raise InstructError(f"Grip-Status contains invalid status code: {status!r}")
        out.status = (code, reason.strip() or None)

    keep_alive = get_header(headers, "Grip-Keep-Alive")
    if keep_alive is not None:
        out.keep_alive = _keep_alive(keep_alive)

    for uri, params in parse_header_list(get_all_headers(headers, "Grip-Link")):
        if params.get("rel") != "next":
            continue
        if not (uri.startswith("<") and uri.endswith(">")):
            raise InstructError(f"bad Grip-Link {uri!r}")
        link_timeout = DEFAULT_LINK_TIMEOUT
        if "timeout" in params:
            link_timeout = _seconds(params["timeout"], "Grip-Link timeout value")
        out.next_link = NextLink(uri[1:-1].strip(), link_timeout)

    for name, _params in parse_header_list(get_all_headers(headers, "Grip-Set-Meta")):
        key, eq, value = name.partition("=")
        if key.strip():
            out.meta[key.strip()] = value.strip().strip('"') if eq else ""
    return out

