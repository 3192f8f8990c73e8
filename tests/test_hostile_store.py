"""A damaged store, a damaged download cache, full and read-only filesystems, concurrent layout
writers (issue 11, items 3 (cache), 9, 12, 14).

A flipped byte or a truncated blob is never used: a layer is rebuilt, a base blob refetched, a
config or manifest rewritten, a layout copy replaced; push and check name the blob instead of
sending it or crashing in gzip. A damaged download-cache entry (a placed file) is fetched
again. ENOSPC and EROFS end in exit 2 naming the path and the fix (tmpfs mounts in a user and
mount namespace of the test's own). Concurrent writers of one layout's index.json lose no entry.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from enginefab.assemble import rootfs
from enginefab.assemble.builder import Builder
from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.store import CorruptBlob, Store
from enginefab.core.definition import Input, Layer
from enginefab.core.errors import BuildError, RegistryError
from enginefab.publish.push import store_blobs
from enginefab.core.reporter import Recording
from enginefab.transport import download
from tests.conftest import ROOT, cli, definition_file, demo_definition, session_for
from tests.test_build_safety import member, tar_bytes

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def flip(p: Path, at: int = 100) -> None:
    """One byte changed in place, as a disk or a careless tool would (mtime moves)."""
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))
    os.chmod(p, 0o444)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """Two real files behind file:// URLs, the download cache of this test's own."""
    monkeypatch.setenv("ENGINEFAB_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool.sh").write_bytes(b"#!/bin/sh\necho " + os.urandom(3000).hex().encode() + b"\n")
    (src / "data.tar").write_bytes(tar_bytes([member("share/data.bin", os.urandom(50_000))]))
    return src


def _input(path: Path, dest: str, unpack: bool) -> Input:
    return Input(kind="url", name=path.name, version="1", url=path.as_uri(), sha256=_sha(path),
                 size=path.stat().st_size, filename=path.name, dest=dest, unpack=unpack)


def small_definition(src: Path):
    """The committed demo definition with its layers swapped for two small archive layers."""
    layers = [Layer(id="archives/tool", kind="archives", inputs=[_input(src / "tool.sh", "/usr/local/bin/tool", False)]),
              Layer(id="archives/data", kind="archives", inputs=[_input(src / "data.tar", "/opt", True)])]
    return demo_definition().model_copy(update={"layers": layers})


def build(store: Store, defn, out: Path) -> tuple[Built, Builder]:
    """Build into `store` (tmp_path/<name>), fetching into the test's own cache (tmp_path/cache)."""
    b = Builder(store, session=session_for(downloads=store.root.parent / "cache" / "downloads"))
    built = b.image(defn)
    write_layout(out, [built], store.checked_path)
    return built, b


def layer_digests(built: Built) -> list[str]:
    return [d["digest"] for d in json.loads(built.manifest)["layers"]]


# -- store blobs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_layer_blob_is_rebuilt_never_used(tmp_path, inputs, damage):
    store, out = Store(tmp_path / "store"), tmp_path / "out"
    first, _ = build(store, small_definition(inputs), out)
    blob = store.blob_path(layer_digests(first)[1])
    if damage == "truncated":
        os.chmod(blob, 0o644)
        os.truncate(blob, 1000)
    else:
        flip(blob)
    again, b = build(store, small_definition(inputs), out)
    assert again.digest == first.digest
    assert b.stats.layers_built == 1 and b.stats.layers_cached == 1  # only the damaged layer, built again
    assert "sha256:" + _sha(blob) == layer_digests(first)[1]
    laid = out / "blobs/sha256" / blob.name  # the layout's copy was the same (damaged) inode: replaced
    assert _sha(laid) == blob.name
    assert cli("validate", str(out)).returncode == 0


def test_a_damaged_config_or_manifest_is_written_again(tmp_path, inputs):
    store, out = Store(tmp_path / "store"), tmp_path / "out"
    first, _ = build(store, small_definition(inputs), out)
    cfg = json.loads(first.manifest)["config"]["digest"]
    for d in (cfg, first.digest):
        flip(store.blob_path(d), at=5)
    again, _ = build(store, small_definition(inputs), out)
    assert again.digest == first.digest
    for d in (cfg, first.digest):
        assert "sha256:" + _sha(store.blob_path(d)) == d
        assert "sha256:" + _sha(out / "blobs/sha256" / d.split(":")[1]) == d


