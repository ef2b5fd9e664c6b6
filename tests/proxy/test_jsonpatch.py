"""A published body-patch, applied as Pushpin 1.36 applies it (handler/jsonpatch.cpp,
handler/jsonpointer.cpp; its tests are src/handler/tests/jsonpatchtest)."""

from __future__ import annotations

import pytest

from drf_grip.proxy.jsonpatch import BodyPatchError, apply_body_patch, patch


@pytest.mark.parametrize(
    "document, ops, expected",
    [
        ({"a": 1}, [{"op": "add", "path": "/b", "value": [2]}], {"a": 1, "b": [2]}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
        # Pushpin replaces the element at an index (RFC 6902 would insert before it).
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 9}], {"a": [9, 2]}),
        ({"a": 1}, [{"op": "add", "path": "/", "value": [1]}], [1]),  # "/" is the document
        ({"a": {"b": 1}}, [{"op": "remove", "path": "/a/b"}], {"a": {}}),
        ([1, 2, 3], [{"op": "remove", "path": "/1"}], [1, 3]),
        ({"a": 1}, [{"op": "replace", "path": "/a", "value": None}], {"a": None}),
        ({"a/b": 1, "m~n": 2}, [{"op": "replace", "path": "/a~1b", "value": 3},
                                {"op": "remove", "path": "/m~0n"}], {"a/b": 3}),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a/b", "path": "/c"}], {"a": {}, "c": 1}),
        ({"a": [1]}, [{"op": "copy", "from": "/a", "path": "/b"},
                      {"op": "add", "path": "/b/-", "value": 2}], {"a": [1], "b": [1, 2]}),
        ({"a": {"x": [1, 2.0]}}, [{"op": "test", "path": "/a", "value": {"x": [1, 2]}}],
         {"a": {"x": [1, 2.0]}}),
    ],
)
def test_ops(document, ops, expected):
    before = repr(document)
    assert patch(document, ops) == expected
    assert repr(document) == before  # the held body is shared: never changed in place


@pytest.mark.parametrize(
    "ops, message",
    [
        ([5], "invalid op"),
        ([{"path": "/a"}], "op does not contain 'op'"),
        ([{"op": "add", "path": 1, "value": 1}], "op contains 'path' with wrong type"),
        ([{"op": "add", "path": "/b"}], "op does not contain 'value'"),
        ([{"op": "remove", "path": "/zz"}], "location does not exist"),
        ([{"op": "replace", "path": "/zz", "value": 1}], "location does not exist"),
        ([{"op": "remove", "path": "/"}], "cannot remove the whole document"),
        ([{"op": "add", "path": "", "value": 1}], "pointer must start with /"),
        ([{"op": "add", "path": "/a//b", "value": 1}], "reference cannot be empty"),
        ([{"op": "add", "path": "/x/y", "value": 1}], "cannot step into undefined reference"),
        ([{"op": "add", "path": "/a/y", "value": 1}], "non-container value"),
        ([{"op": "add", "path": "/l/x", "value": 1}], "index must be an integer"),
        ([{"op": "add", "path": "/l/2", "value": 1}], "index out of range"),
        ([{"op": "move", "from": "/l", "path": "/l/0"}], "cannot move location into itself"),
        ([{"op": "copy", "from": "/zz", "path": "/b"}], "location does not exist"),
        ([{"op": "test", "path": "/a", "value": True}], "tested values are not equal"),
        ([{"op": "test", "path": "/zz", "value": None}], "tested values are not equal"),
        ([{"op": "_get", "path": "/a"}], "unsupported op: _get"),
        # Ops apply in order; a later failure fails the whole patch.
        ([{"op": "add", "path": "/b", "value": 1}, {"op": "test", "path": "/b", "value": 2}],
         "tested values are not equal"),
    ],
)
def test_failures(ops, message):
    with pytest.raises(BodyPatchError, match=message):
        patch({"a": 1, "l": [0, 1]}, ops)


def test_the_body_is_written_compact_sorted_and_keeps_its_final_newline():
    ops = [{"op": "add", "path": "/a", "value": "é"}]
    assert apply_body_patch(b'{"z": 1}\r\n', ops) == '{"a":"é","z":1}\r\n'.encode()
    assert apply_body_patch(b'{"z": 1}\n', ops) == '{"a":"é","z":1}\n'.encode()
    assert apply_body_patch(b'{"z": 1}', ops) == '{"a":"é","z":1}'.encode()


@pytest.mark.parametrize(
    "body, ops, message",
    [
        (b"<html>", [], "not JSON"),
        (b"\xff", [], "not JSON"),
        (b"12", [], "not a JSON object or array"),
        (b"{}", [{"op": "add", "path": "/", "value": "x"}], "patched body is not"),
    ],
)
def test_bodies_that_cannot_be_patched(body, ops, message):
    with pytest.raises(BodyPatchError, match=message):
        apply_body_patch(body, ops)
