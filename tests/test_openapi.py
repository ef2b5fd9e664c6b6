"""The OpenAPI schema drf-spectacular makes of realtime views (drf_grip/openapi.py).

Each schema is made by ``manage.py spectacular --validate --fail-on-warn``, as a user's CI
would run it: a warning or an invalid schema fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drf_grip.rest.mixins import RealtimeMixin

ROOT = Path(__file__).resolve().parent.parent
MIXIN_DOC = " ".join((RealtimeMixin.__doc__ or "").split())


def spectacular(tmp_path: Path, manage: list[str], settings: str) -> dict[str, Any]:
    out = tmp_path / "schema.json"
    env = {**os.environ, "SAMPLE_API_DB": str(tmp_path / "sample.sqlite3")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, *manage, "spectacular", "--settings", settings,
         "--validate", "--fail-on-warn",
         "--format", "openapi-json", "--file", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def testapp_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return spectacular(
        tmp_path_factory.mktemp("testapp"), ["-m", "django"], "tests.openapi_settings"
    )


@pytest.fixture(scope="module")
def sample_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return spectacular(
        tmp_path_factory.mktemp("sample"),
        ["sample_api/manage.py"],
        "sample_api.settings",  # with drf-spectacular installed, the sample sets it up
    )


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    ]


def headers_of(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}


def format_enum(op: dict[str, Any]) -> list[str]:
    for p in op.get("parameters", []):
        if p["in"] == "query" and p["name"] == "format":
            return p["schema"].get("enum", [])
    return []


@pytest.fixture(params=["testapp", "sample"])
def schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(f"{request.param}_schema")


def test_realtime_reads_document_holds_streams_and_etags(schema):
    reads = [(path, op) for path, method, op in operations(schema) if method == "get"]
    assert reads
    for path, op in reads:
        assert {"If-None-Match", "Prefer", "Last-Event-ID"} <= headers_of(op), path
        ok = op["responses"]["200"]
        assert "ETag" in ok["headers"], path
        assert "ETag" in op["responses"]["304"]["headers"], path
        # Each event's data is the operation's own response schema.
        content = ok["content"]
        assert content["text/event-stream"]["schema"] == content["application/json"]["schema"]
        assert "event-stream" in format_enum(op), path


def test_list_event_schema_is_the_paginated_list(testapp_schema):
    ok = testapp_schema["paths"]["/api/todos/"]["get"]["responses"]["200"]
    page = {"$ref": "#/components/schemas/PaginatedTodoList"}
    assert ok["content"]["text/event-stream"]["schema"] == page
    detail = testapp_schema["paths"]["/api/todos/{id}/"]["get"]["responses"]["200"]
    assert detail["content"]["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/Todo"}


def test_writes_have_no_event_stream_and_no_format_they_do_not_serve(schema):
    writes = [(path, method, op) for path, method, op in operations(schema) if method != "get"]
    assert writes
    for path, method, op in writes:
        for response in op["responses"].values():
            assert "text/event-stream" not in response.get("content", {}), (method, path)
        assert "event-stream" not in format_enum(op), (method, path)
        assert not {"Prefer", "Last-Event-ID"} & headers_of(op), (method, path)
        assert "304" not in op["responses"]
        for parameter in op.get("parameters", []):
            if parameter["name"] == "If-None-Match":  # a write's precondition, not a hold
                assert "412" in parameter["description"], (method, path)


def test_guarded_writes_document_if_match_and_412(schema):
    guarded = [(p, m, op) for p, m, op in operations(schema) if m in ("put", "patch", "delete")]
    assert guarded
    for path, method, op in guarded:
        assert {"If-Match", "If-None-Match"} <= headers_of(op), (method, path)
        assert "412" in op["responses"], (method, path)
        if method != "delete":
            assert "ETag" in op["responses"]["200"]["headers"], (method, path)
    creates = [op for p, m, op in operations(schema) if m == "post"]
    assert creates and all("If-Match" not in headers_of(op) for op in creates)


def test_mixin_docstring_is_no_operation_description(schema):
    for path, method, op in operations(schema):
        description = " ".join(op.get("description", "").split())
        assert MIXIN_DOC not in description, (method, path)
        assert "drf_grip" not in description


def test_a_view_docstring_is_still_its_description(testapp_schema):
    op = testapp_schema["paths"]["/api/todos/"]["get"]
    assert op["description"].startswith("Private (hint) delivery")
    assert "description" not in testapp_schema["paths"]["/api/posts/"]["get"]


def test_without_drf_spectacular_schema_class_views_keep_drfs_own():
    """Projects on DRF's own schema generator (the default DEFAULT_SCHEMA_CLASS) see no
    change: the realtime views' schema is an instance of that class."""
    from rest_framework.schemas.openapi import AutoSchema
    from rest_framework.settings import api_settings

    from tests.testapp.realtime_views import TodoViewSet

    assert api_settings.DEFAULT_SCHEMA_CLASS is AutoSchema
    assert type(TodoViewSet().schema) is AutoSchema


