"""``manage.py grip_publish CHANNEL [CONTENT]``: publish one item from the shell, and wait.

Without ``--format`` the item carries every format that supports the action, so one command
reaches long-polls, streams and WebSockets alike: ``send`` -> http-response, http-stream and
ws-message; ``hint`` -> http-response and http-stream; ``close`` -> http-stream and
ws-message (Pushpin 1.36 has no hint for WebSockets and no close for a long-poll).
CONTENT ``-`` reads standard input. The channel gets ``GRIP_PREFIX`` like any ``publish()``.

HTTP payloads (the long-poll body, the stream content) end with a newline, added unless the
content has one, so ``grip_publish test hello`` shows a line in ``curl``, as Pushpin's own
``pushpin-publish`` does; ``--no-eol`` publishes the content as given. WebSocket messages are
framed and get none.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...grip.items import make_item
from ...grip.publisher import PublishError, get_publisher

__all__ = ["Command"]

# Which actions each format takes in Pushpin 1.36 (checked by running it).
ACTIONS: dict[str, tuple[str, ...]] = {
    "http-response": ("send", "hint"),
    "http-stream": ("send", "hint", "close"),
    "ws-message": ("send", "close"),
}


class Command(BaseCommand):
    help = (
        "Publish CONTENT to CHANNEL on every configured GRIP endpoint and wait for the result. "
        "Without --format, every format that supports --action is sent."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("channel", help="channel name, without GRIP_PREFIX")
        parser.add_argument(
            "content", nargs="?", help="the content to send ('-' reads stdin); not for hint/close"
        )
        parser.add_argument(
            "--format",
            dest="formats",
            action="append",
            choices=sorted(ACTIONS),
            help="a format to publish (repeatable); default: all that support the action",
        )
        parser.add_argument("--action", choices=("send", "hint", "close"), default="send")
        parser.add_argument("--id", help="id of this item (the channel's new version)")
        parser.add_argument("--prev-id", dest="prev_id", help="id of the item before this one")
        parser.add_argument(
            "--header",
            dest="headers",
            action="append",
            default=[],
            metavar="'NAME: VALUE'",
            help="an http-response header (repeatable); publish ETag and Content-Type, since "
            "Pushpin merges published headers onto the held response's",
        )
        parser.add_argument("--code", type=int, help="http-response status code (default 200)")
        parser.add_argument(
            "--no-eol",
            dest="no_eol",
            action="store_true",
            help="do not end HTTP payloads with a newline (WebSocket messages never get one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action: str = options["action"]
        names: list[str] = options["formats"] or [n for n, a in ACTIONS.items() if action in a]
        for name in names:
            if action not in ACTIONS[name]:
                raise CommandError(f"format {name} does not support action {action!r}")
        content: str | None = options["content"]
        if content == "-":
            content = sys.stdin.read()
        if action == "send" and content is None:
            raise CommandError("CONTENT is required to send")
        if action != "send" and content is not None:
            raise CommandError(f"CONTENT is not used with --action {action}")

        formats = {n: self._export(n, action, content, options) for n in dict.fromkeys(names)}
        item = make_item(options["channel"], formats, options["id"], options["prev_id"])
        try:
            destinations = get_publisher().send([item])
        except PublishError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Published {'a ' + action if action != 'send' else 'an item'} to "
            f"{item['channel']!r} ({', '.join(formats)}) "
            f"at {', '.join(destinations)}"
        )

    @staticmethod
    def _export(
        name: str, action: str, content: str | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        if action != "send":
            return {"action": action}
        if name == "ws-message":
            return {"content": content}
        if content is not None and not options["no_eol"] and not content.endswith("\n"):
            content += "\n"
        if name == "http-response":
            out: dict[str, Any] = {"body": content}
            headers = dict(_parse_header(h) for h in options["headers"])
            if headers:
                out["headers"] = headers
            if options["code"] is not None:
                out["code"] = options["code"]
            return out
        return {"content": content}


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise CommandError(f"--header needs 'NAME: VALUE', got {value!r}")
    return name.strip(), rest.strip()
