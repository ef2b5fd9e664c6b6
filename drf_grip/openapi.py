"""OpenAPI for realtime views, with drf-spectacular (``pip install drf-grip[openapi]``).

Nothing to configure: when drf-spectacular is installed, drf-grip's ``AppConfig.ready()``
gives the realtime mixins a schema that extends ``DEFAULT_SCHEMA_CLASS`` (drf-spectacular's
``AutoSchema`` or a subclass of it). Realtime reads then document what they serve:
``If-None-Match``, ``Prefer: wait=N`` and ``Last-Event-ID``, the ``ETag`` response header,
``304 Not Modified`` and a ``text/event-stream`` response whose events carry the operation's
own response schema. Writes (``PUT``/``PATCH``/``DELETE``) document ``If-Match``,
``If-None-Match``, the answer's ``ETag`` and ``412``,
and show neither the event stream nor a ``format`` value they do not serve.

A view that sets its own ``schema`` bypasses this; mix :class:`RealtimeSchemaMixin` into
that schema class to keep the realtime documentation.
"""

from __future__ import annotations

import inspect
from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from drf_spectacular.settings import spectacular_settings
from rest_framework.schemas.inspectors import DefaultSchema, ViewInspector
from rest_framework.settings import api_settings

__all__ = ["RealtimeSchemaMixin", "RealtimeAutoSchema", "install"]

EVENT_STREAM = "text/event-stream"

_ETAG_HEADER: dict[str, Any] = {
    "schema": {"type": "string"},
    "description": "Strong validator of this representation; send it back in If-None-Match "
    "to wait for the next change, or in If-Match to guard a write.",
}

_READ_PARAMETERS: list[dict[str, Any]] = [
    {
        "in": "header",
        "name": "If-None-Match",
        "schema": {"type": "string"},
        "description": "The ETag the client has. When it is still current, the request is "
        "held (long-poll) until the representation changes, then answered 200 with the new "
        "body and ETag, or 304 at the timeout. Without a GRIP proxy in front: an ordinary "
        "conditional GET.",
    },
    {
        "in": "header",
        "name": "Prefer",
        "schema": {"type": "string"},
        "example": "wait=30",
        "description": "`wait=N` (RFC 7240): hold at most N seconds, clamped to the server's "
        "range; echoed in Preference-Applied.",
    },
    {
        "in": "header",
        "name": "Last-Event-ID",
        "schema": {"type": "string"},
        "description": "With Accept: text/event-stream, the id (ETag) of the last event the "
        "client received; when it is current the stream skips its first event.",
    },
]

_IF_MATCH: dict[str, Any] = {
    "in": "header",
    "name": "If-Match",
    "schema": {"type": "string"},
    "description": "Change the object only if this is its current ETag (that of its "
    "detail representation); otherwise 412 and nothing changes.",
}


_IF_NONE_MATCH_WRITE: dict[str, Any] = {
    "in": "header",
    "name": "If-None-Match",
    "schema": {"type": "string"},
    "description": "Refuse the change (412) when this matches the object's current ETag; "
    "`*` matches any existing object.",
}

_WRITE_ETAG_HEADER: dict[str, Any] = {
    "schema": {"type": "string"},
    "description": "With If-Match or If-None-Match: the object's new detail ETag, for the "
    "next guarded write.",
}


def _is_realtime_view(view: Any) -> bool:
    from .rest.mixins import ListRealtimeMixin, RealtimeMixin, RetrieveRealtimeMixin

    return isinstance(view, (RealtimeMixin, ListRealtimeMixin, RetrieveRealtimeMixin))


def _own_doc(obj: Any) -> bool:
    """True unless ``obj`` is defined by drf-grip (whose docstrings describe the mixin, not
    the user's API)."""
    module = getattr(obj, "__module__", None) or ""
    return not (module == "drf_grip" or module.startswith("drf_grip."))


