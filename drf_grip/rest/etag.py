"""Strong ETags derived from the representation's bytes: the same in every process."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from django.conf import settings
from django.middleware.gzip import GZipMiddleware
from django.utils.http import parse_etags
from django.utils.module_loading import import_string

__all__ = [
    "make_etag",
    "etag_matches",
    "etag_matches_strongly",
    "is_etag_list",
    "tags_weakened",
]

#: RFC 9110 §8.8.3: ``entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE``, ``etagc = %x21 / %x23-7E
#: / obs-text``; a list's elements are separated by commas with optional whitespace, and
#: empty ones are allowed (§5.6.1). A tag may hold a comma, so the list is not split on them.
_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_TAG_LIST = re.compile(rf"[ \t]*(?:{_TAG})?[ \t]*(?:,[ \t]*(?:{_TAG})?[ \t]*)*")


def make_etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"')


def tags_weakened() -> bool:
    """Whether the project's middleware weakens the strong ETags this server sends: Django's
    ``GZipMiddleware`` answers a compressed body with ``W/`` before the tag (RFC 9110
    §8.8.1: a tag names one content coding's bytes), and Pushpin always asks the origin for
    gzip, so every client behind it holds ``W/"…"`` (DRF probe)."""
    return _weakening(tuple(settings.MIDDLEWARE or ()))


@lru_cache(maxsize=4)
def _weakening(middleware: tuple[str, ...]) -> bool:
    for path in middleware:
        try:
            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, GZipMiddleware):
            return True
    return False


def _matches(header: str | None, etag: str, *, strong: bool, lenient: bool) -> bool:
    if not header:
        return False
    header = header.strip()
    if header == "*":
        return True
    wanted = _opaque(etag)
    # Django's parse_etags keeps the well-formed tags of a list (RFC 9110 §8.8.3); a header
    # that has none is one bare tag only where ``lenient``.
    tags = parse_etags(header) or ([header] if lenient else [])
    return any(_opaque(t) == wanted and not (strong and t.startswith("W/")) for t in tags)


def is_etag_list(header: str) -> bool:
    """Whether ``header`` is what ``If-None-Match`` and ``If-Match`` may hold (RFC 9110
    §13.1.1-2): ``*`` or a list of entity-tags, each in double quotes."""
    return header.strip() == "*" or _TAG_LIST.fullmatch(header) is not None


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match (weak comparison); a bare tag without quotes also matches,
    because EventSource sends ``Last-Event-ID`` as it received it."""
    return _matches(header, etag, strong=False, lenient=True)


def etag_matches_strongly(header: str | None, etag: str, *, weakened: bool = False) -> bool:
    """RFC 9110 If-Match (§13.1.1): strong comparison, so a weak tag (``W/"..."``) never
    matches; ``*`` matches any current representation. ``weakened`` (``tags_weakened()``):
    the ``W/`` form of ``etag`` is the tag a compression middleware made of it, and names
    the same bytes before their coding, so it matches (no client could write otherwise).
    A malformed tag (no quotes, doubled quotes) matches nothing: a write let through by an
    unquoted tag was refused when the same tag came in a list (transports probe)."""
    return _matches(header, etag, strong=not weakened, lenient=False)
