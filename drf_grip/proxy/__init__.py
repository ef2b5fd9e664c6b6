"""The embedded GRIP proxy: Pushpin's part, for one process.

``GripProxy`` wraps an ASGI app (Django's) and does what Pushpin does in front of it: response
holds with ``Grip-Timeout`` and ``Grip-Status``, stream holds with ``Grip-Keep-Alive``,
channels with ``prev-id`` recovery, ``hint`` (re-request with the client's own headers), next
links (a bare ``GET`` with only ``Grip-Last``), ``close``, WebSocket-over-HTTP with ``m:``/``c:``
messages and ``Meta-*`` headers, and a ``/publish`` endpoint in Pushpin's format. It speaks only
GRIP: the DRF layer never calls it.

Known differences from Pushpin 1.36, on purpose:

- On a channel's *first* subscription Pushpin re-requests every held client about 1 s later
  (10 per second). The embedded proxy does not: it relies on ``prev-id``/``id`` to catch a
  change that raced the hold, which Pushpin needs anyway for the race to be closed.
- A publish that arrives while a long-poll is being re-requested makes the proxy ask the
  origin once more, instead of risking a hold on content older than that publish.
- An origin that keeps holding with a ``prev-id`` behind the channel is re-requested at most
  3 times in a row, then held (Pushpin can loop).
- Next-link requests are not shared between clients (Pushpin shares them by path); each
  stream fetches its own, still as a bare ``GET`` with only ``Grip-Last`` (and ``Host``).
- ``Grip-Feature`` announces ``status, link:next`` only: no sessions, no ``filter:*``
  (though ``skip-self`` and ``skip-users`` are applied, with ``Grip-Set-Meta`` on HTTP
  holds and ``set-meta`` on WebSockets); ``Grip-Expose-Headers`` is not applied.
- WebSocket ``PING``/``PONG`` events, published ``ping``/``pong`` messages and ``ping``
  keep-alives are not sent to clients (ASGI cannot send ping frames; uvicorn pings on its
  own). ``hint`` on ``ws-message`` is ignored.
- A client's ``Connection-Id`` on a plain HTTP request is dropped (Pushpin forwards it);
  like Pushpin, any request with ``Content-Type: application/websocket-events`` from a client
  gets 403 and never reaches the origin.
- Lifespan events are answered by the proxy and not passed to the inner app (Django refuses
  them).
"""

from .app import GripProxy

__all__ = ["GripProxy"]
