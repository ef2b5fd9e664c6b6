"""Views that override each documented realtime hook (README, "Hooks"): the publisher must
follow what each hook decided when the client subscribed (DESIGN.md §3)."""

import hashlib

from django.urls import path
from django.utils import translation
from rest_framework import generics, permissions, serializers, viewsets
from rest_framework.authentication import TokenAuthentication
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.versioning import AcceptHeaderVersioning, QueryParameterVersioning

from drf_grip import ListRealtimeMixin, RealtimeMixin

from .models import Bookmark, Comment, Post, Tag, Todo
from .realtime_views import BookmarkSerializer, TodoSerializer


class PostTitleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Post
        fields = ["id", "title"]


class DeliveryHookViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Shared delivery chosen by the hook, not by ``realtime_delivery`` (no other view of
    Post is shared)."""

    queryset = Post.objects.order_by("id")
    serializer_class = PostTitleSerializer
    permission_classes = [permissions.AllowAny]

    def get_realtime_delivery(self):
        return "shared"


class PlainTagSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ModelHookViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """No ``queryset`` and no model serializer: only ``get_realtime_model()`` names Tag,
    which no other view serves."""

    serializer_class = PlainTagSerializer
    permission_classes = [permissions.AllowAny]

    def get_queryset(self):
        return Tag.objects.order_by("id")

    def get_realtime_model(self):
        return Tag


def custom_etag(content: bytes) -> str:
    return '"custom-' + hashlib.md5(content).hexdigest() + '"'


class EtagHookViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """A custom ETag, on shared delivery (the publisher pushes the ETag the hook makes)."""

    queryset = Todo.objects.all()
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    realtime_delivery = "shared"

    def get_etag(self, content):
        return custom_etag(content)


class PrivateEtagHookViewSet(EtagHookViewSet):
    realtime_delivery = "private"


class ChannelHookViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Custom channels and their publishing counterpart."""

    queryset = Todo.objects.all()
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]

    def get_realtime_channels(self):
        return ["custom.todos"]

    @classmethod
    def get_changed_channels(cls, model, pks, partitions):
        return ["custom.todos"]


class SharedChannelHookViewSet(ChannelHookViewSet):
    """The README's channel pair on a shared view."""

    realtime_delivery = "shared"

    def get_realtime_channels(self):
        return ["custom.shared-todos"]

    @classmethod
    def get_changed_channels(cls, model, pks, partitions):
        return ["custom.shared-todos"]


class CommentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Comment
        fields = ["id", "text"]


class PostCommentsView(ListRealtimeMixin, generics.ListAPIView):
    """A nested list: a lookup kwarg in the URL, and still a list."""

    serializer_class = CommentSerializer
    permission_classes = [permissions.AllowAny]
    realtime_model = Comment

    def get_queryset(self):
        return Comment.objects.filter(post_id=self.kwargs["pk"]).order_by("id")


class ListQuerysetView(ListRealtimeMixin, generics.ListAPIView):
    """DRF allows a plain list as ``queryset``: defining this class must not fail."""

    queryset = [1, 2, 3]
    serializer_class = serializers.Serializer
    schema = None  # not for the OpenAPI tests
    permission_classes = [permissions.AllowAny]

    def list(self, request, *args, **kwargs):
        return Response(list(self.get_queryset()))


class ScopeAuthentication(TokenAuthentication):
    """Token auth whose ``request.auth`` carries a scope from a header of the request."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        return user, {"token": token.key, "scope": request.META.get("HTTP_X_SCOPE", "none")}


#: Requests that reached the origin: (path, Authorization); tests count re-requests with it.
seen_requests: list[tuple[str, str]] = []


class TenantMiddleware:
    """A middleware whose output depends on the request: the tenant header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        seen_requests.append((request.path, request.META.get("HTTP_AUTHORIZATION", "")))
        request.tenant = request.META.get("HTTP_X_TENANT", "public")
        with translation.override(request.META.get("HTTP_X_LANG", "en")):
            return self.get_response(request)


