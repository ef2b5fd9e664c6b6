"""The sample's API: a public todo board (shared delivery) and private notes, and the
board's live page."""

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters, pagination, permissions, serializers, viewsets

from drf_grip import RealtimeMixin

from .models import Note, Todo


class TodoSerializer(serializers.ModelSerializer):
    class Meta:
        model = Todo
        fields = ["id", "title", "done"]


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text"]


class Pages(pagination.PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class TodoViewSet(RealtimeMixin, viewsets.ModelViewSet):
    """Everyone sees the same board, so one render per change serves every subscriber."""

    realtime_delivery = "shared"
    queryset = Todo.objects.all()
    serializer_class = TodoSerializer
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    filter_backends = [DjangoFilterBackend, filters.SearchFilter, filters.OrderingFilter]
    filterset_fields = ["done"]
    search_fields = ["title"]
    ordering_fields = ["id", "title"]
    ordering = ["-id"]
    pagination_class = Pages


class NoteViewSet(RealtimeMixin, viewsets.ModelViewSet):
    """Each user's own notes: private delivery re-runs each held request as its user, and
    the partition by owner makes a change wake only its owner's clients."""

    serializer_class = NoteSerializer
    permission_classes = [permissions.IsAuthenticated]
    pagination_class = Pages
    realtime_model = Note
    realtime_partition = "owner"

    def get_queryset(self):
        return Note.objects.filter(owner=self.request.user).order_by("-id")

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)


def board_page(request: HttpRequest) -> HttpResponse:
    """The live todo board, built on drf-grip's JavaScript client (static/drf_grip/live.js)."""
    if not request.user.is_authenticated and settings.SAMPLE_DEMO_LOGIN:
        # A demo only: every visitor edits the board as one user, so the page works at once.
        user, _ = get_user_model().objects.get_or_create(username="demo")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    context = {
        "todos_url": reverse("todo-list"),
        "gateway_url": reverse("gateway"),
        "can_edit": request.user.is_authenticated,
    }
    return render(request, "board/index.html", context)
