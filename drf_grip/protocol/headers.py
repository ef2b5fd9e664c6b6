"""The syntax of GRIP's headers: ``value; name=param, value2``, and header lists as pairs of
bytes (what ASGI carries and what ``parse_instruct`` reads)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "RawHeaders",
    "get_all_headers",
    "get_header",
    "parse_header_list",
    "parse_header_value",
    "quote_param",
]

RawHeaders = list[tuple[bytes, bytes]]

# Characters that stand in a header parameter without quotes. Matched with fullmatch:
# "^...$" would let a value ending in "\n" through, and a raw newline in a header is a 500.
TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:/@=]+")


def get_header(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), decoded as latin-1, or None."""
    key = name.lower().encode("latin-1")
    for k, v in headers:
        if k.lower() == key:
            return v.decode("latin-1")
    return None


def get_all_headers(headers: Iterable[tuple[bytes, bytes]], name: str) -> list[str]:
    key = name.lower().encode("latin-1")
    return [v.decode("latin-1") for k, v in headers if k.lower() == key]


def quote_param(value: str, always: bool = False) -> str | None:
    """A header parameter value: a token as is, anything else quoted (RFC 9110 §5.6.4).

    ``None`` for a value no header can carry (a control character such as a final newline,
    or a character outside Latin-1): putting it in a header would fail as a 500.
    """
    if not always and TOKEN.fullmatch(value):
        return value
    if any(ord(c) < 0x20 or c == "\x7f" or ord(c) > 0xFF for c in value):
        return None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = angled = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"' and not angled:
            quoted = not quoted
            current.append(ch)
        elif ch == "<" and not quoted:
            angled = True
            current.append(ch)
        elif ch == ">" and not quoted:
            angled = False
            current.append(ch)
        elif ch == sep and not quoted and not angled:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out: list[str] = []
        escaped = False
        for ch in value[1:-1]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


def parse_header_value(text: str) -> tuple[str, dict[str, str]]:
    """``'data; format=raw; timeout=20'`` -> ``('data', {'format': 'raw', 'timeout': '20'})``."""
    first, *params = _split_outside_quotes(text, ";")
    out: dict[str, str] = {}
    for param in params:
        name, eq, value = param.partition("=")
        name = name.strip().lower()
        if name:
            out[name] = _unquote(value) if eq else ""
    return _unquote(first), out


def parse_header_list(values: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Every comma-separated element of every value, each parsed by :func:`parse_header_value`."""
    out = []
    for text in values:
        for element in _split_outside_quotes(text, ","):
            if element.strip():
                out.append(parse_header_value(element))
    return out
