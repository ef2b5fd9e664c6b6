"""Channel names: the one place that decides them (STYLE.md: one way to do each thing).

A model has a list channel (any change to any row), a channel per object, and a bulk
channel (a change announced for the whole model, e.g. after ``queryset.update()``).
Shared views also get a channel per live URL, and each WebSocket gateway connection one of
its own. Names contain no ``,`` or ``;`` (they
separate channels and parameters in ``Grip-Channel``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from django.db.models import Model

__all__ = [
    "model_label",
    "list_channel",
    "object_channel",
    "bulk_channel",
    "shared_bulk_channel",
    "shared_recovery_channel",
    "url_channel",
    "connection_channel",
    "gateway_recovery_channel",
    "partition_channel",
    "channels_for_change",
]

_SAFE = re.compile(r"^[A-Za-z0-9_\-.:@]{1,64}$")


def model_label(model: type[Model] | Model) -> str:
    return model._meta.label_lower


def object_channel_part(pk: Any) -> str:
    """A primary key as a channel-name part (hashed when it has other characters)."""
    return _pk_part(pk)


def _pk_part(pk: Any) -> str:
    text = str(pk)
    if _SAFE.match(text):
        return text
    return "h" + hashlib.sha256(text.encode()).hexdigest()[:24]


def list_channel(model: type[Model]) -> str:
    return f"drf.{model_label(model)}"


def object_channel(model: type[Model], pk: Any) -> str:
    return f"drf.{model_label(model)}.{_pk_part(pk)}"


def bulk_channel(model: type[Model]) -> str:
    return f"drf.{model_label(model)}.*"


def shared_bulk_channel(model: type[Model]) -> str:
    """The bulk channel of shared detail holds, hinted by a change naming no object only
    when the model's detail URLs are past the index's cap (``live_urls.py``). Not the private
    views' bulk channel: their hint re-requested every shared detail hold, which the proxy
    then held again with its whole timeout, so a long-poll under such changes never timed
    out (publishing probe)."""
    return f"drf.{model_label(model)}.*bulk"


def shared_recovery_channel(model: type[Model]) -> str:
    """A channel every shared hold of the model also holds on, hinted only when the cache
    lost the live URLs that name its holds (publishing.publish_model): a pk never has a
    ``*`` (``_pk_part``), so no object channel takes this name."""
    return f"drf.{model_label(model)}.*shared"


def partition_channel(model: type[Model], partition: str) -> str:
    """The list channel of one partition of a model (``realtime_partition``)."""
    return f"drf.{model_label(model)}.p.{_pk_part(partition)}"


def url_channel(live_key: str) -> str:
    return "drf.url." + hashlib.sha256(live_key.encode()).hexdigest()[:32]


def connection_channel(connection_key: str) -> str:
    """The channel of one gateway WebSocket connection (private subscription changes)."""
    return f"drf.ws.{connection_key}"


def gateway_recovery_channel(epoch: str = "") -> str:
    """The channels every gateway connection with subscriptions also holds, published to only
    when the cache lost their state (``gateway.connections``): one for all such connections,
    and one per epoch of the recording mark (``policies.recording_epoch()``) for those that
    subscribed under it. A connection key is hex, so no connection's channel takes these
    names."""
    return f"drf.ws.*recover.{epoch}" if epoch else "drf.ws.*recover"


def channels_for_change(
    model: type[Model], pks: set[Any] | None, partitions: set[str] | None = None
) -> list[str]:
    """Private channels a change wakes: the list (or, for a partitioned view, the changed
    partitions' lists), and each object (or the bulk channel)."""
    if partitions is None or pks is None:
        out = [list_channel(model)]
    else:
        out = [partition_channel(model, p) for p in sorted(partitions)]
    if pks is None:
        out.append(bulk_channel(model))
    else:
        out.extend(object_channel(model, pk) for pk in sorted(pks, key=str))
    return out
