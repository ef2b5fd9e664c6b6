"""A published ``http-response``'s ``body-patch``: a JSON Patch (RFC 6902) applied to the held
response's JSON body, as Pushpin 1.36 applies it (handler/httpsession.cpp, applyBodyPatch;
handler/jsonpatch.cpp; handler/jsonpointer.cpp).

What Pushpin does, and so this module:

* the held body must be a JSON object or array, and so must the patched one;
* ops ``add``, ``remove``, ``replace``, ``move``, ``copy`` and ``test``, in order; the first
  that fails fails the whole patch (any other op is "unsupported");
* a pointer must start with ``/``, and ``/`` alone is the whole document (RFC 6901 would
  read it as the member ``""``); an empty reference (``/a//b``) is refused;
* an array index must exist, ``-`` (the end) aside, and ``add`` at an index *replaces* the
  element there rather than inserting before it;
* the result is written compact, object members sorted by name (Qt's QVariantMap), with
  the held body's final ``\\r\\n`` or ``\\n`` kept.

A patch that fails is a 502 for the client (httpsession.cpp: an empty body is a filter
error, and a held response's error is ``502 Bad Gateway``): :class:`BodyPatchError`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BodyPatchError", "apply_body_patch", "patch"]

_INDEX = re.compile(r"[+-]?[0-9]{1,10}")
_MISSING = object()
_END = -1  # the reference "-": past an array's last element


class BodyPatchError(ValueError):
    """The patch cannot be applied; the message says why (Pushpin's wording)."""


def apply_body_patch(body: bytes, ops: Sequence[Any]) -> bytes:
    """The held ``body`` patched by ``ops``; raises :class:`BodyPatchError`."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BodyPatchError("the held response's body is not JSON") from None
    if not isinstance(document, (dict, list)):
        raise BodyPatchError("the held response's body is not a JSON object or array")
    patched = patch(document, ops)
    if not isinstance(patched, (dict, list)):
        raise BodyPatchError("the patched body is not a JSON object or array")
    out = json.dumps(patched, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for end in (b"\r\n", b"\n"):
        if body.endswith(end):
            return out.encode("utf-8") + end
    return out.encode("utf-8")


def patch(document: Any, ops: Sequence[Any]) -> Any:
    """``document`` (not changed) with ``ops`` applied; raises :class:`BodyPatchError`."""
    root = [copy.deepcopy(document)]  # a box, so that "/" can replace the whole document
    for op in ops:
        _apply(root, op)
    return root[0]


def _field(op: Mapping[str, Any], name: str) -> str:
    if name not in op:
        raise BodyPatchError(f"op does not contain '{name}'")
    value = op[name]
    if not isinstance(value, str):
        raise BodyPatchError(f"op contains '{name}' with wrong type")
    return value


def _value(op: Mapping[str, Any]) -> Any:
    if "value" not in op:
        raise BodyPatchError("op does not contain 'value'")
    return copy.deepcopy(op["value"])  # the published ops are shared by every subscriber


def _apply(root: list[Any], op: Any) -> None:
    if not isinstance(op, Mapping):
        raise BodyPatchError("invalid op")
    kind = _field(op, "op")
    path = _field(op, "path")
    # jsonpatch.cpp: every op but move resolves its path before anything else.
    refs = _resolve(root, path) if kind != "move" else []
    if kind == "add":
        _set(root, refs, _value(op))
    elif kind == "remove":
        if not refs:
            raise BodyPatchError("cannot remove the whole document")
        _exists_or_fail(root, refs)
        _take(root, refs)
    elif kind == "replace":
        value = _value(op)
        _exists_or_fail(root, refs)
        _set(root, refs, value)
    elif kind == "move":
        _move(root, path, _field(op, "from"))
    elif kind == "copy":
        source = _resolve(root, _field(op, "from"))
        _exists_or_fail(root, source)
        value = copy.deepcopy(_get(root, source))
        _set(root, _resolve(root, path), value)
    elif kind == "test":
        if not _equal(_get(root, refs), _value(op)):
            raise BodyPatchError("tested values are not equal")
    else:
        raise BodyPatchError(f"unsupported op: {kind}")


def _move(root: list[Any], path: str, source_path: str) -> None:
    if _within(path, source_path):
        raise BodyPatchError("cannot move location into itself")
    source = _resolve(root, source_path)
    _exists_or_fail(root, source)
    value = _take(root, source)
    _set(root, _resolve(root, path), value)  # resolved after the take, as Pushpin does


def _within(path: str, source: str) -> bool:
    """Whether ``path`` lies inside ``source`` (jsonpointer.cpp, isWithin)."""
    if not source.startswith("/") or not path.startswith("/") or source == path:
        return False
    outer, inner = source.split("/")[1:], path.split("/")[1:]
    return len(outer) < len(inner) and inner[: len(outer)] == outer


# -- pointers (jsonpointer.cpp) ---------------------------------------------------------------
# A resolved pointer is its list of references: member names (str) and array indexes (int,
# _END for "-"); an empty list is the whole document.


def _resolve(root: list[Any], pointer: str) -> list[str | int]:
    if not pointer.startswith("/"):
        raise BodyPatchError("pointer must start with /")
    if pointer == "/":
        return []
    refs: list[str | int] = []
    node = root[0]
    for part in pointer.split("/")[1:]:
        if not part:
            raise BodyPatchError("reference cannot be empty")
        if refs:
            node = _step(node, refs[-1])
        name = part.replace("~1", "/").replace("~0", "~")
        refs.append(_reference(node, name))
    return refs


def _step(node: Any, ref: str | int) -> Any:
    if isinstance(ref, str):
        if ref not in node:
            raise BodyPatchError(f"cannot step into undefined reference: key={ref}")
        return node[ref]
    if not 0 <= ref < len(node):
        raise BodyPatchError(f"cannot step into undefined reference: index={ref}")
    return node[ref]


def _reference(node: Any, name: str) -> str | int:
    if isinstance(node, dict):
        return name
    if not isinstance(node, list):
        raise BodyPatchError("non-container value cannot have child reference")
    if name == "-":
        return _END
    if not _INDEX.fullmatch(name):
        raise BodyPatchError("index must be an integer")
    index = int(name)
    if not 0 <= index < len(node):
        raise BodyPatchError("index out of range")
    return index


def _parent(root: list[Any], refs: list[str | int]) -> Any:
    """The container the last reference is in; a failure when the way there has gone."""
    node = root[0]
    for ref in refs[:-1]:
        if not isinstance(node, (dict, list)) or isinstance(ref, str) != isinstance(node, dict):
            raise BodyPatchError("location does not exist")
        node = _step(node, ref)
    last = refs[-1]
    if isinstance(last, str) != isinstance(node, dict) or not isinstance(node, (dict, list)):
        raise BodyPatchError("location does not exist")
    return node


def _exists(root: list[Any], refs: list[str | int]) -> bool:
    if not refs:
        return True
    try:
        parent = _parent(root, refs)
    except BodyPatchError:
        return False
    last = refs[-1]
    return last in parent if isinstance(last, str) else 0 <= last < len(parent)


def _exists_or_fail(root: list[Any], refs: list[str | int]) -> None:
    if not _exists(root, refs):
        raise BodyPatchError("location does not exist")


def _get(root: list[Any], refs: list[str | int]) -> Any:
    """The value there, or ``_MISSING``."""
    if not refs:
        return root[0]
    if not _exists(root, refs):
        return _MISSING
    return _parent(root, refs)[refs[-1]]


def _take(root: list[Any], refs: list[str | int]) -> Any:
    """Remove and return; the whole document is returned and stays (jsonpointer.cpp)."""
    if not refs:
        return copy.deepcopy(root[0])
    return _parent(root, refs).pop(refs[-1])


def _set(root: list[Any], refs: list[str | int], value: Any) -> None:
    if not refs:
        root[0] = value
        return
    parent, last = _parent(root, refs), refs[-1]
    if isinstance(last, str):
        parent[last] = value
    elif last == _END:
        parent.append(value)
    elif 0 <= last < len(parent):
        parent[last] = value  # Pushpin replaces the element (RFC 6902 would insert)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality for ``test``: a missing location equals nothing; booleans are not
    numbers; numbers compare by value."""
    if a is _MISSING:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
