"""Running the suite leaves nothing behind in the system's temporary folder.

Every process that loads ``tests.settings`` opens a SQLite file of its own; the ones that
never run Django's test runner (``runserver`` and ``manage.py`` subprocesses, other-process
publishers) used to leave an empty ``drf-grip-tests-<pid>.sqlite3`` each, about five hundred
a day on a developer's machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OPENS_THE_DATABASE = """
import django
django.setup()
from django.db import connection
connection.ensure_connection()
print(connection.settings_dict["NAME"])
"""


def run_with_settings(tmp_path: Path, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "DRF_GRIP_TEST_TMP"}
    environ.update(DJANGO_SETTINGS_MODULE="tests.settings", TMPDIR=str(tmp_path),
                   PYTHONPATH=str(ROOT), **env)
    run = subprocess.run([sys.executable, "-c", OPENS_THE_DATABASE], env=environ, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_process_that_opens_the_test_database_removes_it_when_it_exits(tmp_path: Path):
    name = run_with_settings(tmp_path)

    assert Path(name).is_relative_to(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_child_of_a_test_session_puts_its_database_in_the_session_folder(tmp_path: Path):
    session = tmp_path / "session"
    session.mkdir()

    name = run_with_settings(tmp_path, DRF_GRIP_TEST_TMP=str(session))

    assert Path(name).parent == session
    assert Path(name).exists()  # the session's own exit removes the folder, not the child's
    assert [p.name for p in tmp_path.iterdir()] == ["session"]
