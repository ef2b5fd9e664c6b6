"""drf-grip: realtime for Django REST framework APIs over GRIP.

Names are imported lazily so that ``import drf_grip`` works before Django is configured.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # GRIP layer (django-grip's API)
    "GripMiddleware": "drf_grip.middleware",
    "set_hold_longpoll": "drf_grip.grip.hold",
    "set_hold_response": "drf_grip.grip.hold",
    "set_hold_stream": "drf_grip.grip.hold",
    "publish": "drf_grip.grip.publisher",
    "get_publisher": "drf_grip.grip.publisher",
    "get_pubcontrol": "drf_grip.grip.publisher",
    "publish_items": "drf_grip.grip.publisher",
    "PublishError": "drf_grip.grip.publisher",
    "websocket_only": "drf_grip.grip.websocket_decorators",
    "WebSocketContext": "drf_grip.grip.websocket_context",
    "WebSocketEvent": "drf_grip.protocol.events",
    # django-websocket / django-pistoke API
    "require_websocket": "drf_grip.grip.websocket_views",
    "accept_websocket": "drf_grip.grip.websocket_views",
    "WebSocketView": "drf_grip.grip.websocket_views",
    "JSONWebSocketView": "drf_grip.grip.websocket_views",
    # django-websocket-request's API
    "WebSocketRequest": "drf_grip.rest.gateway.wsrequest",
    # DRF layer
    "RealtimeMixin": "drf_grip.rest.mixins",
    "ListRealtimeMixin": "drf_grip.rest.mixins",
    "RetrieveRealtimeMixin": "drf_grip.rest.mixins",
    "register": "drf_grip.rest.registry",
    "publish_changes": "drf_grip.rest.changes",
    "paused": "drf_grip.rest.changes",
    "RealtimeGateway": "drf_grip.rest.gateway",
    "RealtimePolicy": "drf_grip.rest.context",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    # What type checkers see; at run time the lazy __getattr__ below imports on first use.
    # Keep in step with _EXPORTS (tests/test_packaging.py checks both).
    from .grip.hold import set_hold_longpoll, set_hold_response, set_hold_stream
    from .grip.publisher import PublishError, get_pubcontrol, get_publisher, publish, publish_items
    from .grip.websocket_context import WebSocketContext
    from .grip.websocket_decorators import websocket_only
    from .middleware import GripMiddleware
    from .protocol.events import WebSocketEvent
    from .rest.context import RealtimePolicy
    from .rest.gateway import RealtimeGateway
    from .rest.gateway.wsrequest import WebSocketRequest
    from .rest.mixins import ListRealtimeMixin, RealtimeMixin, RetrieveRealtimeMixin
    from .rest.changes import paused, publish_changes
    from .rest.registry import register
    from .grip.websocket_views import (
        JSONWebSocketView,
        WebSocketView,
        accept_websocket,
        require_websocket,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drf_grip' has no attribute {name!r}")
    return getattr(import_module(module), name)
