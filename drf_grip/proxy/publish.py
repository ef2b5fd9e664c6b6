"""Publishing into the embedded proxy over HTTP, in Pushpin's ``/publish`` format.

``POST {publish_path}`` with ``{"items": [...]}`` answers ``200 Published``; a bad item
``400 Invalid format: ...``; a body over 1,000,000 bytes ``400 Request body too large.``
(Pushpin 1.36, measured: 1,000,000 taken, 1,000,001 refused). Authorization is
``Bearer <key>`` (gripcontrol with a key and no ``control_iss``) or ``Bearer <HS256 JWT>``
signed with the key (gripcontrol with ``control_iss``).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from ..protocol import InvalidItem, get_header, parse_items
from ..protocol.constants import MAX_PUBLISH_BODY
from ..protocol.signing import InvalidToken, verify_jwt

if TYPE_CHECKING:
    from .app import GripProxy

__all__ = ["handle_publish", "handle_status", "is_authorized", "MAX_PUBLISH_BODY"]

logger = logging.getLogger("drf_grip.proxy")


def is_authorized(header: str, key: str | bytes) -> bool:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    raw_key = key.encode() if isinstance(key, str) else key
    if hmac.compare_digest(token.encode("latin-1", "replace"), raw_key):
        return True
    try:
        verify_jwt(token, raw_key, options={"verify_aud": False})
    except InvalidToken:
        return False
    return True


async def _answer(send, status: int, text: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = text.encode("utf-8") + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def handle_status(proxy: GripProxy, scope: dict[str, Any], receive, send) -> None:
    """Readiness, and how many connections are held now (a count, nothing about them)."""
    await _answer(send, 200, f"drf-grip embedded proxy\nheld: {proxy.held_count}")


async def _read_body(receive, limit: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def handle_publish(proxy: GripProxy, scope: dict[str, Any], receive, send) -> None:
    if scope["method"] != "POST":
        await _answer(send, 405, "Method Not Allowed", [(b"allow", b"POST")])
        return
    headers = scope.get("headers", [])
    authorization = get_header(headers, "authorization")
    if authorization is None:
        await _answer(send, 401, "Unauthorized", [(b"www-authenticate", b"Bearer")])
        return
    if not is_authorized(authorization, proxy.key):
        logger.warning("publish refused: bad credentials")  # never log the credentials
        await _answer(send, 403, "Forbidden")
        return
    length = get_header(headers, "content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_PUBLISH_BODY:
        await _answer(send, 400, "Request body too large.")
        return
    body = await _read_body(receive, MAX_PUBLISH_BODY)
    if body is None:
        # Pushpin's answer: a body it took (up to 1 MiB) published elsewhere was refused
        # there (an embedded-versus-Pushpin probe).
        await _answer(send, 400, "Request body too large.")
        return
    try:
        document = json.loads(body)
    except ValueError:
        await _answer(send, 400, "Invalid format: body is not JSON")
        return
    except RecursionError:
        await _answer(send, 400, "Invalid format: JSON nested too deeply")
        return
    if not isinstance(document, dict) or "items" not in document:
        await _answer(send, 400, "Invalid format: expected an object with 'items'")
        return
    try:
        items = parse_items(document["items"], max_size=proxy.max_message_size)
    except InvalidItem as exc:
        await _answer(send, 400, f"Invalid format: {exc}")
        return
    proxy.hub.publish(items)
    await _answer(send, 200, "Published")
