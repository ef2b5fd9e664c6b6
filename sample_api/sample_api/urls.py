from django.urls import include, path

from drf_grip.rest.gateway import RealtimeGateway

urlpatterns = [
    # One WebSocket for REST calls and live subscriptions: ws://127.0.0.1:8000/api/ws/
    path("api/ws/", RealtimeGateway.as_view()),
    path("api/", include("board.urls")),
]
