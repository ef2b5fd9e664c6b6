"""The peers' side: a change endpoint that saves Todo 1 (django-eventstream also sends the list)."""

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Todo
from .serializers import TodoSerializer


@csrf_exempt
def change(request: HttpRequest) -> HttpResponse:
    title = json.loads(request.body)["title"]
    todo = Todo.objects.get(pk=1)
    todo.title = title
    todo.save()  # DCRF's model observer publishes from post_save
    from django.conf import settings

    if settings.SYSTEM == "eventstream":
        from django_eventstream import send_event

        # The whole list, like drf-grip's shared push of /api/todos/.
        data = TodoSerializer(Todo.objects.order_by("id"), many=True).data
        send_event("todos", "message", data)
    return JsonResponse({"id": todo.pk, "title": todo.title})
