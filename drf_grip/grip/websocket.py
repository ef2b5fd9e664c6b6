"""Transitional: ``drf_grip/rest/gateway.py`` (being split on another branch) still imports
``WebSocketContext`` from here. It lives in ``drf_grip.grip.websocket_context``; delete this
module once the gateway imports it from there."""

from .websocket_context import WebSocketContext

__all__ = ["WebSocketContext"]
