"""``drf_grip.asgi`` and the uvicorn ``runserver``: the embedded proxy is the default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.management import get_commands, load_command_class
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.test import override_settings

from drf_grip.asgi import get_asgi_application
from drf_grip.grip.request_threads import RequestThreads
from drf_grip.grip.writes_first import WritesFirst
from drf_grip.proxy import GripProxy

from .conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_without_grip_url_django_runs_behind_the_embedded_proxy():
    app = get_asgi_application()
    assert isinstance(app, GripProxy)
    # Writes first sits between the proxy and Django (grip/writes_first.py), then the kept
    # request threads (grip/request_threads.py).
    assert isinstance(app.app, WritesFirst)
    assert isinstance(app.app.app, RequestThreads)
    assert isinstance(app.app.app.app, ASGIHandler)


@override_settings(GRIP_URL="http://127.0.0.1:5561/?iss=pushpin&key=secret-key-of-some-length")
def test_with_grip_url_it_is_the_plain_origin():
    app = get_asgi_application()
    assert isinstance(app.app, WritesFirst)
    assert isinstance(app.app.app.app, ASGIHandler)


@override_settings(DRF_GRIP={"REQUEST_THREADS_IDLE": 0})
def test_with_no_request_threads_kept_django_starts_its_own():
    app = get_asgi_application()
    assert isinstance(app.app, WritesFirst)
    assert isinstance(app.app.app, ASGIHandler)


@override_settings(GRIP_URL="http://127.0.0.1:5561/?iss=pushpin&key=secret-key-of-some-length")
def test_a_websocket_made_straight_to_the_origin_is_refused_not_a_500(caplog):
    """Behind a proxy the origin sees WebSocket-over-HTTP only; a client that bypassed the
    proxy got Django's 500 and a traceback (a seeds probe)."""
    import asyncio

    app = get_asgi_application()
    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/echo/", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert "GRIP proxy" in caplog.text


def test_runserver_is_drf_grips():
    assert get_commands()["runserver"] == "drf_grip"
    command = load_command_class("drf_grip", "runserver")
    assert issubclass(type(command), DjangoRunserver)
    # django-pistoke's runserver took --asgi; a project's scripts keep working.
    assert command.create_parser("manage.py", "runserver").parse_args(["--asgi"]).asgi


@pytest.mark.timeout(60)
def test_runserver_serves_http_through_the_embedded_proxy():
    port = free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Quit the server" in line:
                break
        text = "".join(output)
        assert f"http://127.0.0.1:{port}/" in text
        assert "embedded GRIP proxy" in text
        assert httpx.get(f"http://127.0.0.1:{port}/_grip/").text.startswith("drf-grip embedded proxy\n")
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
    assert process.returncode == 0, "".join(output) + rest


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reload", [True, False], ids=["autoreload", "noreload"])
def test_a_port_in_use_is_reported_and_the_server_exits(reload):
    """uvicorn exits 3 when it cannot bind, the code Django's reloader restarts on: with the
    port taken, runserver logged the error once a second for ever (black-box probe)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
        args = [sys.executable, "-m", "django", "runserver", "--skip-checks", f"127.0.0.1:{port}"]
        if not reload:
            args.insert(4, "--noreload")
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"runserver kept running with its port taken:\n{output[-2000:]}")
    assert process.returncode == 1, output
    assert output.count("That port is already in use.") == 1, output


@override_settings(GRIP_URL="https://user:pa55word@api.fanout.io/realm/r1?iss=r1&key=c2VjcmV0LWtleQ")
def test_the_banner_names_the_proxy_without_credentials():
    command = load_command_class("drf_grip", "runserver")
    text = command.realtime_description(object(), "http://127.0.0.1:8001/")
    assert "https://***@api.fanout.io/realm/r1" in text
    assert "pa55word" not in text and "c2VjcmV0LWtleQ" not in text


@override_settings(GRIP_URL=None, GRIP_PROXIES=[{"control_uri": "http://127.0.0.1:5561/"}])
def test_the_banner_names_the_setting_that_configured_the_proxy():
    command = load_command_class("drf_grip", "runserver")
    text = command.realtime_description(object(), "http://127.0.0.1:8001/")
    assert "(GRIP_PROXIES)" in text and "GRIP_URL" not in text


def test_the_access_log_shows_no_query_values_nor_next_link_tokens():
    import logging

    from drf_grip.management.commands.runserver import RedactedAccessLog

    token = "eyJhbGciOiJIUzI1NiJ9.eyJwIjoiL2FwaS90b2Rvcy8ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/_grip/next/{token}/?access_token=abc123&page=2", "1.1", 200),
        None,
    )
    assert RedactedAccessLog().filter(record)
    line = record.getMessage()
    assert line == '127.0.0.1:5000 - "GET /_grip/next/*/?access_token=*&page=* HTTP/1.1" 200'


@override_settings(
    GRIP_URL=None,
    DRF_GRIP={"EMBEDDED_URL": "http://ops:s3cr3t-pw@127.0.0.1:9123/grip?key=k3y-in-query"},
)
def test_the_banner_names_another_embedded_url_without_its_credentials():
    """The banner's note on ``EMBEDDED_URL`` (this server listens elsewhere) redacts it."""
    command = load_command_class("drf_grip", "runserver")
    text = command.realtime_description(get_asgi_application(), "http://127.0.0.1:8001/")
    assert "DRF_GRIP['EMBEDDED_URL'] = http://***@127.0.0.1:9123/grip;" in text, text
    assert "s3cr3t-pw" not in text and "k3y-in-query" not in text and "ops" not in text


def test_the_warning_of_another_embedded_proxy_names_its_url_without_credentials(
    settings, tmp_path, caplog
):
    """Two processes of this host embedding the proxy at one ``EMBEDDED_URL`` are warned of
    (``drf_grip.asgi``); the URL in the warning is redacted."""
    import hashlib
    import logging
    import socket

    from drf_grip.asgi import _warn_of_other_embedded_proxies
    from drf_grip.rest.store import SlotIndex

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path),
        }
    }
    settings.DRF_GRIP = {"EMBEDDED_URL": "http://ops:s3cr3t-pw@127.0.0.1:9123/?key=k3y-in-query"}
    where = hashlib.sha256(settings.DRF_GRIP["EMBEDDED_URL"].encode()).hexdigest()
    other = os.getppid()  # alive, and not this process
    SlotIndex(f"drf_grip:embedded:{where[:16]}", 64, 60).add(
        f"{socket.gethostname()}:{other}", {"host": socket.gethostname(), "pid": other}
    )
    with caplog.at_level(logging.WARNING, logger="drf_grip"):
        _warn_of_other_embedded_proxies()
    logged = caplog.text
    assert "several processes serve drf-grip's embedded GRIP proxy" in logged, logged
    assert "http://***@127.0.0.1:9123/" in logged and str(other) in logged
    assert "s3cr3t-pw" not in logged and "k3y-in-query" not in logged
