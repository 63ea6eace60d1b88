"""The rooms of the layout: imports go one way, plugin_gimp → client → protocol and daemon → protocol.

Every ``import`` and ``from … import`` of every module (functions' bodies included, where the lazy imports live) is
read with :mod:`ast`, so a new import that breaks the direction fails here, before it ships.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

LAYERS = ("protocol", "client", "plugin_gimp", "daemon", "installer")
"""The top-level folders that are ``gimp_inpaint``'s sub-packages."""

ALLOWED = {
    "protocol": set(),
    "client": {"protocol"},
    "plugin_gimp": {"client", "protocol"},
    "daemon": {"protocol"},
    "installer": {"client", "protocol", "daemon"},
}
"""Which layers each layer may import (the installer sets up both sides, so it may read both)."""

EXCEPTIONS = {
    ("client/local_daemon.py", "daemon"): "the CLI and installer read the URL from the daemon's own daemon.toml",
    ("client/cli.py", "daemon"): "the CLI finds the daemon's token file where the daemon writes it",
    ("client/cli.py", "installer"): "`gimp-inpaint doctor` runs the installer's checks, imported in that command",
}
"""Imports across the rule, each with its reason: only modules that are never vendored into the plug-in."""

VENDORED_CLIENT = ("client/__init__.py", "client/connection.py", "client/document.py", "client/expand.py",
                   "client/fill.py", "client/metadata.py")
"""The client modules copied into the plug-in (:data:`installer.bundle`): they may import only protocol."""


def _imported_layers(path: Path) -> set[str]:
    """Layers ``path`` imports, whether as ``gimp_inpaint.<layer>`` or relatively across folders."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level:  # stays in its layer unless it climbs out of it
            depth = len(path.relative_to(ROOT).parts) - 1  # daemon/engines/x.py: 2 packages deep
            assert node.level <= depth, f"{path}: a relative import climbs out of its layer"
        for name in names:
            parts = name.split(".")
            if parts[0] == "gimp_inpaint" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    layer = relative.split("/")[0]
    for imported in _imported_layers(path) - {layer}:
        if (relative, imported) in EXCEPTIONS:
            assert relative not in VENDORED_CLIENT
            continue
        assert imported in ALLOWED[layer], f"{relative} imports {imported}: {layer} may import {ALLOWED[layer]}"


def test_the_rule_is_read_from_real_imports() -> None:
    """The walker sees the imports that exist: a vacuous walker would pass every module above."""
    assert _imported_layers(ROOT / "plugin_gimp" / "gimp_document.py") >= {"client"}
    assert _imported_layers(ROOT / "client" / "fill.py") == {"protocol"}
    assert "installer" in _imported_layers(ROOT / "client" / "cli.py")  # imported inside `_doctor`
