"""Build one pinned definition inside a Nix derivation: inputs from store paths, no network.

The image derivation (nix/image.nix) passes a JSON map {sha256: store path} of the fixed-output
fetches it depends on. The same `Builder` that `enginefab build` uses runs with a fetcher that
looks inputs up in that map — so the layers, config and manifest are the CLI's bytes — over a
scratch store inside $out, which is then turned into a plain OCI image layout: ``oci-layout``,
``index.json`` (the image under its canonical name and alias) and ``blobs/sha256/…``, nothing
else and nothing that names the machine.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble.builder import Builder, Fetcher
from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Input
from enginefab.core.errors import BuildError

SCRATCH = ".enginefab-store"


def read_input_map(path: Path) -> dict[str, Path]:
    """The {sha256: store path} map the derivation passes (its `inputs` attribute)."""
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read the input map {path}: {e}", fix="build through the flake (nix/image.nix)") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise BuildError(f"{path} is not a JSON object of store paths", fix="build through the flake (nix/image.nix)")
    return {k: Path(v) for k, v in raw.items()}


def store_fetcher(paths: dict[str, Path]) -> Fetcher:
    """A Builder fetcher reading each input from the store path Nix fetched it to. Nix has already
    checked the sha256 (fixed-output derivation); the size is checked again, cheaply, to catch a
    map that points at the wrong path."""

    def fetch(inp: Input, image: str) -> Path:
        if inp.sha256 is None:
            raise BuildError(f"{inp.ref} has no pinned sha256 yet", image=image, input=inp.ref,
                             fix="run `enginefab lock --add-file FILE` and `enginefab lock`, then build again")
        p = paths.get(inp.sha256)
        if p is None:
            raise BuildError(f"the derivation provides no store path for {inp.ref} (sha256 {inp.sha256[:16]}…)",
                             image=image, input=inp.ref,
                             fix="nix/fetch.nix `needed` must list every input the builder reads")
        if inp.size and p.stat().st_size != inp.size:
            raise BuildError(f"{p} has {p.stat().st_size} bytes, the lock says {inp.size}", image=image, input=inp.ref)
        return p

    return fetch


@dataclass(frozen=True)
class NixBuild:
    built: Built
    layers_built: int
    seconds_packing: float


def build_layout(defn: Definition, inputs: dict[str, Path], out: Path) -> NixBuild:
    """Build `defn` into a fresh OCI layout at `out` (which must not exist or be empty)."""
    runs = [layer.id for layer in defn.layers if layer.kind == "run"]
    if runs and shutil.which("bwrap") is None:
        raise BuildError(
            f"its run steps ({', '.join(runs)}) execute in bubblewrap, and there is no bwrap on PATH",
            image=defn.image.alias,
            fix="build through the flake, whose image derivations put nix/run-tools.nix on PATH",
        )
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty", image=defn.image.alias, fix="give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    # the scratch store lives inside `out`, so its blobs become the layout's by hard link
    # whatever filesystem the build directory is on
    store = Store(out / SCRATCH)
    try:
        builder = Builder(store, store_fetcher(inputs))
        built = builder.image(defn)
        write_layout(out, [built], store.blob_path)
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    return NixBuild(built, builder.stats.layers_built, builder.stats.seconds_packing)
