"""The benchmark's one command runs and prints its table.

Nothing is timed here (bench/ measures, tests do not): this only keeps the command working.
The raw floor's case once died on a counter only drf-grip's origins have, so the default
``python bench/run.py`` stopped at its first case.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from drf_grip.testing import find_pushpin, pushpin_missing
from drf_grip.testing.tools import tool_missing

ROOT = Path(__file__).resolve().parents[2]


def test_the_bench_prints_a_row_for_the_floor_and_for_drf_grip() -> None:
    if find_pushpin() is None:
        pushpin_missing()
    if not all(importlib.util.find_spec(m) for m in ("django_eventstream", "daphne")):
        tool_missing("The benchmark's peers are missing: pip install -r bench/requirements.txt.")
    # A short temporary folder of the test's own: Pushpin's socket paths live under it, and
    # pytest's tmp_path is too long for them (PUSHPIN.md: condure's "File name too long").
    temp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        run = bench_in(temp)
        left = [p.name for p in temp.iterdir()]
    finally:
        shutil.rmtree(temp, ignore_errors=True)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {
        line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
        for line in run.stdout.splitlines()
        if line.count("|") >= 8
    }
    for system in ("raw Pushpin publish (the floor)", "drf-grip shared long-poll via Pushpin"):
        assert system in rows, run.stdout
        assert rows[system][0] == "1" and rows[system][4] == "1/1", rows[system]  # N, delivered
    # The run's folder (seeded database, Pushpin's logs) goes with it, unless --keep.
    assert left == [], left


def bench_in(temp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench/run.py", "--cases", "raw,grip-lp-pp", "--sizes", "1",
         "--rounds", "1", "--no-extras", "--json", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TMPDIR": str(temp)},
    )
