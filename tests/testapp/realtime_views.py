"""Realtime viewsets the DRF-layer tests use: one of each delivery mode and pagination."""

from django.http import Http404
from django.urls import include, path
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters, pagination, permissions, serializers, viewsets
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from drf_grip import RealtimeMixin, register

from .models import Article, Bookmark, Comment, Note, Place, Post, Restaurant, Team, Todo


class TodoSerializer(serializers.ModelSerializer):
    class Meta:
        model = Todo
        fields = ["id", "title", "done"]


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text"]


class PostSerializer(serializers.ModelSerializer):
    comments = serializers.SlugRelatedField(many=True, read_only=True, slug_field="text")
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Post
        fields = ["id", "title", "comments", "tags"]


class Pages(pagination.PageNumberPagination):
    page_size = 2
    page_size_query_param = "page_size"


class Cursor(pagination.CursorPagination):
    page_size = 2
    ordering = "-id"


class Limits(pagination.LimitOffsetPagination):
    default_limit = 2


class HeaderPages(Pages):
    """Pagination in headers, as GitHub's API does: the body is the page's items, the
    count is ``X-Total-Count`` and the links are an RFC 8288 ``Link`` header."""

    def get_paginated_response(self, data):
        links = [(self.get_next_link(), "next"), (self.get_previous_link(), "prev")]
        headers = {"X-Total-Count": str(self.page.paginator.count)}
        if any(url for url, _rel in links):
            headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"' for url, rel in links if url)
        return Response(data, headers=headers)


class TodoViewSet(RealtimeMixin, viewsets.ModelViewSet):
    """Private (hint) delivery, filters and page-number pagination."""

    queryset = Todo.objects.all()
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    filter_backends = [
        DjangoFilterBackend,
        filters.SearchFilter,
        filters.OrderingFilter,
    ]
    filterset_fields = ["done"]
    search_fields = ["title"]
    ordering_fields = ["id", "title"]
    pagination_class = Pages


class SharedTodoViewSet(TodoViewSet):
    realtime_delivery = "shared"


class HeaderPagedTodoViewSet(SharedTodoViewSet):
    """Shared, with its pagination in response headers."""

    pagination_class = HeaderPages


class CursorTodoViewSet(TodoViewSet):
    pagination_class = Cursor


class LimitTodoViewSet(TodoViewSet):
    pagination_class = Limits


class NoteViewSet(RealtimeMixin, viewsets.ModelViewSet):
    serializer_class = NoteSerializer
    permission_classes = [permissions.IsAuthenticated]
    realtime_model = Note

    def get_queryset(self):
        return Note.objects.filter(owner=self.request.user)

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)


class PartitionedNoteViewSet(NoteViewSet):
    """Notes partitioned by owner: a change wakes only its owner's holds."""

    realtime_partition = "owner"


class PostViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Post.objects.prefetch_related("comments", "tags")
    serializer_class = PostSerializer
    permission_classes = [permissions.AllowAny]


register(Comment, affects=lambda comment: [comment.post])


class PlaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Place
        fields = ["id", "name"]


class PlaceViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Places, some of them saved as Restaurants (multi-table inheritance)."""

    queryset = Place.objects.order_by("id")
    serializer_class = PlaceSerializer
    permission_classes = [permissions.AllowAny]


class RestaurantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Restaurant
        fields = ["id", "name", "serves_pizza"]


class RestaurantViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """A multi-table child: its representation shows its Place's ``name``."""

    queryset = Restaurant.objects.order_by("id")
    serializer_class = RestaurantSerializer
    permission_classes = [permissions.AllowAny]


class TeamSerializer(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Team
        fields = ["id", "name", "members"]


class TeamViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Teams and their members, through a custom ``Membership`` model."""

    queryset = Team.objects.prefetch_related("members").order_by("id")
    serializer_class = TeamSerializer
    permission_classes = [permissions.AllowAny]

class BookmarkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Bookmark
        fields = ["id", "label", "todo"]


class BookmarkViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Bookmarks of todos, kept (with ``todo`` null) when their todo is deleted."""

    queryset = Bookmark.objects.order_by("id")
    serializer_class = BookmarkSerializer
    permission_classes = [permissions.AllowAny]


class ArticleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Article
        fields = ["id", "slug", "title"]


class ArticleViewSet(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Articles looked up by their slug (a unique field), private delivery."""

    queryset = Article.objects.order_by("id")
    serializer_class = ArticleSerializer
    permission_classes = [permissions.AllowAny]
    lookup_field = "slug"


class SharedArticleViewSet(ArticleViewSet):
    realtime_delivery = "shared"


class AnyCaseArticleViewSet(ArticleViewSet):
    """Its own ``get_object()``: the first article whose slug is the URL's in any case, so
    ``/any-case-articles/hello/`` shows ``Hello`` while ``hello`` exists too."""

    def get_object(self):
        found = self.get_queryset().filter(slug__iexact=self.kwargs["slug"]).first()
        if found is None:
            raise Http404
        self.check_object_permissions(self.request, found)
        return found


router = DefaultRouter()
router.register("todos", TodoViewSet, basename="todo")
router.register("shared-todos", SharedTodoViewSet, basename="shared-todo")
router.register("header-todos", HeaderPagedTodoViewSet, basename="header-todo")
router.register("cursor-todos", CursorTodoViewSet, basename="cursor-todo")
router.register("limit-todos", LimitTodoViewSet, basename="limit-todo")
router.register("notes", NoteViewSet, basename="note")
router.register("pnotes", PartitionedNoteViewSet, basename="pnote")
router.register("posts", PostViewSet, basename="post")
router.register("places", PlaceViewSet, basename="place")
router.register("restaurants", RestaurantViewSet, basename="restaurant")
router.register("teams", TeamViewSet, basename="team")
router.register("bookmarks", BookmarkViewSet, basename="bookmark")

urlpatterns = [
    path("", include(router.urls)),
    # Outside the router, whose API root the tests read.
    path("articles/<slug:slug>/", ArticleViewSet.as_view({"get": "retrieve"})),
    path("shared-articles/<slug:slug>/", SharedArticleViewSet.as_view({"get": "retrieve"})),
    path("any-case-articles/<slug:slug>/", AnyCaseArticleViewSet.as_view({"get": "retrieve"})),
]
