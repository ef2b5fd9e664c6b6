from django.urls import include, path

urlpatterns = [
    path("ws/", include("tests.testapp.ws_views")),
    path("api/", include("tests.testapp.realtime_views")),
    path("seed/", include("tests.testapp.seed_urls")),
    path("harness/", include("tests.testapp.harness_views")),
]
