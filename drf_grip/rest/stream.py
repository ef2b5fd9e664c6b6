"""Next links for event streams.

Pushpin fetches a stream's ``Grip-Link rel=next`` as a bare GET: no cookies, no
Authorization, only ``Grip-Last``; and it shares one fetch among all clients whose link has
the same *path* (the query string is ignored; PUSHPIN.md, from Pushpin's engine.cpp). So
who is asking, for which URL, and which version they last saw travel in the link's path
as a signed, expiring token. Two users never get the same link.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, get_script_prefix

from ..conf import grip_settings
from .internal import internal_get, run_view

__all__ = ["NEXT_LINK_PATH", "next_link_for", "serve_next_link"]

NEXT_LINK_PATH = "_grip/next/"
_SALT = "drf_grip.next-link"


def next_link_for(request: HttpRequest, etag: str, delivery: str) -> str:
    """The path of the next link for this stream, carrying a signed token."""
    previous = getattr(request, "drf_grip_next", None)
    if previous is not None:
        payload = dict(previous, e=etag)
    else:
        user = getattr(request, "user", None)
        user_pk = None
        if user is not None and user.is_authenticated and delivery != "shared":
            user_pk = str(user.pk)
        payload = {
            "u": user_pk,
            "p": request.get_full_path(),
            "h": request.get_host(),
            "s": request.scheme,
            "e": etag,
            # A stream of its own: no fetch is ever shared with another client's stream.
            "n": secrets.token_urlsafe(6),
        }
    token = signing.dumps(payload, salt=_SALT, compress=True)
    return f"{get_script_prefix()}{NEXT_LINK_PATH}{token}/"


def _load(token: str) -> dict[str, Any] | None:
    try:
        payload = signing.loads(token, salt=_SALT, max_age=int(grip_settings.NEXT_LINK_MAX_AGE))
    except signing.BadSignature:  # includes SignatureExpired
        return None
    return payload if isinstance(payload, dict) and "p" in payload else None


def serve_next_link(request: HttpRequest, token: str) -> HttpResponse:
    """Answer Pushpin's next-link fetch with the next event for that stream, if any."""
    if not request.grip.proxied:
        return HttpResponse("Next links are for the GRIP proxy.\n", status=403, content_type="text/plain")
    payload = _load(token)
    if payload is None:
        # Expired or forged: end the stream's updates; the client's EventSource reconnects.
        return HttpResponse(b"event: error\ndata: {}\n\n", content_type="text/event-stream")
    path, _, query = payload["p"].partition("?")
    try:
        inner = internal_get(
            payload.get("s") or request.scheme,
            payload.get("h") or request.get_host(),
            path,
            query,
            "text/event-stream",
        )
    except Resolver404:
        return HttpResponse(b"event: delete\ndata: {}\n\n", content_type="text/event-stream")
    inner.grip = request.grip
    inner.grip_proxied = request.grip_proxied
    inner.wscontext = None
    inner.drf_grip_next = payload
    if payload.get("u") is not None:
        user = get_user_model()._default_manager.filter(pk=payload["u"], is_active=True).first()
        if user is None:
            return HttpResponse(b"event: error\ndata: {}\n\n", content_type="text/event-stream")
        inner.user = user
        inner._force_auth_user = user
    return run_view(inner)
