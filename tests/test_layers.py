"""The import rule of CONTRIBUTING.rst, enforced: a lower layer never imports a higher one.

    proxy/  (the embedded GRIP proxy: speaks only GRIP; given what it needs by asgi.py)
    conf    (settings)
    grip/   (GRIP layer: HTTP and GRIP, not DRF)      may import conf
    rest/   (DRF layer)                               may import conf, grip
    the rest (apps, checks, asgi, management commands, openapi, the test kits) may import all

Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import drf_grip

PACKAGE = Path(drf_grip.__file__).parent

ALLOWED = {
    "proxy": {"proxy"},
    "conf": {"conf"},
    "grip": {"conf", "grip"},
    "rest": {"conf", "grip", "rest"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "drf_grip" or len(parts) == 1:
        return "top"
    head = parts[1]
    if head in ("proxy", "grip", "rest", "conf"):
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


def imports_of(path: Path) -> list[str]:
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
    return [m for m in out if m == "drf_grip" or m.startswith("drf_grip.")]


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer_of(module_name(path))
        if source not in ALLOWED:
            continue
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


def test_the_rule_sees_a_violation(tmp_path, monkeypatch):
    """The check itself can fail: a GRIP-layer module importing the DRF layer is caught."""
    fake = PACKAGE / "grip" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..rest import mixins\n")
    try:
        assert "drf_grip.grip._layer_probe (grip) imports drf_grip.rest (rest)" in violations()
    finally:
        fake.unlink()
