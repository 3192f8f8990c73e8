"""A real sdist with a C extension (mmh3 5.2.0 from PyPI: MurmurHash3, pure C, no dependencies)
compiled in the sandbox over each demo image's layers — x86_64 natively, aarch64 under qemu — as
images of a test-local engine family locked the usual way: the demo's requirements plus a run
step whose build-only tools (gcc, libc6-dev, libpython3.9-dev; pip, setuptools, wheel) the lock
pins and the layer does not hold.

Proven: the same layer digest from two stores and two download caches that never saw it; the
module imports (and hashes) in the runtime check; no compiler, linker or header in any layer of
the image; a failed compile's error shows gcc's own line and names the whole log, and leaves the
store clean; a step cannot reach PyPI by its address."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

from enginefab.assemble.rootfs import open_layer
from enginefab.core.definition import Layer, load_definition
from enginefab.lock.declared import run_input
from enginefab.engines.model import RunStep
from tests.conftest import ROOT, definition_file, enginefab

pytestmark = [pytest.mark.slow, pytest.mark.network]

SDIST = ("https://files.pythonhosted.org/packages/a7/af/f28c2c2f51f31abb4725f9a64bc7863d5f491f6539bd26aee2a1d21a649e/"
         "mmh3-5.2.0.tar.gz")
SITE = "usr/local/lib/python3.9/dist-packages"
BUILD = """set -e
python3.9 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".")' /enginefab/inputs/mmh3-5.2.0.tar.gz
cd mmh3-5.2.0
python3.9 -m pip install --no-deps --no-build-isolation --no-compile .
"""
FAMILY = '''# mmh3 compiled from its sdist over the demo images (tests/test_source_build.py)
[engine]
name = "mmh3"
display = "mmh3"
pypi = "mmh3"
import_name = "mmh3"
version_expr = "__import__('importlib.metadata').metadata.version('mmh3')"
smoke = """
import mmh3
assert mmh3.hash("foo") == -156908512, mmh3.hash("foo")
print("mmh3 hashes", mmh3.hash("foo"))
"""

[[engine.releases]]
version = "5.2.0"
python = ["3.9"]
builds = [{ accelerator = "cpu", arches = ["x86_64", "aarch64"] }, { accelerator = "cuda", versions = ["10.2"], arches = ["x86_64"] }]
source = "mmh3 5.2.0 sdist (requires-python >=3.9)"
'''
IMAGE = '''
[[image]]
alias = "mmh3-{arch}"
name = "mmh3_5.2.0-{acc_name}-py_3.9-debian_11-{arch}"
engine_version = "5.2.0"
python = "3.9"
os = "debian-11"
accelerator = "{acc}"
arch = "{arch}"
requirements = ["torch==1.8.0"]
constraints = ["numpy>=1.17,<1.22"]
debs = ["libgomp1", "libstdc++6"]
[[image.files]]
name = "mmh3"
version = "5.2.0"
url = "{sdist}"
sha256 = "1efc8fec8478e9243a78bb993422cf79f8ff85cb4cf6b79647480a31e0d950a8"
size = 33582
source = "PyPI simple index (sha256 and size of the sdist)"
trust = "vendor-published"
[[image.run]]
name = "build-mmh3"
tools = {{ debs = ["gcc", "libc6-dev", "libpython3.9-dev", "python3-distutils"], requirements = ["pip", "setuptools>=74.1", "wheel"] }}
script = """{script}"""
'''
ARCHES = {"x86_64": ("cuda-10.2-wheel", "cuda_10.2"), "aarch64": ("cpu", "cpu")}
ALIASES = [f"mmh3-{a}" for a in ARCHES]


def _store_copy(demo_store: Path, dest: Path) -> Path:
    """A store holding the demo's layers (hard links) and nothing of the source build."""
    shutil.copytree(demo_store, dest, copy_function=os.link, ignore=shutil.ignore_patterns("rootfs", "tmp", "roots", "logs"))
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    proj = tmp_path_factory.mktemp("srcbuild") / "proj"
    proj.mkdir()
    for d in ("engines", "build", "registry"):
        shutil.copytree(ROOT / d, proj / d)
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    images = "".join(IMAGE.format(arch=a, acc=acc, acc_name=name, sdist=SDIST, script=BUILD)
                     for a, (acc, name) in ARCHES.items())
    (proj / "engines" / "mmh3.toml").write_text(FAMILY + images)
    enginefab("lock", *ALIASES, cwd=proj, check=True)
    enginefab("lock", "--check", cwd=proj, check=True)
    return proj


