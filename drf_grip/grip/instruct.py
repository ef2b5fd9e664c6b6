"""Transitional: ``drf_grip/rest/gateway.py`` (being split on another branch) still imports
``MAX_CHANNELS`` from here. The instruction model lives in ``drf_grip.protocol.instruct``;
delete this module once the gateway imports ``MAX_CHANNELS`` from ``drf_grip.protocol``."""

from ..protocol.constants import MAX_CHANNELS

__all__ = ["MAX_CHANNELS"]
