"""Shared delivery: one render per live URL, pushed to every subscriber (DESIGN.md §3).

A live URL is what decides the bytes of a representation: scheme, host, path, the query
parameters the view actually reads (filters, search, ordering, pagination, ``format``)
and the negotiated media type. Cache-busters and client ids do not make new channels.
Live URLs are kept in Django's cache so every publishing process sees them.
"""

from __future__ import annotations

import json
import secrets
import logging
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.cache import caches
from django.db import models
from django.urls import Resolver404

from ..conf import grip_settings
from ..grip.publisher import publish
from . import channels as names
from .etag import make_etag
from .internal import internal_get, run_view
from .sse import EVENT_STREAM, format_event
from .versions import add_version, read_version, set_version

__all__ = ["LiveUrl", "live_url", "remember_live_url", "publish_shared", "render_stats"]

logger = logging.getLogger("drf_grip.publish")

_INDEX = "drf_grip:live:"
#: How many shared representations were rendered by the publisher (tests assert on it).
render_stats: dict[str, int] = {"renders": 0}


@dataclass(frozen=True)
class LiveUrl:
    scheme: str
    host: str
    path: str
    query: str
    media_type: str

    @property
    def key(self) -> str:
        return f"{self.media_type} {self.scheme}://{self.host}{self.path}?{self.query}"

    @property
    def relative(self) -> str:
        """Path and used query: how gateway messages name this representation (gateway.py)."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def channel(self) -> str:
        return names.url_channel(self.key)


def used_query_params(view) -> set[str] | None:
    """Query parameters this view reads; None when a backend's parameters are unknown."""
    used = {"format"}
    from django_filters.rest_framework import DjangoFilterBackend
    from rest_framework.filters import OrderingFilter, SearchFilter

    for backend_class in getattr(view, "filter_backends", ()) or ():
        backend = backend_class()
        if isinstance(backend, DjangoFilterBackend):
            filterset_class = backend.get_filterset_class(view, view.get_queryset())
            if filterset_class is not None:
                filterset = filterset_class()
                for name, field in filterset.form.fields.items():
                    used.add(name)
                    # Range-like filters read NAME_min, NAME_after... (MultiWidget suffixes).
                    for suffix in getattr(getattr(field, "widget", None), "suffixes", ()) or ():
                        used.add(f"{name}_{suffix}" if suffix else name)
        elif isinstance(backend, SearchFilter):
            used.add(backend.search_param)
        elif isinstance(backend, OrderingFilter):
            used.add(backend.ordering_param)
        else:
            return None
    paginator = getattr(view, "paginator", None)
    for attr in (
        "page_query_param",
        "page_size_query_param",
        "limit_query_param",
        "offset_query_param",
        "cursor_query_param",
    ):
        value = getattr(paginator, attr, None)
        if value:
            used.add(value)
    return used


def live_url(request, view) -> LiveUrl:
    used = used_query_params(view)
    params = sorted(
        (k, v) for k, values in request.query_params.lists() for v in values if used is None or k in used
    )
    media_type = request.accepted_renderer.media_type if hasattr(request, "accepted_renderer") else ""
    if media_type == EVENT_STREAM:
        media_type = "application/json"  # a stream carries the JSON representation
    return LiveUrl(request.scheme, request.get_host(), request.path, urlencode(params), media_type)


def _model_of(view) -> type[models.Model]:
    return view.get_realtime_model()


def remember_live_url(request, view, etag: str) -> None:
    url = live_url(request, view)
    # The version of a shared channel names the ETag its subscribers hold; the publisher skips
    # a render whose ETag equals it (that page did not change). Only the publisher moves it:
    # a hold that already sees a newer representation must not make the publisher skip the
    # push that the other subscribers are waiting for. It is written before the URL is listed,
    # so a publisher that finds the URL also finds its version (and pushes nothing stale).
    add_version(url.channel, _new_version(etag.strip('"')))
    cache = caches[grip_settings.LIVE_URL_CACHE]
    key = _INDEX + _model_of(view)._meta.label_lower
    index: dict[str, Any] = cache.get(key) or {}
    if url.key not in index:
        index[url.key] = asdict(url)
    cache.set(key, index, timeout=int(grip_settings.LIVE_URL_TIMEOUT))


def _new_version(tag: str) -> str:
    """A version naming a representation, unique per publish: Pushpin drops a second item
    with the same (channel, id) within 60 s, and a page can go A -> B -> A -> B in a minute."""
    return f"{tag}.{secrets.token_hex(4)}"


def _names(version: str | None, tag: str) -> bool:
    return version is not None and version.split(".", 1)[0] == tag


def _render(url: LiveUrl) -> tuple[int, bytes, str]:
    """Render a live URL as a subscriber would get it; returns status, body, content type."""
    try:
        request = internal_get(url.scheme, url.host, url.path, url.query, url.media_type or "*/*")
    except Resolver404:
        return 404, b"", ""
    request.drf_grip_render = True
    render_stats["renders"] += 1
    response = run_view(request)
    return response.status_code, response.content, response.get("Content-Type", "")


def _ws_message(url: LiveUrl, status: int, etag: str | None = None, body: bytes = b"") -> str:
    """A change message for WebSocket gateway subscribers (gateway.py):
    ``{"event": "change", "url": LIVE, "status": 200, "etag": ..., "data": ...}``, where
    ``LIVE`` is the ``url`` the gateway answered the subscription with. Gone or hidden:
    ``{"event": "change", "url": LIVE, "status": 404}``."""
    head = json.dumps({"event": "change", "url": url.relative, "status": status})
    if status != 200:
        return head
    head = head[:-1] + ", " + json.dumps({"etag": etag})[1:-1]
    return head + ', "data": ' + body.decode() + "}"


def publish_shared(model: type[models.Model]) -> None:
    cache = caches[grip_settings.LIVE_URL_CACHE]
    index: dict[str, Any] = cache.get(_INDEX + model._meta.label_lower) or {}
    for entry in index.values():
        url = LiveUrl(**entry)
        try:
            status, body, content_type = _render(url)
        except Exception:
            logger.exception("drf-grip could not render %s for subscribers", url.path)
            continue
        channel = url.channel
        previous = read_version(channel)
        if status == 200:
            etag = make_etag(body)
            if _names(previous, etag.strip('"')):
                continue  # this representation did not change: its subscribers sleep on
            formats = {
                # Pushpin merges published headers onto the held response's: always send
                # ETag and Content-Type, or the client keeps the hold's old ETag.
                "http-response": {
                    "code": 200,
                    "reason": "OK",
                    "headers": {"ETag": etag, "Content-Type": content_type},
                    "body": body.decode(),
                },
                "http-stream": {"content": format_event(body, id=etag).decode()},
                "ws-message": {"content": _ws_message(url, 200, etag, body)},
            }
            version = _new_version(etag.strip('"'))
            set_version(channel, version)
            publish(channel, formats, id=version, prev_id=previous)
        else:
            # Gone or hidden: a hint gives each long-poll a clean answer from the origin.
            if _names(previous, f"status-{status}"):
                continue
            version = _new_version(f"status-{status}")
            set_version(channel, version)
            from .publishing import CLOSE, delete_formats

            formats = {**delete_formats(), "ws-message": {"content": _ws_message(url, status)}}
            publish(channel, formats, id=version, prev_id=previous)
            if status in (404, 410):
                # With the prev-id streams now hold, or Pushpin re-fetches (publishing.CLOSE).
                publish(channel, CLOSE, id=f"{version}.closed", prev_id=version)
