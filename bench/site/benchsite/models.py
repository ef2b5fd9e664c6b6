from django.conf import settings
from django.db import models


class Todo(models.Model):
    """The list every watcher of the shared and peer cases watches."""

    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)


class PlainTodo(models.Model):
    """Same fields, no realtime viewset: the 'publishing off' side of the throughput case."""

    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)


class PrivateTodo(models.Model):
    """A list served with private delivery: every watcher sees all rows, each as itself."""

    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)


class Note(models.Model):
    """Per-user rows for the partition case: each user watches only their own."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)
