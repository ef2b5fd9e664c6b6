"""Numbers and names fixed by GRIP, Pushpin and RFC 6455, shared by the origin side and the
embedded proxy."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONTROL_PREFIX",
    "EMBEDDED_ISSUER",
    "INLINE_MESSAGE_MAX",
    "MAX_CHANNELS",
    "MAX_CLOSE_REASON",
    "MAX_PUBLISH_BODY",
    "MAX_WS_ANSWER_BODY",
    "MESSAGE_PREFIX",
    "MIN_HOLD_TIMEOUT",
    "NORMAL_CLOSURE",
    "SENDABLE_CLOSE_CODES",
    "WEBSOCKET_EVENTS",
]

#: A connection (HTTP hold or WebSocket) keeps at most this many channels (Pushpin 1.36).
MAX_CHANNELS: Final = 20

#: Pushpin raises a ``Grip-Timeout`` below this many seconds to it.
MIN_HOLD_TIMEOUT: Final = 5

#: The ``iss`` of the ``Grip-Sig`` the embedded proxy signs with ``embedded_key()``.
EMBEDDED_ISSUER: Final = "drf-grip"

#: The content type of a WebSocket-over-HTTP request and of its answer
#: (pushpin.org/docs/protocols/websocket-over-http).
WEBSOCKET_EVENTS: Final = "application/websocket-events"

#: Once the ``grip`` WebSocket extension is on, an origin's messages start with ``m:`` or
#: Pushpin drops them, and TEXT starting with ``c:`` is a control message to Pushpin
#: (Pushpin wsproxysession.cpp; the prefix applies to TEXT and BINARY alike).
MESSAGE_PREFIX: Final = b"m:"
CONTROL_PREFIX: Final = b"c:"

#: Close codes an endpoint may put on the wire (RFC 6455 §7.4: 1004-1006 and 1015 are
#: reserved, 1016-2999 are for future RFCs).
SENDABLE_CLOSE_CODES: Final = frozenset(
    [*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)]
)
NORMAL_CLOSURE: Final = 1000
#: Bytes of UTF-8 in a close reason: a control frame's payload is at most 125 (RFC 6455 §5.5).
MAX_CLOSE_REASON: Final = 123

#: Pushpin refuses a ``/publish`` body over 1 MB (Pushpin 1.36).
MAX_PUBLISH_BODY: Final = 1_000_000

#: The largest answer body an origin may send to one WebSocket-over-HTTP request: one byte
#: more is an error of the origin side, and the client is dropped with none of the answer's
#: messages (Pushpin 1.36, src/proxy/websocketoverhttp.cpp ``RESPONSE_BODY_MAX``).
MAX_WS_ANSWER_BODY: Final = 1_000_000

#: Bytes of a WebSocket message an origin can answer inline and have sent at once. Pushpin
#: splits a longer one into 16,384-byte frames (src/proxy/websocketoverhttp.cpp,
#: ``FRAME_SIZE_MAX``) and 1.36 then sends the rest only when the client sends a frame:
#: its flow control waited for credits nothing announced ("wsproxysession: fix flow
#: control", Pushpin 1.37). Published messages take another way and are not held.
INLINE_MESSAGE_MAX: Final = 16_384
