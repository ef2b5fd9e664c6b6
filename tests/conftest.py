"""Fixtures that put the test Django app behind real sockets and a real GRIP proxy.

- ``origin_server``: the Django ASGI app served by uvicorn in a thread (session).
- ``pushpin``: a private Pushpin in front of ``origin_server`` (session).
- ``grip_pushpin``: ``pushpin`` with ``GRIP_URL`` pointing at it for one test.
- ``fresh_pushpin``: a Pushpin of one test's own, with ``GRIP_URL`` pointing at it.
- ``grip_proxy``: the conformance suite's proxy, parametrized over a real Pushpin and the
  embedded proxy, with one interface (``drf_grip.testing.proxies.ProxyUnderTest``).

The server thread and the test share a file SQLite database, so tests that let the server
see their rows use ``@pytest.mark.django_db(transaction=True)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from drf_grip.testing import OriginServer, PushpinServer, find_pushpin, pushpin_missing
from drf_grip.testing.proxies import EmbeddedProxyServer, ProxyUnderTest


def _django_asgi_app() -> Any:
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


@pytest.fixture(scope="session")
def origin_server(django_db_setup: None) -> Iterator[OriginServer]:
    """Django over real HTTP. Depends on the test database so the server never opens the
    database file before pytest-django has (re)created it."""
    with OriginServer(_django_asgi_app()) as server:
        yield server


@contextlib.contextmanager
def _private_pushpin(origin_server: OriginServer) -> Iterator[PushpinServer]:
    """A private Pushpin in front of ``origin_server``; fails under ``CI``, skips elsewhere."""
    if find_pushpin() is None:
        pushpin_missing()
    with PushpinServer(origin_server.port) as server:
        yield server


@pytest.fixture(scope="session")
def pushpin(origin_server: OriginServer) -> Iterator[PushpinServer]:
    """A private Pushpin in front of ``origin_server`` for the session."""
    with _private_pushpin(origin_server) as server:
        yield server


@contextlib.contextmanager
def _publishing_to(**settings: Any) -> Iterator[None]:
    """The test's GRIP settings, kept until the changes it committed are handed to the
    publisher: one committed at its end went out a moment later under the next settings,
    to the unset default (``127.0.0.1:8000``), and its retries for a minute failed a later
    module's log checks (test_gateway_ws.py run before test_drf_usage.py)."""
    from drf_grip.rest.change_worker import wait_idle

    with override_settings(**settings):
        yield
        wait_idle(10)


@pytest.fixture
def grip_pushpin(pushpin: PushpinServer) -> Iterator[PushpinServer]:
    """``pushpin``, with the app configured to trust and publish to it for this test."""
    with _publishing_to(GRIP_URL=pushpin.grip_url):
        yield pushpin


@pytest.fixture
def fresh_pushpin(origin_server: OriginServer) -> Iterator[PushpinServer]:
    """A Pushpin of this test's own, trusted and published to: every channel is fresh on
    it. On the session's Pushpin an earlier test's stream may still hold a channel a private
    stream subscribes to (its model's), and Pushpin re-fetches a channel's streams only
    after its first subscription (PUSHPIN.md)."""
    with _private_pushpin(origin_server) as server, _publishing_to(GRIP_URL=server.grip_url):
        yield server


@pytest.fixture(scope="session")
def embedded_proxy(django_db_setup: None) -> Iterator[EmbeddedProxyServer]:
    """The embedded GRIP proxy around the Django app, on its own server."""
    from drf_grip.asgi import embedded_proxy as build_embedded_proxy

    proxy = build_embedded_proxy(_django_asgi_app())
    with OriginServer(proxy) as server:
        yield EmbeddedProxyServer(proxy, server)


@pytest.fixture(autouse=True)
def _embedded_proxy_serving(request: pytest.FixtureRequest) -> None:
    """Every unit test runs with the session's embedded proxy serving, as in a project with
    no GRIP_URL (DESIGN.md §5), whatever ran before it. A test that published with none,
    run first (one module alone, or first on an xdist worker), sent its changes to the
    unset default (``127.0.0.1:8000``), whose retries then failed a later test's flush.
    The integration and browser tests set up the deployment each of them needs."""
    if request.node.path.parent.name not in ("integration", "browser"):
        request.getfixturevalue("embedded_proxy")


@pytest.fixture(params=["pushpin", "embedded"])
def grip_proxy(request: pytest.FixtureRequest) -> Iterator[ProxyUnderTest]:
    """The proxy a conformance test runs against; each test runs once per proxy.

    With Pushpin, ``GRIP_URL`` points at it; with the embedded proxy ``GRIP_URL`` is unset,
    which is what makes the embedded proxy the default (DESIGN.md §5).
    """
    if request.param == "pushpin":
        server: Any = request.getfixturevalue("pushpin")
        with _publishing_to(GRIP_URL=server.grip_url):
            yield server
    else:
        embedded = request.getfixturevalue("embedded_proxy")
        with _publishing_to(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None):
            yield embedded
