"""djangochannelsrestframework: a consumer whose clients subscribe to every Todo change."""

from djangochannelsrestframework.decorators import action
from djangochannelsrestframework.generics import GenericAsyncAPIConsumer
from djangochannelsrestframework.observer import model_observer
from rest_framework import permissions

from .models import Todo
from .serializers import TodoSerializer


class TodoConsumer(GenericAsyncAPIConsumer):
    queryset = Todo.objects.all()
    serializer_class = TodoSerializer
    permission_classes = [permissions.AllowAny]

    @model_observer(Todo)
    async def todo_activity(self, message, observer=None, **kwargs):
        await self.send_json(message)

    @todo_activity.serializer
    def todo_activity(self, instance, action, **kwargs):
        return {"action": str(action), "data": TodoSerializer(instance).data}

    @action()
    async def subscribe_todos(self, request_id, **kwargs):
        await self.todo_activity.subscribe(request_id=request_id)
        return {}, 200
