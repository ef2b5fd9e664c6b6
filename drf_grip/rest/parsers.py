"""A view's request parsers, with a body nested too deeply refused as bad input.

Python's JSON parser recurses once per level of nesting and raises ``RecursionError`` past
the interpreter's limit (about a thousand levels on 3.11 and 3.12), which DRF's
``JSONParser`` lets through as a 500 with a traceback per request (hostile-input probe:
100,000 nested ``[``). It is the client's bad input: a ``ParseError`` (400), worded as
the gateway words it for a message (``grip.websocket_request.decode_json``).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError

from ..grip.websocket_request import TOO_DEEP

__all__ = ["bounded"]


class _Bounded:
    """``parser`` as it is, but for ``RecursionError`` in :meth:`parse`."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return self._parser.parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None


def bounded(parsers: list[Any]) -> list[Any]:
    """``parsers``, each refusing a body nested too deeply with a 400."""
    return [_Bounded(parser) for parser in parsers]
