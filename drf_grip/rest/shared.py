"""Shared delivery: one render per live URL, pushed to every subscriber.

A change renders each live URL it affects (:mod:`.live_urls` lists them) once, for all of
that URL's subscribers, and publishes it with the channel's next version: ordered across
processes by render tickets (:mod:`.tickets`), skipped when the representation did not
change, and replaced by hints where a render cannot be pushed (too large, failed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db import models

from ..grip.items import channel_name
from ..grip.publish_hooks import (
    register_delivered_hook,
    register_dropped_hook,
    register_item_rewrite,
)
from ..grip.publisher import get_publisher, publish
from ..protocol.constants import MAX_PUBLISH_BODY
from . import channels as names
from .context import RealtimeContext
from .live_urls import affected_live_urls, forget_live_url
from .policies import live_timeout
from .render import (
    HOST_REFUSED,
    RecordedRequest,
    host_allowed,
    subscriber_get,
)
from .sse import format_event
from .store import NEED, cache_failed, incr, state_cache, write_entries
from .tickets import (
    began_since,
    begin_renders,
    counter_key,
    current_tickets,
    exclusive,
    later,
    overtaken,
    sent_entry,
    sent_key,
    take_ticket,
)
from .versions import (
    CONFIRM_WAIT,
    add_version,
    as_version,
    confirmers,
    read_confirmed,
    read_confirmed_by,
    read_version,
    set_version,
    version_entry,
    version_key,
    watch,
)

__all__ = [
    "publish_shared",
    "render_stats",
    "names_etag",
    "mark_ahead",
]

logger = logging.getLogger("drf_grip.publish")

#: How many shared representations the publisher rendered (tests count them).
render_stats: dict[str, int] = {"renders": 0}


#: Ends a subscriber's first version (``first_version``), which is never an item's id.
_FIRST = "u"


def new_version(tag: str, *, first: bool = False) -> str:
    """A version naming a representation, unique per publish: Pushpin drops a second item
    with the same (channel, id) within 60 s, and a page can go A -> B -> A -> B in a minute.
    The suffix starts with the time of the render in milliseconds (``rendered_at``); a
    subscriber's ``first`` version says so at its end (``_unseen_by_proxies``)."""
    end = _FIRST if first else ""
    return f"{tag}.{int(time.time() * 1000):012x}{secrets.token_hex(2)}{end}"


def rendered_at(version: str) -> float | None:
    """When the render a version names was made (seconds), if the version says."""
    suffix = version.rsplit(".", 1)[-1].removesuffix(_FIRST)
    if len(suffix) != 16:
        return None
    try:
        return int(suffix[:12], 16) / 1000
    except ValueError:
        return None


def first_version(channel: str, etag: str) -> str:
    """The prev-id for a subscriber that read no version of ``channel`` and rendered
    ``etag``: a first version naming it, given to the channel when it still has none.

    Otherwise a publisher named one since, from a render that may be older or newer than
    this one. Naming the same ETag, that version. Else the subscriber's render is marked
    (``mark_rendering``: the next render is sent even if it equals that version), and the
    hold takes the version made here, which no proxy has seen: a proxy that saw the
    publisher's re-requests it at once (Pushpin: a hold's prev-id that differs from the
    channel's last id, ../PUSHPIN.md).

    A first version is never an item's id, so no proxy has it as the channel's last id:
    it says so (``new_version``, ``first``), and the render after it is preceded by an
    item that makes each proxy forget the channel's last id (``_publish_turn``). Only a WebSocket subscriber's
    was: a held request's conflict makes the Pushpin it reached forget an older id
    (handler/httpsession.cpp), but a client answered at once (its ``If-None-Match`` stale)
    holds nothing, and another Pushpin saw no conflict at all; the render then waited in
    that Pushpin's sequencer, and its gateway subscribers got it 5 s late, after newer
    ones, and stayed on it (convergence harness, Redis restarted under two Pushpins)."""
    tag = etag.strip('"')
    version = new_version(tag, first=True)
    if add_version(channel, version):
        return version
    current = read_version(channel)
    if current is None:
        return version
    if names_etag(current, tag):
        return current
    mark_rendering(channel, current)
    return version


#: A version carried by an item given up for a proxy (``forget_dropped``), which that proxy
#: has not seen as an item's id.
_UNSEEN = "drf_grip:unseen-version:"


def _unseen_key(channel: str, version: str) -> str:
    return f"{_UNSEEN}{channel}:{version}"


def forget_dropped(items: list[dict[str, Any]]) -> None:
    """Items of live URLs given up for a proxy (``publish_hooks.register_dropped_hook``): the
    versions they carried are unseen there, as a subscriber's first version is. The next
    render chained onto one of them with it as its prev-id, which that proxy never
    had: Pushpin held the render 5 s in its sequencer, and the embedded proxy never gave it
    to a WebSocket (publishing probe: a process whose proxy URL was wrong moved the
    channel's version in the shared cache, and the shared gateway subscribers stayed on
    the old representation until the change after the next). Marked unseen, the next
    render reaches every subscriber at once (``_publish_turn``)."""
    marks = {
        _unseen_key(channel_name(item), str(item["id"])): 1
        for item in items
        if item.get("id") is not None and channel_name(item).startswith(_URL_CHANNELS)
    }
    if marks:
        state_cache().set_many(marks, live_timeout())


def _unseen_by_proxies(channel: str, version: str | None) -> bool:
    """Whether ``version`` is one no proxy saw as an item's id: a subscriber's first, which
    says so itself (no cache write on the connect path), or one ``forget_dropped`` marked."""
    if version is None:
        return False
    if version.endswith(_FIRST) and rendered_at(version) is not None:
        return True
    return state_cache().get(_unseen_key(channel, version)) is not None


#: Per model: when the publisher last hinted every shared hold of it (``time.time()``),
#: because the cache lost or evicted the records that say which live URLs are held.
_RECOVERED = "drf_grip:recovered:"


def mark_recovered(label: str) -> None:
    """Before the publisher hints the shared holds of model ``label`` on its recovery
    channel: the live URLs it could not see kept their versions while their data changed
    (:func:`predates_recovery`)."""
    state_cache().set(_RECOVERED + label, time.time(), 24 * 3600)


