"""``runserver`` over ASGI with uvicorn: HTTP, WebSockets and realtime in one process.

It replaces Django's command the way ``django.contrib.staticfiles`` and daphne do (put
``drf_grip`` before ``django.contrib.staticfiles`` in ``INSTALLED_APPS``; static files are
still served in DEBUG). uvicorn: maintained, HTTP/1.1 and WebSockets, a programmatic API, and
the same server runs the same app in production.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.commands.runserver import Command as RunserverCommand
from django.db import connections
from django.utils import autoreload
from django.utils.module_loading import import_string

__all__ = ["Command"]


# A second Ctrl-C this long after the first stops the server without waiting for held clients;
# the same Ctrl-C arriving twice (the process group, then the reloader passing it on) does not.
_FORCE_AFTER = 1.0


class RedactedAccessLog(logging.Filter):
    """uvicorn's access log without query values or token-like path segments: a query may
    carry ``?access_token=``, a next link's path a signed token. Also on ``uvicorn.error``,
    where uvicorn logs each WebSocket handshake with its whole target (hostile-input probe:
    ``"WebSocket /api/ws/?token=..." [accepted]``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, target, version,
        # status), and '%s - "WebSocket %s" ...' with (client, target[, status]).
        if len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], _loggable(args[2]), *args[3:])
        elif (
            str(record.msg).startswith('%s - "WebSocket %s"')
            and len(args) >= 2
            and isinstance(args[1], str)
        ):
            record.args = (args[0], _loggable(args[1]), *args[2:])
        return True


def _loggable(target: str) -> str:
    from drf_grip.proxy.headers import loggable_target

    path, _, query = target.partition("?")
    return loggable_target(path, query)


class _StopRequest:
    """What SIGINT and SIGTERM ask of the server process: stop (uvicorn answers its clients
    first), and a second Ctrl-C after ``_FORCE_AFTER`` s stops at once.

    Set from a signal handler, which may run again inside itself: Ctrl-C reaches the whole
    process group and the reloader's parent passes its own on as SIGTERM, so two signals
    arrive together. A ``threading.Event`` here deadlocked on its own lock when the second
    arrived inside the first's ``set()`` (CI: the server process never exited after Ctrl-C).
    So plain attributes only, each written so that a nested call between any two of them
    still reads a consistent request."""

    def __init__(self) -> None:
        self.first = 0.0
        self.asked = False

    def ask(self, signum: int, server: Any) -> None:
        now = time.monotonic()
        if not self.asked:
            self.first = now  # before ``asked``: a nested call never sees a stop at 0.0
            self.asked = True
            server.should_exit = True
        elif signum == signal.SIGINT and now - self.first > _FORCE_AFTER:
            server.force_exit = True


#: django-pistoke's runserver took uvicorn's ``--log-level`` names for ``--verbosity`` in
#: ASGI mode, each a Django level (its README): kept, so its users' commands still run.
VERBOSITY_NAMES = {"critical": 0, "error": 0, "warning": 1, "info": 1, "debug": 2, "trace": 3}


def _verbosity(value: str) -> int:
    """``--verbosity``: 0-3, or one of :data:`VERBOSITY_NAMES`."""
    level = VERBOSITY_NAMES.get(value.strip().lower())
    if level is None and value.strip() in {"0", "1", "2", "3"}:
        level = int(value)
    if level is None:
        names = ", ".join(["0", "1", "2", "3", *VERBOSITY_NAMES])
        raise argparse.ArgumentTypeError(f"invalid verbosity {value!r}: one of {names}")
    return level


