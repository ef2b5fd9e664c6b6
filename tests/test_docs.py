"""The documentation says what the code does: every setting is in the reference with its
default, the getting-started page has the README's commands, and the sample's commands
print nothing a newcomer has to wonder about (``drf_grip.W001``).

The Sphinx build itself (warnings as errors) is the nox session ``docs``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from drf_grip.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _literal(value: Any) -> str:
    """A default as the settings page writes it: Python, strings in double quotes."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _documented_settings() -> dict[str, str]:
    """``{KEY: default}`` from the ``DRF_GRIP`` reference: each entry is a definition whose
    term is ``KEY`` and whose first line is ``Default: ``value``.``."""
    text = (DOCS / "settings.rst").read_text()
    found = re.findall(r"^``([A-Z][A-Z0-9_]+)``\n    Default: ``(.+?)``", text, re.MULTILINE)
    return dict(found)


def test_every_drf_grip_setting_is_documented_with_its_default() -> None:
    documented = _documented_settings()
    missing = sorted(set(DEFAULTS) - set(documented))
    assert not missing, f"DRF_GRIP keys missing from docs/settings.rst: {missing}"
    wrong = {
        key: (documented[key], _literal(value))
        for key, value in DEFAULTS.items()
        if documented[key] != _literal(value)
    }
    assert not wrong, f"documented default != DEFAULTS (documented, actual): {wrong}"


def test_the_settings_page_documents_no_setting_that_does_not_exist() -> None:
    django_grip = {
        "GRIP_URL", "GRIP_PROXIES", "GRIP_PREFIX", "GRIP_PROXY_REQUIRED", "GRIP_VERIFY_KEY",
        "PUBLISH_SERVERS",
    }
    stale = sorted(set(_documented_settings()) - set(DEFAULTS) - django_grip)
    assert not stale, f"docs/settings.rst documents unknown settings: {stale}"
    text = (DOCS / "settings.rst").read_text()
    for name in sorted(django_grip):
        assert f"``{name}``\n" in text, f"{name} is not in docs/settings.rst"


def test_the_api_page_documents_every_public_name() -> None:
    import drf_grip

    page = (DOCS / "api.rst").read_text()
    missing = [n for n in drf_grip.__all__ if not re.search(rf":: drf_grip\.{n}$", page, re.M)]
    assert not missing, f"public names missing from docs/api.rst: {missing}"


def _readme_commands() -> list[str]:
    """The literal blocks above the README's first transition: its two commands."""
    head = (ROOT / "README.rst").read_text().split("\n----\n", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_getting_started_has_the_readme_commands_word_for_word() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    page = (DOCS / "getting-started.rst").read_text()
    for command in commands:
        assert f"    {command}\n" in page, f"not in docs/getting-started.rst: {command}"


# drf-grip is not published on PyPI: "pip install drf-grip" answers "No matching distribution
# found for drf-grip" (pip 23.2, from versions: none).
_PIP_INSTALL = re.compile(r"pip install ([^`\n]+)")


def test_no_install_command_asks_pypi_for_the_unpublished_package() -> None:
    """Every ``pip install`` of drf-grip in the README and the guides installs it from a
    checkout (``.``, ``-e .``, a path): ``pip install drf-grip`` and ``pip install
    "drf-grip[openapi]"`` failed for a new user."""
    asked = []
    for page in [ROOT / "README.rst", ROOT / "CONTRIBUTING.rst", *sorted(DOCS.glob("*.rst"))]:
        for command in _PIP_INSTALL.findall(page.read_text()):
            command = command.split("&&")[0]
            for argument in shlex.split(command.replace("``", "")):
                name = re.split(r"[\[<>=!~;@ ]", argument, maxsplit=1)[0]
                if name.lower().replace("_", "-") == "drf-grip":
                    asked.append(f"{page.name}: pip install {command.strip()}")
    assert asked == []


def test_the_performance_page_installs_what_bench_run_needs() -> None:
    """``python bench/run.py`` needs the peers of ``bench/requirements.txt`` as well as the
    test extras: with only the extras docs/performance.rst named, it stopped at once with
    "run.py: error: the peers are missing: pip install -r bench/requirements.txt"."""
    page = (DOCS / "performance.rst").read_text()
    measuring = page.split("Measuring\n---------", 1)[1]
    before_run = measuring.split("python bench/run.py", 1)[0]
    assert "bench/requirements.txt" in before_run
    assert (ROOT / "bench" / "requirements.txt").is_file()


def test_every_fixture_a_readme_test_uses_is_defined_or_named() -> None:
    """A reader copies the README's tests: each fixture they take is defined in a README
    snippet, or is pytest-django's and the README says so."""
    import ast

    from tests.test_readme_snippets import readme_test_snippets

    readme = (ROOT / "README.rst").read_text()
    defined: set[str] = set()
    used: dict[str, set[str]] = {}
    for snippet in readme_test_snippets():
        for node in ast.walk(ast.parse(snippet)):
            if isinstance(node, ast.FunctionDef):
                args = {a.arg for a in node.args.args}
                if any("fixture" in ast.unparse(d) for d in node.decorator_list):
                    defined.add(node.name)
                    used[node.name] = args
                elif node.name.startswith("test_"):
                    used[node.name] = args
    named = {
        word
        for line in readme.splitlines()
        if "pytest-django" in line
        for word in re.findall(r"\w+", line)
    }
    for function, args in used.items():
        unknown = args - defined - named
        assert not unknown, (
            f"{function} takes {sorted(unknown)}: no README snippet defines them and the README "
            "does not name them as pytest-django's"
        )


# -- drf_grip.W001 -----------------------------------------------------------------------------


def _w001() -> list[str]:
    return [m.id for m in checks.run_checks() if m.id == "drf_grip.W001"]


@override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None, DRF_GRIP=None)
def test_w001_is_quiet_in_the_readme_development_setup() -> None:
    """The README's install omits GRIP_URL for the embedded proxy; with DEBUG on that is the
    development setup, not a mistake to repeat on every command."""
    with override_settings(DEBUG=True):
        assert _w001() == []


