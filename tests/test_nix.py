"""The flake: `nix build .#<alias>` over build/*.json, bit-identical to `enginefab build`.

Runs Debian's nix-bin (2.8) offline, as a user of this machine would have to: a private Nix
store, state and config in a temporary directory; nixpkgs replaced by the host-toolchain shim
(nix/host-toolchain: the host's Python runs enginefab) with `--override-input`; every fetch
served from a local file:// mirror of the real files through Nix's own `hashed-mirrors`
setting (the layout of enginefab's download cache, sha256/<hex>). The flake is a copy of the
checkout's files (tracked and untracked, not ignored), so the tests see the working tree as
the CLI does.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, enginefab, validate_oci

NIX = shutil.which("nix")
pytestmark = pytest.mark.skipif(NIX is None, reason="nix is not installed (./dev setup installs nix-bin)")

REF_NAME = "org.opencontainers.image.ref.name"


def _store_name(s: str) -> str:
    """nix/fetch.nix storeName: the name a fetch derivation gets for a file name."""
    clean = re.sub(r"[^A-Za-z0-9+._?=-]+", "_", s)
    return ("_" + clean if clean.startswith(".") else clean)[:180]


def _file_name(inp: dict) -> str:
    return inp.get("filename") or (inp["url"].rsplit("/", 1)[-1] if inp.get("url") else f"{inp['name']}-{inp['version']}")


def _needed(inp: dict) -> bool:
    """nix/fetch.nix `needed`: the inputs the builder reads."""
    if inp["kind"] == "run":
        return False
    if inp["kind"] == "oci":
        mt = inp.get("media_type") or ""
        return any(s in mt for s in (".layer.", ".rootfs.diff.", "image.config.", "container.image."))
    return True


def _rmtree(path: Path) -> None:
    """Remove a tree that holds a Nix store (its directories are read-only)."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), stat.S_IRWXU)
    shutil.rmtree(path)


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as a commit would hold them (tracked + untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        src = ROOT / os.fsdecode(rel)
        if src.is_file():
            (dest / os.fsdecode(rel)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(rel))
    return dest


@dataclass
class Nix:
    base: Path
    flake: Path  # a copy of the checkout
    mirror: Path  # hashed mirror: sha256/<hex> → the real files
    shim: Path
    env: dict = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.base / "store"

    def run(self, *args: str, flake: Path | None = None, check: bool = True, timeout: float = 900,
            override: bool = True) -> subprocess.CompletedProcess:
        """`nix ARGS` with `.#` meaning the flake copy; nixpkgs replaced by the shim."""
        target = f"path:{flake or self.flake}"
        argv = [NIX, *(a.replace(".#", f"{target}#", 1) if a.startswith(".#") else a for a in args)]
        if override:
            argv += ["--override-input", "nixpkgs", f"path:{self.shim}", "--no-write-lock-file"]
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-6000:]}")
        return p

    def json(self, *args: str, **kw):
        return json.loads(self.run(*args, "--json", **kw).stdout)

    def mirror_inputs(self, defn: dict) -> dict[str, dict]:
        """Put the real files of a definition's inputs into the mirror: links into the download
        cache (filled, verified against the lock, if a file is not there yet)."""
        from enginefab.transport import download

        wanted = {i["sha256"]: i for layer in defn["layers"] for i in layer["inputs"] if _needed(i)}
        for sha, inp in wanted.items():
            link = self.mirror / "sha256" / sha
            if not link.exists():
                path = download.fetch(download.Want(url=inp["url"], sha256=sha, size=inp["size"] or None, label=inp["name"]))
                link.symlink_to(path)
        return wanted

    def logs(self) -> dict[str, str]:
        """Build logs by derivation file name (Nix keeps one per derivation it built)."""
        out = {}
        for p in (self.base / "log" / "drvs").glob("*/*.bz2"):
            out[p.parent.name + p.name[: -len(".bz2")]] = bz2.decompress(p.read_bytes()).decode(errors="replace")
        return out