def predates_recovery(label: str, version: str) -> bool:
    """Whether ``version`` of a shared channel of model ``label`` was rendered before that
    model's last recovery: the publisher may have skipped its URL since (its listing was
    evicted), so it may name older data than the URL shows now. Its holders re-requested by
    the recovery hint then come back with its ETag; the first lists the URL again and
    renders it, but the URL was listed by the time the others came, and they were held as
    current at that old version (multi-process probe, ``allkeys-lru``)."""
    since = state_cache().get(_RECOVERED + label)
    if not isinstance(since, (int, float)):
        return False
    at = rendered_at(version)
    return at is None or at <= since


def tag_of(version: str) -> str:
    """The ETag (without quotes) a shared channel's version names."""
    return version.rsplit(".", 1)[0]


def names_etag(version: str | None, tag: str) -> bool:
    """Whether a shared channel's ``version`` names the ETag ``tag`` (without quotes)."""
    return version is not None and tag_of(version) == tag


def names_a_render(version: str | None) -> bool:
    """Whether a shared channel's ``version`` names a pushed render, not a hint (a render
    that failed, was too large or was behind a subscriber's) nor a status such as a 404:
    after those the subscribers' own fetches send the render."""
    return version is not None and not tag_of(version).startswith((_UNRENDERED, _STATUS))


def ahead_of(version: str | None, etag: str) -> bool:
    """Whether a render whose ETag is ``etag`` shows a commit that ``version`` (read before
    the render) does not name: the push of that commit, or of one before it, is still to
    come. After a hint or a status the version names no render, and the render is the news."""
    return names_a_render(version) and not names_etag(version, etag.strip('"'))


def repeat_mark(version: str | None, tag: str) -> str | None:
    """What marks the push of the render ``tag`` made just after ``version``: a publish
    carries it as its ``sender`` meta, and a shared hold at ``version`` whose client has
    that render as its ``user`` meta, with Pushpin's ``skip-self`` filter on the channel,
    so that the push does not bring that client the render it has while every other push
    after ``version`` still reaches it (``RealtimeMixin._repeat_of_the_push``).

    The version is part of the mark: Pushpin's meta changes only with the hold's next
    answer, and a page that goes back to a render (A, B, A) must reach a stream holding it
    after the B in between."""
    return f"{version} {tag}" if version else None


def _rendering_key(channel: str, version: str) -> str:
    return f"drf_grip:rendering:{channel}:{version}"


def mark_rendering(channel: str, version: str) -> None:
    """A subscriber read ``version`` of a shared channel and now renders the URL itself.

    Its render may be of data that no published render showed: two writers commit in turn,
    the first one's render steps aside for the second's (``tickets``), and the second
    renders what ``version`` names again; the subscriber that rendered in between would
    keep the middle state while the publisher saw nothing to send (the soak: a stream of
    ``/api/shared-todos/22/`` kept ``done: true``). Marked *before* the render, so a
    publisher deciding later never skips a render as unchanged while the channel is still
    at that version (``_take_version``). A count: each subscriber whose render turned out to
    be what ``version`` names takes its mark back (``unmark_rendering``)."""
    cache, key = state_cache(), _rendering_key(channel, version)
    if cache.add(key, 1, live_timeout()):
        return
    try:
        incr(cache, key, live_timeout())
    except ValueError:  # expired in between
        cache.add(key, 1, live_timeout())


def unmark_rendering(channel: str, version: str) -> None:
    """The subscriber that marked ``version`` rendered what it names: nothing is new to it,
    and an equal render need not be sent for it (one event per change; a probe's stream
    got its first event again at the first change elsewhere in the model)."""
    try:
        state_cache().decr(_rendering_key(channel, version))
    except ValueError:
        pass  # expired: the next equal render is skipped, as for any unmarked version


def _rendered_by_subscribers(channel: str, version: str) -> bool:
    marks = state_cache().get(_rendering_key(channel, version))
    return isinstance(marks, int) and marks > 0


#: A subscriber's own render that the version it read did not name (``mark_ahead``).
_AHEAD = "drf_grip:ahead:"


def mark_ahead(channel: str, tag: str) -> None:
    """A subscriber rendered a shared URL itself and got ``tag``, which the version it read
    does not name: it saw a commit whose render no publisher has sent yet. Its hold holds
    at that older version, so a publisher's render that read the rows *before* that commit,
    pushed whole, would be delivered to it and move it back (chaos probe behind Pushpin: a
    long-poll got t45, then t41, then t45 again). Kept with the last render ticket taken
    when the subscriber's render was done: a publisher's render with that ticket or an
    earlier one began before that moment and may be that older render
    (``_behind_a_subscriber``)."""
    ticket = current_tickets([channel])[channel]
    state_cache().set(_AHEAD + channel, (ticket, tag), live_timeout())


def _since_render_began(channel: str, ticket: int) -> tuple[bool, Any]:
    """Once the render holding ``ticket`` is made: whether a later render of ``channel``
    began (``tickets.overtaken``), and the channel's ``mark_ahead``, in one round trip."""
    counted, ahead = counter_key(channel), _AHEAD + channel
    found = state_cache().get_many([counted, ahead])
    return later(found.get(counted), ticket), found.get(ahead)


def _behind_a_subscriber(ahead: Any, ticket: int, tag: str) -> bool:
    """Whether a subscriber's own render, made after the render holding ``ticket`` began,
    differs from it (``ahead``: the channel's ``mark_ahead``, read at ``_AHEAD``): that
    render may be the older one. It then goes out as a hint (each long-poll runs its own
    GET, each stream fetches its next link), which moves nobody back; the publish of the
    newer commit follows as usual. A render that began later than the mark read at least
    what the subscriber read."""
    return isinstance(ahead, (tuple, list)) and ahead[0] >= ticket and ahead[1] != tag


