"""Store and action cache on real builds: a no-op rebuild reads no layer bytes, a one-pin change
re-packs only its layer (and `diff` explains it file by file), two builds share a store, a build
killed midway leaves the store intact and the next build gives the same digest, gc keeps its
roots, zstd layers are the same bytes for any thread count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginefab.assemble import compress
from tests.conftest import ROOT, definition_file, demo_definition, enginefab, pypi_file, validate_oci

pytestmark = pytest.mark.slow
AARCH64 = "demo-pytorch-aarch64"


def results(p: subprocess.CompletedProcess) -> dict[str, dict]:
    assert p.returncode == 0, p.stdout + p.stderr
    return {r["alias"]: r for r in json.loads(p.stdout)}


def with_pin(defn, name: str, new: dict, version: str):
    layers = [layer.model_copy(update={"inputs": [
        i.model_copy(update={"version": version, **new}) if i.name == name else i for i in layer.inputs]})
        for layer in defn.layers]
    return defn.model_copy(update={"layers": layers})


# -- no-op rebuild ---------------------------------------------------------------------------


def test_noop_rebuild_of_the_demos_reads_no_layer_bytes(demo_build, demo_aliases, tmp_path):
    """In process, with every file open audited: no layer blob and no input is opened, nothing
    is packed, and the digests are the first build's."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from tests.conftest import session_for

    store = Store(demo_build["store"])
    layer_blobs = {str(store.blob_path(x)) for r in demo_build["results"] for o in r["layer_results"]
                   for x in o.get("digests", [])}
    assert len(layer_blobs) >= 10
    opened: list[str] = []
    watching = [True]

    def audit(event, args):
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    def no_fetch(inp, image):
        raise AssertionError(f"a no-op rebuild fetched {inp.ref}")

    sys.addaudithook(audit)
    builder = Builder(store, no_fetch)
    t0 = time.monotonic()
    try:
        digests = {a: builder.image(demo_definition(a)).digest for a in demo_aliases}
    finally:
        watching[0] = False
    took = time.monotonic() - t0
    assert digests == demo_build["digests"]
    assert builder.stats.layers_built == 0 and builder.stats.bytes_packed == 0
    assert builder.stats.layers_cached == sum(len(demo_definition(a).layers) for a in demo_aliases)
    read_layers = [p for p in opened if p in layer_blobs]
    read_inputs = [p for p in opened if p.startswith(str(session_for().downloads))]
    assert read_layers == [] and read_inputs == [], (read_layers, read_inputs)
    print(f"no-op rebuild of {len(digests)} images in process: {took:.3f} s, {len(opened)} files opened")

    # and through the CLI, into a new layout: 0 layers built
    p = enginefab("build", *demo_aliases, "--store", str(demo_build["store"]), "--out", str(tmp_path / "again"),
                  "--json")
    again = results(p)
    assert {a: r["digest"] for a, r in again.items()} == demo_build["digests"]
    assert all(r["built"] == 0 for r in again.values())


# -- one pin changed -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_pin(demo_build, tmp_path_factory):
    """The aarch64 demo with typing-extensions 4.15.0 instead of its pin, built into the demo store."""
    base = tmp_path_factory.mktemp("one-pin")
    old = demo_definition(AARCH64)
    pin = next(i for i in old.inputs() if i.name == "typing-extensions")
    assert pin.version != "4.15.0"
    file = pypi_file("typing-extensions", "typing_extensions-4.15.0-py3-none-any.whl")
    path = definition_file(with_pin(old, "typing-extensions", file, "4.15.0"), base / "one-pin.json")
    p = enginefab("build", str(path), "--store", str(demo_build["store"]), "--out", str(base / "layout"), "--json")
    return {"path": path, "layout": base / "layout", "result": results(p)[AARCH64], "old": pin, "file": file}


def test_a_one_pin_change_repacks_only_the_layer_that_holds_it(one_pin, demo_build):
    r = one_pin["result"]
    built = [o["id"] for o in r["layer_results"] if o["status"] == "built"]
    assert len(built) == 1 and built[0].startswith("wheel/typing-extensions-"), r["layer_results"]
    assert r["cached"] == len(r["layer_results"]) - 1
    assert r["digest"] != demo_build["digests"][AARCH64]


