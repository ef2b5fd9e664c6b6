"""ASGI header lists and the ``value; name=param, value2`` syntax of GRIP headers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

__all__ = [
    "RawHeaders",
    "get_header",
    "get_all_headers",
    "without_headers",
    "replace_headers",
    "parse_header_list",
    "parse_header_value",
    "is_grip_header",
    "loggable_target",
]

RawHeaders = list[tuple[bytes, bytes]]

_TOKEN_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_\-.:~=]{40,}(?=/|$)")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\[\]-]{0,31}")


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


def is_grip_header(name: bytes) -> bool:
    return name.lower().startswith(b"grip-")


def without_headers(
    headers: Iterable[tuple[bytes, bytes]], *names: str, grip: bool = False
) -> RawHeaders:
    """A copy without the named headers (and, with ``grip=True``, without every ``Grip-*``)."""
    drop = {n.lower().encode("latin-1") for n in names}
    return [
        (k, v)
        for k, v in headers
        if k.lower() not in drop and not (grip and is_grip_header(k))
    ]


def loggable_target(path: str, query: bytes | str = b"") -> str:
    """``path?name=*&other=*``: a request target for logs, without the query's values
    (``?access_token=`` and the like must never reach a log), nor names that look like data,
    nor path segments that look like tokens."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    # A long opaque path segment is a token (next links carry a signed one in their path).
    path = _TOKEN_SEGMENT.sub("*", path)
    if not query:
        return path
    names = [
        name if _PARAM_NAME.fullmatch(name) else "*"
        for name, _value in parse_qsl(query, keep_blank_values=True)
    ]
    return path + "?" + ("&".join(f"{name}=*" for name in names) if names else "*")


def replace_headers(base: RawHeaders, overrides: Iterable[tuple[str, str]]) -> RawHeaders:
    """``base`` with every header named in ``overrides`` replaced by the overriding values.

    This is how Pushpin merges a published ``http-response``'s headers onto the held response
    (Pushpin 1.36: publish headers are merged, the hold's other headers stay).
    """
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in overrides]
    names = {k.lower() for k, _ in pairs}
    return [(k, v) for k, v in base if k.lower() not in names] + pairs


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
