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


def test_a_partition_path_through_a_to_many_relation_is_named(registered_views):
    """``realtime_partition = "project__members"`` (a many-to-many to the user) passed the
    check; its objects were published to the partition "auth.User.None", the related
    manager's text, so a create or a member added woke nobody (visibility probe)."""
    from django.contrib.auth import get_user_model
    from rest_framework import serializers

    class UserSerializer(serializers.ModelSerializer):
        class Meta:
            model = get_user_model()
            fields = ["id"]

    class UsersByProjectOwner(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        serializer_class = UserSerializer
        realtime_model = get_user_model()
        realtime_partition = "project__owner"  # a user's projects: a reverse foreign key

    found = [m for m in checks.run_checks() if m.id == "drf_grip.E001"]
    assert [m.obj for m in found] == [UsersByProjectOwner]
    assert "to-many relation 'project'" in found[0].msg


# -- settings a Django developer gets wrong (drf_grip.E002, E003, E004, W007) ----------------

_SETTINGS_IDS = {
    "drf_grip.E002", "drf_grip.E003", "drf_grip.W007", "drf_grip.W008", "drf_grip.W009",
    "drf_grip.W010", "drf_grip.W014",
}
_SECRET = "s3cr3t-key-that-must-never-be-shown"
_SETTINGS_ERRORS = [
    ({"DRF_GRIP": {"LIVE_URL_TIMEOUT": -5}}, "drf_grip.E002", "LIVE_URL_TIMEOUT"),
    ({"DRF_GRIP": {"HOLD_TIMEOUT": "30"}}, "drf_grip.E002", "'30'"),
    ({"DRF_GRIP": {"HOLD_TIMEOUT": None}}, "drf_grip.E002", "HOLD_TIMEOUT"),
    ({"DRF_GRIP": {"HOLD_TIMEOUT": 600}}, "drf_grip.E002", "HOLD_TIMEOUT_MAX"),
    ({"DRF_GRIP": {"HOLD_TIMEOUT_MIN": 60, "HOLD_TIMEOUT": 55}}, "drf_grip.E002", "<="),
    ({"DRF_GRIP": {"NEXT_LINK_TIMEOUT": 0}}, "drf_grip.E002", "NEXT_LINK_TIMEOUT"),
    ({"DRF_GRIP": {"PUBLISH_CONNECT_TIMEOUT": 0}}, "drf_grip.E002", "more than 0"),
    ({"DRF_GRIP": {"PUBLISH_BACKOFF": -1.0}}, "drf_grip.E002", "PUBLISH_BACKOFF"),
    ({"DRF_GRIP": {"WS_KEEP_ALIVE": 2.5}}, "drf_grip.E002", "whole number"),
    ({"DRF_GRIP": {"REHOLD_CONCURRENCY": 0}}, "drf_grip.E002", "REHOLD_CONCURRENCY"),
    ({"DRF_GRIP": {"DEFAULT_DELIVERY": "Shared"}}, "drf_grip.E002", "'Shared'"),
    ({"DRF_GRIP": {"VERSION_CACHE": "realtime"}}, "drf_grip.E002", "CACHES"),
    ({"DRF_GRIP": {"EMBEDDED_URL": "localhost:8000"}}, "drf_grip.E002", "EMBEDDED_URL"),
    ({"DRF_GRIP": [("HOLD_TIMEOUT", 30)]}, "drf_grip.E002", "must be a dict"),
    ({"DRF_GRIP": {"LIVE_URL_TIMOUT": 30}}, "drf_grip.W007", "mean 'LIVE_URL_TIMEOUT'?"),
    ({"GRIP_URL": f"127.0.0.1:5561/?key={_SECRET}"}, "drf_grip.E003", "scheme"),
    ({"GRIP_URL": f"http://127.0.0.1:99999/?key={_SECRET}"}, "drf_grip.E003", "Port out of range"),
    ({"GRIP_URL": f"http://127.0.0.1:5561/?key=base64:{_SECRET}"}, "drf_grip.E003", "base64"),
    # gripcontrol decodes these to an empty key and drops it: with no key, any Grip-Sig
    # counted as the proxy's (security probe).
    ({"GRIP_URL": "http://127.0.0.1:5561/?iss=pushpin&key=base64:!!!!"}, "drf_grip.E003",
     "key=base64:... that is not base64"),
    ({"GRIP_URL": "http://127.0.0.1:5561/?iss=pushpin&key=base64:%%%%"}, "drf_grip.E003",
     "not base64"),
    ({"GRIP_URL": "http://127.0.0.1:5561/?iss=pushpin&key=base64:"}, "drf_grip.E003",
     "an empty key="),
    ({"GRIP_URL": "http://127.0.0.1:5561/?iss=pushpin&key="}, "drf_grip.E003", "an empty key="),
    ({"GRIP_URL": "https://api.fastly.com/service/x?verify-iss=fastly:x&verify-key=base64:!!"},
     "drf_grip.E003", "verify-key=base64:... that is not base64"),
    ({"GRIP_PROXIES": [{"control_uri": "http://127.0.0.1:5561", "key": ""}]},
     "drf_grip.E003", "an empty key"),
    # Without an issuer the key is sent as a Bearer token: bytes that are no text never
    # published (UnicodeDecodeError in the transport; GRIP probe).
    ({"GRIP_URL": "http://127.0.0.1:5561/?key=base64:/+7/"}, "drf_grip.W014", "no issuer"),
    ({"GRIP_PROXIES": [{"control_uri": "http://127.0.0.1:5561", "key": b"\xff\xfe"}]},
     "drf_grip.W014", "http://127.0.0.1:5561: its key is no text"),
    ({"GRIP_URL": [f"http://127.0.0.1:5561/?key={_SECRET}"]}, "drf_grip.E003", "list"),
    ({"GRIP_PROXIES": {"control_uri": "http://127.0.0.1:5561", "key": _SECRET}},
     "drf_grip.E003", "must be a list"),
    ({"GRIP_PROXIES": [{"control-uri": "http://127.0.0.1:5561", "key": _SECRET}]},
     "drf_grip.E003 drf_grip.W008", "GRIP_PROXIES[0]: no 'control_uri'"),
    ({"PUBLISH_SERVERS": f"http://127.0.0.1:5561/?key={_SECRET}"}, "drf_grip.E003", "str"),
    ({"GRIP_PREFIX": 5}, "drf_grip.E003", "GRIP_PREFIX"),
    ({"GRIP_URL": f"https://api.fastly.com/service/x?verify-iss=fastly:x&key={_SECRET}"},
     "drf_grip.W010", "https://api.fastly.com/service/x names a Grip-Sig issuer"),
    ({"GRIP_VERIFY_KEY": 123}, "drf_grip.E003", "GRIP_VERIFY_KEY: int"),
    ({"GRIP_PROXIES": [{"control_uri": "http://127.0.0.1:5561", "key": 12345}]},
     "drf_grip.E003", "its key is int"),
    ({"GRIP_PREFIX": "my app, "}, "drf_grip.E003", "Grip-Channel"),
    ({"GRIP_PROXY_REQUIRED": "False"}, "drf_grip.E003", "non-empty string"),
    ({"GRIP_URL": f"http://127.0.0.1:5561/?sig_iss=pushpin&sig_key={_SECRET}"},
     "drf_grip.W008", "sig_iss=, sig_key= is no GRIP URL parameter; write iss=, key="),
    ({"GRIP_PROXIES": [{"control_uri": "https://api.fastly.com/service/x", "key": _SECRET,
                        "verify-iss": "fastly:x"}]},
     "drf_grip.W008", "'verify-iss' is no proxy entry key; write 'verify_iss'"),
    ({"DRF_GRIP": {"LIVE_URL_MAX": 0}}, "drf_grip.E002", "1 or more"),
    ({"DRF_GRIP": {"PUBLISH_INTERVAL": 50}}, "drf_grip.W009", "0.05 is 50 ms"),
]


def test_a_pushpin_entry_naming_its_issuer_beside_its_key_is_no_unverified_issuer():
    """Verified with its key (HS256), as a hold through it shows; W010 said requests
    through it would count as direct (seeds probe)."""
    proxies = [{"control_uri": "http://127.0.0.1:5561", "key": _SECRET, "verify_iss": "pushpin"}]
    with override_settings(GRIP_PROXIES=proxies):
        assert [m.id for m in checks.run_checks() if m.id in _SETTINGS_IDS] == []


@pytest.mark.parametrize("overrides, check_id, named", _SETTINGS_ERRORS)
def test_a_setting_drf_grip_cannot_use_is_named_at_start_up(overrides, check_id, named):
    """Configuration probe: each of these passed ``manage.py check`` in silence or crashed
    it with a traceback from inside URL parsing; at run time it was a publish to
    ``://127.0.0.1:5561``, holds that never woke (a negative LIVE_URL_TIMEOUT, a cache
    alias not in CACHES) or a default taken without a word (a typo, ``"Shared"``)."""
    with override_settings(**overrides):
        found = [m for m in checks.run_checks() if m.id in _SETTINGS_IDS]
    assert [m.id for m in found] == check_id.split(), [(m.id, m.msg) for m in found]
    said = " ".join(m.msg + m.hint for m in found)
    assert named in said and _SECRET not in said


def test_a_value_drf_grip_cannot_use_is_replaced_by_its_default_and_logged(caplog):
    """In a process that runs no system checks (gunicorn, Celery) a bad value is said in
    the log and the default is used: no 500, no negative timeout sent to the proxy."""
    from drf_grip.conf import DEFAULTS, grip_settings

    with override_settings(DRF_GRIP={"HOLD_TIMEOUT": -30, "VERSION_CACHE": "realtime"}):
        assert grip_settings.HOLD_TIMEOUT == DEFAULTS["HOLD_TIMEOUT"]
        assert grip_settings.VERSION_CACHE == "default"
    logged = caplog.text
    assert "DRF_GRIP['HOLD_TIMEOUT']" in logged and "drf_grip.E002" in logged
    assert "DRF_GRIP['VERSION_CACHE']" in logged


def test_a_version_cache_is_read_again_when_caches_change(settings):
    """Whether VERSION_CACHE is usable depends on CACHES: an alias added there (a test's
    ``override_settings(CACHES=...)``) is used, not the default kept from before."""
    from drf_grip.conf import grip_settings

    settings.DRF_GRIP = {"VERSION_CACHE": "realtime"}
    assert grip_settings.VERSION_CACHE == "default"  # no such alias yet
    settings.CACHES = {
        **settings.CACHES,
        "realtime": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    assert grip_settings.VERSION_CACHE == "realtime"


def test_a_malformed_grip_url_is_an_error_that_names_it_without_its_key():
    from drf_grip.conf import grip_settings

    with override_settings(GRIP_URL=f"http://127.0.0.1:5561/?key=base64:{_SECRET}"):
        with pytest.raises(ImproperlyConfigured, match="GRIP_URL") as raised:
            grip_settings.proxies
    assert _SECRET not in str(raised.value)


def test_a_realtime_view_attribute_of_the_wrong_kind_is_named(registered_views):
    """``realtime_delivery = "Shared"`` was private delivery without a word,
    ``realtime_vary = ("Accept-Language")`` (no comma: a string) varied on letters, and
    ``realtime_model = "testapp.Todo"`` answered the first GET with a 500."""
    assert "drf_grip.E004" not in _ids()

    class Capitalised(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer
        realtime_delivery = "Shared"

    class NoComma(Capitalised):
        realtime_delivery = "shared"
        realtime_vary = ("Accept-Language")
        realtime_query_params = ["page_size"]  # a list is fine

    class PartitionList(Capitalised):
        realtime_delivery = None
        realtime_partition = ["owner"]

    class MetaKeys(Capitalised):
        realtime_delivery = "shared"
        realtime_vary = ["HTTP_ACCEPT_LANGUAGE"]  # every language got one pushed body

    class ModelByName(Capitalised):
        realtime_delivery = None
        realtime_model = "testapp.Todo"  # a 500 at the first GET
        realtime_kind = "List"

    errors = sorted(
        (m.obj.__name__, m.msg, m.hint) for m in checks.run_checks() if m.id == "drf_grip.E004"
    )
    found = [(name, msg) for name, msg, _ in errors]
    # Each hint mends its own attribute: every one told of realtime_vary (new-user probe).
    hints = [hint for _, _, hint in errors]
    assert "realtime_delivery" in hints[0] and "realtime_vary" in hints[1]
    assert 'realtime_kind = "list"' in hints[2] and "get_model" in hints[3]
    assert "comma" in hints[4] and 'realtime_partition = "owner"' in hints[5]
    assert [name for name, _ in found] == [
        "Capitalised", "MetaKeys", "ModelByName", "ModelByName", "NoComma", "PartitionList"
    ], found
    assert "'Shared'" in found[0][1] and "request.META" in found[1][1]
    assert "realtime_kind" in found[2][1] and "realtime_model" in found[3][1]
    assert "realtime_vary" in found[4][1] and "realtime_partition" in found[5][1]


def test_a_credential_header_in_realtime_vary_is_named(registered_views):
    """``realtime_vary = ("Authorization",)`` on a shared view made a live URL per token,
    with the token in its key in the state cache, while its render ran without any
    credentials (shared renders never carry them) and pushed the anonymous answer."""

    class PerToken(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer
        realtime_delivery = "shared"
        realtime_vary = ("Accept-Language", "Authorization")

    found = [m.msg for m in checks.run_checks() if m.id == "drf_grip.E004" and m.obj is PerToken]
    assert len(found) == 1 and "['Authorization']" in found[0], found

    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from drf_grip.rest.live_urls import live_url

    def key(token: str) -> str:
        get = APIRequestFactory().get("/api/todos/", HTTP_AUTHORIZATION=f"Token {token}",
                                      HTTP_ACCEPT_LANGUAGE="fi")
        return live_url(Request(get), PerToken()).key

    assert _SECRET not in key(_SECRET) and "accept-language=fi" in key(_SECRET)
    assert key(_SECRET) != key("another")  # still one live URL per value


def test_manage_py_check_stops_on_a_grip_url_without_a_scheme(tmp_path):
    """The sample reads GRIP_URL from the environment, where a scheme is easily left out:
    ``manage.py check`` (and so ``runserver`` and ``migrate``) stops and names the setting,
    without the key (it used to pass, and every publish went to ``://127.0.0.1:5561``)."""
    from tests.test_docs import _sample

    result = _sample(tmp_path, "check", GRIP_URL=f"127.0.0.1:5561/?iss=pushpin&key={_SECRET}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "drf_grip.E003" in output and "GRIP_URL: no http:// or https:// scheme" in output
    assert _SECRET not in output


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"GRIP_URL": "http://127.0.0.1:5561/?iss=pushpin"}, "from anyone, counts as the proxy's"),
        ({"GRIP_PROXIES": [{"control_uri": "http://127.0.0.1:5561"}]}, "from anyone"),
        (
            {
                "GRIP_PROXIES": [{"control_uri": "http://127.0.0.1:5562", "key": _SECRET}],
                "GRIP_URL": "http://127.0.0.1:5561/",
            },
            "requests through it count as direct",
        ),
    ],
)
def test_a_proxy_without_a_key_is_named_by_the_deployment_check(overrides, says):
    """A keyless proxy passed ``check --deploy`` in silence, and then a forged ``Grip-Sig:
    garbage`` from any client was held like the proxy's request (operations probe)."""
    with override_settings(**overrides):
        found = [
            m for m in checks.run_checks(include_deployment_checks=True)
            if m.id == "drf_grip.W011"
        ]
        assert [m.id for m in checks.run_checks() if m.id == "drf_grip.W011"] == []
    assert len(found) == 1 and "http://127.0.0.1:5561" in found[0].msg and says in found[0].msg
    assert _SECRET not in found[0].msg + (found[0].hint or "")


def test_a_keyed_proxy_passes_the_deployment_check_without_w011():
    with override_settings(GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={_SECRET}"):
        found = checks.run_checks(include_deployment_checks=True)
    assert "drf_grip.W011" not in [m.id for m in found]


def test_a_shared_view_translated_by_locale_middleware_is_named_unless_it_varies_by_language(
    settings,
):
    """DRF probe: with LocaleMiddleware, a shared view without ``realtime_vary`` pushed one
    render to every subscriber of a URL, in the language of the one it was made for (fr,
    de and none all got de), and ``manage.py check`` said nothing."""

    class UntranslatedSharedTodos(RealtimeMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Todo.objects.all()
        serializer_class = TodoSerializer
        realtime_delivery = "shared"

    class TranslatedSharedTodos(UntranslatedSharedTodos):
        realtime_vary = ("Accept-Language",)

    def named() -> set[str]:
        return {m.obj.__name__ for m in checks.run_checks() if m.id == "drf_grip.W013"}

    assert not named() & {"UntranslatedSharedTodos", "TranslatedSharedTodos"}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.locale.LocaleMiddleware"]
    found = named()
    assert "UntranslatedSharedTodos" in found and "TranslatedSharedTodos" not in found
    settings.USE_I18N = False
    assert "UntranslatedSharedTodos" not in named()
