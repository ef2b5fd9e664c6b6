"""Count Pushpin's conflicts on accept of private holds, from its handler logs (log level 3).

    python bench/pushpin_retries.py /tmp/drf-grip-pushpin-*/log/pushpin-handler.log

A hold whose prev-id is behind the channel is retried at once ("last ID inconsistency ...
retrying", src/handler/engine.cpp); when the origin answers that retry with a hold again,
Pushpin 1.36's proxy can lose it (NOTES.rst, forty-fourth session). Keep the logs with
``DRF_GRIP_KEEP_PUSHPIN=1 DRF_GRIP_PUSHPIN_LOG_LEVEL=3`` when running the tests.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_ACCEPT = '"method": "accept"'
_RID = re.compile(r'"rid": \{[^}]*"id": "([^"]+)"')
_CONFLICT = re.compile(r"last ID inconsistency \(got=(\d+), expected=(\d+)")
_KINDS = ("own", "own_held_again", "re_request", "re_request_held_again")


def count(path: str) -> Counter[str]:
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    accepts = []  # (line, request id, whether the proxy retried it)
    for number, line in enumerate(lines):
        if _ACCEPT in line and (rid := _RID.search(line)):
            accepts.append((number, rid.group(1), '"is-retry": true' in line))
    out: Counter[str] = Counter()
    at = 0
    for number, line in enumerate(lines):
        if not _CONFLICT.search(line):
            continue
        while at + 1 < len(accepts) and accepts[at + 1][0] < number:
            at += 1
        if not accepts or accepts[at][0] >= number or number - accepts[at][0] > 3:
            continue  # not a conflict on accept (an item's, on a held session)
        _line, rid, retried = accepts[at]
        kind = "re_request" if retried else "own"
        out[kind] += 1
        later = next((a for a in accepts[at + 1 :] if a[1] == rid), None)
        if later is not None and later[2] and later[0] - number < 400:
            out[kind + "_held_again"] += 1
    return out


def main(paths: list[str]) -> None:
    total = sum((count(path) for path in paths), Counter())
    print(" ".join(f"{key}={total[key]}" for key in _KINDS))


if __name__ == "__main__":
    main(sys.argv[1:])