@pytest.fixture(scope="session")
def nix(tmp_path_factory):
    base = tmp_path_factory.mktemp("nix")
    flake = copy_checkout(base / "flake")
    shim = base / "shim"
    shim.mkdir()
    shutil.copy(ROOT / "nix" / "host-toolchain" / "flake.nix", shim / "flake.nix")
    (shim / "interpreter").write_text(sys.executable + "\n")  # .venv's Python: has enginefab's dependencies
    mirror = base / "mirror"
    (mirror / "sha256").mkdir(parents=True)
    (base / "etc").mkdir()
    config = "\n".join([
        "experimental-features = nix-command flakes",
        "build-users-group =",
        "substituters =",
        "sandbox = false",
        "warn-dirty = false",
        "max-jobs = 4",
        f"hashed-mirrors = file://{mirror}/",
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_")}
    env.update(NIX_STORE_DIR=str(base / "store"), NIX_STATE_DIR=str(base / "state"), NIX_LOG_DIR=str(base / "log"),
               NIX_CONF_DIR=str(base / "etc"), XDG_CACHE_HOME=str(base / "xdg"), NIX_CONFIG=config)
    yield Nix(base=base, flake=flake, mirror=mirror, shim=shim, env=env)
    _rmtree(base)  # the store holds ~2 GB after the demo builds


def _aliases() -> set[str]:
    return {r["alias"] for r in json.loads(enginefab("list", "--json", check=True).stdout)}


# -- evaluation -------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["x86_64-linux", "aarch64-linux"])
def test_flake_exposes_every_image_of_the_matrix(nix, system):
    names = set(nix.json("eval", f".#packages.{system}", "--apply", "builtins.attrNames"))
    aliases = _aliases()
    assert len(aliases) >= 10  # the eight presets and the two demos
    assert names - {"enginefab", "default"} == aliases, "build/*.json and `enginefab list` disagree"
    assert {"enginefab", "default"} <= names
    app = nix.json("eval", f".#apps.{system}.default")
    assert app["type"] == "app" and app["program"].endswith("/bin/enginefab")


def test_evaluating_every_image_is_fast(nix):
    """Instantiating all images (every fetch derivation of every definition) takes seconds."""
    t0 = time.monotonic()
    drvs = nix.json("eval", ".#packages.x86_64-linux", "--apply", "ps: builtins.mapAttrs (n: p: p.drvPath) ps")
    seconds = time.monotonic() - t0
    print(f"instantiated {len(drvs)} packages in {seconds:.2f} s")
    assert set(drvs) - {"enginefab", "default"} == _aliases()
    assert seconds < 30, "evaluation must stay cheap (no import-from-derivation, no fetching)"


def test_dry_run_lists_the_pinned_fixed_output_fetches(nix):
    """`nix build .#pytorch-cuda10.2 --dry-run` (the dotted alias as users type it) lists one
    fixed-output fetch per input the builder reads, each with the lock's sha256."""
    alias = "pytorch-cuda10.2"
    defn = json.loads((nix.flake / "build" / f"{alias}.json").read_bytes())
    p = nix.run("build", f".#{alias}", "--dry-run")
    listed = {Path(line.strip()).name for line in p.stderr.splitlines() if line.strip().endswith(".drv")}
    graph = json.loads(nix.run("show-derivation", "-r", f".#{alias}").stdout)  # JSON already
    by_name = {Path(drv).name: d for drv, d in graph.items()}
    wanted = [i for layer in defn["layers"] for i in layer["inputs"] if _needed(i)]
    assert wanted, "the definition has inputs to fetch"
    matched = set()
    for inp in wanted:
        if inp["kind"] == "oci":
            stem = _store_name(f"blob-{inp['sha256'][:16]}-{inp['name']}")
        elif inp["kind"] == "manual" and inp["sha256"] is None:
            stem = _store_name(f"awaiting-{_file_name(inp)}")
        else:
            stem = _store_name(_file_name(inp))
        hits = [n for n in listed if n.endswith(f"-{stem}.drv")]
        assert hits, f"{inp['kind']} {inp['name']} is not among the derivations --dry-run lists"
        matched.update(hits)
        out = by_name[hits[0]]["outputs"]["out"]
        if inp["sha256"] is not None:
            assert (out.get("hashAlgo"), out.get("hash")) == ("sha256", inp["sha256"]), inp["name"]
        else:
            assert "hash" not in out  # awaiting a file: nothing to pin yet
    unresolved = {n for n in listed if "-unresolved-base-" in n}
    if defn.get("base") and not any(_needed(i) for i in defn["layers"][0]["inputs"]):
        # the CUDA base could not be resolved where it was locked: its derivation fails first
        assert unresolved
    # nothing else: the fetches, the builder (the enginefab CLI), the tools run steps use and
    # the image itself
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tools = (f"-enginefab-{version}-host-python.drv", "-enginefab-run-tools-host.drv")
    rest = listed - matched - unresolved
    assert any(n.endswith(f"-{alias}.drv") for n in rest)
    assert {n for n in rest if not n.endswith((f"-{alias}.drv", *tools))} == set()
    has_run = any(layer["kind"] == "run" for layer in defn["layers"])
    assert any(n.endswith(tools[1]) for n in rest) == has_run


# -- building ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_nix_build_is_bit_identical_to_the_cli(nix, demo_build):
    """Both demos through `nix build`: the same manifest digest as `enginefab build`, inputs
    fetched from the local mirror only, and $out a plain OCI layout of that one image."""
    demos = sorted(demo_build["digests"])
    assert any("x86_64" in a for a in demos) and any("aarch64" in a for a in demos)
    defns = {a: json.loads((nix.flake / "build" / f"{a}.json").read_bytes()) for a in demos}
    wanted = {}
    for d in defns.values():  # the demo build fetched every input into the download cache
        wanted.update(nix.mirror_inputs(d))

    t0 = time.monotonic()
    built = nix.json("build", *(f".#{a}" for a in demos), "--no-link")
    print(f"nix build of {len(demos)} demo images: {time.monotonic() - t0:.1f} s")
    outs = {Path(b["drvPath"]).name.split("-", 1)[1][: -len(".drv")]: Path(b["outputs"]["out"]) for b in built}

    for alias in demos:
        out = outs[alias]
        assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]
        validate_oci(json.loads((out / "oci-layout").read_bytes()), "image-layout-schema.json")
        index = json.loads((out / "index.json").read_bytes())
        validate_oci(index, "image-index-schema.json")
        refs = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}
        assert refs == {alias: demo_build["digests"][alias], defns[alias]["image"]["name"]: demo_build["digests"][alias]}
        # every blob is what its name says, and there is nothing else
        manifest = json.loads((out / "blobs" / "sha256" / refs[alias].split(":")[1]).read_bytes())
        validate_oci(manifest, "image-manifest-schema.json")
        expect = {refs[alias], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
        blobs = {f"sha256:{p.name}" for p in (out / "blobs" / "sha256").iterdir()}
        assert blobs == expect
        for d in blobs:
            h = hashlib.sha256()
            with open(out / "blobs" / "sha256" / d.split(":")[1], "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            assert f"sha256:{h.hexdigest()}" == d

    # each input came from the mirror (Nix logs every download of a fixed-output fetch)
    logs = nix.logs()
    for sha, inp in wanted.items():
        log = next((t for n, t in logs.items() if n.endswith(f"-{_store_name(_file_name(inp))}.drv")), None)
        assert log is not None, f"no fetch of {inp['name']} was built"
        assert f"file://{nix.mirror}/sha256/{sha}" in log
        assert "http://" not in log and "https://" not in log, f"{inp['name']} was downloaded from upstream"


def _small_definition(alias: str, layers: list, base=None, demo: str = "demo-pytorch-aarch64"):
    """A small definition for the flows the demos lack: a demo's identity and config, the given
    layers, then the demo's small `files` layer."""
    from enginefab.core.definition import load_definition

    d = load_definition(ROOT / "build" / f"{demo}.json")
    files = [layer for layer in d.layers if layer.kind == "files"]
    image = d.image.model_copy(update={"alias": alias})
    return d.model_copy(update={"image": image, "layers": layers + files, "base": base})


def _with_definition(nix: Nix, tmp_path: Path, defn) -> Path:
    """A flake copy holding one more definition."""
    flake = tmp_path / "flake"
    shutil.copytree(nix.flake, flake)
    (flake / "build" / f"{defn.image.alias}.json").write_bytes(defn.to_json())
    return flake


def test_manual_input_is_a_required_file(nix, tmp_path):
    """A manual input fails with where to get it and the `nix-store --add-fixed` line; once the
    user adds the file, the image builds with it."""
    from enginefab.core.definition import Input, Layer

    payload = tmp_path / "vendor-toolkit_1.0_linux.run"
    payload.write_bytes(b"#!/bin/sh\necho a vendor installer behind a login\n")
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    manual = Input(kind="manual", name=payload.name, version="1.0", url=None, sha256=sha, size=payload.stat().st_size,
                   filename=payload.name, dest=f"/opt/vendor/{payload.name}",
                   where="https://vendor.example/downloads (login)")
    defn = _small_definition("nixtest-manual", [Layer(id="vendor/toolkit", kind="archives", inputs=[manual])])
    flake = _with_definition(nix, tmp_path, defn)

    p = nix.run("build", ".#nixtest-manual", "--no-link", flake=flake, check=False)
    assert p.returncode != 0
    assert "https://vendor.example/downloads (login)" in p.stderr
    assert f"nix-store --add-fixed sha256 {payload.name}" in p.stderr
    assert sha in p.stderr

    subprocess.run(["nix-store", "--add-fixed", "sha256", str(payload)], env=nix.env, check=True, capture_output=True)
    built = nix.json("build", ".#nixtest-manual", "--no-link", flake=flake)
    out = Path(built[0]["outputs"]["out"])
    index = json.loads((out / "index.json").read_bytes())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = out / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer) as tf:
        member = tf.extractfile(f"opt/vendor/{payload.name}")
        assert member is not None and member.read() == payload.read_bytes()


def test_awaiting_manual_input_says_how_to_pin_it(nix, tmp_path):
    from enginefab.core.definition import Input, Layer

    awaiting = Input(kind="manual", name="EulerOS-test.tar.xz", version="2.8", url=None, sha256=None, size=0,
                     filename="EulerOS-test.tar.xz", where="an ISO you build yourself")
    defn = _small_definition("nixtest-awaiting", [Layer(id="os/euler", kind="archives", inputs=[awaiting])])
    flake = _with_definition(nix, tmp_path, defn)
    p = nix.run("build", ".#nixtest-awaiting", "--no-link", flake=flake, check=False)
    assert p.returncode != 0
    assert "has no pinned sha256 yet" in p.stderr
    assert "enginefab lock --add-file EulerOS-test.tar.xz" in p.stderr


def test_oci_base_blobs_come_from_the_registry(nix, tmp_path, registry, monkeypatch):
    """A base image by digest: its config and layer are fixed-output fetches from the registry
    (`enginefab nix fetch-blob`), and the image equals the one the CLI's builder makes."""
    import gzip
    import io

    from enginefab.core import canonical
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from enginefab.engines.model import OciRef
    from enginefab.lock import oci
    from enginefab.core.definition import Base, Layer
    from enginefab.transport.client import RegistryClient

    # a one-layer base image, pushed to a real docker-registry
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("etc/base-release")
        data = b"a tiny base\n"
        info.size, info.mtime = len(data), 1
        tf.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = canonical.dumps({"architecture": "arm64", "os": "linux", "variant": "v8", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [canonical.digest(raw.getvalue())]},
                              "history": [{"created": "1970-01-01T00:00:01Z", "created_by": "test base"}]})
    manifest = canonical.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                           "digest": canonical.digest(config), "size": len(config)},
                                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                            "digest": canonical.digest(layer), "size": len(layer)}]})
    client = RegistryClient(registry.host, plain_http=True)
    for blob in (layer, config):
        f = tmp_path / "blob"
        f.write_bytes(blob)
        client.upload_blob_file("test/base", canonical.digest(blob), len(blob), f)
    digest = client.put_manifest("test/base", "1", manifest, "application/vnd.oci.image.manifest.v1+json")

    ref = OciRef(reference=f"{registry.host}/test/base:1", digest=digest)
    inputs, _ = oci.resolve(ref, {"os": "linux", "architecture": "arm64", "variant": "v8"}, image="nixtest-oci")
    defn = _small_definition("nixtest-oci", [Layer(id="base/test", kind="base", inputs=inputs)],
                             base=Base(reference=ref.reference, digest=digest))
    flake = _with_definition(nix, tmp_path, defn)

    built = nix.json("build", ".#nixtest-oci", "--no-link", flake=flake)
    out = Path(built[0]["outputs"]["out"])
    index = json.loads((out / "index.json").read_bytes())
    nix_digest = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}["nixtest-oci"]

    monkeypatch.setenv("ENGINEFAB_CACHE", str(tmp_path / "cache"))  # the CLI fetches the blobs afresh
    cli = Builder(Store(tmp_path / "store")).image(defn)
    assert nix_digest == cli.digest
    got = json.loads((out / "blobs" / "sha256" / nix_digest.split(":")[1]).read_bytes())
    assert got["layers"][0]["digest"] == canonical.digest(layer)  # the base layer, byte for byte


