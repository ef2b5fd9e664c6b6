"""A 20-byte JSON answer to every HTTP request, for ``bench/probes.py nodelay``: what it
measures is how the server writes a response, not what the app does."""


async def app(scope, receive, send):  # noqa: ANN001, ANN201 - the ASGI signature
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")]})
    await send({"type": "http.response.body", "body": b'{"plain": "answer!"}'})
