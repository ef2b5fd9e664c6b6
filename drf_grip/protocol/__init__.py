"""GRIP itself, shared by the origin side (``drf_grip.grip``) and the embedded proxy
(``drf_grip.proxy``): the ``Grip-*`` instruction model, the publish-item schema, the
WebSocket-events codec and the protocol's constants. Signing (``Grip-Sig`` and publish
tokens) is ``drf_grip.protocol.signing``, imported from there.

Pure Python: this package imports neither Django nor any other part of drf-grip
(``tests/test_layers.py`` checks it), so both sides can rely on it.
"""

from .constants import (
    CONTROL_PREFIX,
    EMBEDDED_ISSUER,
    MAX_CHANNELS,
    MAX_CLOSE_REASON,
    MAX_PUBLISH_BODY,
    MAX_WS_ANSWER_BODY,
    MESSAGE_PREFIX,
    MIN_HOLD_TIMEOUT,
    NORMAL_CLOSURE,
    SENDABLE_CLOSE_CODES,
    WEBSOCKET_EVENTS,
)
from .events import (
    EVENT_TYPES,
    MalformedEvents,
    WebSocketEvent,
    close_code_of,
    close_payload,
    decode_events,
    encode_events,
    is_websocket_events,
    sendable_close_code,
)
from .filters import SKIP_SELF, SKIP_USERS, dropped_by, set_meta, subscribed_filters
from .headers import RawHeaders, get_all_headers, get_header, parse_header_list, parse_header_value
from .instruct import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    Channel,
    Instruct,
    InstructError,
    KeepAlive,
    NextLink,
    encode_keep_alive,
    parse_channels,
    parse_instruct,
    whole_number,
)
from .items import (
    InvalidItem,
    Item,
    MessageFormat,
    RawItem,
    ResponseFormat,
    StreamFormat,
    build_item,
    parse_items,
)

__all__ = [
    "CONTROL_PREFIX",
    "Channel",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "EMBEDDED_ISSUER",
    "EVENT_TYPES",
    "Instruct",
    "InstructError",
    "InvalidItem",
    "Item",
    "KeepAlive",
    "MAX_CHANNELS",
    "MAX_CLOSE_REASON",
    "MAX_PUBLISH_BODY",
    "MAX_WS_ANSWER_BODY",
    "MESSAGE_PREFIX",
    "MIN_HOLD_TIMEOUT",
    "MalformedEvents",
    "MessageFormat",
    "NORMAL_CLOSURE",
    "NextLink",
    "RawHeaders",
    "RawItem",
    "ResponseFormat",
    "SENDABLE_CLOSE_CODES",
    "SKIP_SELF",
    "SKIP_USERS",
    "StreamFormat",
    "WEBSOCKET_EVENTS",
    "WebSocketEvent",
    "build_item",
    "close_code_of",
    "close_payload",
    "decode_events",
    "dropped_by",
    "encode_events",
    "encode_keep_alive",
    "get_all_headers",
    "get_header",
    "is_websocket_events",
    "parse_channels",
    "parse_header_list",
    "parse_header_value",
    "parse_instruct",
    "parse_items",
    "sendable_close_code",
    "set_meta",
    "subscribed_filters",
    "whole_number",
]