@pytest.fixture(scope="module")
def builds(project, demo_build, tmp_path_factory):
    """Both images built twice: in two stores that hold only the demo's layers, the second with a
    download cache of its own, files created in reverse order, another umask."""
    base = tmp_path_factory.mktemp("srcbuild-stores")
    out = {}
    for n, extra in ((1, {}), (2, {"ENGINEFAB_CACHE": str(base / "cache2")})):
        store = _store_copy(demo_build["store"], base / f"store{n}")
        old = os.umask(0o077 if n == 2 else 0o022)
        order = ["--creation-order", "reverse"] if n == 2 else []
        try:
            p = enginefab("build", *ALIASES, "--store", str(store), "--out", str(base / f"layout{n}"), "--json",
                          *order, cwd=project, env=extra)
        finally:
            os.umask(old)
        assert p.returncode == 0, p.stdout + p.stderr
        out[n] = {"store": store, "layout": base / f"layout{n}", "results": {r["alias"]: r for r in json.loads(p.stdout)}}
    return out


def _run_layer(result: dict) -> dict:
    return next(lr for lr in result["layer_results"] if lr["id"].startswith("run/"))


def _files(store: Path, digest: str) -> dict[str, tarfile.TarInfo]:
    with open_layer(store / "blobs/sha256" / digest.split(":")[1], "application/vnd.oci.image.layer.v1.tar+gzip") as f, \
            tarfile.open(fileobj=f, mode="r|") as tf:
        return {m.name.rstrip("/"): m for m in tf}


def test_the_compiled_layer_is_the_same_from_two_empty_stores(builds):
    for alias in ALIASES:
        first, second = (_run_layer(builds[n]["results"][alias]) for n in (1, 2))
        assert first["status"] == second["status"] == "built", alias  # compiled in both, not cached
        assert first["digests"] == second["digests"], alias
        assert builds[1]["results"][alias]["digest"] == builds[2]["results"][alias]["digest"]
        # below it: the demo's own layers, from the store
        assert {lr["status"] for lr in builds[1]["results"][alias]["layer_results"][:6]} == {"cached"}


def test_the_layer_holds_the_extension_and_no_build_tool(builds):
    for alias in ALIASES:
        arch = alias.split("-", 1)[1]
        res = builds[1]["results"][alias]
        layer = _files(builds[1]["store"], _run_layer(res)["digests"][0])
        so = f"{SITE}/mmh3.cpython-39-{arch}-linux-gnu.so"
        assert so in layer and f"{SITE}/mmh3-5.2.0.dist-info/RECORD" in layer
        # nothing but the installed distribution: no tools, no build directory, no bytecode
        assert all(p.startswith(SITE) or p in ("usr", "usr/local", "usr/local/lib", "usr/local/lib/python3.9")
                   for p in layer), sorted(layer)
        assert not any(p.endswith(".pyc") for p in layer)
        # every layer of the image: no compiler, assembler, linker, C library headers, Python.h, pip
        every = set()
        for lr in res["layer_results"]:
            for d in lr["digests"]:
                every |= {p for p, m in _files(builds[1]["store"], d).items() if not m.isdir()}
        names = {"gcc", "gcc-10", "cc", "cc1", "as", "ld", "ld.bfd", "stdio.h", "Python.h", "pyconfig.h"}
        tools = [p for p in every if p.rsplit("/", 1)[-1] in names or "-linux-gnu-gcc" in p
                 or p.startswith((f"{SITE}/pip/", f"{SITE}/setuptools/", "usr/lib/gcc/"))]
        assert tools == [], alias
        assert so in every and "usr/bin/python3.9" in every


