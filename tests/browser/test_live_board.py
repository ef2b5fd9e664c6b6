"""The sample's live board in a real Chromium: two pages, one change, every transport, through
the embedded proxy and through Pushpin; and a server restart that loses no update."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from .conftest import Board

TRANSPORTS = ["longpoll", "sse", "ws"]
# The contract is one second (DESIGN.md §4); the issue asks the browser for two, which also
# covers the click and the page's own rendering.
WITHIN_MS = 2000
# Reconnect backoff cap for the pages under test (?max_delay=): a restart then costs about a
# second instead of the default fifteen.
MAX_DELAY_MS = 1000

_titles = itertools.count(1)

# Records when each todo title first appeared on the page (the page's own clock).
_WATCH_TITLES = """() => {
  window.seenAt = new Map();
  const note = () => {
    for (const node of document.querySelectorAll("#todos .title")) {
      if (!window.seenAt.has(node.textContent)) window.seenAt.set(node.textContent, Date.now());
    }
  };
  note();
  new MutationObserver(note).observe(document.getElementById("todos"), {childList: true, subtree: true});
  const badge = document.getElementById("state");
  window.stateLog = [[Date.now(), badge.dataset.state]];
  new MutationObserver(() => window.stateLog.push([Date.now(), badge.dataset.state]))
    .observe(badge, {attributes: true, attributeFilter: ["data-state"]});
}"""


def history(page: Any, since: int) -> str:
    """The page's connection states since ``since``, for failure messages."""
    log = page.evaluate("window.stateLog")
    return ", ".join(f"{state} at {at - since:+d} ms" for at, state in log)


def unique_title(label: str) -> str:
    return f"{label} {next(_titles)} {time.monotonic_ns()}"


def open_board(context: Any, board: Board, transport: str) -> Any:
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{board.url}/?transport={transport}&max_delay={MAX_DELAY_MS}")
    wait_state(page, "live")
    page.evaluate(_WATCH_TITLES)
    return page


def wait_state(page: Any, state: str, timeout: float = 15_000) -> None:
    page.wait_for_selector(f'#state[data-state="{state}"]', timeout=timeout)


def item(page: Any, title: str, done: bool | None = None) -> Any:
    css = "#todos li" + {None: "", True: ".done", False: ":not(.done)"}[done]
    return page.locator(css, has=page.locator(".title", has_text=title))


def add_todo(page: Any, title: str) -> int:
    """Type a todo and press Add; returns the page's clock just before the click."""
    # Playwright waits for animation frames before a click, and a tab behind another gets
    # none for a second or two: act in the front tab.
    page.bring_to_front()
    page.fill("#title", title)
    started = page.evaluate("Date.now()")
    page.click("#add button", no_wait_after=True)
    return started


def wait_seen(page: Any, title: str, since: int) -> int:
    """Wait until ``title`` is on ``page``; returns how long after ``since`` it appeared, in ms."""
    item(page, title).wait_for(timeout=15_000)
    return page.evaluate("(title) => window.seenAt.get(title)", title) - since


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_todo_added_in_one_page_appears_in_the_other(
    board: Board, browser_context: Any, transport: str
) -> None:
    writer = open_board(browser_context, board, transport)
    reader = open_board(browser_context, board, transport)

    title = unique_title(f"added over {transport} via {board.name}")
    started = add_todo(writer, title)
    latency = wait_seen(reader, title, started)
    assert latency < WITHIN_MS, (
        f"the other page showed the new todo after {latency} ms; its states: "
        + history(reader, started)
    )

    # And back: a toggle in the reading page shows as done in the writing one.
    reader.bring_to_front()
    item(reader, title).locator("input.toggle").check(no_wait_after=True)
    item(writer, title, done=True).wait_for(timeout=15_000)

    assert writer.errors == [] and reader.errors == []


def test_the_board_resumes_after_a_server_restart_without_losing_an_update(
    board: Board, browser_context: Any
) -> None:
    pages = {transport: open_board(browser_context, board, transport) for transport in TRANSPORTS}
    while_down = unique_title(f"written while {board.name}'s server was down")

    def wait_reconnecting() -> None:
        if board.pushpin is None:
            for page in pages.values():  # the client noticed, and says so
                wait_state(page, "reconnecting")

    if board.pushpin is None:
        # Nothing changed while it was down: every page says "live" again once reconnected,
        # though a long-poll is then held with no answer until the next change.
        board.restart_origin(while_down=wait_reconnecting)
        for page in pages.values():
            wait_state(page, "live")

    def meanwhile() -> None:
        board.server.insert_todo(while_down)
        wait_reconnecting()

    board.restart_origin(while_down=meanwhile)

    if board.pushpin is None:
        # The embedded proxy went away with the server: every page reconnected and resumed
        # from its ETag, which the row written meanwhile made stale.
        for transport, page in pages.items():
            item(page, while_down).wait_for(timeout=20_000)
            wait_state(page, "live")
    # Behind Pushpin the clients' connections never dropped; a row written without a publish
    # shows with the next change, which every page must see, whichever transport it uses.
    # No latency bound here: the first publish of a freshly started process pays for its
    # imports (about 0.1 to 1 s, more on a loaded machine); the point is that nothing is lost.
    after = unique_title("added after the restart")
    add_todo(pages["longpoll"], after)
    for transport, page in pages.items():
        item(page, after).wait_for(timeout=15_000)
        item(page, while_down).wait_for(timeout=5_000)
        assert page.errors == [], transport


def test_the_transport_switch_moves_the_board_to_another_transport(
    board: Board, browser_context: Any
) -> None:
    page = open_board(browser_context, board, "longpoll")
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))

    page.select_option("#transport", "ws")
    wait_state(page, "live")
    assert page.url.endswith("?transport=ws&max_delay=1000")

    other = open_board(browser_context, board, "sse")
    title = unique_title("seen after switching")
    add_todo(other, title)
    item(page, title).wait_for(timeout=15_000)
    assert len(sockets) == 1 and not sockets[0].is_closed()
    assert page.errors == [] and other.errors == []
