"""The gateway's message protocol: what a client sends and what it gets back.

Client messages are JSON objects (django-websocket-request's format, plus subscriptions)::

    {"id": 7, "method": "PATCH", "url": "/api/todos/5/", "data": {...},
     "token": "...", "headers": {"X-CSRFToken": "..."}}
    {"id": 8, "subscribe": "/api/todos/?done=false"}
    {"id": 9, "unsubscribe": 8}

Answers and server-sent messages::

    {"id": 7, "status": 200, "data": {...}, "etag": "\\"...\\""}       # a request's answer
    {"id": 8, "status": 200, "data": [...], "etag": "...", "url": "..."}  # a subscription's first
    {"event": "change", "id": 8, "url": "...", "status": 200, "data": ..., "etag": ...}
    {"event": "end", "id": 8, "url": "...", "status": 403, "error": "reason"}
    {"id": 9, "status": 200, "unsubscribed": 8}
    {"id": 7, "status": 400, "error": "reason"}                       # an error, connection kept
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from django.http import HttpResponse

from ...conf import grip_settings
from ...grip.websocket_request import InvalidMessage, decode_json
from ...protocol.constants import MAX_PUBLISH_BODY
from ..etag import make_etag

__all__ = [
    "refused_answer",
    "MessageError",
    "answer_of",
    "change_event",
    "change_message",
    "decode_message",
    "end_message",
    "is_json",
    "media_type_of",
    "refusal_error",
    "REVOKED_ERROR",
    "valid_id",
]

_MAX_ID = 200


class MessageError(Exception):
    """A message the gateway refuses; becomes ``{"id", "status", "error"}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_message(message: str | bytes) -> dict[str, Any]:
    """A client message as a JSON object, within ``DRF_GRIP['WS_MAX_MESSAGE_SIZE']``."""
    if isinstance(message, bytes):
        raise MessageError(400, "binary messages are not supported: send JSON text")
    size = len(message.encode("utf-8"))
    limit = int(grip_settings.WS_MAX_MESSAGE_SIZE)
    if size > limit:
        raise MessageError(413, f"message too large: {size} bytes, the limit is {limit}")
    try:
        data = decode_json(message)
    except InvalidMessage as exc:
        raise MessageError(400, str(exc)) from None
    if not isinstance(data, dict):
        raise MessageError(400, "a message is a JSON object")
    return data


