"""django-websocket-request's API, kept: ``WebSocketRequest(message).get_response()`` and the
steps it is made of, as its README documents them (``../shared/seeds``)."""

from __future__ import annotations

import json

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory, override_settings
from django.urls import include, path
from django.views import View
from rest_framework.authtoken.models import Token

from drf_grip import WebSocketRequest
from tests.testapp.models import Note, Todo

pytestmark = pytest.mark.django_db


class Echo(View):
    """What a view receives: method, query, body and the Authorization header."""

    def get(self, request, **kwargs):
        return self._echo(request, kwargs)

    def post(self, request, **kwargs):
        return self._echo(request, kwargs)

    def _echo(self, request, kwargs):
        return JsonResponse(
            {
                "method": request.method,
                "query": request.GET.dict(),
                "body": request.body.decode(),
                "authorization": request.META.get("HTTP_AUTHORIZATION"),
                "kwargs": kwargs,
            }
        )


async def async_view(request):
    return HttpResponse("from an async view")


def failing_view(request):
    raise RuntimeError("boom")


def django_grip_view(request):
    """django-grip's README check, and django-websocket's."""
    if not request.grip_proxied:
        return HttpResponse("Not Implemented\n", status=501)
    return HttpResponse(f"websocket: {request.is_websocket()}")


urlpatterns = [
    path("echo/<int:pk>/", Echo.as_view(), name="echo"),
    path("async/", async_view),
    path("fails/", failing_view),
    path("grip/", django_grip_view),
    path("", include("tests.urls")),
]

local_urls = override_settings(ROOT_URLCONF=__name__)


def answer(message: dict) -> tuple[int, object]:
    response = WebSocketRequest(json.dumps(message)).get_response()
    return response.status_code, json.loads(response.content)


def test_the_message_is_required() -> None:
    with pytest.raises(TypeError):
        WebSocketRequest()  # type: ignore[call-arg]


def test_the_readme_example_lists_through_the_urlconf() -> None:
    Todo.objects.create(title="buy milk")

    response = WebSocketRequest('{"method": "GET", "url": "/api/todos/"}').get_response()

    assert response.status_code == 200
    assert [t["title"] for t in json.loads(response.content)["results"]] == ["buy milk"]


def test_parts_of_a_message_and_their_defaults() -> None:
    full = WebSocketRequest(
        json.dumps({"url": "/api/todos/", "method": "POST", "data": {"a": 1}, "token": "t"})
    )
    empty = WebSocketRequest("{}")

    assert full.is_valid_message() and empty.is_valid_message()
    assert (full.get_url(), full.get_method(), full.get_data(), full.get_token()) == (
        "/api/todos/",
        "post",
        {"a": 1},
        "t",
    )
    assert (empty.get_url(), empty.get_method(), empty.get_data(), empty.get_token()) == (
        None,
        "get",
        {},
        None,
    )


@pytest.mark.parametrize(
    "message",
    [
        "{", "errormsg", "[1, 2]", '"a string"', "null",
        # RecursionError from Python's parser (seeds probe: WebSocketRequest raised it).
        '{"data": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"method": "GET", "url": "/api/todos/", "data": {"n": NaN}}',
    ],
)
def test_a_message_that_is_not_a_json_object_is_a_400(message: str) -> None:
    request = WebSocketRequest(message)

    assert request.is_valid_message() is False
    assert request.error == {"error": "Invalid formatted message.", "status_code": 400}
    response = request.get_response()
    assert response.status_code == 400
    assert json.loads(response.content) == request.error


def test_set_error() -> None:
    request = WebSocketRequest("{}")
    request.set_error("Error message", 123)

    assert request.error == {"error": "Error message", "status_code": 123}


def test_is_valid_resolves_the_url() -> None:
    found = WebSocketRequest(json.dumps({"url": "/api/todos/"}))
    missing = WebSocketRequest(json.dumps({"url": "/api/nonexistent/"}))

    assert found.is_valid() is True
    assert found.get_url_resolver_match().url_name == "todo-list"
    assert missing.is_valid() is False
    assert missing.error == {"error": "Resource not found.", "status_code": 404}
    assert answer({"url": "/api/nonexistent/"}) == (404, missing.error)


@pytest.mark.parametrize(
    ("message", "status", "reason"),
    [
        ({}, 400, "Missing URL"),
        ({"url": "/api/todos/", "method": "BREW"}, 400, "method is one of"),
        ({"url": "/api/todos/", "method": 7}, 400, "method is one of"),
        ({"url": "http://evil.example/api/todos/"}, 400, "url must be a path"),
        ({"url": "/api/todos/\r\nX-Injected: 1"}, 400, "control characters"),
        ({"url": "/api/todos/", "token": "a\r\nX-Injected: 1"}, 400, "Authorization"),
        ({"url": "/api/todos/", "token": ["a"]}, 400, "token must be a non-empty string"),
    ],
)
def test_a_message_that_cannot_run_gets_a_clear_4xx(message, status, reason) -> None:
    code, body = answer(message)

    assert code == status
    assert body["status_code"] == status and reason in body["error"]


