"""The flake: one derivation per layer, images assembled from them, bit-identical to `enginefab build`.

Runs Debian's nix-bin (2.8) offline, as a user of this machine would have to: a private Nix
store, state and config in a temporary directory, **the sandbox on** (`sandbox = true`,
`sandbox-fallback = false`), nixpkgs replaced by the host-toolchain shim (nix/host-toolchain:
the host's Python runs enginefab; it and the host's bwrap/proot/qemu are bound into the sandbox
with `extra-sandbox-paths`) through `--override-input`; every fetch served from enginefab's
download cache through Nix's own `hashed-mirrors` setting (its layout is sha256/<hex>), bound
into the sandbox too. The flake is a copy of the checkout's files (tracked and untracked, not
ignored), so the tests see the working tree as the CLI does.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench._nixenv import copy_checkout, environ, make_shim, repin, rmtree
from tests.conftest import ROOT, enginefab, session_for, validate_oci

NIX = shutil.which("nix")
pytestmark = [pytest.mark.skipif(NIX is None, reason="nix is not installed (./dev setup installs nix-bin)"),
              pytest.mark.integration]  # runs the real nix

REF_NAME = "org.opencontainers.image.ref.name"
SYSTEM = "x86_64-linux"


def _store_name(s: str) -> str:
    """nix/fetch.nix storeName: the name a derivation gets for a file name or layer id."""
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


def _drv_name(drv: str) -> str:
    """/nix/store/<hash>-<name>.drv → name."""
    return Path(drv).name.split("-", 1)[1][: -len(".drv")]


def _dry_run(stderr: str) -> tuple[set[str], set[str]]:
    """(derivations `--dry-run` would build, store paths it would fetch from a substituter)."""
    built, fetched, section = set(), set(), None
    for line in stderr.splitlines():
        if "will be built" in line:
            section = built
        elif "will be fetched" in line:
            section = fetched
        elif line.startswith("  /") and section is not None:
            section.add(line.strip())
        else:
            section = None
    return built, fetched


@dataclass
class Nix:
    base: Path
    flake: Path  # a copy of the checkout
    mirror: Path  # hashed mirror: sha256/<hex> (enginefab's download cache)
    shim: Path
    sandbox: bool
    why_no_sandbox: str
    env: dict = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.base / "store"

    def run(self, *args: str, flake: Path | None = None, check: bool = True, timeout: float = 1800,
            override: bool = True, store: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """`nix ARGS` with `.#` meaning the flake copy; nixpkgs replaced by the shim."""
        target = f"path:{flake or self.flake}"
        argv = [NIX, *(a.replace(".#", f"{target}#", 1) if a.startswith(".#") else a for a in args)]
        if store:
            argv += ["--store", store]
        if override:
            argv += ["--override-input", "nixpkgs", f"path:{self.shim}", "--no-write-lock-file"]
        p = subprocess.run(argv, env=env or self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-6000:]}")
        return p

    def json(self, *args: str, **kw):
        return json.loads(self.run(*args, "--json", **kw).stdout)

    def mirror_inputs(self, defn: dict) -> dict[str, dict]:
        """Make sure the real files of a definition's inputs are in the mirror (the download
        cache: fetched and verified against the lock if a file is not there yet)."""
        from enginefab.transport import download

        wanted = {i["sha256"]: i for layer in defn["layers"] for i in layer["inputs"] if _needed(i)}
        for sha, inp in wanted.items():
            if not (self.mirror / "sha256" / sha).exists():
                download.fetch(download.Want(url=inp["url"], sha256=sha, size=inp["size"] or None, label=inp["name"]),
                               session_for(downloads=self.mirror))
        return wanted

    def logs(self, log_dir: Path | None = None) -> dict[str, str]:
        """Build logs by derivation file name (Nix keeps one per derivation it built)."""
        out = {}
        for p in ((log_dir or self.base / "log") / "drvs").glob("*/*.bz2"):
            out[p.parent.name + p.name[: -len(".bz2")]] = bz2.decompress(p.read_bytes()).decode(errors="replace")
        return out

    def eval_layers(self, flake: Path | None = None) -> dict[str, list[dict]]:
        """Every image's layers as the flake evaluates them: {alias: [{id, kind, drv}]}."""
        apply = ("ps: builtins.mapAttrs (n: p: map (l: { inherit (l) id kind; drv = if l.drv == null then null "
                 "else l.drv.drvPath; }) p.passthru.layers) (removeAttrs ps [\"enginefab\" \"default\"])")
        return self.json("eval", f".#packages.{SYSTEM}", "--apply", apply, flake=flake)


