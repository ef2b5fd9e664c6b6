"""Views combining a realtime viewset with what DRF users add to theirs (throttling, their
own renderers, write serializers, partitions along a path...), for ``tests/test_drf_usage.py`` and ``tests/integration/test_drf_usage.py``."""

import django_filters
from django.shortcuts import get_object_or_404
from django.urls import include, path
from rest_framework import generics, permissions, serializers, throttling, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import APIView

from drf_grip import RealtimeMixin

from .models import Task, Todo
from .realtime_views import Pages, TodoSerializer


class FewPerMinute(throttling.AnonRateThrottle):
    rate = "5/min"


class ThrottledTodos(RealtimeMixin, viewsets.ModelViewSet):
    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    throttle_classes = [FewPerMinute]
    filterset_fields = ["done"]


def _upper_keys(value):
    if isinstance(value, dict):
        return {key.upper(): _upper_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_upper_keys(item) for item in value]
    return value


class UpperKeysJSONRenderer(JSONRenderer):
    """A JSON renderer of the project's own, as djangorestframework-camel-case's renames
    keys: ``{"ID": 1, "TITLE": ...}``."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return super().render(_upper_keys(data), accepted_media_type, renderer_context)


class UpperTodos(RealtimeMixin, viewsets.ModelViewSet):
    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    renderer_classes = [UpperKeysJSONRenderer, BrowsableAPIRenderer]
    pagination_class = Pages


class SharedUpperTodos(UpperTodos):
    realtime_delivery = "shared"


class JsonApiRenderer(UpperKeysJSONRenderer):
    """JSON under a media type of its own (``+json``), as djangorestframework-jsonapi's
    ``application/vnd.api+json``: the data in a ``{"data": ...}`` document."""

    media_type = "application/vnd.api+json"
    format = "vnd.api+json"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return super().render({"data": data}, accepted_media_type, renderer_context)


class JsonApiTodos(UpperTodos):
    renderer_classes = [JsonApiRenderer]
    schema = None  # tests/test_openapi.py reads every operation as application/json


class SharedJsonApiTodos(JsonApiTodos):
    realtime_delivery = "shared"


class CsvRenderer(BaseRenderer):
    """A view that serves no JSON at all, as djangorestframework-csv's ``CSVRenderer``."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        rows = data if isinstance(data, list) else [data]
        lines = [",".join(str(v) for v in row.values()) if isinstance(row, dict) else str(row)
                 for row in rows]
        return "\r\n".join(lines).encode()


class CsvTodos(UpperTodos):
    renderer_classes = [CsvRenderer]
    pagination_class = None
    schema = None  # tests/test_openapi.py reads every operation as application/json


class SharedCsvTodos(CsvTodos):
    realtime_delivery = "shared"


class JsonCsvTodos(UpperTodos):
    """JSON first, CSV when asked for (``Accept: text/csv``, ``?format=csv``)."""

    renderer_classes = [UpperKeysJSONRenderer, CsvRenderer]
    pagination_class = None
    schema = None  # tests/test_openapi.py reads every operation as application/json


class SharedJsonCsvTodos(JsonCsvTodos):
    realtime_delivery = "shared"


class TitleWriteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Todo
        fields = ["title"]