@local_urls
def test_the_token_becomes_a_jwt_authorization_header() -> None:
    request = WebSocketRequest(json.dumps({"url": "/echo/1/", "token": "abc"}))
    assert request.is_valid()

    factory = request.get_factory()

    assert isinstance(factory, RequestFactory)
    assert factory.defaults == {"HTTP_AUTHORIZATION": "JWT abc"}
    assert answer({"url": "/echo/1/", "token": "mytoken"})[1]["authorization"] == "JWT mytoken"
    assert answer({"url": "/echo/1/"})[1]["authorization"] is None
    # The seed formatted any token; a numeric one was a 400 (a seeds probe).
    assert answer({"url": "/echo/1/", "token": 123})[1]["authorization"] == "JWT 123"


@local_urls
def test_steps_one_by_one() -> None:
    ws = WebSocketRequest(json.dumps({"url": "/echo/5/?a=1", "token": "abc", "data": {"b": "2"}}))
    assert ws.is_valid()
    match = ws.get_url_resolver_match()
    request = ws.get_request(ws.get_factory())

    response = ws.get_view(match, request)

    assert request.path == "/echo/5/"
    assert response.status_code == 200
    assert json.loads(response.content)["query"] == {"a": "1", "b": "2"}
    assert json.loads(response.content)["kwargs"] == {"pk": 5}


@local_urls
def test_data_of_other_methods_is_a_json_body() -> None:
    code, body = answer({"url": "/echo/1/", "method": "post", "data": {"title": "x"}})

    assert code == 200
    assert body["method"] == "POST"
    assert json.loads(body["body"]) == {"title": "x"}


def test_a_viewset_answers_like_over_http() -> None:
    created = answer({"url": "/api/todos/", "method": "POST", "data": {"title": "new"}})
    invalid = answer({"url": f"/api/todos/{created[1]['id']}/", "method": "put", "data": {}})

    assert created[0] == 201 and Todo.objects.get().title == "new"
    assert invalid[0] == 400 and "title" in invalid[1]
    assert answer({"url": "/api/posts/", "method": "put"})[0] == 405


def test_the_token_authenticates_the_call() -> None:
    ann, bob = _user("ann"), _user("bob")
    Note.objects.create(owner=ann, text="ann's")
    Note.objects.create(owner=bob, text="bob's")
    request = WebSocketRequest(
        json.dumps({"url": "/api/notes/", "token": Token.objects.create(user=ann).key})
    )
    request.token_keyword = "Token"  # DRF's TokenAuthentication

    response = request.get_response()

    assert answer({"url": "/api/notes/"})[0] == 401
    assert response.status_code == 200
    assert [n["text"] for n in json.loads(response.content)] == ["ann's"]


@local_urls
def test_an_async_view_and_a_failing_view() -> None:
    response = WebSocketRequest('{"url": "/async/"}').get_response()
    assert (response.status_code, response.content) == (200, b"from an async view")

    with override_settings(DEBUG=False, DEBUG_PROPAGATE_EXCEPTIONS=False):
        failed = WebSocketRequest('{"url": "/fails/"}').get_response()
    assert failed.status_code == 500


@local_urls
def test_a_view_written_for_django_grip_reads_its_request_attributes() -> None:
    """No middleware runs for the message, as in the seed, so ``request.grip_proxied`` raised
    AttributeError: a 500, where the gateway answers 501 (seeds probe)."""
    response = WebSocketRequest('{"url": "/grip/"}').get_response()
    assert (response.status_code, response.content) == (501, b"Not Implemented\n")


def test_repr_shows_no_token() -> None:
    request = WebSocketRequest(json.dumps({"url": "/api/todos/", "token": "secret-token"}))
    request.is_valid()

    assert "secret-token" not in repr(request)


def _user(name: str):
    from django.contrib.auth.models import User

    return User.objects.create(username=name)


def test_one_nesting_bound_on_every_python() -> None:
    """Python's parser took a 5,000-deep array on 3.13 and raised ``RecursionError`` on 3.11
    and 3.12 (CI): ``decode_json`` bounds nesting itself, brackets in strings not counted."""
    from drf_grip.grip.websocket_request import MAX_JSON_DEPTH, InvalidMessage, decode_json

    assert decode_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert decode_json('{"text": "' + "[" * 5000 + '"}') == {"text": "[" * 5000}
    with pytest.raises(InvalidMessage, match="nested too deeply"):
        decode_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))


@pytest.mark.django_db(transaction=True)
def test_a_server_with_an_event_loop_gets_answers_that_read_the_database() -> None:
    """The seed's example answers in a Tornado handler, where an event loop runs: every view
    that read the database answered 500 ``SynchronousOnlyOperation`` (seeds probe)."""
    import asyncio

    from drf_grip.test import capture_published

    with capture_published():  # no proxy here
        Todo.objects.create(title="buy milk")
    message = '{"method": "GET", "url": "/api/todos/"}'

    async def on_message() -> list[HttpResponse]:
        request = WebSocketRequest(message)
        return [request.get_response(), await request.aget_response()]

    for response in asyncio.run(on_message()):
        assert response.status_code == 200, response.content[:300]
        assert [t["title"] for t in json.loads(response.content)["results"]] == ["buy milk"]