def _probe_sandbox(env: dict, base: Path) -> str:
    """'' when Nix builds with its sandbox on here, else why not (Nix's error)."""
    expr = (f'derivation {{ name = "enginefab-sandbox-probe"; system = "{SYSTEM}"; builder = "{sys.executable}"; '
            'args = [ "-c" "import os; open(os.environ[\\"out\\"], \\"w\\").write(\\"ok\\")" ]; }')
    p = subprocess.run([NIX, "build", "--impure", "--no-link", "--expr", expr], env=env, capture_output=True,
                       text=True, timeout=120)
    return "" if p.returncode == 0 else p.stderr.strip()[-2000:]


@pytest.fixture(scope="session")
def nix(tmp_path_factory):
    base = tmp_path_factory.mktemp("nix")
    flake = copy_checkout(base / "flake")
    shim = make_shim(base / "shim")
    mirror = session_for().downloads
    (mirror / "sha256").mkdir(parents=True, exist_ok=True)
    env = environ(base, mirror)
    why = _probe_sandbox(env, base)
    if why:  # Nix cannot sandbox here: run without it, and test_builds_are_sandboxed says why
        env = environ(base, mirror, sandbox=False)
    yield Nix(base=base, flake=flake, mirror=mirror, shim=shim, sandbox=not why, why_no_sandbox=why, env=env)
    rmtree(base)  # the store holds ~3 GB after the demo builds


def _aliases() -> set[str]:
    return {r["alias"] for r in json.loads(enginefab("list", "--json", check=True).stdout)}


def _definitions(flake: Path) -> dict:
    from enginefab.core.definition import load_definition

    return {p.stem: load_definition(p) for p in sorted((flake / "build").glob("*.json"))}


# -- the sandbox ------------------------------------------------------------------------------


def test_builds_are_sandboxed(nix):
    """Every build of these tests runs in Nix's sandbox: a builder sees its inputs and the
    paths bound for the shim, not the checkout it was evaluated from."""
    assert nix.sandbox, f"Nix cannot build with its sandbox on here:\n{nix.why_no_sandbox}"
    secret = nix.base / "outside.txt"
    secret.write_text("the host's files\n")
    code = (f"import os; p = {str(secret)!r}; "
            "open(os.environ['out'], 'w').write(open(p).read() if os.path.exists(p) else 'isolated')")
    expr = (f'derivation {{ name = "enginefab-isolation"; system = "{SYSTEM}"; builder = "{sys.executable}"; '
            f'args = [ "-c" {json.dumps(code)} ]; }}')
    out = nix.json("build", "--impure", "--no-link", "--expr", expr, override=False)[0]["outputs"]["out"]
    assert Path(out).read_text() == "isolated"


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
    """Instantiating all images (every layer and fetch derivation of every definition) takes seconds."""
    t0 = time.monotonic()
    drvs = nix.json("eval", f".#packages.{SYSTEM}", "--apply", "ps: builtins.mapAttrs (n: p: p.drvPath) ps")
    seconds = time.monotonic() - t0
    print(f"instantiated {len(drvs)} packages in {seconds:.2f} s")
    assert set(drvs) - {"enginefab", "default"} == _aliases()
    assert seconds < 30, "evaluation must stay cheap (no import-from-derivation, no fetching)"