#: Response headers a shared push leaves out. Pushpin merges a published ``http-response``'s
#: headers onto the held response's (PUSHPIN.md), so each of these keeps the hold's value:
#: - hop-by-hop headers (RFC 9110 §7.6.1) and ``Content-Length``: they describe one
#:   connection, and the proxy frames the pushed body itself;
#: - ``Date``: stamped on each response by the server that sends it;
#: - ``Set-Cookie``: the render ran with no subscriber's cookies (``record(credentials=
#:   False)``), and a cookie set for it (a CSRF token, a session) must never reach every
#:   subscriber of the URL. Django keeps cookies apart (``response.cookies``); a view that
#:   sets the header by hand is caught here;
#: - ``Grip-*``: instructions to the proxy, never the client's (PUSHPIN.md: removed);
#: - ``Access-Control-*``: CORS answers the requesting ``Origin``, and the render's is the
#:   first subscriber's: each hold keeps the answer to its own;
#: - ``ETag``: set from the render's ETag (``render_live``).
#: The rest (``Content-Type``, ``Link``, ``X-Total-Count``, ``Allow``, ``Vary``,
#: ``Cache-Control``, ``Content-Language``...) is what a fresh GET of the URL carries.
_UNPUSHED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "set-cookie",
        "etag",
    }
)
_UNPUSHED_PREFIXES = ("grip-", "access-control-")


def pushed_headers(response: Any) -> dict[str, str]:
    """The headers of a shared render that its subscribers' woken long-polls get."""
    return {
        name: value
        for name, value in response.items()
        if name.lower() not in _UNPUSHED_HEADERS
        and not name.lower().startswith(_UNPUSHED_PREFIXES)
    }


def render_live(recorded: RecordedRequest) -> tuple[int, bytes, dict[str, str], str | None]:
    """Render a live URL as its subscribers get it: status, body, the headers to push
    (``pushed_headers``), ETag."""
    context = RealtimeContext(role="shared-render")
    render_stats["renders"] += 1
    response, _request = subscriber_get(recorded, context)
    return (
        response.status_code,
        response.content,
        pushed_headers(response),
        response.get("ETag") or context.result_etag,
    )


def _ws_message(
    url: str, status: int, body: bytes, headers: dict[str, str], etag: str | None = None
) -> str:
    """A change message for gateway subscribers, with no subscription id (one message for all
    of them): ``{"event": "change", "url": LIVE, "status": 200, "etag": ..., "data": ...}``;
    gone or hidden: ``{"event": "change", "url": LIVE, "status": 404, "error": ...}``."""
    from .gateway.messages import change_event, media_type_of

    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return change_event(
        {"event": "change", "url": url}, status, body, media_type_of(content_type), etag
    )


def publish_shared(
    model: type[models.Model],
    pks: set[Any] | None,
    deleted: set[Any],
    committed_at: float | None = None,
) -> None:
    """Render and publish each live URL a committed change affects.

    Several processes publish their own commits (two workers, four writers): each would
    render every affected URL, and of two renders of one URL only the later one is sent
    (tickets.py), so under concurrent writers most renders were thrown away while the last
    change waited behind them (the large soak). The tickets are read once here, after the
    change committed: a URL whose render another process began since reads the database
    after this change, and that render (or a later one) is published for it, so this
    process skips it and goes on with the next. So does a URL that this process began
    rendering after the change was handed over (``committed_at``): a change committed while
    a publish was rendering waited for it to end, then re-rendered every URL, of which the
    ones rendered after the commit were the same again (the multi-process test: its last
    URLs a second late)."""
    entries = affected_live_urls(model, pks, deleted)
    # The URLs a hold still needs first; those nobody renewed since their holds ended after
    # them, rendered all the same (a hold that was not renewed is not lost).
    now = time.time()
    entries.sort(key=lambda entry: entry.get(NEED, now) < now)
    seen = current_tickets([entry["channel"] for entry in entries])
    rendered = False  # until this pass renders, ``seen`` is as good as a read now
    for entry in entries:
        channel = entry["channel"]
        if rendered and overtaken(channel, seen[channel]):
            _trace(channel, entry["url"], seen[channel], "covered by a render begun since")
            continue
        if began_since(channel, committed_at):
            _trace(channel, entry["url"], seen[channel], "covered by a render begun since here")
            continue
        try:
            if host_allowed(RecordedRequest.from_dict(entry["req"])):
                rendered = True
                publish_live_url(entry)
            else:
                _drop_live_url(entry, model, pks, deleted)
        except Exception as exc:  # noqa: BLE001 - one URL must not stop the others
            if cache_failed(exc):
                # The cache stopped taking writes (Redis out of memory) or answering: every
                # URL after this one fails alike, and the publish must be tried again once
                # it does (change_worker._publish_once_the_cache_answers), not counted as done.
                raise
            logger.exception("drf-grip could not publish a live URL for its subscribers")


#: Seconds an older render is still sent after a newer one was made: within Pushpin's 5 s
#: wait for a missing prev-id, with room for the newer item's own way to the proxy.
_SEQUENCE_WINDOW = 3.0

#: What every live URL's channel name starts with (``channels.url_channel``).
_URL_CHANNELS = "drf.url."
#: What every gateway connection's own channel name starts with.
_CONNECTION_CHANNELS = names.connection_channel("")


#: Joins a live URL's version and channel in the id of its copy for a fresh subscriber.
_COPY_OF = "@"


#: The suffixes of a copy sent again: after a subscribe answer, after a late copy.
_AGAIN, _AFTER = "again", "after-"


def _copy_id(channel: str, version: str) -> str:
    # Channel first: a gateway re-render's id starts with its ticket (gateway.rerender).
    return f"{channel}{_COPY_OF}{version}"


def _version_and_channel(item: dict[str, Any]) -> tuple[str, str] | None:
    """The live URL's version and channel an item carries a render of: its own id and
    channel, or, for a copy sent to a fresh gateway subscriber's connection channel, the
    ones its id names (``_copy_id``)."""
    item_id = item.get("id")
    if item_id is None or "ws-message" not in (item.get("formats") or {}):
        return None
    channel = channel_name(item)
    if channel.startswith(_URL_CHANNELS):
        return str(item_id), channel
    url_channel, sep, version = str(item_id).partition(_COPY_OF)
    head, again, suffix = version.rpartition(_COPY_OF)
    if again and (suffix == _AGAIN or suffix.startswith(_AFTER)):
        version = head  # sent again after an answer, or after a late copy (ETags may hold @)
    if sep and url_channel.startswith(_URL_CHANNELS):
        return version, url_channel
    return None