def test_diff_of_two_builds_names_the_pin_the_layer_and_the_files(one_pin, demo_build):
    site = "usr/local/lib/python3.9/dist-packages"
    old_version = one_pin["old"].version
    p = enginefab("diff", f"{demo_build['layout']}:{AARCH64}", str(one_pin["layout"]), "--store",
                  str(demo_build["store"]), "--json")
    assert p.returncode == 1, p.stderr  # they differ
    d = json.loads(p.stdout)
    assert d["manifest"] == {"a": demo_build["digests"][AARCH64], "b": one_pin["result"]["digest"]}
    differing = [r for r in d["layers"] if r["status"] != "same"]
    assert len(differing) == 1 and differing[0]["a"]["id"].startswith("wheel/typing-extensions-")
    files = differing[0]["files"]
    assert [c["path"] for c in files["changed"]] == [f"{site}/typing_extensions.py"]
    assert set(files["changed"][0]["fields"]) >= {"sha256", "size"}
    assert f"{site}/typing_extensions-4.15.0.dist-info/RECORD" in {a["path"] for a in files["added"]}
    assert f"{site}/typing_extensions-{old_version}.dist-info/RECORD" in {a["path"] for a in files["removed"]}

    # two definitions: the input that differs, by name and version
    p = enginefab("diff", str(ROOT / "build" / f"{AARCH64}.json"), str(one_pin["path"]), "--store",
                  str(demo_build["store"]), "--json")
    d = json.loads(p.stdout)
    was, now = one_pin["old"], one_pin["file"]
    assert d["inputs"]["changed"] == [{"input": "wheel:typing-extensions",
                                       "a": {"version": was.version, "sha256": was.sha256, "size": was.size},
                                       "b": {"version": "4.15.0", "sha256": now["sha256"], "size": now["size"]}}]
    assert not d["inputs"]["added"] and not d["inputs"]["removed"]

    # the same image twice: identical, exit 0; the text form says so
    p = enginefab("diff", f"{demo_build['layout']}:{AARCH64}", f"{demo_build['layout']}:{AARCH64}")
    assert p.returncode == 0 and p.stdout.strip().endswith("identical"), p.stdout + p.stderr


# -- sharing and killing ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small real definition: the aarch64 demo's OS, Python and config layers."""
    base = tmp_path_factory.mktemp("small")
    defn = demo_definition(AARCH64)
    keep = [layer for layer in defn.layers if layer.id.split("/")[0] in ("os", "python", "debs", "config")]
    path = definition_file(defn.model_copy(update={"layers": keep}), base / "small.json")
    return {"path": path, "layers": len(keep), "base": base}


