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
