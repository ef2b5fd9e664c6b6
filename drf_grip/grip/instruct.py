"""GRIP instructions for one response, rendered as ``Grip-*`` response headers."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Channel", "Instruct", "ChannelsArg", "parse_channels", "encode_keep_alive"]

# Pushpin: Grip-Timeout below 5 is raised to 5; a connection takes at most 20 channels.
MIN_TIMEOUT = 5
MAX_CHANNELS = 20

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z:/@=]+$")


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


def _quote(value: str) -> str:
    if _TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_keep_alive(data: str | bytes) -> tuple[str, str]:
    """Choose the ``Grip-Keep-Alive`` encoding that carries ``data`` byte for byte.

    Returns ``(value, format)``. Plain tokens go raw; anything else goes base64, which
    Pushpin decodes exactly (django-grip's cstring escaping tripled backslashes).
    """
    raw = data.encode() if isinstance(data, str) else data
    text = raw.decode("ascii", "replace")
    if raw and _TOKEN.match(text) and text.encode() == raw:
        return text, "raw"
    return base64.b64encode(raw).decode(), "base64"


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
                    part += "; prev-id=" + _quote(str(ch.prev_id))
                parts.append(part)
            out["Grip-Channel"] = ", ".join(parts)
        if self.hold == "response" and self.timeout is not None:
            out["Grip-Timeout"] = str(self.timeout)
        if self.keep_alive is not None:
            raw, timeout, mode = self.keep_alive
            value, fmt = encode_keep_alive(raw)
            out["Grip-Keep-Alive"] = f"{value}; format={fmt}; timeout={timeout}; mode={mode}"
        if self.next_link is not None:
            uri, timeout = self.next_link
            link = f"<{uri}>; rel=next"
            if timeout is not None:
                link += f"; timeout={int(timeout)}"
            out["Grip-Link"] = link
        if self.meta:
            out["Grip-Set-Meta"] = ", ".join(f"{k}={_quote(str(v))}" for k, v in self.meta.items())
        if self.hold and status != 200:
            # Pushpin relays the held (and timeout) response with this status.
            out["Grip-Status"] = f"{status} {reason}".strip()
        return out
