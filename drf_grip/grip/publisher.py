"""Publishing to GRIP proxies without making the caller wait on the network: django-grip's
``publish()``, ``publish_items()`` and ``get_pubcontrol()``, and the process-wide publisher.

``publish()`` keeps django-grip's signature. It builds an item in Pushpin's ``/publish`` JSON
form (``items.py``) and hands it to the process-wide :class:`~drf_grip.grip.lanes.Publisher`,
whose background threads (``lanes.py``) deliver it to every destination (``destinations.py``):
each endpoint of ``grip_settings.publish_endpoints`` over HTTP, and each registered local sink
(the embedded proxy of this process) by a direct call (``transports.py``). Nothing is created
at import time and settings are read when an item is published, so ``override_settings``
takes effect at once.

Rule for channel names: ``publish()`` and ``make_item()`` prepend ``GRIP_PREFIX``;
``publish_items()`` takes items whose channels are already prefixed (the form ``make_item()``
returns, and the form the embedded proxy receives).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.items import RawItem
from . import destinations
from .items import Formats, make_item
from .lanes import Publisher, PublishError, exit_deadline
from .transports import HttpTarget

__all__ = [
    "PubControl",
    "PublishError",
    "get_pubcontrol",
    "get_publisher",
    "publish",
    "publish_items",
    "run_exit_handlers",
]

logger = logging.getLogger("drf_grip.publish")

_publisher: Publisher | None = None
_publisher_lock = threading.Lock()
_atexit_registered = False


def get_publisher() -> Publisher:
    """The process-wide publisher, created on first use (never at import time)."""
    global _publisher, _atexit_registered
    publisher = _publisher
    if publisher is None:
        with _publisher_lock:
            if _publisher is None:
                _publisher = Publisher()
                if not _atexit_registered:
                    _atexit_registered = True
                    at_exit(_flush_at_exit)
            publisher = _publisher
    return publisher


#: drf-grip's handlers of the process's exit, in the order they were registered.
_exit_handlers: list[Callable[[], None]] = []


def at_exit(handler: Callable[[], None]) -> None:
    """Run ``handler`` when the process exits (``atexit``), or earlier when a server says
    it stops (:func:`run_exit_handlers`); handlers run last registered first."""
    _exit_handlers.append(handler)
    atexit.register(handler)


def run_exit_handlers() -> None:
    """Run the exit handlers now, each bounded by the one :func:`exit_deadline`: for a
    server that stops without running ``atexit`` (uvicorn re-raises SIGTERM once it has
    shut down, with the default handler back: ``uvicorn/server.py``, ``capture_signals``).
    Those still run at the exit itself find nothing left, or the deadline passed."""
    for handler in reversed(list(_exit_handlers)):
        handler()


#: Whether a server of this process runs :func:`run_exit_handlers` when it stops (said by
#: :func:`exit_handlers_run_by_server`); checked once, at the first queued publish.
_run_by_server = False
_stop_checked = False


def exit_handlers_run_by_server() -> None:
    """The server of this process runs :func:`run_exit_handlers` when it stops (an ASGI
    lifespan startup: ``drf_grip.asgi``)."""
    global _run_by_server
    _run_by_server = True


def _warn_of_a_stop_that_drops_the_queue() -> None:
    """Say once when a uvicorn server owns this process's SIGTERM and nothing will run the
    exit handlers: uvicorn stops by raising SIGTERM again with the default handler back
    (``uvicorn/server.py``, ``capture_signals``), so ``atexit`` never runs and what is still
    queued is lost without a word (Django's own ASGI app refuses the lifespan that would
    flush it: a probe's worker exited 0.67 s after SIGTERM with publishes pending)."""
    global _stop_checked
    _stop_checked = True
    if _run_by_server:
        return
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if owner is None or not type(owner).__module__.startswith("uvicorn."):
        return
    if not any(isinstance(target, HttpTarget) for target in destinations.targets()):
        return  # the embedded proxy of this process: its clients end with it
    logger.warning(
        "drf-grip: this uvicorn process serves an app that answers no ASGI lifespan, so "
        "changes still queued for the GRIP proxy when it stops are lost; serve "
        "drf_grip.asgi.get_asgi_application() with uvicorn's --lifespan auto or on "
        "(docs/deploying.rst)"
    )


def _flush_at_exit() -> None:
    """A bounded flush at interpreter exit (``PUBLISH_FLUSH_TIMEOUT``)."""
    if _publisher is not None:
        try:
            _publisher._flush_at_exit(exit_deadline())
        except Exception:  # settings gone, logging torn down: never fail the exit
            pass


def _after_fork_in_child() -> None:
    global _publisher_lock, _callback_pool
    _callback_pool = None  # its thread did not survive the fork
    _publisher_lock = threading.Lock()
    if _publisher is not None:
        _publisher._check_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def publish_items(items: Sequence[RawItem], *, blocking: bool = False) -> None:
    """Publish items already in Pushpin's form, channels already prefixed (see ``make_item``).

    Not blocking: queued, the call returns at once. Blocking: sent now to every destination,
    raising :class:`PublishError` if any of them failed.
    """
    publisher = get_publisher()
    if blocking:
        publisher.send(list(items))
    else:
        if not _stop_checked:
            _warn_of_a_stop_that_drops_the_queue()
        publisher.enqueue(list(items))


PublishCallback = Callable[[bool, str], Any]

_callback_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _send_then_call(items: list[RawItem], callback: PublishCallback) -> None:
    try:
        get_publisher().send(items)
        ok, message = True, ""
    except PublishError as exc:  # names destinations by redacted URI, never a key
        ok, message = False, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the callback, as pubcontrol does
        ok, message = False, f"{type(exc).__name__}: {exc}"
    try:
        callback(ok, message)
    except Exception:  # noqa: BLE001
        logger.exception("publish callback raised")


def _publish_with_callback(items: list[RawItem], callback: PublishCallback) -> None:
    """Send from one worker thread, in call order, then tell ``callback(success, message)``."""
    global _callback_pool
    with _publisher_lock:
        if _callback_pool is None:
            _callback_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="drf-grip-publish-callback"
            )
        pool = _callback_pool
    try:
        pool.submit(_send_then_call, items, callback)
    except RuntimeError:  # interpreter shutting down: no new threads
        _send_then_call(items, callback)


