"""The packages import each other only as docs/architecture.md says (read from the source with ``ast``,
so a function-local import counts too), and only a family's own module names it (docs/extending.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"model", "search_spaces", "sweeper", "figures", "studies", "bench", "replay"}
#: package -> (project packages it may import, third-party libraries it may import)
ALLOWED = {
    "model": (set(), {"torch", "torchvision", "numpy", "sklearn"}),
    "search_spaces": ({"model"}, {"yaml", "optuna"}),
    "figures": ({"model"}, {"matplotlib", "numpy", "torch", "torchvision", "optuna"}),
    "sweeper": ({"model", "search_spaces", "figures"}, {"ray", "optuna", "pandas", "pyarrow", "torch", "numpy",
                                                       "yaml", "tensorboardX", "scipy"}),
    "studies": ({"model", "search_spaces", "figures", "sweeper"}, {"ray", "pandas", "torch", "numpy", "yaml"}),
    "bench": ({"model", "search_spaces", "sweeper"}, {"torch", "numpy", "yaml", "ray", "moto", "boto3", "optuna"}),
    "replay": ({"model", "search_spaces", "sweeper", "figures"}, {"ray", "optuna", "pandas", "pyarrow", "torch",
                                                                "numpy", "yaml"}),
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


#: string constants allowed to equal a family's name outside its module: (file, text, why)
NAMED_ELSEWHERE = {("sweeper/cli.py", "idensenet")}  # the command's name, which the project shares with a family


def family_literals(path: Path, names: set[str]) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a file that is exactly a family's name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names]


def test_only_a_family_module_names_its_family() -> None:
    from model.families import families

    names = {f.name for f in families()}
    own = {ROOT / (type(f).__module__.replace(".", "/") + ".py") for f in families()}
    bad = []
    for package in sorted(PROJECT):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if path in own:
                continue
            bad += [f"{rel}:{line}: {text!r}" for line, text in family_literals(path, names)
                    if (rel, text) not in NAMED_ELSEWHERE]
    assert not bad, "a family named outside its module (dispatch through model.families instead): " + ", ".join(bad)


def test_the_family_check_sees_a_name_in_code(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text('"""Residual flows: resflow."""\nif cfg.family == "resflow":\n    x = f"{a} idensenet"\n')
    assert family_literals(f, {"resflow", "idensenet"}) == [(2, "resflow")]