# -- checks -----------------------------------------------------------------------------------


def test_flake_check_runs_the_rules_and_lock_check(nix, tmp_path):
    """`nix flake check`: definition rules and `lock --check` pass on the checkout and fail on a
    matrix edited without re-locking."""
    nix.run("flake", "check", f"path:{nix.flake}")
    reports = {p.name.split("-", 1)[1]: p for p in nix.store.iterdir()
               if p.name.endswith(("-enginefab-lock-check", "-enginefab-definition-rules"))}
    lock = json.loads(reports["enginefab-lock-check"].read_bytes())
    assert lock["ok"] is True and lock["problems"] == []
    rules = json.loads(reports["enginefab-definition-rules"].read_bytes())
    assert {r["image"] for r in rules} == _aliases() and all(r["ok"] for r in rules)

    stale = tmp_path / "flake"
    shutil.copytree(nix.flake, stale)
    toml = stale / "engines" / "pytorch.toml"
    text = toml.read_text()
    assert 'constraints = ["numpy>=1.17,<1.22"]' in text
    toml.write_text(text.replace('constraints = ["numpy>=1.17,<1.22"]', 'constraints = ["numpy>=1.17,<1.21"]'))
    p = nix.run("build", ".#checks.x86_64-linux.lock", "--no-link", flake=stale, check=False)
    assert p.returncode != 0
    report = json.loads(nix.run("log", ".#checks.x86_64-linux.lock", flake=stale).stdout)
    assert report["ok"] is False
    stale_images = {problem.split(":", 1)[0] for problem in report["problems"]}
    assert {"pytorch-cuda10.2", "demo-pytorch-x86_64", "demo-pytorch-aarch64"} <= stale_images


