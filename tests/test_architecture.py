"""The package's shape: stages depend downward only (the import-linter contract in pyproject.toml),
and no module outside cli/ imports enginefab inside a function (a local import that dodges a
cycle hides the cycle; start-up laziness belongs to the CLI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "enginefab"


def test_import_linter_contract_is_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Contracts: 2 kept, 0 broken." in p.stdout, p.stdout


def local_enginefab_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line module` for every import of enginefab inside a function body."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.ImportFrom) and (child.module or "").startswith("enginefab"):
                out.append(f"{path.relative_to(root)}:{child.lineno} from {child.module}")
            elif in_function and isinstance(child, ast.Import):
                out.extend(f"{path.relative_to(root)}:{child.lineno} import {a.name}" for a in child.names
                           if a.name.startswith("enginefab"))
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


def test_no_function_local_imports_of_enginefab_outside_the_cli():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.relative_to(PACKAGE).parts[:1]
             for hit in local_enginefab_imports(p)]
    assert found == [], "move the import to the top of the module (and the shared piece down if it is a cycle):\n" \
        + "\n".join(found)


def test_the_local_import_finder_finds_one(tmp_path):
    """The scan above would catch a function-local import (and ignores TYPE_CHECKING blocks)."""
    (tmp_path / "enginefab").mkdir()
    mod = tmp_path / "enginefab" / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from enginefab.core import ui\n\n"
                   "def f():\n    from enginefab.core.errors import EnginefabError\n    return EnginefabError\n")
    assert local_enginefab_imports(mod, tmp_path) == ["enginefab/m.py:6 from enginefab.core.errors"]


def test_vulture_finds_no_dead_code():
    """`vulture` (config in pyproject.toml) reports nothing: what it would call unused is either
    removed or named, with why, in vulture_whitelist.py."""
    vulture = Path(sys.executable).parent / "vulture"
    p = subprocess.run([str(vulture)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "dead code (remove it, or say in vulture_whitelist.py why it stays):\n" + p.stdout + p.stderr


def test_vulture_would_catch_a_dead_function(tmp_path):
    """The check above can fail: the same configuration finds a function nobody calls."""
    (tmp_path / "enginefab").mkdir()
    (tmp_path / "enginefab" / "m.py").write_text("def used():\n    return 1\n\n\ndef forgotten():\n    return 2\n\n\nused()\n")
    (tmp_path / "vulture_whitelist.py").write_text("")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    vulture = Path(sys.executable).parent / "vulture"
    p = subprocess.run([str(vulture)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and "unused function 'forgotten'" in p.stdout and "'used'" not in p.stdout, p.stdout


#: the packages whose functions stay short (issue 13): the core and the stages below the publisher
SHORT_FUNCTIONS = ("core", "lock", "assemble", "check")


def long_ones(package: Path, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """`path: N lines` of modules over 400 lines, and `path:line name: N lines` of functions over
    60 lines in SHORT_FUNCTIONS."""
    modules, functions = [], []
    for p in sorted(package.rglob("*.py")):
        rel = p.relative_to(root)
        text = p.read_text()
        if len(text.splitlines()) > 400:
            modules.append(f"{rel}: {len(text.splitlines())} lines")
        if p.relative_to(package).parts[0] not in SHORT_FUNCTIONS:
            continue
        for node in ast.walk(ast.parse(text, str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                functions.append(f"{rel}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    return modules, functions


def test_no_module_over_400_lines_and_no_long_function_in_the_core_and_lower_stages():
    modules, functions = long_ones(PACKAGE)
    assert modules == [], "split these modules by idea (one idea per module):\n" + "\n".join(modules)
    assert functions == [], "split these functions into named steps (at most 60 lines):\n" + "\n".join(functions)


def test_the_size_scan_finds_a_long_function(tmp_path):
    (tmp_path / "enginefab" / "lock").mkdir(parents=True)
    body = "".join(f"    x{n} = {n}\n" for n in range(60))
    (tmp_path / "enginefab" / "lock" / "m.py").write_text(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    (tmp_path / "enginefab" / "cli").mkdir()
    (tmp_path / "enginefab" / "cli" / "big.py").write_text(f"def long_but_cli():\n{body}" + "# pad\n" * 340)
    modules, functions = long_ones(tmp_path / "enginefab", tmp_path)
    assert functions == ["enginefab/lock/m.py:1 long: 61 lines"]
    assert modules == ["enginefab/cli/big.py: 401 lines"]
