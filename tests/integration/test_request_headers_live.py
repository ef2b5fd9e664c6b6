"""An empty ``If-Match`` on a write to the test app's realtime view, through a real Pushpin
and the embedded proxy: Pushpin 1.36 does not pass a request header with an empty value to
the origin (tests/proxy/test_request_headers.py), so the view never sees the precondition
and applies the write. The embedded proxy passed it on, and the view answered 412."""

from __future__ import annotations

import httpx
import pytest

from drf_grip.testing.proxies import ProxyUnderTest
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_patch_with_an_empty_if_match_is_applied_behind_either_proxy(
    grip_proxy: ProxyUnderTest,
) -> None:
    todo = Todo.objects.create(title="a")
    url = f"{grip_proxy.url}/api/todos/{todo.pk}/"
    response = httpx.patch(url, json={"title": "mine"}, headers={"If-Match": ""}, timeout=10)
    assert response.status_code == 200, response.text
    assert Todo.objects.get(pk=todo.pk).title == "mine"