def test_layer_derivations_are_keyed_like_the_action_cache(nix):
    """Across the whole matrix, two layers have the same derivation exactly when the action cache
    gives them the same key; each derivation is named after its layer id. So the layers the two
    preset PyTorch images share (and the two demos share) are one derivation, one store path."""
    from enginefab.assemble.keys import chain_keys

    defns = _definitions(nix.flake)
    layers = nix.eval_layers()
    assert set(layers) == set(defns)
    by_key: dict[str, set[str]] = {}
    by_drv: dict[str, set[str]] = {}
    for alias, defn in defns.items():
        assert [lay["id"] for lay in layers[alias]] == [layer.id for layer in defn.layers]
        for lay, layer, key in zip(layers[alias], defn.layers, chain_keys(defn)):
            if layer.kind == "base":
                assert lay["drv"] is None  # its blobs are fixed-output fetches
                continue
            assert _drv_name(lay["drv"]) == _store_name(f"layer-{layer.id}")
            by_key.setdefault(key, set()).add(lay["drv"])
            by_drv.setdefault(lay["drv"], set()).add(key)
    assert all(len(d) == 1 for d in by_key.values()), "one action key, several derivations"
    assert all(len(k) == 1 for k in by_drv.values()), "one derivation, several action keys"

    def shared(a: str, b: str) -> set[str]:
        drvs = {x: {lay["drv"] for lay in layers[x] if lay["drv"]} for x in (a, b)}
        return drvs[a] & drvs[b]

    keys = {a: set(chain_keys(defns[a])) for a in defns}
    torch = sorted(a for a, d in defns.items() if d.image.framework == "pytorch" and not a.startswith("demo-"))
    assert len(torch) == 2, torch
    expect = {k for k in keys[torch[0]] & keys[torch[1]] if by_key.get(k)}
    assert len(expect) >= 3, "the preset PyTorch images share their Python, NumPy and torch layers"
    assert shared(*torch) == {next(iter(by_key[k])) for k in expect}
    demos = sorted(DEMOS)  # the two engine demos, not the images derived from or built over them
    expect = {k for k in keys[demos[0]] & keys[demos[1]] if by_key.get(k)}
    assert expect, "the demos share their typing-extensions and users layers"
    assert shared(*demos) == {next(iter(by_key[k])) for k in expect}
    print(f"{len(by_drv)} layer derivations for {sum(len(v) for v in layers.values())} layers of {len(defns)} images")


DEMOS = ("demo-pytorch-x86_64", "demo-pytorch-aarch64")


def test_editing_the_readme_rebuilds_nothing(nix, tmp_path):
    """The package's source is pyproject.toml and enginefab/ only, so a README edit leaves every
    image, layer and check derivation as it was (a code edit changes them all: the builder)."""
    def drvs(flake: Path) -> dict:
        return nix.json("eval", f".#packages.{SYSTEM}", "--apply", "ps: builtins.mapAttrs (n: p: p.drvPath) ps",
                        flake=flake) | nix.json("eval", f".#checks.{SYSTEM}", "--apply",
                                                "cs: builtins.mapAttrs (n: c: c.drvPath) cs", flake=flake)

    edited = tmp_path / "flake"
    shutil.copytree(nix.flake, edited)
    (edited / "README.md").write_text((edited / "README.md").read_text() + "\nA line a reader added.\n")
    assert drvs(edited) == drvs(nix.flake)
    (edited / "enginefab" / "nix" / "layer.py").write_text((edited / "enginefab" / "nix" / "layer.py").read_text() + "\n")
    changed = drvs(edited)
    assert all(changed[a] != d for a, d in drvs(nix.flake).items())


