from django.urls import include, path

from drf_grip.rest.gateway import RealtimeGateway

urlpatterns = [
    path("ws/", include("tests.testapp.ws_views")),
    path("api/ws/", RealtimeGateway.as_view()),
    path("api/", include("tests.testapp.hook_views")),
    path("api/", include("tests.testapp.realtime_views")),
    path("api/probe/", include("tests.testapp.drf_views")),
    path("seed/", include("tests.testapp.seed_urls")),
    path("harness/", include("tests.testapp.harness_views")),
]
