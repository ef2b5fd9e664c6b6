from rest_framework.routers import DefaultRouter

from .views import NoteViewSet, TodoViewSet

router = DefaultRouter()
router.register("todos", TodoViewSet, basename="todo")
router.register("notes", NoteViewSet, basename="note")

urlpatterns = router.urls
