"""The whole suite on each supported Python and Django pair, each in its own virtualenv.

``nox`` runs every pair, DRF's own test suite with drf-grip installed (``drf_suite``) and
builds the docs; ``nox -s "tests(3.12-django6)"`` runs one;
arguments after ``--`` go to pytest. ``scripts/test`` installs Pushpin and nox first, then
runs this.
"""

from __future__ import annotations

import glob
import os
import re

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

#: (python, django) -> requirements pinned beside Django. setup.cfg's classifiers name these
#: Python and Django versions: change both together. The Django 4.2 pair runs the oldest
#: releases setup.cfg allows (DRF 3.15.0, django-filter 23.5), so that its floors stay true;
#: the others get the newest.
MATRIX: dict[tuple[str, str], list[str]] = {
    ("3.11", "4.2"): ["django>=4.2,<5.0", "djangorestframework==3.15.0", "django-filter==23.5"],
    ("3.11", "5.2"): ["django>=5.2,<6.0"],
    # Django 6 needs Python >= 3.12.
    ("3.12", "6"): ["django>=6.0,<7.0"],
    ("3.13", "5.2"): ["django>=5.2,<6.0"],
}
#: The pair that runs the whole suite.
FULL = ("3.11", "5.2")


def _put_pyenv_pythons_on_path() -> None:
    """pyenv's shims only run the active version, so ``python3.12`` fails when 3.11 is
    global; put each needed minor version's newest ``bin`` directly on ``PATH`` instead."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    newest: dict[str, tuple[tuple[int, ...], str]] = {}
    for bindir in glob.glob(os.path.join(root, "versions", "*", "bin")):
        version = os.path.basename(os.path.dirname(bindir))
        match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
        if not match:
            continue
        minor = f"{match[1]}.{match[2]}"
        key = tuple(int(part) for part in match.groups())
        if os.access(os.path.join(bindir, f"python{minor}"), os.X_OK):
            if minor not in newest or key > newest[minor][0]:
                newest[minor] = (key, bindir)
    needed = sorted({python for python, _ in MATRIX})
    dirs = [newest[minor][1] for minor in needed if minor in newest]
    os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_put_pyenv_pythons_on_path()


#: Tests that start several processes each (uvicorn workers, Pushpins, Redis, a browser)
#: and bound how late a client may be: the main pair runs them one at a time after the
#: rest; the other pairs leave them out (they do not depend on the Python or Django version).
ALONE = [
    "tests/browser",
    "tests/integration/test_multiprocess.py",
    "tests/integration/test_soak.py",
    "tests/integration/test_one_proxy_down.py",
    "tests/integration/test_state_lost.py",
    "tests/integration/test_delivery_core.py",
    "tests/integration/test_partitions_live.py",
    "tests/integration/test_bench.py",
]
#: The rest run in three xdist workers, each with its own Pushpin, embedded proxy and test
#: database: they mostly wait on sockets and timeouts (the unit tests took 5 min one at a
#: time and 1 min 50 s in three workers on a 2-core machine, NOTES.rst).
WORKERS = ["-n", "3"]


@nox.session
@nox.parametrize(
    ("python", "django"),
    [nox.param(python, django, id=f"{python}-django{django}") for python, django in MATRIX],
)
def tests(session: nox.Session, django: str) -> None:
    """Unit, integration (real Pushpin), conformance and browser (system Chromium) tests.

    The main pair runs everything; the others leave out ``ALONE`` and the tests that wait
    out a hold's timeout, and the pair that repeats the main pair's Django runs the unit
    and proxy tests only. Arguments after ``--`` replace the selection and run in one
    process.
    """
    session.install("-e", ".[test,browser]", *MATRIX[(session.python, django)])
    if (session.python, django) == FULL:
        # For the benchmark's smoke test (tests/integration/test_bench.py): its peers.
        session.install("-r", "bench/requirements.txt")
    session.run("python", "-m", "django", "--version")
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs)
        return
    others = [f"--ignore={path}" for path in ALONE]
    if (session.python, django) == FULL:
        session.run("python", "-m", "pytest", *WORKERS, *others)
        session.run("python", "-m", "pytest", *ALONE)
        return
    others += ["-m", "not waits_out_a_hold"]
    if django == FULL[1]:
        others.append("--ignore=tests/integration")
    session.run("python", "-m", "pytest", *WORKERS, *others)


@nox.session(python=FULL[0])
def drf_suite(session: nox.Session) -> None:
    """Django REST framework's own test suite, from its source distribution on PyPI, run
    against the installed DRF with drf-grip installed (tests/third_party/drf/README.rst)."""
    import shutil
    import tarfile

    session.install(
        "-e", ".", *MATRIX[FULL], "pytest", "pytest-django", "dj-database-url",
        # What its optional tests need (the rest need PostgreSQL).
        "uritemplate", "pyyaml", "markdown", "django-guardian", "inflection",
    )
    version = session.run(
        "python", "-c", "import rest_framework; print(rest_framework.__version__)", silent=True
    ).strip()
    downloads = session.create_tmp()
    session.run(
        "python", "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
        "--dest", downloads, f"djangorestframework=={version}",
    )
    (archive,) = glob.glob(os.path.join(downloads, f"djangorestframework-{version}.tar.gz"))
    with tarfile.open(archive) as sdist:
        sdist.extractall(downloads, filter="data")
    source = os.path.join(downloads, f"djangorestframework-{version}")
    if not os.path.isdir(os.path.join(source, "tests")):
        session.error(f"DRF {version}'s source distribution has no tests/")
    # Its tests, not its rest_framework/: the installed DRF is the one under test, and
    # pytest puts the directory above tests/ (a package) on sys.path.
    shutil.rmtree(os.path.join(source, "rest_framework"))
    plugin = os.path.abspath(os.path.join("tests", "third_party", "drf"))
    with session.chdir(source):
        session.run(
            "python", "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
            "-p", "drf_grip_installed", *session.posargs, env={"PYTHONPATH": plugin},
        )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The Sphinx docs, warnings as errors (a broken reference or directive fails CI)."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
        *session.posargs,
    )