class Command(RunserverCommand):
    help = "Starts the ASGI development server (uvicorn) with drf-grip's realtime."

    _server: Any = None

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        for action in parser._actions:  # BaseCommand's own option, declared with int choices
            if action.dest == "verbosity":
                action.type, action.choices = _verbosity, None
        return parser

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static_handler",
            help="Tells Django to NOT automatically serve static files at STATIC_URL.",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure_serving",
            help="Allows serving static files even if DEBUG is False.",
        )
        parser.add_argument(
            "--asgi",
            action="store_true",
            help="Accepted as django-pistoke's runserver took it; this server is always ASGI.",
        )

    def get_application(self, options: dict[str, Any]) -> Any:
        """``ASGI_APPLICATION`` when set, else drf-grip's (Django behind the embedded proxy)."""
        name = getattr(settings, "ASGI_APPLICATION", None)
        if name:
            app = import_string(name)
        else:
            from drf_grip.asgi import get_asgi_application

            app = get_asgi_application()
        use_static = options.get("use_static_handler", True)
        if (
            use_static
            and apps.is_installed("django.contrib.staticfiles")
            and (settings.DEBUG or options.get("insecure_serving"))
        ):
            from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

            app = ASGIStaticFilesHandler(app)
        return app

    def realtime_description(self, app: Any, url: str) -> str:
        from drf_grip.conf import grip_settings, redact_url
        from drf_grip.proxy.server import find_proxy

        proxy = find_proxy(app)
        if proxy is not None:
            text = (
                f"Realtime: embedded GRIP proxy (long-poll, SSE, WebSocket); publish endpoint "
                f"{url.rstrip('/')}{proxy.publish_path}"
            )
            embedded_url = str(grip_settings.EMBEDDED_URL).rstrip("/")
            if embedded_url != url.rstrip("/"):
                text += (
                    "\nNote: other processes publish to DRF_GRIP['EMBEDDED_URL'] = "
                    f"{redact_url(embedded_url)}; "
                    "set it to this address so a shell or a worker reaches this server."
                )
            return text
        if grip_settings.proxies:
            where = ", ".join(ep.display_uri for ep in grip_settings.proxies)
            names = ("GRIP_URL", "GRIP_PROXIES", "PUBLISH_SERVERS")
            named = next((n for n in names if getattr(settings, n, None)), "GRIP_URL")
            return f"Realtime: behind the GRIP proxy at {where} ({named}); this is its origin."
        return "Realtime: the ASGI_APPLICATION has no embedded GRIP proxy and GRIP_URL is unset."

    def run(self, **options: Any) -> None:
        """Django's ``run``, with a reloader that lets the server answer held clients on Ctrl-C.

        Django's reloader parent kills the server process 0.25 s after Ctrl-C (``subprocess``
        gives a child that long), and in the server process the main thread exits at once
        while uvicorn runs in a daemon thread that cannot see signals: held long-polls,
        streams and WebSockets were cut. Here the parent waits for the server process, and
        the server process tells uvicorn to stop and waits for it.
        """
        if not options["use_reloader"]:
            self.inner_run(None, **options)
        elif os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
            self.run_watched(**options)
        else:
            sys.exit(self.restart_with_reloader())

    @staticmethod
    def restart_with_reloader() -> int:
        """The reloader's parent: start the server process again while it exits with 3.

        Ctrl-C reaches the whole process group, so the server process has it already; a
        SIGINT or SIGTERM sent to this process alone is passed on as SIGTERM.
        """
        env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
        args = autoreload.get_child_arguments()
        while True:
            child = subprocess.Popen(args, env=env, close_fds=False)

            def pass_on(signum: int, frame: Any, child: subprocess.Popen = child) -> None:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

            previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                code = child.wait()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            if code != 3:
                return code

    def run_watched(self, **options: Any) -> None:
        """The reloader's server process: uvicorn in a thread, file watching and signals here."""
        stop = _StopRequest()
        stopped = threading.Event()  # a signal asked the server to stop, and it returned

        def on_signal(signum: int, frame: Any) -> None:
            if stopped.is_set() or self._server is None:
                raise KeyboardInterrupt  # nothing is served (yet, or any more)
            stop.ask(signum, self._server)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)

        def serve(*args: Any, **kwargs: Any) -> None:
            try:
                self.inner_run(*args, **kwargs)
            finally:
                if stop.asked:
                    # Wake the file watcher (it sleeps between scans) so the process exits.
                    stopped.set()
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        reloader = autoreload.get_reloader()
        autoreload.logger.info("Watching for file changes with %s", type(reloader).__name__)
        try:
            autoreload.start_django(reloader, serve, **options)
        except KeyboardInterrupt:
            pass

    def _try_bind(self, host: str, port: int) -> None:
        """Raise the ``OSError`` that binding ``host:port`` meets now (port taken, no
        permission, address not ours); anything else is left for uvicorn to report."""
        family = socket.AF_INET6 if self._raw_ipv6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As uvicorn binds: a port left in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                    raise

    def inner_run(self, *args: Any, **options: Any) -> None:
        import uvicorn

        from drf_grip.proxy.server import Server

        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()

        app = self.get_application(options)
        host = self.addr
        shown = "0.0.0.0" if self.addr == "0" else self.addr
        if self._raw_ipv6:
            shown = f"[{self.addr}]"
        if self.addr == "0":
            host = "0.0.0.0"
        url = f"{self.protocol}://{shown}:{self.port}/"
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"

        def announce() -> None:
            self.stdout.write(
                f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
                f"Django version {self.get_version()}, "
                f"using settings {settings.SETTINGS_MODULE!r}\n"
                f"Starting ASGI development server (uvicorn) at {url}\n"
                f"{self.realtime_description(app, url)}\n"
                f"Quit the server with {quit_command}."
            )
            self.stdout.flush()

        config = uvicorn.Config(
            app,
            host=host,
            port=int(self.port),
            # "auto": drf-grip's app answers lifespan scopes (the embedded proxy, or the
            # origin behind Pushpin, which flushes the publisher at shutdown); an
            # ASGI_APPLICATION of Django's own refuses them.
            lifespan="auto",
            log_level=logging.INFO if options.get("verbosity", 1) > 1 else logging.WARNING,
            access_log=options.get("verbosity", 1) > 1,
            # Behind Pushpin: it keeps idle connections to the origin and reuses them; one
            # uvicorn closed after its 5 s default fails the request sent on it (a stream's
            # next-link fetch is retried only about 2 s later).
            timeout_keep_alive=300,
        )
        if config.access_log:
            for name in ("uvicorn.access", "uvicorn.error"):
                logger = logging.getLogger(name)
                if not any(isinstance(f, RedactedAccessLog) for f in logger.filters):
                    logger.addFilter(RedactedAccessLog())
        server = self._server = Server(config, on_started=announce)
        try:
            # uvicorn logs a failed bind and exits with 3, the code that tells Django's
            # reloader to start the server again: with the port taken it restarted once a
            # second, for ever. Bind once first, as Django's runserver reports it.
            self._try_bind(host, int(self.port))
            server.run()
        except OSError as exc:
            messages = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {messages.get(exc.errno, exc)}")
            os._exit(1)
        except SystemExit as exc:
            if exc.code:  # uvicorn could not start; never 3 (see above), in any thread
                self.stderr.write("Error: the server could not start (see the log above).")
                os._exit(1)
            raise
        except KeyboardInterrupt:
            shutdown_message = options.get("shutdown_message", "")
            if shutdown_message:
                self.stdout.write(shutdown_message)
            sys.exit(0)
