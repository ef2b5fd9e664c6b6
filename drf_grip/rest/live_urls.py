"""Live URLs: the URLs someone holds, listed so that a change knows what to render.

A live URL is what decides the bytes of a representation: scheme, host, path, the query
parameters the view actually reads (filters, search, ordering, pagination, ``format``),
the negotiated media type and the headers named in ``realtime_vary``. Cache-busters and
client ids do not make new channels (the mixin drops them before the view runs).

Live URLs live in bounded, expiring indexes in Django's cache (``store.SlotIndex``): one per
model for list URLs, and one per object for detail URLs, so a change renders the model's
list URLs and the changed objects' detail URLs only (:mod:`.shared` renders them). Past
the cap a URL is delivered like private data (``mark_overflow``), so made-up query strings
cannot make a write cost more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.db import models
from django.http import QueryDict
from django.utils.crypto import salted_hmac
from rest_framework.settings import api_settings
from rest_framework.versioning import QueryParameterVersioning

from ..conf import grip_settings
from . import channels as names
from .policies import live_timeout
from .preconditions import lookup_of
from .render import CREDENTIAL_HEADERS, record
from .sse import EVENT_STREAM, media_type_as
from .store import ADDED, NEED, SlotIndex, state_cache
from .versions import renew_version

__all__ = [
    "LiveUrl",
    "live_url",
    "list_live_url",
    "unlist_live_url",
    "relist",
    "used_query_params",
    "reads_of",
    "mark_overflow",
    "has_overflow",
    "affected_live_urls",
    "forget_live_url",
]

#: Per index, the slot each live URL took in this process (SlotIndex.renew).
_recent: dict[str, dict[str, tuple[str, float]]] = {}


@dataclass(frozen=True)
class LiveUrl:
    """What decides a representation's bytes (:func:`live_url`); equal ones share a channel
    and one render."""

    scheme: str
    host: str
    path: str
    query: str
    media_type: str
    vary: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        vary = "".join(f" {name}={value}" for name, value in self.vary)
        return f"{self.media_type} {self.scheme}://{self.host}{self.path}?{self.query}{vary}"

    @property
    def relative(self) -> str:
        """Path and used query: how gateway messages name this representation."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def channel(self) -> str:
        return names.url_channel(self.key)


