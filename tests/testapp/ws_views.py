"""The WebSocket seeds' examples, written against drf_grip; include at ``ws/``.

- django-grip: ``echo/`` (``websocket_only`` + ``request.wscontext``, subscribed to channel
  ``test``) and ``broadcast/`` (POST ``data`` -> every ``echo/`` client);
- django-websocket: ``echo-once/`` (``require_websocket``, ``wait``/``send``) and
  ``lowercase/`` (``accept_websocket``, ``?message=`` over plain HTTP too);
- django-pistoke: ``room/<name>/`` (a ``JSONWebSocketView`` with subprotocols ``chat.v1``
  and ``chat.v2`` that also renders a page for GET) and ``room/<name>/post/`` (publish to a
  room); ``pistoke-json/`` (its JSON protocol in its own loop), ``versioned/`` (subprotocol
  choice), ``async-hooks/``;
- ``remember/``: the connection's meta, set by one message and read by a later one.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import path
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from gripcontrol import WebSocketMessageFormat

from drf_grip import accept_websocket, publish, require_websocket, websocket_only
from drf_grip.websocket import JSONWebSocketView, WebSocketView

# -- django-grip's README, imports changed -------------------------------------------------


@websocket_only
def echo(request: HttpRequest) -> None:
    ws = request.wscontext
    if ws.is_opening():
        ws.accept()
        ws.subscribe("test")
    while ws.can_recv():
        message = ws.recv()
        if message is None:
            ws.close()
            break
        ws.send(message)


@websocket_only
def first_only(request: HttpRequest) -> None:
    """django-grip's API, answering the first message of each batch only."""
    ws = request.wscontext
    if ws.is_opening():
        ws.accept()
    if ws.can_recv():
        ws.send(ws.recv())