class ScopedTodoSerializer(TodoSerializer):
    scope = serializers.SerializerMethodField()
    tenant = serializers.SerializerMethodField()

    class Meta(TodoSerializer.Meta):
        fields = [*TodoSerializer.Meta.fields, "scope", "tenant"]

    def get_scope(self, obj) -> str:
        return (self.context["request"].auth or {}).get("scope")

    def get_tenant(self, obj) -> str:
        return getattr(self.context["request"]._request, "tenant", "no middleware ran")


class ScopedTodoViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Private: the representation depends on request.auth and on a middleware."""

    queryset = Todo.objects.all()
    serializer_class = ScopedTodoSerializer
    authentication_classes = [ScopeAuthentication]
    schema = None  # not for the OpenAPI tests
    permission_classes = [permissions.IsAuthenticated]


class QueryReadingTodoViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Shared; ``get_queryset`` reads a parameter no filter backend declares."""

    serializer_class = TodoSerializer
    realtime_delivery = "shared"
    schema = None

    def get_queryset(self):
        todos = Todo.objects.order_by("pk")
        title = self.request.query_params.get("title")
        return todos.filter(title=title) if title else todos

    @action(detail=False)
    def count(self, request):
        """A route that is not live."""
        return Response({"count": self.get_queryset().count()})


class TitleOnlySerializer(serializers.ModelSerializer):
    class Meta:
        model = Todo
        fields = ["id", "title"]


class VersionedTodoViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Shared; ``?version=2`` (QueryParameterVersioning) shows fewer fields."""

    queryset = Todo.objects.order_by("pk")
    realtime_delivery = "shared"
    versioning_class = QueryParameterVersioning
    schema = None

    def get_serializer_class(self):
        return TitleOnlySerializer if self.request.version == "2" else TodoSerializer


class AcceptVersionedTodoViewSet(VersionedTodoViewSet):
    """Shared; ``Accept: ...; version=2`` (AcceptHeaderVersioning) shows fewer fields."""

    versioning_class = AcceptHeaderVersioning


class PrivateAcceptVersionedTodoViewSet(AcceptVersionedTodoViewSet):
    realtime_delivery = "private"


def _made_by_a_factory():
    """A viewset made by a function, as projects that build one per model do: its qualname
    (``_made_by_a_factory.<locals>.FactoryBookmarks``) names no class an import finds."""

    class FactoryBookmarks(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Bookmark.objects.order_by("id")
        serializer_class = BookmarkSerializer
        permission_classes = [permissions.AllowAny]

    return FactoryBookmarks


urlpatterns = [
    path("factory-bookmarks/", _made_by_a_factory().as_view({"get": "list"})),
    path("query-reading-todos/", QueryReadingTodoViewSet.as_view({"get": "list"})),
    path("query-reading-todos/count/", QueryReadingTodoViewSet.as_view({"get": "count"})),
    path("versioned-todos/", VersionedTodoViewSet.as_view({"get": "list"})),
    path("accept-versioned-todos/", AcceptVersionedTodoViewSet.as_view({"get": "list"})),
    path(
        "private-accept-versioned-todos/",
        PrivateAcceptVersionedTodoViewSet.as_view({"get": "list"}),
    ),
    path("hook-delivery/", DeliveryHookViewSet.as_view({"get": "list"})),
    path("hook-delivery/<int:pk>/", DeliveryHookViewSet.as_view({"get": "retrieve"})),
    path("hook-model/", ModelHookViewSet.as_view({"get": "list"})),
    path("hook-etag/", EtagHookViewSet.as_view({"get": "list"})),
    path("hook-etag-private/", PrivateEtagHookViewSet.as_view({"get": "list"})),
    path("hook-channels/", ChannelHookViewSet.as_view({"get": "list"})),
    path("hook-channels-shared/", SharedChannelHookViewSet.as_view({"get": "list"})),
    path("posts/<int:pk>/comments/", PostCommentsView.as_view()),
    path("list-queryset/", ListQuerysetView.as_view()),
    path("scoped-todos/", ScopedTodoViewSet.as_view({"get": "list"})),
    path("scoped-todos/<int:pk>/", ScopedTodoViewSet.as_view({"get": "retrieve"})),
]
