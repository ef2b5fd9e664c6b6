"""The development server's stop request, as its signal handler makes it."""

from __future__ import annotations

import signal
import threading

from drf_grip.management.commands import runserver


class Server:
    """uvicorn's ``Server`` as the handler sees it: two flags."""

    def __init__(self, on_exit=None) -> None:
        self.force_exit = False
        self._on_exit = on_exit
        self._should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if self._on_exit is not None:
            on_exit, self._on_exit = self._on_exit, None
            on_exit()  # a second signal, handled in the middle of the first


def test_a_signal_handled_inside_the_first_one_neither_hangs_nor_forces(monkeypatch):
    """Ctrl-C reaches the whole process group and the reloader's parent passes its own on
    as SIGTERM: the server process gets two signals at once, and the second one's handler
    runs inside the first's. With a ``threading.Event`` the nested ``set()`` waited forever
    for the lock the outer one held (a CI run: "runserver did not exit within 60 s", the
    traceback two ``on_signal`` frames deep in ``Event.set``)."""
    for second in (signal.SIGTERM, signal.SIGINT):
        stop = runserver._StopRequest()
        server = Server(on_exit=lambda stop=stop, second=second: stop.ask(second, server))
        done = threading.Thread(target=stop.ask, args=(signal.SIGINT, server), daemon=True)
        done.start()
        done.join(5)
        assert not done.is_alive()
        assert stop.asked and server.should_exit and not server.force_exit


def test_a_second_ctrl_c_later_stops_at_once(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(runserver.time, "monotonic", lambda: now[0])
    stop, server = runserver._StopRequest(), Server()
    stop.ask(signal.SIGINT, server)
    assert server.should_exit and not server.force_exit
    now[0] += runserver._FORCE_AFTER / 2
    stop.ask(signal.SIGINT, server)  # the same Ctrl-C passed on: still a graceful stop
    assert not server.force_exit
    now[0] += runserver._FORCE_AFTER
    stop.ask(signal.SIGTERM, server)  # a SIGTERM never forces
    assert not server.force_exit
    stop.ask(signal.SIGINT, server)
    assert server.force_exit


def test_verbosity_takes_django_pistokes_level_names():
    """Bad-input probe on the seeds: django-pistoke's ``runserver -v debug`` (uvicorn's level
    names, its README) failed with "invalid int value"; Django's numbers still work, and a
    name that is neither gets argparse's error, not a traceback."""
    import pytest
    from django.core.management.base import CommandError

    command = runserver.Command()
    for given, level in (("debug", 2), ("trace", 3), ("critical", 0), ("info", 1), ("2", 2)):
        parser = command.create_parser("manage.py", "runserver")
        assert parser.parse_args(["-v", given]).verbosity == level
    parser = command.create_parser("manage.py", "runserver")
    with pytest.raises(CommandError, match="invalid verbosity"):
        parser.parse_args(["-v", "loud"])