class WriteSerializerTodos(RealtimeMixin, viewsets.ModelViewSet):
    """Reads with ``TodoSerializer``, writes with ``TitleWriteSerializer``, as DRF's docs
    show ``get_serializer_class()`` choosing by ``self.action``; an action has its own."""

    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return TitleWriteSerializer
        return super().get_serializer_class()

    @action(detail=True, methods=["patch"], serializer_class=TitleWriteSerializer)
    def rename(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(TodoSerializer(serializer.save()).data)


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["id", "title"]


class ProjectTasks(RealtimeMixin, viewsets.ModelViewSet):
    """Each user's tasks, partitioned by the owner of their project: a field path."""

    serializer_class = TaskSerializer
    permission_classes = [permissions.IsAuthenticated]
    realtime_partition = "project__owner"

    def get_queryset(self):
        return Task.objects.filter(project__owner=self.request.user)


class FieldsSerializer(serializers.ModelSerializer):
    """As drf-flex-fields' serializers do: ``?fields=id,title`` read from the request
    when the serializer is made, no filter backend declaring it."""

    class Meta:
        model = Todo
        fields = ["id", "title", "done"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        wanted = request.query_params.get("fields") if request is not None else None
        for name in set(self.fields) - set(wanted.split(",")) if wanted else ():
            self.fields.pop(name)


class SharedFieldsTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Todo.objects.order_by("pk")
    serializer_class = FieldsSerializer
    permission_classes = [permissions.AllowAny]
    realtime_delivery = "shared"


class LazyFieldsSerializer(serializers.ModelSerializer):
    """As drf-dynamic-fields' ``DynamicFieldsMixin``: ``?fields=`` read when the fields are
    first built, not when the serializer is made."""

    class Meta:
        model = Todo
        fields = ["id", "title", "done"]

    @property
    def fields(self):
        fields = super().fields
        request = self.context.get("request")
        wanted = request.query_params.get("fields") if request is not None else None
        for name in set(fields) - set(wanted.split(",")) if wanted else ():
            fields.pop(name)
        return fields


class SharedLazyFieldsTodos(SharedFieldsTodos):
    serializer_class = LazyFieldsSerializer


class SignedInSharedTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Shared, for signed-in users only (DRF's ``IsAuthenticated``, as a project's
    ``DEFAULT_PERMISSION_CLASSES`` often is)."""

    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.IsAuthenticated]
    realtime_delivery = "shared"


class HidesDone(permissions.BasePermission):
    """About the object alone: a done todo is refused to everyone."""

    def has_object_permission(self, request, view, obj):
        return not obj.done


class SharedHidingTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """Shared, with an object permission that a change can turn (DRF probe)."""

    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [HidesDone]
    realtime_delivery = "shared"


class SignedInSharedHidingTodos(SharedHidingTodos):
    permission_classes = [permissions.IsAuthenticated, HidesDone]


class TitleFilter(django_filters.FilterSet):
    """A filter method reading a parameter of its own besides its filter's: ``?starts=a``
    matches titles starting with it, or with ``?whole=1`` (which no filter declares) only
    the title itself."""

    starts = django_filters.CharFilter(method="filter_starts")

    class Meta:
        model = Todo
        fields = ["done"]

    def filter_starts(self, queryset, name, value):
        if self.request.query_params.get("whole"):
            return queryset.filter(title=value)
        return queryset.filter(title__startswith=value)


class SharedFilteredTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    filterset_class = TitleFilter
    realtime_delivery = "shared"


class PerPages(Pages):
    """A page size read by the paginator's method, not declared as an attribute."""

    def get_page_size(self, request):
        per = request.query_params.get("per")
        return int(per) if per and per.isdigit() else super().get_page_size(request)


class SharedPerPageTodos(SharedFilteredTodos):
    filterset_class = None
    pagination_class = PerPages


class MethodSerializerTodos(WriteSerializerTodos):
    """Chooses by method, as often: the write serializer for anything but a read."""

    def get_serializer_class(self):
        if self.request.method not in permissions.SAFE_METHODS:
            return TitleWriteSerializer
        return TodoSerializer


class GenericMethodSerializerTodo(RealtimeMixin, generics.RetrieveUpdateAPIView):
    queryset = Todo.objects.all()
    permission_classes = [permissions.AllowAny]

    def get_serializer_class(self):
        if self.request.method not in permissions.SAFE_METHODS:
            return TitleWriteSerializer
        return TodoSerializer


class HandTodos(RealtimeMixin, viewsets.ViewSet):
    """A plain ``ViewSet`` with hand-written actions: no ``lookup_field``, no queryset."""

    realtime_model = Todo
    schema = None  # not for the OpenAPI tests: no serializer to describe it by

    def list(self, request):
        return Response(TodoSerializer(Todo.objects.order_by("pk"), many=True).data)

    def retrieve(self, request, pk=None):
        return Response(TodoSerializer(get_object_or_404(Todo, pk=pk)).data)


class SharedNeighbourTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
    """A detail whose own ``retrieve()`` paginates a nested list, reading ``?page=``."""

    queryset = Todo.objects.order_by("pk")
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]
    pagination_class = Pages
    realtime_delivery = "shared"

    def retrieve(self, request, *args, **kwargs):
        todo = self.get_object()
        others = self.paginate_queryset(Todo.objects.exclude(pk=todo.pk).order_by("pk"))
        return Response({"title": todo.title, "others": [other.title for other in others]})


class BareCount(RealtimeMixin, APIView):
    """Names no model (drf_grip.W012): never live."""

    permission_classes = [permissions.AllowAny]
    schema = None  # not for the OpenAPI tests

    def get(self, request):
        return Response({"n": Todo.objects.count()})


router = DefaultRouter()
router.register("throttled-todos", ThrottledTodos, basename="throttled-todo")
router.register("upper-todos", UpperTodos, basename="upper-todo")
router.register("shared-upper-todos", SharedUpperTodos, basename="shared-upper-todo")
router.register("write-todos", WriteSerializerTodos, basename="write-todo")
router.register("method-todos", MethodSerializerTodos, basename="method-todo")
router.register("jsonapi-todos", JsonApiTodos, basename="jsonapi-todo")
router.register("shared-jsonapi-todos", SharedJsonApiTodos, basename="shared-jsonapi-todo")
router.register("csv-todos", CsvTodos, basename="csv-todo")
router.register("json-csv-todos", JsonCsvTodos, basename="json-csv-todo")
router.register("shared-json-csv-todos", SharedJsonCsvTodos, basename="shared-json-csv-todo")
router.register("shared-csv-todos", SharedCsvTodos, basename="shared-csv-todo")
router.register("project-tasks", ProjectTasks, basename="project-task")
router.register("shared-fields-todos", SharedFieldsTodos, basename="shared-fields-todo")
router.register(
    "shared-lazy-fields-todos", SharedLazyFieldsTodos, basename="shared-lazy-fields-todo"
)
router.register("signed-in-todos", SignedInSharedTodos, basename="signed-in-todo")
router.register("shared-hiding-todos", SharedHidingTodos, basename="shared-hiding-todo")
router.register(
    "signed-in-hiding-todos", SignedInSharedHidingTodos, basename="signed-in-hiding-todo"
)
router.register("shared-filtered-todos", SharedFilteredTodos, basename="shared-filtered-todo")
router.register("shared-per-page-todos", SharedPerPageTodos, basename="shared-per-page-todo")
router.register("hand-todos", HandTodos, basename="hand-todo")
router.register("shared-neighbour-todos", SharedNeighbourTodos, basename="shared-neighbour-todo")

urlpatterns = [
    path("", include(router.urls)),
    path("generic-method-todos/<int:pk>/", GenericMethodSerializerTodo.as_view()),
    path("bare-count/", BareCount.as_view()),
]
