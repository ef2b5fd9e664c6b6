"""Items for ``publish()``: gripcontrol's formats exported to Pushpin's ``/publish`` form,
with ``GRIP_PREFIX`` on the channel, and how items are named in logs and errors.

The item schema itself (ids as strings, JSON-safe fields) is ``drf_grip.protocol.items``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from pubcontrol import Format

from ..conf import grip_settings
from ..protocol.items import RawItem, build_item

__all__ = [
    "Formats",
    "channel_name",
    "channels_of",
    "describe_channels",
    "make_item",
    "reaches_clients",
]

Formats = Union[Format, Sequence[Format], Mapping[str, Mapping[str, Any]]]


def make_item(
    channel: str,
    formats: Formats,
    id: str | None = None,
    prev_id: str | None = None,
    *,
    meta: Mapping[str, str] | None = None,
) -> RawItem:
    """An item in Pushpin's ``/publish`` form for ``channel``, with ``GRIP_PREFIX`` applied."""
    return build_item(
        grip_settings.prefix + channel, _export_formats(formats), id, prev_id, meta=meta
    )


#: The formats a GRIP proxy hands to its clients (Pushpin 1.36, handler/publishitem.cpp).
CLIENT_FORMATS = ("http-response", "http-stream", "ws-message")


def reaches_clients(item: Mapping[str, Any]) -> bool:
    """Whether any client of the item's channel can receive it: an item whose formats are
    all for other transports (``fcm``) or for none still moves the channel's sequence in
    a proxy (drf-grip publishes one so: ``rest.shared._publish_turn``)."""
    formats = item.get("formats") or {}
    return any(name in formats for name in CLIENT_FORMATS)


def channel_name(item: Mapping[str, Any]) -> str:
    """An item's channel as the application names it: without ``GRIP_PREFIX``."""
    channel = str(item.get("channel") or "")
    prefix = grip_settings.prefix
    return channel[len(prefix) :] if prefix and channel.startswith(prefix) else channel


def _export_formats(formats: Formats) -> dict[str, Mapping[str, Any]]:
    if isinstance(formats, Format):
        formats = [formats]
    if isinstance(formats, Mapping):
        return {str(name): exported for name, exported in formats.items()}
    out: dict[str, Mapping[str, Any]] = {}
    for fmt in formats:
        name = fmt.name()
        if name in out:
            raise ValueError(f"more than one {name!r} format in one item")
        exported = fmt.export()
        if name == "http-response":
            exported = _response_code_fixed(exported)
        out[name] = exported
    return out


def _response_code_fixed(exported: dict[str, Any]) -> dict[str, Any]:
    """Make ``code`` a number, reading a text "code" as the body it was meant to be.

    django-grip's README publishes ``HttpResponseFormat(obj.serialize(), headers=...)``: the
    first argument of gripcontrol's format is ``code``, so the body went out as the status and
    Pushpin answered the client ``HTTP/1.1 0 Undefined Reason``, which clients reject.
    """
    code = exported.get("code")
    if code is None or isinstance(code, int):
        return exported
    text = code.decode("utf-8", "replace") if isinstance(code, (bytes, bytearray)) else str(code)
    if text.strip().isdigit():
        return {**exported, "code": int(text)}
    if exported.get("body") or exported.get("body-bin"):
        raise ValueError(f"http-response code must be a number, not {text[:40]!r}")
    fixed = {k: v for k, v in exported.items() if k not in ("code", "body", "body-bin")}
    fixed["body"] = bytes(code) if isinstance(code, (bytes, bytearray)) else text
    return fixed


def describe_channels(channels: Iterable[str]) -> str:
    unique = list(dict.fromkeys(channels))
    shown = ", ".join(repr(c) for c in unique[:5])
    more = f" and {len(unique) - 5} more" if len(unique) > 5 else ""
    return f"channel{'s' if len(unique) != 1 else ''} {shown}{more}"


def channels_of(items: Iterable[RawItem]) -> list[str]:
    return [str(item.get("channel")) for item in items]
