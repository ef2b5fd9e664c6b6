"""django-websocket-request's package as its own test module sees it (``from . import
WebSocketRequest``): drf-grip's class of that name. See README.rst beside this file."""

from drf_grip import WebSocketRequest

__all__ = ["WebSocketRequest"]