def _overtaken_version(item: dict[str, Any], read: Mapping[str, Any]) -> str | None:
    """An item carrying a live URL's render when that channel has a newer version (a newer
    render was published, by this process or another): that version, else None. ``read``:
    what :func:`_read_to_send` read for it."""
    found = _version_and_channel(item)
    if found is None:
        return None
    version, channel = found
    value = as_version(read.get(version_key(channel)))
    current = None if value is None else rendered_version(channel, value)
    return None if current is None or current == version else current


def _recently_rendered(item: dict[str, Any]) -> bool:
    made = rendered_at(str(item.get("id")))
    return made is not None and time.time() - made <= _SEQUENCE_WINDOW


def outdated_item(item: dict[str, Any]) -> bool:
    """A live URL's item overtaken by a newer render long enough ago that it is not sent at
    all. Pushpin orders long-poll and stream items by prev-id, but an older render retried
    late (after a proxy outage) would still move subscribers back."""
    newer = _overtaken_version(item, _read_to_send([item]))
    return newer is not None and not _recently_rendered(item)


def live_items_as_sent(
    items: list[dict[str, Any]],
) -> list[dict[str, Any] | list[dict[str, Any]] | None]:
    """:func:`live_item_as_sent` of each of a batch, what they read read at once."""
    read = _read_to_send(items)
    return [_as_sent(item, read) for item in items]


def _read_to_send(items: list[dict[str, Any]]) -> Mapping[str, Any]:
    """What deciding how to send ``items`` reads (:func:`_keys_to_send`), in one round trip
    (none when nothing is to be read)."""
    keys = {key for item in items for key in _keys_to_send(item)}
    return state_cache().get_many(list(keys)) if keys else {}


def _keys_to_send(item: dict[str, Any]) -> list[str]:
    """What :func:`live_item_as_sent` reads for ``item``: its live URL's version, and who
    was answered ahead of the item (:func:`_skipping_answered_ahead`)."""
    keys = []
    found = _version_and_channel(item)
    if found is not None:
        keys.append(version_key(found[1]))
    ahead = _answered_ahead_key_of(item)
    if ahead is not None:
        keys.append(ahead)
    return keys


