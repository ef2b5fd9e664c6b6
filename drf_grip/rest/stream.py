"""Next links for event streams: one link per subscriber, each stream's state in the
``prev-id`` of a channel of its own.

Pushpin fetches a stream's ``Grip-Link rel=next`` as a bare GET: no cookies, no
Authorization, only ``Grip-Last`` (one per channel held with a prev-id), and it logs the
link at INFO (Pushpin 1.36, handler/httpsession.cpp ``requestNextLink``). And it re-fetches
every stream of a channel about 1 s after the channel's first subscription, and every stream
whose publish did not follow its hold, through a limiter of 10 fetches a second that batches
streams (up to 100 at a time) only when their link is the same (``updateLimiter``, keyed by
the link). With a link per stream, 30 streams opened together on a fresh Pushpin queued a
change up to 2.6 s. So:

- every stream of one subscriber has the same link: ``/_grip/next/`` for anonymous ones,
  ``/_grip/next/<user>/`` (a keyed hash of the user's pk) for a signed-in user's, so two
  users never share a link; what tells streams apart is ``Grip-Last`` for the channel
  ``drf.next``, held with a signed token as its prev-id and never published to. Pushpin
  shares one fetch only among streams whose link path *and* ``Grip-Last`` are the same
  (handler/handlerengine.cpp, "auto share"), and a client cannot send ``Grip-Last`` through
  it (it strips ``Grip-*`` request headers): the link in the log is worth nothing, and a
  replay of it carries no token;
- the stream's subscriber GET (its headers, credentials included) is kept server-side, in
  Django's cache under a random stream id; the token carries only that id and a counter;
- each fetch moves the counter on, so an old token finds nothing;
- each fetch replays the subscriber's GET through the middleware and authentication, so a
  deleted token, a flushed session or a deactivated user ends the stream at the next change;
- a stream lives ``NEXT_LINK_MAX_AGE`` seconds from when it opened, never extended.

Anonymous subscribers of a shared URL are the exception: there is nothing of theirs to keep
or revoke, and what they get is what anyone's GET of that URL gets. They share one *public*
token per live URL (and per minute of opening), which never moves on, so Pushpin's shared
fetch serves all of them that have seen the same version at once. A public fetch learns what
the stream has seen from the live URL's ``Grip-Last``, so only a stream held at a version
naming the event it was sent gets a public link (``RealtimeMixin.stream_response``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from typing import Any

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix
from django.utils.crypto import salted_hmac

from ..conf import grip_settings
from ..protocol import Channel
from .context import SHARED, RealtimeContext, RealtimePolicy
from .render import (
    RecordedRequest,
    carries_credentials,
    host_allowed,
    record,
    revocation_status,
    revoked_status,
    server_prefix,
    subscriber_get,
    undecided,
)
from .shared import tag_of
from .sse import EVENT_STREAM, format_event, media_type_as
from .store import cache_failed, state_cache, touch
from .versions import SHARED_PREFIX

__all__ = [
    "NEXT_LINK_PATH",
    "STREAM_CHANNEL",
    "next_link_for",
    "serve_next_link",
    "end_of_stream",
    "ended_stream",
    "link_timeout",
]

logger = logging.getLogger("drf_grip.subscribe")

NEXT_LINK_PATH = "_grip/next/"
#: Held by every stream with its token as prev-id; nothing is ever published to it.
STREAM_CHANNEL = "drf.next"
_SALT = "drf_grip.next-link"
_STATE = "drf_grip:stream:"
#: The counter of a public link: it never moves on.
_PUBLIC = -1


def restart_stream(why: str = "this stream's state is gone") -> HttpResponse:
    """No event and no instruction: the proxy ends the stream, and an ``EventSource``
    reconnects by itself with ``Last-Event-ID`` (its GET decides afresh). For a next link
    whose stream state is gone (the cache flushed or restarted, a stale or made-up link), or
    whose replay met a server error: a final ``event: error`` means "no longer allowed"
    (docs/sse.rst), and clients that follow the docs, drf-grip's own live.js among them,
    stop for good on it."""
    return _last_words(f": {why}: reconnect\n\n".encode())


def end_of_stream(event: str, status: int | None = None) -> HttpResponse:
    """A last event and no instruction: the proxy ends the stream (no hold, no next link);
    an ``EventSource`` then reconnects and its GET decides afresh. An ``error`` event says
    the ``status`` (401 or 403) a GET by the subscriber now gets."""
    data = json.dumps({"status": status}).encode() if status else b"{}"
    return _last_words(format_event(data, event=event))


def ended_stream(status: int, revoked: bool = False) -> HttpResponse:
    """How a stream ends when the replay of its GET answered ``status`` (a next link's, or
    the check of its credentials after a render): ``event: error`` for revoked or refused
    credentials, ``event: delete`` for a 404 or 410, and otherwise no event (a server error,
    a throttle, a URL no longer live), so that its client reconnects and its own GET decides:
    a final ``error`` made clients stop for good over an outage of a few seconds."""
    if revoked or status in (401, 403):
        return end_of_stream("error", revocation_status(status))
    if status in (404, 410):
        return end_of_stream("delete")
    return restart_stream(f"answered {status}")


def _last_words(body: bytes) -> HttpResponse:
    """A stream's last bytes with no GRIP instruction, so the proxy ends it there."""
    response = HttpResponse(body, content_type=EVENT_STREAM)
    response["Cache-Control"] = "no-cache"
    return response


