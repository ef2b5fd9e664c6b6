"""The publisher's side of private gateway subscriptions: re-render each as its subscriber.

A GRIP proxy cannot re-run anything per connection when a publish arrives on a WebSocket
(there is no ``hint`` for WebSockets), so after a change of a model the publisher replays
each affected subscription's recorded GET as its own user (``get_queryset``, permissions and
serializer as for a GET; throttling skipped) and pushes the result to the connection's own
channel when its ETag changed. No connection ever receives a representation rendered for
another user. Cost per change: one render per affected private subscription, like one hint
re-request per held client.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.http import HttpResponse

from ...grip.items import channel_name
from ...grip.later import call_later
from ...grip.publish_hooks import (
    register_delivered_hook,
    register_dropped_hook,
    register_outdated_check,
)
from ...grip.publisher import get_publisher
from .. import channels as names
from ..context import RealtimeContext
from ..render import (
    HOST_REFUSED,
    RecordedRequest,
    host_allowed,
    revocation_status,
    revoked_status,
    subscriber_get,
    undecided,
)
from ..store import cache_failed, state_cache, write_entries
from ..tickets import (
    began_since,
    begin_renders,
    current_tickets,
    exclusive,
    later,
    overtaken,
    sent_after,
    sent_entry,
    sent_key,
    take_ticket,
)
from .connections import (
    REVOKED,
    load_states,
    named_objects,
    private_connections,
    send_to_connection,
    sent_version_entry,
    sent_version_key,
    sent_versions,
    set_named_object,
    set_sent_version,
    subscription_digest,
    ticket_name,
)
from .messages import REVOKED_ERROR, change_message, end_message, refusal_error

__all__ = ["publish_subscriptions"]

logger = logging.getLogger("drf_grip.gateway")


def _affected(
    sub: Mapping[str, Any],
    pks: set[Any] | None,
    deleted: set[Any],
    partitions: set[str] | None,
    named: str | None = None,
) -> bool:
    """Whether a change can alter this subscription (cost follows what changed). ``named``:
    the object a detail URL looked up by another unique field names now, when a re-render
    found another one than at subscribe (``connections.named_objects``)."""
    if sub.get("kind") == "detail" and sub.get("pk") is not None and pks is not None:
        return (named or sub["pk"]) in {str(pk) for pk in set(pks) | set(deleted)}
    if sub.get("partition") is not None and partitions is not None:
        return sub["partition"] in partitions
    return True


_CONNECTION_CHANNELS = names.connection_channel("")


#: A repair's id: the later render's id, this suffix, the overtaken ticket (unique per item:
#: Pushpin drops an id it has seen on a channel within 60 s).
_REPAIR = "-r"
_LAST_SENT = "drf_grip:ws-last:"
#: Long enough for any send still in flight; a repair needs the latest message only then.
_LAST_SENT_TIMEOUT = 120
#: The ticket of a subscription's render a proxy confirmed last.
_DELIVERED = "drf_grip:ws-delivered:"
#: The ticket of a render withheld while another process's send is on its way; the mark
#: outlives the withholding process's own sending of it (``_IN_FLIGHT``) only a little.
_WITHHELD = "drf_grip:ws-withheld:"
_WITHHELD_TIMEOUT = 10
#: Seconds another process's send is taken to be on its way at most: a later render made
#: here waits for it no longer. Its confirmation, or its being dropped, ends the wait
#: sooner; a quarter of a second was too short on a loaded machine (a probe past one
#: machine: a settle's copy confirmed 0.28 s after it was sent arrived after the render
#: that waited for it, v40, v37, v40).
_IN_FLIGHT = 1.0
_HOST = socket.gethostname()


def _this_process() -> str:
    """Names the process that sent a subscription's latest render (``_LAST_SENT``): one
    process's lane sends in queue order, two processes' lanes in no order at all."""
    return f"{_HOST}:{os.getpid()}"


def _render_of(item: dict[str, Any]) -> tuple[str, str, int, str] | None:
    """``(connection, digest, ticket, tail)`` of an item sent to a gateway subscription, else
    None: ``ticket`` is the render its message came from, ``tail`` is empty for the render
    itself and names the send for a copy sent again (``-ra…`` after an answer, ``-r…`` a
    repair)."""
    item_id = item.get("id")
    channel = channel_name(item)
    if not isinstance(item_id, str) or not channel.startswith(_CONNECTION_CHANNELS):
        return None
    ticket, _, rest = item_id.partition(".")
    digest, repair, tail = rest.partition(_REPAIR)
    if not ticket.isdigit() or not digest:
        return None
    return channel[len(_CONNECTION_CHANNELS) :], digest, int(ticket), repair + tail


def _register_hooks() -> None:
    """What the publisher tells this module of the items sent to connections."""
    register_outdated_check(outdated_render, outdated_renders)
    register_delivered_hook(repair_overtaken)
    register_dropped_hook(_given_up)


def _given_up(items: list[dict[str, Any]]) -> None:
    """Items the publisher gave up for a proxy (retries spent, queue full, the process
    exiting): a later render withheld for one of them goes out now, not at the end of its
    wait (:func:`_in_flight_elsewhere`)."""
    for found in map(_render_of, items):
        if found is not None:
            _send_withheld(found[0], found[1])


def outdated_render(item: dict[str, Any]) -> bool:
    """A re-render for one connection whose subscription had a later render sent while it
    waited in a publisher's queue (a retry after a proxy outage, another process's
    faster lane): Pushpin delivers ws-message items in the order they arrive. A later
    render withheld for it (:func:`_in_flight_elsewhere`) goes out in its place."""
    return outdated_renders([item])[0]


def outdated_renders(items: list[dict[str, Any]]) -> list[bool]:
    """:func:`outdated_render` of each item, the marks of all of them read at once."""
    renders = [_render_of(item) for item in items]
    keys = {sent_key(ticket_name(found[0], found[1])) for found in renders if found is not None}
    marks = state_cache().get_many(list(keys)) if keys else {}
    flags = []
    for found in renders:
        old = found is not None and later(marks.get(sent_key(ticket_name(*found[:2]))), found[2])
        if old:
            _send_withheld(found[0], found[1])
        flags.append(old)
    return flags


def repair_overtaken(items: list[dict[str, Any]]) -> None:
    """After a re-render, or a copy of one sent again, reached the proxy: if a later render
    of its subscription was sent meanwhile (after this one was checked, ``outdated_render``),
    the two may have arrived in either order, and nothing orders a connection's own channel:
    send the latest again. Seen in the soak: a gateway subscriber of a private list left on
    the render before the last commit, received 0.3 s after the newer one."""
    renders = [found for found in map(_render_of, items) if found is not None]
    if renders:
        # Read by a later render of another process: this one is not on its way any more.
        state_cache().set_many(
            {_DELIVERED + ticket_name(conn, digest): ticket for conn, digest, ticket, _ in renders},
            _LAST_SENT_TIMEOUT,
        )
    # Whether a later render of each was sent, read for all of them at once.
    marks = (
        state_cache().get_many([sent_key(ticket_name(c, d)) for c, d, _t, _tail in renders])
        if renders
        else {}
    )
    for conn, digest, ticket, tail in renders:
        name = ticket_name(conn, digest)
        if not later(marks.get(sent_key(name)), ticket) or _send_withheld(conn, digest):
            continue  # nothing later; or the later render waited for this one, and follows it
        if time.time() >= _withheld_until(name):
            # (While pushes wait for a subscribe answer, its settle sends the latest.) The
            # copy's id names the item it follows, so it is new to the proxy.
            latest = _later_than(state_cache().get(_LAST_SENT + name), ticket)
            if latest is not None and not _queued_behind(conn, digest, latest[0]):
                _send_again(conn, digest, latest, f"{_REPAIR}{ticket}{tail}")


def _queued_behind(conn: str, digest: str, later: int) -> bool:
    """Whether a send of the render ``later`` still waits in this process's queue for the
    proxy that just confirmed an earlier one (called from the publisher's delivered hook):
    it reaches that proxy after the earlier one, so the two did not cross, and a copy would
    give the client the same message twice (the chaos probe, every delivery slowed 0.1 s:
    2 or 3 such repeats in 7 changes)."""

    def is_it(item: dict[str, Any]) -> bool:
        found = _render_of(item)
        return found is not None and found[:3] == (conn, digest, later)

    return get_publisher().queued_behind(is_it)


def _later_than(latest: Any, ticket: int) -> tuple[int, Any, float, str | None] | None:
    """What a subscription was last sent (:func:`_last_sent`), when it is later than
    ``ticket``'s; else None."""
    found = _last_sent(latest)
    return found if found is not None and found[0] > ticket else None


def _last_sent(value: Any) -> tuple[int, Any, float, str | None] | None:
    """The record a subscription keeps under ``_LAST_SENT`` (:func:`_record_sending`):
    ``(ticket, message, time.time(), process)``; the process is None in a record kept
    before records named it. None when there is none."""
    if not isinstance(value, tuple) or len(value) < 3:
        return None
    return int(value[0]), value[1], float(value[2]), value[3] if len(value) > 3 else None


def _record_sending(name: str, ticket: int, message: Any, at: float) -> None:
    """Keep the message of ``ticket`` as subscription ``name``'s latest, on its way from
    this process since ``at`` (``time.time()``)."""
    state_cache().set(*_sending_entry(name, ticket, message, at))


def _sending_entry(name: str, ticket: int, message: Any, at: float) -> tuple[str, Any, int]:
    """What :func:`_record_sending` writes (key, value, timeout)."""
    return _LAST_SENT + name, (ticket, message, at, _this_process()), _LAST_SENT_TIMEOUT


def _send_again(
    conn: str, digest: str, latest: tuple[int, Any, float, str | None], tail: str
) -> None:
    """Send a subscription's ``latest`` message (:func:`_later_than`) again; its id
    ``LATER.DIGEST<tail>`` must be new to the proxy (Pushpin drops an id it has seen on a
    channel within 60 s). A render later still, made meanwhile, went out itself or waits
    for a send on its way (:func:`_send_withheld`): the copy is not sent."""
    later, message = latest[0], latest[1]
    name = ticket_name(conn, digest)
    with exclusive(name):
        superseded = _later_than(state_cache().get(_LAST_SENT + name), later) is not None
        if not superseded:
            # On its way from here now: a later render of another process waits for it
            # (_in_flight_elsewhere). A settle's copy that did not was overtaken by the next
            # render, and the client went back (v36, v31, v36: a probe past one machine).
            _record_sending(name, later, message, time.time())
    if superseded:
        _send_withheld(conn, digest)
        return
    _register_hooks()
    send_to_connection(conn, {"content": message}, f"{later}.{digest}{tail}")


def publish_subscriptions(
    model: Any,
    pks: set[Any] | None = None,
    deleted: set[Any] = frozenset(),  # type: ignore[assignment]
    partitions: set[str] | None = None,
    committed_at: float | None = None,
) -> None:
    """After a change of ``model``: replay every affected gateway subscription to its private
    views as its subscriber's own GET, and push those whose representation changed.
    ``committed_at`` (``time.monotonic()``): when the change was handed over; a subscription
    this process began rendering since read it and is left out (as in
    ``shared.publish_shared``: under a stream of writes the next pass re-rendered them all,
    unchanged, while the last change waited)."""
    label = model._meta.label_lower
    conns = [entry["k"] for entry in private_connections(label).entries()]
    if not conns:
        return
    states = load_states(conns)
    same_get: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    by_value: list[tuple[str, str, Mapping[str, Any]]] = []
    for conn in conns:
        state = states.get(conn)
        if state is None:
            private_connections(label).remove(conn)  # the connection is gone
            continue
        for key, sub in list(state["subs"].items()):
            if sub["mode"] != "private" or sub["model"] != label:
                continue
            if sub.get("by_value"):
                by_value.append((conn, key, sub))  # read with what it names now, below
            elif _affected(sub, pks, deleted, partitions):
                same_get.setdefault(_replayed_as(sub), []).append((conn, key, sub))
    named = named_objects([(conn, key) for conn, key, _sub in by_value])
    for conn, key, sub in by_value:
        if _affected(sub, pks, deleted, partitions, named[(conn, key)]):
            same_get.setdefault(_replayed_as(sub), []).append((conn, key, sub))
    # Read after the change committed: a subscription whose render another process began
    # since gets that render (or a later one), and is left to it (shared.publish_shared).
    seen = current_tickets(
        [ticket_name(conn, subscription_digest(key)) for members in same_get.values()
         for conn, key, _sub in members]
    )
    for members in same_get.values():
        members = [
            (conn, key, sub)
            for conn, key, sub in members
            if not began_since(ticket_name(conn, subscription_digest(key)), committed_at)
        ]
        _rerender_all(members, seen)


def _replayed_as(sub: Mapping[str, Any]) -> str:
    """Subscriptions whose replays are one request (the same recorded headers and URL, the
    same user) get the same bytes: one render serves all of them in a publish (a page's
    anonymous visitors, one user's tabs)."""
    return json.dumps([sub["req"], sub.get("user")], sort_keys=True)


def _rerender(conn: str, key: str, sub: Mapping[str, Any]) -> None:
    """Replay one subscription's GET as its subscriber; push it when it changed."""
    _rerender_all([(conn, key, sub)])


def _rerender_all(
    members: list[tuple[str, str, Mapping[str, Any]]], seen: Mapping[str, int] | None = None
) -> None:
    """Replay the GET that the subscriptions ``members`` share (``_replayed_as``), once, as
    their subscriber; push it to each of them whose representation changed. With ``seen``
    (tickets read after the change committed), members whose render another process began
    since are left to it."""
    # What each subscription was last sent is read for all of them at once (round trips per
    # subscription, several per change, made the publisher's pass seconds long on a busy
    # machine: the large soak); a send checks again under its lock.
    known = sent_versions([(conn, key) for conn, key, _sub in members])
    live = [(conn, key, sub) for conn, key, sub in members if known[(conn, key)] != REVOKED]
    if seen is not None and live:
        names = [ticket_name(conn, subscription_digest(key)) for conn, key, _sub in live]
        now = current_tickets(names)
        live = [m for m, n in zip(live, names) if now[n] <= seen.get(n, 0)]
    if not live:
        return
    first = live[0][2]
    context = RealtimeContext(role="gateway-render", user=first.get("user"))
    # Another process may re-render these subscriptions for its own commit at the same
    # time: the render that started later sends (tickets.py). So every subscription takes
    # its ticket before the one render.
    names = [ticket_name(conn, subscription_digest(key)) for conn, key, _sub in live]
    begin_renders(names)  # before the tickets, before the render reads
    tickets = [take_ticket(name) for name in names]
    recorded = RecordedRequest.from_dict(first["req"])
    if not host_allowed(recorded):
        # Recorded before a deploy narrowed ALLOWED_HOSTS: each replay made Django log a
        # DisallowedHost traceback, on every change for as long as the connection lived.
        logger.warning(
            "drf-grip gateway: ended %d subscription(s) of %s: their Host is not in "
            "ALLOWED_HOSTS any more", len(live), first.get("url", "?"),
        )
        for conn, key, sub in live:
            _end_revoked(conn, key, sub, 400, HOST_REFUSED)
        return
    try:
        response, _inner = subscriber_get(recorded, context)
    except Exception as exc:  # noqa: BLE001 - one subscription must not stop the others
        if cache_failed(exc):
            raise  # the cache failed, not the view: the publish is tried again (shared.py)
        logger.exception("drf-grip gateway: could not re-render a subscription")
        return
    straddled: list[int | None] = []

    def revoked_meanwhile() -> int | None:
        # Revoked while the render ran (it authenticated first)? Asked once for all.
        if not straddled:
            straddled.append(revoked_status(recorded, first.get("user")))
        return straddled[0]

    policy = context.policy
    if response.status_code == 200 and policy is not None and policy.by_value:
        # Another object took over the value its URL names (renamed away, another one
        # renamed or created with it): its changes wake the subscription from now on. It
        # was woken by the first one's only, and got the second's first state and none of
        # its later changes (slug probe).
        named = named_objects([(conn, key) for conn, key, _sub in live])
        for conn, key, sub in live:
            if (named[(conn, key)] or sub.get("pk")) != policy.pk:
                set_named_object(conn, key, policy.pk)
    sent = sent_versions([(conn, key) for conn, key, _sub in live])  # once the render is made
    for (conn, key, sub), ticket in zip(live, tickets):
        _send_render(conn, key, sub, ticket, context, response, revoked_meanwhile, sent)


def _send_render(
    conn: str,
    key: str,
    sub: Mapping[str, Any],
    ticket: int,
    context: RealtimeContext,
    response: Any,
    revoked_meanwhile: Callable[[], int | None],
    sent: Mapping[tuple[str, str], str | None],
) -> None:
    """Push one subscription's re-render made with ``ticket``, unless it is unchanged,
    outdated or its credentials were revoked. ``sent``: what each subscription had been
    sent once the render was made."""
    digest = subscription_digest(key)
    name = ticket_name(conn, digest)
    if overtaken(name, ticket):
        return
    if context.revoked:
        # The credentials no longer name the subscriber.
        _end_revoked(conn, key, sub, revocation_status(response.status_code))
        return
    if response.status_code in (401, 403):
        # Refused: credentials revoked, or a permission the subscriber lost.
        _end_revoked(conn, key, sub, response.status_code, refusal_error(response))
        return
    message, version = change_message(sub, response)
    if sent.get((conn, key)) == version:
        return  # unchanged
    # A render that failed carries nothing of the subscriber's to withhold.
    revoked = None if undecided(response.status_code) else revoked_meanwhile()
    if undecided(revoked):
        # The check of the credentials met a server error: revoked or not, nobody can tell,
        # so nothing of the render is sent. The client is told the server failed, as for a
        # render that did, and the next change is rendered afresh.
        message, version = change_message(sub, HttpResponse(status=revoked))
    elif revoked is not None:
        _end_revoked(conn, key, sub, revoked)
        return
    _push(conn, key, ticket, message, version)


def _push(conn: str, key: str, ticket: int, message: str, version: str | None) -> None:
    """Send the render made with ``ticket`` to one subscription, unless a later one went
    out or it did not change; withheld while the subscribe answer or another process's
    earlier send may still be on its way."""
    digest = subscription_digest(key)
    name = ticket_name(conn, digest)
    _register_hooks()  # also for a render withheld here: this process sends it later
    with exclusive(name):
        # One step: checked, then preempted while a later render was sent, this older
        # one would be sent last (tickets.exclusive). Everything it reads, in one trip.
        marked, last = sent_key(name), sent_version_key(conn, key)
        found = state_cache().get_many(
            [marked, last, _LAST_SENT + name, _DELIVERED + name, _WITHHELD + name,
             _IN_TRANSIT + name]
        )
        if later(found.get(marked), ticket) or found.get(last) == version:
            return  # a later render went out, or this one did not change
        now = time.time()
        write_entries(
            state_cache(),
            [sent_version_entry(conn, key, version), sent_entry(name, ticket),
             _sending_entry(name, ticket, message, now)],
        )
        if now < _until(found.get(_IN_TRANSIT + name)):
            # The subscribe answer may still be on its way and this push could overtake it:
            # the answer's settle sends the change, once, after the answer (settle_answer).
            # Sent now as well, the client got the change twice (one message per change,
            # DESIGN.md §1).
            return
        wait = _in_flight_elsewhere(found.get(_LAST_SENT + name), found.get(_DELIVERED + name))
        if wait or _WITHHELD + name in found:
            state_cache().set(_WITHHELD + name, ticket, _WITHHELD_TIMEOUT)
            call_later(wait or _IN_FLIGHT, lambda: _send_withheld(conn, digest))
            return
    send_to_connection(conn, {"content": message}, f"{ticket}.{digest}")


def _in_flight_elsewhere(previous: Any, delivered: Any) -> float:
    """How long a render must wait for the subscription's previous send (``_LAST_SENT``),
    made by another process and not yet confirmed by a proxy (``_DELIVERED``); 0 when it
    need not. Two processes' publishers do not wait for each other, and Pushpin delivers a
    connection's ``ws-message`` items in the order they reach it, so a render sent here at
    once could arrive before the other process's older one, and the client went back: v25,
    v20, then v25 again from :func:`repair_overtaken` (a probe past one machine). Withheld,
    it goes out when the proxy confirms the older send (``repair_overtaken``), when the
    publisher drops that one as outdated (:func:`outdated_render`), or after ``_IN_FLIGHT``
    at the latest (its process may have stopped)."""
    found = _last_sent(previous)
    if found is None or found[3] is None:
        return 0.0
    ticket, _message, sent_at, process = found
    if process == _this_process():
        return 0.0  # this process's lane sends in queue order
    if isinstance(delivered, int) and delivered >= ticket:
        return 0.0
    return max(0.0, sent_at + _IN_FLIGHT - time.time())


def _send_withheld(conn: str, digest: str) -> bool:
    """Send the subscription's latest render if it was withheld (:func:`_push`), once;
    whether one was withheld."""
    name = ticket_name(conn, digest)
    if state_cache().get(_WITHHELD + name) is None:
        return False
    with exclusive(name):
        found = state_cache().get_many([_WITHHELD + name, _LAST_SENT + name, _IN_TRANSIT + name])
        if _WITHHELD + name not in found:
            return True  # sent by another caller meanwhile
        state_cache().delete(_WITHHELD + name)
        latest = _last_sent(found.get(_LAST_SENT + name))
        if latest is None:
            return True
        now = time.time()
        if now < _until(found.get(_IN_TRANSIT + name)):
            return True  # a subscribe answer's settle sends it (settle_answer)
        _record_sending(name, latest[0], latest[1], now)
    _register_hooks()
    send_to_connection(conn, {"content": latest[1]}, f"{latest[0]}.{digest}")
    return True


def _end_revoked(
    conn: str, key: str, sub: Mapping[str, Any], status: int, error: str = REVOKED_ERROR
) -> None:
    """End a subscription that a fresh GET by its subscriber no longer serves (revoked
    credentials, a Host no longer allowed): no later render is sent to it."""
    set_sent_version(conn, key, REVOKED)
    send_to_connection(conn, {"content": end_message(sub, status, error)})


# -- the subscribe answer -----------------------------------------------------------------
#
# A subscription's first representation goes back in the answer to its ``subscribe`` message
# (the WebSocket-over-HTTP response); later ones are published to the connection's channel,
# by any process. The two reach the client by different ways (Pushpin's proxy writes the
# answer, its handler writes pushes, neither waiting for the other), and nothing says when
# the answer arrived. So from the moment the subscription is saved (the publisher can find
# it) until its settle, a moment after the answer left Django, pushes to it are withheld,
# and the settle sends the latest withheld one; from there on the ordinary ordering of
# renders applies (tickets.py, outdated_render, repair_overtaken). Before, a push was
# withheld only within a guessed 0.1 s of the answer leaving, and one sent later was taken
# to arrive after it: in CI's soak a gateway subscriber of a private notes list received
# two messages at once and kept the older, which only an answer can be (under load here,
# one private answer in 15 was followed by a push 0.1-0.7 s after it left Django). The
# answer's render takes a ticket like a re-render, so a push of an older render is never
# sent after it, and if a later render was pushed already, the answer is rendered again.

#: The tail of a withheld push's id when the settle sends it: ``LATER.DIGEST-raANSWER``.
_AFTER_ANSWER = _REPAIR + "a"
#: Until when (``time.time()``) pushes to a subscription are withheld for its answer's
#: settle: infinite while the answer is still in Django.
_IN_TRANSIT = "drf_grip:ws-transit:"
_IN_TRANSIT_TIMEOUT = 30


def _withheld_until(name: str) -> float:
    """Until when pushes to ``name`` wait for its answer's settle (``-inf``: they do not)."""
    return _until(state_cache().get(_IN_TRANSIT + name))


def _until(value: Any) -> float:
    """The time kept under ``_IN_TRANSIT`` (``value``, as read): ``-inf`` when none."""
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def answer_ticket(conn: str, key: str) -> int:
    """A ticket for a subscribe answer's render, taken before it renders."""
    return take_ticket(ticket_name(conn, subscription_digest(key)), likely_first=True)


def answer_pending(conn: str, key: str) -> None:
    """The subscription is about to be saved, its answer not yet recorded: a push from now
    on waits for the answer's settle (a push sent at once could reach the client after an
    answer rendered later, and nothing would follow it)."""
    state_cache().set(_IN_TRANSIT + ticket_name(conn, subscription_digest(key)), float("inf"),
                      _IN_TRANSIT_TIMEOUT)


def record_answer(conn: str, key: str, ticket: int, version: str | None) -> bool:
    """Count the answer as the subscription's first send; False when a later render was
    pushed already (the answer is older: render it again). Pushes wait for the answer's
    settle (:func:`answer_left`, :func:`settle_answer`)."""
    name = ticket_name(conn, subscription_digest(key))
    with exclusive(name):
        if sent_after(name, ticket):
            return False
        write_entries(
            state_cache(),
            [sent_version_entry(conn, key, version), sent_entry(name, ticket),
             (_IN_TRANSIT + name, float("inf"), _IN_TRANSIT_TIMEOUT)],
        )
    return True


def answer_left(conn: str, key: str, until: float) -> None:
    """The subscribe answer left Django: pushes wait for its settle, due before ``until``
    (``time.time()``); past it (the settle's process stopped) they are sent at once."""
    name = ticket_name(conn, subscription_digest(key))
    state_cache().set(_IN_TRANSIT + name, until, _IN_TRANSIT_TIMEOUT)


def settle_answer(conn: str, key: str, ticket: int, changed_since: bool) -> None:
    """Once the answer rendered with ``ticket`` has reached the client (a moment after it
    left Django: gateway.view.SETTLE_DELAY): pushes go out at once from now on; the latest
    one withheld for the answer is sent, or, when a change committed after its render
    (``changed_since``), the subscription is rendered again."""
    digest = subscription_digest(key)
    name = ticket_name(conn, digest)
    with exclusive(name):
        # One step with a push's check (_send_render): a push either saw the subscription
        # still waiting and is sent below, or sees it settled and goes out itself.
        found = state_cache().get_many([_IN_TRANSIT + name, _LAST_SENT + name])
        state_cache().delete(_IN_TRANSIT + name)
    latest = _later_than(found.get(_LAST_SENT + name), ticket)
    if latest is not None and latest[2] < _until(found.get(_IN_TRANSIT + name)):
        # A push was withheld: it goes out now, ordered against later ones by its ticket
        # (outdated_render, repair_overtaken).
        _send_again(conn, digest, latest, f"{_AFTER_ANSWER}{ticket}")
        return
    if changed_since:
        sub = load_states([conn]).get(conn, {}).get("subs", {}).get(key)
        if sub is not None and sub.get("mode") == "private":
            from django.db import close_old_connections

            # Runs on drf_grip.grip.later's thread, outside any request.
            close_old_connections()
            try:
                _rerender(conn, key, sub)
            finally:
                close_old_connections()
