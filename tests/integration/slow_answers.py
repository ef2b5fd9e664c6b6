"""A TCP relay between a GRIP proxy and the origin that can hold one answer on its way.

A proxy under load applies the instructions of an origin's answer late; the relay makes
that happen on purpose. :meth:`SlowAnswers.hold_next` arms it: the next stretch of bytes from
the origin holding ``marker`` waits (``held`` is set when it arrived) until
:meth:`SlowAnswers.release`. Everything else passes as it comes, both ways.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["SlowAnswers"]


class SlowAnswers:
    def __init__(self, origin_port: int) -> None:
        self.origin_port = origin_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self.held = threading.Event()
        self._released = threading.Event()
        self._closing = False
        self._sockets: list[socket.socket] = []

    def hold_next(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker
            self.held.clear()
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> SlowAnswers:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing = True
        self._released.set()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
                origin = socket.create_connection(("127.0.0.1", self.origin_port))
            except OSError:
                return
            for sock in (client, origin):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, origin]
            threading.Thread(target=self._pump, args=(client, origin, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(origin, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_origin: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if from_origin and self._should_hold(tail + chunk):
                    self.held.set()
                    self._released.wait(30)
                tail = chunk[-64:]
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _should_hold(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None  # once
            return True