@pytest.fixture(scope="module")
def shared(small):
    """Two builds of the small definition started at once into one fresh store."""
    store = small["base"] / "shared-store"
    procs = [subprocess.Popen([sys.executable, "-m", "enginefab", "build", str(small["path"]), "--store", str(store),
                               "--out", str(small["base"] / f"layout{n}"), "--json"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, ENGINEFAB_QUIET="1"))
             for n in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return {"store": store, "results": [json.loads(o)[0] for o, _ in outs]}


def test_two_builds_sharing_a_store_build_each_layer_once(small, shared):
    a, b = shared["results"]
    assert a["digest"] == b["digest"]
    assert a["built"] + b["built"] == small["layers"]  # one lock per action key: each layer packed once
    v = enginefab("store", "verify", "--store", str(shared["store"]), "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["problems"] == []


def test_gc_keeps_its_roots_and_removes_the_rest(small, shared, tmp_path):
    import shutil

    from enginefab.assemble.store import Store

    store = Store(shared["store"])
    stray = store.put_bytes(b"nobody references this blob")
    p = enginefab("store", "gc", "--store", str(store.root), "--keep", "layouts", "--dry-run", "--json", check=True)
    assert json.loads(p.stdout)["removed"] == 1 and store.has(stray.digest)  # a dry run removes nothing
    p = enginefab("store", "gc", "--store", str(store.root), "--keep", "layouts", "--json", check=True)
    assert json.loads(p.stdout)["removed"] == 1 and not store.has(stray.digest)
    again = enginefab("build", str(small["path"]), "--store", str(store.root), "--out", str(tmp_path / "l"), "--json")
    assert json.loads(again.stdout)[0]["built"] == 0  # the layouts kept every layer, and the cache its entries
    # no layout left: the definitions root (build/*.json) still holds every layer of this small image,
    # since they are the aarch64 demo's own layers, but not its config and manifest
    for layout in store.roots():
        shutil.rmtree(layout)
    p = enginefab("store", "gc", "--store", str(store.root), "--json", check=True)
    res = json.loads(p.stdout)
    assert (res["kept"], res["removed"]) == (small["layers"], 2), res
    v = json.loads(enginefab("store", "verify", "--store", str(store.root), "--json").stdout)
    assert v["ok"] and v["stale_temporaries"] == []


def zstd_definition(path: Path) -> Path:
    defn = demo_definition(AARCH64)
    return definition_file(defn.model_copy(update={"compression": compress.contract("zstd")}), path)


def test_zstd_layers_are_the_same_for_any_thread_count_and_survive_a_kill(tmp_path):
    """The aarch64 demo with the zstd contract: built with 2 threads; built with 1 thread but
    killed (SIGKILL) once a layer is in the store; `store verify` finds nothing wrong; the next
    build finishes with the 2-thread build's digest."""
    path = zstd_definition(tmp_path / "zstd.json")
    one = results(enginefab("build", str(path), "--store", str(tmp_path / "s2"), "--out", str(tmp_path / "l2"),
                            "--json", env={"ENGINEFAB_THREADS": "2"}))[AARCH64]
    store = tmp_path / "s1"
    env = dict(os.environ, ENGINEFAB_QUIET="1", ENGINEFAB_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "enginefab", "build", str(path), "--store", str(store), "--out",
                             str(tmp_path / "l1"), "--json"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300

    def layers_done() -> int:
        return len(list((store / "actions").glob("*.json"))) if (store / "actions").is_dir() else 0

    while not layers_done():
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before the kill: nothing was interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    v = json.loads(enginefab("store", "verify", "--store", str(store), "--json").stdout)
    assert v["ok"] and v["problems"] == [], v
    again = results(enginefab("build", str(path), "--store", str(store), "--out", str(tmp_path / "l1"), "--json",
                              env={"ENGINEFAB_THREADS": "1"}))[AARCH64]
    assert again["digest"] == one["digest"]
    assert again["cached"] >= 1 and again["built"] >= 1  # it resumed: kept what was done, made the rest
    assert json.loads(enginefab("store", "verify", "--store", str(store), "--json").stdout)["ok"]
    enginefab("store", "gc", "--store", str(store), check=True)
    assert json.loads(enginefab("store", "verify", "--store", str(store), "--json").stdout)["stale_temporaries"] == []

    # the zstd layout is valid OCI, every layer is zstd, and independent tools read it
    layout = tmp_path / "l1"
    assert enginefab("validate", str(layout)).returncode == 0
    manifest = json.loads((store / "blobs/sha256" / again["digest"].split(":")[1]).read_bytes())
    validate_oci(manifest, "image-manifest-schema.json")
    assert {ld["mediaType"] for ld in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:{AARCH64}"], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["Digest"] == again["digest"]
    # umoci 0.4.7 (Debian 12) predates zstd layers; the zstd and tar programs read every one of ours
    names: set[str] = set()
    for ld in manifest["layers"]:
        blob = store / "blobs/sha256" / ld["digest"].split(":")[1]
        listing = subprocess.run(f"zstd -dc {blob} | tar -tf -", shell=True, capture_output=True, text=True, check=True)
        names.update(listing.stdout.split())
    assert "usr/local/lib/python3.9/dist-packages/torch/version.py" in names and "etc/passwd" in names