def test_the_extension_carries_no_build_path_or_build_id(builds):
    for alias in ALIASES:
        arch = alias.split("-", 1)[1]
        digest = _run_layer(builds[1]["results"][alias])["digests"][0]
        with open_layer(builds[1]["store"] / "blobs/sha256" / digest.split(":")[1],
                        "application/vnd.oci.image.layer.v1.tar+gzip") as f, tarfile.open(fileobj=f, mode="r|") as tf:
            for m in tf:
                if m.name.endswith(f"{arch}-linux-gnu.so"):
                    data = tf.extractfile(m).read()  # type: ignore[union-attr]
        assert data[:4] == b"\x7fELF"
        assert b"/enginefab/build" not in data and b"/tmp/" not in data
        assert b".note.gnu.build-id" not in data  # -Wl,--build-id=none


def test_the_module_imports_in_the_runtime_check(builds, project):
    p = enginefab("check", *ALIASES, "--level", "runtime", "--store", str(builds[1]["store"]), "--json", cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    text = p.stdout
    reports = {r["image"]: {x["name"]: x for x in r["results"]} for r in json.loads(text)}
    for alias in ALIASES:
        probe = reports[alias]["import-mmh3"]
        assert probe["status"] == "pass" and probe["data"]["version"] == "5.2.0", probe
        assert probe["data"]["output"] == "mmh3 hashes -156908512"  # the compiled hash function ran
    assert reports["mmh3-aarch64"]["import-mmh3"]["data"]["emulated"] is True


def _small_variant(project: Path, name: str, script: str, tmp_path: Path) -> Path:
    """mmh3-x86_64 with only the OS and Python layers below the step (both in the demo's store)."""
    defn = load_definition(project / "build" / "mmh3-x86_64.json")
    run = next(la for la in defn.layers if la.id.startswith("run/"))
    step = run_input(RunStep(name=name, script=script))
    layer = Layer(id=f"run/{name}", kind="run", inputs=[i for i in run.inputs if i.kind != "run"] + [step],
                  tools=run.tools, comment="a failing step")
    return definition_file(defn.model_copy(update={"layers": [*defn.layers[:2], layer]}), tmp_path / f"{name}.json")


def test_a_failed_compile_shows_gcc_and_leaves_the_store_clean(project, demo_build, tmp_path):
    broken = BUILD.replace("cd mmh3-5.2.0\n", "cd mmh3-5.2.0\necho 'int broken(void) { return 1 }' >> src/mmh3/murmurhash3.c\n")
    path = _small_variant(project, "broken-c", broken, tmp_path)
    store = _store_copy(demo_build["store"], tmp_path / "store")
    blobs = set(os.listdir(store / "blobs/sha256"))
    actions = set(os.listdir(store / "actions"))
    p = enginefab("build", str(path), "--store", str(store), "--out", str(tmp_path / "out"), cwd=project)
    assert p.returncode == 2, p.stdout + p.stderr
    err = " ".join(p.stderr.split())
    assert "murmurhash3.c" in err and "error: expected ';' before '}' token" in err, p.stderr
    log = next((store / "logs").glob("run_broken-c*.log"))
    assert str(log) in "".join(p.stderr.split())  # the error names the whole log
    whole = log.read_text()
    assert "error: expected ';' before '}' token" in whole and "Building wheel for mmh3" in whole
    # the store: no new blob, no cache entry, no temporary left behind, and it verifies
    assert set(os.listdir(store / "blobs/sha256")) == blobs and set(os.listdir(store / "actions")) == actions
    assert not (store / "tmp").exists() or not any((store / "tmp").iterdir())
    v = enginefab("store", "verify", "--store", str(store))
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_step_cannot_reach_pypi(project, demo_build, tmp_path):
    addr = socket.getaddrinfo("pypi.org", 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    script = (f"python3.9 -c \"import socket; socket.create_connection(('{addr}', 443), timeout=10); "
              "print('CONNECTED')\"\n")
    path = _small_variant(project, "online", script, tmp_path)
    store = _store_copy(demo_build["store"], tmp_path / "store")
    p = enginefab("build", str(path), "--store", str(store), "--out", str(tmp_path / "out"), cwd=project)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "CONNECTED" not in p.stderr and "Network is unreachable" in p.stderr, p.stderr
