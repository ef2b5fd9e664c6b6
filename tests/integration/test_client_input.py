"""Conformance: what a plain HTTP client may not do, through Pushpin and the embedded proxy alike."""

from __future__ import annotations

import httpx
import pytest
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from drf_grip.testing.proxies import ProxyUnderTest

SEEN: list[dict[str, str]] = []


@csrf_exempt
def record(request: HttpRequest) -> JsonResponse:
    headers = {k: v for k, v in request.META.items() if k.startswith("HTTP_")}
    SEEN.append(headers)
    return JsonResponse({"headers": headers, "wscontext": request.wscontext is not None})


urlpatterns = [path("", include("tests.urls")), path("record/", record)]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.timeout(60)]


@pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
def test_plain_request_of_websocket_events_gets_403_and_never_reaches_django(
    grip_proxy: ProxyUnderTest, method: str
):
    SEEN.clear()
    response = httpx.request(
        method,
        grip_proxy.url + "/record/",
        content=b"OPEN\r\n",
        headers={"Content-Type": "application/websocket-events", "Connection-Id": "mallory-1"},
    )
    assert response.status_code == 403
    assert SEEN == []


def test_client_grip_headers_are_not_forwarded(grip_proxy: ProxyUnderTest):
    # Pushpin forwards a plain request's Connection-Id; the embedded proxy drops it
    # (tests/proxy/test_client_input.py). Either way no WebSocket context comes of it.
    response = httpx.get(
        grip_proxy.url + "/record/",
        headers={"Connection-Id": "mallory-1", "Grip-Last": "todos; last-id=9", "Grip-Feature": "evil"},
    )
    seen = response.json()["headers"]
    assert "HTTP_GRIP_LAST" not in seen
    assert "evil" not in seen.get("HTTP_GRIP_FEATURE", "")
    assert response.json()["wscontext"] is False


@pytest.mark.parametrize("path", ["/seed/stream/", "/seed/longpoll/", "/record/"])
def test_a_websocket_to_a_view_made_for_http_is_refused_with_a_4xx(
    grip_proxy: ProxyUnderTest, path: str, caplog: pytest.LogCaptureFixture
):
    """django-grip's README stream and long-poll views take POSTs and read
    ``request.POST['data']``: a WebSocket handshake to them reached the view as a POST of
    events and was refused with 500, an "Internal Server Error" logged (seeds probe). A view
    made for HTTP only that fails on a handshake refuses it with 400; one that answers
    (``record``) refuses it as a view that did not accept it, 403."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(grip_proxy.ws_url + path, proxy=None, open_timeout=10)
    assert 400 <= refused.value.response.status_code < 500, refused.value.response
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
