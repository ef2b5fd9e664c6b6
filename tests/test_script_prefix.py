"""The API mounted under a prefix the server passes as ``SCRIPT_NAME`` (gunicorn's
``SCRIPT_NAME``, uvicorn's ``--root-path``): what drf-grip renders for a subscriber
carries the prefix as a fresh GET does, including links made with ``reverse()``."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.urls import include, path, set_script_prefix
from rest_framework import permissions, serializers, viewsets
from rest_framework.routers import DefaultRouter
from rest_framework.test import APIClient

from drf_grip import RealtimeMixin
from drf_grip.rest.change_worker import wait_idle
from drf_grip.rest.gateway import RealtimeGateway
from drf_grip.test import WebSocketTestClient
from tests.drf_helpers import RecordingSink
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


class LinkedTodoSerializer(serializers.HyperlinkedModelSerializer):
    """DRF's tutorial serializer: each item's ``url`` comes from ``reverse()``."""

    class Meta:
        model = Todo
        fields = ["url", "title"]
        extra_kwargs = {"url": {"view_name": "linked-todo-detail"}}


class LinkedTodoViewSet(RealtimeMixin, viewsets.ModelViewSet):
    queryset = Todo.objects.order_by("id")
    serializer_class = LinkedTodoSerializer
    permission_classes = [permissions.AllowAny]
    realtime_delivery = "shared"


router = DefaultRouter()
router.register("linked-todos", LinkedTodoViewSet, basename="linked-todo")
urlpatterns = [path("api/ws/", RealtimeGateway.as_view()), path("api/", include(router.urls))]


@pytest.fixture(autouse=True)
def mounted():
    cache.clear()
    # What Django's WSGI and ASGI handlers do for each request (its test client does not).
    set_script_prefix("/api-prefix/")
    # The setup's publishes go to a sink of this process, not over HTTP to EMBEDDED_URL
    # (retried there long enough to hold up the next test's flush).
    with override_settings(ROOT_URLCONF=__name__), RecordingSink() as sink:
        yield
        sink.settle()
    set_script_prefix("/")
    cache.clear()


def test_a_change_pushed_under_a_script_name_links_with_the_prefix():
    """A shared render runs on the publisher's thread, where no handler set the script
    prefix: every ``reverse()`` link of a pushed change lacked ``/api-prefix`` (deploy probe:
    ``http://testserver/api/linked-todos/1/`` in the push, ``.../api-prefix/api/...`` in a
    fresh GET), and the ETag differed from the GET's."""
    Todo.objects.create(title="a")
    wait_idle()
    fresh = APIClient(SCRIPT_NAME="/api-prefix").get("/api/linked-todos/")
    assert fresh.json()[0]["url"].startswith("http://testserver/api-prefix/api/linked-todos/")
    ws = WebSocketTestClient(SCRIPT_NAME="/api-prefix").connect("/api/ws/")
    assert ws.accepted, ws.response
    ws.send(json.dumps({"id": 1, "subscribe": "/api/linked-todos/"}))
    first = ws.receive_json()
    assert first["status"] == 200 and first["data"] == fresh.json(), first
    Todo.objects.create(title="b")
    change = ws.receive_json(timeout=5)
    assert change["event"] == "change", change
    fresh = APIClient(SCRIPT_NAME="/api-prefix").get("/api/linked-todos/")
    assert change["data"] == fresh.json()
    assert change["etag"] == fresh["ETag"]
