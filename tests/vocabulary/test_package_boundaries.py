"""The layout is the architecture: `sandbox` stands alone at the bottom, `vocabulary` is what both
sides share (it may use sandbox's size parser),
the control plane and the executor do not import each other, and nothing the product or the
benchmarks ship imports test code. Read from the import statements themselves (ast)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> top-level packages of this repository it may not import
FORBIDDEN = {
    "vocabulary": {"executor", "controlplane", "tests", "bench"},
    "sandbox": {"executor", "controlplane", "tests", "bench"},
    "executor": {"controlplane", "tests", "bench"},
    "controlplane": {"executor", "tests", "bench"},
    "bench": {"tests"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_layer_may(package):
    crossings = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
                 for path in (ROOT / package).rglob("*.py")}
    assert {path: found for path, found in crossings.items() if found} == {}
