import time, jwt, pytest
from django.http import HttpResponse, HttpResponseNotModified
from django.test import override_settings, Client
from django.urls import path
from drf_grip import set_hold_longpoll, set_hold_stream, websocket_only, publish
from drf_grip.protocol.events import encode_events, WebSocketEvent

KEY = "a-pushpin-key-of-at-least-32-bytes!!"
def sig(key=KEY, iss="pushpin", exp_in=3600):
    return jwt.encode({"iss": iss, "exp": int(time.time()) + exp_in}, key, algorithm="HS256")

def lp(request):
    r = HttpResponseNotModified(); set_hold_longpoll(request, "test", timeout=int(request.GET.get("t", "30"))); r["ETag"] = '"x"'; return r
def st(request):
    r = HttpResponse("open\n"); set_hold_stream(request, ["a", "b"], "ka\n", 10); return r
@websocket_only
def echo(request):
    ws = request.wscontext
    if ws.is_opening():
        ws.accept(); ws.subscribe("test")
    while ws.can_recv():
        m = ws.recv()
        if m is None:
            ws.close(); break
        ws.send(m)
def info(request):
    g = request.grip
    return HttpResponse(f"{request.grip_proxied} {g.proxied} {g.signed} {sorted(g.features)} {g.last}")

urlpatterns = [path("lp/", lp), path("st/", st), path("echo/", echo), path("info/", info)]

@override_settings(ROOT_URLCONF=__name__, GRIP_URL=f"http://127.0.0.1:5561/?iss=pushpin&key={KEY}", GRIP_PREFIX="p-")
def test_probe():
    c = Client()
    r = c.get("/lp/", HTTP_GRIP_SIG=sig())
    print("LP", r.status_code, dict(r.headers))
    r = c.get("/lp/?t=0", HTTP_GRIP_SIG=sig())
    print("LP0", r.status_code, dict(r.headers))
    r = c.get("/lp/")
    print("LP direct", r.status_code, dict(r.headers))
    r = c.get("/st/", HTTP_GRIP_SIG=sig())
    print("ST", r.status_code, dict(r.headers), r.content)
    body = encode_events([WebSocketEvent("OPEN")])
    r = c.post("/echo/", body, content_type="application/websocket-events", HTTP_GRIP_SIG=sig(), HTTP_CONNECTION_ID="c1")
    print("WS open", r.status_code, dict(r.headers), r.content)
    body = encode_events([WebSocketEvent("TEXT", b"hi"), WebSocketEvent("CLOSE", b"\x03\xe8")])
    r = c.post("/echo/", body, content_type="application/websocket-events", HTTP_GRIP_SIG=sig(), HTTP_CONNECTION_ID="c1")
    print("WS msg", r.status_code, dict(r.headers), r.content)
    r = c.get("/info/", HTTP_GRIP_SIG=sig(), HTTP_GRIP_FEATURE="status, link:next", HTTP_GRIP_LAST="p-test; last-id=3")
    print("INFO", r.content)
    r = c.get("/info/", HTTP_GRIP_SIG="junk", HTTP_GRIP_FEATURE="status", HTTP_GRIP_LAST="p-test; last-id=3")
    print("INFO junk", r.content)
    with override_settings(GRIP_PROXY_REQUIRED=True):
        print("REQ", c.get("/lp/").status_code, c.get("/st/").status_code)
