from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "benchsite"
    default_auto_field = "django.db.models.AutoField"
