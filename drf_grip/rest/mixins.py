"""``RealtimeMixin``: the list and detail URLs of a DRF view become live.

A GET answers with a strong ETag; ``If-None-Match`` with the current ETag is held by the
GRIP proxy until the representation changes; ``Accept: text/event-stream`` opens a stream.
Everything a plain GET does (authentication, permissions, ``get_queryset``, filters,
pagination) runs first, so a subscription sees exactly what a fresh GET would.

The hooks decide once per subscription, and what they decided is recorded as a
:class:`~drf_grip.rest.context.RealtimePolicy` that the publisher reads back: override a
hook and both sides follow.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from django.db import models, transaction
from django.http import Http404, HttpResponse, HttpResponseNotModified, QueryDict
from django.utils.http import parse_header_parameters
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.mixins import ListModelMixin, RetrieveModelMixin
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from ..conf import grip_settings
from ..grip.middleware import GripRequest, proxy_required_response
from ..protocol import MIN_HOLD_TIMEOUT, Channel
from ..protocol.filters import SKIP_SELF
from . import channels as names
from .context import PRIVATE, SHARED, RealtimeContext, RealtimePolicy, context_of
from .etag import etag_matches, etag_matches_strongly, is_etag_list, tags_weakened
from .hooks import RealtimeHooks, parse_prefer_wait
from .policies import view_path
from .preconditions import guards_write, lookup_of, row_lock, writes_one_object
from .render import CREDENTIALS_CHECK, subscriber_headers_size
from .sse import (
    EVENT_STREAM,
    KEEP_ALIVE,
    EventStreamRenderer,
    format_event,
    json_renderer_of,
    refuses_event_stream,
    weighs_event_stream,
)
from .store import ADDED, KEPT, cache_failed
from .versions import (
    await_confirmed,
    counters_and_hold_versions,
    ensure_versions,
    hold_versions,
    note_waited_in_vain,
    read_committed,
    read_confirmed,
    shared_versions,
    waited_in_vain,
    watch_confirmed,
)

__all__ = ["RealtimeMixin", "ListRealtimeMixin", "RetrieveRealtimeMixin", "parse_prefer_wait"]


logger = logging.getLogger("drf_grip.subscribe")


def grip_of(request: Any) -> GripRequest:
    """``request.grip``, also for a view called without ``GripMiddleware`` (DRF's
    ``APIRequestFactory``): such a request is direct, never proxied."""
    django_request = getattr(request, "_request", request)
    grip = getattr(django_request, "grip", None)
    if grip is None:
        grip = GripRequest(django_request)
        django_request.grip = grip
    return grip


def is_proxy_retry(grip: GripRequest) -> bool:
    """A request the proxy made again on its own (a held request re-requested, a next
    link): only the proxy sends ``Grip-Last``. Not when proxies have no key: any client
    could then send the header."""
    return grip.signed and bool(grip.last)


class _Current(Exception):
    """Raised from ``initial()``: the client already holds the current shared representation."""

    def __init__(self, etag: str) -> None:
        super().__init__(etag)
        self.etag = etag


class PreconditionFailed(exceptions.APIException):
    """412: ``If-Match`` (or a write's ``If-None-Match``) failed; ``etag`` is the current."""

    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_code = "precondition_failed"


def _precondition_failed(detail: str, etag: str) -> PreconditionFailed:
    """A 412 that carries the current ETag, if there is one (``""``: none the client may
    read, and no ``ETag`` header)."""
    exc = PreconditionFailed(detail)
    if etag:
        exc.etag = etag  # type: ignore[attr-defined]
    return exc


class _Checked(Exception):
    """Raised from ``initial()`` for ``render.revoked_status``: authenticated and permitted."""


class HeadersTooLarge(exceptions.APIException):
    status_code = 431  # Request Header Fields Too Large (RFC 6585 §5)
    default_detail = "Request header fields too large."
    default_code = "headers_too_large"


def _replace_query(django_request: Any, kept: QueryDict) -> None:
    """Give the view ``kept`` as its query, as if the client had sent only that: DRF's
    pagination links and ``record()`` read ``QUERY_STRING``, filters read ``GET``."""
    kept._mutable = False
    django_request.GET = kept
    django_request.META["QUERY_STRING"] = kept.urlencode()


def _observed(get_object: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``get_object`` telling the mixin what it found (``_RealtimeBase._realtime_found``)."""

    @functools.wraps(get_object)
    def observed(self: Any) -> Any:
        obj = get_object(self)
        self._realtime_found(obj)
        return obj

    observed.realtime_observed = True  # type: ignore[attr-defined]
    return observed


def _retrieves_as_drf(cls: type) -> bool:
    """The view answers a detail GET with DRF's ``retrieve()``, which paginates nothing."""
    get = getattr(cls, "get", None)
    return getattr(cls, "retrieve", None) is RetrieveModelMixin.retrieve and (
        get is None or get.__module__.startswith("rest_framework.")
    )


class _RealtimeBase(RealtimeHooks):
    """Shared machinery of the list and detail mixins; the hooks are in hooks.py."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls.get_object, "realtime_observed", False):
            # A view's own get_object() (a case-insensitive lookup, a canonical object)
            # need not call DRF's, nor return what it returned: the hold follows the object
            # it returns (``_realtime_found``).
            cls.get_object = _observed(cls.get_object)
        from .registry import register_view

        register_view(cls)

    def get_parsers(self):
        from .parsers import bounded

        return bounded(super().get_parsers())

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            # DRF answers a ``?format=`` that names no renderer 404; the stream is one for a
            # GET only, and a HEAD, a write or OPTIONS naming it this way got 404 for an
            # object that exists, where ``Accept: text/event-stream`` gets 406 (transports
            # probe). Before any write runs.
            param = api_settings.URL_FORMAT_OVERRIDE
            if param and request.query_params.get(param) == EventStreamRenderer.format:
                raise exceptions.NotAcceptable(
                    f"An event stream answers a GET only; this is a {request.method}."
                ) from None
            raise

    def get_renderers(self):
        renderers = super().get_renderers()
        # A stream is the answer to a GET only: a write or OPTIONS asking for one gets DRF's
        # 406 (before the write runs) rather than JSON labelled text/event-stream, and a
        # HEAD would be held open as a stream with no body ever to come (a HEAD long-poll
        # is held and wakes like a GET's, without the body).
        request = getattr(self, "request", None)
        # Nor is it one of a route that is not live (an ``@action``): EventSource would get
        # JSON labelled text/event-stream and reconnect forever (black-box probe).
        # Nor for a client whose Accept refuses it with q=0 (RFC 9110 §12.5.1), which DRF's
        # negotiation would not notice (black-box probe).
        # Nor for a view that names no model, never live (drf_grip.W012; DRF probe).
        if request is not None and (
            request.method != "GET"
            or not self.get_realtime_kind()
            or type(self).names_no_model()
            or refuses_event_stream(request.META.get("HTTP_ACCEPT"))
        ):
            return [r for r in renderers if r.media_type != EVENT_STREAM]
        if not any(r.media_type == EVENT_STREAM for r in renderers):
            json_renderer = json_renderer_of(renderers)
            renderers.append(EventStreamRenderer(json_renderer))
            context = context_of(request)
            if json_renderer is None and context is not None and context.role != "client":
                # A view serving no JSON (CSV only): its streams carry DRF's JSON, and so
                # do the renders made for them (a shared push asks for application/json)
                # and its gateway subscriptions. Refused (406), every stream got
                # ``event: delete`` at the first change (DRF probe).
                renderers.append(JSONRenderer())
        if request is None or getattr(self, "format_kwarg", None) or (
            api_settings.URL_FORMAT_OVERRIDE and api_settings.URL_FORMAT_OVERRIDE in request.GET
        ):
            return renderers  # a format named in the URL decides, not the weights
        # The client's weights decide between the stream and the view's other types, which
        # DRF's negotiation does not read (black-box probe); a tie keeps DRF's order.
        others = [
            parse_header_parameters(r.media_type)[0]
            for r in renderers
            if r.media_type != EVENT_STREAM
        ]
        rank = weighs_event_stream(request.META.get("HTTP_ACCEPT"), others)
        if rank > 0:
            return sorted(renderers, key=lambda r: r.media_type != EVENT_STREAM)
        if rank < 0:
            return [r for r in renderers if r.media_type != EVENT_STREAM]
        return renderers

    # -- request cycle ----------------------------------------------------------------------

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._dispatch(request, *args, **kwargs)
        except Exception as exc:
            grip = grip_of(request)
            if request.method not in ("GET", "HEAD") or not grip.proxied or not cache_failed(exc):
                raise
            # The shared cache is unreachable (Redis down) or refuses writes (out of
            # memory): nothing can be held, recorded or versioned, and every read through
            # the proxy answered 500. Answer as to a direct client (DESIGN.md §1): a
            # conditional GET, or a stream's current event and a reconnection delay; the
            # client comes back and finds the cache again.
            logger.warning(
                "drf-grip's state cache does not answer or refuses writes: %s %s answered as "
                "a direct request (%s)", request.method, request.path, exc,
            )
            grip.proxied, grip.last, grip.instruct = False, {}, None
            for name in [n for n in vars(self) if n.startswith("_realtime")]:
                delattr(self, name)  # what the failed attempt got to
            self._realtime_unreachable = True
            response = self._dispatch(request, *args, **kwargs)
            if response.status_code == 304 and grip.instruct is not None and grip.instruct.holds:
                # A direct client's 304 sent a long-poll straight back, again and again,
                # each client a request loop on the origin for as long as the cache was
                # down. Held briefly instead, on its channels without the versions that live
                # in the cache: a change published once it answers again wakes it.
                grip.proxied = True
                grip.instruct.set_hold_longpoll(int(grip_settings.HOLD_TIMEOUT_MIN))
            return response

    def _dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # A conditional write: its check and the write in one transaction, after a lock on
        # the object's row (preconditions.py says why the lock comes first).
        lock = row_lock(self, kwargs) if guards_write(request) else None
        if lock is None:
            return super().dispatch(request, *args, **kwargs)
        using, take = lock
        with transaction.atomic(using=using):
            take()
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self._drop_stream_format(request)
        self.realtime_policy: RealtimePolicy | None = None
        self._realtime_kind = self.get_realtime_kind()
        if isinstance(getattr(request, "accepted_renderer", None), BrowsableAPIRenderer):
            # DRF's browsable API (and its AdminRenderer) is a page for people, not a
            # representation to watch: it embeds a CSRF token masked anew on each render and
            # forms that depend on who asks, so no render reproduces another's bytes and an
            # ETag of it never matches; nor can a shared push rebuild it for a subscriber. It
            # answers as plain DRF does: no ETag, never held, never a live URL (and a
            # browser's own revalidation of the page on reload is never held either).
            self._realtime_kind = None
        self._check_if_none_match(request)
        context = context_of(request)
        if context is not None and context.user is not None:
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated or str(user.pk) != context.user:
                # The credentials of the subscription no longer name its user.
                context.revoked = True
        if context is not None and context.role == CREDENTIALS_CHECK:
            raise _Checked
        if guards_write(request) and writes_one_object(self, request):
            self.check_preconditions(request)
        elif (
            request.method == "POST"
            and request.META.get("HTTP_IF_MATCH") is not None
            and isinstance(self, ListModelMixin)
        ):
            self.check_list_precondition(request)
        if not self._realtime_kind:
            return
        model = self.get_realtime_model()
        if model is None:
            return
        from .registry import register_live_model

        register_live_model(model, type(self))
        delivery = self.get_realtime_delivery()
        if delivery == SHARED and type(self).names_own_channels():
            delivery = self._realtime_effective_delivery = PRIVATE
        if delivery == SHARED:
            self._canonicalize_query(request)
            if self._subscribes(request) and (
                # A push carries the body, which Pushpin hands a held HEAD as it is (the
                # bytes after its headers broke the client's connection, DRF probe); a
                # hint makes the proxy re-send the HEAD.
                request.method == "HEAD" or self._access_needs_credentials(request)
            ):
                delivery = self._realtime_effective_delivery = PRIVATE
        channels = self.get_realtime_channels()
        policy = RealtimePolicy(
            delivery=delivery,
            model=model._meta.label_lower,
            kind=self._realtime_kind,
            channels=list(channels),
            partition=self.get_realtime_partition() if delivery == PRIVATE else None,
            view=view_path(type(self)),
            url=self._live_url().relative if delivery == SHARED else None,
        )
        listed = None
        if self._subscribes(request):
            self._check_headers_size(request)
            from .policies import record_policy

            record_policy(policy)
            if delivery == SHARED:
                # Listed BEFORE the version is read and the representation computed: a change
                # committed from here on renders this URL.
                from .live_urls import list_live_url

                listed = self._realtime_listed = list_live_url(request, self, self._live_url())
                if listed is None:
                    policy = self._overflow_policy(policy, model)
            # Versions are read BEFORE computing the representation: a commit in between
            # then shows up as a prev-id mismatch and the proxy re-requests at once.
            # A stream's next-link answer holds at the versions themselves (see
            # _grip_channels), not at the last ids a proxy confirmed (``hold_versions``).
            role = getattr(context, "role", "client")
            following = role == "next-link"
            if policy.delivery == SHARED:
                # A shared channel's version names an ETag (shared.py); others are counters.
                # The version as the publisher sets it, read before the render:
                current, held = shared_versions(policy.channels[:1])
                self._realtime_read = current[policy.channels[0]]
                policy.versions = (
                    {**current, **ensure_versions(policy.channels[1:])}
                    if following
                    else {**held, **hold_versions(policy.channels[1:])}
                )
                if context is not None:  # (gateway/)
                    context.state["version"] = current[policy.channels[0]]
            elif role != "gateway-render":  # the publisher's replay of one holds nothing
                # Changes committed before this moment are in the render (unchanged.py).
                self._realtime_read_at = time.time()
                counters, held = counters_and_hold_versions(policy.channels)
                policy.versions = dict(counters) if following else held
                if context is not None:
                    # Read before the render (the gateway checks them once it is findable).
                    context.state["counters"] = counters
                # A gateway subscription is delivered by the publisher's re-render
                # (gateway/rerender.py), never by a hint: counted as a hold, it put the
                # long-polls and streams that came after it in later hint buckets.
                if role != "gateway-subscribe":
                    from .buckets import assign_buckets
                    from .policies import live_timeout

                    self._realtime_held_again: list[tuple[str, str, int]] = []
                    policy.channels, policy.versions, self._realtime_counters = assign_buckets(
                        policy.channels,
                        policy.versions,
                        counters,
                        live_timeout(),
                        self._client_identity(),
                        window=None if self.is_event_stream(request) else self.get_hold_timeout(),
                        retried=grip_of(request).last,
                        held_again=self._realtime_held_again,
                    )
        self.realtime_policy = policy
        if context is not None:
            context.policy = policy
        elif policy.delivery == SHARED and listed == KEPT:
            # A listing that lapsed (ADDED) had no publisher keep its version current.
            self._hold_if_current(request, policy)
        elif policy.delivery == PRIVATE and self._subscribes(request):
            self._hold_if_unchanged(request, policy)
        read = getattr(self, "_realtime_read", None)
        if policy.delivery == SHARED and read is not None:
            from .shared import mark_rendering

            mark_rendering(policy.channels[0], read)
            self._realtime_marked = read

    def _check_if_none_match(self, request: Request) -> None:
        """400 for an ``If-None-Match`` that is neither ``*`` nor a list of quoted
        entity-tags (DESIGN.md §6: bad input gets a 4xx with its reason). Taken as a tag
        that matched nothing, it was answered 200 at once: a client that sent its ETag
        without the quotes got a fresh 200 for every long-poll, as fast as it could ask."""
        header = request.META.get("HTTP_IF_NONE_MATCH")
        if header and not is_etag_list(header):
            raise exceptions.ParseError(
                'If-None-Match must be * or a list of quoted ETags, as the ETag header '
                'gives them: "abc" or W/"abc" (RFC 9110 §13.1.2).'
            )

    def _may_hold_unrendered(self, request: Request) -> bool:
        """Whether a read may be held without running the view: a long-poll's GET whose
        ``If-None-Match`` alone decides. RFC 9110 §13.2.2 evaluates ``If-Match`` first, and
        only a render can answer its 412 (one was held instead: review)."""
        return (
            request.method == "GET"
            and bool(request.META.get("HTTP_IF_NONE_MATCH"))
            and "HTTP_IF_MATCH" not in request.META
            and not self.is_event_stream(request)
        )

    def _hold_if_current(self, request: Request, policy: RealtimePolicy) -> None:
        """A shared channel's version names the ETag last pushed to it: a client that comes
        back with exactly that ETag holds the current representation, so it is held again
        without running the view (every delivered watcher comes back at once). A change
        committed but not yet published moves the version later; the hold's prev-id then
        gets it."""
        from .shared import predates_recovery, tag_of

        header = request.META.get("HTTP_IF_NONE_MATCH")
        # The version as the publisher last set it, not the one a proxy last confirmed
        # (``policy.versions``): after an outage the renders the proxy missed are newer, and
        # a client held at the confirmed ETag kept the old body for good (the restart soak).
        version = getattr(self, "_realtime_read", None)
        if not self._may_hold_unrendered(request) or not version:
            return
        if header.strip() == "*" and grip_of(request).last:
            # The proxy's re-request of a hold at ``*``, which matches every representation
            # (a prev-id conflict): held again here at the channel's new version, it never
            # woke. Its render answers it (``_star_moved_on``).
            return
        etag = f'"{tag_of(version)}"'
        if etag_matches(header, etag) and not predates_recovery(policy.model, version):
            # Held at the version this decision read, whose ETag the client has, not at the
            # one a proxy confirmed: a writer may have taken, published and seen confirmed a
            # newer one since (the multi-process test), and a hold claiming it would never
            # get it. A newer version is then the proxy's prev-id conflict, which
            # re-requests this client.
            policy.versions[policy.channels[0]] = version
            raise _Current(etag)

    def _hold_if_unchanged(self, request: Request, policy: RealtimePolicy) -> None:
        """A private long-poll remembers what it answered and which ids its render covered;
        the proxy's re-request of the same request for an id already covered is held again
        without running the view (``unchanged.py``). Its re-request at exactly the ids it was
        held at, with a counter already past what its render covered (the proxy's retry of a
        hold a change overtook), renders and, unchanged, is answered without a hold
        (``unchanged.held_behind``)."""
        if (
            not self._may_hold_unrendered(request)
            or not grip_of(request).proxied
            # Channels drf-grip does not move itself may be published to by other means.
            or type(self).names_own_channels()
        ):
            return
        from .unchanged import covered_ids, held_behind, recall, unchanged_of

        identity = self._client_identity()
        last = grip_of(request).last
        recalled = recall(identity) if last else None
        self._realtime_recalled = recalled
        found = unchanged_of(recalled, last)
        if found is not None and etag_matches(request.META["HTTP_IF_NONE_MATCH"], found[0]):
            self._realtime_unchanged = (identity, found[1])
            raise _Current(found[0])
        # The counters were read before the render: ids up to them were committed before it.
        counters = self._realtime_counters
        if held_behind(recalled, last, counters):
            # Rendered (it covers the newer ids), and answered without a hold if unchanged.
            self._realtime_unheld = True
            return
        held_with = self._hold_prev_ids(request, policy)
        ranges = covered_ids(held_with, {ch: counters.get(ch) for ch in policy.channels})
        self._realtime_unchanged = (identity, ranges)

    def _client_identity(self) -> str:
        """This request as the client makes it again (``unchanged.request_identity``)."""
        identity = getattr(self, "_realtime_identity", None)
        if identity is None:
            from .unchanged import request_identity

            request = self.request
            identity = request_identity(request._request, getattr(request, "user", None))
            self._realtime_identity = identity
        return identity

    def _subscribes(self, request: Request) -> bool:
        """Whether this read may end in a subscription (only those are recorded): a
        conditional GET, or a stream as content negotiation chose it (``get_renderers``)."""
        context = context_of(request)
        if context is not None:
            return context.role != "shared-render"
        if getattr(self, "_realtime_unreachable", False):
            return False  # answered as a direct request (dispatch)
        if getattr(self, "_realtime_oversized", None):
            return False  # answered at once, or refused (_check_headers_size)
        return bool(request.META.get("HTTP_IF_NONE_MATCH")) or self.is_event_stream(request)

    def _access_needs_credentials(self, request: Request) -> bool:
        """Whether this subscriber of a shared view reads it by its credentials. Such a
        subscription is delivered like private data, each change re-running its own GET: a
        shared push reaches every subscriber of the URL as it is, so a deleted token's
        stream got the next change, its long-poll through Pushpin was woken with it, and
        its gateway subscription never ended (DESIGN.md §3, revocation).

        Credentials other than a session do, whatever the view allows: DRF authenticates
        before it checks permissions, and ``TokenAuthentication`` (Basic, a JWT) answers 401
        to credentials it no longer accepts even where anyone may read. A session does only
        where the view refuses an anonymous GET (``IsAuthenticated``) or, for a detail URL,
        checks object permissions (django-guardian's): an ended session, or a deactivated
        user's, reads as anonymous (``SessionAuthentication`` then authenticates no one),
        and an anonymous GET of a view anyone may read gives the same bytes, so a signed-in
        board keeps sharing its renders. Anonymous subscribers have nothing to lose.

        So a shared render, the GET of a subscriber without credentials, runs the view's
        permissions as DRF does: one that refuses it refuses every subscriber of the URL.
        Skipped, an object that a change made refused to everyone (unpublished, archived)
        was pushed whole to every subscriber while a fresh GET got 401 (DRF probe)."""
        user = getattr(request, "user", None)
        if not (user is not None and user.is_authenticated) and request.auth is None:
            return False
        authenticator = getattr(request, "successful_authenticator", None)
        if not isinstance(authenticator, SessionAuthentication):
            return True
        if self._realtime_kind == "detail" and any(
            type(permission).has_object_permission is not BasePermission.has_object_permission
            for permission in self.get_permissions()
        ):
            return True
        from django.contrib.auth.models import AnonymousUser

        saved = request.user, request.auth
        request.user, request.auth = AnonymousUser(), None
        try:
            super().check_permissions(request)  # as DRF checks it, without the credentials
        except Exception:  # noqa: BLE001 - refused, or a permission that needs request.auth
            return True
        finally:
            request.user, request.auth = saved
        return False

    def _check_headers_size(self, request: Request) -> None:
        """A subscription's headers are kept to replay its GET (render.py) for as long as
        it lives, and a proxy keeps them all while it holds the request: a bound keeps one
        client's junk headers from filling the state cache, or the embedded proxy's memory
        (HTTP probe: a 100 KB ``If-None-Match`` was held)."""
        limit = int(grip_settings.SUBSCRIBER_HEADERS_MAX_SIZE)
        if subscriber_headers_size(request._request) <= limit:
            return
        too_large = HeadersTooLarge(
            f"a subscription's headers may total {limit} bytes: this request's are "
            "kept to replay it, and they are larger"
        )
        if context_of(request) is None and not self.is_event_stream(request):
            # A long-poll: whether it is held is known only once the ETag is. One whose
            # If-None-Match is stale is answered 200 at once, as any (DESIGN.md §1; it was
            # refused 431, security probe), with nothing of it kept; a hold is refused.
            self._realtime_oversized = too_large
            return
        raise too_large

    def _overflow_policy(self, policy: RealtimePolicy, model: type[models.Model]) -> RealtimePolicy:
        """Past the live-URL cap this URL is delivered like private data: a hint per change
        re-requests its holds (README, "Limits")."""
        from .live_urls import mark_overflow

        mark_overflow(model)
        if policy.kind == "detail" and policy.pk is None:
            pk = self._realtime_lookup_pk(model)
            if pk is not None:
                channels = [names.object_channel(model, pk), names.bulk_channel(model)]
            else:
                channels = [names.list_channel(model), names.bulk_channel(model)]
        else:
            channels = [names.list_channel(model)]
        policy.delivery = PRIVATE
        policy.channels = channels
        return policy

    def _live_url(self):
        """This request's live URL, computed once: channels, the policy and the live-URL
        index all name it (after ``_canonicalize_query`` dropped unused parameters)."""
        url = getattr(self, "_realtime_live_url", None)
        if url is None:
            from .live_urls import live_url

            url = self._realtime_live_url = live_url(self.request, self)
        return url

    def _canonicalize_query(self, request: Request) -> None:
        """Drop query parameters the view does not read (``?_=1700000000``) before it runs,
        so the body a fresh GET returns (with DRF's pagination links, which copy the query)
        equals the body pushed for the live URL."""
        from .live_urls import reads_of, used_query_params

        # DRF's retrieve() never paginates: a made-up ``?page=`` on a detail was one more
        # live URL, and one more render of every change (black-box probe). A view's own
        # retrieve() may paginate something nested, and read it.
        paginated = self._realtime_kind != "detail" or not _retrieves_as_drf(type(self))
        used = used_query_params(self, paginated=paginated)
        if used is None:
            return
        django_request = request._request
        query = django_request.GET
        if all(key in used for key in query):
            return
        # A parameter ``get_queryset()`` reads is used, whatever the backends say (a
        # probe's view filtered on ``request.query_params.get("g")``; dropped, the plain
        # GET answered the whole list). So is one a filter backend reads besides those it
        # declares: a django-filter ``FilterSet`` method reading ``?whole=`` beside its own
        # ``?starts=`` (DRF ecosystem probe: the same). The queryset is lazy: this reads
        # no row (a ``ModelChoiceFilter`` validates its value with one query).
        used = used | reads_of(django_request, lambda: self.filter_queryset(self.get_queryset()))
        # So is one its serializer reads when it is made (drf-flex-fields' ``?fields=``,
        # ``?omit=``, ``?expand=``) or builds its fields (drf-dynamic-fields): dropped, even
        # a plain GET of ``?fields=id`` answered every field, and so were subscribers
        # pushed (DRF ecosystem probe). With no instance, the serializer reads no row.
        used = used | reads_of(django_request, lambda: self.get_serializer().fields)
        # So is one its paginator's methods read besides the attributes it declares (a
        # ``get_page_size()`` reading ``?per=``: dropped, a plain GET got the default page
        # size; DRF probe). They read the query, no row.
        paginator = getattr(self, "paginator", None) if paginated else None
        for name in ("get_page_size", "get_limit", "get_offset"):
            method = getattr(paginator, name, None)
            if callable(method):
                used = used | reads_of(django_request, lambda method=method: method(request))
        if all(key in used for key in query):
            return
        kept = QueryDict(mutable=True)
        for key, values in query.lists():
            if key in used:
                kept.setlist(key, values)
            else:
                _note_dropped(type(self), key)
        _replace_query(django_request, kept)

    def _drop_stream_format(self, request: Request) -> None:
        """A stream chosen by DRF's URL format override (``?format=event-stream``) carries
        the JSON representation of the URL without it: the parameter is dropped once content
        negotiation has read it, so pagination links do not copy it, and the live URL and the
        GET a next link replays name the JSON representation (a publisher's JSON render of a
        URL that asks for the stream format got DRF's 406: black-box probe)."""
        param = api_settings.URL_FORMAT_OVERRIDE
        query = request._request.GET
        if not param or not self.is_event_stream(request):
            return
        if query.get(param) != request.accepted_renderer.format:
            return
        kept = query.copy()
        del kept[param]
        _replace_query(request._request, kept)

    @_observed
    def get_object(self):
        return super().get_object()

    get_object.realtime_default = True  # type: ignore[attr-defined]  # finds_objects_itself

    def _realtime_found(self, obj: Any) -> None:
        """What ``get_object()`` (the view's own too, ``_observed``) returned: the object
        this read renders. The last call decides: an override that calls DRF's and returns
        another object renders that one."""
        policy = getattr(self, "realtime_policy", None)
        if policy is None or not isinstance(obj, models.Model):
            return
        policy.pk = str(obj.pk)
        field, lookup = lookup_of(self)
        policy.by_value = lookup in self.kwargs and field not in ("pk", obj._meta.pk.name)

    def _holds_nothing(self) -> bool:
        """Answered without a hold, for the client to ask again: rendered past the ids the
        proxy holds at (``_hold_if_unchanged``), or showing another object than the one
        whose channels and versions were read (below)."""
        if getattr(self, "_realtime_unheld", False):
            return True
        # Another object took the slug over between the subscriber's primary-key query and
        # the render (or the view's own get_object() found another one since): no change
        # of the one shown wakes a hold on the first one's channels. The client asks again,
        # and that request looks the newcomer up (forced race, slug probe).
        resolved = self.__dict__.get("_realtime_resolved_pk")
        policy = getattr(self, "realtime_policy", None)
        shown = policy.pk if policy is not None else None
        return resolved is not None and shown is not None and str(resolved) != shown

    def check_preconditions(self, request: Request) -> None:
        """``If-Match`` and ``If-None-Match`` on a write, against the object's detail ETag
        (RFC 9110 §13.2.2, in that order): 412 when ``If-Match`` does not match strongly
        (§13.1.1) or ``If-None-Match`` matches (§13.1.2; ``*`` matches any object); the
        write does not happen."""
        etag = self._current_detail_etag()
        if_match = request.META.get("HTTP_IF_MATCH")
        if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
        # An empty If-Match lists no tag, so none matches (RFC 9110 §13.1.1): a client that
        # sent its ETag before it had one (``If-Match: ""`` from an unset variable) is
        # refused, not let through as if it had sent none (bad-input probe).
        if if_match is not None and not etag_matches_strongly(
            if_match, etag, weakened=tags_weakened()
        ):
            detail = "If-Match does not match the current ETag of this object."
        elif if_none_match and etag_matches(if_none_match, etag):
            detail = "If-None-Match matches the current ETag of this object."
        else:
            self._realtime_preconditioned = True
            return

        raise _precondition_failed(detail, etag)

    def check_list_precondition(self, request: Request) -> None:
        """``If-Match`` on a ``POST`` to a list, against the list's ETag as a GET of the same
        URL answers it now: 412 when it does not match (RFC 9110 §13.1.1: the method is not
        performed); a ``POST`` with a failed ``If-Match`` created its object (transports
        probe). ``*`` matches: the list exists."""
        if_match = request.META["HTTP_IF_MATCH"]
        if if_match.strip() == "*":
            return
        try:
            etag = self._current_list_etag()
        except (Http404, exceptions.APIException):
            etag = ""  # no representation this client may read: no tag matches
        if etag and etag_matches_strongly(if_match, etag, weakened=tags_weakened()):
            return
        raise _precondition_failed("If-Match does not match the current ETag of this list.", etag)

    def _current_list_etag(self) -> str:
        """The ETag a GET of this list URL answers now."""
        with self._read_as_a_get("list"):
            data = self.list(self.request).data
        return self._etag_of(data)

    def _current_detail_etag(self) -> str:
        """The ETag a GET of this object's detail URL answers now."""
        return self._etag_of(self._detail_data(self.get_object()))

    def _etag_of(self, data: Any) -> str:
        """The ETag of ``data`` rendered as this client's GET is."""
        request = self.request
        renderer = request.accepted_renderer
        media_type = getattr(request, "accepted_media_type", None) or renderer.media_type
        if isinstance(renderer, (EventStreamRenderer, BrowsableAPIRenderer)) or not hasattr(
            renderer, "render"
        ):
            # A stream's events carry the JSON representation's ETag; DRF's browsable API
            # serves no ETag (see initial), so a write from it is checked against JSON's.
            renderer = EventStreamRenderer(json_renderer_of(super().get_renderers()))
            media_type = renderer.json_media_type
        context = self.get_renderer_context()
        context["response"] = Response(data)
        # The media type as negotiated, parameters included: ``indent=4`` changes the bytes,
        # and so the ETag this client's GET was given.
        content = renderer.render(data, media_type, context)
        if isinstance(content, str):
            content = content.encode()
        return self.get_etag(content)

    def _detail_data(self, instance: models.Model) -> Any:
        """``instance`` serialized as a GET of its detail URL does it: the request a GET, in
        a viewset the ``retrieve`` action. A write's own serializer (``get_serializer_class()``
        choosing one for ``partial_update`` or for unsafe methods, an
        ``@action(serializer_class=...)``) gives other data, and every ``If-Match`` with the
        ETag of a GET answered 412 (DRF probe)."""
        with self._read_as_a_get("retrieve"):
            return self.get_serializer(instance).data

    @contextlib.contextmanager
    def _read_as_a_get(self, action_name: str) -> Iterator[None]:
        """Meanwhile the request is a GET and, in a viewset, the action ``action_name``."""
        django_request = self.request._request
        method, action = django_request.method, getattr(self, "action", None)
        # An action's initkwargs are instance attributes: the class's own are the GET's.
        own = self.__dict__.pop("serializer_class", None) if action is not None else None
        django_request.method = "GET"
        if action is not None:
            self.action = action_name
        try:
            yield
        finally:
            django_request.method = method
            if action is not None:
                self.action = action
            if own is not None:
                self.serializer_class = own

    def handle_exception(self, exc):
        if isinstance(exc, _Checked):
            return Response(status=status.HTTP_204_NO_CONTENT)
        if isinstance(exc, _Current):
            self._current_etag = exc.etag
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
            response["ETag"] = exc.etag
            # The headers a 200 would carry (RFC 9110 §15.4.5): with no render, the answer
            # from what was recorded lacked it (a probe: only a worker's first 304 had it).
            _stored_by_no_cache(response)
            return response
        response = super().handle_exception(exc)
        etag = getattr(exc, "etag", None)
        if etag is not None:
            response["ETag"] = etag
        return response

    def finalize_response(self, request, response, *args: Any, **kwargs: Any):
        response = self._finalize_realtime(request, response, *args, **kwargs)
        held_again = getattr(self, "_realtime_held_again", None)
        instruct = grip_of(request).instruct if held_again else None
        if instruct is not None and instruct.hold:
            from .buckets import count_held_again
            from .policies import live_timeout

            count_held_again(held_again, live_timeout())
        return response

    def _finalize_realtime(self, request, response, *args: Any, **kwargs: Any):
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(renderer, EventStreamRenderer) and getattr(response, "status_code", 0) >= 400:
            # An error is no event: EventSource fails the connection on any answer but a
            # 200 (WHATWG HTML, server-sent events), and whoever reads the body gets DRF's
            # JSON error labelled as JSON, not as a stream (DRF probe).
            request.accepted_renderer = renderer.json_renderer or JSONRenderer()
            request.accepted_media_type = renderer.json_media_type
        response = super().finalize_response(request, response, *args, **kwargs)
        if getattr(self, "_realtime_preconditioned", False) and response.status_code == 200:
            # A client writing with validators chains writes: the answer names the ETag
            # the next one needs (RFC 9110 §8.8.3), the detail ETag of the object now.
            try:
                response["ETag"] = self._current_detail_etag()
            except (Http404, exceptions.APIException):
                pass  # the write took the object out of this client's sight
        policy = getattr(self, "realtime_policy", None)
        context = context_of(request)
        if policy is None or not isinstance(response, Response):
            return response
        if (
            context is None
            and response.status_code not in (200, 304)
            and getattr(self, "_realtime_listed", None) == ADDED
        ):
            from .live_urls import unlist_live_url

            unlist_live_url(self, self._live_url())
        too_large = getattr(self, "_realtime_oversized", None)
        current = getattr(self, "_current_etag", None)
        if current is not None:
            if too_large is not None:
                # Current, so it would be held: refused as any hold (an anonymous long-poll
                # of a shared view was held with 40 KB of headers; new-user probe).
                refused = self.handle_exception(too_large)
                return super().finalize_response(request, refused, *args, **kwargs)
            return self.longpoll_response(request, response, policy, current)
        role = context.role if context is not None else "client"
        if policy.delivery == SHARED and role != "shared-render" and response.status_code == 200:
            self._unmark_rendering(policy, response)
            self._name_first_version(policy, response)
        if role in ("gateway-subscribe", "gateway-render", "shared-render"):
            if role == "shared-render" and response.status_code == 200 and policy.by_value:
                from .live_urls import follow_named_object

                follow_named_object(request, self, self._live_url(), policy.pk)
            if response.status_code == 200:
                content, etag = self.render_representation(response)
                response["ETag"] = etag
                context.result_etag = etag
                _stored_by_no_cache(response)  # a shared render's headers are pushed
            return response
        if self.is_event_stream(request):
            return self.stream_response(request, response, policy)
        content, etag = (
            self.render_representation(response) if response.status_code == 200 else (b"", "")
        )
        if response.status_code != 200:
            return response
        response["ETag"] = etag
        _stored_by_no_cache(response)
        if_match = request.META.get("HTTP_IF_MATCH")
        if if_match is not None and not etag_matches_strongly(
            if_match, etag, weakened=tags_weakened()
        ):
            # RFC 9110 §13.1.1: a false If-Match means the method is not performed, a GET
            # and a HEAD too (Django's ConditionalGetMiddleware answers 412); it was answered
            # 200 (transports probe). Evaluated before If-None-Match (§13.2.2).
            failed = self.handle_exception(_precondition_failed(
                "If-Match does not match the current ETag of this representation.", etag
            ))
            return super().finalize_response(request, failed, *args, **kwargs)
        if not etag_matches(request.META.get("HTTP_IF_NONE_MATCH"), etag) or self._star_moved_on(
            request, etag
        ):
            prefer = parse_prefer_wait(request.META.get("HTTP_PREFER"))
            if grip_of(request).last and prefer is not None:
                # The proxy's re-request of a hold it gave this wait: the client was held,
                # as a shared push (the held 304's headers, PUSHPIN.md) or a timeout says.
                response["Preference-Applied"] = f"wait={self.get_hold_timeout()}"
            return response
        if too_large is not None:
            refused = self.handle_exception(too_large)
            return super().finalize_response(request, refused, *args, **kwargs)
        return self.longpoll_response(request, response, policy, etag)

    def _star_moved_on(self, request: Request, etag: str) -> bool:
        """``If-None-Match: *`` matches every representation (RFC 9110 §13.1.2), also the
        one a change made: the proxy's re-request of such a hold, after a hint, matched again
        and was held again, so a private long-poll never woke (probe). Such a re-request is
        answered when its render differs from the one it was held with, or when that is
        not known: a wake too many, never a change missed."""
        if (request.META.get("HTTP_IF_NONE_MATCH") or "").strip() != "*":
            return False
        if not grip_of(request).last:
            return False  # the client's own request: held at what it renders now
        recalled = getattr(self, "_realtime_recalled", None)
        return recalled is None or recalled[0] != etag

    def _unmark_rendering(self, policy: RealtimePolicy, response: Response) -> None:
        """This subscriber's render is what the version it read names: it takes back the
        mark it made before rendering (shared.mark_rendering). Otherwise it saw a commit not
        yet published, and says so (shared.mark_ahead)."""
        from .shared import mark_ahead, names_etag, unmark_rendering

        marked = getattr(self, "_realtime_marked", None)
        if marked is None:
            return
        _content, etag = self.render_representation(response)
        if names_etag(marked, etag.strip('"')):
            unmark_rendering(policy.channels[0], marked)
        else:
            mark_ahead(policy.channels[0], etag.strip('"'))

    def _name_first_version(self, policy: RealtimePolicy, response: Response) -> None:
        """A shared channel's version names the ETag its subscribers hold, so the publisher
        skips a render that did not change (an unchanged page 2). Only the publisher moves
        it; a subscriber gives a channel its first one (``add``: never overwrites) and
        holds with it as prev-id: it names this very render, so the hold is versioned from
        the first subscriber on (public next links need that, stream.py). A read that does
        not subscribe names nothing: no publisher renders a URL nobody listed, so the
        version would soon name old data."""
        from .shared import first_version

        if not self._subscribes(self.request):
            return
        channel = policy.channels[0]
        held = policy.versions.get(channel)
        context = context_of(self.request)
        role = getattr(context, "role", "client")
        if held is None:
            _content, etag = self.render_representation(response)
            policy.versions[channel] = first_version(channel, etag)
            if context is not None and "version" in context.state:
                # The version this render is at (the gateway checks it has not moved).
                context.state["version"] = policy.versions[channel]
        if logger.isEnabledFor(logging.DEBUG):
            _content, etag = self.render_representation(response)
            logger.debug(
                "live URL %s (%s) at %s, %s read %s, holds with %s, rendered %s",
                channel,
                self._live_url().relative,
                self._live_url().host,
                role,
                getattr(self, "_realtime_read", None),
                policy.versions.get(channel),
                etag,
            )

    def is_event_stream(self, request) -> bool:
        renderer = getattr(request, "accepted_renderer", None)
        return isinstance(renderer, EventStreamRenderer)

    def render_representation(self, response: Response) -> tuple[bytes, str]:
        if not getattr(response, "is_rendered", False):
            response.render()
        return response.content, self.get_etag(response.content)

    def _catch_up_shared(self, request, policy: RealtimePolicy, etag: str) -> None:
        """Hold a shared long-poll at the version a proxy confirmed for its render, when the
        render is newer than the version the hold would name (a commit whose render the
        publisher had not yet sent, or sent and not yet seen confirmed). That push, of the
        representation this client has, reaches the proxy about when the hold does; held at
        the older version, the hold conflicts on accept, Pushpin 1.36 retries it at once,
        and its proxy can lose the hold answering the retry (``_catch_up_confirmed``; an
        anonymous long-poll of ``?page=2`` never answered, in 2 of 48 runs of the
        convergence harness). The wait ends as soon as a proxy confirms another version
        than the one confirmed when it began: one naming this render is held at; a newer
        one leaves the hold as it was, whose conflict then answers it with that newer
        render.

        No push may be coming: rows changed without a signal (``update()``, raw SQL, not
        announced), or a view whose render differs each time. Then every hold of the URL
        waited the whole wait, and behind ``writes_first``'s few re-hold slots 1,000 long-polls
        took minutes to be held (``bench/run.py``, grip-lp-emb). A wait that saw no
        confirmation is remembered per channel, with the render it waited for and the
        confirmed id it began at (``versions.waited_in_vain``): holds of that render wait
        no more, holds of another render or after a proxy confirms something newer do."""
        if policy.delivery != SHARED or getattr(self, "_current_etag", None) is not None:
            return
        from .shared import names_etag

        channel = policy.channels[0]
        held_at = self._hold_prev_ids(request, policy).get(channel)
        tag = etag.strip('"')
        if held_at is None or names_etag(held_at, tag):
            return
        first = read_confirmed([channel])
        before = first[channel]
        if before is not None and names_etag(before, tag):
            seen = before
        elif waited_in_vain(channel, before, tag):
            return
        else:
            seen = watch_confirmed(
                [channel], lambda now: now[channel] != before, seen=first
            )[channel]
            if seen == before:
                note_waited_in_vain(channel, before, tag)
        if seen is not None and names_etag(seen, tag):
            self._realtime_hold_at = {channel: seen}

    def _grip_channels(self, request, policy: RealtimePolicy) -> list[Channel]:
        # A proxy retry tells us the last id it saw (Grip-Last). When it differs from ours
        # (a lost publish, a flushed cache), holding with our version would make Pushpin
        # re-request at once, forever: the representation was just computed afresh, so
        # take the proxy's id and let the next publish (whose prev-id won't match) re-request.
        # Not for a stream's next-link answer: Pushpin checks no conflict on a stream's later
        # holds, but drops every item queued during the fetch whose prev-id is not the
        # hold's (handler/httpsession.cpp, "Drop any non-matching queued items"). A fetch
        # Pushpin made for a prev-id mismatch names the stream's old id, so a change
        # committed while it rendered had its hint dropped, and the stream kept the older
        # render for good (the multi-process test, once). Held at the versions read before
        # the render, the items that render may have missed are the ones that follow.
        context = context_of(request)
        if context is not None and context.role == "next-link":
            prev_ids = {ch: policy.versions.get(ch) for ch in policy.channels}
        else:
            prev_ids = self._hold_prev_ids(request, policy)
        return [Channel(ch, prev_ids.get(ch) or None) for ch in policy.channels]

    def _hold_prev_ids(self, request, policy: RealtimePolicy) -> dict[str, str | None]:
        """The prev-id a long-poll holds each channel with: the proxy's own (``Grip-Last``)
        on a re-request, or the id a proxy last confirmed (``policy.versions``) when that is
        newer and this answer rendered (it covers every id up to the counter read before the
        render, which the confirmed id never passes: ``versions.hold_versions``).

        Newer: items published while the proxy re-requested were not taken by this client,
        so its ``Grip-Last`` is behind the channel, and a hold at it conflicted on accept.
        Pushpin 1.36 re-requests such a hold at once, and when its proxy takes that retry
        before it has finished handing the held request over, it drops the request's
        record (``zhttpmanager.cpp``, "received message for unknown request id") and the
        client waits, never answered (the one-proxy-down test, a private long-poll, 1 run in
        40 on a loaded machine). Not when the answer ran no view (``_Current``): it covers
        nothing newer than what the client was sent, and a shared channel's ids name
        renders, not an order."""
        last = grip_of(request).last or {}
        rendered = getattr(self, "_current_etag", None) is None
        out: dict[str, str | None] = {}
        for channel in policy.channels:
            ours, theirs = policy.versions.get(channel), last.get(channel)
            if theirs is None:
                out[channel] = ours
            elif (
                rendered
                and ours is not None
                and ours.isdigit()
                and theirs.isdigit()
                and int(ours) > int(theirs)
            ):
                out[channel] = ours
            else:
                out[channel] = theirs
        out.update(getattr(self, "_realtime_hold_at", {}))  # _catch_up_confirmed
        return out

    def _catch_up_confirmed(self, request, policy: RealtimePolicy) -> None:
        """Hold a private long-poll at the id a proxy confirmed *now*, when that moved past
        the id it would hold at and this answer covers it (the top of its remembered range:
        the counter read before the render it answers with, ``unchanged.py``). An item the
        answer covered, still on its way when the confirmed id was read, reached the proxy
        before the hold: held at the older id, it conflicts on accept, and Pushpin 1.36
        retries such a hold at once. Its proxy links the retry's request record before it
        has cleaned up the first attempt, whose cleanup then unlinks that record by its
        request id (``src/corelib/zhttpmanager.cpp``, ``unlink``;
        ``src/proxy/proxysession.cpp``, ``acceptRequest_finished``): a hold answering the
        retry is never handed over, and the client waits, unanswered (CI, the
        one-proxy-down test). Fewer conflicts on accept leave fewer such retries: the hold
        waits, briefly, for the proxy to confirm what its answer covered
        (``versions.await_confirmed``), since an item read unconfirmed after the render was
        still on its way (the soak, with Pushpin's log: 36-59 conflicts on accept a run)."""
        unchanged = getattr(self, "_realtime_unchanged", None)
        if unchanged is None or policy.delivery == SHARED:
            return
        identity, ranges = unchanged
        tops = self._shown_ids(ranges)
        held_with = self._hold_prev_ids(request, policy)
        behind = {
            ch: held
            for ch, held in held_with.items()
            if ch in tops and str(held or "").isdigit() and int(held) < tops[ch]
        }
        if not behind:
            return
        wanted = {ch: tops[ch] for ch in behind}
        moved = {
            ch: seen
            for ch, seen in await_confirmed(wanted).items()
            if seen and seen.isdigit() and int(behind[ch]) < int(seen) <= wanted[ch]
        }
        if moved:
            self._realtime_hold_at = moved
            following = {ch: (int(seen), wanted[ch]) for ch, seen in moved.items()}
            self._realtime_unchanged = (identity, {**ranges, **following})

    def _shown_ids(self, ranges: dict[str, tuple[int, int]]) -> dict[str, int]:
        """Per channel, the newest id whose change this answer's render showed: the top of
        its range (the counter read before the render), or the id just after it when that
        change was committed before the read and its counter moved only after (the change
        worker runs after the commit, ``publishing.py``). Its item then reaches the proxy
        about when the hold does, and held at the older id the hold conflicts on accept
        (the soak, with Pushpin's log: most such conflicts of a client's own hold).

        Only the very next id, and only a commit this machine timed: an id between two
        whose change came after the render (another process's) would be claimed seen,
        and that client would never get it; a clock of another machine may be off by more
        than the worker's lag."""
        tops = {ch: top for ch, (_low, top) in ranges.items()}
        read_at = getattr(self, "_realtime_read_at", None)
        if read_at is None or not tops:
            return tops
        for ch, (item_id, at, here) in read_committed(list(tops)).items():
            if here and item_id.isdigit() and int(item_id) == tops[ch] + 1 and at < read_at:
                tops[ch] += 1
        return tops

    def longpoll_response(self, request, response: Response, policy: RealtimePolicy, etag: str):
        held = HttpResponseNotModified()
        for header in ("ETag", "Vary", "Cache-Control", "Content-Location"):
            if header in response:
                held[header] = response[header]
        if self._holds_nothing():
            return held  # the client asks again: its next hold is a new request (unchanged.py)
        self._catch_up_confirmed(request, policy)
        self._catch_up_shared(request, policy, etag)
        timeout = self.get_hold_timeout()
        if parse_prefer_wait(request.META.get("HTTP_PREFER")) is not None and grip_of(
            request
        ).proxied:
            # A direct client's 304 comes at once: no wait was applied (RFC 7240 §3).
            held["Preference-Applied"] = f"wait={timeout}"
        unchanged = getattr(self, "_realtime_unchanged", None)
        own = not grip_of(request).last
        since: float | None = time.time() if own else None
        if unchanged is not None and not own:
            from .unchanged import hold_left

            recalled = getattr(self, "_realtime_recalled", None)
            since = recalled[4] if recalled is not None else None
            left = hold_left(recalled, timeout)
            if left is not None:
                if left <= 0:
                    return held  # the client's wait is over: the timeout's answer
                # Never under what a proxy holds at the least (PUSHPIN.md): a wait of 5 s,
                # the least, answered 304 unheld to Pushpin's immediate retry of a hold a
                # change overtook (CI). So an answer comes at most 5 s after the wait.
                timeout = max(int(left), MIN_HOLD_TIMEOUT)
        instruct = grip_of(request).start_instruct()
        channels = self._grip_channels(request, policy)
        repeat = self._repeat_of_the_push(policy, channels, etag)
        if repeat is not None:
            instruct.meta["user"] = repeat
        instruct.add_channels(channels)
        instruct.set_hold_longpoll(timeout)
        if unchanged is not None:
            from .unchanged import remember

            identity, ranges = unchanged
            remember(
                identity,
                etag,
                ranges,
                timeout + 60,
                own=own,
                read_at=getattr(self, "_realtime_read_at", None),
                since=since,
            )
        self.on_hold(request, policy, etag)
        return held

    def stream_response(self, request, response: Response, policy: RealtimePolicy):
        from .stream import ended_stream, next_link_for

        context = context_of(request)
        is_next = context is not None and context.role == "next-link"
        if is_next and (context.revoked or response.status_code != 200):
            # Gone, hidden, revoked or failed: end the stream as it says (stream.py).
            return ended_stream(response.status_code, context.revoked)
        if response.status_code != 200:
            return response
        content, etag = self.render_representation(response)
        last_seen = context.etag if is_next else request.META.get("HTTP_LAST_EVENT_ID")
        body = b"" if etag_matches(last_seen, etag) else format_event(content, id=etag)
        if is_next and body and last_seen and self._ahead_of_its_version(policy, etag):
            # Held at the version read before the render, this answer is followed by every
            # item Pushpin queued during the fetch that follows that version (handler/
            # httpsession.cpp, "drop any non-matching queued items"), and those may be
            # older than this render: sent, the render moved the stream back to one of them
            # (a probe past one machine: v17, then v16). It sends nothing, and the pushes
            # after that version bring the stream forward in order.
            body, etag = b"", last_seen
        stream = HttpResponse(body, content_type=EVENT_STREAM)
        stream["Cache-Control"] = "no-cache"
        stream["X-Accel-Buffering"] = "no"
        if response.has_header("Vary"):
            # Negotiated like the JSON (RFC 9110 §12.5.5): DRF's ``Vary: Accept``, which the
            # stream's own response lacked (a probe).
            stream["Vary"] = response["Vary"]
        grip = grip_of(request)
        if not grip.proxied:
            if grip_settings.proxy_required:
                return proxy_required_response()
            # A direct client gets the current event and a reconnection delay.
            stream.content = b"retry: 3000\n" + body
            return stream
        if self._holds_nothing():
            # Rendered past its channels (get_object): the event, then the client reconnects
            # at once with its Last-Event-ID, and that request holds where it should. A
            # next-link answer too: with no instruction the proxy ends the stream after it
            # (stream.serve_next_link); held again it stayed on the first object's channel,
            # at versions read for that one, until that object changed (slug probe). Not
            # held on the rendered one's channel: no version of it was read before the
            # render (DESIGN.md §4), so a change between the two would be lost.
            stream.content = b"retry: 0\n" + body
            return stream
        if is_next:
            context.result_etag = etag
        if body and not is_next:
            # A stream's first answer: made as a change committed, it sent that change, and
            # the change's publish, whose prev-id is the version read before the render,
            # was the same event again behind Pushpin (chaos probe). Its first hold then
            # conflicts, and Pushpin recovers through the next link, which sends nothing
            # the stream has.
            self._hold_past_the_push(policy, etag)
        versioned = all(policy.versions.get(ch) for ch in policy.channels)
        held = self._grip_channels(request, policy)
        repeat = self._repeat_of_the_push(policy, held, etag)
        # The live URL as held: a stream's link remembers at which version it was sent
        # ``etag``, and takes a later one in Grip-Last for a push it has (stream.py).
        live = held[0] if policy.delivery == SHARED and held else None
        if is_next:
            context.result_held = live.prev_id if live is not None else None
        link_policy: RealtimePolicy | None = policy
        if policy.delivery == SHARED and held:
            # A public link (shared by the anonymous streams of a URL) learns what a stream
            # has seen from the prev-id it holds the live URL at, a version naming an ETag
            # (stream.py). After this answer the stream has ``etag`` (sent now, or already
            # seen). Held at a version naming another one (read before a render of a change
            # not yet published; writes made while the URL was not listed), it would get
            # this event again from Pushpin's re-fetch of a fresh channel, or never get the
            # state that version names if the data returns to it (a flag set and unset: the
            # publisher finds that render current and sends nothing). A link of its own
            # remembers what it was sent, also from a public link's fetch.
            from .shared import names_etag

            if not names_etag(held[0].prev_id, etag.strip('"')):
                link_policy = None
        link, token_channel, timeout = next_link_for(
            request, context, etag, versioned, link_policy, live, as_user=policy.delivery != SHARED
        )
        instruct = grip.start_instruct()
        instruct.set_next_link(link, timeout)
        if repeat is not None:
            instruct.meta["user"] = repeat
        # A next-link answer replaces the stream's whole instruction in Pushpin (handler/
        # httpsession.cpp): without Grip-Hold it fetches the next link again at once, in a
        # loop, and channels or keep-alive left out are dropped. So every answer holds again.
        # The token's channel first: past 20 channels Pushpin drops the last ones.
        instruct.add_channel(token_channel)
        instruct.add_channels(held)
        instruct.set_hold_stream()
        instruct.set_keep_alive(KEEP_ALIVE, int(grip_settings.STREAM_KEEP_ALIVE), "interval")
        self.on_hold(request, policy, etag)
        return stream

    def _ahead_of_its_version(self, policy: RealtimePolicy, etag: str) -> bool:
        """Whether a shared render shows a commit whose push the version read before it
        does not name yet: a push of that commit, or of one before it, is still to come.
        After a hint or a status the version names no render, and the render is the news."""
        from .shared import ahead_of

        return policy.delivery == SHARED and ahead_of(policy.versions.get(policy.channels[0]), etag)

    def _hold_past_the_push(self, policy: RealtimePolicy, etag: str) -> None:
        """A shared stream's first answer that sends a render its version read before does
        not name (a change committed, not yet published) holds at a version of its own
        naming that render, which no publish names as its prev-id. Held at the version read,
        the stream got the change twice: the publish, whose prev-id that version is, was
        delivered after the answer had sent it (chaos probe). Now the first hold conflicts
        with the channel's last id once the publish is out, and Pushpin recovers once,
        forgetting that id, through the next link, which sends nothing (the stream's
        Grip-Last names the render it has) or what changed since.

        Not for a next-link answer: Pushpin checks no conflict on a stream's later holds,
        and drops every item queued during the fetch that does not follow the hold
        (handler/httpsession.cpp, "Drop any non-matching queued items"), so the push of a
        change made while the fetch was under way was lost for good (the multi-process
        test in the CI of 6a512c6). That answer holds at the version read, and sends no
        render ahead of it (:meth:`_ahead_of_its_version`)."""
        from .shared import names_etag, new_version

        channel = policy.channels[0]
        held = policy.versions.get(channel)
        tag = etag.strip('"')
        if policy.delivery == SHARED and held is not None and not names_etag(held, tag):
            policy.versions[channel] = new_version(tag)

    def _repeat_of_the_push(
        self, policy: RealtimePolicy, held: list[Channel], etag: str
    ) -> str | None:
        """The ``user`` meta of a shared hold (a long-poll, or a stream's answer) whose
        client has the render ``etag``, with Pushpin's ``skip-self`` filter set on the live
        URL's channel: a push of that same render right after the version the hold is at
        carries the same mark as its ``sender`` (``shared.repeat_mark``), and Pushpin drops
        it for this hold while still taking its id as the hold's last, so the pushes after
        it follow (handler/httpsession.cpp, ``processItem``). Such a push is sent:

        - for a subscriber that rendered at that version and may hold a state no push
          showed (``shared.mark_rendering``): the publisher sends its render again, and
          every other hold at that version already has it. A long-poll was woken with the
          ETag it held, and a stream got its last event again (chaos probe);
        - for a long-poll whose render showed a change not yet published, held at the
          version read before that render: the push of that change is the render the
          client has.

        The embedded proxy applies the filter too (``proxy/http.py``, ``skips``)."""
        from .shared import repeat_mark

        if policy.delivery != SHARED or not held or held[0].prev_id is None:
            return None
        held[0] = replace(held[0], filters=(SKIP_SELF,))
        return repeat_mark(held[0].prev_id, etag.strip('"'))

    def on_hold(self, request, policy: RealtimePolicy, etag: str) -> None:
        """Called when a request is subscribed (a hold or a stream); a hook for metrics."""

    def check_throttles(self, request):
        # Renders the server makes for a subscriber are not the subscriber's requests: a
        # burst of changes must not throttle them.
        # Nor is the proxy's re-request of a held request (for a hint or a prev-id conflict)
        # a request of the client's, whose hold was counted when it arrived: counted, one
        # long-poll answered 429 after a few writes by others (DRF probe).
        context = context_of(request)
        if context is None and is_proxy_retry(grip_of(request)):
            return
        if context is None or context.role in ("client", "gateway-subscribe"):
            super().check_throttles(request)


_dropped_noted: set[tuple[type, str]] = set()


def _note_dropped(view_class: type, key: str) -> None:
    """Say once per view and parameter (at most a thousand) that a query parameter was
    dropped: a view that reads one where drf-grip cannot see it (its ``list()``, a
    ``to_representation()``) silently answered without it (DRF probe)."""
    if (view_class, key) in _dropped_noted or len(_dropped_noted) >= 1000:
        return
    _dropped_noted.add((view_class, key))
    logger.info(
        "drf-grip: %s does not read the query parameter %r (no filter backend, paginator, "
        "get_queryset() or serializer looks it up), so it is dropped before the view runs; "
        "a view that reads it elsewhere names it in realtime_query_params",
        view_class.__qualname__,
        key[:64],
    )


class ListRealtimeMixin(_RealtimeBase):
    """For a list view (``ListAPIView``) on its own, also under a nested URL."""

    realtime_kind = "list"


class RetrieveRealtimeMixin(_RealtimeBase):
    """For a detail view (``RetrieveAPIView``) on its own."""

    realtime_kind = "detail"


class RealtimeMixin(_RealtimeBase):
    """For a viewset (or a generic view): ``list`` and ``retrieve`` become live."""


__all__ += ["grip_of", "RealtimeContext"]


def _stored_by_no_cache(response: Response) -> None:
    """``Cache-Control: no-store`` on a representation that carries an ETag, unless the view
    set its own. A browser (or any HTTP cache) keeps an answer with a validator and
    revalidates it with ``If-None-Match`` on its next use, and here that is a long-poll: a
    plain ``fetch()`` of the URL again, or a reload, waited out the hold, 55 s (a probe with
    Chromium). Stored by no cache, an ``If-None-Match`` reaches the view only when the
    client sent it on purpose (the Fetch standard sends a request that carries one by hand
    past the cache)."""
    if not response.has_header("Cache-Control"):
        response["Cache-Control"] = "no-store"
