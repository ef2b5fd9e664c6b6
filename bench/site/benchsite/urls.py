from django.conf import settings
from django.urls import include, path

from . import peer_views

urlpatterns = [path("bench/change/", peer_views.change)]

if settings.SYSTEM == "drfgrip":
    from rest_framework.routers import DefaultRouter

    from drf_grip.rest.gateway import RealtimeGateway

    from . import drfgrip_views as views

    router = DefaultRouter()
    router.register("todos", views.SharedTodoViewSet, basename="todo")
    router.register("plain-todos", views.PlainTodoViewSet, basename="plaintodo")
    router.register("private-todos", views.PrivateTodoViewSet, basename="privatetodo")
    router.register("notes", views.NoteViewSet, basename="note")
    urlpatterns += [path("api/ws/", RealtimeGateway.as_view()), path("api/", include(router.urls))]
elif settings.SYSTEM == "eventstream":
    import django_eventstream

    urlpatterns += [path("events/", include(django_eventstream.urls), {"channels": ["todos"]})]
