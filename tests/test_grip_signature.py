"""Grip-Sig decides who is proxied: forged, expired or garbage signatures are direct."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from drf_grip.grip.middleware import GripMiddleware, parse_grip_last
from drf_grip.grip.signature import check_grip_sig

KEY = "a-pushpin-key-of-at-least-32-bytes!!"


def sig(key=KEY, iss="pushpin", exp_in=3600, alg="HS256"):
    return jwt.encode({"iss": iss, "exp": int(time.time()) + exp_in}, key, algorithm=alg)


def pem_pair(kind):
    priv = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    pub = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub.decode()


@override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}")
def test_pushpin_hs256_valid_forged_expired():
    assert check_grip_sig(sig()) == (True, True)
    assert check_grip_sig(sig(key="another-key-of-at-least-32-bytes!!!!")) == (False, False)
    assert check_grip_sig(sig(exp_in=-10)) == (False, False)
    assert check_grip_sig("garbage") == (False, False)
    assert check_grip_sig(None) == (False, False)


@override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}")
def test_a_signature_accepted_once_is_refused_once_it_expires():
    # Accepted signatures are remembered (a proxy's requests of one second share one), never
    # past their expiry, and never for another key.
    expires = int(time.time()) + 1
    token = jwt.encode({"iss": "pushpin", "exp": expires}, KEY, algorithm="HS256")
    assert check_grip_sig(token) == (True, True)
    assert check_grip_sig(token) == (True, True)
    with override_settings(GRIP_URL="http://127.0.0.1:5561/?iss=pushpin&key=" + "k" * 40):
        assert check_grip_sig(token) == (False, False)

    while time.time() <= expires + 0.01:  # the expiry itself is what is awaited
        time.sleep(0.05)

    assert check_grip_sig(token) == (False, False)


@override_settings(GRIP_PROXIES=[{"control_uri": "http://a"}, {"control_uri": "http://b", "key": KEY}])
def test_garbage_sig_is_direct_when_any_proxy_has_a_key():
    # django-grip counted any Grip-Sig as proxied as soon as one proxy had no key.
    assert check_grip_sig("garbage") == (False, False)
    assert check_grip_sig(sig()) == (True, True)


@override_settings(GRIP_PROXIES=[{"control_uri": "http://a"}])
def test_keyless_proxy_trusts_presence():
    assert check_grip_sig("anything") == (True, False)


@pytest.mark.parametrize("kind,alg", [("ec", "ES256"), ("rsa", "RS256")])
def test_fastly_public_key_signatures(kind, alg):
    priv, pub = pem_pair(kind)
    other, _ = pem_pair(kind)
    with override_settings(
        GRIP_URL="https://api.fastly.com/service/sid?verify-iss=fastly:sid&key=apitoken",
        GRIP_VERIFY_KEY=pub,
    ):
        assert check_grip_sig(sig(priv, iss="fastly:sid", alg=alg)) == (True, True)
        assert check_grip_sig(sig(priv, iss="someone-else", alg=alg)) == (False, False)
        assert check_grip_sig(sig(other, iss="fastly:sid", alg=alg)) == (False, False)
        # HS256 signed with the public key text must not pass (algorithm confusion).
        assert check_grip_sig(jwt.encode({"exp": int(time.time()) + 60}, "x" * 40)) == (False, False)


@pytest.mark.parametrize(
    "proxies",
    [
        [{"control_uri": "http://a", "verify_key": KEY}],  # django-grip: KeyError 'key' -> 500
        [{"control_uri": "http://a", "key": b"\x00\xff binary"}],
        [{"control_uri": "http://a", "verify_key": "-----BEGIN PUBLIC KEY-----\nnot a key\n"}],
    ],
)
@pytest.mark.parametrize("header", ["", "x", "a.b.c", sig(), "\u00e9" * 10])
def test_no_key_and_sig_combination_raises(proxies, header):
    with override_settings(GRIP_PROXIES=proxies):
        request = RequestFactory().get("/", HTTP_GRIP_SIG=header)
        response = GripMiddleware(lambda r: HttpResponse(str(r.grip_proxied)))(request)
        assert response.status_code == 200


def test_grip_proxies_not_mutated_with_grip_url():
    proxies = [{"control_uri": "http://a", "key": KEY}]
    with override_settings(GRIP_PROXIES=proxies, GRIP_URL="http://b/?key=" + KEY):
        from drf_grip.conf import grip_settings

        for _ in range(3):
            RequestFactory()
            GripMiddleware(lambda r: HttpResponse())(RequestFactory().get("/"))
        assert len(grip_settings.proxies) == 2
        assert proxies == [{"control_uri": "http://a", "key": KEY}]


def test_grip_last_parsing():
    assert parse_grip_last('todos; last-id=abc, p-x; last-id="q\\"z"', "p-") == {
        "todos": "abc",
        "x": 'q"z',
    }


# -- short keys and secrets --------------------------------------------------------------------


def test_a_short_key_is_warned_once_without_pyjwt_warnings_or_the_key(caplog):
    import warnings

    from drf_grip.grip import signature

    signature._warned_short.clear()
    token = signature.hs256_encode({"iss": "pushpin", "exp": int(time.time()) + 60}, "SECRET")
    with override_settings(GRIP_URL="http://u:p4ss@127.0.0.1:5561/?iss=pushpin&key=SECRET"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                assert check_grip_sig(token) == (True, True)
    # PyJWT < 2.11 has no such warning (setup.cfg allows 2.8).
    short_key_warning = getattr(jwt, "InsecureKeyLengthWarning", ())
    assert not [w for w in caught if issubclass(w.category, short_key_warning)]
    warned = [r for r in caplog.records if "bytes long" in r.getMessage()]
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert "is 6 bytes long" in message and "32 bytes" in message
    assert "SECRET" not in caplog.text and "p4ss" not in caplog.text


def test_a_long_key_is_not_warned_about(caplog):
    from drf_grip.grip import signature

    signature._warned_short.clear()
    key = "k" * 32
    token = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 60}, key, algorithm="HS256")
    with override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={key}"):
        assert check_grip_sig(token) == (True, True)
    assert "bytes long" not in caplog.text


def test_endpoint_repr_and_display_uri_hide_credentials_and_query():
    from drf_grip.conf import endpoint_from_url, redact_url

    endpoint = endpoint_from_url("https://user:pa55word@api.fanout.io/realm/r1?iss=r1&key=c2VjcmV0")
    assert "pa55word" not in repr(endpoint) and "c2VjcmV0" not in repr(endpoint)
    assert endpoint.display_uri == "https://***@api.fanout.io/realm/r1"
    assert redact_url("http://[::1]:5561/?key=x") == "http://[::1]:5561/"


@override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}")
def test_the_keys_a_signature_is_checked_with_keep_out_of_reprs():
    """Found by a black-box probe: ``repr(trusted_keys())`` printed the key in clear (a
    traceback reporter that shows locals would too)."""
    from drf_grip.grip.signature import trusted_keys

    keys, _keyless = trusted_keys()
    assert keys and all(KEY not in repr(k) for k in keys)


#: A Pushpin (HS256 with its key) and Fastly Fanout (its public key, for one service).
_PUSHPIN_AND_FANOUT = [
    {"control_uri": "http://127.0.0.1:5561", "control_iss": "pushpin", "key": KEY},
    {
        "control_uri": "https://api.fastly.com/service/sid",
        "key": "apitoken",
        "verify_iss": "fastly:sid",
    },
]


def test_fanouts_verify_key_beside_a_pushpin_leaves_pushpins_signatures_valid():
    """Found by a probe: GRIP_PROXIES with a Pushpin (its key) and Fanout, and Fanout's public
    key as GRIP_VERIFY_KEY (docs/deploying.rst), made every request through Pushpin direct:
    the public key replaced Pushpin's key instead of joining it."""
    priv, pub = pem_pair("ec")
    with override_settings(GRIP_PROXIES=_PUSHPIN_AND_FANOUT, GRIP_VERIFY_KEY=pub):
        assert check_grip_sig(sig()) == (True, True)
        assert check_grip_sig(sig(priv, iss="fastly:sid", alg="ES256")) == (True, True)
        assert check_grip_sig(sig(key="another-key-of-at-least-32-bytes!!!!")) == (False, False)
        assert check_grip_sig(sig(pem_pair("ec")[0], iss="fastly:sid", alg="ES256")) == (False, False)


