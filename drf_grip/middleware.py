"""``drf_grip.middleware.GripMiddleware``: the import path django-grip users expect."""

from .grip.middleware import GripMiddleware

__all__ = ["GripMiddleware"]
