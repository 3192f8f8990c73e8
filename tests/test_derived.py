"""Derived images (`from`): a training image over the x86_64 demo, from the matrix and from a
registry by digest — locked, built and checked at every level; its lower layers are the
parent's blobs; a change to the parent makes it stale; a missing parent or a cycle is an error
that names the file, the image and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from enginefab.core.definition import load_definition
from enginefab.engines.matrix import load
from enginefab.engines.problems import MatrixProblems
from enginefab.publish.server import Registry, free_port
from tests.conftest import ROOT, enginefab

PARENT = "demo-pytorch-x86_64"
CHILD = "demo-derived-x86_64"
DERIVED = f'''
[[image]]
alias = "{CHILD}"
from = "{PARENT}"
requirements = ["six"]          # a small pure-Python wheel the parent does not have
env = {{ DERIVED_MARK = "yes" }}
description = "the x86_64 demo plus six"
'''


def project(dst: Path, extra: str = "") -> Path:
    """A scratch checkout (engines/, build/) with `extra` appended to engines/pytorch.toml."""
    dst.mkdir(parents=True)
    for d in ("engines", "build", "registry"):
        shutil.copytree(ROOT / d, dst / d)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    with (dst / "engines" / "pytorch.toml").open("a") as f:
        f.write(extra)
    return dst


def manifest(store: Path, digest: str) -> dict:
    return json.loads((store / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())


def config(store: Path, digest: str) -> dict:
    return json.loads((store / "blobs" / "sha256" / manifest(store, digest)["config"]["digest"][7:]).read_bytes())


def lock_build_check(proj: Path, alias: str, store: Path) -> tuple[str, dict]:
    """Lock, build and check (every level) `alias` in `proj`: its digest and check report."""
    enginefab("lock", alias, "--store", str(store), cwd=proj, check=True)
    p = enginefab("build", alias, "--store", str(store), "--out", str(proj / "out"), "--json", cwd=proj, check=True)
    digest = json.loads(p.stdout)[0]["digest"]
    c = enginefab("check", alias, "--store", str(store), "--json", cwd=proj)
    assert c.returncode == 0, c.stdout + c.stderr
    return digest, json.loads(c.stdout)[0]


def assert_over_parent(pstore: Path, parent: str, cstore: Path, child: str, report: dict) -> None:
    """The child's lower layers are the parent's blobs, its config the parent's extended, and
    its own layer holds six, not the parent's torch again; every check level passed."""
    pm, cm = manifest(pstore, parent), manifest(cstore, child)
    n = len(pm["layers"])
    assert [x["digest"] for x in cm["layers"][:n]] == [x["digest"] for x in pm["layers"]]
    assert len(cm["layers"]) == n + 1  # one layer of its own: the six wheel
    pcfg, ccfg = config(pstore, parent), config(cstore, child)
    pc, cc = pcfg["config"], ccfg["config"]
    assert (cc["User"], cc["WorkingDir"], cc["Cmd"]) == (pc["User"], pc["WorkingDir"], pc["Cmd"]) == (
        "1000:100", "/home/ma-user", ["/usr/bin/python3.9"])
    assert sorted(cc["Env"]) == sorted(pc["Env"] + ["DERIVED_MARK=yes"])
    assert ccfg["rootfs"]["diff_ids"][:n] == pcfg["rootfs"]["diff_ids"]
    results = {r["name"]: r for r in report["results"]}
    assert {r["level"] for r in report["results"] if r["status"] == "pass"} >= {"definition", "static", "runtime"}
    assert not [r for r in report["results"] if r["status"] in ("fail", "error")]
    assert results["import-pytorch"]["status"] == "pass"
    assert results["modelarts-conventions"]["status"] == "pass"