def valid_id(value: Any) -> bool:
    """A message id is absent, a string of at most 200 characters, or an integer a
    JavaScript client reads exactly (at most 2**53)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**53
    return isinstance(value, str) and len(value) <= _MAX_ID


def _media_type(response: HttpResponse) -> str:
    return media_type_of(response.get("Content-Type", ""))


def media_type_of(content_type: str) -> str:
    """``text/csv; charset=utf-8`` → ``text/csv``."""
    return content_type.split(";")[0].strip().lower()


def sent_limit() -> int:
    """The largest body a gateway message carries, in bytes. Pushpin takes a publish of at
    most 1 MB (``MAX_PUBLISH_BODY``), and the embedded proxy passes no message over
    ``EMBEDDED_MAX_MESSAGE_SIZE`` (1 MiB). A larger answer reached no client: the embedded
    proxy dropped it and Pushpin closed the connection without a close frame, so the client
    waited for ever (black-box probe, a 1.05 MB list)."""
    return min(MAX_PUBLISH_BODY, int(grip_settings.EMBEDDED_MAX_MESSAGE_SIZE))


def too_large(response: HttpResponse) -> str | None:
    """Why ``response``'s body is too large for a gateway message, or None."""
    if getattr(response, "streaming", False):
        return None
    size, limit = len(response.content), sent_limit()
    head = min(4096, limit // 8)  # the message's other fields
    # A push carries the message as a JSON string, escaped: a JSON body grows by its quotes.
    if 2 * size + head <= limit:
        return None
    if len(json.dumps(response.content.decode("utf-8", "replace"))) + head <= limit:
        return None
    return (
        f"the representation is {size} bytes; a gateway message carries at most {limit}: "
        "paginate it, or GET it over HTTP"
    )


def answer_of(message_id: Any, response: HttpResponse) -> dict[str, Any]:
    """``{"id", "status", "data"}`` (plus ``etag``, ``location``) for an inner response."""
    status = response.status_code
    if status >= 500:
        return {"id": message_id, "status": status, "error": "server error"}
    if getattr(response, "streaming", False):
        return {"id": message_id, "status": 502, "error": "streaming responses are not supported"}
    reason = too_large(response)
    if reason is not None:
        return {"id": message_id, "status": 413, "error": reason}
    content = response.content
    data: Any = None
    if content:
        text = content.decode("utf-8", "replace")
        data = text
        if is_json(_media_type(response)):
            try:
                data = json.loads(text)
            except ValueError:
                pass
    answer: dict[str, Any] = {"id": message_id, "status": status, "data": data}
    if response.has_header("ETag"):
        answer["etag"] = response["ETag"]
    if response.has_header("Location"):
        answer["location"] = response["Location"]
    return answer


def is_json(media_type: str) -> bool:
    """Whether a body of ``media_type`` is JSON (``application/json``, HAL's and JSON:API's
    ``+json`` types)."""
    return media_type == "application/json" or media_type.endswith("+json")


def change_event(
    head: dict[str, Any], status: int, content: bytes, media_type: str, etag: str | None = None
) -> str:
    """A ``change`` event, the one codec of shared and private ones: ``head`` (``event``,
    ``url``, a private subscription's ``id``) and ``status``; a 200 carries ``etag`` and
    ``data`` as a first answer does (``answer_of``): a JSON body spliced in as rendered, so
    the event carries the bytes a GET returns, any other (CSV, YAML) as a JSON string, an
    empty one as ``null``; other statuses carry ``error``. A shared change spliced a CSV body
    in raw (no JSON at all), and a private one sent a ``+json`` body as a string (DRF
    probe)."""
    head = {**head, "status": status}
    if status != 200:
        head["error"] = (
            "server error"
            if status >= 500
            else _detail_of(content, media_type) or _phrase(status)
        )
        return json.dumps(head)
    head["etag"] = etag
    if not content:
        data = "null"
    elif is_json(media_type):
        data = content.decode("utf-8", "replace")
    else:
        data = json.dumps(content.decode("utf-8", "replace"))
    return json.dumps(head)[:-1] + ', "data": ' + data + "}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status of the view's own
        return f"status {status}"


def change_message(sub: Mapping[str, Any], response: HttpResponse) -> tuple[str, str]:
    """The ``change`` event for one re-rendered private subscription, and its version."""
    head = {"event": "change", "id": sub["id"], "url": sub["url"]}
    status = response.status_code
    media_type = _media_type(response)
    if status != 200:
        return change_event(head, status, response.content, media_type), f"status-{status}"
    reason = too_large(response)
    if reason is not None:
        return json.dumps({**head, "status": 413, "error": reason}), "status-413"
    etag = response.get("ETag") or make_etag(response.content)
    return change_event(head, 200, response.content, media_type, etag), etag


REVOKED_ERROR = "the subscription's credentials are no longer valid"


def refusal_error(response: HttpResponse) -> str:
    """The ``error`` of an ``end`` for a re-render refused 401 or 403: what the refusal says
    (DRF's ``detail``), as a fresh GET would. An object permission lost with the token still
    valid was told its credentials were no longer valid (DRF probe)."""
    return _detail(response) or REVOKED_ERROR


def _detail(response: HttpResponse) -> str | None:
    """DRF's ``detail`` in a refusal's JSON body: what a fresh GET is told."""
    return _detail_of(response.content, _media_type(response))


def _detail_of(content: bytes, media_type: str) -> str | None:
    if not is_json(media_type):
        return None
    try:
        detail = json.loads(content).get("detail")
    except (ValueError, AttributeError):
        return None
    return detail[:200] if isinstance(detail, str) and detail else None


def refused_answer(message_id: Any, response: HttpResponse) -> dict[str, Any]:
    """:func:`answer_of` for a subscription refused by its first GET (a 404, a 403): with
    the ``error`` every refused message carries (what a fresh GET is told, DRF's
    ``detail``, else the status's reason), besides the ``data`` a REST answer has; nothing
    of the subscription is kept (publishing probe)."""
    answer = answer_of(message_id, response)
    if "error" not in answer:
        reason = _detail(response) or response.reason_phrase
        answer["error"] = f"not subscribed: {reason}"[:200]
    return answer


def end_message(sub: Mapping[str, Any], status: int, error: str = REVOKED_ERROR) -> str:
    """The ``end`` event of a subscription that a fresh GET no longer serves (by default:
    its credentials no longer name its subscriber)."""
    return json.dumps(
        {"event": "end", "id": sub["id"], "url": sub["url"], "status": status, "error": error}
    )
