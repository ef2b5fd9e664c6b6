"""The import rule of CONTRIBUTING.rst, enforced: a lower layer never imports a higher one.

    protocol/ (GRIP itself: instructions, items, events) imports nothing of Django or drf-grip
    proxy/    (the embedded GRIP proxy; given what it needs by asgi.py)  may import protocol
    conf      (settings)
    grip/     (GRIP layer: HTTP and GRIP, not DRF)      may import conf, protocol
    rest/     (DRF layer)                               may import conf, protocol, grip
    the rest (apps, checks, asgi, management commands, openapi, the test kits) may import all

Every import counts, also one inside a function. ``protocol`` and ``proxy`` import no Django
module either. Inside ``rest/``, ``relations.py`` imports no other drf-grip module: the
registry imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import drf_grip

PACKAGE = Path(drf_grip.__file__).parent

ALLOWED = {
    "protocol": {"protocol"},
    "proxy": {"protocol", "proxy"},
    "conf": {"conf"},
    "grip": {"conf", "protocol", "grip"},
    "rest": {"conf", "protocol", "grip", "rest"},
}

#: Layers that must run without Django: the protocol is plain Python, and the embedded proxy
#: is given what it needs from Django by ``drf_grip.asgi``.
WITHOUT_DJANGO = {"protocol", "proxy"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "drf_grip" or len(parts) == 1:
        return "top"
    head = parts[1]
    if head in ("protocol", "proxy", "grip", "rest", "conf"):
        return head
    if head in ("middleware", "websocket"):  # public re-exports of the GRIP layer
        return "grip"
    return "top"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_imports_of(path: Path) -> list[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append(target)
            # ``from . import websocket`` names a module too.
            out.extend(f"{target}.{alias.name}" for alias in node.names if node.module is None)
    return out


def imports_of(path: Path) -> list[str]:
    return [m for m in all_imports_of(path) if m == "drf_grip" or m.startswith("drf_grip.")]


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer_of(module_name(path))
        if source not in ALLOWED:
            continue
        if source in WITHOUT_DJANGO:
            found.extend(
                f"{module_name(path)} ({source}) imports {target} (Django)"
                for target in all_imports_of(path)
                if target.split(".")[0] in ("django", "rest_framework")
            )
        for target in imports_of(path):
            if target == "drf_grip":
                continue
            if layer_of(target) not in ALLOWED[source]:
                found.append(
                    f"{module_name(path)} ({source}) imports {target} ({layer_of(target)})"
                )
    return found


def test_lower_layers_never_import_higher_ones():
    assert violations() == []


def test_the_relations_sit_below_the_registry():
    """``rest/relations.py`` reads the models' relations for the registry and the change
    recorder (registry.py, changes.py), which import it: it imports no other drf-grip module,
    so it can never import them."""
    assert imports_of(PACKAGE / "rest" / "relations.py") == []


def test_the_rule_sees_a_violation(tmp_path, monkeypatch):
    """The check itself can fail: a GRIP-layer module importing the DRF layer is caught."""
    fake = PACKAGE / "grip" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..rest import mixins\n")
    try:
        assert "drf_grip.grip._layer_probe (grip) imports drf_grip.rest (rest)" in violations()
    finally:
        fake.unlink()


def test_the_protocol_imports_no_django():
    """The protocol layer is plain Python: not even an import inside a function reaches Django."""
    assert list((PACKAGE / "protocol").glob("*.py")), "drf_grip/protocol/ is missing"
    for path in sorted((PACKAGE / "protocol").rglob("*.py")):
        imported = all_imports_of(path)
        assert not [m for m in imported if m.split(".")[0] == "django"], path
        assert not [m for m in imported if m.startswith("drf_grip.")
                    and not m.startswith("drf_grip.protocol")], path


def test_the_rule_sees_django_in_the_protocol():
    """The check itself can fail: a protocol module importing Django is caught."""
    fake = PACKAGE / "protocol" / "_layer_probe.py"
    fake.write_text("def f():\n    from django.conf import settings\n")
    try:
        assert (
            "drf_grip.protocol._layer_probe (protocol) imports django.conf (Django)"
            in violations()
        )
    finally:
        fake.unlink()
