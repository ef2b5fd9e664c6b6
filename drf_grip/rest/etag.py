"""Strong ETags derived from the representation's bytes: the same in every process."""

from __future__ import annotations

import hashlib

from django.utils.http import parse_etags

__all__ = ["make_etag", "etag_matches", "etag_matches_strongly"]


def make_etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')


def _matches(header: str | None, etag: str, *, strong: bool) -> bool:
    if not header:
        return False
    header = header.strip()
    if header == "*":
        return True
    wanted = _opaque(etag)
    tags = parse_etags(header) or [header]
    return any(_opaque(t) == wanted and not (strong and t.startswith("W/")) for t in tags)


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match (weak comparison); a bare tag without quotes also matches,
    because EventSource sends ``Last-Event-ID`` as it received it."""
    return _matches(header, etag, strong=False)


def etag_matches_strongly(header: str | None, etag: str) -> bool:
    """RFC 9110 If-Match (§13.1.1): strong comparison, so a weak tag (``W/"..."``) never
    matches; ``*`` matches any current representation."""
    return _matches(header, etag, strong=True)
