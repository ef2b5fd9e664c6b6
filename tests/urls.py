from django.urls import include, path

urlpatterns = [
    path("seed/", include("tests.testapp.seed_urls")),
    path("harness/", include("tests.testapp.harness_views")),
]
