"""Raw views that prove the test harness itself: no drf-grip code, GRIP headers by hand.

They let the harness be tested while the middleware and the DRF layer are written, and stay
as the simplest possible origin for Pushpin.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.gzip import gzip_page

__all__ = ["channel_only", "gzip_hold", "hold", "ping", "urlpatterns", "users"]


def ping(request: HttpRequest) -> JsonResponse:
    """Echo the ``Grip-Sig`` a GRIP proxy added (None when reached directly)."""
    return JsonResponse({"pong": True, "grip_sig": request.META.get("HTTP_GRIP_SIG")})


def users(request: HttpRequest) -> JsonResponse:
    """Usernames in the database: proves the server thread sees the test's committed rows."""
    names = list(get_user_model().objects.order_by("username").values_list("username", flat=True))
    return JsonResponse({"usernames": names})


def hold(request: HttpRequest, channel: str) -> HttpResponse:
    """A long-poll hold on ``channel``; the body is what the client gets on timeout."""
    response = HttpResponse("timeout\n", content_type="text/plain")
    response["Grip-Hold"] = "response"
    response["Grip-Channel"] = channel
    response["Grip-Timeout"] = "30"
    return response


def channel_only(request: HttpRequest, channel: str) -> HttpResponse:
    """``Grip-Channel`` (and a timeout) without ``Grip-Hold``: not a hold for Pushpin."""
    response = HttpResponse("not held\n", content_type="text/plain")
    response["Grip-Channel"] = channel
    response["Grip-Timeout"] = "30"
    return response


@gzip_page
def gzip_hold(request: HttpRequest, channel: str) -> HttpResponse:
    """``hold`` behind gzip (as under ``GZipMiddleware``), with a held body long enough to be
    compressed when the request accepts gzip."""
    response = hold(request, channel)
    response.content = b"timeout " + b"." * 400 + b"\n"
    return response


urlpatterns = [
    path("ping/", ping),
    path("gzip-hold/<str:channel>/", gzip_hold),
    path("channel-only/<str:channel>/", channel_only),
    path("users/", users),
    path("hold/<str:channel>/", hold),
]