@csrf_exempt
def broadcast(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        publish("test", WebSocketMessageFormat(request.POST["data"]))
        return HttpResponse("Ok\n")
    return HttpResponseNotAllowed(["POST"])


# -- django-websocket's README -------------------------------------------------------------


@require_websocket
def echo_once(request: HttpRequest) -> None:
    # django-websocket's README example, verbatim.
    message = request.websocket.wait()
    request.websocket.send(message)


def modify_message(message: str) -> str:
    return message.lower()


def lower_case_by_attribute(request: HttpRequest) -> HttpResponse | None:
    """django-websocket's README view; here by its middleware's way, the view's
    ``accept_websocket`` attribute, and below with its decorator."""
    if not request.is_websocket():
        return HttpResponse(modify_message(request.GET["message"]))
    for message in request.websocket:
        request.websocket.send(modify_message(message))
    return None


lower_case = accept_websocket(lower_case_by_attribute)
lower_case_by_attribute.accept_websocket = True  # type: ignore[attr-defined]


def greet(request: HttpRequest) -> HttpResponse | None:
    """No WebSocket decorator nor attribute: takes WebSockets with ``WEBSOCKET_ACCEPT_ALL``."""
    if request.is_websocket():
        request.websocket.send("hello")
        return None
    return HttpResponse("hello")


# -- django-pistoke: a class-based view serving a page and a JSON WebSocket ----------------


def room_channel(name: str) -> str:
    return f"room-{name}"


class Room(JSONWebSocketView):
    subprotocols = ["chat.v1", "chat.v2"]

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        return HttpResponse(f"<h1>Room {name}</h1>", content_type="text/html")

    def websocket_open(self, request: HttpRequest) -> None:
        request.wscontext.subscribe(room_channel(self.kwargs["name"]))
        request.websocket.send_json({"joined": self.kwargs["name"]})

    def websocket_message(self, request: HttpRequest, message: Any) -> None:
        request.websocket.send_json({"echo": message})


class AsyncEcho(WebSocketView):
    """django-pistoke's way: ``async def websocket(self, request)``."""

    async def websocket(self, request: HttpRequest) -> None:
        ctx = request.wscontext
        if ctx.is_opening():
            ctx.accept()
        while ctx.can_recv():
            message = ctx.recv()
            if message is None:
                break
            ctx.send(message.upper())


class PistokeEcho(WebSocketView):
    """django-pistoke's README view: ``await request.receive()`` and ``request.send()`` in a
    loop that never ends by itself."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("page")

    async def websocket(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        while True:
            message = await request.receive()
            if isinstance(message, str):
                await request.send(f'You wrote "{message}".')
            elif isinstance(message, bytes):
                await request.send(f'You wrote "{message.decode("latin-1")}".'.encode("latin-1"))


class PistokeJSON(JSONWebSocketView):
    """django-pistoke's JSON protocol (``WebsocketJSONProtokolla``) kept in its own loop:
    ``receive()`` gives parsed JSON, ``send()`` takes data to encode."""

    async def websocket(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        while True:
            data = await request.receive()
            await request.send({"type": type(data).__name__, "echo": data})


class Versioned(WebSocketView):
    """Speaks ``v2`` or ``v1``; every message is answered with the subprotocol in use."""

    subprotocols = ["v2", "v1"]

    def websocket_message(self, request: HttpRequest, message: Any) -> None:
        request.websocket.send(f"{request.wscontext.subprotocol}:{message}")


class AsyncHooks(WebSocketView):
    """The hooks written ``async def``."""

    async def websocket_open(self, request: HttpRequest) -> None:
        request.websocket.send("welcome")

    async def websocket_message(self, request: HttpRequest, message: Any) -> None:
        request.websocket.send(message.upper())


@accept_websocket
async def pistoke_function(request: HttpRequest) -> HttpResponse | None:
    """django-pistoke's function view: one ``async def`` for HTTP and WebSocket."""
    if not request.is_websocket():
        return HttpResponse("page")
    while True:
        await request.send((await request.receive()).upper())


class PlainView(View):
    """django-pistoke's rule without its ``WebsocketNakyma``: a ``View`` allowing the
    ``websocket`` method gets WebSocket traffic there."""

    http_method_names = [*View.http_method_names, "websocket"]

    async def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("page")

    async def websocket(self, request: HttpRequest) -> None:
        while True:
            message = await request.receive()
            await request.send(f'You wrote "{message}".')


@accept_websocket
def chooses_subprotocol(request: HttpRequest) -> None:
    """A function view choosing the client's last offer, echoing the choice per message."""
    if request.wscontext.is_opening():
        request.websocket.accept(request.websocket.protocols[-1])
    for message in request.websocket:
        request.websocket.send(f"{request.wscontext.subprotocol}:{message}")


#: ``websocket_close`` calls of ``Closer``, per ``?ch=``: the code and reason the origin heard.
CLOSES: dict[str, list[tuple[int | None, str]]] = {}


class Closer(WebSocketView):
    """Subscribed to ``?ch=``; "bye" closes with 4000 "later", "detach" detaches; records
    each close it is told of in ``CLOSES``."""

    def websocket_open(self, request: HttpRequest) -> None:
        request.wscontext.subscribe(request.GET["ch"])

    def websocket_message(self, request: HttpRequest, message: Any) -> None:
        if message == "bye":
            request.websocket.close(4000, "later")
        elif message == "detach":
            request.wscontext.detach()

    def websocket_close(self, request: HttpRequest, code: int | None) -> None:
        CLOSES.setdefault(request.GET["ch"], []).append((code, request.wscontext.close_reason))


@websocket_only
def remember(request: HttpRequest) -> None:
    """The connection's meta, from message to message: ``name=value`` sets it, ``?name``
    answers what is kept (``-`` for nothing)."""
    ws = request.wscontext
    if ws.is_opening():
        ws.accept()
    while ws.can_recv():
        message = ws.recv()
        if message is None:
            ws.close()
            break
        if str(message).startswith("?"):
            ws.send(ws.meta.get(message[1:], "-"))
        else:
            name, _, value = str(message).partition("=")
            ws.meta[name] = value
            ws.send("ok")


@csrf_exempt
def room_post(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    publish(room_channel(name), WebSocketMessageFormat(request.body.decode("utf-8")))
    return HttpResponse("Ok\n")


urlpatterns = [
    path("echo/", echo),
    path("broadcast/", broadcast),
    path("echo-once/", echo_once),
    path("first-only/", first_only),
    path("pistoke-echo/", PistokeEcho.as_view()),
    path("pistoke-function/", pistoke_function),
    path("pistoke-json/", PistokeJSON.as_view()),
    path("versioned/", Versioned.as_view()),
    path("async-hooks/", AsyncHooks.as_view()),
    path("lowercase/", lower_case),
    path("lowercase-attribute/", lower_case_by_attribute),
    path("greet/", greet),
    path("room/<slug:name>/", Room.as_view()),
    path("room/<slug:name>/post/", room_post),
    path("async-class/", AsyncEcho.as_view()),
    path("closer/", Closer.as_view()),
    path("remember/", remember),
    path("plain-view/", PlainView.as_view()),
    path("chooses-subprotocol/", chooses_subprotocol),
]
