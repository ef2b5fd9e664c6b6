"""JWTs as GRIP uses them: the ``Grip-Sig`` a proxy signs requests with and the
``Authorization: Bearer`` token a publisher signs with, both HS256 with a shared key (Fanout's
``Grip-Sig`` is ES256, verified with its public key).

The one place drf-grip calls PyJWT: the GRIP layer (``grip/signature.py``, ``grip/transports.py``),
the embedded proxy (``proxy/origin.py``, ``proxy/publish.py``) and the test kit sign and verify
through here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import jwt

__all__ = [
    "MIN_HMAC_KEY_BYTES",
    "InvalidToken",
    "hs256_encode",
    "is_public_key",
    "key_length",
    "verify_jwt",
]

#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
MIN_HMAC_KEY_BYTES = 32

#: What :func:`verify_jwt` raises for a token that is malformed, forged, expired or of the
#: wrong issuer (PyJWT's base error).
InvalidToken = jwt.PyJWTError


def key_length(key: str | bytes) -> int:
    """The key's length in bytes, as HS256 uses it."""
    return len(key.encode("utf-8") if isinstance(key, str) else key)


def is_public_key(key: str | bytes) -> bool:
    """True for a PEM public key (Fanout's ES256 key), which verifies but cannot sign."""
    head = key[:64] if isinstance(key, bytes) else key[:64].encode()
    return b"-----BEGIN" in head


@contextlib.contextmanager
def _short_key_allowed(key: Any) -> Iterator[None]:
    """Silence PyJWT's InsecureKeyLengthWarning, which it would print on every request (the
    GRIP layer warns once per key instead). Only entered for a short key: catch_warnings swaps
    process-wide state, so keep it off the common path."""
    # PyJWT added the warning in 2.11 and signs short keys silently before it; setup.cfg
    # allows 2.8, so look it up rather than name it.
    short_key_warning = getattr(jwt, "InsecureKeyLengthWarning", None)
    if (
        short_key_warning is not None
        and isinstance(key, (str, bytes))
        and key_length(key) < MIN_HMAC_KEY_BYTES
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", short_key_warning)
            yield
    else:
        yield


def hs256_encode(claims: Mapping[str, Any], key: str | bytes) -> str:
    """An HS256 JWT of ``claims``, in their order, without PyJWT's per-call short-key warning."""
    with _short_key_allowed(key):
        return jwt.encode(dict(claims), key, algorithm="HS256")


def verify_jwt(
    token: str,
    key: Any,
    *,
    algorithms: Sequence[str] = ("HS256",),
    issuer: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature (and ``exp``, if present) checks out with
    ``key``; raises :data:`InvalidToken` otherwise. ``options`` are PyJWT's."""
    with _short_key_allowed(key):
        return jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            issuer=issuer,
            # PyJWT >= 2.10 types these as its ``Options`` TypedDict; older ones as a dict.
            options=cast(Any, dict(options)) if options is not None else None,
        )
