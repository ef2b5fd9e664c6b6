"""django-websocket's and django-pistoke's API (``require_websocket``, ``accept_websocket``,
``WebSocketView``, ``JSONWebSocketView``); it lives in the GRIP layer,
``drf_grip.grip.websocket_views``, and is importable from here as before."""

from .grip.websocket_views import *  # noqa: F401,F403
from .grip.websocket_views import __all__  # noqa: F401
