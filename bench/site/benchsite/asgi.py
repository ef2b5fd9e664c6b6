"""The ASGI app of one bench process (see settings.py for ``BENCH_SYSTEM``)."""

import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()


def with_subscriber_counts(proxy):
    """``GET /_bench/subscribers``: the embedded proxy's subscribers per channel, which the
    bench polls instead of Pushpin's handler log."""

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/_bench/subscribers":
            body = json.dumps(proxy.subscriber_counts()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await proxy(scope, receive, send)

    app.app = proxy  # drf_grip.proxy.server.find_proxy looks for .app
    return app


if settings.SYSTEM == "drfgrip":
    from drf_grip.asgi import uses_embedded_proxy, wrap_application

    application = wrap_application(django_app, max_held=1_000_000)
    if uses_embedded_proxy():
        application = with_subscriber_counts(application)
elif settings.SYSTEM == "dcrf":
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from .consumers import TodoConsumer

    application = ProtocolTypeRouter(
        {"http": django_app, "websocket": URLRouter([path("ws/", TodoConsumer.as_asgi())])}
    )
else:
    application = django_app


def with_cpu_clock(app):
    """``GET /_bench/cpu``: this process's CPU time in ns (CLOCK_PROCESS_CPUTIME_ID: every
    thread, including those that already exited, such as Django's per-request executor
    threads, which a sum over /proc/PID/task misses). Answered before Django, in
    microseconds."""

    served = [0]  # HTTP requests past this clock (each WebSocket-over-HTTP POST is one)

    async def clock(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/_bench/cpu":
            body = str(time.process_time_ns()).encode()
            requests = str(served[0]).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"x-bench-requests", requests)]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and not scope["path"].startswith("/_bench/"):
            served[0] += 1
        await app(scope, receive, send)

    clock.app = app  # drf_grip.proxy.server.find_proxy looks for .app
    return clock


application = with_cpu_clock(application)
