"""Editing an ASGI header list on its way through the proxy, and request targets (their
length, and their form for logs).

Reading headers and GRIP's header syntax are in ``drf_grip.protocol.headers``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from ..protocol.headers import RawHeaders

__all__ = [
    "without_headers",
    "replace_headers",
    "is_grip_header",
    "loggable_target",
    "target_length",
    "target_too_long",
]

_TOKEN_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_\-.:~=]{40,}(?=/|$)")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\[\]-]{0,31}")


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


def target_length(scope: dict[str, Any]) -> int:
    """Bytes of the request target as the client sent it: path and query."""
    path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    query = scope.get("query_string") or b""
    return len(path) + (len(query) + 1 if query else 0)


def target_too_long(limit: int) -> str:
    """The reason a too long request target is refused (``GripProxy.max_request_target``)."""
    return (
        f"URI Too Long: the drf-grip embedded proxy takes request targets (path and query) of "
        f"at most {limit} bytes"
    )


def loggable_target(path: str, query: bytes | str = b"") -> str:
    """``path?name=*&other=*``: a request target for logs, without the query's values
    (``?access_token=`` and the like must never reach a log), nor names that look like data,
    nor path segments that look like tokens."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    # A long opaque path segment is a token (a next link's user part, or a token in the path
    # of links made by an older drf-grip or another origin).
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
