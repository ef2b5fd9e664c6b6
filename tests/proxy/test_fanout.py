"""One publish to many held long-polls: the work per subscriber stays small (issue 10)."""

from __future__ import annotations

import asyncio

import httpx

from drf_grip.proxy import http as proxy_http
from drf_grip.proxy.mailbox import Mailbox

from .conftest import Origin, ProxyServer, Response, in_thread, run

HOLD = [("Grip-Hold", "response"), ("Content-Type", "text/plain"), ("ETag", '"v1"')]
WATCHERS = 20


def test_a_mailbox_wait_creates_no_task_and_returns_on_put():
    async def scenario() -> tuple[int, int, bool]:
        box: Mailbox[str] = Mailbox(10, 1 << 20)
        before = len(asyncio.all_tasks())
        waiting = asyncio.get_running_loop().create_task(box.wait(30))
        await asyncio.sleep(0)
        during = len(asyncio.all_tasks())  # the waiter itself only: wait_for added another
        box.put("item", 4)
        await asyncio.wait_for(waiting, 5)
        return before, during, box.pop() == "item"

    before, during, popped = run(scenario())
    assert during == before + 1
    assert popped


def test_answers_owed_to_a_client_never_overflow_its_mailbox_nor_use_its_publish_room():
    overflows: list[bool] = []
    box: Mailbox[str] = Mailbox(2, 1 << 20, on_overflow=lambda: overflows.append(True))

    answered = [box.put(f"answer {n}", 10, owed=True) for n in range(5)]
    published = [box.put(f"publish {n}", 10) for n in range(3)]

    assert answered == [True] * 5 and published == [True, True, False] and overflows == [True]
    assert (box.owed_items, box.owed_bytes) == (5, 50)
    assert [box.pop() for _ in range(len(box))] == [
        "answer 0", "answer 1", "answer 2", "answer 3", "answer 4", "publish 0", "publish 1"
    ]
    assert (box.owed_items, box.owed_bytes) == (0, 0)


def test_a_mailbox_wait_times_out_and_a_wake_before_the_wait_is_kept():
    async def scenario() -> None:
        box: Mailbox[str] = Mailbox(10, 1 << 20)
        await asyncio.wait_for(box.wait(0.01), 5)  # times out by itself
        box.wake()
        await asyncio.wait_for(box.wait(30), 5)  # returns at once: the wake was not lost

    run(scenario())


def test_one_publish_builds_the_response_head_once_for_all_alike_holds(
    server: ProxyServer, origin: Origin, monkeypatch
):
    origin.route("/list/")(lambda r: Response(200, HOLD + [("Grip-Channel", "list")], "old"))
    merges = []
    real_replace = proxy_http.replace_headers

    def counting_replace(base, overrides):
        merges.append(1)
        return real_replace(base, overrides)

    monkeypatch.setattr(proxy_http, "replace_headers", counting_replace)

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url) as client:
            polls = [asyncio.ensure_future(client.get("/list/")) for _ in range(WATCHERS)]
            assert await in_thread(server.proxy.wait_for_subscribers, "list", WATCHERS)
            await in_thread(server.publish, {
                "channel": "list",
                "formats": {"http-response": {"code": 200, "headers": {"ETag": '"v2"'},
                                              "body": "new"}},
            })
            return await asyncio.gather(*polls)

    responses = run(scenario())
    assert [r.text for r in responses] == ["new"] * WATCHERS
    assert {r.headers["etag"] for r in responses} == {'"v2"'}
    # Holds whose answers differ only by Date may split into a few bases, never one per hold.
    assert 1 <= len(merges) <= 3
