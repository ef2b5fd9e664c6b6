"""A no-lost-update soak (DESIGN.md §4), bounded in time: clients mixing long-poll, SSE and
gateway subscriptions on shared and private URLs (filtered, paginated, detail, per-user
notes), reconnecting at random with what they hold (the last ETag, ``Last-Event-ID``, a
resubscription), while several writer processes commit. At the end every client holds what
a fresh GET by it returns, within one second of the last commit; and still does once every
publisher has flushed (a retried publish never moves a client back).

Small by default (CI); ``DRF_GRIP_SOAK=large`` runs 200 clients and 1,000 writes from four
writers. The deployment is the multi-process one (``conftest.py``): two uvicorn workers,
two Pushpins, a private Redis.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass

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
    fresh,
    logged_about,
)
from tests.integration.test_multiprocess import detail_urls, list_urls, seed

#: Wider than the promise (one second, which ``DRF_GRIP_CONVERGE_WITHIN=1`` checks): with
#: two writer processes, random reconnects and a proxy restart on two shared cores the
#: slowest client measured up to 0.75 s. Known to exceed both: Pushpin's last id for a
#: channel can go back when two renders cross on the way while a hold conflict cleared it,
#: and the next render then waits 5 s in its sequencer (once in 35 runs, a client 3.5 s
#: late; NOTES.rst, issue 9, eighth session). Lost updates fail at any bound.
WITHIN = float(os.environ.get("DRF_GRIP_CONVERGE_WITHIN") or 2.5)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Size:
    clients: int
    writes: int
    writers: int
    #: Mean pause between two writes of one writer, in seconds.
    pace: float
    #: Random reconnects per second, over all clients.
    kicks: float


SIZES = {
    "small": Size(clients=40, writes=150, writers=2, pace=0.04, kicks=4.0),
    "large": Size(clients=200, writes=1000, writers=4, pace=0.03, kicks=15.0),
}


def size() -> Size:
    name = os.environ.get("DRF_GRIP_SOAK", "small")
    assert name in SIZES, f"DRF_GRIP_SOAK is one of {', '.join(SIZES)}, not {name!r}"
    return SIZES[name]


def build_fleet(deployment: Deployment, seeded: dict, clients: int, rng: random.Random) -> Fleet:
    keep = seeded["todos"][:4]
    tokens = [user["token"] for user in seeded["users"].values()]
    shared = [*list_urls("/api/todos/"), *list_urls("/api/shared-todos/"),
              *detail_urls("/api/todos/", keep), *detail_urls("/api/shared-todos/", keep)]

    def pick() -> Subscription:
        if rng.random() < 0.2:
            return Subscription("", "/api/notes/", rng.choice(tokens))
        return Subscription("", rng.choice(shared))

    fleet = Fleet()
    for i in range(clients):
        proxy = deployment.pushpins[i % len(deployment.pushpins)]
        kind = ("longpoll", "sse", "ws")[i % 3]
        if kind == "ws":
            subs = [pick() for _ in range(rng.randint(1, 4))]
            for sub in subs:
                sub.transport = "ws"
            fleet.add(GatewayClient(proxy.ws_url, fleet.pacer, subs))
            continue
        sub = pick()
        sub.transport = kind
        transport = LongPollClient if kind == "longpoll" else StreamClient
        fleet.add(transport(proxy.url, fleet.pacer, sub))
    return fleet


@pytest.mark.parametrize("restart", [False, True], ids=["steady", "proxy-restart"])
def test_no_lost_update(fresh_deployment: Deployment, restart: bool) -> None:
    """``proxy-restart``: both Pushpins stop once 40% of the writes are in, the writers
    make the rest (the last writes) while they are down and keep retrying their publishes,
    then the Pushpins come back on the same ports; clients reconnect with what they hold.
    The second is then measured from the moment the proxies are back."""
    chosen = size()
    report = asyncio.run(_soak(fresh_deployment, chosen, restart))
    print(f"\nsoak ({'proxy restart' if restart else 'steady'}): {report}")


async def _soak(deployment: Deployment, chosen: Size, restart: bool) -> str:
    rng = random.Random(9 + restart)
    seeded = seed(deployment, users=("ann", "ben", "cid", "dee"), todos=20)
    fleet = build_fleet(deployment, seeded, chosen.clients, rng)
    user_ids = [user["id"] for user in seeded["users"].values()]
    writer_env = {**deployment.env, "TEST_PUBLISH_FLUSH_TIMEOUT": "90"}
    per_writer = chosen.writes // chosen.writers
    writers = [
        Writer(writer_env, {"rng": 100 + k, "writes": per_writer, "keep": seeded["todos"][:4],
                            "users": user_ids, "pace": chosen.pace})
        for k in range(chosen.writers)
    ]
    started, started_at = time.monotonic(), time.time()
    fleet.start()
    stop_chaos = asyncio.Event()
    back = 0.0
    try:
        await fleet.held(timeout=120)
        chaos = asyncio.create_task(fleet.chaos(stop_chaos, chosen.kicks, rng))
        for writer in writers:
            await writer.start()
        if restart:
            while sum(w.written for w in writers) < 0.4 * chosen.writes:
                await asyncio.sleep(0.01)
            # Clients reconnect once the restarted Pushpins are ready (the harness sends an
            # item through the handler first), as behind a load balancer's readiness check: a
            # Pushpin just started may fail to hand its first held requests to its handler,
            # and those clients hang (seen in a kept log: a long-poll and a stream that
            # connected 0.2 s after the start got nothing; PushpinServer._handler_delivers).
            fleet.pacer.close()
            for pushpin in deployment.pushpins:
                pushpin.stop_for_restart()
        for writer in writers:
            await writer.done.wait()
        stop_chaos.set()
        await chaos
        if restart:
            for pushpin in deployment.pushpins:
                await asyncio.to_thread(pushpin.start_again)
            back = time.time()
            fleet.pacer.open()
        last_commit = max(w.last_commit for w in writers)
        since = max(last_commit, back)
        # Both Pushpins were down at the last commit: each client is measured from the
        # later of their return and its own reconnection (DESIGN.md §4, "one that
        # reconnects"); the steady soak from the last commit.
        result = await converge(fleet, since, within=WITHIN, patience=30 if restart else 10,
                                from_reconnect=restart)
        # Every publisher flushed (retries included): nothing older may arrive afterwards.
        for writer in writers:
            assert await writer.exit() == 0, "\n".join(writer.output)
        want = await fresh(fleet.subscriptions)
        moved_back = [
            f"{sub.describe()}: holds {sub.etag}; received after the last commit: "
            + ", ".join(f"{t - since:+.2f}s {e}" for t, e in sub.history if t >= since - 1)
            for sub in fleet.subscriptions
            if sub.body != want[(sub.base, sub.url, sub.token)]
        ]
    finally:
        stop_chaos.set()
        await fleet.stop()

    written = sum(w.written for w in writers)
    counts = {t: sum(1 for s in fleet.subscriptions if s.transport == t) for t in ("longpoll", "sse", "ws")}
    kicks = sum(c.kicks for c in fleet.clients)
    report = (
        f"{len(fleet.clients)} clients ({counts} subscriptions), {written} writes from "
        f"{len(writers)} writer processes, {kicks} random reconnects; {result.summary()}"
        f"{'' if not restart else f'; proxies back {back - last_commit:.1f}s after the last commit'}"
        f"; {time.monotonic() - started:.1f}s in all"
    )
    logged = logged_about(deployment.workers.log, writers,
                          [*result.wrong, *moved_back, *result.late], since=started_at)
    fail(report, ("never converged", result.wrong),
         ("moved back after the publishers flushed", moved_back),
         (f"later than {WITHIN}s", result.late), logged=logged)
    return report