def _signer() -> signing.Signer:
    # "." rather than ":" between payload and signature: the token is then an HTTP token,
    # sent unquoted as a prev-id and echoed unquoted in Grip-Last.
    return signing.Signer(salt=_SALT, sep=".")


def _user_part(user: str | None) -> str:
    """The path part of a signed-in user's links: a keyed hash, so a log shows no pk."""
    if user is None:
        return ""
    return salted_hmac(_SALT, user, algorithm="sha256").hexdigest()[:20]


def _link(state: dict[str, Any]) -> tuple[str, Channel]:
    # No timestamp in the token (expiry is in the state): the same stream state and counter
    # always make the same token, which a public token's sharing depends on.
    token = _signer().sign_object([state["sid"], state["n"]])
    part = _user_part(state["user"])
    path = f"{_prefix_of(state)}/{NEXT_LINK_PATH}{part + '/' if part else ''}"
    return path, Channel(STREAM_CHANNEL, token)


def _link_prefix(request: Any) -> str:
    """The path before ``_grip/next/`` in this stream's links, kept in its state: the proxy
    fetches a link from the origin server, so it is what that server takes off a path it
    receives (``server_prefix``), which a fetch's replay, a request drf-grip builds, cannot
    tell. Not ``get_script_prefix()``: with ``FORCE_SCRIPT_NAME`` behind a proxy that strips
    the prefix, Django 4.2 under ASGI and every version under WSGI answered 404, and so did
    every version under uvicorn's ``--root-path``, which uvicorn prepends again."""
    return server_prefix(getattr(request, "_request", request)).rstrip("/")


def _prefix_of(state: dict[str, Any]) -> str:
    # A stream opened before its state kept the prefix: its links stay as they were.
    prefix = state.get("prefix")
    return get_script_prefix().rstrip("/") if prefix is None else prefix


#: Anonymous streams of one live URL opened within this many seconds of the first share its
#: public link.
_PUBLIC_WINDOW = 60
_PUBLIC_KEY = "drf_grip:public-link:"