@override_settings(GRIP_URL=None, GRIP_PROXIES=None, PUBLISH_SERVERS=None, DRF_GRIP=None)
def test_w001_still_warns_when_a_deployment_names_no_proxy() -> None:
    with override_settings(DEBUG=False):
        assert _w001() == ["drf_grip.W001"]
    with override_settings(DEBUG=False, DRF_GRIP={"EMBEDDED_URL": "http://10.0.0.5:8000"}):
        assert _w001() == []
    with override_settings(DEBUG=False, GRIP_URL="http://127.0.0.1:5561/?key=k"):
        assert _w001() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "sample_api" / "manage.py"), *args],
        env=_sample_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sample_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "GRIP_URL")}
    env["SAMPLE_API_DB"] = str(tmp_path / "sample.sqlite3")
    env.update(extra)
    return env


def test_the_sample_commands_print_no_warning(tmp_path: Path) -> None:
    """The README's commands (migrate, demo_token, runserver) on the embedded proxy: nothing on
    stderr but the server's own log."""
    migrate = _sample(tmp_path, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stderr == ""
    token = _sample(tmp_path, "demo_token", "alice")
    assert token.returncode == 0, token.stderr
    assert token.stderr == "" and re.fullmatch(r"[0-9a-f]{40}\n?", token.stdout)

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "sample_api" / "manage.py"), "runserver",
         f"127.0.0.1:{port}", "--noreload"],
        env=_sample_env(tmp_path, SAMPLE_API_URL=f"http://127.0.0.1:{port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert "Realtime: embedded GRIP proxy" in out, (out, err)
    assert "W001" not in err and "System check identified no issues" in out, (out, err)
    assert "Note: other processes publish" not in out  # SAMPLE_API_URL matches the port


def test_grip_publish_from_the_readme_shows_a_line_in_a_stream(grip_proxy: Any) -> None:
    """The README's GRIP-layer stream view (``/seed/stream/``, channel ``test``) and its
    ``python manage.py grip_publish test "hello"``: the stream shows ``hello`` on its own
    line, through Pushpin and through the embedded proxy."""
    import httpx
    from django.core.management import call_command

    mark = grip_proxy.mark()
    with httpx.stream("GET", grip_proxy.url + "/seed/stream/", timeout=10) as stream:
        chunks = stream.iter_raw()
        received = b""
        while b"[stream open]\n" not in received:
            received += next(chunks)
        grip_proxy.wait_subscribed("test", since=mark)
        call_command("grip_publish", "test", "hello", stdout=io.StringIO())
        while b"hello" not in received:
            received += next(chunks)
        call_command("grip_publish", "test", "world", stdout=io.StringIO())
        while b"world" not in received:
            received += next(chunks)
    assert received == b"[stream open]\nhello\nworld\n"


# -- drf_grip.W003 -----------------------------------------------------------------------------


def _w003() -> list[str]:
    return [m.id for m in checks.run_checks() if m.id == "drf_grip.W003"]


LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


def test_w003_warns_of_a_deployment_cache_that_culls_at_300_entries() -> None:
    with override_settings(DEBUG=False, CACHES={"default": {"BACKEND": LOCMEM}}):
        assert _w003() == ["drf_grip.W003"]
    roomy = {"default": {"BACKEND": LOCMEM, "OPTIONS": {"MAX_ENTRIES": 100_000}}}
    with override_settings(DEBUG=False, CACHES=roomy):
        assert _w003() == []
    with override_settings(DEBUG=True, CACHES={"default": {"BACKEND": LOCMEM}}):
        assert _w003() == []


def test_the_sample_deployed_without_debug_has_room_for_its_state(tmp_path: Path) -> None:
    check = _sample(tmp_path, "check", DJANGO_DEBUG="0", SAMPLE_API_URL="http://127.0.0.1:8000")
    assert "W003" not in check.stdout + check.stderr, (check.stdout, check.stderr)


def test_the_embedded_proxy_limits_the_readme_names_exist_with_their_defaults() -> None:
    """``GripProxy.NAME`` (default N) in the README is an attribute of the proxy with that value."""
    from drf_grip.proxy import GripProxy

    readme = " ".join((ROOT / "README.rst").read_text().split())
    stated = re.findall(r"``GripProxy\.(\w+)`` \(default ([\d.]+)\)", readme)
    assert ("max_rerequests", "16") in stated, stated
    for name, default in stated:
        assert hasattr(GripProxy, name), f"README names GripProxy.{name}, which does not exist"
        assert float(getattr(GripProxy, name)) == float(default), (name, default)
