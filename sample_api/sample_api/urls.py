from django.urls import include, path

from board.views import board_page
from drf_grip.rest.gateway import RealtimeGateway

urlpatterns = [
    # The live board: http://127.0.0.1:8000/
    path("", board_page, name="board"),
    # One WebSocket for REST calls and live subscriptions: ws://127.0.0.1:8000/api/ws/
    path("api/ws/", RealtimeGateway.as_view(), name="gateway"),
    path("api/", include("board.urls")),
]
