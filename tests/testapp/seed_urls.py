"""URLs of the django-grip seed examples, written against drf_grip (views added by their tests)."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