def test_dry_run_lists_layers_and_the_pinned_fixed_output_fetches(nix):
    """`nix build .#pytorch-cuda10.2 --dry-run` (the dotted alias as users type it) lists one
    fixed-output fetch per input the builder reads, each with the lock's sha256, one derivation
    per layer that is built, and the image's assembly."""
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
        elif inp["kind"] == "deb" and inp["url"] is None:  # NVIDIA's packages, until a lock reaches them
            stem = _store_name(f"unpinned-deb-{inp['name']}")
        else:
            stem = _store_name(_file_name(inp))
        hits = [n for n in listed if n.endswith(f"-{stem}.drv")]
        assert hits, f"{inp['kind']} {inp['name']} is not among the derivations --dry-run lists"
        matched.update(hits)
        out = by_name[hits[0]]["outputs"]["out"]
        if inp["sha256"] is not None and inp.get("url", "") is not None:
            assert (out.get("hashAlgo"), out.get("hash")) == ("sha256", inp["sha256"]), inp["name"]
        else:
            assert "hash" not in out  # awaiting a file or a lock: nothing to fetch yet
    layers = {_store_name(f"layer-{layer['id']}") for layer in defn["layers"] if layer["kind"] != "base"}
    assert {_drv_name(n) for n in listed if "-layer-" in n} == layers
    unresolved = {n for n in listed if "-unresolved-base-" in n}
    if defn.get("base") and not any(_needed(i) for i in defn["layers"][0]["inputs"]):
        # the CUDA base could not be resolved where it was locked: its derivation fails first
        assert unresolved
    # nothing else: the builder (the enginefab CLI), the tools run steps use and the image itself
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tools = (f"-enginefab-{version}-host-python.drv", "-enginefab-run-tools-host.drv")
    rest = {n for n in listed - matched - unresolved if "-layer-" not in n}
    assert any(n.endswith(f"-{alias}.drv") for n in rest)
    assert {n for n in rest if not n.endswith((f"-{alias}.drv", *tools))} == set()
    has_run = any(layer["kind"] == "run" for layer in defn["layers"])
    assert any(n.endswith(tools[1]) for n in rest) == has_run
    # the run-step tools are on the PATH of run-step layers only
    for name, d in by_name.items():
        if "-layer-" in name:
            kind = next(layer["kind"] for layer in defn["layers"]
                        if name.endswith(f"-layer-{_store_name(layer['id'])}.drv"))
            assert ("PATH" in d["env"]) == (kind == "run"), name


def test_no_derivation_runs_a_shell(nix, tmp_path):
    """No builder is /bin/sh (the sandbox has none): every derivation of an image with run
    steps, of the flake checks and of manual and awaiting inputs is built by Nix's builtin
    fetcher or by a program in the store (enginefab), the shim's two stand-ins aside."""
    from enginefab.core.definition import Input, Layer

    manual = Input(kind="manual", name="vendor.run", version="1", url=None, sha256="0" * 64, size=1,
                   filename="vendor.run", where="a vendor")
    awaiting = Input(kind="manual", name="os.tar", version="1", url=None, sha256=None, size=0, filename="os.tar")
    defn = _small_definition("nixtest-noshell", [Layer(id="vendor/file", kind="archives", inputs=[manual, awaiting])])
    flake = _with_definition(nix, tmp_path, defn)
    graph = {}
    for target in (".#pytorch-cuda10.2", f".#checks.{SYSTEM}.lock", f".#checks.{SYSTEM}.definitions",
                   ".#nixtest-noshell"):
        graph.update(json.loads(nix.run("show-derivation", "-r", target, flake=flake).stdout))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shim = {"enginefab-run-tools-host", f"enginefab-{version}-host-python"}
    builders = {_drv_name(drv): d["builder"] for drv, d in graph.items() if _drv_name(drv) not in shim}
    assert len(builders) > 15
    assert {"vendor.run", "awaiting-os.tar", "enginefab-lock-check"} <= set(builders)
    assert any(n.startswith("unresolved-base-") for n in builders)
    bad = {n: b for n, b in builders.items() if not (b == "builtin:fetchurl" or b.startswith(str(nix.store) + "/"))}
    assert bad == {}


