"""drf-grip's side: the same Todo list shared, private, and partitioned per owner."""

from rest_framework import filters, permissions, viewsets

from drf_grip import RealtimeMixin

from .models import Note, PlainTodo, PrivateTodo, Todo
from .serializers import (
    NoteSerializer,
    PlainTodoSerializer,
    PrivateTodoSerializer,
    TodoSerializer,
)


class SharedTodoViewSet(RealtimeMixin, viewsets.ModelViewSet):
    realtime_delivery = "shared"
    queryset = Todo.objects.order_by("id")
    serializer_class = TodoSerializer
    filter_backends = [filters.SearchFilter]
    search_fields = ["title"]


class PlainTodoViewSet(viewsets.ModelViewSet):
    """The same viewset without the mixin: what a PATCH costs with publishing off."""

    queryset = PlainTodo.objects.order_by("id")
    serializer_class = PlainTodoSerializer


class PrivateTodoViewSet(RealtimeMixin, viewsets.ModelViewSet):
    queryset = PrivateTodo.objects.order_by("id")
    serializer_class = PrivateTodoSerializer
    permission_classes = [permissions.IsAuthenticated]


class NoteViewSet(RealtimeMixin, viewsets.ModelViewSet):
    """Private, each user's own notes; partitioned by owner where drf-grip supports it."""

    serializer_class = NoteSerializer
    permission_classes = [permissions.IsAuthenticated]
    realtime_model = Note
    realtime_partition = "owner"

    def get_queryset(self):
        return Note.objects.filter(owner=self.request.user).order_by("id")


def partitions_supported() -> bool:
    """True when drf-grip reads ``realtime_partition`` (the attribute is declared on its mixin)."""
    return any("realtime_partition" in vars(cls) for cls in RealtimeMixin.__mro__)
