"""The embedded proxy's requests to the inner app (``proxy/origin.py``), with Django's own
ASGI handler as the inner app."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path

from drf_grip.proxy.origin import OriginError, fetch

#: Set when the slow view is running; it answers once ``release`` is set.
started, release, answered = threading.Event(), threading.Event(), threading.Event()


def slow(request):
    started.set()
    release.wait(10)
    answered.set()
    return HttpResponse("late")


urlpatterns = [path("slow/", slow)]


def _scope() -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/slow/", "raw_path": b"/slow/", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"])
def test_an_answer_given_up_on_ends_as_a_client_that_left(caplog: pytest.LogCaptureFixture):
    """A next link, a re-request or a WebSocket event the inner app does not answer within
    its timeout (a loaded machine: the day-one probe's 40 reconnecting streams) is given
    up on. It was cancelled at once, which left Django's handler's own tasks behind: each
    logged "Task exception was never retrieved" with a ``RequestAborted`` traceback, or
    "Task was destroyed but it is pending". Now the app is told the client left, and its
    request ends as for any client that hangs up, with nothing logged."""
    started.clear(), release.clear(), answered.clear()
    finished = threading.Event()

    def on_finished(**kwargs):
        finished.set()

    app = ASGIHandler()

    async def scenario() -> None:
        with pytest.raises(OriginError, match="did not answer within"):
            await fetch(app, _scope(), b"", limit=1000, timeout=0.5)
        assert started.is_set()
        release.set()
        await asyncio.to_thread(answered.wait, 10)
        # Django's handler ends the request (request_finished: its database connections
        # are closed) as for a client that hung up.
        assert await asyncio.to_thread(finished.wait, 10)

    request_finished.connect(on_finished)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            asyncio.run(scenario())
            gc.collect()
    finally:
        request_finished.disconnect(on_finished)
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not noise, noise
