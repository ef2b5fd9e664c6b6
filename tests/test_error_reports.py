"""Django's error reports (the debug page, the mails ``AdminEmailHandler`` sends) never show
GRIP's secrets: the proxy key in ``GRIP_URL`` and a request's ``Grip-Sig``."""

from __future__ import annotations

import secrets
import sys

from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import path
from django.views.debug import ExceptionReporter

from drf_grip.test import grip_signature

# Made at run time: a literal would be on the page as a source line of this module.
KEY = secrets.token_hex(16)
TOKEN = secrets.token_hex(10)
GRIP_URL = f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}"


def broken(request):
    raise RuntimeError("the view failed")


def fine(request):
    return HttpResponse("ok")


urlpatterns = [path("broken/", broken), path("fine/", fine)]


def _secrets_in(text: str, sig: str) -> list[str]:
    return [name for name, value in (("key", KEY), ("Grip-Sig", sig), ("token", TOKEN))
            if value in text]


@override_settings(
    GRIP_URL=GRIP_URL,
    GRIP_PROXIES=[{"control_uri": "http://127.0.0.1:5561/", "key": KEY}],
    DRF_GRIP={"EMBEDDED_URL": f"http://127.0.0.1:8000/?key={KEY}"},
    ROOT_URLCONF=__name__,
    DEBUG=True,
)
def test_the_debug_page_of_a_proxied_request_shows_no_key_nor_signature():
    sig = grip_signature()
    client = Client(raise_request_exception=False)
    response = client.get(
        "/broken/", HTTP_GRIP_SIG=sig, HTTP_AUTHORIZATION=f"Token {TOKEN}"
    )
    assert response.status_code == 500
    page = response.content.decode()
    assert "the view failed" in page and "HTTP_GRIP_SIG" in page  # the page, redacted
    assert _secrets_in(page, sig) == []


def _report(request) -> ExceptionReporter:
    try:
        raise RuntimeError("in a view")
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info())


@override_settings(GRIP_URL=GRIP_URL, ROOT_URLCONF=__name__)
def test_the_mailed_report_shows_no_key_nor_signature():
    sig = grip_signature()
    request = RequestFactory().get(
        "/fine/", HTTP_GRIP_SIG=sig, HTTP_AUTHORIZATION=f"Token {TOKEN}"
    )
    reporter = _report(request)
    for text in (reporter.get_traceback_text(), reporter.get_traceback_html()):
        assert "GRIP_URL" in text
        assert _secrets_in(text, sig) == []


@override_settings(ROOT_URLCONF=__name__, DEBUG=True)
def test_the_debug_page_shows_no_password_of_the_state_caches_redis(settings):
    """drf-grip asks for its state in Redis, whose URL carries its password: the debug page
    listed ``CACHES`` whole (``LOCATION`` matches none of Django's hidden names)."""
    settings.CACHES = {
        **settings.CACHES,
        "realtime": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:{KEY}@127.0.0.1:1/0",
        },
    }
    response = Client(raise_request_exception=False).get("/broken/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "the view failed" in page and "CACHES" in page
    assert KEY not in page