class _ReadRecorder(QueryDict):
    """A copy of ``request.GET`` that notes every key looked up in it."""

    read: set[str]

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def getlist(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().getlist(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def reads_of(django_request: Any, call: Any) -> set[str]:
    """The query parameters ``call()`` looks up in ``django_request.GET``."""
    query = django_request.GET
    recorder = _ReadRecorder(mutable=True)
    recorder.read = set()
    for key, values in query.lists():
        recorder.setlist(key, values)
    recorder._mutable = False
    django_request.GET = recorder
    try:
        call()
    except Exception:  # the view's own GET reports it, with the query it gets
        pass
    finally:
        django_request.GET = query
    return recorder.read


def used_query_params(view: Any, *, paginated: bool = True) -> set[str] | None:
    """Query parameters this view reads; None when a backend's parameters are unknown.
    ``paginated=False`` for a detail, which DRF never paginates: its ``?page=`` is unused."""
    used = set(getattr(view, "realtime_query_params", ()) or ())
    if api_settings.URL_FORMAT_OVERRIDE:  # DRF's ``?format=json``, when not turned off
        used.add(api_settings.URL_FORMAT_OVERRIDE)
    versioning = getattr(view, "versioning_class", None)
    if isinstance(versioning, type) and issubclass(versioning, QueryParameterVersioning):
        used.add(versioning.version_param)
    from django_filters.rest_framework import DjangoFilterBackend
    from rest_framework.filters import OrderingFilter, SearchFilter

    for backend_class in getattr(view, "filter_backends", ()) or ():
        backend = backend_class()
        if isinstance(backend, DjangoFilterBackend):
            filterset_class = backend.get_filterset_class(view, view.get_queryset())
            if filterset_class is not None:
                for name, field in filterset_class().form.fields.items():
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
    paginator = getattr(view, "paginator", None) if paginated else None
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


def _vary_value(meta: Any, key: str) -> str:
    """A ``realtime_vary`` header's value as a live URL's key keeps it: a credential header
    (which drf_grip.E004 names) by a keyed digest, so no token is kept in the state cache."""
    value = meta.get(key, "")
    if value and key in CREDENTIAL_HEADERS:
        return salted_hmac("drf_grip.live-url", value, algorithm="sha256").hexdigest()[:32]
    return value


def live_url(request: Any, view: Any) -> LiveUrl:
    # Sorted by name only: the values of a repeated name keep their order, which is part of
    # the meaning (DRF's filters, ordering and pagination read the last one, QueryDict.get).
    params = sorted(
        ((k, v) for k, values in request.query_params.lists() for v in values),
        key=lambda param: param[0],
    )
    media_type = getattr(request, "accepted_media_type", "") or ""
    renderer = getattr(request, "accepted_renderer", None)
    if media_type.startswith(EVENT_STREAM) or getattr(renderer, "media_type", "") == EVENT_STREAM:
        # A stream carries the JSON representation, with the media-type parameters its
        # negotiation accepted: ``text/event-stream; version=2`` (AcceptHeaderVersioning) is
        # version 2's JSON, a live URL apart from version 1's (black-box probe). The JSON is
        # the view's (``EventStreamRenderer.json_media_type``): rendered as
        # application/json, a view serving only application/vnd.api+json answered 406, and
        # its streams got ``event: delete`` at the first change (DRF probe).
        json_type = getattr(renderer, "json_media_type", "application/json")
        media_type = media_type_as(media_type, json_type)
    elif media_type:
        media_type = media_type_as(media_type)
    meta = request.META
    vary = tuple(
        (name.lower(), _vary_value(meta, "HTTP_" + name.upper().replace("-", "_")))
        for name in getattr(view, "realtime_vary", ()) or ()
    )
    return LiveUrl(
        request.scheme, request.get_host(), request.path, urlencode(params), media_type, vary
    )


def _model_table(label: str) -> SlotIndex:
    return SlotIndex(f"drf_grip:live:{label}", int(grip_settings.LIVE_URL_MAX), live_timeout())


def _detail_table(label: str) -> SlotIndex:
    return SlotIndex(f"drf_grip:live:{label}:d", int(grip_settings.LIVE_URL_MAX), live_timeout())


def _object_table(label: str, pk: Any) -> SlotIndex:
    return SlotIndex(
        f"drf_grip:live:{label}:o:{names.object_channel_part(pk)}",
        int(grip_settings.LIVE_URL_MAX_PER_OBJECT),
        live_timeout(),
    )


def _tables(label: str, pk: Any) -> list[SlotIndex]:
    if pk is None:
        return [_model_table(label)]
    return [_object_table(label, pk), _detail_table(label)]


def list_live_url(request: Any, view: Any, url: LiveUrl) -> str | None:
    """List this request's live URL: ``store.ADDED`` when it was not listed (new, or its
    listing lapsed: its channel's version may then be older than the data, nobody having
    rendered it meanwhile), ``store.KEPT``, or None when its index is full (overflow)."""
    model = view.get_realtime_model()
    pk = _detail_pk(view, model)
    listing = {
        "model": model._meta.label_lower, "pk": pk, "key": url.key, "entry": _entry_of(request, url)
    }
    context = getattr(request._request, "drf_grip", None)
    if view.is_event_stream(request):
        listing["holds"] = _STREAM  # renewed by its next link
    elif getattr(context, "role", None) == "gateway-subscribe":
        listing["holds"] = _GATEWAY  # renewed by the connection's keep-alive calls
    else:
        listing["holds"] = view.get_hold_timeout()
    if context is not None:
        # A gateway subscription renews it (relist), under the object its URL names then.
        by_value = pk is not None and lookup_of(view)[0] not in ("pk", model._meta.pk.name)
        context.state["listing"] = {**listing, "by_value": by_value}
    return relist(listing)


def _entry_of(request: Any, url: LiveUrl) -> dict[str, Any]:
    """What a live URL's listing keeps: the GET a publisher replays to render it."""
    recorded = record(request._request, credentials=False, query=url.query)
    recorded = recorded.with_headers(HTTP_ACCEPT=url.media_type or "*/*")
    return {"req": recorded.as_dict(), "url": url.relative, "channel": url.channel}


def _named_key(channel: str) -> str:
    return f"drf_grip:live:named:{channel}"


def follow_named_object(request: Any, view: Any, url: LiveUrl, pk: str) -> None:
    """List a live URL that looks its object up by another unique field (a slug) under the
    object a publisher's render of it found, ``pk``. Another object takes that value over
    (renamed away, another one renamed or created with it, in one transaction), and the
    render made for the first one's change finds the second: listed only under the first,
    its stream and gateway subscribers got the second's first state and none of its later
    changes (slug probe). Already listed there (every render but that one), it costs the
    read of one slot (``SlotIndex.renew``)."""
    label = view.get_realtime_model()._meta.label_lower
    table = _object_table(label, pk)
    entry = {**_entry_of(request, url), NEED: _needed_until(view.get_hold_timeout())}
    if table.renew(url.key, entry, _recent.setdefault(table.name, {})) == ADDED:
        # Gateway subscriptions renew their listing as they first made it (relist).
        state_cache().set(_named_key(url.channel), pk, live_timeout())


def unlist_live_url(view: Any, url: LiveUrl) -> None:
    """Take back the listing :func:`list_live_url` just added (``store.ADDED``) for a
    request answered with an error, which nobody holds: a made-up ``?page=zz1`` listed with
    its 404 was rendered at every change for the listing's lifetime (hostile-input probe).
    A listing this request found (``KEPT``) is someone else's hold."""
    model = view.get_realtime_model()
    for table in _tables(model._meta.label_lower, _detail_pk(view, model)):
        table.remove(url.key)
        _recent.get(table.name, {}).pop(url.key, None)


def relist(listing: dict[str, Any]) -> str | None:
    """List a live URL again, as :func:`list_live_url` listed it (``listing``): by the
    gateway, whose shared subscriptions hold for hours on one subscribe while nothing else
    renews their URL (it expired after ``live_timeout()``, and no change reached them)."""
    label, pk, key, entry = (listing[k] for k in ("model", "pk", "key", "entry"))
    if listing.get("by_value"):
        # Another object took its value over since it was listed (follow_named_object).
        pk = state_cache().get(_named_key(entry["channel"]), pk)
    entry = {**entry, NEED: _needed_until(listing.get("holds", _GATEWAY))}
    listed = None
    for position, table in enumerate(_tables(label, pk)):
        done = table.renew(key, entry, _recent.setdefault(table.name, {}))
        if position == 0:
            if done is None:
                return None
            listed = done
            _renew_version(entry["channel"])
        elif done is None:
            # The model-wide detail index only serves changes that name no objects; past
            # its cap those reach the URL through the bulk channel it also holds on.
            mark_overflow(apps.get_model(label), "bulk")
    return listed


#: Per process: when each live URL's version was last renewed (``time.monotonic()``).
_versions_renewed: dict[str, float] = {}


def _renew_version(channel: str) -> None:
    """A held URL's version lives as long as its listing (``versions.renew_version``),
    renewed every quarter of ``live_timeout()`` per process, like the listing itself."""
    now = time.monotonic()
    if now - _versions_renewed.get(channel, float("-inf")) < live_timeout() / 4:
        return
    if len(_versions_renewed) > 10_000:
        _versions_renewed.clear()  # bounded; a URL left out is renewed at its next hold
    _versions_renewed[channel] = now
    renew_version(channel)


#: How long a listing's hold lasts before it is renewed, besides a long-poll's own timeout.
_STREAM, _GATEWAY = "stream", "gateway"


def _needed_until(holds: int | str) -> int:
    """Until when a hold just listed needs its live URL (``time.time()``): past it, the URL
    is likely held by nobody, whose hold would have renewed it. Only the order of renders
    follows it (:func:`publish_shared`), never whether a URL is rendered: a listing lives
    ``live_timeout()`` (six minutes by default), so one client's 150 brief ``?search=``
    holds made every subscriber of the model wait 2-3 s for 6 minutes (DRF probe)."""
    if holds == _STREAM:
        seconds = int(grip_settings.NEXT_LINK_TIMEOUT)
    elif holds == _GATEWAY:
        seconds = 4 * int(grip_settings.WS_KEEP_ALIVE)
    else:
        seconds = int(holds)
    # Room for a re-request, a reconnection, and the renewal's own lag (SlotIndex.renew).
    return int(time.time()) + seconds + 60


def _detail_pk(view: Any, model: type[models.Model]) -> Any:
    if view._realtime_kind != "detail":
        return None
    # None when the URL names no one row (``_realtime_lookup_pk``): rendered on every
    # change, like a list.
    return view._realtime_lookup_pk(model)


def mark_overflow(model: type[models.Model], kind: str = "urls") -> None:
    """Remember (for a while) that some live URLs of ``model`` are past a cap."""
    state_cache().set(f"drf_grip:overflow:{kind}:{model._meta.label_lower}", 1, live_timeout())


def has_overflow(model: type[models.Model], kind: str = "urls") -> bool:
    return bool(state_cache().get(f"drf_grip:overflow:{kind}:{model._meta.label_lower}"))


def affected_live_urls(
    model: type[models.Model], pks: set[Any] | None, deleted: set[Any]
) -> list[dict[str, Any]]:
    """The live URLs a change renders: the model's list URLs, and the detail URLs of the
    changed objects (all detail URLs when the change names no objects)."""
    unique: dict[str, dict[str, Any]] = {}
    for table in _affected_tables(model, pks, deleted):
        for entry in table.entries():
            unique.setdefault(entry["k"], entry)
    return list(unique.values())


def _affected_tables(
    model: type[models.Model], pks: set[Any] | None, deleted: set[Any]
) -> list[SlotIndex]:
    label = model._meta.label_lower
    if pks is None:
        return [_model_table(label), _detail_table(label)]
    objects = sorted(set(pks) | set(deleted), key=str)
    return [_model_table(label), *(_object_table(label, pk) for pk in objects)]


def forget_live_url(
    model: type[models.Model], pks: set[Any] | None, deleted: set[Any], key: str
) -> None:
    """Unlist the live URL ``key`` from every index a change of ``pks`` reads (a detail URL
    is also listed model-wide: ``_tables``)."""
    for table in [*_affected_tables(model, pks, deleted), _detail_table(model._meta.label_lower)]:
        table.remove(key)
