"""The package as users get it: types for the top-level names, metadata that matches CI,
and an sdist whose tests run."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import drf_grip

ROOT = Path(__file__).resolve().parent.parent


def _type_checking_names() -> set[str]:
    tree = ast.parse((ROOT / "drf_grip" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return {
                alias.asname or alias.name
                for stmt in node.body
                if isinstance(stmt, ast.ImportFrom)
                for alias in stmt.names
            }
    return set()


def test_every_lazy_export_has_a_real_import_for_type_checkers():
    assert _type_checking_names() == set(drf_grip.__all__)
    for name in drf_grip.__all__:
        assert getattr(drf_grip, name) is not None


def test_mypy_sees_real_types_for_top_level_names(tmp_path: Path):
    program = tmp_path / "user_code.py"
    program.write_text(
        "from drf_grip import RealtimeMixin, publish, register\n"
        "reveal_type(RealtimeMixin)\n"
        "reveal_type(publish)\n"
        "reveal_type(register)\n"
    )
    # An editable install is an import hook mypy cannot follow: point it at the checkout,
    # as a regular install (site-packages + py.typed) would.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), str(program)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    revealed = re.findall(r'Revealed type is "(.*)"', result.stdout)
    assert len(revealed) == 3, result.stdout + result.stderr
    assert revealed[0] == "def () -> drf_grip.rest.mixins.RealtimeMixin"
    assert revealed[1].startswith("def (channel: str")
    assert revealed[2].startswith("def (model: ")


def test_classifiers_match_the_ci_matrix():
    text = (ROOT / "setup.cfg").read_text()
    classified_pythons = set(re.findall(r"Programming Language :: Python :: (3\.\d+)", text))
    classified_djangos = set(re.findall(r"Framework :: Django :: (\d+\.\d+)", text))
    nox_source = (ROOT / "noxfile.py").read_text()
    found = re.search(r"^MATRIX[^=]*=\s*(\{.*?^\})", nox_source, re.S | re.M)
    assert found, "noxfile.py has no MATRIX"
    matrix = ast.literal_eval(found[1])
    assert classified_pythons == {python for python, _ in matrix}
    djangos = {django if "." in django else django + ".0" for _, django in matrix}
    assert classified_djangos == djangos


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, as a release would make them."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_wheel_is_typed_licensed_and_without_the_test_harness(dist: Path):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "drf_grip/py.typed" in names
    assert "drf_grip/openapi.py" in names and "drf_grip/test.py" in names
    assert not [n for n in names if n.startswith(("drf_grip/testing", "tests/"))]
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: openapi" in text and "Project-URL: Source" in text


def test_sdist_tests_run(dist: Path, tmp_path: Path):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        # The "data" filter (3.11.4+) refuses links and paths outside the target.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(tmp_path, **safe)
    (tree,) = tmp_path.iterdir()
    for needed in ("tests/conftest.py", "drf_grip/testing/pushpin.py", "sample_api/manage.py",
                   "LICENSE", "CHANGELOG.rst", "noxfile.py"):
        assert (tree / needed).is_file(), needed
    # The unpacked sdist's own drf_grip and tests (cwd comes first on sys.path).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    where = subprocess.run(
        [sys.executable, "-c", "import drf_grip; print(drf_grip.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.stdout.startswith(str(tree)), where.stdout + where.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_grip_instruct.py",
         "tests/test_packaging.py::test_every_lazy_export_has_a_real_import_for_type_checkers"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
