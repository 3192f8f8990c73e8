"""One layer inside its own Nix derivation: `enginefab nix build-layer` (nix/layer.nix).

The derivation carries exactly what the action cache keys the layer by (`build.keys`): the layer
object from the lock, the compression contract, SOURCE_DATE_EPOCH, its fixed-output fetches and,
for a run step, the layers below (their derivations' outputs). Nothing names the image, so every
image of the matrix that has this layer has the same derivation, built once, stored once.

The CLI's `Builder` packs the layer into a scratch store inside $out, with a fetcher that reads
the fetches' store paths; the blob is then renamed to ``$out/blob`` next to ``$out/descriptor.json``
(the store's action-cache entry plus the key). Same code, same bytes as `enginefab build`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble import compress
from enginefab.assemble.builder import Builder, Fetcher
from enginefab.assemble.keys import layer_key
from enginefab.assemble.store import Store
from enginefab.core import canonical
from enginefab.core import tools
from enginefab.core.definition import Compression, Definition, ImageIdentity, Input, Layer
from enginefab.core.errors import BuildError
from enginefab.nix.parts import BLOB, DESCRIPTOR, Part

SCRATCH = ".enginefab-store"


@dataclass(frozen=True)
class LayerJob:
    """Everything one layer derivation builds from (its attributes, parsed)."""

    layer: Layer
    compression: Compression
    source_date_epoch: int
    inputs: dict[str, Path]  # sha256 → store path of each fetch this layer reads
    lower: tuple[Part, ...] = ()  # run steps: every blob below, in order
    arch: str = ""  # run steps: the image's architecture (qemu-user for another one)

    @property
    def label(self) -> str:
        """What errors name instead of an image: the layer is every image's that has it."""
        return f"layer {self.layer.id}"

    def key(self) -> str:
        return layer_key(self._definition(), self.layer, [p.key for p in self.lower])

    def _definition(self) -> Definition:
        """The part of a definition the layer builders read: compression, SOURCE_DATE_EPOCH, and
        for run steps the architecture. The rest (which image, its config) is deliberately absent,
        so nothing else can reach the layer's bytes."""
        image = ImageIdentity.model_construct(alias=self.label, name=self.label, arch=self.arch,
                                              platform={"architecture": self.arch})
        return Definition.model_construct(image=image, compression=self.compression,
                                          source_date_epoch=self.source_date_epoch, layers=[self.layer])


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


def link_parts(store: Store, parts: tuple[Part, ...] | list[Part]) -> None:
    """Make blobs Nix provides visible in a scratch store, by symlink (never a copy)."""
    for p in parts:
        dest = store.blob_path(p.digest)
        if not dest.exists():
            os.symlink(p.path, dest)


def build_layer(job: LayerJob, out: Path) -> dict:
    """Build the layer into `out` (new): ``blob`` and ``descriptor.json``; the descriptor."""
    if job.layer.kind == "base":
        raise BuildError(f"{job.layer.id} is a base layer: its blobs are fixed-output fetches, not built",
                         fix="build through the flake (nix/image.nix)")
    if job.layer.kind == "run" and tools.which("bwrap") is None:
        raise BuildError(f"the run step {job.layer.id} executes in bubblewrap, and there is no bwrap on PATH",
                         image=job.label, fix="build through the flake, whose run-step derivations put "
                         "nix/run-tools.nix on PATH")
    if out.exists():
        raise BuildError(f"{out} exists", image=job.label, fix="give a new directory")
    out.mkdir(parents=True)
    # the scratch store lives inside `out`, so the packed blob is renamed into place, not copied
    store = Store(out / SCRATCH)
    try:
        defn = job._definition()
        compress.verify(job.compression, image=job.label, store=store)
        link_parts(store, job.lower)
        key = job.key()
        entry = Builder(store, store_fetcher(job.inputs)).pack_layer(defn, job.layer, key, [p.desc() for p in job.lower])
        os.replace(store.blob_path(entry["digest"]), out / BLOB)
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    entry = {**entry, "key": key}
    (out / DESCRIPTOR).write_bytes(canonical.dumps_pretty(entry))
    return entry
