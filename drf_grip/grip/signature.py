"""Grip-Sig checks: decide whether a request really came through a GRIP proxy.

Pushpin signs with HS256 and its shared key; Fastly Fanout signs with ES256 (a public key).
With any key configured, only a valid, unexpired signature counts: a forged or expired
one makes the request direct. Nothing here raises, whatever the header or key holds.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..conf import embedded_key, grip_settings
from ..protocol import EMBEDDED_ISSUER
from ..protocol.signing import (
    MIN_HMAC_KEY_BYTES,
    hs256_encode,
    is_public_key,
    key_length,
    verify_jwt,
)

__all__ = [
    "TrustedKey",
    "trusted_keys",
    "public_key_loads",
    "check_grip_sig",
    "hs256_encode",
    "warn_if_short",
    "MIN_HMAC_KEY_BYTES",
    "request_proxied",
    "unsigned_events_refused",
    "unsigned_events_response",
]

# hs256_encode and MIN_HMAC_KEY_BYTES live in drf_grip.protocol.signing (shared with the
# embedded proxy); named here too, beside the checks that use them.

logger = logging.getLogger("drf_grip.signature")

_warned_short: set[str] = set()


def warn_if_short(key: str | bytes | None, where: str) -> None:
    """Log once per ``where`` (a redacted URI) that an HS256 key is too short; never the key."""
    if not key or is_public_key(key) or where in _warned_short:
        return
    length = key_length(key)
    if length >= MIN_HMAC_KEY_BYTES:
        return
    _warned_short.add(where)
    logger.warning(
        "The GRIP key for %s is %d bytes long; Grip-Sig (HS256) needs %d bytes or more "
        "(RFC 7518 section 3.2). Set a longer sig_key in Pushpin and the same key in GRIP_URL.",
        where,
        length,
        MIN_HMAC_KEY_BYTES,
    )


@dataclass(frozen=True)
class TrustedKey:
    # Out of the repr: reprs reach tracebacks with locals and error reporters.
    key: str | bytes = field(repr=False)
    iss: str | None = None


def trusted_keys() -> tuple[list[TrustedKey], bool]:
    """Keys a Grip-Sig may be signed with, and whether some proxy is configured without one.
    Worked out once per settings (every proxied request asks)."""
    keys, keyless = grip_settings.memo("trusted_keys", _trusted_keys)
    return keys, bool(keyless)


def keyless_proxies() -> list[str]:
    """The proxies configured with no key to verify their ``Grip-Sig`` with (redacted
    URIs): with no other proxy keyed, any request carrying the header counts as theirs."""
    return grip_settings.memo("trusted_keys", _trusted_keys)[1]


def _trusted_keys() -> tuple[list[TrustedKey], list[str]]:
    keys: list[TrustedKey] = []
    keyless: list[str] = []
    proxies = grip_settings.proxies
    # GRIP_VERIFY_KEY is Fanout's public key, and Fastly signs for every service with it:
    # once some entry names the issuer to expect (verify_iss, "fastly:SERVICE_ID"), the key
    # is that entry's, never trusted for any issuer through an entry that names none.
    shared_key_issuers = any(ep.verify_iss for ep in proxies)
    for ep in proxies:
        # A proxy's own verify_key; else both GRIP_VERIFY_KEY and the control key (Pushpin
        # signs with the key it is published to with). Not one or the other: with Pushpin
        # and Fanout side by side in GRIP_PROXIES, GRIP_VERIFY_KEY must not make every
        # request through Pushpin direct.
        if ep.verify_key:
            candidates = [ep.verify_key]
        else:
            candidates = [ep.key] if ep.key else []
            if grip_settings.verify_key and (ep.verify_iss or not shared_key_issuers):
                candidates.insert(0, grip_settings.verify_key)
        for key in candidates:
            if len(candidates) == 1:  # beside GRIP_VERIFY_KEY, ``key`` is Fanout's API token
                warn_if_short(key, ep.display_uri)
            keys.append(TrustedKey(key, ep.verify_iss))
        if not candidates:
            keyless.append(ep.display_uri)
    if grip_settings.verify_key and not proxies:
        keys.append(TrustedKey(grip_settings.verify_key))
    if not proxies:
        # Nothing configured: the embedded proxy signs with a key derived from SECRET_KEY.
        keys.append(TrustedKey(embedded_key(), EMBEDDED_ISSUER))
    return keys, keyless


@functools.lru_cache(maxsize=32)
def _load_public_key(pem: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem)


def public_key_loads(key: str | bytes) -> bool:
    """False for a key that looks like PEM (``is_public_key``) but does not load as a public
    key (a certificate, ``\n`` escaped); True for any other key."""
    if not is_public_key(key):
        return True
    pem = key if isinstance(key, bytes) else key.encode()
    try:
        _load_public_key(pem.strip())
    except Exception:  # noqa: BLE001 - cryptography raises ValueError, TypeError or its own
        return False
    return True


# A proxy signs each request with an expiry a whole number of seconds ahead (Pushpin: now +
# 3600), so the requests of one second carry the same token. A token that checked out is
# remembered with its expiry, bounded; a remembered one counts only until it expires.
_VERIFIED: dict[tuple[str, str | bytes, str | None], float] = {}
_VERIFIED_MAX = 256


def _valid(token: str, trusted: TrustedKey) -> bool:
    key = trusted.key
    remembered = (token, key, trusted.iss)
    expires = _VERIFIED.get(remembered)
    if expires is not None and time.time() < expires:
        return True
    try:
        if is_public_key(key):
            pem = key if isinstance(key, bytes) else key.encode()
            verifier = _load_public_key(pem.strip())
            algorithms = ["ES256", "RS256"]
        else:
            verifier = key
            algorithms = ["HS256"]
        options = {"require": ["exp"], "verify_iss": trusted.iss is not None}
        claims = verify_jwt(
            token, verifier, algorithms=algorithms, issuer=trusted.iss, options=options
        )
    except Exception:  # any malformed token or unusable key means "not from the proxy"
        return False
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[remembered] = float(claims["exp"])
    return True


def check_grip_sig(token: str | None) -> tuple[bool, bool]:
    """Return ``(proxied, signed)`` for a request carrying this Grip-Sig value."""
    if not token:
        return False, False
    keys, keyless = trusted_keys()
    if any(_valid(token, k) for k in keys):
        return True, True
    if keyless and len(keys) == 0:
        # Proxies configured without any key: trust the header's presence, as GRIP allows.
        return True, False
    _warn_of_unverified()
    return False, False


_UNVERIFIED_EVERY = 60.0
_warned_unverified = [float("-inf")]


def _warn_of_unverified() -> None:
    """At most once a minute per process, never the token: a proxy whose ``sig_key``
    differs from the key the settings give gets every request answered as a direct one, so
    no long-poll or stream is held (a long-poll answers at once, a stream ends after its
    first event) and its clients poll in a loop. Silent, that looked like a broken proxy
    (black-box probe)."""
    now = time.monotonic()
    if now - _warned_unverified[0] < _UNVERIFIED_EVERY:
        return
    _warned_unverified[0] = now
    logger.warning(
        "A request carried a Grip-Sig that no configured GRIP key verifies (wrong key or "
        "issuer, or expired): it is answered as a direct request, not held. If your GRIP "
        "proxy sent it, give it the key of GRIP_URL or GRIP_PROXIES (Pushpin: sig_key)."
    )


def unsigned_events_refused(request: Any) -> bool:
    """Whether ``request``'s WebSocket-over-HTTP events came with no valid ``Grip-Sig``
    where a proxy key says which are valid (DESIGN.md §6). POSTed straight to the origin,
    they would run a WebSocket view under a ``Connection-Id`` and meta of the sender's
    choosing (browser probe). With proxies configured without a key no request can be told
    apart, as in django-grip; with none configured the embedded proxy, the only one,
    refuses such events from clients."""
    return (
        not request_proxied(request)
        and bool(grip_settings.proxies)
        and bool(trusted_keys()[0])
    )


def request_proxied(request: Any) -> bool:
    """``request.grip_proxied``, or, with no ``GripMiddleware`` in front, its ``Grip-Sig``
    checked here."""
    proxied = getattr(request, "grip_proxied", None)
    if proxied is None:
        proxied = check_grip_sig(request.META.get("HTTP_GRIP_SIG"))[0]
    return bool(proxied)


def unsigned_events_response() -> Any:
    """The answer to events :func:`unsigned_events_refused` refuses."""
    from django.http import HttpResponse

    return HttpResponse(
        "Forbidden: WebSocket-over-HTTP events are taken from the GRIP proxy only, and this "
        "request has no valid Grip-Sig.\n",
        status=403,
        content_type="text/plain",
    )