def test_package_dependencies_are_pyprojects(nix):
    """nix/package.nix builds the CLI against nixpkgs with exactly pyproject.toml's dependencies
    (nixpkgs' runtime-dependency check fails on a missing one) and its build backend. Evaluated by
    Nix with a python3Packages that has only pyproject's names: an extra one fails evaluation."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def attr(requirement: str) -> str:  # PEP 503 name, as nixpkgs names Python packages
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()

    deps = {attr(r) for r in project["project"]["dependencies"]}
    build = {attr(r) for r in project["build-system"]["requires"]}
    names = " ".join(f'"{n}"' for n in sorted(deps | build))
    expr = f"""
      let
        fake = name: {{ pname = name; overridePythonAttrs = _: fake name; }};
        ps = builtins.listToAttrs (map (n: {{ name = n; value = fake n; }}) [ {names} ]) // {{
          fetchPypi = args: args;
          buildPythonApplication = args: args;
        }};
        lib = {{ licenses.asl20 = "asl20"; platforms.linux = [ ]; }};
        app = import {ROOT / "nix" / "package.nix"} {{ inherit lib; python3Packages = ps; src = ./.; version = "0"; }};
      in {{ dependencies = map (p: p.pname) app.dependencies; build = map (p: p.pname) app.build-system;
            imports = app.pythonImportsCheck; }}
    """
    got = nix.json("eval", "--impure", "--expr", expr, override=False)
    assert sorted(got["dependencies"]) == sorted(deps)
    assert set(got["build"]) == build
    import importlib

    for module in got["imports"]:
        importlib.import_module(module)


@pytest.mark.parametrize("aarch64", [False, True])
def test_run_tools_avoid_the_static_qemu_on_aarch64(nix, aarch64):
    """nix/run-tools.nix (never evaluated against real nixpkgs here) links bwrap, proot and qemu
    under Debian's names: the static qemu-user, except on an aarch64 builder, where it segfaults
    (nixpkgs issue 366902) and the dynamic one serves proot."""
    expr = f"""
      import {ROOT / "nix" / "run-tools.nix"} {{
        stdenv.hostPlatform.isAarch64 = {'true' if aarch64 else 'false'};
        runCommand = name: env: script: {{ inherit name script; }};
        bubblewrap = "/bubblewrap"; proot = "/proot";
        qemu-user = "/qemu-dynamic"; pkgsStatic.qemu-user = "/qemu-static";
      }}
    """
    got = nix.json("eval", "--impure", "--expr", expr, override=False)
    assert "/bubblewrap/bin/bwrap" in got["script"] and "/proot/bin/proot" in got["script"]
    want, other = ("/qemu-dynamic", "/qemu-static") if aarch64 else ("/qemu-static", "/qemu-dynamic")
    assert f"ln -s {want}/bin/qemu-$arch $out/bin/qemu-$arch-static" in got["script"] and other not in got["script"]


# -- building ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nix_demos(nix, demo_build):
    """Both demos built by `nix build` into the session's store: {alias: $out}, and the seconds."""
    demos = sorted(demo_build["digests"])
    for a in demos:  # the demo build fetched every input into the download cache
        nix.mirror_inputs(json.loads((nix.flake / "build" / f"{a}.json").read_bytes()))
    t0 = time.monotonic()
    built = nix.json("build", *(f".#{a}" for a in demos), "--no-link")
    seconds = time.monotonic() - t0
    print(f"nix build of {len(demos)} demo images: {seconds:.1f} s")
    return {"outs": {_drv_name(b["drvPath"]): Path(b["outputs"]["out"]) for b in built}, "seconds": seconds}


def _layout_digest(out: Path, alias: str) -> str:
    index = json.loads((out / "index.json").read_bytes())
    return {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}[alias]