def _public_link(
    request: Any, channels: list[str], etag: str, versioned: bool
) -> tuple[str, Channel, int]:
    """The token every anonymous stream of this live URL opened within ``_PUBLIC_WINDOW`` of
    the first one shares. The first stream's state names it: streams that follow find it
    by the URL's key (one cache read), and those that race the first take the first's
    (``add``).
    Not windows of the clock: streams that connected together across a window's edge got
    two links, and Pushpin fetched each (CI, ``test_realtime.py``, "12 tokens for one
    URL")."""
    max_age = int(grip_settings.NEXT_LINK_MAX_AGE)
    prefix = _link_prefix(request)
    # The prefix too: the link the first stream's state keeps is every sharer's.
    key = "\n".join([*channels, str(versioned), prefix])
    name = _PUBLIC_KEY + hashlib.sha256(key.encode()).hexdigest()[:32]
    cache = state_cache()
    found = cache.get(name)
    if not (isinstance(found, tuple) and len(found) == 2):
        # Lives a window past the age of a link: a stream joining at the window's end
        # still has its whole ``NEXT_LINK_MAX_AGE``.
        expires = time.time() + max_age + _PUBLIC_WINDOW
        sid = "p" + secrets.token_hex(16)
        state = {
            "sid": sid,
            "n": _PUBLIC,
            "req": _stream_get(request, credentials=False),
            "user": None,
            "etag": etag,
            "exp": expires,
            "channel": channels[0],  # the live URL's, whose versions name ETags
            "prefix": prefix,
        }
        # The state before the name: a stream that finds the name finds its state.
        cache.set(_STATE + sid, state, _kept_for(expires))
        found = (sid, expires)
        if not cache.add(name, found, _PUBLIC_WINDOW):
            found = cache.get(name) or found  # a stream opened together was first
    sid, expires = found
    shared = {"sid": sid, "n": _PUBLIC, "user": None, "prefix": prefix}
    return (*_link(shared), link_timeout(expires))


def _stream_get(request: Any, *, credentials: bool) -> dict[str, Any]:
    """The subscriber's GET as its next link replays it: asking for the stream as its own
    negotiation accepted it, media-type parameters included (``version=2`` for DRF's
    AcceptHeaderVersioning; a bare ``text/event-stream`` rendered version 1: black-box
    probe), and without the weight."""
    django_request = getattr(request, "_request", request)
    accepted = getattr(request, "accepted_media_type", None) or EVENT_STREAM
    recorded = record(django_request, credentials=credentials)
    return recorded.with_headers(HTTP_ACCEPT=media_type_as(accepted, EVENT_STREAM)).as_dict()


def _is_public(request: Any, policy: RealtimePolicy) -> bool:
    """A shared stream whose subscriber presents no identity: anonymous, no ``auth``, and
    no credentials at all (the public link's fetch replays the GET without them)."""
    user = getattr(request, "user", None)
    return (
        policy.delivery == SHARED
        and bool(policy.channels)
        and policy.channels[0].startswith(SHARED_PREFIX)
        and (user is None or not user.is_authenticated)
        and getattr(request, "auth", None) is None
        and not carries_credentials(getattr(request, "_request", request))
    )


def next_link_for(
    request: Any,
    context: RealtimeContext | None,
    etag: str,
    versioned: bool = False,
    policy: RealtimePolicy | None = None,
    live: Channel | None = None,
    as_user: bool = True,
) -> tuple[str, Channel, int]:
    """The next link of this stream, the channel to hold that carries its token, and the
    link's timeout (:func:`link_timeout`): a new stream's first, or the next one of a fetch.

    ``policy`` None asks for a link of the stream's own: a public link's fetch then leaves
    the shared token for one that remembers ``etag``, what this answer leaves the stream
    with (``RealtimeMixin.stream_response`` says when). ``live``: a shared stream's live
    URL channel as this answer holds it (:func:`_what_it_has`). ``as_user``: the stream's
    data is its user's (private delivery), and its link ends once its credentials no longer
    name that user; a shared stream's is anyone's who may read it, so a link of a signed-in
    subscriber whose session ended goes on as that subscriber's fresh GET does, anonymously
    (a fetch of its link ended it with ``event: error`` 403 while its pushes went on: a
    security probe), unless the view's permissions refuse it."""
    held = {"channel": live.name, "held": live.prev_id} if live is not None else {}
    if context is not None and context.role == "next-link":
        state = context.state
        if state["n"] == _PUBLIC and policy is None:
            own = {**state, **held, "sid": secrets.token_urlsafe(18), "n": 0, "etag": etag}
            return _own_link(own)
        return (*_link(state), link_timeout(state["exp"]))
    if policy is not None and _is_public(request, policy):
        return _public_link(request, policy.channels, etag, versioned)
    user = getattr(request, "user", None)
    return _own_link({
        "sid": secrets.token_urlsafe(18),
        "n": 0,
        "req": _stream_get(request, credentials=True),
        "user": str(user.pk) if as_user and user is not None and user.is_authenticated else None,
        "etag": etag,
        **held,
        "exp": time.time() + int(grip_settings.NEXT_LINK_MAX_AGE),
        "prefix": _link_prefix(request),
    })


