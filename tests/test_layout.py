"""The packages import each other only as docs/architecture.md says (read from the source with ``ast``,
so a function-local import counts too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"model", "search_spaces", "sweeper", "figures", "studies", "bench"}
#: package -> (project packages it may import, third-party libraries it may import)
ALLOWED = {
    "model": (set(), {"torch", "torchvision", "numpy", "sklearn"}),
    "search_spaces": ({"model"}, {"yaml", "optuna"}),
    "figures": ({"model"}, {"matplotlib", "numpy", "torch", "torchvision", "optuna"}),
    "sweeper": ({"model", "search_spaces", "figures"}, {"ray", "optuna", "pandas", "pyarrow", "torch", "numpy",
                                                       "yaml", "tensorboardX", "scipy"}),
    "studies": ({"model", "search_spaces", "figures", "sweeper"}, {"ray", "pandas", "torch", "numpy", "yaml"}),
}
#: the one module allowed beyond its package's row: the CLI dispatches to every package's commands
ENTRY_POINT = ROOT / "sweeper" / "cli.py"


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    own, libraries = ALLOWED[package]
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        extra = imported(path) - {package} - own - libraries
        if path == ENTRY_POINT:
            extra -= PROJECT
        if extra:
            bad[str(path.relative_to(ROOT))] = sorted(extra)
    assert not bad, f"imports outside the architecture: {bad}"


def test_the_checker_sees_a_function_local_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from ray import tune\n    import torch.nn as nn\n    from . import x\n")
    assert imported(f) == {"ray", "torch"}