def live_item_as_sent(item: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """What to send for a live URL's item just before it goes out.

    Current, the item itself. Overtaken by a newer render (made by this process or another)
    long ago, nothing. Overtaken a moment ago, two hints (a long-poll re-requests, a stream
    fetches its next link, a WebSocket gets nothing), because of Pushpin's sequencer
    (src/handler/sequencer.cpp), which keeps each channel's last id:

    - The newer render chains onto this one (its prev-id is this item's id); arriving first,
      it waits up to 5 s for an item with that id. Dropped, every subscriber of the URL
      waited those 5 s (seen in the soak). So the first hint keeps this item's id, and no
      prev-id: it is never held, and it releases the newer render at once.
    - Arriving after the newer render, that id would take the channel's last id back, and
      the render after the newer one (whose prev-id is the newer one's id) would wait 5 s
      (seen in the soak: two writer processes' renders crossed). The second hint has no id,
      and an item without an id clears the channel's last id (``sendItem``): whatever comes
      next is sent at once.
    """
    return live_items_as_sent([item])[0]


def _as_sent(
    item: dict[str, Any], read: Mapping[str, Any]
) -> dict[str, Any] | list[dict[str, Any]] | None:
    if _overtaken_version(item, read) is None:
        return _skipping_answered_ahead(item, read)
    if not channel_name(item).startswith(_URL_CHANNELS):
        # A copy on a connection's own channel: nothing chains onto it, and nothing orders
        # it against the newer render, which the connection gets anyway.
        return None
    if not _recently_rendered(item):
        return None
    hints = {"http-response": {"action": "hint"}, "http-stream": {"action": "hint"}}
    link = {k: v for k, v in item.items() if k not in ("prev-id", "formats")}
    forget = {k: v for k, v in link.items() if k != "id"}
    return [{**link, "formats": hints}, {**forget, "formats": hints}]


@dataclass(frozen=True)
class _Fresh:
    """A channel's fresh gateway subscribers as a render finds them (gateway.fresh_subscribers).

    ``skipped``: the proxy users (``user`` meta) the item names in ``skip_users``: every
    connection not settled yet. Such a connection's ``subscribe`` may not be applied by the
    proxy yet, and nothing tells when it is: its settle sends it the render instead
    (``send_after_answer``). Sent both ways, a connection whose subscription was active got
    each change twice (one message per change, DESIGN.md §1).

    ``overdue``: those of them (connection keys) whose settle should have run a while ago
    and did not (its process stopped: a restart, a crash): the render is sent to each on
    its own channel now, as its settle would have, and it counts as settled."""

    skipped: list[str]
    overdue: list[str]


def _fresh_subscribers_of(channel: str) -> _Fresh | None:
    """None when the channel has no fresh subscriber at all, settled or not (its renders
    need not be kept)."""
    from .gateway.connections import fresh_subscribers, proxy_user

    entries = fresh_subscribers(channel).entries()
    if not entries:
        return None
    now = time.time()
    waiting = [e for e in entries if not e.get("s")]
    overdue = [e["k"] for e in waiting if e.get("until", now) < now]
    return _Fresh(sorted(proxy_user(e["k"]) for e in waiting), overdue)


def _settle_overdue(
    channel: str, fresh: _Fresh | None, version: str, message: dict[str, Any]
) -> None:
    """Send the render at ``version`` to the overdue fresh subscribers (``_Fresh``), and mark
    them settled. The copy's id is the one their own settle would give it: should a late
    settle send it too, the proxy drops the second (a duplicate id on a channel)."""
    if fresh is None or not fresh.overdue:
        return
    from .gateway.connections import fresh_subscribers

    index = fresh_subscribers(channel)
    for conn in fresh.overdue:
        index.add(conn, {"s": 1})
        _send_copy(conn, channel, version, message)


def _send_copy(conn: str, channel: str, version: str, message: dict[str, Any]) -> None:
    """Send the render of ``channel`` at ``version`` to a connection's own channel, once:
    its id is the same whoever sends it (a settle, a publisher that found the settle
    overdue), and a proxy drops a second item with an id it has seen on a channel."""
    from .gateway.connections import send_to_connection

    register_delivered_hook(repair_copies)
    item_id = f"{_copy_id(channel, version)}{_COPY_OF}{_AGAIN}"
    send_to_connection(conn, message, item_id=item_id)


#: Seconds a settle waits, holding its channel's lock, for its copy to reach the proxies
#: (``send_after_answer``): the channel's publishers wait that long at most. A copy slower
#: than that stays ahead of this process's later items in its queue; ``repair_copies``
#: mends what another process published meanwhile.
_COPY_WITHIN = 0.25


#: The last render kept for fresh subscribers of a channel: ``(version, ws-message,
#: skipped)``, ``skipped`` the proxy users its item named in ``skip_users``.
_FRESH_LAST = "drf_grip:ws-fresh-last:"


def _latest_copy(
    channel: str, version: str | None = None
) -> tuple[str, dict[str, Any], list[str]] | None:
    """The channel's current render as kept for fresh subscribers, if it is (``version``:
    the channel's, if just read). The kept render first: none (no render since fresh
    subscribers came, the common case) is one read."""
    latest = state_cache().get(_FRESH_LAST + channel)
    if not (isinstance(latest, tuple) and len(latest) == 3):
        return None
    return latest if latest[0] == rendered_version(channel, version) else None


def send_after_answer(
    conn: str,
    channel: str,
    answered: str | None,
    active_by: float,
    subscribed: Callable[[], bool] | None = None,
    slot: str | None = None,
) -> None:
    """A moment after a gateway ``subscribe`` answer rendered at version ``answered`` left
    for the proxy, if the connection is still ``subscribed`` (the client may have
    unsubscribed since).

    Listed among the channel's fresh subscribers (in ``slot``): every render since was
    published skipping this connection until now (``_take_version``); it is marked settled
    first, so later renders reach it through the live URL's channel, then sent the latest
    render if that one skipped it. Not listed (the index was full): a newer render that was
    published before the proxy applied the subscription did not reach the connection, so
    the current one is sent to it, unless it was rendered after ``active_by`` (a time by
    which the proxy had applied it: gateway.view, ANSWER_TRANSIT).

    One step with the channel's publishers (``tickets.exclusive``, as ``_take_version``),
    the lock let go once the copy has reached the proxies (``_COPY_WITHIN`` at most): a
    newer render is then published after it, and reaches the client after it. Let go at
    once, the copy could arrive after a newer render that another process published to
    the live URL's channel (nothing orders two channels), and the client went back: v28,
    v24, then v28 again from ``repair_copies`` (a probe past one machine, a resubscribing
    client)."""
    from .gateway.connections import fresh_subscribers, proxy_user

    with exclusive(channel):
        if slot is None:
            latest = _latest_copy(channel)
            if latest is None or latest[0] == answered:
                return
            made = rendered_at(latest[0])
            if made is not None and made > active_by:
                return
        else:
            fresh = fresh_subscribers(channel)
            fresh.replace_in(slot, conn, {"s": 1})
            latest = _skipped_render(channel, answered, proxy_user(conn))
            if latest is None:
                fresh.remove_from(slot, conn)  # nothing sent: no copy to repair later
                return
        if subscribed is not None and not subscribed():
            return
        _send_copy(conn, channel, latest[0], latest[1])
        # Each destination's lane sends in queue order: what this waits for beyond the copy
        # was queued before it, and goes out before it all the same.
        get_publisher().flush(_COPY_WITHIN)


def await_the_push_read(
    channel: str,
    answered: str | None,
    etag: str | None,
    user: str | None = None,
    within: float = CONFIRM_WAIT,
) -> None:
    """A shared gateway subscribe answer that renders a commit its version ``answered`` does
    not name yet (:func:`ahead_of`) waits, at most ``within`` seconds, until a proxy
    confirms the push of ``answered``, or another: that push was published before the
    connection listed itself as a fresh subscriber, so it does not skip the connection, and
    arriving after the proxy applied the subscription it was delivered after the answer, an
    older render (v17 answered, then v15: a probe past one machine). Pushpin orders no
    ``ws-message`` items by prev-id; the renders published later skip the connection until
    its settle.

    One proxy's confirmation says nothing of the others: a second Pushpin back from a
    restart got that push from the publisher's retry after the subscription it had just
    taken, and the client went back (v28 answered, then v26: the same probe, one Pushpin
    restarted). So the connection's proxy ``user`` is also named as one that push skips,
    wherever it is sent from now on (``_skipping_answered_ahead``). A push already on its
    way to a proxy when that was recorded skips nobody: with several proxies the wait is
    for each one's confirmation (the probe past one machine, both Pushpins up: v18
    answered, then v17, in 3 of 40 runs)."""
    if etag is None or not ahead_of(answered, etag):
        return
    if user is not None and answered is not None:
        _skip_when_late(channel, answered, user)
    proxies = confirmers()

    def read() -> dict[str, str | None]:
        return read_confirmed_by(channel, proxies) if proxies else read_confirmed([channel])

    def pushed(seen: dict[str, str | None]) -> bool:
        # Each proxy confirmed that push, or another since the wait began.
        return all(v == answered or v != first[k] for k, v in seen.items())

    first = read()
    watch(read, pushed, within, seen=first)


#: Per live URL channel and version: the proxy users of gateway connections answered with
#: a render ahead of that version (``await_the_push_read``), which its push skips.
_ANSWERED_AHEAD = "drf_grip:answered-ahead:"
#: At most this many users per version; a Pushpin item's meta is a header-sized string.
_ANSWERED_AHEAD_MAX = 256


def _answered_ahead_key(channel: str, version: str) -> str:
    return f"{_ANSWERED_AHEAD}{channel}:{version}"


def _skip_when_late(channel: str, version: str, user: str) -> None:
    """Name ``user`` among those the push of ``version`` skips; under the channel's lock,
    since subscribers in several processes may be answered ahead of one version at once."""
    cache, key = state_cache(), _answered_ahead_key(channel, version)
    with exclusive(channel):
        users = cache.get(key)
        users = tuple(users) if isinstance(users, (tuple, list)) else ()
        if user not in users:
            cache.set(key, (*users, user)[-_ANSWERED_AHEAD_MAX:], live_timeout())


def _answered_ahead_key_of(item: dict[str, Any]) -> str | None:
    """Where the gateway connections answered ahead of a live URL's push are named; None
    for an item that is not such a push."""
    item_id = item.get("id")
    channel = channel_name(item)
    if item_id is None or "ws-message" not in (item.get("formats") or {}):
        return None
    if not channel.startswith(_URL_CHANNELS):
        return None
    return _answered_ahead_key(channel, str(item_id))


def _skipping_answered_ahead(item: dict[str, Any], read: Mapping[str, Any]) -> dict[str, Any]:
    """A live URL's push, as sent: its ``skip_users`` meta also names the gateway
    connections answered with a render ahead of it (``await_the_push_read``). The item is
    still sent to every other subscriber; the newer render those connections hold is
    published after it, since its commit came after this render read (the subscriber read
    this version, set once this render was done, before rendering its own). ``read``: what
    :func:`_keys_to_send` named, read."""
    key = _answered_ahead_key_of(item)
    if key is None:
        return item
    users = read.get(key)
    if not isinstance(users, (tuple, list)) or not users:
        return item
    meta = dict(item.get("meta") or {})
    named = [name for name in meta.get("skip_users", "").split(",") if name]
    meta["skip_users"] = ",".join(dict.fromkeys([*named, *users]))
    return {**item, "meta": meta}


def _skipped_render(
    channel: str, answered: str | None, user: str
) -> tuple[str, dict[str, Any], list[str]] | None:
    """The channel's latest render if its item skipped the proxy user ``user``; read after
    that user's connection was marked settled, under the channel's lock.

    A publisher moves the version, then reads the fresh subscribers, then keeps its render,
    under that lock (``_take_version``). The version still at ``answered``: nothing was
    published since the answer's render, and a render that comes now reads this connection
    as settled. The kept render naming the current version: it is the last, and says whom
    it skipped. None kept for it: that render published no gateway message."""
    version = rendered_version(channel)
    if version == answered:
        return None
    latest = _latest_copy(channel, version)
    if latest is None or user not in latest[2]:
        return None
    return latest


def repair_copies(items: list[dict[str, Any]]) -> None:
    """After copies of live URLs' renders reached the proxy on connections' own channels
    (``send_after_answer``): one that a newer render overtook on its way (it passed its
    check in ``live_item_as_sent`` before another process made the newer render) may have
    arrived after the newer render, and nothing orders a connection's channel against the
    live URL's or another process's items. Seen in CI's soak: a fresh gateway subscriber
    got render 16, then 15 again, and kept it. The newest render follows it; its id names
    the late copy, so a second proxy's confirmation of that copy sends the same id (dropped
    there) and a repair that is late in its turn is repaired again."""
    from .gateway.connections import proxy_user, send_to_connection

    for item in items:
        found = _version_and_channel(item)
        channel = channel_name(item)
        if found is None or channel.startswith(_URL_CHANNELS):
            continue
        version, url_channel = found
        latest = _latest_copy(url_channel)
        if latest is None or latest[0] == version:
            continue  # current (a newer render is kept before it is published)
        conn = channel[len(_CONNECTION_CHANNELS) :]
        if proxy_user(conn) not in latest[2] and _push_queued_behind(url_channel, latest[0]):
            continue  # the newer render's push reaches the connection after the copy
        late = hashlib.sha256(str(item["id"]).encode()).hexdigest()[:12]
        item_id = f"{_copy_id(url_channel, latest[0])}{_COPY_OF}{_AFTER}{late}"
        send_to_connection(conn, latest[1], item_id=item_id)


def _push_queued_behind(channel: str, version: str) -> bool:
    """From a delivered hook: whether the push of a live URL's render at ``version`` still
    waits in this process's queue for the proxy that just confirmed the hook's items, so it
    reaches that proxy after them (``Publisher.queued_behind``). A copy sent again then gave
    the client the same message twice (the chaos probe, every delivery slowed 0.1 s)."""

    def is_it(item: dict[str, Any]) -> bool:
        return channel_name(item) == channel and str(item.get("id")) == version

    return get_publisher().queued_behind(is_it)


def publish_live_url(entry: dict[str, Any]) -> None:
    register_item_rewrite(live_item_as_sent, live_items_as_sent)
    register_dropped_hook(forget_dropped)
    recorded = RecordedRequest.from_dict(entry["req"])
    channel, url = entry["channel"], entry["url"]
    # Several processes render one live URL; an older render published after a newer one
    # would leave every SSE and gateway subscriber on it (its id chains onto the newer one's,
    # and Pushpin does not order ws-message items at all): tickets.py.
    begin_renders([channel])  # before the ticket, before the render reads
    ticket = take_ticket(channel)
    try:
        status, body, headers, etag = render_live(recorded)
    except Exception:  # noqa: BLE001 - its subscribers re-run their own GETs instead
        logger.exception("drf-grip could not render a live URL; its subscribers are hinted")
        _hint_unrendered(channel, url, ticket)
        return
    overtaken_since, ahead = _since_render_began(channel, ticket)
    if overtaken_since:
        _trace(channel, url, ticket, "overtaken by a later render")
        return
    if status == 200:
        etag = etag or ""
        # The body's ETag (``get_etag(content)``), the one validator of every transport: an
        # SSE event's id and a gateway message's etag name the body they carry, and carry no
        # headers. So a change of a header alone (``X-Total-Count`` while the page's items
        # stay) names the same tag and is not sent (``_take_version``), nor does a private
        # hint's re-request wake (same ETag): held clients get the current headers with the
        # next change of the body. A view whose headers carry data puts it in the body too
        # (DRF's ``PageNumberPagination`` has ``count``) if clients must see it change.
        tag = etag.strip('"')
        formats = {
            # Pushpin merges published headers onto the held response's (a 304 with ETag,
            # Vary, Cache-Control): without the render's own, a woken client keeps the
            # hold's old ETag (Pushpin 1.36) and lacks what a fresh GET carries (Link,
            # X-Total-Count, Allow). ETag and Content-Type (which every Django response
            # has) are always among them.
            "http-response": {
                "code": 200,
                "reason": "OK",
                "headers": {**headers, "ETag": etag},
                "body": body.decode(),
            },
            "http-stream": {"content": format_event(body, id=etag).decode()},
            "ws-message": {"content": _ws_message(url, 200, body, headers, etag)},
        }
        formats = _pushable(formats, url, len(body))
        if "content" in formats["http-stream"] and _behind_a_subscriber(ahead, ticket, tag):
            from .publishing import HINT

            # Gateway subscribers keep the message: a WebSocket cannot be asked to re-read.
            _trace(channel, url, ticket, f"a subscriber rendered after it began: {tag} hinted")
            formats = {**HINT, "ws-message": formats["ws-message"]}
        if "content" not in formats["http-stream"]:
            # Hinted: the version must not name the render. Pushpin takes an item's id as
            # the stream's last id before it fetches the next link, and a fetch that read
            # the render's ETag there sent nothing (the stream had not seen it).
            tag = f"{_UNRENDERED}{tag}"
    else:
        from .publishing import HINT, delete_formats

        tag = f"{_STATUS}{status}"
        ws = {"content": _ws_message(url, status, body, headers)}
        if status in (404, 410):
            # Gone or hidden: a hint gives each long-poll a clean answer from the origin,
            # and streams a final event.
            formats = {**delete_formats(), "ws-message": ws}
        else:
            # Failed (a 500) or refused to anyone (a 403): no deletion, which a stream's
            # client closes on for good (day-one probe). Each long-poll and each stream
            # asks again as its subscriber, whose own answer decides.
            formats = {**HINT, "ws-message": ws}
    turn = _take_version(channel, ticket, tag, formats["ws-message"])
    if turn is None:
        # A later render was sent, or this representation did not change.
        _trace(channel, url, ticket, f"not sent: {tag}")
        return
    previous, version, fresh = turn.previous, turn.version, turn.fresh
    _trace(channel, url, ticket, f"sent {version} after {previous}")
    meta = {"skip_users": ",".join(fresh.skipped)} if fresh and fresh.skipped else {}
    # A render pushed whole: ``tag`` is its ETag (it names a status or a hint otherwise).
    pushed_whole = status == 200 and "content" in formats["http-stream"]
    mark = repeat_mark(previous, tag) if pushed_whole else None
    if mark is not None:
        meta["sender"] = mark
    _publish_turn(channel, formats, turn, meta)
    _settle_overdue(channel, fresh, version, formats["ws-message"])
    if status in (404, 410):
        from .publishing import CLOSE

        # With the prev-id streams now hold, or Pushpin re-fetches (publishing.CLOSE).
        publish(channel, CLOSE, id=_closing_version(channel, version), prev_id=version)


def _closing_version(channel: str, version: str) -> str:
    """The id of the item that ends a gone URL's streams, made the channel's version: the
    proxy takes it as the channel's last id, so the render that brings the URL back must
    chain onto it. Chained onto the 404's version instead, it waited out Pushpin's 5 s for
    a missing item (the embedded proxy never delivered it), and a shared gateway
    subscriber of a page that came back kept its 404 (pagination probe). Unless a later
    render already moved the version on."""
    closing = version + _CLOSING
    with exclusive(channel):
        if read_version(channel) == version:
            set_version(channel, closing)
    return closing


#: What the id of the item ending a gone URL's streams adds to the 404's version.
_CLOSING = ".closed"


def rendered_version(channel: str, version: str | None = None) -> str | None:
    """The channel's version (``version``, if just read) as the render it names: the id of
    the item that ended a gone URL's streams names the 404 before it, which it neither
    overtakes nor replaces for fresh subscribers."""
    current = version if version is not None else read_version(channel)
    if current is not None and current.endswith(_CLOSING):
        return current[: -len(_CLOSING)]
    return current


def _pushable(formats: dict[str, Any], url: str, size: int) -> dict[str, Any]:
    """``formats``, or what replaces them when their item would exceed the publish body a
    proxy takes (Pushpin: 1 MB, ``MAX_PUBLISH_BODY``): the body goes three times in one item,
    so a representation of about 330 KB was refused, and its subscribers got none of its
    changes (the publish failed and was dropped). Then long-polls and streams are hinted,
    each running its own GET (a long-poll is re-requested, a stream's next link fetched),
    and gateway subscribers get the message alone if it fits, or a 413 change."""
    from .gateway.messages import sent_limit

    # A JSON body escaped in a JSON string at most doubles; most items are far below.
    if 3 * 2 * size + 4096 <= MAX_PUBLISH_BODY:
        return formats
    if len(json.dumps(formats)) + 4096 <= MAX_PUBLISH_BODY:
        return formats
    message = formats["ws-message"]["content"]
    if len(json.dumps(message)) + 4096 > sent_limit():  # at most MAX_PUBLISH_BODY
        error = f"the representation is {size} bytes, more than a gateway message carries"
        message = json.dumps(
            {"event": "change", "url": url, "status": 413, "error": error + ": GET it"}
        )
    from .publishing import HINT

    return {**HINT, "ws-message": {"content": message}}


#: What the subscribers of a dropped live URL get: each long-poll runs its own GET again and
#: each stream is closed (its client's new GET is answered by Django as any other).
def _dropped_formats(url: str) -> dict[str, Any]:
    # Gateway subscribers are told ``end``, as a private subscription is
    # (gateway.rerender), not ``change``: nothing more comes. A shared push names the live
    # URL, not a subscription id.
    end = {"event": "end", "url": url, "status": 400, "error": HOST_REFUSED}
    return {
        "http-response": {"action": "hint"},
        "http-stream": {"action": "close"},
        "ws-message": {"content": json.dumps(end)},
    }


def _drop_live_url(
    entry: dict[str, Any], model: type[models.Model], pks: set[Any] | None, deleted: set[Any]
) -> None:
    """A live URL recorded under a Host that ``ALLOWED_HOSTS`` no longer allows (a deploy
    narrowed it): each replay of its GET made Django log a ``DisallowedHost`` traceback, on
    every change until it expired, and its streams were told the object was deleted. It is
    unlisted with one warning, and its subscribers get what a fresh GET gives them: 400."""
    channel, url = entry["channel"], entry["url"]
    forget_live_url(model, pks, deleted, entry["k"])
    logger.warning(
        "drf-grip dropped the live URL %s (%s): its Host is not in ALLOWED_HOSTS any more",
        url, channel,
    )
    begin_renders([channel])
    ticket = take_ticket(channel)
    turn = _take_version(channel, ticket, f"{_STATUS}400")
    if turn is not None:
        _publish_turn(channel, _dropped_formats(url), turn)


#: The tag of a version whose item is a hint: no render names it, so the next render is sent.
_UNRENDERED = "unrendered-"
#: The tag of a version whose item answers a status other than 200 (``status-404``).
_STATUS = "status-"


def _hint_unrendered(channel: str, url: str, ticket: int) -> None:
    """A render that raised (a database error, a bug in a serializer) must not leave the
    URL's subscribers on what they hold, nor let a render that stepped aside for this one
    (``overtaken``) go unsent: a hint makes each long-poll and stream run its own GET.
    Gateway subscribers get the next render that succeeds."""
    from .publishing import HINT

    if overtaken(channel, ticket):
        return  # a later render publishes, or hints in its turn
    turn = _take_version(channel, ticket, f"{_UNRENDERED}{ticket}")
    if turn is None:
        return
    _trace(channel, url, ticket, f"render failed; hinted {turn.version}")
    _publish_turn(channel, HINT, turn)


def _trace(channel: str, url: str, ticket: int, what: str) -> None:
    """What became of a render (DEBUG): the channel and the live URL (path and the query
    parameters its view reads, no credentials: ``live_url``), never a header."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("live URL %s (%s), render %d: %s", channel, url, ticket, what)


class _Turn(NamedTuple):
    """A render's place in its channel's sequence (``_take_version``)."""

    #: The channel's version before it: the item's prev-id.
    previous: str | None
    #: The version it takes: the item's id.
    version: str
    #: The channel's fresh gateway subscribers (``_Fresh``), if any.
    fresh: _Fresh | None
    #: No proxy has seen ``previous`` as an item's id (``_publish_turn``).
    unseen: bool


#: A format no GRIP proxy serves: Pushpin 1.36 reads only the formats it knows
#: (handler/publishitem.cpp) and hands an item to its sessions by format (engine.cpp), and
#: the embedded proxy skips the others too. An item carrying only it reaches no client.
_NO_CLIENT_FORMAT = "drf-grip-sequence"


def _publish_turn(
    channel: str,
    formats: dict[str, Any],
    turn: _Turn,
    meta: dict[str, str] | None = None,
) -> None:
    """Publish a live URL's item at its turn (``_take_version``), chained onto the version
    before it. That version may be one no proxy has seen as an item's id (``unseen``: a
    subscriber's first, or one a proxy never got), while a proxy still knows an older id
    of the channel (drf-grip's cache flushed or restarted, or the version expired, while
    it ran on). Pushpin's sequencer then held the item up to 5 s waiting for the missing
    one, and its WebSocket subscribers, which no prev-id protects, got it after newer
    renders and stayed on it (convergence harness, Redis restarted under two Pushpins).
    Sent without a prev-id instead, every long-poll and stream held at that version was
    re-requested rather than pushed to: Pushpin answers an item whose prev-id is not the
    one a session holds at by asking the origin again (handler/httpsession.cpp, "last ID
    inconsistency"), a storm of re-requests at a fresh URL's first change. So an item with
    no id goes first, which no client receives: it makes each proxy forget the channel's
    last id (sequencer.cpp, ``sendItem``), and the item after it, chained as the holds
    are, is delivered at once."""
    if turn.unseen:
        reset_sequence(channel)
    publish(channel, formats, id=turn.version, prev_id=turn.previous, meta=meta or None)


def reset_sequence(channel: str) -> None:
    """Publish the item that makes each proxy forget ``channel``'s last id, and reaches no
    client (``_NO_CLIENT_FORMAT``): the item published next, chained onto an id no proxy
    saw (a subscriber's first version, a counter a subscriber started:
    ``versions.unseen_start``), is then delivered at once, not held in the sequencer."""
    publish(channel, {_NO_CLIENT_FORMAT: {}})


def _take_version(
    channel: str, ticket: int, tag: str, kept: dict[str, Any] | None = None
) -> _Turn | None:
    """The channel's next version for this render (a ``_Turn``); None when a render that
    started later was already sent (this one is older: publishing it would move every
    subscriber back) or when the channel already names this representation and no
    subscriber rendered the URL itself since (``mark_rendering``): its subscribers sleep
    on. One step across processes
    (``tickets.exclusive``), which also reads the channel's fresh gateway subscribers
    (``fresh``, given ``kept``: ``_Fresh``) and, if it has any, keeps ``kept``, the
    render's gateway message, for their settles, with the proxy users it skips: with its
    version, never over a newer render's, and before it is published, so that a late copy
    arriving after it finds it (``repair_copies``).

    Read after the version moved: a subscribe that found the version unchanged after
    listing itself as fresh (gateway.view) is skipped by every later render, and a settle
    that finds the kept render behind the version waits for this lock, so each render
    reaches a fresh connection one way, either skipped and then sent by its settle or
    published to it."""
    with exclusive(channel):
        marked, current = sent_key(channel), version_key(channel)
        found = state_cache().get_many([marked, current])
        if later(found.get(marked), ticket):
            return None
        previous = as_version(found.get(current))
        if names_etag(rendered_version(channel, previous), tag) and not _rendered_by_subscribers(
            channel, previous
        ):
            return None
        version = new_version(tag)
        write_entries(state_cache(), [version_entry(channel, version), sent_entry(channel, ticket)])
        fresh = None
        if kept is not None:
            fresh = _fresh_subscribers_of(channel)
            if fresh is not None:
                from .gateway.connections import FRESH_SECONDS

                state_cache().set(
                    _FRESH_LAST + channel, (version, kept, fresh.skipped), FRESH_SECONDS
                )
    return _Turn(previous, version, fresh, _unseen_by_proxies(channel, previous))
