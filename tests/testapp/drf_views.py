"""Views combining a realtime viewset with what DRF users add to theirs (throttling...),
for ``tests/integration/test_drf_usage.py``."""

from django.urls import include, path
from rest_framework import permissions, throttling, viewsets
from rest_framework.routers import DefaultRouter

from drf_grip import RealtimeMixin

from .models import Todo
from .realtime_views import TodoSerializer


class FewPerMinute(throttling.AnonRateThrottle):
    rate = "5/min"


class ThrottledTodos(RealtimeMixin, viewsets.ModelViewSet):
    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    throttle_classes = [FewPerMinute]
    filterset_fields = ["done"]


router = DefaultRouter()
router.register("throttled-todos", ThrottledTodos, basename="throttled-todo")

urlpatterns = [path("", include(router.urls))]
