"""URLs of the django-grip seed examples (``seed_views``), written against drf_grip.

The README's clients post plain form data without a CSRF token, so the POST views are
exempted here, leaving the views themselves as the README wrote them.
"""

from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from . import seed_views

urlpatterns = [
    path("stream/", csrf_exempt(seed_views.stream)),
    path("longpoll/", csrf_exempt(seed_views.longpoll)),
    path("longpoll-5s/", seed_views.longpoll_5s),
    path("echo/", seed_views.echo),
    path("broadcast/", csrf_exempt(seed_views.broadcast)),
]
