"""The flake against the CLI on the demo images, measured in the same run:

* a cold `nix build` of both demos (empty Nix store) against a cold `enginefab build --demo`
  (empty enginefab store); both read their inputs from the download cache (Nix through
  `hashed-mirrors`, copying each into its store as a fixed-output fetch);
* a one-pin rebuild (one demo's wheel re-pinned to another version the matrix pins elsewhere)
  through each: Nix builds that layer's derivation and the assembly, the CLI packs that layer;
* a no-op `nix build` (nothing to build; Nix's evaluation cache answers for an unchanged flake)
  against the CLI's no-op;
* the bytes Nix keeps for both demos (the images' closures: layer outputs and assemblies, each
  shared layer once) and its whole store (with the fetched inputs and the builder) against the
  sum of the two image sizes.

Nix runs as tests/test_nix.py runs it: Debian's nix-bin, a private store, the sandbox on, nixpkgs
replaced by the host-toolchain shim. Needs the demos' inputs in the download cache (any demo
build puts them there). Wall and CPU seconds are both reported: on a shared machine the CPU
seconds (the command and everything it waited for, Nix's builders included) are the steadier.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench._nixenv import ROOT, copy_checkout, environ, make_shim, repin, rmtree


@dataclass(frozen=True)
class Timed:
    seconds: float  # wall
    cpu: float  # CPU seconds of the command and everything it waited for (Nix's builders too)
    out: str


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(argv: list[str], **kw) -> Timed:
    t0, c0 = time.monotonic(), _cpu()
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}:\n{p.stderr[-4000:]}")
    return Timed(time.monotonic() - t0, _cpu() - c0, p.stdout)


def _versus(nix: Timed, cli: Timed) -> dict:
    """Wall and CPU seconds of both and their ratios (on a shared machine CPU is the steadier one)."""
    return {"nix_seconds": round(nix.seconds, 2), "cli_seconds": round(cli.seconds, 2),
            "nix_over_cli": round(nix.seconds / cli.seconds, 2), "nix_cpu_seconds": round(nix.cpu, 1),
            "cli_cpu_seconds": round(cli.cpu, 1), "cpu_nix_over_cli": round(nix.cpu / cli.cpu, 2)}


class PrivateNix:
    """Debian's nix with its own store, state and config under `base`, the sandbox on."""

    def __init__(self, base: Path, mirror: Path) -> None:
        self.base = base
        shim = make_shim(base / "shim")
        self.override = ["--override-input", "nixpkgs", f"path:{shim}", "--no-write-lock-file"]
        self.env = environ(base, mirror)
        self.outs: list[str] = []

    def build(self, flake: Path, attrs: list[str]) -> tuple[Timed, dict[str, str]]:
        """Build `attrs`: the timing and {alias: manifest digest}."""
        t = _timed(["nix", "build", *(f"path:{flake}#{a}" for a in attrs), "--no-link", "--json", *self.override],
                   env=self.env)
        self.outs = [b["outputs"]["out"] for b in json.loads(t.out)]
        return t, {a: d for out in self.outs for a, d in _refs(Path(out) / "index.json").items() if a in attrs}

    def closure_bytes(self) -> int:
        """Bytes of the union of the closures of the last build's outputs (each path once)."""
        t = _timed(["nix", "path-info", "-r", "--json", *self.outs], env=self.env)
        return sum(i["narSize"] for i in json.loads(t.out))

    def store_bytes(self) -> int:
        return sum(f.lstat().st_size for f in (self.base / "store").rglob("*") if f.is_file() and not f.is_symlink())

    def remove(self) -> None:
        rmtree(self.base)


def _refs(index: Path) -> dict[str, str]:
    """{ref name: manifest digest} of an OCI layout's index.json."""
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
            for m in json.loads(index.read_bytes())["manifests"]}


def run(work: Path) -> dict:
    from enginefab.core.definition import load_definition
    from enginefab.core.settings import Settings
    from enginefab.transport import download
    from enginefab.transport.session import Session

    defns = {p.stem: load_definition(p) for p in sorted((ROOT / "build").glob("*.json"))}
    demos = sorted(a for a in defns if a.startswith("demo-"))
    alias = next(a for a in demos if "x86_64" in a)
    repinned, pin = repin(defns, alias)
    session = Session.of(Settings.from_env(os.environ, root=ROOT))
    download.fetch(download.Want(url=pin.url or "", sha256=pin.sha256, size=pin.size or None, label=pin.ref), session)
    mirror = session.downloads
    for d in demos:  # the same warm page cache for both
        for i in defns[d].inputs():
            if i.sha256 and (mirror / "sha256" / i.sha256).exists():
                (mirror / "sha256" / i.sha256).read_bytes()

    store, env = work / "store", dict(os.environ, ENGINEFAB_QUIET="1")

    def cli(*args: str) -> Timed:
        return _timed([sys.executable, "-m", "enginefab", "build", *args, "--store", str(store), "--out",
                       str(work / "out"), "--json"], cwd=ROOT, env=env)

    cli_cold = cli(*demos)
    digests = {r["alias"]: r["digest"] for r in json.loads(cli_cold.out)}
    cli_noop = cli(*demos)
    (work / "repinned.json").write_bytes(repinned.to_json())
    cli_pin = cli(str(work / "repinned.json"))
    pin_digest = json.loads(cli_pin.out)[0]["digest"]

    nix = PrivateNix(work / "nix", mirror)
    flake = copy_checkout(work / "flake")
    try:
        nix_cold, nix_digests = nix.build(flake, demos)
        closure = nix.closure_bytes()
        whole = nix.store_bytes()
        nix_noop, _ = nix.build(flake, demos)
        flake_pin = work / "flake-pin"
        shutil.copytree(flake, flake_pin)
        (flake_pin / "build" / f"{alias}.json").write_bytes(repinned.to_json())
        nix_pin, nix_pin_digest = nix.build(flake_pin, [alias])
    finally:
        nix.remove()

    sizes = {}
    for a, d in digests.items():
        blob = store / "blobs" / "sha256" / d.split(":")[1]
        manifest = json.loads(blob.read_bytes())
        sizes[a] = sum(x["size"] for x in manifest["layers"]) + manifest["config"]["size"] + blob.stat().st_size
    total = sum(sizes.values())
    return {
        "same_digests": nix_digests == digests and nix_pin_digest == {alias: pin_digest},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cold": _versus(nix_cold, cli_cold),
        "one_pin_rebuild": {"pin": pin.ref, **_versus(nix_pin, cli_pin)},
        "noop": _versus(nix_noop, cli_noop),
        "bytes": {"sum_of_image_sizes": total, "nix_closures": closure, "nix_closures_over_sum": round(closure / total, 3),
                  "nix_store": whole, "nix_store_over_sum": round(whole / total, 3)},
    }
