"""Content codings between the proxy and the origin.

A held answer is not passed on as the origin sent it: a stream's body gets each published
event appended, a long-poll's headers get a published response's merged. Both are plain
text, so a held answer that a compression middleware encoded (Django's ``GZipMiddleware``
does, for a browser's ``Accept-Encoding: gzip``) reached the client as gzip followed by
plain events, which its decoder refuses (DRF probe). Pushpin decodes the origin's answers
(it asks the origin for the codings it can decode); so does this proxy: it asks only for
the codings of the client's that it can undo (``accepted_codings``) and decodes an answer it
holds (``decode``). Answers passed through whole keep their coding.
"""

from __future__ import annotations

import zlib

from ..protocol import RawHeaders
from .headers import without_headers

__all__ = ["accepted_codings", "decode"]

#: Codings the standard library undoes (RFC 9110 §8.4.1): gzip, and zlib's deflate.
_DECODABLE = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})


def accepted_codings(headers: RawHeaders) -> RawHeaders:
    """``headers`` with ``Accept-Encoding`` left with only the codings this proxy decodes
    (weights kept), or without it when none is left (``br``, ``zstd``, ``*``)."""
    out: RawHeaders = []
    for name, value in headers:
        if name.lower() != b"accept-encoding":
            out.append((name, value))
            continue
        kept = [
            item.strip()
            for item in value.split(b",")
            if item.split(b";", 1)[0].strip().lower() in _DECODABLE
        ]
        if kept:
            out.append((name, b", ".join(kept)))
    return out


def decode(headers: RawHeaders, body: bytes, limit: int) -> tuple[RawHeaders, bytes]:
    """``headers`` without ``Content-Encoding`` and ``body`` decoded (a coding this proxy did
    not ask for is left as it is). ValueError for a body that does not decode or is over
    ``limit`` bytes once decoded."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == b"content-encoding"
        for coding in value.split(b",")
        if coding.strip()
    ]
    if not codings or any(coding not in _DECODABLE for coding in codings):
        return headers, body
    for coding in reversed(codings):  # applied in the order listed (RFC 9110 §8.4)
        if coding == b"identity":
            continue
        # gzip's header (wbits 16+), else zlib's (deflate as RFC 9110 names it).
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if b"gzip" in coding else zlib.MAX_WBITS)
        try:
            body = decoder.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ValueError(f"its {coding.decode()} body does not decode: {exc}") from None
        if len(body) > limit or decoder.unconsumed_tail:
            raise ValueError(f"its answer exceeds {limit} bytes once decoded")
    return without_headers(headers, "content-encoding", "content-length"), body
