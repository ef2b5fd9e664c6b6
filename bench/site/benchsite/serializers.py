from rest_framework import serializers

from .models import Note, PlainTodo, PrivateTodo, Todo


class TodoSerializer(serializers.ModelSerializer):
    class Meta:
        model = Todo
        fields = ["id", "title", "done"]


class PlainTodoSerializer(serializers.ModelSerializer):
    class Meta:
        model = PlainTodo
        fields = ["id", "title", "done"]


class PrivateTodoSerializer(serializers.ModelSerializer):
    class Meta:
        model = PrivateTodo
        fields = ["id", "title", "done"]


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text"]