def _what_it_has(state: dict[str, Any], last: dict[str, str]) -> str | None:
    """The ETag of the last event a stream with a link of its own has: the one its link
    last sent (``etag``), or, for a shared stream that took a push since (Pushpin names
    the push's id in ``Grip-Last``, and that version names the render it carried), that
    push's. Remembering only what the link sent, a signed-in subscriber's stream got each
    change twice: pushed, then sent again by the next fetch of its link (every
    ``NEXT_LINK_TIMEOUT`` at least). A push that was a hint names no render (its version
    is ``unrendered-``), and the fetch sends the render."""
    channel = state.get("channel")
    seen = last.get(channel) if channel else None
    if seen and seen != state.get("held"):
        return f'"{tag_of(seen)}"'
    return state["etag"]


def _own_link(state: dict[str, Any]) -> tuple[str, Channel, int]:
    """The link of a stream state kept for this stream alone, from its first fetch on."""
    state_cache().set(_STATE + state["sid"], state, _kept_for(state["exp"]))
    return (*_link(state), link_timeout(state["exp"]))


def _kept_for(expires: float) -> int:
    """How long a stream's state is kept from now: until its end (``exp``), and no longer
    than two of its next links' timeouts past now, since a live stream fetches its next
    link at least that often and each fetch keeps it again. A stream whose client left
    fetches nothing: its state went only at its end, an hour later, and an anonymous client
    opening streams on made-up query strings piled them up (security probe)."""
    remaining = max(1, math.ceil(expires - time.time()))
    return min(remaining, 2 * int(grip_settings.NEXT_LINK_TIMEOUT) + 60)


#: Per process: when each public stream state was last kept again (``time.monotonic()``).
_kept_public: dict[str, float] = {}


def _keep_public(cache: Any, sid: str, expires: float) -> None:
    """A public stream's state, fetched by its streams' next links, kept again at most
    every half of a link's timeout per process."""
    now = time.monotonic()
    if now - _kept_public.get(sid, float("-inf")) < int(grip_settings.NEXT_LINK_TIMEOUT) / 2:
        return
    if len(_kept_public) > 10_000:
        _kept_public.clear()
    _kept_public[sid] = now
    touch(cache, _STATE + sid, _kept_for(expires))


def link_timeout(expires: float) -> int:
    """The ``timeout`` of the next link of a stream that ends at ``expires`` (its state's
    ``exp``): ``NEXT_LINK_TIMEOUT``, and no later than that end (``NEXT_LINK_MAX_AGE``). A
    fetch is what ends a stream: left at ``NEXT_LINK_TIMEOUT``, a quiet stream outlived its
    age until the next change, whose fetch then ended it without the change, and the client
    got the change only after its reconnection delay (an ``EventSource`` waits about 3 s).
    Ended on time, it has reconnected before any change."""
    # One second past the end, so that the fetch finds the stream over (serve_next_link).
    remaining = max(1, math.ceil(expires - time.time()) + 1)
    return min(int(grip_settings.NEXT_LINK_TIMEOUT), remaining)


def _load(token: str) -> tuple[str, int] | None:
    try:
        payload = _signer().unsign_object(token)
    except signing.BadSignature:
        return None
    if (
        isinstance(payload, list)
        and len(payload) == 2
        and isinstance(payload[0], str)
        and isinstance(payload[1], int)
    ):
        return payload[0], payload[1]
    return None


