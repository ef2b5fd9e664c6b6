"""System checks: say loudly when changes would have nowhere to go."""
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


def _configured() -> bool:
    """Whether a GRIP endpoint is configured; a malformed one counts (E003 names it)."""
    from .conf import grip_settings

    try:
        return grip_settings.configured
    except ImproperlyConfigured:
        return True


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs=None, **kwargs):
    """E002/W007 for DRF_GRIP values and keys drf-grip cannot use, E003 for a malformed
    GRIP_URL, GRIP_PROXIES, PUBLISH_SERVERS or GRIP_PREFIX: said at start-up, with the
    setting's name, rather than a 500 or a default taken silently at the first request."""
    from .conf import (
        drf_grip_problems,
        endpoint_problems,
        misnamed_params,
        proxy_required_problem,
    )

    found = [
        (checks.Error if p.id.startswith("drf_grip.E") else checks.Warning)(
            p.msg, hint=p.hint, id=p.id
        )
        for p in drf_grip_problems()
    ]
    for problem in endpoint_problems():
        found.append(
            checks.Error(
                f"{problem}.",
                hint="A GRIP URL reads http://host:5561/?iss=pushpin&key=SECRET; GRIP_PROXIES "
                "and PUBLISH_SERVERS are lists (of dicts with 'control_uri', or GRIP URLs "
                "for PUBLISH_SERVERS).",
                id="drf_grip.E003",
            )
        )
    for problem in misnamed_params():
        found.append(
            checks.Warning(
                f"{problem}. Such a value is never used.",
                hint="Pushpin's sig_iss and sig_key are a GRIP URL's iss= and key=: "
                "http://127.0.0.1:5561/?iss=pushpin&key=SECRET; a GRIP_PROXIES entry's are "
                "control_iss, key, verify_iss and verify_key. Without a key, any Grip-Sig "
                "header counts as the proxy's.",
                id="drf_grip.W008",
            )
        )
    if problem := proxy_required_problem():
        found.append(
            checks.Error(
                f"{problem}: any non-empty string counts as true.",
                hint='Read it as a boolean: os.environ.get("GRIP_PROXY_REQUIRED") == "1".',
                id="drf_grip.E003",
            )
        )
    return found


@checks.register(checks.Tags.compatibility)
def check_publish_endpoints(app_configs=None, **kwargs):
    """W001 when nothing says where changes go. With DEBUG on, the embedded proxy of
    ``runserver`` is the documented development setup (the README's install omits GRIP_URL),
    so saying it on every command would only teach people to ignore checks; an explicit
    DRF_GRIP["EMBEDDED_URL"] is a choice, not an oversight."""
    from django.conf import settings

    from .conf import grip_settings, redact_url

    if _configured() or "EMBEDDED_URL" in (getattr(settings, "DRF_GRIP", None) or {}):
        return []
    if settings.DEBUG:
        return []
    return [
        checks.Warning(
            "No GRIP endpoint is configured (GRIP_URL, GRIP_PROXIES, PUBLISH_SERVERS).",
            hint=(
                "Changes are published to the embedded proxy of this process, or to "
                f"DRF_GRIP['EMBEDDED_URL'] ({redact_url(str(grip_settings.EMBEDDED_URL))}) "
                "from other processes. Set GRIP_URL to publish to Pushpin or Fanout, or set "
                "DRF_GRIP['EMBEDDED_URL'] to the address this project's embedded proxy serves."
            ),
            id="drf_grip.W001",
        )
    ]


