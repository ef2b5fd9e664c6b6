"""HS256 signing has one home, ``drf_grip.protocol.signing``, for every layer."""

from __future__ import annotations

import time
import warnings

import jwt
import pytest

from drf_grip.protocol.signing import (
    InvalidToken,
    hs256_encode,
    is_public_key,
    verify_jwt,
)

from .test_layers import PACKAGE, all_imports_of


def test_pyjwt_is_called_from_one_module_only():
    """The Grip-Sig signer of the embedded proxy, the test kit's and the publisher's are one."""
    users = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if any(name.split(".")[0] == "jwt" for name in all_imports_of(path))
    ]
    assert users == ["protocol/signing.py"]


def test_a_token_is_the_one_pyjwt_makes_and_keeps_the_claims_order():
    claims = {"iss": "drf-grip", "exp": 2_000_000_000}
    key = "k" * 40
    assert hs256_encode(claims, key) == jwt.encode(claims, key, algorithm="HS256")
    reordered = {"exp": 2_000_000_000, "iss": "drf-grip"}
    assert hs256_encode(reordered, key) == jwt.encode(reordered, key, algorithm="HS256")
    assert hs256_encode(claims, key) != hs256_encode(reordered, key)


def test_a_short_key_signs_and_verifies_without_pyjwt_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = hs256_encode({"exp": int(time.time()) + 60}, "short")
        assert verify_jwt(token, "short")["exp"] > time.time()


def test_a_short_key_signs_with_a_pyjwt_older_than_its_short_key_warning(monkeypatch):
    """setup.cfg allows PyJWT 2.8; InsecureKeyLengthWarning came in 2.11 (before it, PyJWT
    signed short keys silently). Publishing with a short key must work on the older ones."""
    monkeypatch.delattr(jwt, "InsecureKeyLengthWarning", raising=False)
    with warnings.catch_warnings():
        # A newer PyJWT, its name hidden, still warns here.
        warnings.simplefilter("ignore")
        token = hs256_encode({"exp": int(time.time()) + 60}, "short")
        assert verify_jwt(token, "short")["exp"] > time.time()


def test_verification_refuses_a_forged_an_expired_or_a_foreign_token():
    key = "k" * 40
    with pytest.raises(InvalidToken):
        verify_jwt(hs256_encode({"exp": int(time.time()) + 60}, "x" * 40), key)
    with pytest.raises(InvalidToken):
        verify_jwt(hs256_encode({"exp": int(time.time()) - 60}, key), key)
    with pytest.raises(InvalidToken):
        verify_jwt(hs256_encode({"iss": "a", "exp": int(time.time()) + 60}, key), key, issuer="b")
    with pytest.raises(InvalidToken):
        verify_jwt("not a token", key)


def test_a_pem_public_key_is_told_apart_from_a_shared_secret():
    assert is_public_key("-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n")
    assert is_public_key(b"\n-----BEGIN PUBLIC KEY-----\n")
    assert not is_public_key("changeme-" * 5)