@pytest.mark.slow
def test_nix_build_is_bit_identical_to_the_cli(nix, demo_build, nix_demos):
    """Both demos through `nix build`: the same manifest digest as `enginefab build`, every layer
    built by its own derivation (keyed as the action cache keys it), inputs fetched from the
    mirror only, and $out a plain OCI layout of that one image whose layers are symlinks to the
    layer derivations' outputs (the demos' shared layers: the same store path)."""
    from enginefab.assemble.keys import chain_keys

    demos = sorted(demo_build["digests"])
    assert any("x86_64" in a for a in demos) and any("aarch64" in a for a in demos)
    defns = _definitions(nix.flake)
    targets: dict[str, dict[str, str]] = {}
    for alias in demos:
        out = nix_demos["outs"][alias]
        assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]
        validate_oci(json.loads((out / "oci-layout").read_bytes()), "image-layout-schema.json")
        index = json.loads((out / "index.json").read_bytes())
        validate_oci(index, "image-index-schema.json")
        refs = {m["annotations"][REF_NAME]: m["digest"] for m in index["manifests"]}
        digest = demo_build["digests"][alias]
        assert refs == {alias: digest, defns[alias].image.name: digest}
        blobs = out / "blobs" / "sha256"
        manifest = json.loads((blobs / digest.split(":")[1]).read_bytes())
        validate_oci(manifest, "image-manifest-schema.json")
        expect = {digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
        assert {f"sha256:{p.name}" for p in blobs.iterdir()} == expect
        for d in expect:  # every blob is what its name says
            h = hashlib.sha256()
            with open(blobs / d.split(":")[1], "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            assert f"sha256:{h.hexdigest()}" == d
        # config and manifest are the assembly's own files; each layer is its derivation's blob
        for d in (digest, manifest["config"]["digest"]):
            assert not (blobs / d.split(":")[1]).is_symlink()
        defn = defns[alias]
        for layer, key, desc in zip(defn.layers, chain_keys(defn), manifest["layers"]):
            link = blobs / desc["digest"].split(":")[1]
            assert link.is_symlink()
            target = Path(os.readlink(link))
            assert target.name == "blob" and target.parent.name.endswith(f"-layer-{_store_name(layer.id)}")
            descriptor = json.loads((target.parent / "descriptor.json").read_bytes())
            assert descriptor["key"] == key and descriptor["digest"] == desc["digest"]
            targets.setdefault(alias, {})[layer.id] = str(target)
    common = set(targets[demos[0]]) & set(targets[demos[1]])
    assert common, "the demos share layers"
    for lid in common:
        assert targets[demos[0]][lid] == targets[demos[1]][lid], f"{lid}: two store paths"

    # each input came from the mirror (Nix logs every download of a fixed-output fetch)
    logs = nix.logs()
    for alias in demos:
        for sha, inp in nix.mirror_inputs(json.loads((nix.flake / "build" / f"{alias}.json").read_bytes())).items():
            log = next((t for n, t in logs.items() if n.endswith(f"-{_store_name(_file_name(inp))}.drv")), None)
            assert log is not None, f"no fetch of {inp['name']} was built"
            assert f"file://{nix.mirror}/sha256/{sha}" in log
            assert "http://" not in log and "https://" not in log, f"{inp['name']} was downloaded from upstream"


def _one_pin_change(nix: Nix, tmp_path: Path, alias: str):
    """A copy of the flake where one wheel of `alias` is pinned to another version, taken from
    another image of the matrix (as a re-lock would): (flake, new definition, the layer changed)."""
    new, pin = repin(_definitions(nix.flake), alias)
    flake = tmp_path / "flake"
    shutil.copytree(nix.flake, flake)
    (flake / "build" / f"{alias}.json").write_bytes(new.to_json())
    nix.mirror_inputs(json.loads(new.to_json()))
    return flake, new, next(layer for layer in new.layers if pin in layer.inputs)


@pytest.mark.slow
def test_one_pin_change_builds_one_layer_and_the_assembly(nix, nix_demos, demo_build, tmp_path):
    """A demo with one wheel re-pinned: `nix build` fetches the new wheel and builds exactly two
    derivations, that layer's and the image's assembly (counted from --dry-run and from the
    build logs Nix keeps), and the image equals the one `enginefab build` makes of it."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store

    alias = next(a for a in sorted(demo_build["digests"]) if "x86_64" in a)
    flake, defn, layer = _one_pin_change(nix, tmp_path, alias)
    fetch = _store_name(_file_name(layer.inputs[0].model_dump()))
    p = nix.run("build", f".#{alias}", "--dry-run", flake=flake)
    planned = {_drv_name(d) for d in _dry_run(p.stderr)[0]}
    assert planned - {fetch} == {_store_name(f"layer-{layer.id}"), alias}

    before = set(nix.logs())
    t0 = time.monotonic()
    out = Path(nix.json("build", f".#{alias}", "--no-link", flake=flake)[0]["outputs"]["out"])
    print(f"one-pin rebuild through nix: {time.monotonic() - t0:.1f} s")
    built = {_drv_name("/x/" + n) for n in set(nix.logs()) - before}
    assert built == planned
    cli = Builder(Store(demo_build["store"]), session=session_for()).image(defn)  # the CLI's store has every other layer
    assert _layout_digest(out, alias) == cli.digest != demo_build["digests"][alias]


def _in_chroot(root: Path, path: str) -> Path:
    """Where a chroot store (`--store ROOT`) keeps a store path."""
    return next(p for p in (root / "nix" / "store" / Path(path).name, root / path.lstrip("/")) if p.exists())


@pytest.mark.slow
def test_binary_cache_serves_every_layer(nix, nix_demos, demo_build, tmp_path):
    """Store A (the session's) built both demos; `nix copy` sends them to a signed file://
    binary cache. An empty store B that trusts the cache would build a one-pin-changed demo by
    building that layer and the assembly and fetching every other layer; it builds both demos
    without building a single derivation, and gets the same digests."""
    demos = sorted(demo_build["digests"])
    cache, secret, public = tmp_path / "cache", tmp_path / "cache.sk", tmp_path / "cache.pk"
    subprocess.run(["nix-store", "--generate-binary-cache-key", "enginefab-test-1", secret, public],
                   env=nix.env, check=True, capture_output=True)
    outs = [str(nix_demos["outs"][a]) for a in demos]
    t0 = time.monotonic()
    nix.run("copy", "--to", f"file://{cache}?compression=none&secret-key={secret}", *outs, override=False)
    print(f"nix copy of both demos to a file:// cache: {time.monotonic() - t0:.1f} s")

    root_b = tmp_path / "store-b"  # a chroot store: the same store paths, its own files and database
    env = dict(nix.env, NIX_CONFIG=nix.env["NIX_CONFIG"].replace("substituters =", f"substituters = file://{cache}")
               + f"\ntrusted-public-keys = {public.read_text().strip()}\n")

    alias = next(a for a in demos if "x86_64" in a)
    flake, defn, layer = _one_pin_change(nix, tmp_path, alias)
    built, fetched = _dry_run(nix.run("build", f".#{alias}", "--dry-run", flake=flake, store=str(root_b),
                                      env=env).stderr)
    assert {n for n in map(_drv_name, built) if n.startswith("layer-")} == {_store_name(f"layer-{layer.id}")}
    assert alias in map(_drv_name, built)
    others = {_store_name(f"layer-{x.id}") for x in defn.layers if x.kind != "base" and x.id != layer.id}
    assert {Path(f).name.split("-", 1)[1] for f in fetched} >= others

    targets = [f".#{a}" for a in demos]
    built, fetched = _dry_run(nix.run("build", *targets, "--dry-run", store=str(root_b), env=env).stderr)
    assert built == set()
    assert {Path(o).name for o in outs} <= {Path(f).name for f in fetched}
    got = nix.json("build", *targets, "--no-link", store=str(root_b), env=env)
    assert not list((root_b / "nix" / "var" / "log").rglob("*.bz2")), "store B built something"
    for b in got:
        out = _in_chroot(root_b, b["outputs"]["out"])
        alias = _drv_name(b["drvPath"])
        assert _layout_digest(out, alias) == demo_build["digests"][alias]
    rmtree(root_b)


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
    """A manual input fails, in the sandbox, with where to get it and the `nix-store --add-fixed`
    line; once the user adds the file, the image builds with it."""
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
    manifest = json.loads((out / "blobs" / "sha256" / _layout_digest(out, "nixtest-manual").split(":")[1]).read_bytes())
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


def test_an_unpinned_package_says_where_to_lock_it(nix, tmp_path):
    """A package of an apt repository out of reach at lock time (NVIDIA's) fails, naming it and the lock to run."""
    from enginefab.core.definition import Input, Layer

    where = "apt nvidia-cuda-ubuntu1804 https://developer.download.nvidia.com/compute/cuda/repos/ubuntu1804/x86_64 /"
    pending = Input(kind="deb", name="cuda-cudart-10-2", version="10.2.89-1", url=None, sha256=None, size=0,
                    where=where)
    defn = _small_definition("nixtest-unpinned", [Layer(id="stack/cuda-10.2", kind="debs", inputs=[pending])])
    flake = _with_definition(nix, tmp_path, defn)
    p = nix.run("build", ".#nixtest-unpinned", "--no-link", flake=flake, check=False)
    assert p.returncode != 0
    assert "cuda-cudart-10-2 10.2.89-1 is not pinned yet" in p.stderr and where in p.stderr
    assert "run `enginefab lock IMAGE` on a machine that reaches the repository" in p.stderr


def test_unresolved_base_says_how_to_relock(nix):
    """A preset whose CUDA base was locked by digest only fails on the base, saying how to re-lock."""
    p = nix.run("build", ".#pytorch-cuda10.2", "--no-link", check=False)
    assert p.returncode != 0
    assert "pinned by digest only" in p.stderr and "enginefab lock IMAGE" in p.stderr


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
    client = RegistryClient(registry.host, plain_http=True, env=os.environ)
    for blob in (layer, config):
        f = tmp_path / "blob"
        f.write_bytes(blob)
        client.upload_blob_file("test/base", canonical.digest(blob), len(blob), f)
    digest = client.put_manifest("test/base", "1", manifest, "application/vnd.oci.image.manifest.v1+json")

    ref = OciRef(reference=f"{registry.host}/test/base:1", digest=digest, source="this test", trust="third-party")
    inputs, _ = oci.resolve(ref, {"os": "linux", "architecture": "arm64", "variant": "v8"}, image="nixtest-oci",
                            session=session_for())
    defn = _small_definition("nixtest-oci", [Layer(id="base/test", kind="base", inputs=inputs)],
                             base=Base(reference=ref.reference, digest=digest))
    flake = _with_definition(nix, tmp_path, defn)

    built = nix.json("build", ".#nixtest-oci", "--no-link", flake=flake)
    out = Path(built[0]["outputs"]["out"])
    nix_digest = _layout_digest(out, "nixtest-oci")

    # the CLI fetches the blobs afresh
    cli = Builder(Store(tmp_path / "store"), session=session_for(downloads=tmp_path / "cache" / "downloads")).image(defn)
    assert nix_digest == cli.digest
    got = json.loads((out / "blobs" / "sha256" / nix_digest.split(":")[1]).read_bytes())
    assert got["layers"][0]["digest"] == canonical.digest(layer)  # the base layer, byte for byte
    base_blob = out / "blobs" / "sha256" / canonical.digest(layer).split(":")[1]
    assert base_blob.is_symlink() and base_blob.read_bytes() == layer  # the fetch's store path, not a copy


# -- checks -----------------------------------------------------------------------------------


def test_flake_check_runs_the_rules_and_lock_check(nix, tmp_path):
    """`nix flake check` (in the sandbox): definition rules and `lock --check` pass on the
    checkout and fail on a matrix edited without re-locking, with the report in the build log."""
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
    p = nix.run("build", f".#checks.{SYSTEM}.lock", "--no-link", flake=stale, check=False)
    assert p.returncode != 0
    report = json.loads(nix.run("log", f".#checks.{SYSTEM}.lock", flake=stale).stdout)
    assert report["ok"] is False
    stale_images = {problem.split(":", 1)[0] for problem in report["problems"]}
    assert {"pytorch-cuda10.2", "demo-pytorch-x86_64", "demo-pytorch-aarch64"} <= stale_images


@pytest.mark.slow
def test_run_step_through_nix_equals_the_cli(nix, tmp_path):
    """A run step (the presets install Miniconda, CANN, compile Horovod this way) through
    `nix build`, in the Nix sandbox: bubblewrap from nix/run-tools.nix on PATH, nothing else from
    the host, the layers below as its derivation's inputs, and the same image as the CLI's
    builder makes."""
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

    layers = {lay["id"]: lay["drv"] for lay in nix.eval_layers(flake)["nixtest-run"]}
    run_drv = json.loads(nix.run("show-derivation", layers["run/nixtest"], override=False).stdout)[layers["run/nixtest"]]
    assert layers[os_layer.id] in run_drv["inputDrvs"]  # the layer below is an input of the step's derivation

    built = nix.json("build", ".#nixtest-run", "--no-link", flake=flake)
    out = Path(built[0]["outputs"]["out"])
    nix_digest = _layout_digest(out, "nixtest-run")
    cli = Builder(Store(tmp_path / "store"), session=session_for()).image(defn)
    assert nix_digest == cli.digest

    manifest = json.loads((out / "blobs" / "sha256" / nix_digest.split(":")[1]).read_bytes())
    run_layer = out / "blobs" / "sha256" / manifest["layers"][1]["digest"].split(":")[1]
    with tarfile.open(run_layer) as tf:
        names = tf.getnames()
        env = dict(line.split("=", 1) for line in tf.extractfile("opt/step/env").read().decode().splitlines())
    assert "etc/.wh.debian_version" in names  # the deletion, as an OCI whiteout
    # the same bytes from two very different parent environments: nothing leaks into the step
    assert not {"out", "NIX_BUILD_TOP", "inputsPath", "lowerPath", "TMPDIR"} & set(env)
    assert env["SOURCE_DATE_EPOCH"] == str(defn.source_date_epoch)
