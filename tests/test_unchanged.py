"""The memo of private re-requests that cannot have changed (``drf_grip/rest/unchanged.py``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.test import RequestFactory

from drf_grip.rest.unchanged import (
    covered_ids,
    held_behind,
    recall,
    remember,
    request_identity,
    unchanged_etag,
)

factory = RequestFactory()
alice = SimpleNamespace(pk=1)
bob = SimpleNamespace(pk=2)


def identity(user=alice, **headers: str) -> str:
    return request_identity(factory.get("/api/todos/?done=1", **headers), user)


def test_a_proxy_attempt_is_the_same_request() -> None:
    first = identity(HTTP_AUTHORIZATION="Token a", HTTP_IF_NONE_MATCH='"x"')
    again = identity(HTTP_AUTHORIZATION="Token a", HTTP_IF_NONE_MATCH='"y"',
                     HTTP_GRIP_SIG="other-jwt", HTTP_GRIP_LAST="drf.todo; last-id=3")
    assert first == again


@pytest.mark.parametrize("other", [
    {"HTTP_AUTHORIZATION": "Token b"},
    {"HTTP_AUTHORIZATION": "Token a", "HTTP_ACCEPT_LANGUAGE": "fr"},
    {"HTTP_AUTHORIZATION": "Token a", "user": bob},
])
def test_other_credentials_headers_or_user_are_another_request(other: dict) -> None:
    user = other.pop("user", alice)
    assert identity(HTTP_AUTHORIZATION="Token a") != identity(user, **other)


def test_an_answer_holds_for_newer_ids_its_render_covered() -> None:
    cache.clear()
    ranges = covered_ids({"drf.todo": "5", "drf.todo.3": None}, {"drf.todo": "7", "drf.todo.3": "9"})
    assert ranges == {"drf.todo": (5, 7), "drf.todo.3": (9, 9)}
    remember("id1", '"e"', ranges, 60)
    # The next hold names the ids the proxy reported: an unknown cause after it renders.
    assert unchanged_etag("id1", {"drf.todo": "7"}) == ('"e"', {"drf.todo": (7, 7), "drf.todo.3": (9, 9)})
    assert unchanged_etag("id1", {"drf.todo": "6", "drf.todo.3": "9"})[0] == '"e"'
    assert unchanged_etag("id1", {"drf.todo": "5"}) is None  # nothing newer: cause unknown
    assert unchanged_etag("id1", {"drf.todo": "8"}) is None  # committed after the render
    assert unchanged_etag("id1", {"drf.todo": "4"}) is None  # another process's counter
    assert unchanged_etag("id1", {"drf.todo": "x7"}) is None
    assert unchanged_etag("id1", {"drf.other": "7"}) is None
    assert unchanged_etag("id1", {}) is None
    assert unchanged_etag("id2", {"drf.todo": "7"}) is None
    assert covered_ids({"drf.todo": "9"}, {"drf.todo": "7", "drf.x": None}) == {}


def test_a_re_request_at_the_held_ids_with_a_counter_past_them_is_held_behind() -> None:
    """The proxy's retry of a hold that a change overtook (``RealtimeMixin``: answered
    without a hold, Pushpin 1.36 can lose a second hold of it)."""
    cache.clear()
    remember("id1", '"e"', {"drf.todo": (5, 5), "drf.todo.3": (9, 9)}, 60, own=True)
    found = recall("id1")
    assert held_behind(found, {"drf.todo": "5"}, {"drf.todo": "6", "drf.todo.3": "9"})
    assert held_behind(found, {"drf.todo": "5", "drf.todo.3": "9"}, {"drf.todo": "6"})
    # Nothing newer yet (Pushpin's retry of a channel's first subscription): held again.
    assert not held_behind(found, {"drf.todo": "5"}, {"drf.todo": "5"})
    # The conflicting item is one the hold's render covered (held at the id a proxy had
    # confirmed while a change committed before the render was on its way): held again.
    remember("id3", '"e"', {"drf.todo": (5, 7)}, 60, own=True)
    covering = recall("id3")
    assert not held_behind(covering, {"drf.todo": "5"}, {"drf.todo": "7"})
    assert held_behind(covering, {"drf.todo": "5"}, {"drf.todo": "8"})
    # A newer id than the hold's (a hint the client took), or one this request never held.
    assert not held_behind(found, {"drf.todo": "6"}, {"drf.todo": "7"})
    assert not held_behind(found, {"drf.other": "5"}, {"drf.other": "6"})
    assert not held_behind(found, {"drf.todo": "x5"}, {"drf.todo": "6"})
    assert not held_behind(recall("id2"), {"drf.todo": "5"}, {"drf.todo": "6"})
    assert not held_behind(found, {}, {"drf.todo": "6"})


def test_a_retry_for_a_change_committed_before_the_render_is_not_held_behind() -> None:
    """The change worker moves a counter after the commit: a change committed before the
    render, whose counter moved after the render read it, is one the render showed. Before,
    its retry was answered at once with a 304 and no hold (``bench/probes.py
    hold-after-write``: 1 long-poll in 660)."""
    from drf_grip.rest.versions import note_committed

    cache.clear()
    read_at = 1_000.0
    remember("own", '"e"', {"drf.todo": (5, 5), "drf.todo.3": (9, 9)}, 60, own=True,
             read_at=read_at)
    found = recall("own")
    assert found[3] == read_at
    note_committed("drf.todo", "6", read_at - 0.01)
    assert not held_behind(found, {"drf.todo": "5"}, {"drf.todo": "6"})
    # Both channels moved, each by a change committed before the read.
    both = {"drf.todo": "5", "drf.todo.3": "9"}
    note_committed("drf.todo.3", "10", read_at - 0.02)
    assert not held_behind(found, both, {"drf.todo": "6", "drf.todo.3": "10"})
    # Committed after the read: the render may not show it.
    note_committed("drf.todo.3", "10", read_at + 0.01)
    assert held_behind(found, both, {"drf.todo": "6", "drf.todo.3": "10"})
    # Two writes committed before the read, their counters moved after it: the last one's
    # commit time stands for both (one change worker moves counters in commit order).
    note_committed("drf.todo", "7", read_at - 0.01)
    assert not held_behind(found, {"drf.todo": "5"}, {"drf.todo": "7"})
    note_committed("drf.todo", "7", read_at + 0.01)
    assert held_behind(found, {"drf.todo": "5"}, {"drf.todo": "7"})
    # A record of another id, or no record at all (published by an earlier version, or by
    # other means).
    assert held_behind(found, {"drf.todo": "5"}, {"drf.todo": "6"})
    cache.clear()
    remember("own", '"e"', {"drf.todo": (5, 5)}, 60, own=True, read_at=read_at)
    assert held_behind(recall("own"), {"drf.todo": "5"}, {"drf.todo": "6"})
    # A hold remembered without the time of its read (an earlier version).
    note_committed("drf.todo", "6", read_at - 0.01)
    remember("unknown", '"e"', {"drf.todo": (5, 5)}, 60, own=True)
    assert held_behind(recall("unknown"), {"drf.todo": "5"}, {"drf.todo": "6"})


def test_a_re_request_at_the_held_ids_is_no_retry_after_a_while_or_of_a_re_request(
    monkeypatch,
) -> None:
    """Pushpin re-requests every client of a channel about 1 s after its first subscription,
    at the ids they hold; a hint dropped meanwhile leaves the counter past them. That is no
    retry of a conflicting hold: it renders and is held again as before, whether it comes
    long after the client's own request or soon after a hint's re-request was held."""
    import drf_grip.rest.unchanged as unchanged

    cache.clear()
    remember("own", '"e"', {"drf.todo": (5, 5)}, 60, own=True)
    remember("re-request", '"e"', {"drf.todo": (5, 5)}, 60)
    assert not held_behind(recall("re-request"), {"drf.todo": "5"}, {"drf.todo": "6"})
    found = recall("own")
    later = found[2] + unchanged.RETRY_WINDOW + 0.5
    monkeypatch.setattr(unchanged.time, "time", lambda: later)
    assert not held_behind(found, {"drf.todo": "5"}, {"drf.todo": "6"})