def test_a_damaged_base_blob_is_fetched_again(tmp_path):
    data = tar_bytes([member("etc/os-release", b"ID=test\n")])
    src = tmp_path / "base-layer.tar"
    src.write_bytes(data)
    digest = "sha256:" + _sha(src)
    base = Layer(id="base/test", kind="base", inputs=[Input(kind="oci", name="test-base", version="1", url="r/x@" + digest,
                                                           sha256=digest.split(":")[1], size=len(data),
                                                           media_type=LAYER_TAR, diff_id=digest)])
    defn = demo_definition().model_copy(update={"layers": [base]})
    fetched: list[str] = []

    def fetcher(inp, image):
        fetched.append(inp.name)
        return src

    store = Store(tmp_path / "store")
    Builder(store, fetcher).build_layers(defn)
    flip(store.blob_path(digest), at=10)
    outcome = Builder(store, fetcher).build_layers(defn)[0]
    assert outcome.status == "fetched" and fetched == ["test-base", "test-base"]
    assert "sha256:" + _sha(store.blob_path(digest)) == digest


def test_push_refuses_a_damaged_blob_before_sending_anything(tmp_path, inputs):
    store = Store(tmp_path / "store")
    first, _ = build(store, small_definition(inputs), tmp_path / "out")
    doc = json.loads(first.manifest)
    flip(store.blob_path(doc["layers"][0]["digest"]))
    with pytest.raises(RegistryError) as ei:
        store_blobs(store, [doc["config"], *doc["layers"]])
    assert doc["layers"][0]["digest"] in ei.value.message and "does not hash" in ei.value.message
    assert "enginefab build" in (ei.value.fix or "")


def test_check_names_a_damaged_blob_instead_of_a_gzip_traceback(tmp_path, inputs):
    store = Store(tmp_path / "store")
    first, _ = build(store, small_definition(inputs), tmp_path / "out")
    flip(store.blob_path(layer_digests(first)[0]), at=40)
    with pytest.raises(CorruptBlob) as ei:
        rootfs.unpacked(store, first)
    assert layer_digests(first)[0] in ei.value.message and "corrupt" in ei.value.message
    assert "enginefab build" in (ei.value.fix or "")


def test_bit_rot_behind_an_unchanged_stat_is_found_by_store_verify(tmp_path, inputs):
    """Documented limit: a blob checked since written is trusted while its stat is unchanged
    (no bytes read on a no-op build); `store verify` re-hashes everything and names it."""
    store = Store(tmp_path / "store")
    first, _ = build(store, small_definition(inputs), tmp_path / "out")
    blob = store.blob_path(layer_digests(first)[1])
    st = blob.stat()
    flip(blob)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    p = cli("store", "verify", "--store", str(store.root), "--json")
    v = json.loads(p.stdout)
    assert not v["ok"] and any(blob.name in x for x in v["problems"]), v


# -- the download cache -----------------------------------------------------------------------------


def test_a_damaged_cache_entry_of_a_placed_file_is_fetched_again(tmp_path, inputs):
    defn = small_definition(inputs)
    tool = defn.layers[0].inputs[0]
    build(Store(tmp_path / "s1"), defn, tmp_path / "o1")
    cached = download.cache_path(tool.sha256, tmp_path / "cache" / "downloads")
    flip(cached, at=20)
    built, _ = build(Store(tmp_path / "s2"), defn, tmp_path / "o2")  # a fresh store: the layer is packed again
    with tarfile.open(Store(tmp_path / "s2").blob_path(layer_digests(built)[0])) as tf:
        placed = tf.extractfile("usr/local/bin/tool").read()  # type: ignore[union-attr]
    assert placed == (inputs / "tool.sh").read_bytes()
    assert _sha(cached) == tool.sha256  # the cache holds the right bytes again