def publish(
    channel: str,
    formats: Formats,
    id: str | None = None,
    prev_id: str | None = None,
    blocking: bool = False,
    callback: PublishCallback | None = None,
    meta: Mapping[str, str] | None = None,
) -> None:
    """django-grip's ``publish``: send ``formats`` to subscribers of ``channel`` (prefixed).
    Its parameters, in its order (django-grip 3.5 takes them positionally too).

    ``formats`` is a gripcontrol format (``HttpStreamFormat``, ``HttpResponseFormat``,
    ``WebSocketMessageFormat``), a list of them, or ``{format name: exported dict}``.
    ``callback(success, message)`` is called once every destination answered (pubcontrol's
    contract); without it, failures are logged and counted.
    """
    _deliver([make_item(channel, formats, id, prev_id, meta=meta)], blocking, callback)


def _deliver(items: list[RawItem], blocking: bool, callback: PublishCallback | None) -> None:
    if callback is None:
        publish_items(items, blocking=blocking)
    elif not blocking:
        _publish_with_callback(items, callback)
    else:
        try:
            publish_items(items, blocking=True)
        except PublishError as exc:
            callback(False, str(exc))
            raise
        callback(True, "")


class PubControl:
    """What django-grip's ``get_pubcontrol()`` returned (gripcontrol's ``GripPubControl``),
    for code that publishes through it: the same calls, sent by drf-grip's publisher.

    As with gripcontrol, channels are taken as given (no ``GRIP_PREFIX``).
    """

    def publish(
        self,
        channel: str,
        item: Any,
        blocking: bool = False,
        callback: PublishCallback | None = None,
    ) -> None:
        """Publish a ``pubcontrol.RawItem`` (its formats, id, prev_id and meta)."""
        formats = item.formats if hasattr(item, "formats") else item
        made = make_item(
            channel,
            formats,
            getattr(item, "id", None),
            getattr(item, "prev_id", None),
            meta=getattr(item, "meta", None),
        )
        made["channel"] = channel
        _deliver([made], blocking, callback)

    def publish_http_response(
        self,
        channel: str,
        http_response: Any,
        id: str | None = None,
        prev_id: str | None = None,
        blocking: bool = False,
        callback: PublishCallback | None = None,
    ) -> None:
        """A body (``str``/``bytes``) or an ``HttpResponseFormat`` for held long-polls."""
        from gripcontrol import HttpResponseFormat

        if isinstance(http_response, (str, bytes)):
            http_response = HttpResponseFormat(body=http_response)
        self.publish(channel, _PubItem(http_response, id, prev_id), blocking, callback)

    def publish_http_stream(
        self, channel: str, http_stream: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Content (``str``/``bytes``) or an ``HttpStreamFormat`` for open streams; the other
        arguments as :meth:`publish_http_response`."""
        from gripcontrol import HttpStreamFormat

        if isinstance(http_stream, (str, bytes)):
            http_stream = HttpStreamFormat(http_stream)
        self.publish_http_response(channel, http_stream, *args, **kwargs)

    def wait_all_sent(self) -> None:
        """Block until everything queued so far was sent or given up."""
        get_publisher().flush()

    finish = wait_all_sent


@dataclass
class _PubItem:
    formats: Any
    id: str | None = None
    prev_id: str | None = None
    meta: Mapping[str, str] | None = None


def get_pubcontrol() -> PubControl:
    """django-grip's ``get_pubcontrol()``: publish through drf-grip's publisher."""
    return PubControl()

