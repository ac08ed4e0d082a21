"""The layer order, checked on every import: hsm → policies → signer → coordinator.

A module may import its own package and the packages below it, never one above (a package
cycle or an upward arrow makes a lower layer depend on code it cannot vouch for: a node's
HSM code on the protocol, the node on the coordinator that it must not trust).  Imports inside
functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("hsm", "policies", "signer", "coordinator")  # bottom to top


def _imported_packages(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `tree`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports stay inside the package
                continue
            if node.module is not None:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations(package: str) -> list[str]:
    rank = LAYERS.index(package)
    out: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for line, imported in _imported_packages(tree):
            if imported in LAYERS and LAYERS.index(imported) > rank:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (a layer above)")
    return out


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_points_up(package: str) -> None:
    assert _violations(package) == []


def test_no_relative_imports() -> None:
    """Absolute imports only, so the layer check above sees every arrow."""
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in LAYERS
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert relative == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a parsed module is found."""
    tree = ast.parse("def f():\n    from coordinator.engine import Engine\n")
    assert (2, "coordinator") in _imported_packages(tree)