def test_a_damaged_cache_entry_whose_source_is_gone_fails_and_is_never_used(tmp_path, inputs):
    defn = small_definition(inputs)
    tool = defn.layers[0].inputs[0]
    build(Store(tmp_path / "s1"), defn, tmp_path / "o1")
    flip(download.cache_path(tool.sha256, tmp_path / "cache" / "downloads"), at=20)
    (inputs / "tool.sh").unlink()
    path = definition_file(defn, tmp_path / "d.json")
    p = cli("build", str(path), "--store", str(tmp_path / "s2"), "--out", str(tmp_path / "o2"),
                  env={"ENGINEFAB_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "tool.sh" in p.stderr and "does not exist" in p.stderr, p.stderr
    assert not (tmp_path / "o2" / "index.json").exists()


def test_a_manual_file_damaged_in_the_cache_is_reported_missing_not_used(tmp_path):
    downloads = tmp_path / "cache" / "downloads"
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    p = download.cache_path(sha, downloads)
    p.parent.mkdir(parents=True)
    p.write_bytes(data)
    assert download.cached(sha, downloads) == p  # hashed once, then trusted by its marker
    assert (tmp_path / "cache/downloads/verified" / sha).is_file()
    flip(p)
    said = Recording()
    assert download.cached(sha, downloads, reporter=said) is None and not p.exists()
    assert said.warnings == [f"the download cache's {p} is damaged (its bytes do not hash to its name): "
                             "removed, fetched again"]


# -- full and read-only filesystems -------------------------------------------------------------------


def in_namespace(script: str, env: dict) -> subprocess.CompletedProcess:
    """`script` (sh) as root of a user and mount namespace of its own, where it may mount tmpfs."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-Urm", "true"]).returncode != 0:
        pytest.skip("no user namespaces here (unshare -Urm fails): ENOSPC/EROFS cannot be staged")
    e = dict(os.environ, ENGINEFAB_QUIET="1", PYTHON=sys.executable, **env)
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=300)


def test_a_full_store_is_a_clear_error(tmp_path, inputs):
    big = inputs / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    defn = demo_definition().model_copy(update={"layers": [
        Layer(id="archives/big", kind="archives", inputs=[_input(big, "/opt/big.bin", False)])]})
    path = definition_file(defn, tmp_path / "d.json")
    store = tmp_path / "store"
    store.mkdir()
    p = in_namespace(f'mount -t tmpfs -o size=1m none {store} && "$PYTHON" -m enginefab build {path} --store {store} '
                     f'--out {tmp_path / "out"}', {"ENGINEFAB_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "no space left to write" in p.stderr and str(store) in p.stderr and "store gc" in p.stderr, p.stderr


def test_a_read_only_store_is_a_clear_error_for_build_and_gc(tmp_path, inputs):
    path = definition_file(small_definition(inputs), tmp_path / "d.json")
    store = tmp_path / "store"
    Store(store)
    for cmd in (f"build {path} --out {tmp_path / 'out'}", "store gc"):
        p = in_namespace(f'mount --bind {store} {store} && mount -o remount,bind,ro {store} && '
                         f'"$PYTHON" -m enginefab {cmd} --store {store}', {"ENGINEFAB_CACHE": str(tmp_path / "cache")})
        assert p.returncode == 2 and "Traceback" not in p.stderr, (cmd, p.stderr)
        assert f"cannot write {store}" in p.stderr and "Read-only file system" in p.stderr, (cmd, p.stderr)
        assert "--store DIR" in p.stderr


# -- concurrent layout writers --------------------------------------------------------------------------


def _writer(args: tuple[str, str, int, int]) -> None:
    store_root, out, worker, n = args
    store = Store(Path(store_root))
    for i in range(n):
        manifest = json.dumps({"w": worker, "i": i}).encode()
        store.put_bytes(manifest)
        b = Built(name=f"img-{worker}-{i}", alias=f"a-{worker}-{i}", manifest=manifest,
                  platform={"os": "linux", "architecture": "amd64"}, blobs=())
        write_layout(Path(out), [b], store.checked_path)


def test_concurrent_writers_of_one_layout_lose_no_entry(tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    Store(store)
    workers, each = 4, 25
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.map(_writer, [(str(store), str(out), w, each) for w in range(workers)])
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((out / "index.json").read_bytes())["manifests"]}
    assert len(refs) == workers * each * 2


# -- pins that are paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["url", "oci"])
def test_a_sha256_that_is_a_path_never_reads_or_deletes_a_host_file(tmp_path, kind):
    """`"sha256": "../../../host/secret"` names a file outside the cache (or the store): it is
    refused before any path is made of it. (Damaged entries are deleted: a path-shaped pin must
    never reach that either.)"""
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret"
    secret.write_bytes(b"HOST-SECRET-" + os.urandom(8).hex().encode())
    before = secret.read_bytes()
    src = tmp_path / "a.tar"
    src.write_bytes(tar_bytes([member("x", b"1")]))
    if kind == "url":
        evil = "../../../host/secret"  # from cache/downloads/sha256/
        layer = Layer(id="archives/evil", kind="archives", inputs=[Input.model_construct(  # past the model's checks
            kind="url", name="a.tar", version="1", url=src.as_uri(), sha256=evil, size=len(before), filename="a.tar",
            dest="/opt/x", unpack=False)])
    else:
        evil = "../../../host/secret".ljust(64, "/")  # 64 characters, from store/blobs/sha256/
        layer = Layer(id="base/evil", kind="base", inputs=[Input.model_construct(  # past the model's checks
            kind="oci", name="b", version="1", url="r/x@sha256:" + "0" * 64, sha256=evil, size=len(before),
            media_type=LAYER_TAR, diff_id="sha256:" + "0" * 64)])
    defn = demo_definition().model_copy(update={"layers": [layer]})
    path = tmp_path / "d.json"
    path.write_bytes(defn.to_json())
    p = cli("build", str(path), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"),
                  env={"ENGINEFAB_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "sha256" in p.stderr and ("not a sha256" in p.stderr or "64" in p.stderr), p.stderr
    assert secret.read_bytes() == before  # neither deleted nor changed
    for f in (tmp_path / "store").rglob("*"):
        assert not f.is_file() or before not in f.read_bytes(), f


def _unpack_in_child(store_root: str, built: Built, start, results) -> None:
    start.wait()
    try:
        root = rootfs.unpacked(Store(Path(store_root)), built)
        results.put(("ok", len(list((root / "opt" / "many").iterdir()))))
    except BaseException as e:  # noqa: BLE001 - the parent reports what each child met
        results.put(("error", f"{type(e).__name__}: {e}"))


@pytest.mark.integration  # four processes unpacking 3000 files: not the inner loop's
def test_concurrent_checks_of_one_image_unpack_it_once_and_all_see_it_whole(tmp_path, monkeypatch):
    """Two `check`s of one image at the same time (two CI jobs, a user and a hook): before, the
    second removed the first's half-unpacked tree as 'interrupted'."""
    monkeypatch.setenv("ENGINEFAB_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    n = 3000
    (src / "many.tar").write_bytes(tar_bytes([member(f"many/f{i}", os.urandom(64)) for i in range(n)]))
    defn = demo_definition().model_copy(update={"layers": [
        Layer(id="archives/many", kind="archives", inputs=[_input(src / "many.tar", "/opt", True)])]})
    store = Store(tmp_path / "store")
    built, _ = build(store, defn, tmp_path / "out")
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_unpack_in_child, args=(str(store.root), built, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert got == [("ok", n)] * 4


def test_a_staging_directory_removed_mid_build_is_a_build_error_naming_it(tmp_path, inputs):
    """A tmp cleaner (or a user's rm) deletes the layer's staging directory while the builder
    fetches the layer's second input: an error naming the directory and the fix, not a traceback."""
    store = Store(tmp_path / "store")
    layer = Layer(id="archives/both", kind="archives", inputs=[_input(inputs / "tool.sh", "/usr/local/bin/tool", False),
                                                              _input(inputs / "data.tar", "/opt", True)])
    defn = demo_definition().model_copy(update={"layers": [layer]})
    fetched = []

    def fetcher(inp, image):
        fetched.append(inp.name)
        if len(fetched) == 2:
            for d in (store.root / "tmp").glob("stage-*"):
                shutil.rmtree(d)
        return inputs / inp.name

    with pytest.raises(BuildError) as ei:
        Builder(store, fetcher).pack_layer(defn, layer, "k-both", [])
    assert "staging directory" in ei.value.message and "was removed" in ei.value.message
    assert ei.value.image == defn.image.alias and "tmp cleaner" in (ei.value.fix or "")
