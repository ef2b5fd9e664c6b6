"""Request threads kept for the next request (``grip/request_threads.py``).

Django's ASGI handler starts a thread for each request's synchronous part and joins it at the
end; about a fifth of an origin's CPU per short request behind a GRIP proxy, and the thread
took its database connection with it, so ``CONN_MAX_AGE`` never kept one under ASGI. These
tests drive Django's real ASGI handler, wrapped as ``drf_grip.asgi.get_asgi_application()``
wraps it, and look at which thread each request ran on.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.db.backends.signals import connection_created
from django.http import JsonResponse
from django.test import override_settings
from django.urls import path

from drf_grip.asgi import request_threads

running = threading.Event()
release = threading.Event()


def where(request):
    """The thread this request's view ran on, and its database connection."""
    connection.ensure_connection()
    if request.GET.get("wait"):
        running.set()
        release.wait(10)
    return JsonResponse({"thread": threading.current_thread().name,
                         "middleware": getattr(request, "middleware_thread", None)})


class RecordsItsThread:
    """A synchronous middleware: Django runs it thread-sensitively, like the view."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.middleware_thread = threading.current_thread().name
        return self.get_response(request)


urlpatterns = [path("where/", where)]

pytestmark = [
    pytest.mark.urls(__name__),
    pytest.mark.django_db(transaction=True),
]


def _scope(query: str = "") -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/where/", "raw_path": b"/where/",
        "query_string": query.encode(), "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }


async def _get(app, query: str = "") -> dict:
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(query), receive, send)
    assert sent[0]["status"] == 200, sent
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def _app(idle: int):
    with override_settings(DRF_GRIP={"REQUEST_THREADS_IDLE": idle}):
        return request_threads(ASGIHandler())


MIDDLEWARE = [f"{__name__}.RecordsItsThread"]


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_consecutive_requests_run_on_one_kept_thread_and_a_request_on_one_thread() -> None:
    async def run() -> list[dict]:
        app = _app(4)
        return [await _get(app) for _ in range(3)]

    answers = asyncio.run(run())
    assert len({a["thread"] for a in answers}) == 1
    assert all(a["middleware"] == a["thread"] for a in answers)


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_with_none_kept_each_request_has_a_thread_of_its_own_as_in_django() -> None:
    async def run() -> list[dict]:
        app = _app(0)
        return [await _get(app) for _ in range(3)]

    answers = asyncio.run(run())
    assert all(a["middleware"] == a["thread"] for a in answers)
    assert len({a["thread"] for a in answers}) == 3


@override_settings(MIDDLEWARE=[])
def test_concurrent_requests_never_share_a_thread() -> None:
    async def run() -> tuple[dict, dict]:
        app = _app(4)
        running.clear()
        release.clear()
        first = asyncio.ensure_future(_get(app, "wait=1"))
        await asyncio.to_thread(running.wait, 10)
        second = await _get(app)
        release.set()
        return await first, second

    first, second = asyncio.run(run())
    assert first["thread"] != second["thread"]


@override_settings(MIDDLEWARE=[])
def test_a_thread_still_running_an_abandoned_request_is_not_given_to_the_next() -> None:
    async def run() -> tuple[str, dict]:
        app = _app(4)
        running.clear()
        release.clear()
        abandoned = asyncio.ensure_future(_get(app, "wait=1"))
        await asyncio.to_thread(running.wait, 10)
        busy = next(t.name for t in threading.enumerate() if t.name.startswith("drf-grip"))
        abandoned.cancel()  # the client went away; its view is still running
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        try:
            return busy, await asyncio.wait_for(_get(app), 10)
        finally:
            release.set()

    busy, answer = asyncio.run(run())
    assert answer["thread"] != busy


def _connections_opened(monkeypatch, app, requests: int = 3) -> list[object]:
    """The database connections opened while ``app`` answers ``requests`` GETs, each with
    ``CONN_MAX_AGE`` 60 (each thread's connection is made from this dict: overriding
    ``DATABASES`` is not supported by ``override_settings``)."""
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    opened: list[object] = []

    def count(sender, connection, **kwargs) -> None:
        opened.append(connection)

    async def run() -> None:
        for _ in range(requests):
            await _get(app)

    connection_created.connect(count)
    try:
        asyncio.run(run())
    finally:
        connection_created.disconnect(count)
    return opened


@override_settings(MIDDLEWARE=[])
def test_conn_max_age_keeps_a_database_connection_under_asgi(monkeypatch) -> None:
    """Django keeps a connection per thread; a thread per request never kept one."""
    assert len(_connections_opened(monkeypatch, _app(4))) == 1


@override_settings(MIDDLEWARE=[])
def test_a_request_thread_that_ends_closes_its_database_connection(monkeypatch) -> None:
    """A thread that ended with its ``CONN_MAX_AGE`` connection open left it to the garbage
    collector: "ResourceWarning: unclosed database" under ``python -X dev`` (day-one probe)."""
    from drf_grip.grip.request_threads import RequestThreads

    # None kept: each thread ends after its request.
    opened = _connections_opened(monkeypatch, RequestThreads(ASGIHandler(), idle=0))
    for thread in threading.enumerate():
        if thread.name.startswith("drf-grip-request"):
            thread.join(10)
    assert len(opened) == 3
    assert all(wrapper.connection is None for wrapper in opened)
