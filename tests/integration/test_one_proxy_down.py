"""One of two Pushpins stopped, or restarted, while writes commit (DESIGN.md §4, §9): the
clients held on the other one still reach the current representation within one second of
the last commit. ``GRIP_PROXIES`` names both, and every change is published to each; what
one proxy's outage costs its own clients must not reach the other's.

Real parts: the multi-process deployment (``conftest.py``: two uvicorn workers, Redis, two
private Pushpins) and a writer process; clients over long-poll, SSE and the WebSocket
gateway on shared and private URLs, all held on Pushpin B while Pushpin A is down.

The publisher sends to each proxy from its own lane (``drf_grip/grip/lanes.py``): the dead
proxy's connection errors and backoff hold up nothing sent to the live one
(``tests/test_publisher.py``, ``test_an_endpoint_refusing_and_retrying_holds_up_no_publish_to_another``).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.integration.conftest import Deployment
from tests.integration.fleet import (
    Fleet,
    GatewayClient,
    LongPollClient,
    StreamClient,
    Subscription,
    Writer,
    converge,
    fail,
    logged_about,
)
from tests.integration.test_multiprocess import detail_urls, list_urls, seed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

#: The promise: one second after the last commit (DESIGN.md §4). ``DRF_GRIP_CONVERGE_WITHIN``
#: widens it on an overloaded machine (CONTRIBUTING.rst).
WITHIN = float(os.environ.get("DRF_GRIP_CONVERGE_WITHIN") or 1.0)

WRITES = 40

#: ``DRF_GRIP_OUTAGE_BOTH_SIDES=1``: as many clients on Pushpin A, which fail while it is
#: down and reconnect when it is back. They add a second host's live URLs (every shared one
#: is rendered once per host, by the writer's one change thread) and their reconnections'
#: load on two shared cores; then B's clients are late with no outage as well (worst
#: 0.73-1.50 s in 4 runs; down 1.12-2.13 s, restarted 1.00-2.47 s). The time is spent
#: before the publisher: Pushpin B logged each last publish 3-28 ms after the writer
#: handed it over, also while A was down, and the writer handed it over 1.06-1.58 s after
#: the last commit.
BOTH_SIDES = bool(os.environ.get("DRF_GRIP_OUTAGE_BOTH_SIDES"))


def _fleet(deployment: Deployment, seeded: dict, proxy: int) -> Fleet:
    """Clients of every transport, all on one Pushpin."""
    pushpin = deployment.pushpins[proxy]
    keep = seeded["todos"][:3]
    tokens = [user["token"] for user in seeded["users"].values()]
    urls = [*list_urls("/api/todos/")[:4], *list_urls("/api/shared-todos/")[:4],
            *detail_urls("/api/todos/", keep[:2]), *detail_urls("/api/shared-todos/", keep[:2])]
    fleet = Fleet()
    for url in urls:
        fleet.add(LongPollClient(pushpin.url, fleet.pacer, Subscription("longpoll", url)))
        fleet.add(StreamClient(pushpin.url, fleet.pacer, Subscription("sse", url)))
    for token in tokens:
        fleet.add(LongPollClient(pushpin.url, fleet.pacer, Subscription("longpoll", "/api/notes/", token)))
        fleet.add(StreamClient(pushpin.url, fleet.pacer, Subscription("sse", "/api/notes/", token)))
    for g in range(2):
        subs = [Subscription("ws", url) for url in urls[g::2]]
        subs.append(Subscription("ws", "/api/notes/", tokens[g % len(tokens)]))
        fleet.add(GatewayClient(pushpin.ws_url, fleet.pacer, subs))
    return fleet


@pytest.mark.parametrize("outage", ["none", "down", "restarted"])
def test_clients_of_the_other_proxy_converge_within_the_bound(
    fresh_deployment: Deployment, outage: str
) -> None:
    """``none``: no outage, the baseline. ``down``: Pushpin A stops once a quarter of the
    writes are in and stays down past the last commit. ``restarted``: it stops at a quarter
    and is started again (same ports) while the writer goes on, and waits until it holds
    requests (its handler log). Pushpin B's clients are measured from the last commit."""
    report = asyncio.run(_run(fresh_deployment, outage))
    print(f"\none proxy {outage}: {report}")


async def _run(deployment: Deployment, outage: str) -> str:
    a = deployment.pushpins[0]
    seeded = seed(deployment)
    fleet = _fleet(deployment, seeded, 1)
    # Clients of A too (not measured): reconnecting once it is back, as in a deployment.
    others = _fleet(deployment, seeded, 0) if BOTH_SIDES else Fleet()
    user_ids = [user["id"] for user in seeded["users"].values()]
    writer = Writer(deployment.env, {"rng": 7, "writes": WRITES, "keep": seeded["todos"][:3],
                                     "users": user_ids, "pace": 0.05})
    fleet.start()
    others.start()
    try:
        await fleet.held(timeout=60)
        await others.held(timeout=60)
        await writer.start()
        await writer.wait_written(WRITES // 4)
        if outage != "none":
            await asyncio.to_thread(a.stop_for_restart)
        if outage == "restarted":
            await asyncio.to_thread(a.start_again)
        await writer.done.wait()
        result = await converge(fleet, writer.last_commit, within=WITHIN)
        if outage == "down":
            await asyncio.to_thread(a.start_again)  # the writer's retries then reach it
        assert await writer.exit() == 0, writer.output
    finally:
        await fleet.stop()
        await others.stop()
    report = f"{len(fleet.clients)} clients on Pushpin B, {writer.written} writes; {result.summary()}"
    logged = logged_about(deployment.workers.log, [writer], [*result.wrong, *result.late])
    fail(report, ("never converged", result.wrong), (f"later than {WITHIN}s", result.late),
         logged=logged)
    return report