@pytest.fixture(scope="module")
def derived(demo_build, tmp_path_factory):
    """The derived image locked, built and checked in a scratch checkout, over the session's demo store."""
    proj = project(tmp_path_factory.mktemp("derived") / "proj", DERIVED)
    digest, report = lock_build_check(proj, CHILD, demo_build["store"])
    return {"proj": proj, "digest": digest, "report": report, "store": demo_build["store"]}


@pytest.mark.slow
@pytest.mark.network
def test_derived_image_locks_builds_and_passes_every_check(derived, demo_build):
    store = derived["store"]
    assert_over_parent(store, demo_build["digests"][PARENT], store, derived["digest"], derived["report"])
    defn = json.loads((derived["proj"] / "build" / f"{CHILD}.json").read_bytes())
    assert defn["parent"]["alias"] == PARENT
    assert defn["parent"]["manifest"] == demo_build["digests"][PARENT]
    assert defn["parent"]["distributions"]["torch"] == "1.8.0"
    wheels = [i["name"] for la in defn["layers"] if la["kind"] == "wheels" for i in la["inputs"]]
    assert wheels == ["six"]  # torch, numpy, typing-extensions are the parent's: not installed again
    assert enginefab("lock", "--check", cwd=derived["proj"]).returncode == 0
    v = enginefab("lock", "--verify", CHILD, cwd=derived["proj"])  # its own pins asked again, online
    assert v.returncode == 0 and "upstream agrees" in v.stderr, v.stderr


