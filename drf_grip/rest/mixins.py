"""``RealtimeMixin``: the list and detail URLs of a DRF view become live (DESIGN.md §1).

A GET answers with a strong ETag; ``If-None-Match`` with the current ETag is held by the
GRIP proxy until the representation changes; ``Accept: text/event-stream`` opens a stream.
Everything a plain GET does (authentication, permissions, ``get_queryset``, filters,
pagination) runs first, so a subscription sees exactly what a fresh GET would.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpResponse, HttpResponseNotModified
from rest_framework.request import Request
from rest_framework.response import Response

from ..conf import grip_settings
from ..grip.instruct import Channel
from . import channels as names
from .etag import etag_matches, make_etag
from .sse import EVENT_STREAM, KEEP_ALIVE, EventStreamRenderer, format_event
from .versions import ensure_versions, read_versions

__all__ = ["RealtimeMixin", "ListRealtimeMixin", "RetrieveRealtimeMixin", "parse_prefer_wait"]

PRIVATE = "private"
SHARED = "shared"

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,9})\"?\s*(?:$|[,;])", re.IGNORECASE)


def parse_prefer_wait(header: str | None) -> int | None:
    """``Prefer: wait=N`` (RFC 7240); an unparseable preference is ignored, as the RFC says."""
    if not header:
        return None
    match = _WAIT.search(header)
    return int(match.group(1)) if match else None


class _Subscription:
    """What one realtime GET subscribes to, decided before the representation is computed."""

    def __init__(self, channels: list[str], versions: dict[str, str | None]) -> None:
        self.channels = channels
        self.versions = versions

    def grip_channels(self, request) -> list[Channel]:
        # A proxy retry tells us the last id it saw (Grip-Last). When it differs from ours
        # (a lost publish, a flushed cache), holding with our version would make Pushpin
        # re-request at once, forever: the representation was just computed afresh, so
        # take the proxy's id and let the next publish (whose prev-id won't match) re-request.
        last = getattr(getattr(request, "grip", None), "last", {}) or {}
        return [
            Channel(ch, last.get(ch, self.versions.get(ch)) or None) for ch in self.channels
        ]


class _RealtimeBase:
    """Shared machinery of the list and detail mixins."""

    #: ``"private"`` (default) re-runs each held request; ``"shared"`` renders once per URL.
    realtime_delivery: str | None = None
    #: The model whose changes wake this view; defaults to ``queryset.model``.
    realtime_model = None
    realtime_kind: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from .registry import register_view

        register_view(cls)

    # -- hooks ------------------------------------------------------------------------------

    def get_realtime_model(self):
        return type(self).resolve_realtime_model()

    @classmethod
    def resolve_realtime_model(cls):
        if cls.realtime_model is not None:
            return cls.realtime_model
        queryset = getattr(cls, "queryset", None)
        if queryset is not None:
            return queryset.model
        serializer = getattr(cls, "serializer_class", None)
        meta = getattr(serializer, "Meta", None)
        return getattr(meta, "model", None)

    def get_realtime_delivery(self) -> str:
        return self.realtime_delivery or grip_settings.DEFAULT_DELIVERY

    def get_realtime_kind(self) -> str | None:
        """``"list"``, ``"detail"`` or None when this request is not a realtime read."""
        action = getattr(self, "action", None)
        if action is not None:
            return {"list": "list", "retrieve": "detail"}.get(action)
        lookup = getattr(self, "lookup_url_kwarg", None) or getattr(self, "lookup_field", "pk")
        if self.request.method in ("GET", "HEAD"):
            return "detail" if lookup in self.kwargs else self.realtime_kind or "list"
        return None

    def get_realtime_channels(self) -> list[str]:
        """Channels a hold subscribes to. Only the server picks them (DESIGN.md §3)."""
        model = self.get_realtime_model()
        if self.get_realtime_delivery() == SHARED:
            from .shared import live_url

            return [names.url_channel(live_url(self.request, self).key)]
        if self._realtime_kind == "detail":
            lookup = self.lookup_url_kwarg or self.lookup_field
            value = self.kwargs[lookup]
            pk = value if self.lookup_field in ("pk", model._meta.pk.name) else None
            if pk is None:
                # Looked up by another field: the object channel is only known once the
                # object is; the bulk channel plus the list channel cover every change.
                return [names.list_channel(model), names.bulk_channel(model)]
            return [names.object_channel(model, pk), names.bulk_channel(model)]
        return [names.list_channel(model)]

    def get_hold_timeout(self) -> int:
        wait = parse_prefer_wait(self.request.META.get("HTTP_PREFER"))
        if wait is None:
            return int(grip_settings.HOLD_TIMEOUT)
        return min(max(wait, int(grip_settings.HOLD_TIMEOUT_MIN)), int(grip_settings.HOLD_TIMEOUT_MAX))

    def get_etag(self, content: bytes) -> str:
        return make_etag(content)

    def get_renderers(self):
        renderers = super().get_renderers()
        if not any(r.media_type == EVENT_STREAM for r in renderers):
            renderers.append(EventStreamRenderer())
        return renderers

    # -- request cycle ----------------------------------------------------------------------

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self._realtime_kind = self.get_realtime_kind()
        self._subscription = None
        if self._realtime_kind and self.get_realtime_model() is not None:
            channels = self.get_realtime_channels()
            # Read versions BEFORE computing the representation: a commit in between then
            # shows up as a prev-id mismatch, and Pushpin re-requests at once (PUSHPIN.md).
            if self.get_realtime_delivery() == SHARED:
                versions = read_versions(channels)  # a shared channel's version is its ETag
            else:
                versions = ensure_versions(channels)
            self._subscription = _Subscription(channels, versions)

    def finalize_response(self, request, response, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        subscription = getattr(self, "_subscription", None)
        if subscription is None or not isinstance(response, Response):
            return response
        gateway = getattr(request._request, "drf_grip_gateway", None)
        if gateway is not None:
            return self.gateway_response(request, response, subscription, gateway)
        if self.is_event_stream(request):
            return self.stream_response(request, response, subscription)
        if response.status_code != 200:
            return response
        return self.longpoll_response(request, response, subscription)

    def is_event_stream(self, request) -> bool:
        renderer = getattr(request, "accepted_renderer", None)
        return isinstance(renderer, EventStreamRenderer)

    def render_representation(self, response: Response) -> tuple[bytes, str]:
        response.render()
        return response.content, self.get_etag(response.content)

    def longpoll_response(self, request, response: Response, subscription: _Subscription):
        content, etag = self.render_representation(response)
        response["ETag"] = etag
        if not etag_matches(request.META.get("HTTP_IF_NONE_MATCH"), etag):
            return response
        held = HttpResponseNotModified()
        for header in ("ETag", "Vary", "Cache-Control", "Content-Location"):
            if header in response:
                held[header] = response[header]
        timeout = self.get_hold_timeout()
        if request.META.get("HTTP_PREFER") and parse_prefer_wait(request.META["HTTP_PREFER"]):
            held["Preference-Applied"] = f"wait={timeout}"
        instruct = request._request.grip.start_instruct()
        instruct.add_channels(subscription.grip_channels(request._request))
        instruct.set_hold_longpoll(timeout)
        self.on_hold(request, subscription, etag)
        return held

    def stream_response(self, request, response: Response, subscription: _Subscription):
        from .stream import next_link_for

        django_request = request._request
        next_of = getattr(django_request, "drf_grip_next", None)
        if response.status_code != 200:
            if next_of is not None:
                # The subscribed object is gone or no longer visible: say so and stop.
                event = format_event(b"{}", event="delete" if response.status_code == 404 else "error")
                return HttpResponse(event, content_type=EVENT_STREAM)
            return response
        content, etag = self.render_representation(response)
        last_seen = next_of["e"] if next_of is not None else request.META.get("HTTP_LAST_EVENT_ID")
        body = b"" if etag_matches(last_seen, etag) else format_event(content, id=etag)
        stream = HttpResponse(body, content_type=EVENT_STREAM)
        stream["Cache-Control"] = "no-cache"
        stream["X-Accel-Buffering"] = "no"
        link = next_link_for(django_request, etag, self.get_realtime_delivery())
        instruct = django_request.grip.start_instruct()
        instruct.set_next_link(link, int(grip_settings.NEXT_LINK_TIMEOUT))
        # A next-link answer replaces the stream's whole instruction in Pushpin (handler/
        # httpsession.cpp): without Grip-Hold it fetches the next link again at once, in a
        # loop, and channels or keep-alive left out are dropped. So every answer holds again.
        instruct.add_channels(subscription.grip_channels(django_request))
        instruct.set_hold_stream()
        instruct.set_keep_alive(KEEP_ALIVE, int(grip_settings.STREAM_KEEP_ALIVE), "interval")
        if next_of is None and not django_request.grip.proxied:
            # A direct client gets the current event and a reconnection delay.
            stream.content = b"retry: 3000\n" + body
        self.on_hold(request, subscription, etag)
        return stream

    def gateway_response(
        self, request, response: Response, subscription: _Subscription, gateway: dict
    ):
        """A subscription over the WebSocket gateway (``drf_grip.rest.gateway``): tell it how
        this representation is delivered; the gateway subscribes the connection, never a hold."""
        if response.status_code != 200:
            return response
        content, etag = self.render_representation(response)
        response["ETag"] = etag
        delivery = self.get_realtime_delivery()
        gateway.update(
            delivery=delivery,
            model=self.get_realtime_model()._meta.label_lower,
            channels=list(subscription.channels),
            versions=dict(subscription.versions),
            etag=etag,
        )
        if delivery == SHARED:
            from .shared import live_url

            url = live_url(request, self)
            gateway["live_url"] = url.relative
            gateway["channel"] = url.channel
        self.on_hold(request, subscription, etag)
        return response

    def on_hold(self, request, subscription: _Subscription, etag: str) -> None:
        """Called when a request is subscribed; shared views record their live URL here."""
        if self.get_realtime_delivery() == SHARED:
            from .shared import remember_live_url

            remember_live_url(request, self, etag)

    # Internal renders for shared delivery were authorised when the client subscribed.
    def check_permissions(self, request):
        if getattr(request._request, "drf_grip_render", False):
            return
        super().check_permissions(request)

    def check_object_permissions(self, request, obj):
        if getattr(request._request, "drf_grip_render", False):
            return
        super().check_object_permissions(request, obj)

    def check_throttles(self, request):
        # Also re-renders of a gateway subscription for its own user: a burst of changes
        # must not throttle the user (gateway.py).
        if getattr(request._request, "drf_grip_render", False) or getattr(
            request._request, "drf_grip_rerender", False
        ):
            return
        super().check_throttles(request)


class ListRealtimeMixin(_RealtimeBase):
    """For a list view (``ListAPIView``) on its own."""

    realtime_kind = "list"


class RetrieveRealtimeMixin(_RealtimeBase):
    """For a detail view (``RetrieveAPIView``) on its own."""

    realtime_kind = "detail"


class RealtimeMixin(_RealtimeBase):
    """For a viewset (or a generic view): ``list`` and ``retrieve`` become live."""
