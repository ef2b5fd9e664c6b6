from django.conf import settings
from django.db import models


class Todo(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]


class Note(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField()

    class Meta:
        ordering = ["-id"]


class Post(models.Model):
    title = models.CharField(max_length=200)
    tags = models.ManyToManyField("Tag", blank=True)


class Comment(models.Model):
    post = models.ForeignKey(Post, related_name="comments", on_delete=models.CASCADE)
    text = models.TextField()


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=200)


class Task(models.Model):
    project = models.ForeignKey(Project, related_name="tasks", on_delete=models.CASCADE)
    title = models.CharField(max_length=200)

    class Meta:
        ordering = ["id"]


class OpenTodo(Todo):
    """A proxy: saved through it, a todo is still a todo (/api/todos/ wakes)."""

    class Meta:
        proxy = True


class Place(models.Model):
    name = models.CharField(max_length=200)


class Restaurant(Place):
    """Multi-table inheritance: saving one writes its Place row too (/api/places/)."""

    serves_pizza = models.BooleanField(default=False)


class Team(models.Model):
    name = models.CharField(max_length=200)
    members = models.ManyToManyField("Member", through="Membership", related_name="teams")


class Member(models.Model):
    name = models.CharField(max_length=200)


class Membership(models.Model):
    """A custom ``through``: rows created directly send no ``m2m_changed``."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    member = models.ForeignKey(Member, on_delete=models.CASCADE)
    role = models.CharField(max_length=50, default="member")


class Bookmark(models.Model):
    """Kept when its todo is deleted: Django sets ``todo`` to NULL with an UPDATE, no signal."""

    todo = models.ForeignKey(Todo, null=True, on_delete=models.SET_NULL, related_name="+")
    label = models.CharField(max_length=200)


class Article(models.Model):
    """Looked up by its slug (``lookup_field = "slug"``) in the views that serve it."""

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
