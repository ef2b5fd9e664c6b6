"""GRIP instructions for one response, rendered as ``Grip-*`` response headers."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Channel", "Instruct", "ChannelsArg", "parse_channels", "encode_keep_alive"]

logger = logging.getLogger("drf_grip")

# Pushpin: Grip-Timeout below 5 is raised to 5; a connection takes at most 20 channels.
MIN_TIMEOUT = 5
MAX_CHANNELS = 20

# Characters that stand in a header parameter without quotes. Matched with fullmatch:
# "^...$" would let a value ending in "\n" through, and a raw newline in a header is a 500.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:/@=]+")
# What a cstring keep-alive may hold: token characters, and CR/LF written as \r / \n.
_CSTRING = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:/@=\r\n]+")


@dataclass(frozen=True)
class Channel:
    """A channel to subscribe to, optionally with the id of the last item the client has."""

    name: str
    prev_id: str | None = None


ChannelsArg = "str | Channel | Iterable[str | Channel]"


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


def _quote(value: str, always: bool = False) -> str | None:
    """A header parameter value: a token as is, anything else quoted (RFC 9110 §5.6.4).

    ``None`` for a value no header can carry (a control character such as a final newline,
    or a character outside Latin-1): putting it in a header would fail as a 500.
    """
    if not always and _TOKEN.fullmatch(value):
        return value
    if any(ord(c) < 0x20 or c == "\x7f" or ord(c) > 0xFF for c in value):
        return None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_keep_alive(data: str | bytes) -> tuple[str, str]:
    """Choose the ``Grip-Keep-Alive`` encoding that carries ``data`` byte for byte.

    Returns ``(value, format)``. A token goes raw; a token with CR/LF (``"keepalive\\n"``, as
    django-grip's own test sends) goes cstring with ``\\r``/``\\n``; anything else (quotes,
    backslashes, spaces, bytes past ASCII) goes base64, which Pushpin decodes exactly
    (django-grip's cstring escaping tripled backslashes).
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    text = raw.decode("latin-1")
    if _TOKEN.fullmatch(text):
        return text, "raw"
    if _CSTRING.fullmatch(text):
        return text.replace("\r", "\\r").replace("\n", "\\n"), "cstring"
    return base64.b64encode(raw).decode("ascii"), "base64"


class Instruct:
    """What the proxy should do with this response: hold, channels, keep-alive, next link."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.hold: str | None = None
        self.channels: list[Channel] = []
        self.timeout: int | None = None
        self.keep_alive: tuple[bytes, int, str] | None = None
        self.next_link: tuple[str, int | None] | None = None
        self.meta: dict[str, str] = {}
        self.status: int | None = None

    # django-grip's Instruct API ----------------------------------------------------------

    def add_channel(self, channel: Any, prev_id: str | None = None) -> None:
        for ch in parse_channels(channel):
            if prev_id is not None:
                ch = Channel(ch.name, prev_id)
            self._add(ch)

    def add_channels(self, channels: Any) -> None:
        for ch in parse_channels(channels):
            self._add(ch)

    def _add(self, channel: Channel) -> None:
        self.channels = [c for c in self.channels if c.name != channel.name]
        if len(self.channels) >= MAX_CHANNELS:
            raise ValueError(f"a GRIP hold takes at most {MAX_CHANNELS} channels")
        self.channels.append(channel)

    def set_hold_longpoll(self, timeout: int | None = None) -> None:
        self.hold = "response"
        self.timeout = None if timeout is None else max(int(timeout), MIN_TIMEOUT)

    def set_hold_stream(self) -> None:
        self.hold = "stream"
        self.timeout = None

    def set_keep_alive(self, data: str | bytes, timeout: int, mode: str = "idle") -> None:
        if mode not in ("idle", "interval"):
            raise ValueError("keep-alive mode is 'idle' or 'interval'")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.keep_alive = (raw, int(timeout), mode)

    def set_next_link(self, uri: str, timeout: int | None = None) -> None:
        self.next_link = (uri, timeout)

    # rendering ---------------------------------------------------------------------------

    @property
    def holds(self) -> bool:
        return self.hold is not None

    def is_empty(self) -> bool:
        return not (self.hold or self.channels or self.next_link or self.meta)

    def headers(self, status: int = 200, reason: str = "") -> dict[str, str]:
        """The ``Grip-*`` headers for a response with this status."""
        out: dict[str, str] = {}
        if self.hold:
            out["Grip-Hold"] = self.hold
        if self.channels:
            parts = []
            for ch in self.channels:
                part = self.prefix + ch.name
                if ch.prev_id is not None:
                    prev_id = _quote(str(ch.prev_id))
                    if prev_id is not None:
                        part += "; prev-id=" + prev_id
                    else:
                        # Without a prev-id the proxy may re-request once; never a lost update.
                        logger.warning("prev-id of channel %s cannot be sent in a header; "
                                       "subscribing without it", ch.name)
                parts.append(part)
            out["Grip-Channel"] = ", ".join(parts)
        if self.hold == "response" and self.timeout is not None:
            out["Grip-Timeout"] = str(self.timeout)
        if self.keep_alive is not None:
            raw, timeout, mode = self.keep_alive
            value, fmt = encode_keep_alive(raw)
            keep_alive = f"{value}; format={fmt}; timeout={timeout}"
            if mode != "idle":  # Pushpin's default mode
                keep_alive += f"; mode={mode}"
            out["Grip-Keep-Alive"] = keep_alive
        if self.next_link is not None:
            uri, timeout = self.next_link
            link = f"<{uri}>; rel=next"
            if timeout is not None:
                link += f"; timeout={int(timeout)}"
            out["Grip-Link"] = link
        if self.meta:
            meta = []
            for name, value in self.meta.items():
                quoted = _quote(str(value), always=True)  # always quoted, as django-grip did
                if not _TOKEN.fullmatch(str(name)) or "=" in str(name) or quoted is None:
                    logger.warning("meta %r cannot be sent in a header; left out", str(name))
                    continue
                meta.append(f"{name}={quoted}")
            if meta:
                out["Grip-Set-Meta"] = ", ".join(meta)
        if self.hold and status != 200:
            # Pushpin relays the held (and timeout) response with this status.
            out["Grip-Status"] = f"{status} {reason}".strip()
        return out
