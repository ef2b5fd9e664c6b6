"""Writes of drf-grip's state to Django's file cache, by how many files it holds.

The sample keeps drf-grip's state in Django's ``FileBasedCache``, a few files per change.
Django's ``set`` culls first, and its cull lists the whole directory; drf-grip's own file
cache (``store._AtomicFileCache``) culls at most once a second. This times 500 ``set``
calls of the state cache with N files present, against Django's plain ``set`` on the same
directory, repeated (medians)::

    python bench/file_cache.py [--files 100,5000,20000] [--rounds 3]

Prints one line per N: ms per set, drf-grip's and Django's, side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETS = 500


def _time_sets(cache, prefix: str) -> float:
    started = time.perf_counter()
    for i in range(SETS):
        cache.set(f"{prefix}{i}", i, 3600)
    return (time.perf_counter() - started) * 1000 / SETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="100,5000,20000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import django
    from django.conf import settings

    directory = tempfile.mkdtemp(prefix="drf-grip-file-cache-")
    settings.configure(
        INSTALLED_APPS=[],
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": directory,
                "OPTIONS": {"MAX_ENTRIES": 1_000_000},
            }
        },
    )
    django.setup()
    from django.core.cache.backends.filebased import FileBasedCache

    from drf_grip.rest.store import state_cache

    ours = state_cache()
    plain = FileBasedCache(directory, {"OPTIONS": {"MAX_ENTRIES": 1_000_000}})
    print(f"{'files':>7} | {'drf-grip ms/set':>15} | {'Django ms/set':>13} | ratio")
    try:
        for files in (int(n) for n in args.files.split(",")):
            ours.clear()
            ours.set_many({f"fill-{i}": i for i in range(files)}, 3600)
            mine, theirs = [], []
            for _ in range(args.rounds):
                mine.append(_time_sets(ours, "ours-"))
                theirs.append(_time_sets(plain, "plain-"))
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"{files:>7} | {a:>15.2f} | {b:>13.2f} | {b / a:.1f}x")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