def serve_next_link(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Answer Pushpin's next-link fetch with the next event for that stream, if any."""
    try:
        return _serve_next_link(request, rest)
    except Exception as exc:
        if not cache_failed(exc):
            raise
        # The state cache does not answer or refuses writes (Redis out of memory): the
        # stream cannot move on. A 500 made Pushpin fetch again 1-2 s later, and again, the
        # client told nothing, for as long as it lasted. Ended instead, with no event: the
        # client reconnects, and its GET is answered as a direct one (mixins.dispatch).
        logger.warning(
            "drf-grip's state cache does not answer or refuses writes: a stream's next "
            "link ends it (%s)", exc,
        )
        return restart_stream()


def _serve_next_link(request: HttpRequest, rest: str) -> HttpResponse:
    grip = getattr(request, "grip", None)
    if grip is None or not grip.proxied:
        return HttpResponse(
            "Next links are for the GRIP proxy.\n", status=403, content_type="text/plain"
        )
    # Only the proxy sends Grip-Last.
    loaded = _load(grip.last.get(STREAM_CHANNEL, ""))
    if loaded is None:
        return restart_stream()
    sid, counter = loaded
    cache = state_cache()
    state = cache.get(_STATE + sid)
    if not isinstance(state, dict) or state.get("n") != counter or state["exp"] <= time.time():
        # Moved on (a replayed or stale link), expired or unknown (the cache lost it):
        # nothing for this link.
        return restart_stream()
    if rest != _user_part(state["user"]):
        # Not this stream's link: one of an older version (its token was in the path) or
        # made up. The stream ends; its client reconnects with Last-Event-ID.
        return restart_stream()
    public = counter == _PUBLIC
    remaining = _kept_for(state["exp"])
    if public:
        _keep_public(cache, sid, state["exp"])
        # Shared by many streams: what this one has seen is the live URL's version that
        # Pushpin names, and that version names an ETag (shared.py).
        seen = grip.last.get(state.get("channel", ""))
        etag = f'"{tag_of(seen)}"' if seen else None
    else:
        # Move the stream on before rendering: a replay of this link now finds nothing.
        state["n"] = counter + 1
        cache.set(_STATE + sid, state, remaining)
        etag = _what_it_has(state, grip.last)
    recorded = RecordedRequest.from_dict(state["req"])  # asks for the stream (_stream_get)
    if not host_allowed(recorded):
        # Recorded before a deploy narrowed ALLOWED_HOSTS: the replay made Django log a
        # DisallowedHost traceback for each such stream, and told it "error". Ended with one
        # warning instead: the client reconnects, and its GET gets the 400 a fresh one does.
        logger.warning(
            "drf-grip ended a stream of %s: its Host is not in ALLOWED_HOSTS any more",
            recorded.path,
        )
        return restart_stream()
    context = RealtimeContext(role="next-link", etag=etag, user=state["user"], state=state)
    response, inner = subscriber_get(
        recorded,
        context,
        grip_sig=request.META.get("HTTP_GRIP_SIG"),
        grip_last=request.META.get("HTTP_GRIP_LAST"),
    )
    continues = response.has_header("Grip-Hold")
    if context.revoked or context.policy is None or not continues:
        # Revoked credentials (401/403, another user), a URL that is no longer live, or an
        # answer that does not continue the stream: end it. The end is a 2xx: Pushpin takes
        # any other answer to a next link for a failed fetch, shows the client none of it and
        # fetches again 1-2 s later (handler/httpsession.cpp, outReq_error); the view's own
        # 401 for a deleted token is rendered as text/event-stream, but it is not an event.
        if not (
            200 <= response.status_code < 300
            and response.get("Content-Type", "").startswith(EVENT_STREAM)
            and not context.revoked
        ):
            return ended_stream(response.status_code, context.revoked)
    revoked = None if public or not response.content else revoked_status(recorded, state["user"])
    if revoked is not None:
        # Revoked while this render ran (it authenticated first), or the check met a server
        # error (revoked or not, nobody can tell): nothing of the render is sent, also not
        # the last event of a stream that ends for its client to reconnect.
        return ended_stream(revoked, revoked=not undecided(revoked))
    if not continues:
        return response
    answered = {"etag": context.result_etag or state["etag"]}
    if state.get("channel"):
        answered["held"] = context.result_held
    if not public and any(state.get(k) != v for k, v in answered.items()):
        state.update(answered)
        cache.set(_STATE + sid, state, remaining)
    return response
