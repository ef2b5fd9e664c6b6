"""Settings for drf-grip, read lazily in the style of ``rest_framework.settings``.

django-grip's names keep their meaning (``GRIP_URL``, ``GRIP_PROXIES``, ``GRIP_PREFIX``,
``GRIP_PROXY_REQUIRED``, ``GRIP_VERIFY_KEY``, ``PUBLISH_SERVERS``); drf-grip's own options
live in one dict, ``DRF_GRIP``. Everything is re-read after ``setting_changed`` so
``override_settings`` works in tests.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from gripcontrol import parse_grip_uri

__all__ = ["GripEndpoint", "grip_settings", "DEFAULTS", "redact_url", "SettingProblem"]

logger = logging.getLogger("drf_grip.conf")

DEFAULTS: dict[str, Any] = {
    # Long-poll timeout in seconds, and the range a client may pick with ``Prefer: wait=N``.
    # Pushpin's minimum Grip-Timeout is 5 (Pushpin 1.36).
    "HOLD_TIMEOUT": 55,
    "HOLD_TIMEOUT_MIN": 5,
    "HOLD_TIMEOUT_MAX": 300,
    # SSE keep-alive comment interval in seconds.
    "STREAM_KEEP_ALIVE": 20,
    # Lifetime of signed next-link tokens for private streams, in seconds.
    "NEXT_LINK_TIMEOUT": 120,
    "NEXT_LINK_MAX_AGE": 3600,
    # A subscription's headers are kept in the state cache to replay its GET: one whose
    # headers (names and values) total more than this many bytes is answered 431.
    "SUBSCRIBER_HEADERS_MAX_SIZE": 32 * 1024,
    # "private" (hint, re-run per client) or "shared" (render once, push to all).
    "DEFAULT_DELIVERY": "private",
    # Django cache aliases that hold channel versions and the set of live shared URLs.
    "VERSION_CACHE": "default",
    # How long a live URL (or a recorded subscription) outlives its last hold; None: the
    # longest hold, next-link or gateway keep-alive interval plus a minute.
    "LIVE_URL_TIMEOUT": None,
    # At most this many live list URLs per model (shared delivery); past it a URL is
    # delivered like private data (a hint re-requests its holds). Detail URLs: per object.
    "LIVE_URL_MAX": 200,
    "LIVE_URL_MAX_PER_OBJECT": 8,
    # Background publisher.
    "PUBLISH_CONNECT_TIMEOUT": 2.0,
    "PUBLISH_READ_TIMEOUT": 5.0,
    # Retries span about a minute (0.2, 0.4, ... capped at 10 s), so a proxy restart
    # loses nothing; items behind them wait and then go out together.
    "PUBLISH_RETRIES": 10,
    "PUBLISH_BACKOFF": 0.2,
    "PUBLISH_BACKOFF_MAX": 10.0,
    "PUBLISH_QUEUE_SIZE": 10000,
    "PUBLISH_BATCH_SIZE": 100,
    "PUBLISH_FLUSH_TIMEOUT": 5.0,
    # Under a stream of writes, a process publishes at most once per this many seconds;
    # what commits meanwhile goes out together (each live URL rendered once for it all).
    "PUBLISH_INTERVAL": 0.05,
    # Embedded proxy: where other processes reach it when GRIP_URL is unset,
    # and its limits.
    "EMBEDDED_URL": "http://127.0.0.1:8000",
    "EMBEDDED_MAX_HELD": 10000,
    "EMBEDDED_MAX_MESSAGE_SIZE": 1024 * 1024,
    # Re-holds of a GRIP proxy wait while a write runs in the process, at most this long,
    # and at most this many run at once (grip/writes_first.py).
    "REHOLD_MAX_WAIT": 0.25,
    "REHOLD_CONCURRENCY": 1,
    # Idle request threads each ASGI process keeps for its next requests
    # (grip/request_threads.py); 0: Django's own way, a new thread for every request.
    "REQUEST_THREADS_IDLE": 64,
    # Private delivery: holds of one channel past HINT_BUCKET_SIZE are spread over up to
    # HINT_BUCKETS channels, hinted one after another (Pushpin 1.36 answers most of a
    # thousand clients hinted at once with 502s).
    "HINT_BUCKETS": 64,
    "HINT_BUCKET_SIZE": 50,
    # WebSocket gateway limits.
    "WS_MAX_MESSAGE_SIZE": 64 * 1024,
    "WS_MAX_SUBSCRIPTIONS": 20,
    "WS_KEEP_ALIVE": 25,
    # Gateway connections with private subscriptions to one model (each re-rendered per change).
    "WS_MAX_LIVE_CONNECTIONS": 2048,
    # Of those, the connections of one signed-in user (about: a slot index), so that no one
    # user takes them all.
    "WS_MAX_LIVE_CONNECTIONS_PER_USER": 32,
}


#: The values a DRF_GRIP number may take: ``(whole, lowest, lowest allowed)``. Zero and
#: negative durations are refused where they would hold nothing, stream nothing or spin: a
#: negative cache timeout deletes the entry it sets (Django's cache API), so a negative
#: LIVE_URL_TIMEOUT left shared delivery with no live URL at all.
_NUMBERS: dict[str, tuple[bool, float, bool]] = {
    **{
        name: (True, 1, True)
        for name in (
            "HOLD_TIMEOUT", "HOLD_TIMEOUT_MIN", "HOLD_TIMEOUT_MAX", "STREAM_KEEP_ALIVE",
            "NEXT_LINK_TIMEOUT", "NEXT_LINK_MAX_AGE", "SUBSCRIBER_HEADERS_MAX_SIZE",
            # Slot indexes hold at least one entry (rest/store.py): 0 would mean 1.
            "LIVE_URL_MAX", "LIVE_URL_MAX_PER_OBJECT", "WS_MAX_LIVE_CONNECTIONS",
            "WS_MAX_LIVE_CONNECTIONS_PER_USER",
            "PUBLISH_QUEUE_SIZE", "PUBLISH_BATCH_SIZE", "EMBEDDED_MAX_HELD",
            "EMBEDDED_MAX_MESSAGE_SIZE", "REHOLD_CONCURRENCY", "HINT_BUCKETS",
            "HINT_BUCKET_SIZE", "WS_MAX_MESSAGE_SIZE", "WS_MAX_SUBSCRIPTIONS", "WS_KEEP_ALIVE",
        )
    },
    **{
        name: (True, 0, True)
        for name in ("LIVE_URL_TIMEOUT", "PUBLISH_RETRIES", "REQUEST_THREADS_IDLE")
    },
    **{
        name: (False, 0, True)
        for name in (
            "PUBLISH_BACKOFF", "PUBLISH_BACKOFF_MAX", "PUBLISH_FLUSH_TIMEOUT",
            "PUBLISH_INTERVAL", "REHOLD_MAX_WAIT",
        )
    },
    # A socket timeout of 0 makes it non-blocking (a connect fails at once), and a negative
    # one is refused (Python's socket.settimeout): every publish would fail.
    **{name: (False, 0, False) for name in ("PUBLISH_CONNECT_TIMEOUT", "PUBLISH_READ_TIMEOUT")},
}
_DELIVERIES = ("private", "shared")


@dataclass(frozen=True)
class SettingProblem:
    """A setting drf-grip cannot use as given: what the system check reports (``id``)."""

    id: str
    msg: str
    hint: str


def _number_problem(name: str, value: Any) -> str | None:
    whole, lowest, inclusive = _NUMBERS[name]
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return f"{kind}, not {type(value).__name__} {value!r}"
    if value < lowest or (value == lowest and not inclusive):
        bound = f"{lowest:g} or more" if inclusive else f"more than {lowest:g}"
        return f"{kind} of {bound}, not {value!r}"
    return None


def _value_problem(name: str, value: Any) -> str | None:
    """Why ``DRF_GRIP[name] = value`` cannot be used, or None."""
    if name == "LIVE_URL_TIMEOUT" and value is None:
        return None
    if name in _NUMBERS:
        return _number_problem(name, value)
    if name == "DEFAULT_DELIVERY" and value not in _DELIVERIES:
        return f'"private" or "shared" (lower case), not {value!r}'
    if name == "VERSION_CACHE" and (
        not isinstance(value, str) or value not in (getattr(settings, "CACHES", None) or {})
    ):
        return f"the alias of a cache in CACHES, not {value!r}"
    if name == "EMBEDDED_URL":
        problem = url_problem(value)
        return f"an http:// or https:// URL with a host ({problem})" if problem else None
    return None


def url_problem(url: Any) -> str | None:
    """Why ``url`` is no address to publish to, or None; never quotes the URL itself (its
    query may hold a key)."""
    if not isinstance(url, str):
        return f"{type(url).__name__}, not a string"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"unparsable: {str(exc).split(':')[0]}"
    if parts.scheme not in ("http", "https"):
        return "no http:// or https:// scheme"
    if not parts.hostname:
        return "no host"
    return None


def _grip_url_problem(url: Any) -> str | None:
    problem = url_problem(url)
    if problem:
        return problem
    # gripcontrol's parse_grip_uri decodes base64 leniently and drops what is empty: a
    # key=base64:!!!! (or key=) left the proxy with no key at all, and with no key any
    # Grip-Sig counts as the proxy's (security probe). The same reading, strictly.
    params = parse_qs(urlsplit(url).query.replace("+", "%2B"), keep_blank_values=True)
    for name in ("key", "verify-key"):
        value = params.get(name, [None])[0]
        if value is None:
            continue
        if value.startswith("base64:"):
            try:
                value = base64.b64decode(value[7:], validate=True)
            except (binascii.Error, ValueError):
                return f"a {name}=base64:... that is not base64"
        if not value:
            return f"an empty {name}= (no key: any Grip-Sig would count as the proxy's)"
    return None


class InvalidKey(ValueError):
    """A publish key no ``Authorization`` header can carry."""


def bearer_token(key: str | bytes) -> str:
    """``key`` as the Bearer token of a publish with no issuer to sign a JWT as (pubcontrol's
    rule; Fastly's API token). A key that is not text (``key=base64:`` of random bytes) can
    sign a JWT, but never be sent as a token: ``InvalidKey``."""
    try:
        token = key.decode("utf-8") if isinstance(key, bytes) else key
    except UnicodeDecodeError:
        token = None
    if token is None or not token.isprintable() or not token.isascii():
        raise InvalidKey(
            "the publish key is sent as a Bearer token (no iss= or control_iss to sign a JWT "
            "as), and it is not printable ASCII text"
        )
    return token


def _entries_problems(name: str, value: Any, *, urls: bool) -> list[str]:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        shape = "GRIP URLs or dicts" if urls else "dicts with 'control_uri'"
        return [f"{name} must be a list of {shape}, not {type(value).__name__}"]
    problems = []
    for i, entry in enumerate(value):
        if isinstance(entry, str) and urls:
            problem = _grip_url_problem(entry)
        elif not isinstance(entry, dict):
            problem = f"{type(entry).__name__}, not a dict with 'control_uri'"
        elif not (entry.get("control_uri") or entry.get("uri")):
            problem = "no 'control_uri'"
        else:
            problem = url_problem(entry.get("control_uri") or entry.get("uri")) or _key_problem(
                entry
            )
        if problem:
            problems.append(f"{name}[{i}]: {problem}")
    return problems


def _key_problem(entry: dict[str, Any]) -> str | None:
    # Keys are signed and verified with as given (HS256 secrets, PEM public keys).
    for name in ("key", "verify_key"):
        value = entry.get(name)
        if value is not None and not isinstance(value, (str, bytes)):
            return f"its {name} is {type(value).__name__}, not a string"
        if value is not None and not value:
            return f"an empty {name} (no key: any Grip-Sig would count as the proxy's)"
    return None


def endpoint_problems() -> list[str]:
    """What is wrong with GRIP_URL, GRIP_PROXIES, PUBLISH_SERVERS and GRIP_PREFIX, each
    named; no key or URL is quoted."""
    problems = []
    url = getattr(settings, "GRIP_URL", None)
    if url and (problem := _grip_url_problem(url)):
        problems.append(f"GRIP_URL: {problem}")
    for name in ("GRIP_PROXIES", "PUBLISH_SERVERS"):
        value = getattr(settings, name, None)
        if value:
            problems += _entries_problems(name, value, urls=name == "PUBLISH_SERVERS")
    verify_key = getattr(settings, "GRIP_VERIFY_KEY", None)
    if verify_key and not isinstance(verify_key, (str, bytes)):
        problems.append(f"GRIP_VERIFY_KEY: {type(verify_key).__name__}, not a string")
    prefix = getattr(settings, "GRIP_PREFIX", "")
    if prefix and not isinstance(prefix, str):
        problems.append(f"GRIP_PREFIX: {type(prefix).__name__}, not a string")
    elif prefix and any(c in ',;"' or not ("!" <= c <= "~") for c in prefix):
        # Grip-Channel is a comma-separated list with ;-parameters (instruct.py): with "app,"
        # a hold would name the channels "app" and the bare one, and publishes "app,name".
        problems.append(
            "GRIP_PREFIX: a comma, semicolon, quote, space or non-ASCII character, which a "
            "Grip-Channel header cannot carry"
        )
    return problems


#: Query parameters carried over from Pushpin's config (``sig_key``) or spelt with an
#: underscore: gripcontrol's parse_grip_uri knows only iss, key, verify-iss and verify-key and
#: leaves any other in the publish URL, so such a key was never used and, with no key, any
#: Grip-Sig counted as the proxy's.
_MISNAMED_PARAMS = {
    "sig_key": "key",
    "sig_iss": "iss",
    "secret": "key",
    "verify_key": "verify-key",
    "verify_iss": "verify-iss",
}


def misnamed_params() -> list[str]:
    """GRIP URLs (GRIP_URL, PUBLISH_SERVERS) with a parameter meant as a GRIP one, each
    named with its right name; never its value."""
    urls = [("GRIP_URL", getattr(settings, "GRIP_URL", None))]
    servers = getattr(settings, "PUBLISH_SERVERS", None)
    if isinstance(servers, (list, tuple)):
        urls += [(f"PUBLISH_SERVERS[{i}]", url) for i, url in enumerate(servers)]
    found = _misnamed_entry_keys()
    for name, url in urls:
        if not isinstance(url, str) or url_problem(url):
            continue
        params = parse_qs(urlsplit(url).query, keep_blank_values=True)
        wrong = [param for param in params if param in _MISNAMED_PARAMS]
        if wrong:
            found.append(
                f"{name}: {', '.join(p + '=' for p in wrong)} is no GRIP URL parameter; write "
                + ", ".join(_MISNAMED_PARAMS[p] + "=" for p in wrong)
            )
    return found


#: What a GRIP_PROXIES or PUBLISH_SERVERS dict may hold (user and pass: basic auth).
_ENTRY_KEYS = ("control_uri", "uri", "control_iss", "iss", "key", "verify_iss", "verify_key",
               "user", "pass")


def _misnamed_entry_keys() -> list[str]:
    """Dict entries with a key drf-grip ignores: ``verify-key`` (the GRIP URL's spelling)
    left a Fastly entry without the key its Grip-Sig is checked with."""
    found = []
    for name in ("GRIP_PROXIES", "PUBLISH_SERVERS"):
        entries = getattr(settings, name, None)
        if not isinstance(entries, (list, tuple)):
            continue
        for i, entry in enumerate(entries):
            for key in entry if isinstance(entry, dict) else ():
                if key not in _ENTRY_KEYS:
                    close = difflib.get_close_matches(str(key), _ENTRY_KEYS, n=1, cutoff=0.7)
                    right = f"; write {close[0]!r}" if close else ""
                    found.append(f"{name}[{i}]: {key!r} is no proxy entry key{right}")
    return found


def proxy_required_problem() -> str | None:
    """A GRIP_PROXY_REQUIRED read from the environment is a string, and "False" is true."""
    value = getattr(settings, "GRIP_PROXY_REQUIRED", False)
    if isinstance(value, bool) or value is None:
        return None
    return f"GRIP_PROXY_REQUIRED must be True or False, not {type(value).__name__} {value!r}"


def drf_grip_problems() -> list[SettingProblem]:
    """Every DRF_GRIP key and value drf-grip cannot use: E002 for a value (it falls back to
    its default), W007 for a key it does not know (a typo keeps the default silently)."""
    conf = getattr(settings, "DRF_GRIP", None) or {}
    if not isinstance(conf, dict):
        return [
            SettingProblem(
                "drf_grip.E002",
                f"DRF_GRIP must be a dict, not {type(conf).__name__}.",
                'Write DRF_GRIP = {"HOLD_TIMEOUT": 30, ...}; every setting keeps its default.',
            )
        ]
    problems = []
    for name, value in conf.items():
        if name not in DEFAULTS:
            close = difflib.get_close_matches(str(name), DEFAULTS, n=1)
            problems.append(
                SettingProblem(
                    "drf_grip.W007",
                    f"DRF_GRIP[{name!r}] is no drf-grip setting and is ignored.",
                    f"Did you mean {close[0]!r}?" if close else "See docs/settings.rst.",
                )
            )
        elif problem := _value_problem(name, value):
            problems.append(
                SettingProblem(
                    "drf_grip.E002",
                    f"DRF_GRIP[{name!r}] must be {problem}.",
                    f"Until it is, drf-grip uses the default, {DEFAULTS[name]!r}.",
                )
            )
    return problems + _hold_range_problems(conf) + _slow_publish_problems(conf)


def _slow_publish_problems(conf: dict[str, Any]) -> list[SettingProblem]:
    # A change that follows another within PUBLISH_INTERVAL waits for the interval's end
    # (change_worker.py, _gather): past a second, held clients get it later than the second
    # drf-grip promises. Written as 50 for 50 ms, it was 50 s.
    interval = conf.get("PUBLISH_INTERVAL", DEFAULTS["PUBLISH_INTERVAL"])
    if _value_problem("PUBLISH_INTERVAL", interval) or interval <= 1:
        return []
    return [
        SettingProblem(
            "drf_grip.W009",
            f"DRF_GRIP['PUBLISH_INTERVAL'] is {interval!r} seconds: under a stream of writes a "
            "change reaches held clients up to that long after it commits.",
            "It is in seconds: 0.05 is 50 ms. Keep it under 1 so that every held client gets "
            "a change within a second.",
        )
    ]


def _hold_range_problems(conf: dict[str, Any]) -> list[SettingProblem]:
    # live_timeout() (rest/policies.py) counts on no hold outlasting HOLD_TIMEOUT_MAX: a
    # longer default hold outlived its live URL, and a change never reached it.
    names = ("HOLD_TIMEOUT_MIN", "HOLD_TIMEOUT", "HOLD_TIMEOUT_MAX")
    if any(_value_problem(name, conf[name]) for name in names if name in conf):
        return []  # named on its own
    low, default, high = (conf.get(name, DEFAULTS[name]) for name in names)
    if low <= default <= high:
        return []
    return [
        SettingProblem(
            "drf_grip.E002",
            f"DRF_GRIP's hold timeouts must be HOLD_TIMEOUT_MIN <= HOLD_TIMEOUT <= "
            f"HOLD_TIMEOUT_MAX, not {low} <= {default} <= {high}.",
            "Raise HOLD_TIMEOUT_MAX or lower HOLD_TIMEOUT: the longest hold bounds how long "
            "a live URL is kept without renewal.",
        )
    ]


@dataclass(frozen=True)
class GripEndpoint:
    """One GRIP proxy (or publish server): where to publish and how to trust its Grip-Sig."""

    control_uri: str
    control_iss: str | None = None
    key: str | bytes | None = None
    verify_iss: str | None = None
    verify_key: str | bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def signature_key(self) -> str | bytes | None:
        """The key a Grip-Sig from this proxy is checked with (Pushpin signs with its control key)."""
        return self.verify_key if self.verify_key is not None else self.key

    @property
    def display_uri(self) -> str:
        """``control_uri`` fit for logs and banners: no user, password or query."""
        return redact_url(self.control_uri)

    def __repr__(self) -> str:  # never show keys, nor credentials in the URI
        return f"GripEndpoint({self.display_uri!r})"


def redact_url(url: str) -> str:
    """``url`` without its user:password and query (either may hold a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _endpoint_from_dict(conf: dict[str, Any]) -> GripEndpoint:
    known = {"control_uri", "control_iss", "key", "verify_iss", "verify_key"}
    uri = conf.get("control_uri") or conf.get("uri")
    if not uri:
        raise ValueError("a GRIP proxy entry needs 'control_uri'")
    return GripEndpoint(
        control_uri=str(uri).rstrip("/"),
        control_iss=conf.get("control_iss") or conf.get("iss"),
        key=conf.get("key"),
        verify_iss=conf.get("verify_iss"),
        verify_key=conf.get("verify_key"),
        extra={k: v for k, v in conf.items() if k not in known | {"uri", "iss"}},
    )


def endpoint_from_url(url: str) -> GripEndpoint:
    """Parse a GRIP URL (``http://host:5561/?iss=pushpin&key=SECRET``)."""
    return _endpoint_from_dict(parse_grip_uri(url))


def embedded_publish_uri() -> str:
    """Where another process publishes to the embedded proxy: ``EMBEDDED_URL``'s path plus
    ``/_grip``. Its query, if any, is not kept (appended after it, ``/_grip`` became part
    of the query; the embedded proxy is authorised with :func:`embedded_key`)."""
    parts = urlsplit(str(grip_settings.EMBEDDED_URL))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/_grip", "", ""))


def embedded_key() -> str:
    """The key shared by the embedded proxy and every process of this project.

    Derived from SECRET_KEY, so a shell or a Celery worker can publish to ``runserver``'s
    embedded proxy with no configuration at all.
    """
    digest = hmac.new(
        settings.SECRET_KEY.encode(), b"drf-grip.embedded-proxy", hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class GripSettings:
    """Lazy view of the GRIP settings; attribute values are cached until settings change."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def reload(self) -> None:
        self._cache.clear()

    def memo(self, name: str, compute):
        """``compute()``, kept until a setting in ``_WATCHED`` changes: for values derived
        from these settings that a request would otherwise work out again."""
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    # -- django-grip settings ------------------------------------------------------------

    @property
    def proxies(self) -> tuple[GripEndpoint, ...]:
        """Proxies from ``GRIP_PROXIES`` and ``GRIP_URL`` (both count; neither is mutated)."""

        def compute():
            _refuse_bad_endpoints()
            out: list[GripEndpoint] = []
            for conf in getattr(settings, "GRIP_PROXIES", None) or ():
                out.append(_endpoint_from_dict(dict(conf)))
            url = getattr(settings, "GRIP_URL", None)
            if url:
                out.append(endpoint_from_url(url))
            return tuple(_unique(out))

        return self.memo("proxies", compute)

    @property
    def publish_servers(self) -> tuple[GripEndpoint, ...]:
        def compute():
            _refuse_bad_endpoints()
            out = []
            for conf in getattr(settings, "PUBLISH_SERVERS", None) or ():
                if isinstance(conf, str):
                    out.append(endpoint_from_url(conf))
                else:
                    out.append(_endpoint_from_dict(dict(conf)))
            return tuple(out)

        return self.memo("publish_servers", compute)

    @property
    def publish_endpoints(self) -> tuple[GripEndpoint, ...]:
        """Every endpoint a publish goes to: proxies and publish servers, each once."""
        return self.memo(
            "publish_endpoints", lambda: tuple(_unique([*self.proxies, *self.publish_servers]))
        )

    @property
    def configured(self) -> bool:
        """True when GRIP_URL, GRIP_PROXIES or PUBLISH_SERVERS names somewhere to publish."""
        return bool(self.publish_endpoints)

    @property
    def prefix(self) -> str:
        def compute():
            _refuse_bad_endpoints()
            return getattr(settings, "GRIP_PREFIX", "") or ""

        return self.memo("prefix", compute)

    @property
    def proxy_required(self) -> bool:
        return bool(getattr(settings, "GRIP_PROXY_REQUIRED", False))

    @property
    def verify_key(self) -> str | bytes | None:
        return getattr(settings, "GRIP_VERIFY_KEY", None) or None

    # -- drf-grip's own options ----------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Read on every publish, hold and hint: Django's lazy settings object costs a few
        # microseconds per access (a profile of the write bench showed it among the
        # publisher's top leaves), so a value is kept until settings change (``_reload``).
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid drf-grip setting: {name!r}")
        return self.memo(name, lambda: _usable(name))


def _usable(name: str) -> Any:
    """``DRF_GRIP[name]``, or its default when the value cannot be used (a process that runs
    no system checks, gunicorn say, still says why in its log)."""
    conf = getattr(settings, "DRF_GRIP", None) or {}
    if not isinstance(conf, dict) or name not in conf:
        return DEFAULTS[name]
    problem = _value_problem(name, conf[name])
    if problem is None:
        return conf[name]
    logger.warning(
        "DRF_GRIP[%r] must be %s; using the default, %r (drf_grip.E002).",
        name, problem, DEFAULTS[name],
    )
    return DEFAULTS[name]


def _refuse_bad_endpoints() -> None:
    """A malformed GRIP_URL, GRIP_PROXIES or PUBLISH_SERVERS is an error with its name, not
    a traceback from inside URL parsing (and never the embedded proxy instead)."""
    problems = endpoint_problems()
    if problems:
        raise ImproperlyConfigured("; ".join(problems) + " (drf_grip.E003)")


def _unique(endpoints: list[GripEndpoint]) -> list[GripEndpoint]:
    seen: set[str] = set()
    out = []
    for ep in endpoints:
        if ep.control_uri not in seen:
            seen.add(ep.control_uri)
            out.append(ep)
    return out


grip_settings = GripSettings()

_WATCHED = {
    "GRIP_URL",
    "GRIP_PROXIES",
    "GRIP_PREFIX",
    "GRIP_PROXY_REQUIRED",
    "GRIP_VERIFY_KEY",
    "PUBLISH_SERVERS",
    "DRF_GRIP",
    "SECRET_KEY",
    "CACHES",  # VERSION_CACHE is usable only while CACHES names it
}


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED:
        grip_settings.reload()


setting_changed.connect(_reload)