@pytest.fixture
def local_views():
    """Views defined inside a test register their model for publishing, process-wide;
    forget them afterwards so other tests publish as before."""
    from drf_grip.rest import registry

    before = {model: list(views) for model, views in registry._views.items()}
    yield
    with registry._lock:
        registry._views.clear()
        registry._views.update(before)


def _spectacular_urls() -> list[Any]:
    from django.urls import path
    from drf_spectacular.openapi import AutoSchema
    from drf_spectacular.utils import extend_schema
    from rest_framework import generics, viewsets

    from drf_grip import ListRealtimeMixin
    from drf_grip.openapi import RealtimeSchemaMixin
    from tests.testapp.realtime_views import TodoSerializer
    from tests.testapp.models import Todo

    class Todos(RealtimeMixin, viewsets.ModelViewSet):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer

        @extend_schema(description="Todos, live.")
        def list(self, request, *args, **kwargs):
            return super().list(request, *args, **kwargs)

    class OwnSchema(RealtimeSchemaMixin, AutoSchema):
        pass

    class TodoFeed(ListRealtimeMixin, generics.ListAPIView):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer
        schema = OwnSchema()

    return [
        path("todos/", Todos.as_view({"get": "list"})),
        path("todos/<int:pk>/", Todos.as_view({"get": "retrieve", "patch": "partial_update"})),
        path("feed/", TodoFeed.as_view()),
    ]


def test_extend_schema_and_a_views_own_schema_class_keep_the_realtime_parts(local_views):
    from django.test import override_settings
    from drf_spectacular.generators import SchemaGenerator

    # Views are declared under the setting, as in a project configured for drf-spectacular
    # (@extend_schema reads DEFAULT_SCHEMA_CLASS when it decorates).
    rest_framework = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    with override_settings(REST_FRAMEWORK=rest_framework):
        generator = SchemaGenerator(patterns=_spectacular_urls())
        schema = generator.get_schema(request=None, public=True)
    listed = schema["paths"]["/todos/"]["get"]
    assert listed["description"] == "Todos, live."
    assert "If-None-Match" in headers_of(listed) and "304" in listed["responses"]
    assert "text/event-stream" in listed["responses"]["200"]["content"]
    assert "If-Match" in headers_of(schema["paths"]["/todos/{id}/"]["patch"])
    feed = schema["paths"]["/feed/"]["get"]
    assert "Last-Event-ID" in headers_of(feed)
    assert "text/event-stream" in feed["responses"]["200"]["content"]


def test_the_views_realtime_kind_hook_decides_which_operations_are_live(local_views):
    """An action the view makes live through ``get_realtime_kind()`` is documented live; one
    it turns off is not (the same decision as for a request)."""
    from django.test import override_settings
    from django.urls import path
    from drf_spectacular.generators import SchemaGenerator
    from rest_framework import viewsets

    from tests.testapp.models import Todo
    from tests.testapp.realtime_views import TodoSerializer

    class ListOnlyLive(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer

        def get_realtime_kind(self):
            return "list" if getattr(self, "action", None) == "list" else None

    rest_framework = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
    with override_settings(REST_FRAMEWORK=rest_framework):
        schema = SchemaGenerator(patterns=[
            path("l/", ListOnlyLive.as_view({"get": "list"})),
            path("l/<int:pk>/", ListOnlyLive.as_view({"get": "retrieve"})),
        ]).get_schema(request=None, public=True)
    assert "If-None-Match" in headers_of(schema["paths"]["/l/"]["get"])
    detail = schema["paths"]["/l/{id}/"]["get"]
    assert "If-None-Match" not in headers_of(detail) and "304" not in detail["responses"]
    assert "text/event-stream" not in detail["responses"]["200"]["content"]
