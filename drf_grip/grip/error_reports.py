"""GRIP's secrets kept out of Django's error reports.

Django's debug page and the reports ``AdminEmailHandler`` mails show every setting and every
request header except those whose names match ``SafeExceptionReporterFilter.hidden_settings``
(``API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE``, and ``AUTH`` from Django 5.0):
``GRIP_URL`` (its ``key=`` is the proxy's signing key) and ``HTTP_GRIP_SIG`` (a signed
token that makes a request count as proxied for up to an hour) match none, and neither did
``HTTP_AUTHORIZATION`` before Django 5.0. A black-box probe found both on the debug page of
a request with a bad ``Host``. So the names of GRIP's settings and headers join the pattern.
"""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

__all__ = ["hide_grip_secrets"]

#: Settings and ``request.META`` names whose values never appear in an error report:
#: ``GRIP_URL``, ``GRIP_PROXIES``, ``DRF_GRIP`` (its ``EMBEDDED_URL`` may carry a key),
#: ``HTTP_GRIP_SIG``, django-grip's ``PUBLISH_SERVERS``, ``HTTP_AUTHORIZATION``, and a
#: cache's ``LOCATION`` (the Redis URL of drf-grip's state carries its password; Django
#: hides a nested value by its key's name).
HIDDEN = "GRIP|PUBLISH_SERVERS|AUTH|LOCATION"


def hide_grip_secrets() -> None:
    """Add :data:`HIDDEN` to the names Django's reporter filter hides; subclasses (a
    project's ``DEFAULT_EXCEPTION_REPORTER_FILTER``) that keep the attribute inherit it."""
    cls = SafeExceptionReporterFilter
    current = cls.hidden_settings
    pattern = current.pattern
    if pattern.endswith(f"|{HIDDEN}"):  # ready() ran already (a test's second setup)
        return
    cls.hidden_settings = re.compile(f"{pattern}|{HIDDEN}", current.flags)
