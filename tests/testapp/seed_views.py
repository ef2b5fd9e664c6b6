"""django-grip's README examples (``shared/seeds/000_*.txt``) with only the imports changed.

The bodies are the README's, character for character; what had to be added is marked:

- the README names all three views ``myendpoint``, so each is bound to its own name
  right after its definition (``stream``, ``longpoll``);
- the long-polling example's ``obj = ...`` / ``etag = ...`` placeholders read and update
  ``STORE``, a module-level dict, through the small ``_get_object`` / ``_update_object``;
- the README imports ``set_hold_response`` but calls ``set_hold_longpoll``: both are imported.

The POST views are exempted from CSRF in ``seed_urls.py``, not here (the README's clients
post form data with no token).
"""

import threading

# -- the README's imports, with django_grip changed to drf_grip --------------------------------

from django.http import HttpResponse, HttpResponseNotAllowed
from gripcontrol import HttpStreamFormat
from drf_grip import set_hold_stream, publish

from django.http import HttpResponse, HttpResponseNotModified, HttpResponseNotAllowed
from gripcontrol import HttpResponseFormat
from drf_grip import set_hold_longpoll, set_hold_response, publish

from django.http import HttpResponse, HttpResponseNotAllowed
from gripcontrol import WebSocketMessageFormat
from drf_grip import websocket_only, publish

# -- added: the object behind the long-polling example's placeholders --------------------------


class _Object:
    def __init__(self, data: str, version: int) -> None:
        self.data = data
        self.version = version

    def serialize(self) -> str:
        return self.data + "\n"


STORE = {"object": _Object("hello", 1)}
_store_lock = threading.Lock()  # the origin server may run two POSTs at once


def _etag(obj: _Object) -> str:
    return f'"v{obj.version}"'


def _get_object() -> tuple:
    obj = STORE["object"]
    return obj, _etag(obj)


def _update_object(data: str) -> tuple:
    with _store_lock:
        obj = STORE["object"] = _Object(data, STORE["object"].version + 1)
    return obj, _etag(obj)


# -- HTTP streaming (README, verbatim) ----------------------------------------------------------


def myendpoint(request):
    if request.method == 'GET':
        # if the request didn't come through a GRIP proxy, throw 501
        if not request.grip_proxied:
            return HttpResponse('Not Implemented\n', status=501)

        # subscribe every incoming request to a channel in stream mode
        resp = HttpResponse('[stream open]\n', content_type='text/plain')
        set_hold_stream(request, 'test')
        return resp
    elif request.method == 'POST':
        # publish data to subscribers
        data = request.POST['data']
        publish('test', HttpStreamFormat(data + '\n'))
        return HttpResponse('Ok\n')
    else:
        return HttpResponseNotAllowed(['GET', 'POST'])


stream = myendpoint  # added


# -- HTTP long-polling (README, verbatim but for the placeholders) ------------------------------


def myendpoint(request):
    if request.method == 'GET':
        # get object and its etag
        obj, etag = _get_object()  # README: obj = ... / etag = ...

        # if object is unchanged, long-poll, else return object
        inm = request.META.get('HTTP_IF_NONE_MATCH')
        if inm == etag:
            # subscribe request to channel, return status 304 after timeout
            resp = HttpResponseNotModified()
            set_hold_longpoll(request, 'test')
        else:
            resp = HttpResponse(obj.serialize())

        resp['ETag'] = etag
        return resp
    elif request.method == 'POST':
        data = request.POST['data']

        # update object based on request, and get resulting object and its etag
        obj, etag = _update_object(data)  # README: obj = ... / etag = ...

        # publish data to subscribers
        headers = {'ETag': etag}
        publish('test', HttpResponseFormat(obj.serialize(), headers=headers))
        return HttpResponse('Ok\n')
    else:
        return HttpResponseNotAllowed(['GET', 'POST'])


longpoll = myendpoint  # added


# -- WebSockets (README, verbatim) --------------------------------------------------------------


# decorator means reject non-websocket-related requests. it also means we
#   don't need to return an HttpResponse object. the middleware will take care
#   of that for us.
@websocket_only
def echo(request):
    # since we used the decorator, this will always be a non-None value
    ws = request.wscontext

    # if this is a new connection, accept it and subscribe it to a channel
    if ws.is_opening():
        ws.accept()
        ws.subscribe('test')

    # here we loop over any messages
    while ws.can_recv():
        message = ws.recv()

        # if return value is None, then the connection is closed
        if message is None:
            ws.close()
            break

        # echo the message
        ws.send(message)

def broadcast(request):
    if request.method == 'POST':
        # publish data to all clients that are connected to the echo endpoint
        data = request.POST['data']
        publish('test', WebSocketMessageFormat(data))
        return HttpResponse('Ok\n')
    else:
        return HttpResponseNotAllowed(['POST'])


# -- added for the tests --------------------------------------------------------------------------


def longpoll_5s(request):
    """The README's long-poll with Pushpin's shortest hold (5 s), so a test can wait it out."""
    resp = longpoll(request)
    if request.grip.instruct is not None and request.grip.instruct.holds:
        request.grip.instruct.set_hold_longpoll(timeout=5)
    return resp
