"""The WebSocket gateway: REST calls and live subscriptions over one WebSocket.

Add it to the URLconf beside the API::

    path("api/ws/", RealtimeGateway.as_view())

The parts: ``view`` (the connection and its subscriptions), ``messages`` (the message
protocol), ``inner_requests`` (the request a message runs), ``connections`` (a connection's
state in the shared cache) and ``rerender`` (the publisher re-rendering private
subscriptions).
"""

from .view import RealtimeGateway

__all__ = ["RealtimeGateway"]
