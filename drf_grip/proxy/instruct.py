"""What the origin asks the proxy to do, read from the ``Grip-*`` headers of its response."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Literal

from .headers import RawHeaders, get_all_headers, get_header, parse_header_list, parse_header_value

__all__ = [
    "ChannelSpec",
    "HoldInstruct",
    "InstructError",
    "KeepAlive",
    "NextLink",
    "MAX_CHANNELS",
    "parse_instruct",
    "decode_cstring",
]

# Pushpin keeps at most 20 channels per connection (Pushpin 1.36).
MAX_CHANNELS = 20
DEFAULT_TIMEOUT = 55.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 55.0
DEFAULT_LINK_TIMEOUT = 120.0

HoldMode = Literal["response", "stream"]


class InstructError(ValueError):
    """The origin sent GRIP headers the proxy cannot follow (the client gets a 502)."""


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    prev_id: str | None = None


@dataclass(frozen=True)
class KeepAlive:
    data: bytes
    timeout: float
    mode: Literal["idle", "interval"] = "idle"


@dataclass(frozen=True)
class NextLink:
    uri: str
    timeout: float = DEFAULT_LINK_TIMEOUT


@dataclass
class HoldInstruct:
    hold: HoldMode | None = None
    channels: list[ChannelSpec] = field(default_factory=list)
    timeout: float | None = None
    status: tuple[int, str | None] | None = None
    keep_alive: KeepAlive | None = None
    next_link: NextLink | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def is_grip(self) -> bool:
        """True when the response needs the proxy at all (a hold or a next link to follow)."""
        return self.hold is not None or self.next_link is not None


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
        table = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", '"': '"', "0": "\0"}
        if nxt not in table:
            raise InstructError(f"unknown cstring escape \\{nxt}")
        out.append(table[nxt])
    return "".join(out).encode("utf-8")


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InstructError(f"{what} is not a number: {text!r}") from None
    if value < 0 or value != value:
        raise InstructError(f"{what} must not be negative")
    return value


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
    timeout = _seconds(params.get("timeout", str(DEFAULT_KEEP_ALIVE_TIMEOUT)), "keep-alive timeout")
    if timeout <= 0:
        raise InstructError("keep-alive timeout must be positive")
    return KeepAlive(data=raw, timeout=timeout, mode=mode)  # type: ignore[arg-type]


def parse_instruct(headers: RawHeaders) -> HoldInstruct:
    """Read the GRIP instructions of a response; raises :class:`InstructError` when malformed."""
    out = HoldInstruct()
    hold = get_header(headers, "Grip-Hold")
    channels = parse_header_list(get_all_headers(headers, "Grip-Channel"))
    if hold is not None:
        hold = hold.strip().lower()
        if hold not in ("response", "stream"):
            raise InstructError(f"unknown Grip-Hold {hold!r}")
        out.hold = hold  # type: ignore[assignment]
    elif channels:
        out.hold = "response"
    for name, params in channels:
        if not name:
            raise InstructError("empty channel name in Grip-Channel")
        if any(c.name == name for c in out.channels):
            continue
        out.channels.append(ChannelSpec(name, params.get("prev-id")))
    if out.hold is not None and not out.channels:
        raise InstructError("Grip-Hold without Grip-Channel")

    timeout = get_header(headers, "Grip-Timeout")
    if timeout is not None:
        out.timeout = _seconds(timeout.strip(), "Grip-Timeout")

    status = get_header(headers, "Grip-Status")
    if status is not None:
        code, _, reason = status.strip().partition(" ")
        if not code.isdigit() or not 100 <= int(code) <= 599:
            raise InstructError(f"bad Grip-Status {status!r}")
        out.status = (int(code), reason.strip() or None)

    keep_alive = get_header(headers, "Grip-Keep-Alive")
    if keep_alive is not None:
        out.keep_alive = _keep_alive(keep_alive)

    for uri, params in parse_header_list(get_all_headers(headers, "Grip-Link")):
        if params.get("rel") != "next":
            continue
        if not (uri.startswith("<") and uri.endswith(">")):
            raise InstructError(f"bad Grip-Link {uri!r}")
        link_timeout = _seconds(params.get("timeout", str(DEFAULT_LINK_TIMEOUT)), "link timeout")
        out.next_link = NextLink(uri[1:-1].strip(), link_timeout)

    for name, _params in parse_header_list(get_all_headers(headers, "Grip-Set-Meta")):
        key, eq, value = name.partition("=")
        if key.strip():
            out.meta[key.strip()] = value.strip().strip('"') if eq else ""
    return out