class RealtimeSchemaMixin:
    """Adds the realtime parts to a drf-spectacular ``AutoSchema`` (see the module doc)."""

    view: Any
    method: str

    # -- which operation is this -----------------------------------------------------------

    def is_realtime_read(self) -> bool:
        """Whether this operation is live, as the view decides it for a request: its
        ``get_realtime_kind()`` hook (drf-spectacular gives the view a mock request)."""
        view = self.view
        if self.method != "GET" or not _is_realtime_view(view):
            return False
        try:
            return view.get_realtime_kind() is not None
        except Exception:  # a hook that needs a real request: document it as live
            action = getattr(view, "action", None)
            return action is None or action in ("list", "retrieve")

    def is_guarded_write(self) -> bool:
        return self.method in ("PUT", "PATCH", "DELETE") and _is_realtime_view(self.view)

    # -- drf-spectacular hooks -------------------------------------------------------------

    def map_renderers(self, attribute: str) -> list[Any]:
        values = super().map_renderers(attribute)  # type: ignore[misc]
        if self.is_realtime_read():
            return values
        # The mixin adds its event-stream renderer to every action of the view, but only
        # live reads stream: keep it out of other operations' media types and ``format``.
        from .rest.sse import EventStreamRenderer

        unwanted = getattr(EventStreamRenderer, attribute, None)
        return [value for value in values if value != unwanted]

    def get_description(self) -> str:  # type: ignore[override]  # drf-spectacular's signature
        # drf-spectacular falls back to the first docstring in the view's MRO, which for a
        # view without one is the realtime mixin's: skip drf-grip's classes and methods.
        view = self.view
        handler = getattr(view, getattr(view, "action", None) or self.method.lower(), None)
        if handler is not None and _own_doc(getattr(handler, "__func__", handler)):
            doc = get_doc(handler)
            if doc:
                return doc
        if getattr(spectacular_settings, "DISABLE_DOCSTRING_DESCRIPTIONS", False):
            return ""
        barrier = spectacular_settings.GET_LIB_DOC_EXCLUDES()
        for cls in type(view).__mro__:
            if cls in barrier:
                break
            if cls.__doc__ and _own_doc(cls):
                doc = inspect.cleandoc(cls.__doc__)
                return "\n".join(line.rstrip() for line in doc.rstrip().split("\n"))
        return ""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        self._show_realtime_model()
        operation = super().get_operation(*args, **kwargs)  # type: ignore[misc]
        if operation is None:
            return None
        if self.is_realtime_read():
            self._document_read(operation)
        elif self.is_guarded_write():
            self._document_write(operation)
        return operation

    def _show_realtime_model(self) -> None:
        """A realtime view knows its model without a request; drf-spectacular finds a
        view's model through ``queryset`` or else ``get_queryset()``, which often needs a
        real user (``filter(owner=request.user)``) and fails on its mock request."""
        view = self.view
        if not (_is_realtime_view(view) and getattr(view, "swagger_fake_view", False)):
            return
        if getattr(view, "queryset", None) is not None:
            return
        try:
            model = view.get_realtime_model()
        except Exception:  # the schema must not fail for a view the app never asked about
            return
        if model is not None:
            view.queryset = model._default_manager.none()

    # -- additions -------------------------------------------------------------------------

    def _add_parameters(self, operation: dict[str, Any], parameters: list[dict[str, Any]]) -> None:
        present = {(p.get("name"), p.get("in")) for p in operation.get("parameters", [])}
        for parameter in parameters:
            # A parameter the view declared itself (@extend_schema) wins.
            if (parameter["name"], parameter["in"]) not in present:
                operation.setdefault("parameters", []).append(dict(parameter))

    def _document_read(self, operation: dict[str, Any]) -> None:
        self._add_parameters(operation, _READ_PARAMETERS)
        responses = operation.setdefault("responses", {})
        ok = responses.get("200")
        if ok is not None:
            ok.setdefault("headers", {}).setdefault("ETag", dict(_ETAG_HEADER))
            content = ok.setdefault("content", {})
            body = next((c for t, c in content.items() if t != EVENT_STREAM), None)
            if body is not None and "schema" in body:
                # Each event's data is exactly the JSON body a GET returns (same bytes,
                # same ETag as its id); OpenAPI 3.0 cannot describe SSE framing itself.
                content[EVENT_STREAM] = {"schema": body["schema"]}
            elif EVENT_STREAM in content:
                del content[EVENT_STREAM]  # never a stream without the schema of its events
            if EVENT_STREAM in content:
                ok["description"] = (
                    (ok.get("description") or "").rstrip()
                    + "\n\nWith Accept: text/event-stream, a stream of server-sent events: "
                    "the first is the current representation, then one per change; each "
                    "event's `data` is the response schema and its `id` the ETag. A deleted "
                    "object ends the stream with `event: delete`."
                ).strip()
        responses.setdefault(
            "304",
            {
                "description": "Not Modified: If-None-Match still matches (a direct request, "
                "or a held request that timed out without a change).",
                "headers": {"ETag": dict(_ETAG_HEADER)},
            },
        )

    def _document_write(self, operation: dict[str, Any]) -> None:
        self._add_parameters(operation, [_IF_MATCH, _IF_NONE_MATCH_WRITE])
        responses = operation.setdefault("responses", {})
        ok = responses.get("200")
        if isinstance(ok, dict):
            ok.setdefault("headers", {}).setdefault("ETag", dict(_WRITE_ETAG_HEADER))
        responses.setdefault(
            "412",
            {"description": "Precondition Failed: If-Match is not the current ETag, or "
             "If-None-Match matches it; nothing was changed."},
        )


class RealtimeAutoSchema(RealtimeSchemaMixin, AutoSchema):  # type: ignore[misc]
    """drf-spectacular's ``AutoSchema`` with the realtime additions."""


_schema_classes: dict[type, type] = {AutoSchema: RealtimeAutoSchema}


def realtime_schema_class(base: type) -> type:
    """``base`` with the realtime additions; one class per base, so class checks hold."""
    if issubclass(base, RealtimeSchemaMixin):
        return base
    if base not in _schema_classes:
        _schema_classes[base] = type(f"Realtime{base.__name__}", (RealtimeSchemaMixin, base), {})
    return _schema_classes[base]


class RealtimeDefaultSchema(DefaultSchema):
    """Like DRF's ``DefaultSchema`` (the ``schema`` of every ``APIView``): an instance of
    ``DEFAULT_SCHEMA_CLASS``, with the realtime additions when that is drf-spectacular's."""

    def __get__(self, instance: Any, owner: Any) -> Any:
        result = ViewInspector.__get__(self, instance, owner)
        if not isinstance(result, RealtimeDefaultSchema):
            return result  # a schema set on this view instance (drf-spectacular does)
        base: Any = api_settings.DEFAULT_SCHEMA_CLASS  # a class once DRF resolved the setting
        if isinstance(base, type) and issubclass(base, AutoSchema):
            base = realtime_schema_class(base)
        inspector = base()
        inspector.view = instance
        return inspector


def install() -> None:
    """Give the realtime mixins :class:`RealtimeDefaultSchema` (called from
    ``AppConfig.ready()``). A mixin that already has a ``schema`` keeps it."""
    from .rest import mixins

    for name in ("RealtimeMixin", "ListRealtimeMixin", "RetrieveRealtimeMixin"):
        cls = getattr(mixins, name, None)
        # The mixins are not APIViews: a ``schema`` they have is drf-grip's own choice.
        if cls is not None and getattr(cls, "schema", None) is None:
            cls.schema = RealtimeDefaultSchema()