def test_fanouts_key_beside_a_pushpin_is_checked_with_fanouts_issuer_only():
    """Found by a probe: with Pushpin and Fanout in GRIP_PROXIES and Fanout's public key as
    GRIP_VERIFY_KEY, the Pushpin entry (no verify_iss) trusted that key for any issuer. Fastly
    signs for every service with one key, so another service's requests counted as proxied."""
    priv, pub = pem_pair("ec")
    with override_settings(GRIP_PROXIES=_PUSHPIN_AND_FANOUT, GRIP_VERIFY_KEY=pub):
        assert check_grip_sig(sig(priv, iss="fastly:sid", alg="ES256")) == (True, True)
        assert check_grip_sig(sig(priv, iss="fastly:other", alg="ES256")) == (False, False)
        assert check_grip_sig(sig()) == (True, True)
    # Fanout alone, without verify-iss: its key still counts for any issuer, as in django-grip.
    with override_settings(
        GRIP_URL="https://api.fastly.com/service/sid?key=apitoken", GRIP_VERIFY_KEY=pub
    ):
        assert check_grip_sig(sig(priv, iss="fastly:sid", alg="ES256")) == (True, True)


def test_fanouts_api_token_is_not_warned_about_as_a_short_signing_key(caplog):
    # The key of an entry checked with GRIP_VERIFY_KEY is Fanout's API token, not a Grip-Sig
    # key: "set a longer sig_key in Pushpin" would mislead.
    from drf_grip.grip import signature

    signature._warned_short.clear()
    _priv, pub = pem_pair("ec")
    with override_settings(
        GRIP_URL="https://api.fastly.com/service/sid?key=short-token&verify-iss=fastly:sid",
        GRIP_VERIFY_KEY=pub,
    ):
        check_grip_sig(sig())
    assert "bytes long" not in caplog.text


@override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}")
def test_a_signature_no_key_verifies_is_warned_about_once_a_minute_without_the_token(
    caplog, monkeypatch
):
    """A proxy whose sig_key differs from GRIP_URL's key: every request was answered as a
    direct one (nothing held, clients polling in a loop) and nothing said why."""
    from drf_grip.grip import signature

    monkeypatch.setattr(signature, "_warned_unverified", [float("-inf")])
    wrong = sig(key="another-key-of-at-least-32-bytes!!!!")
    with caplog.at_level("WARNING", logger="drf_grip.signature"):
        assert check_grip_sig(sig()) == (True, True)
        assert caplog.records == []
        assert check_grip_sig(wrong) == (False, False)
        assert check_grip_sig("garbage") == (False, False)
    warnings = [r for r in caplog.records if "no configured GRIP key verifies" in r.getMessage()]
    assert len(warnings) == 1
    assert wrong not in caplog.text and KEY not in caplog.text