@pytest.mark.slow
def test_run_step_through_nix_equals_the_cli(nix, tmp_path):
    """A run step (the presets install Miniconda, CANN, compile Horovod this way) through
    `nix build`: bubblewrap from nix/run-tools.nix on PATH, nothing else from the host, and the
    same image as the CLI's builder makes."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from enginefab.engines.model import RunStep
    from enginefab.core.definition import Layer, load_definition
    from enginefab.lock.declared import run_input

    base = _small_definition("nixtest-run", [], demo="demo-pytorch-x86_64")
    # the OS layer only (base-files, bash, coreutils and their dependencies): a shell to run
    os_layer = next(layer for layer in load_definition(ROOT / "build" / "demo-pytorch-x86_64.json").layers
                    if layer.kind == "debs")
    step = run_input(RunStep(name="nixtest-step", script=(
        "set -e\nmkdir -p /opt/step\nenv | sort > /opt/step/env\nrm /etc/debian_version\n")))
    defn = base.model_copy(update={"layers": [os_layer, Layer(id="run/nixtest", kind="run", inputs=[step])]
                                   + base.layers})
    nix.mirror_inputs(json.loads(defn.to_json()))
    flake = _with_definition(nix, tmp_path, defn)

    built = nix.json("build", ".#nixtest-run", "--no-link", flake=flake)
    out = Path(built[0]["outputs"]["out"])
    index = json.loads((out / "index.json").read_bytes())
    nix_digest = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}["nixtest-run"]
    cli = Builder(Store(tmp_path / "store")).image(defn)
    assert nix_digest == cli.digest

    manifest = json.loads((out / "blobs" / "sha256" / nix_digest.split(":")[1]).read_bytes())
    run_layer = out / "blobs" / "sha256" / manifest["layers"][1]["digest"].split(":")[1]
    with tarfile.open(run_layer) as tf:
        names = tf.getnames()
        env = dict(line.split("=", 1) for line in tf.extractfile("opt/step/env").read().decode().splitlines())
    assert "etc/.wh.debian_version" in names  # the deletion, as an OCI whiteout
    # the same bytes from two very different parent environments: nothing leaks into the step
    assert not {"out", "NIX_BUILD_TOP", "inputsPath", "TMPDIR"} & set(env)
    assert env["SOURCE_DATE_EPOCH"] == str(defn.source_date_epoch)
