"""What a realtime request is, in one typed object: ``request.drf_grip``.

A realtime read records a :class:`RealtimePolicy` when the client subscribes: the decisions
the view's hooks made (delivery, model, kind, channels, partition). The publisher reads the
policy back instead of guessing from class attributes. Requests the server makes for a
subscriber (a shared render, a stream's next link, a gateway subscription) carry a
:class:`RealtimeContext` that says which of these they are; nothing else steers the mixin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["RealtimePolicy", "RealtimeContext", "context_of", "SHARED", "PRIVATE"]

PRIVATE = "private"
SHARED = "shared"

Role = Literal["client", "shared-render", "next-link", "gateway-subscribe", "gateway-render"]


@dataclass
class RealtimePolicy:
    """One subscription's realtime decisions, as the view's hooks made them."""

    delivery: str
    model: str  # app_label.model_name
    kind: str  # "list" or "detail"
    channels: list[str]
    versions: dict[str, str | None] = field(default_factory=dict)
    #: The object a detail subscription watches, when known.
    pk: str | None = None
    #: Its URL names the object by another unique field (``lookup_field = "slug"``): another
    #: object can take that value over, and the URL then names it.
    by_value: bool = False
    #: The partition value of a private subscription (``realtime_partition``), if any.
    partition: str | None = None
    #: Shared delivery: the live URL (path and the query the view reads).
    url: str | None = None
    #: ``module:QualName`` of the view, so any process can call its publishing hooks.
    view: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RealtimeContext:
    """Set on a request that the server runs for a subscriber (``request.drf_grip``)."""

    role: Role = "client"
    #: The last ETag the subscriber holds (a next link's stream, a gateway subscription).
    etag: str | None = None
    #: The user the subscription was made by (pk as text), to notice revocation.
    user: str | None = None
    #: Filled in by the view: what this subscription decided.
    policy: RealtimePolicy | None = None
    #: Filled in by the view: the representation's ETag and whether the user still matches.
    result_etag: str | None = None
    #: Filled in by a shared stream's answer: the version it holds the live URL at.
    result_held: str | None = None
    revoked: bool = False
    #: Extra state of the role (the stream's next-link state, ...).
    state: dict[str, Any] = field(default_factory=dict)


def context_of(request: Any) -> RealtimeContext | None:
    """The realtime context of a Django or DRF request, if the server made it."""
    inner = getattr(request, "_request", request)
    return getattr(inner, "drf_grip", None)
