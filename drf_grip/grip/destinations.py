"""Where published items go: every endpoint of the GRIP settings, and the local sinks (the
embedded proxy) registered in this process; the embedded proxy's URL when there is neither."""

from __future__ import annotations

import logging
import os
import threading

from ..conf import GripEndpoint, embedded_key, embedded_publish_uri, grip_settings, redact_url
from .transports import HttpTarget, LocalSink, SinkTarget, Target, endpoint_name

__all__ = ["endpoint_names", "register_local_sink", "targets", "unregister_local_sink"]

logger = logging.getLogger("drf_grip.publish")

_local_sinks: list[LocalSink] = []
# Sinks registered with ``exclusive`` or ``observes`` (the test kit's outboxes), newest
# last, each with whether it is exclusive: while the newest is, nothing goes over the
# network, whatever the settings name. The newest decides, so a test's
# ``capture_published(send=True)`` inside a conftest's autouse capture sends (it sent
# nothing, and the publisher counted its items as sent: a test-kit probe).
_captures: list[tuple[LocalSink, bool]] = []
# Sinks registered with ``observes=True`` (the test kit's outbox with ``send=True``): they
# see every item but deliver none, so they do not stand for an embedded proxy in this
# process, and the items still go where they would without them.
_observers: list[LocalSink] = []
_sinks_lock = threading.Lock()
_warned_unconfigured = False


def register_local_sink(
    sink: LocalSink, *, exclusive: bool = False, observes: bool = False
) -> None:
    """Also deliver every item to ``sink`` (the embedded proxy running in this process);
    ``exclusive``: and, while it is registered, to no endpoint outside the process;
    ``observes``: ``sink`` only looks (no proxy runs here because of it)."""
    with _sinks_lock:
        if not any(s is sink for s in _local_sinks):
            _local_sinks.append(sink)
        if (exclusive or observes) and not any(s is sink for s, _ in _captures):
            _captures.append((sink, exclusive))
        if observes and not any(s is sink for s in _observers):
            _observers.append(sink)


def unregister_local_sink(sink: LocalSink) -> None:
    """Stop delivering to ``sink``; items already queued for it are still handed over."""
    with _sinks_lock:
        _local_sinks[:] = [s for s in _local_sinks if s is not sink]
        _captures[:] = [(s, e) for s, e in _captures if s is not sink]
        _observers[:] = [s for s in _observers if s is not sink]


def targets() -> list[Target]:
    """Where an item published now goes, read from the settings of this moment."""
    global _warned_unconfigured
    with _sinks_lock:
        sinks = list(_local_sinks)
        if _captures and _captures[-1][1]:
            return [SinkTarget(s) for s in sinks]
        proxies = [s for s in sinks if not any(s is o for o in _observers)]
    endpoints = list(grip_settings.publish_endpoints)
    if not endpoints and not proxies:
        # One endpoint object while the settings stay (its key is an HMAC of SECRET_KEY, and
        # the object is what ``_http_target`` keeps its target by).
        endpoint = grip_settings.memo(
            "embedded_endpoint",
            lambda: GripEndpoint(control_uri=embedded_publish_uri(), key=embedded_key()),
        )
        endpoints = [endpoint]
        if not _warned_unconfigured:
            _warned_unconfigured = True
            logger.warning(
                "GRIP_URL is unset (and no GRIP_PROXIES or PUBLISH_SERVERS), and no embedded "
                "proxy runs in this process: publishing to the embedded proxy at %s "
                "(DRF_GRIP['EMBEDDED_URL']). Set GRIP_URL to publish to Pushpin or Fanout.",
                redact_url(endpoint.control_uri),
            )
    return [_http_target(ep) for ep in endpoints] + [SinkTarget(s) for s in sinks]


#: Per endpoint object (the settings keep theirs until they change): its target. Built on
#: every publish, a target parsed its URL again only for the lane to keep the first one.
_http_targets: dict[int, tuple[GripEndpoint, HttpTarget]] = {}


def _http_target(endpoint: GripEndpoint) -> HttpTarget:
    found = _http_targets.get(id(endpoint))
    if found is not None and found[0] is endpoint:
        return found[1]
    target = HttpTarget(endpoint)
    if len(_http_targets) >= 64:  # settings changed many times (tests): start afresh
        _http_targets.clear()
    _http_targets[id(endpoint)] = (endpoint, target)
    return target


def endpoint_names() -> list[str]:
    """The names of the settings' endpoints as their targets spell them: the destinations
    every process of a deployment publishes to (a local sink is one process's own)."""
    names = grip_settings.memo(
        "endpoint_names", lambda: tuple(endpoint_name(ep) for ep in grip_settings.publish_endpoints)
    )
    return list(names)


def _after_fork_in_child() -> None:
    global _sinks_lock
    _sinks_lock = threading.Lock()  # a thread of the parent may have held it
    # Nor share the parent's connections (or a lock its lane held mid-POST).
    _http_targets.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
