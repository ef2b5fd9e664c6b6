"""django-grip's hold helpers: subscribe the current request and ask the proxy to hold it."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

__all__ = ["set_hold_longpoll", "set_hold_response", "set_hold_stream"]


def set_hold_longpoll(request: HttpRequest, channels: Any, timeout: int | None = None) -> None:
    """Hold this request until a publish on ``channels`` (or ``timeout`` seconds)."""
    instruct = request.grip.start_instruct()
    instruct.add_channels(channels)
    instruct.set_hold_longpoll(timeout)


# django-grip's README imports this name in its long-polling example.
set_hold_response = set_hold_longpoll


def set_hold_stream(
    request: HttpRequest,
    channels: Any,
    keep_alive: str | bytes | None = None,
    keep_alive_timeout: int | None = None,
    next_link: str | None = None,
    next_link_timeout: int | None = None,
    *,
    keep_alive_data: str | bytes | None = None,
) -> None:
    """Keep this response open and append what is published on ``channels``.

    ``keep_alive_data`` is django-grip's name for ``keep_alive``; the keep-alive is sent
    after ``keep_alive_timeout`` idle seconds (20 when not given).
    """
    if keep_alive_data is not None:
        if keep_alive is not None:
            raise TypeError("pass keep_alive or keep_alive_data, not both")
        keep_alive = keep_alive_data
    instruct = request.grip.start_instruct()
    instruct.add_channels(channels)
    instruct.set_hold_stream()
    if keep_alive is not None:
        instruct.set_keep_alive(keep_alive, keep_alive_timeout)
    if next_link is not None:
        instruct.set_next_link(next_link, next_link_timeout)
