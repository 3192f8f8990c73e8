"""A new engine family is one engines/<family>.toml: nothing in the code knows its name.

micrograd (a 5 kB pure-Python autograd engine on PyPI, 0.1.0 of April 2020) is added to a copy of
engines/ as two CPU images on Debian 11 with Python 3.9, x86_64 and aarch64, and taken through
`lock`, `build` and `check` (definition, static, runtime; aarch64 under qemu-user). The OS and
Python layers are the demos' (a hard-linked copy of the session's demo store), so only the
engine's own layer is built here.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import enginefab

pytestmark = [pytest.mark.slow, pytest.mark.network]

FAMILY = '''# micrograd: a tiny scalar autograd engine (github.com/karpathy/micrograd)

[engine]
name = "micrograd"
display = "micrograd"
pypi = "micrograd"
import_name = "micrograd"
version_expr = "__import__('importlib.metadata').metadata.version('micrograd')"
smoke = """
from micrograd.engine import Value
a, b = Value(-4.0), Value(2.0)
c = a * b + b**3
c.backward()
assert (c.data, a.grad, b.grad) == (0.0, 2.0, 8.0), (c.data, a.grad, b.grad)
print("backward ok", a.grad, b.grad)
"""

[[engine.releases]]
version = "0.1.0"
python = ["3.6", "3.7", "3.8", "3.9", "3.10", "3.11"]
builds = [{ accelerator = "cpu", arches = ["x86_64", "aarch64"] }]
published = "2020-04-18"
source = "PyPI micrograd 0.1.0: micrograd-0.1.0-py3-none-any.whl uploaded 2020-04-18, Requires-Python >=3.6"
'''

IMAGE = '''
[[image]]
alias = "micrograd-{arch}"
name = "micrograd_0.1.0-cpu-py_3.9-debian_11-{arch}"
engine_version = "0.1.0"
python = "3.9"
os = "debian-11"
accelerator = "cpu"
arch = "{arch}"
requirements = ["micrograd==0.1.0"]
'''

ALIASES = ["micrograd-x86_64", "micrograd-aarch64"]


@pytest.fixture
def family(engines_copy, demo_build, tmp_path):
    (engines_copy / "engines" / "micrograd.toml").write_text(
        FAMILY + "".join(IMAGE.format(arch=a) for a in ("x86_64", "aarch64")))
    store = tmp_path / "store"  # the demos' layers, linked: this test adds its own without touching theirs
    shutil.copytree(demo_build["store"], store, copy_function=os.link,
                    ignore=shutil.ignore_patterns("rootfs", "tmp", "roots"))
    return {"root": engines_copy, "store": store, "out": tmp_path / "layout"}


def run(fam, *args: str, timeout: float = 600):
    return enginefab(*args, cwd=fam["root"], env={"ENGINEFAB_ROOT": str(fam["root"])}, timeout=timeout)


def test_a_family_the_code_has_never_seen_locks_builds_and_checks(family):
    listed = run(family, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["alias"]: r["engine"] for r in json.loads(listed.stdout) if r["alias"] in ALIASES} == {
        a: "micrograd" for a in ALIASES}

    locked = run(family, "lock", *ALIASES, "--json")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert sorted(json.loads(locked.stdout)["written"]) == sorted(ALIASES)
    defn = json.loads((family["root"] / "build" / "micrograd-aarch64.json").read_text())
    wheels = [i["filename"] for la in defn["layers"] for i in la["inputs"] if i["kind"] == "wheel"]
    assert wheels == ["micrograd-0.1.0-py3-none-any.whl"]
    # resolved as of the release's time, and the lock says so
    assert defn["matrix"]["as_of"]["instant"] == "2020-07-17T00:00:00Z"
    assert "published 2020-04-18" in defn["matrix"]["as_of"]["why"]
    check = run(family, "lock", "--check", "--json")
    assert json.loads(check.stdout)["ok"], check.stdout

    built = run(family, "build", *ALIASES, "--store", str(family["store"]), "--out", str(family["out"]), "--json")
    assert built.returncode == 0, built.stdout + built.stderr
    results = {r["alias"]: r for r in json.loads(built.stdout)}
    assert set(results) == set(ALIASES) and all(r["digest"].startswith("sha256:") for r in results.values())

    levels = ["--level", "definition", "--level", "static", "--level", "runtime"]
    with ThreadPoolExecutor(2) as pool:  # one qemu-bound, one not: they overlap on 2 cores
        runs = list(pool.map(lambda a: run(family, "check", a, *levels, "--store", str(family["store"]), "--json"),
                             ALIASES))
    reports = {}
    for checked in runs:
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
        reports |= {r["image"]: r for r in json.loads(checked.stdout)}
    for alias in ALIASES:
        rep = reports[alias]
        assert rep["ok"] and set(rep["levels"]) == {"definition", "static", "runtime"}, rep
        assert rep["digest"] == results[alias]["digest"]
        runtime = {r["name"]: r for r in rep["results"] if r["level"] == "runtime"}
        probe = runtime["import-micrograd"]  # the family's own import, version and smoke computation
        assert probe["status"] == "pass" and "micrograd 0.1.0" in probe["detail"], probe