_PER_PROCESS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.caches)
def check_shared_state_cache(app_configs=None, **kwargs):
    """Shared delivery keeps live URLs and versions in Django's cache, the gateway its
    subscriptions: a per-process cache is right only while one process serves and
    publishes."""
    from django.conf import settings

    from .conf import grip_settings
    from .rest.registry import gateway_views, realtime_views, shared_views

    alias = grip_settings.VERSION_CACHE
    backend = (getattr(settings, "CACHES", {}) or {}).get(alias, {}).get("BACKEND", "")
    if backend not in _PER_PROCESS:
        return []
    views = sorted(v.__name__ for v in shared_views())
    gateways = sorted(v.__name__ for v in gateway_views())
    # Private views only: their event streams' state (what a next link replays) is kept
    # there too, and a stream whose next link reached another worker ended (deploying
    # probe, two uvicorn workers: 11 of 28 streams in 12 s). Only past development, where
    # one process serving is the rule.
    private = [] if views or gateways or settings.DEBUG else sorted(
        v.__name__ for v in realtime_views()
    )
    if not views and not gateways and not private:
        return []
    kept = " and ".join(
        part
        for part in (
            "shared delivery's live URLs and channel versions" if views else "",
            "the WebSocket gateway's subscriptions" if gateways else "",
            "event streams' state and channel versions" if private else "",
        )
        if part
    )
    named = "; ".join(
        part
        for part in (
            "Shared views: " + ", ".join(views[:5]) if views else "",
            "Gateways: " + ", ".join(gateways[:5]) if gateways else "",
            "Realtime views: " + ", ".join(private[:5]) if private else "",
        )
        if part
    )
    return [
        checks.Warning(
            f"drf-grip keeps {kept} in the {alias!r} cache, which is per process "
            f"({backend.rsplit('.', 1)[-1]}).",
            hint=(
                "That is right for one process only (runserver, one worker): a change "
                "saved in another process (a second worker, Celery, a shell) does not reach "
                "those subscribers. Point DRF_GRIP['VERSION_CACHE'] at a cache every "
                "process shares (Redis, Memcached; FileBasedCache in development). "
                + named
            ),
            id="drf_grip.W002",
        )
    ]


#: Backends that cull when full: Django's LocMemCache, FileBasedCache and DatabaseCache
#: delete a third of their entries once ``MAX_ENTRIES`` (default 300) is reached.
_CULLING = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.db.DatabaseCache",
)
#: A few entries per held client (its hint bucket, what it last answered) and per live URL.
STATE_ENTRIES_MIN = 10_000


