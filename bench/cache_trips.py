"""Round trips to the realtime cache per new subscriber, by transport and delivery.

With Redis as the shared cache each one is a network round trip, about 0.1 ms of the
origin's CPU in Django's client here (``cache.get``: 97 µs measured over 5,000 calls on a
unix socket), so they are a visible part of what connecting costs. Counted with the test
project's views and a per-process cache (the calls are the same whatever the backend; a
``get_many`` counts once)::

    python -m pytest bench/cache_trips.py -q -s

Prints one line per case: the subscriber is the second of its URL (the first one also
lists the live URL). Then, per shared live URL that a change renders and pushes (ten
filtered lists, each with a stream), what the publisher's pass costs it; and per private
gateway subscription that a change reaches, what the publisher's re-render and push cost
it (ten users, each subscribed to ``/api/todos/`` on a socket of their own). The test
process publishes to two destinations (the embedded proxy and the test kit's own sink for
``WebSocketTestClient``), so the publisher's checks per destination (before a send, and
once it is confirmed) count twice; once behind one Pushpin.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from drf_grip.rest.change_worker import wait_idle
from drf_grip.rest.store import state_cache
from tests.conftest import embedded_proxy  # noqa: F401 - a fixture: publishes reach it
from tests.drf_helpers import (
    CACHE_METHODS,
    ProxiedClient,
    StateCacheCalls,
    change_every_filtered_list,
    streamed_filtered_lists,
)
from tests.test_gateway import ask, connect
from tests.testapp.models import Todo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _publishes_reach_a_proxy(embedded_proxy: object) -> None:  # noqa: F811
    """The embedded proxy serves, as in the tests (tests/conftest.py): with none, changes
    went to the unset default and their retries failed the next test's flush."""


def test_round_trips_per_new_subscriber(monkeypatch: pytest.MonkeyPatch) -> None:
    state_cache().clear()
    Todo.objects.create(title="a")
    assert wait_idle(10)
    first, second = connect(), connect()
    client = ProxiedClient()
    ask(first, {"id": 1, "subscribe": "/api/shared-todos/"})
    ask(first, {"id": 2, "subscribe": "/api/todos/"})
    client.get("/api/shared-todos/", HTTP_ACCEPT="text/event-stream")
    client.get("/api/todos/", HTTP_ACCEPT="text/event-stream")
    assert wait_idle(10)
    counts = StateCacheCalls(monkeypatch, CACHE_METHODS)
    def stream(path: str) -> Callable[[], object]:
        return lambda: client.get(path, HTTP_ACCEPT="text/event-stream")

    def subscribe(sub_id: int, path: str) -> Callable[[], object]:
        return lambda: ask(second, {"id": sub_id, "subscribe": path})

    cases = [
        ("SSE, shared", stream("/api/shared-todos/")),
        ("SSE, private", stream("/api/todos/")),
        ("gateway subscribe, shared", subscribe(1, "/api/shared-todos/")),
        ("gateway subscribe, private", subscribe(2, "/api/todos/")),
    ]
    print()
    for label, run in cases:
        counts.calls.clear()
        run()
        tally = counts.counted()
        detail = ", ".join(f"{n} {name}" for name, n in tally.most_common())
        print(f"{label:28} {sum(tally.values()):3}  ({detail})")
        # Every subscriber reads the state: none counted means the counter watched another
        # instance than the one drf-grip uses (store.state_cache), as once it did.
        assert tally, f"{label}: no call counted"


def _counted_from_here() -> None:
    """A fresh state with one todo. This process serves every request of its per-process
    cache, so a hold it did not count is none (as with a shared cache): without saying so,
    every hint bucket of a change is hinted."""
    from drf_grip.rest.buckets import holds_counted_here

    holds_counted_here()
    state_cache().clear()
    Todo.objects.create(title="a")


def _report(label: str, counts: StateCacheCalls, per: int) -> None:
    tally = counts.counted()
    detail = ", ".join(f"{n / per:g} {name}" for name, n in tally.most_common())
    print(f"\n{label}: {sum(tally.values()) / per:g}  ({detail})")


def test_round_trips_per_private_gateway_subscription_per_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A change re-renders each private gateway subscription as its subscriber and pushes
    what changed: the calls counted here are the publisher's, per subscription pushed."""
    from drf_grip.grip.publisher import get_publisher
    from tests.test_gateway import make_user

    _counted_from_here()
    users = 10
    sockets = []
    for index in range(users):
        _user, token = make_user(f"trips{index}")
        ws = connect()
        answer = ask(ws, {"id": 1, "subscribe": "/api/todos/", "token": token})
        assert answer.get("status") == 200, answer
        sockets.append(ws)
    assert wait_idle(10) and get_publisher().flush(10)
    time.sleep(1.0)  # past the subscriptions' settles (gateway.view.SETTLE_DELAY)
    counts = StateCacheCalls(monkeypatch, CACHE_METHODS)
    Todo.objects.create(title="b")
    assert wait_idle(10) and get_publisher().flush(10)
    pushed = sum(1 for ws in sockets if not ws.receive_nothing())
    assert pushed == users, f"{pushed} of {users} subscriptions got the change"
    _report("per private gateway subscription pushed", counts, users)


def test_round_trips_per_shared_live_url_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change renders each live URL of its model once and pushes it: the calls counted
    here are the publisher's, per live URL rendered and pushed (ten filtered lists of
    ``/api/shared-todos/``, each with one SSE subscriber)."""
    _counted_from_here()
    urls = streamed_filtered_lists(10)
    counts = StateCacheCalls(monkeypatch, CACHE_METHODS)
    change_every_filtered_list()
    _report("per shared live URL rendered", counts, len(urls))