@pytest.mark.slow
@pytest.mark.network
def test_a_child_of_a_derived_image_has_its_layers(derived, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(derived["proj"], proj, ignore=shutil.ignore_patterns("out"))
    with (proj / "engines" / "pytorch.toml").open("a") as f:
        f.write(f'\n[[image]]\nalias = "grandchild"\nfrom = "{CHILD}"\nenv = {{ GRAND = "1" }}\n')
    enginefab("lock", "grandchild", "--store", str(derived["store"]), cwd=proj, check=True)
    p = enginefab("build", "grandchild", "--store", str(derived["store"]), "--out", str(proj / "out"), "--json",
                  cwd=proj, check=True)
    digest = json.loads(p.stdout)[0]["digest"]
    store = derived["store"]
    assert manifest(store, digest)["layers"] == manifest(store, derived["digest"])["layers"]
    env = config(store, digest)["config"]["Env"]
    assert "GRAND=1" in env and "DERIVED_MARK=yes" in env
    record = json.loads((proj / "build" / "grandchild.json").read_bytes())["parent"]
    assert record["alias"] == CHILD and {"torch", "six"} <= set(record["distributions"])  # the chain's
    assert enginefab("lock", "--check", cwd=proj).returncode == 0


@pytest.mark.slow
@pytest.mark.network
def test_a_parent_record_edited_by_hand_is_a_problem(derived, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(derived["proj"], proj, ignore=shutil.ignore_patterns("out"))
    path = proj / "build" / f"{CHILD}.json"
    defn = load_definition(path)
    assert defn.parent is not None
    forged = defn.parent.model_copy(update={"distributions": {**defn.parent.distributions, "torch": "1.9.0"}})
    path.write_bytes(defn.model_copy(update={"parent": forged}).to_json())
    p = enginefab("lock", "--check", "--json", cwd=proj)
    assert p.returncode == 1
    assert any(x.startswith(f"{CHILD}: build/{CHILD}.json: parent.distributions.torch: \"1.9.0\" → \"1.8.0\"")
               for x in json.loads(p.stdout)["problems"])


@pytest.mark.slow
@pytest.mark.network
def test_editing_the_parent_makes_the_child_stale(derived, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(derived["proj"], proj, ignore=shutil.ignore_patterns("out"))
    toml = proj / "engines" / "pytorch.toml"
    text = toml.read_text()
    at = text.index(f'alias = "{PARENT}"')
    edited = text[at:].replace('constraints = ["numpy>=1.17,<1.22"]', 'constraints = ["numpy>=1.17,<1.21"]', 1)
    toml.write_text(text[:at] + edited)
    p = enginefab("lock", "--check", "--json", cwd=proj)
    assert p.returncode == 1
    rep = json.loads(p.stdout)
    over_parent = {i.alias for i in load(proj).images if i.parent_alias == PARENT}  # the demo model image too
    assert {PARENT, CHILD} <= set(rep["stale"]) == {PARENT} | over_parent
    said = [x for x in rep["problems"] if x.startswith(f"{CHILD}: parent {PARENT} changed (locked sha256:")]
    assert len(said) == 1 and " now sha256:" in said[0] and f"`enginefab lock {PARENT} {CHILD}`" in said[0], rep
    # the build refuses what lock --check calls stale: the parent first
    b = enginefab("build", CHILD, "--store", str(derived["store"]), "--out", str(tmp_path / "out"), cwd=proj)
    assert b.returncode == 2 and f"is stale: its parent {PARENT} changed" in b.stderr, b.stderr


@pytest.fixture(scope="module")
def pushed(demo_build, tmp_path_factory):
    """The x86_64 demo pushed to a registry on 127.0.0.1: (registry host, reference by digest)."""
    reg = Registry(root=tmp_path_factory.mktemp("derived-registry"), port=free_port()).start()
    try:
        enginefab("push", PARENT, "--to", f"{reg.host}/enginefab", "--plain-http", "--store",
                  str(demo_build["store"]), check=True)
        yield reg.host, f"{reg.host}/enginefab/pytorch@{demo_build['digests'][PARENT]}"
    finally:
        reg.stop()


@pytest.mark.slow
@pytest.mark.network
def test_a_registry_parent_by_digest_works_the_same(demo_build, pushed, tmp_path):
    parent = demo_build["digests"][PARENT]
    host, ref = pushed
    extra = DERIVED.replace(f'from = "{PARENT}"', f'from = "{ref}"\nengine_version = "1.8.0"\npython = "3.9"\n'
                            'os = "debian-11"\naccelerator = "cuda-10.2-wheel"\narch = "x86_64"')
    proj = project(tmp_path / "proj", extra)
    store = tmp_path / "store"  # an empty store: every parent blob comes from the registry
    digest, report = lock_build_check(proj, CHILD, store)
    assert_over_parent(demo_build["store"], parent, store, digest, report)
    defn = json.loads((proj / "build" / f"{CHILD}.json").read_bytes())
    assert defn["parent"]["reference"] == ref and defn["parent"]["manifest"] == parent
    assert defn["parent"]["distributions"]["torch"] == "1.8.0"  # read from the parent's layers
    assert "libc6" in defn["parent"]["debs"]  # its dpkg status (status.d/, one file per package)
    # another digest in engines/: stale, saying which
    other = "sha256:" + "0" * 64
    toml = proj / "engines" / "pytorch.toml"
    toml.write_text(toml.read_text().replace(ref, f"{host}/enginefab/pytorch@{other}"))
    p = enginefab("lock", "--check", "--json", cwd=proj)
    said = [x for x in json.loads(p.stdout)["problems"] if x.startswith(f"{CHILD}: parent ")]
    assert p.returncode == 1 and said == [
        f"{CHILD}: parent {host}/enginefab/pytorch changed (locked {parent} now {other}); "
        f"run `enginefab lock {CHILD}`"]


@pytest.mark.slow
def test_init_writes_a_project_that_builds_from_a_pushed_demo(demo_build, pushed, tmp_path):
    _host, ref = pushed
    mine = tmp_path / "mine"
    mine.mkdir()
    p = enginefab("init", str(mine), "--from", ref, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    made = json.loads(p.stdout)
    alias = made["image"]
    assert alias == "pytorch-custom-x86_64" and made["preset"] == PARENT
    assert {"engines/platforms.toml", "engines/pytorch.toml", "build/.gitkeep", "README.md", ".gitignore"} <= set(
        made["files"])
    assert not (mine / "pyproject.toml").exists()  # a project of its own, not a copy of this checkout
    again = enginefab("init", str(mine), "--from", ref, cwd=tmp_path)
    assert again.returncode == 2 and "is not empty" in again.stderr and "--force" in again.stderr
    assert enginefab("init", str(mine), "--from", ref, "--force", cwd=tmp_path).returncode == 0
    no_digest = enginefab("init", str(tmp_path / "other"), "--from", ref.split("@")[0] + ":latest", cwd=tmp_path)
    assert no_digest.returncode == 2 and "does not name a digest" in no_digest.stderr
    # the same commands, in the project
    digest, report = lock_build_check(mine, alias, demo_build["store"])
    assert enginefab("lock", "--check", cwd=mine).returncode == 0
    assert json.loads((mine / "build" / f"{alias}.json").read_bytes())["parent"]["reference"] == ref
    pm, cm = manifest(demo_build["store"], demo_build["digests"][PARENT]), manifest(demo_build["store"], digest)
    assert cm["layers"] == pm["layers"]  # nothing added yet: the preset's layers, its config extended
    assert not [r for r in report["results"] if r["status"] in ("fail", "error")]
    assert config(demo_build["store"], digest)["config"]["Labels"]["io.enginefab.parent"] == ref


def _problems(tmp_path: Path, extra: str) -> list[str]:
    proj = project(tmp_path / "proj", extra)
    with pytest.raises(MatrixProblems) as e:
        load(proj)
    return [p.render() for p in e.value.problems]


def test_a_missing_parent_names_file_image_and_fix(tmp_path):
    out = _problems(tmp_path, DERIVED.replace(f'from = "{PARENT}"', 'from = "demo-pytorch-x86_65"'))
    assert len(out) == 1
    assert out[0].startswith("engines/pytorch.toml:") and f"image {CHILD}" in out[0]
    assert "field from: no image 'demo-pytorch-x86_65' in engines/ to derive from" in out[0]
    assert "did you mean demo-pytorch-x86_64?" in out[0]


def test_a_registry_parent_must_be_pinned_by_digest(tmp_path):
    for bad in ("127.0.0.1:5000/enginefab/pytorch@sha256:1234", "alice:pw@127.0.0.1:5000/x@sha256:" + "0" * 64):
        out = _problems(tmp_path / str(len(bad)), DERIVED.replace(f'from = "{PARENT}"', f'from = "{bad}"'))
        assert len(out) == 1 and "is not a registry image pinned by digest" in out[0] and "@sha256:<64 hex>" in out[0]


def test_a_cycle_is_named_on_every_image_of_it(tmp_path):
    extra = '\n[[image]]\nalias = "cyc-a"\nfrom = "cyc-b"\n\n[[image]]\nalias = "cyc-b"\nfrom = "cyc-a"\n'
    out = _problems(tmp_path, extra)
    assert len(out) == 2
    for alias in ("cyc-a", "cyc-b"):
        mine = [p for p in out if f"image {alias} " in p]
        assert len(mine) == 1 and "derived images form a cycle" in mine[0] and "without `from`" in mine[0]


def test_a_derived_image_inherits_and_may_not_contradict(tmp_path):
    m = load(project(tmp_path / "ok", DERIVED))
    child, parent = m.get(CHILD), m.get(PARENT)
    assert child.derived and child.parent_alias == PARENT and child.name == CHILD
    assert (child.d.python, child.os_id, child.stack_id, child.arch) == (
        parent.d.python, parent.os_id, parent.stack_id, parent.arch)
    out = _problems(tmp_path / "bad", DERIVED.replace('requirements', 'python = "3.8"\nrequirements'))
    assert len(out) == 1 and "field python: '3.8', but a derived image has its parent's python ('3.9')" in out[0]
    assert "remove python" in out[0]
