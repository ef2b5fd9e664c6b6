"""Channel versions: the id of the last item published on each channel, kept in Django's
cache so every process (web, Celery, shell) reads the same one (DESIGN.md §4)."""

from __future__ import annotations

import secrets

from django.core.cache import caches

from ..conf import grip_settings

__all__ = ["read_version", "read_versions", "next_version", "set_version", "add_version"]

_KEY = "drf_grip:version:"


def _cache():
    return caches[grip_settings.VERSION_CACHE]


def new_id() -> str:
    return secrets.token_hex(8)


def read_version(channel: str) -> str | None:
    return _cache().get(_KEY + channel)


def read_versions(channels: list[str]) -> dict[str, str | None]:
    found = _cache().get_many([_KEY + c for c in channels])
    return {c: found.get(_KEY + c) for c in channels}


def ensure_versions(channels: list[str]) -> dict[str, str]:
    """Current versions, creating a first one where a channel has none yet."""
    current = read_versions(channels)
    for channel, version in current.items():
        if version is None:
            _cache().add(_KEY + channel, new_id(), timeout=None)
            current[channel] = read_version(channel)
    return current


def next_version(channel: str, new: str | None = None) -> tuple[str | None, str]:
    """Move a channel to a new version; returns ``(previous, new)`` for ``prev-id``/``id``."""
    previous = read_version(channel)
    new = new or new_id()
    _cache().set(_KEY + channel, new, timeout=None)
    return previous, new


def add_version(channel: str, version: str) -> None:
    """Give a channel its first version; never moves one the publisher has set."""
    _cache().add(_KEY + channel, version, timeout=None)


def set_version(channel: str, version: str) -> None:
    _cache().set(_KEY + channel, version, timeout=None)