@checks.register(checks.Tags.caches)
def check_state_cache_room(app_configs=None, **kwargs):
    """W003 when drf-grip's state lives in a cache that culls at a few hundred entries.

    Culled state is never a lost update, but it costs re-requests and renders, and it spreads
    hint buckets badly (a client counted again lands in a later bucket): measured with 1,000
    private long-polls on Django's default LocMemCache (300 entries), up to 20 % of clients
    missed a change within 20 s. Only without DEBUG: a development server with a few clients
    fits, and a warning on every command there would teach people to ignore checks."""
    from django.conf import settings

    from .conf import grip_settings

    if settings.DEBUG:
        return []
    alias = grip_settings.VERSION_CACHE
    config = (getattr(settings, "CACHES", {}) or {}).get(alias, {})
    backend = config.get("BACKEND", "")
    if backend not in _CULLING:
        return []
    entries = int((config.get("OPTIONS") or {}).get("MAX_ENTRIES", 300))
    if entries >= STATE_ENTRIES_MIN:
        return []
    return [
        checks.Warning(
            f"drf-grip keeps its state in the {alias!r} cache "
            f"({backend.rsplit('.', 1)[-1]}), which culls entries past MAX_ENTRIES={entries}.",
            hint=(
                f"Give it room for a few entries per held client: OPTIONS "
                f"{{'MAX_ENTRIES': 100000}} (at least {STATE_ENTRIES_MIN}), or use Redis, which "
                "several processes can share. DRF_GRIP['VERSION_CACHE'] names the cache."
            ),
            id="drf_grip.W003",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_grip_middleware(app_configs=None, **kwargs):
    """W004 when realtime views or a gateway are served without ``GripMiddleware``: no
    request then counts as the proxy's, so a long-poll answers 304 at once, a stream ends
    after its first event and nothing says why (a day-one probe)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from .grip.middleware import GripMiddleware
    from .rest.registry import gateway_views, realtime_views

    for path in getattr(settings, "MIDDLEWARE", None) or ():
        try:
            middleware = import_string(path)
        except ImportError:
            continue  # Django reports it
        if isinstance(middleware, type) and issubclass(middleware, GripMiddleware):
            return []
    views = sorted({v.__name__ for v in realtime_views()} | {v.__name__ for v in gateway_views()})
    if not views:
        return []
    return [
        checks.Warning(
            "drf_grip.middleware.GripMiddleware is not in MIDDLEWARE: realtime views answer "
            "as if no GRIP proxy were there (a long-poll returns 304 at once, a stream ends "
            "after its first event, WebSocket-over-HTTP is not handled).",
            hint="Add 'drf_grip.middleware.GripMiddleware' early in MIDDLEWARE. Views: "
            + ", ".join(views[:5]),
            id="drf_grip.W004",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_runserver(app_configs=None, **kwargs):
    """W005 when another app's ``runserver`` wins over drf-grip's while no GRIP proxy is
    configured: Django uses the command of the first app in INSTALLED_APPS that has one
    (``django.contrib.staticfiles`` does), and that one serves no embedded GRIP proxy."""
    from django.core.management import get_commands

    if _configured():
        return []
    owner = get_commands().get("runserver")
    if owner in (None, "drf_grip"):
        return []
    return [
        checks.Warning(
            f"'runserver' is {owner}'s, not drf-grip's: it serves no embedded GRIP proxy, so "
            "long-polls, streams and the WebSocket gateway will not be held.",
            hint=f"Put 'drf_grip' before '{owner}' in INSTALLED_APPS, or set GRIP_URL to "
            "run behind Pushpin.",
            id="drf_grip.W005",
        )
    ]


@checks.register(checks.Tags.security)
def check_verify_keys(app_configs=None, **kwargs):
    """W006 when a public key a Grip-Sig is to be verified with does not load: every
    request signed with it counts as direct (no hold, no stream), silently, since a bad
    signature is how a forged request looks too (GRIP probe)."""
    from .conf import endpoint_problems
    from .grip.signature import public_key_loads, trusted_keys

    if endpoint_problems():
        return []  # E003 names them
    if any(not public_key_loads(trusted.key) for trusted in trusted_keys()[0]):
        return [
            checks.Warning(
                "A Grip-Sig verify key (GRIP_VERIFY_KEY, or a verify_key in GRIP_PROXIES or "
                "GRIP_URL) looks like PEM but is no public key that loads: requests the "
                "proxy signs will count as direct.",
                hint="Give the PEM public key ('-----BEGIN PUBLIC KEY-----'), not a "
                "certificate; a key read from an environment variable may carry '\\n' "
                "where its line breaks belong.",
                id="drf_grip.W006",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_sendable_keys(app_configs=None, **kwargs):
    """W014 for a publish key with no issuer that is no text: sent as a Bearer token
    (pubcontrol's rule, Fastly's API token), it never could be, and every publish to that
    proxy failed (it raised ``UnicodeDecodeError`` from the transport; GRIP probe)."""
    from .conf import InvalidKey, endpoint_problems, grip_settings
    from .grip.transports import HttpTarget

    if endpoint_problems():
        return []  # E003 names them
    found = []
    for endpoint in grip_settings.publish_endpoints:
        try:
            HttpTarget(endpoint).headers()  # how a publish is authorised, decided there
        except InvalidKey:
            found.append(
                checks.Warning(
                    f"{endpoint.display_uri}: its key is no text and it names no issuer, so "
                    "publishes to it cannot be authorised: each fails.",
                    hint="Name Pushpin's issuer beside its key (iss=pushpin in a GRIP URL, "
                    "control_iss in GRIP_PROXIES) to sign a JWT with the key; Fanout's key "
                    "is an API token (text).",
                    id="drf_grip.W014",
                )
            )
    return found


@checks.register(checks.Tags.security)
def check_fanout_verify_key(app_configs=None, **kwargs):
    """W010 when a proxy names the issuer of Fastly Fanout's Grip-Sig (``verify_iss``,
    ``fastly:SERVICE_ID``) and no key verifies it: Fanout signs with Fastly's private key
    (ES256), the entry's ``key`` is an API token, so every request counted as direct and a
    long-poll answered 304 at once."""
    from .conf import endpoint_problems, grip_settings

    if endpoint_problems() or grip_settings.verify_key:
        return []
    # A Pushpin entry naming its own issuer beside its key is verified with that key
    # (``GripEndpoint.signature_key``): warned of too (seeds probe). Fanout's issuer is
    # ``fastly:SERVICE_ID``, and an entry with no key at all verifies nothing.
    unverified = [
        ep.display_uri
        for ep in grip_settings.proxies
        if ep.verify_iss
        and not ep.verify_key
        and (str(ep.verify_iss).startswith("fastly:") or not ep.key)
    ]
    if not unverified:
        return []
    return [
        checks.Warning(
            f"{', '.join(unverified)} names a Grip-Sig issuer (verify_iss) but no key to "
            "verify it with: requests through it will count as direct.",
            hint="Set GRIP_VERIFY_KEY to Fastly's public key (PEM), or give the entry a "
            "verify_key (verify-key= in a GRIP URL).",
            id="drf_grip.W010",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_keyless_proxies(app_configs=None, **kwargs):
    """W011 (``check --deploy``) for a proxy configured with no key: GRIP lets such a proxy
    be trusted on the presence of ``Grip-Sig`` alone, as django-grip does, so any client
    that sends the header is answered as the proxy would be (held, its ``Grip-Last`` read).
    W008 said so only for a key under the wrong name (operations probe)."""
    from .conf import endpoint_problems
    from .grip.signature import keyless_proxies, trusted_keys

    if endpoint_problems():
        return []  # E003 names them
    keyless = keyless_proxies()
    if not keyless:
        return []
    trusted_anyway = bool(trusted_keys()[0])
    return [
        checks.Warning(
            f"{', '.join(keyless)} has no key to verify Grip-Sig with: "
            + (
                "requests through it count as direct (another proxy has a key)."
                if trusted_anyway
                else "any request carrying a Grip-Sig header, from anyone, counts as the "
                "proxy's."
            ),
            hint="Give Pushpin a sig_key and the same key in the GRIP URL "
            "(http://pushpin:5561/?iss=pushpin&key=SECRET) or the GRIP_PROXIES entry's "
            '"key"; for Fastly Fanout, GRIP_VERIFY_KEY and verify_iss.',
            id="drf_grip.W011",
        )
    ]


def _url_view_classes(patterns=None) -> list[type]:
    """The view classes the URLconf routes to (DRF's ``as_view()`` keeps ``cls``, Django's
    ``view_class``), each once."""
    from django.urls import URLResolver, get_resolver

    found: list[type] = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            found += _url_view_classes(entry.url_patterns)
            continue
        callback = getattr(entry, "callback", None)
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        if isinstance(view, type) and view not in found:
            found.append(view)
    return found


#: Picks each request's language from its ``Accept-Language`` (and cookie, URL prefix).
LOCALE_MIDDLEWARE = "django.middleware.locale.LocaleMiddleware"


@checks.register(checks.Tags.compatibility)
def check_shared_views_vary_by_language(app_configs=None, **kwargs):
    """W013 for a shared view whose ``realtime_vary`` leaves out ``Accept-Language`` while
    ``LocaleMiddleware`` translates responses by it: one render per live URL reached every
    subscriber in the language of the one it was made for, without a word (DRF probe; its
    responses said ``Vary: Accept-Language``, which the middleware adds after the view)."""
    from django.conf import settings

    if not settings.USE_I18N or LOCALE_MIDDLEWARE not in settings.MIDDLEWARE:
        return []
    from .rest.registry import shared_views

    views = sorted(set(shared_views()), key=lambda v: f"{v.__module__}.{v.__qualname__}")
    return [
        checks.Warning(
            f"{view.__name__} is shared and LocaleMiddleware translates its responses, but "
            "its realtime_vary leaves out Accept-Language: every subscriber of one URL gets "
            "the language of the subscriber its render was made for.",
            hint='realtime_vary = ("Accept-Language",); or realtime_delivery = "private" '
            "for a language chosen by cookie.",
            obj=view,
            id="drf_grip.W013",
        )
        for view in views
        if "accept-language" not in _header_names(getattr(view, "realtime_vary", ()))
    ]


def _header_names(names: Any) -> set[str]:
    if isinstance(names, str):
        return {names.lower()}  # one name without its tuple's comma (E004)
    return {str(name).lower() for name in names or ()}


@checks.register(checks.Tags.compatibility)
def check_views_name_a_model(app_configs=None, **kwargs):
    """W012 for a routed view with ``RealtimeMixin`` that names no model: it can never be
    live (no ETag, no hold), which nothing said (DRF probe: an ``APIView`` with only
    ``get()`` answered ``text/event-stream`` requests with bare JSON)."""
    from .rest.mixins import _RealtimeBase

    try:
        views = _url_view_classes()
    except Exception:  # noqa: BLE001 - a broken URLconf is Django's own check's to report
        return []
    return [
        checks.Warning(
            f"{view.__name__} has RealtimeMixin but names no model: it is never live (no "
            "ETag, no long-poll, no stream).",
            hint="Give it a queryset, a serializer with Meta.model, or realtime_model = "
            "YourModel; or override get_realtime_model().",
            obj=view,
            id="drf_grip.W012",
        )
        for view in views
        if issubclass(view, _RealtimeBase) and view.names_no_model()
    ]


@checks.register(checks.Tags.models)
def check_partitions(app_configs=None, **kwargs):
    """E001 when ``realtime_partition`` is a field path that does not end at the user model
    while the view keeps both default partition hooks: a hold subscribes to the requesting
    user's partition (``get_realtime_partition()``) and a change is published to the value
    at the path (``get_instance_partitions()``), so ``realtime_partition = "project"`` on a
    nested ``/projects/<pk>/tasks/`` held at ``anonymous`` or a user's pk, published to the
    project's pk, and no held client ever woke (DRF ecosystem probe)."""
    from django.contrib.auth import get_user_model
    from django.core.exceptions import FieldDoesNotExist

    from .rest.mixins import _RealtimeBase
    from .rest.registry import realtime_views

    user_model = get_user_model()
    errors = []
    for view in sorted(set(realtime_views()), key=lambda v: f"{v.__module__}.{v.__qualname__}"):
        path = getattr(view, "realtime_partition", None)
        instance_hook = getattr(view.get_instance_partitions, "__func__", None)
        if (
            not isinstance(path, str)  # None, or E004's
            or not path
            or view.get_realtime_partition is not _RealtimeBase.get_realtime_partition
            or instance_hook is not _RealtimeBase.get_instance_partitions.__func__
        ):
            continue  # the pair is the view's own
        model = view.resolve_realtime_model()
        if not isinstance(model, type):
            continue  # named at request time (get_realtime_model()), or E004's
        to_many = None
        try:
            for part in path.split("__"):
                field = model._meta.get_field(part) if model else None
                if field is not None and (field.many_to_many or field.one_to_many):
                    to_many = to_many or part
                model = field.related_model if field is not None else None
        except FieldDoesNotExist:
            model = None
        if to_many is not None:
            # An object with several owners along the path has several partitions, and
            # which it left when a membership changed is known nowhere: such views
            # published to "auth.User.None", the related manager's text, and a create or
            # a member added woke nobody (visibility probe).
            errors.append(
                checks.Error(
                    f"{view.__name__}.realtime_partition = {path!r} goes through the "
                    f"to-many relation {to_many!r}: a partition path follows foreign keys "
                    "to one user.",
                    hint="Leave realtime_partition unset (the model's list channel wakes "
                    "every member's holds), or override the pair get_realtime_partition() "
                    "and get_instance_partitions(instance) (returning every member's "
                    "partition) and announce membership changes with publish_changes().",
                    obj=view,
                    id="drf_grip.E001",
                )
            )
            continue
        if model is not None and issubclass(model, user_model):
            continue
        errors.append(
            checks.Error(
                f"{view.__name__}.realtime_partition = {path!r} is not a field path to the "
                f"user model ({user_model._meta.label}): holds subscribe to the requesting "
                "user's partition, changes are published to the value at that path, and no "
                "held client would ever wake.",
                hint="Name a path to the user (\"owner\", \"project__owner\"), or override "
                "the pair get_realtime_partition() (the request's side: "
                "self.kwargs['project_pk'], say) and get_instance_partitions(instance).",
                obj=view,
                id="drf_grip.E001",
            )
        )
    return errors


_VARY_HINT = (
    'realtime_vary = ("Accept-Language",): header names, and a tuple of one needs its comma.'
)


def _view_attribute_problems(view: type) -> list[tuple[str, str]]:
    """Class attributes of a realtime view that cannot mean what they were written for, each
    with the hint that mends it."""
    from django.db.models import Model

    problems = []
    delivery = getattr(view, "realtime_delivery", None)
    if delivery is not None and delivery not in ("private", "shared"):
        # Compared as written: "Shared" was silently private delivery.
        problems.append((
            f'realtime_delivery must be "private" or "shared", not {delivery!r}',
            'realtime_delivery = "shared" for data every subscriber may see alike; leave it '
            "unset for private delivery.",
        ))
    for name in ("realtime_vary", "realtime_query_params"):
        value = getattr(view, name, ())
        if isinstance(value, str) or not all(isinstance(v, str) for v in value or ()):
            # A bare string is iterated letter by letter (("page") is no tuple).
            problems.append((
                f"{name} must be a list or tuple of names, not {value!r}",
                f'{name} = ("{"Accept-Language" if name == "realtime_vary" else "page"}",): a '
                "tuple of one name needs its comma.",
            ))
    meta_style = [v for v in getattr(view, "realtime_vary", ()) or () if str(v).startswith("HTTP_")]
    if meta_style and not isinstance(view.realtime_vary, str):
        # Looked up as HTTP_HTTP_...: never set, so every language shared one body.
        problems.append(
            (f"realtime_vary names headers, not request.META keys: {meta_style!r}", _VARY_HINT)
        )
    credentials = [
        v for v in getattr(view, "realtime_vary", ()) or ()
        if str(v).lower() in ("authorization", "cookie", "proxy-authorization")
    ]
    if credentials and not isinstance(view.realtime_vary, str):
        # A shared render runs without the subscriber's credentials (render.record), so it
        # could never give each its own bytes; per-user data is private delivery.
        problems.append((
            f"realtime_vary names credentials, which shared renders never carry: "
            f"{credentials!r} (per-user data is private delivery, the default)",
            "Leave realtime_delivery unset (private) for data that depends on who asks.",
        ))
    model = getattr(view, "realtime_model", None)
    if model is not None and not (isinstance(model, type) and issubclass(model, Model)):
        # Not resolved like a lazy "app.Model" relation: the first GET raised.
        problems.append((
            f"realtime_model must be a model class, not {model!r}",
            "Import the model and name the class (realtime_model = Task), or override "
            "get_realtime_model() to look it up (django.apps.apps.get_model).",
        ))
    kind = getattr(view, "realtime_kind", "")
    if kind not in ("", "list", "detail"):
        problems.append((
            f'realtime_kind must be "list" or "detail", not {kind!r}',
            'realtime_kind = "list" (or "detail"); leave it unset to follow the URL.',
        ))
    partition = getattr(view, "realtime_partition", None)
    if partition is not None and not isinstance(partition, str):
        problems.append((
            f"realtime_partition must be a field path string, not {partition!r}",
            'realtime_partition = "owner" (or "project__owner"): foreign keys to the user.',
        ))
    return problems


@checks.register(checks.Tags.compatibility)
def check_view_attributes(app_configs=None, **kwargs):
    """E004 for a realtime view's class attribute of the wrong kind: each was taken as
    something else without a word (a private view, letters for header names)."""
    from .rest.registry import realtime_views

    views = sorted(set(realtime_views()), key=lambda v: f"{v.__module__}.{v.__qualname__}")
    return [
        checks.Error(f"{view.__name__}.{problem}.", hint=hint, obj=view, id="drf_grip.E004")
        for view in views
        for problem, hint in _view_attribute_problems(view)
    ]
