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
        "tests.openapi_sample_settings",
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
        assert ok["content"]["text/event-stream"]["schema"] == ok["content"]["application/json"]["schema"]
        assert "event-stream" in format_enum(op), path


def test_list_event_schema_is_the_paginated_list(testapp_schema):
    ok = testapp_schema["paths"]["/api/todos/"]["get"]["responses"]["200"]
    assert ok["content"]["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/PaginatedTodoList"}
    detail = testapp_schema["paths"]["/api/todos/{id}/"]["get"]["responses"]["200"]
    assert detail["content"]["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/Todo"}


def test_writes_have_no_event_stream_and_no_format_they_do_not_serve(schema):
    writes = [(path, method, op) for path, method, op in operations(schema) if method != "get"]
    assert writes
    for path, method, op in writes:
        for response in op["responses"].values():
            assert "text/event-stream" not in response.get("content", {}), (method, path)
        assert "event-stream" not in format_enum(op), (method, path)
        assert not {"If-None-Match", "Prefer", "Last-Event-ID"} & headers_of(op), (method, path)
        assert "304" not in op["responses"]


def test_guarded_writes_document_if_match_and_412(schema):
    guarded = [(p, m, op) for p, m, op in operations(schema) if m in ("put", "patch", "delete")]
    assert guarded
    for path, method, op in guarded:
        assert "If-Match" in headers_of(op), (method, path)
        assert "412" in op["responses"], (method, path)
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
