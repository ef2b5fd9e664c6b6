"""Day-one mistakes are named, not silent (a probe that set up a project from the README and
left out one step at a time): the middleware, the app, the app's place."""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework import viewsets

from drf_grip import RealtimeMixin
from tests.testapp.models import Todo
from tests.testapp.realtime_views import TodoSerializer


def _ids() -> set[str]:
    return {m.id for m in checks.run_checks() if m.id and m.id.startswith("drf_grip.")}


def test_realtime_views_without_grip_middleware_are_named(settings):
    assert "drf_grip.W004" not in _ids()
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "GripMiddleware" not in m]
    (warning,) = [m for m in checks.run_checks() if m.id == "drf_grip.W004"]
    assert "GripMiddleware" in warning.msg and "TodoViewSet" in warning.hint


def test_another_apps_runserver_without_a_proxy_is_named(monkeypatch):
    from django.core import management

    assert "drf_grip.W005" not in _ids()  # drf_grip comes first in the test settings
    commands = {**management.get_commands(), "runserver": "django.contrib.staticfiles"}
    monkeypatch.setattr(management, "get_commands", lambda: commands)
    (warning,) = [m for m in checks.run_checks() if m.id == "drf_grip.W005"]
    assert "django.contrib.staticfiles" in warning.msg and "before" in warning.hint
    with override_settings(GRIP_URL="http://127.0.0.1:5561/?iss=pushpin&key=k"):
        assert "drf_grip.W005" not in _ids()  # behind Pushpin any runserver serves


def test_a_realtime_view_without_the_app_installed_fails_loudly(monkeypatch):
    """Without ``drf_grip`` in INSTALLED_APPS no signal is connected: every change was
    dropped while reads answered (a POST published nothing, and no check said so)."""
    from django.apps import apps

    installed = apps.is_installed
    monkeypatch.setattr(apps, "is_installed", lambda name: name != "drf_grip" and installed(name))
    with pytest.raises(ImproperlyConfigured, match="'drf_grip' is not in INSTALLED_APPS"):

        class Unpublished(RealtimeMixin, viewsets.ModelViewSet):
            queryset = Todo.objects.all()
            serializer_class = TodoSerializer


@pytest.mark.parametrize("spoil", ["escaped", "certificate"])
def test_a_verify_key_that_does_not_load_is_named(settings, spoil):
    """GRIP probe: a PEM whose line breaks came as ``\\n`` from an environment variable, or
    a certificate given for the key, made every signed request direct, without a word."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    settings.GRIP_URL = "https://api.fastly.com/service/abc?key=token&verify-iss=fastly:abc"
    settings.GRIP_VERIFY_KEY = pem
    assert "drf_grip.W006" not in _ids()
    spoiled = {
        "escaped": pem.replace("\n", "\\n"),
        "certificate": pem.replace("PUBLIC KEY", "CERTIFICATE"),
    }[spoil]
    settings.GRIP_VERIFY_KEY = spoiled
    (warning,) = [m for m in checks.run_checks() if m.id == "drf_grip.W006"]
    assert "count as direct" in warning.msg and spoiled not in warning.msg + warning.hint


@pytest.fixture
def registered_views():
    """Views defined by a test are forgotten after it (the registry is per process)."""
    from drf_grip.rest import registry

    before = {model: list(views) for model, views in registry._views.items()}
    yield
    registry._views.clear()
    registry._views.update(before)


def test_a_partition_path_that_does_not_reach_the_user_is_named(registered_views):
    """DRF ecosystem probe: ``realtime_partition = "project"`` on a nested
    ``/projects/<project_pk>/tasks/`` list (drf-nested-routers) held at the requesting
    user's partition (``anonymous``) and a new task was published to its project's: no
    held client ever woke, and nothing said why."""
    from tests.testapp.drf_views import ProjectTasks, TaskSerializer
    from tests.testapp.models import Task

    assert "drf_grip.E001" not in _ids()  # "project__owner" reaches the user

    class TasksByProject(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        serializer_class = TaskSerializer
        realtime_model = Task
        realtime_partition = "project"

    class TasksByTitle(TasksByProject):
        realtime_partition = "titel"  # not a field at all

    class TasksByProjectHooks(TasksByProject):
        def get_realtime_partition(self):
            return str(self.kwargs["project_pk"])

    found = [m for m in checks.run_checks() if m.id == "drf_grip.E001"]
    assert sorted(m.obj.__name__ for m in found) == ["TasksByProject", "TasksByTitle"]
    assert "'project'" in found[0].msg and "get_realtime_partition()" in found[0].hint
    assert ProjectTasks.realtime_partition == "project__owner"
