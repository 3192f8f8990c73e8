"""An image from its layers' derivations: `enginefab nix assemble` (nix/image.nix).

The image derivation packs nothing. It gets every part of the image (the layer derivations'
outputs, the base's fixed-output blob fetches) and the definition, and writes an OCI layout into
$out: ``oci-layout``, ``index.json`` (the image under its canonical name and alias), and
``blobs/sha256/``, where config and manifest are files and every layer is a symlink to the store
path Nix built or fetched it to. A layer shared by several images is one store path, and the
image's closure (what `nix copy` copies) holds it by reference.

The CLI's `Builder` does the assembling, over a scratch store whose action cache holds each layer
derivation's descriptor: it finds every layer cached, so config and manifest are `enginefab
build`'s bytes. A descriptor whose key is not the one the definition gives that layer (a layer
derivation built from other inputs) is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from enginefab.assemble.builder import Builder, Fetcher
from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.keys import chain_keys
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Input
from enginefab.core.errors import BuildError
from enginefab.nix.layer import link_parts, store_fetcher
from enginefab.nix.parts import Part

SCRATCH = ".enginefab-store"


def _check_parts(defn: Definition, parts: list[Part]) -> None:
    """Every built layer of `defn` has a part carrying its key, in order."""
    built = [p for p in parts if p.entry is not None]
    keys = [k for layer, k in zip(defn.layers, chain_keys(defn)) if layer.kind != "base"]
    ids = [layer.id for layer in defn.layers if layer.kind != "base"]
    if len(built) != len(keys):
        raise BuildError(f"the derivation gives {len(built)} built layers, the definition has {len(keys)}",
                         image=defn.image.alias, fix="build through the flake (nix/image.nix)")
    for lid, key, p in zip(ids, keys, built):
        if p.key != key:
            raise BuildError(f"layer {lid}: its derivation's output has key {p.key[:16]}…, the definition's is "
                             f"{key[:16]}…", image=defn.image.alias,
                             fix="the layer derivation must be keyed by the same inputs as the action cache "
                             "(nix/layer.nix)")


def _no_fetch(inputs: dict[str, Path]) -> Fetcher:
    """The assembly reads the base's config only; any other fetch means a layer was not provided."""
    fetch = store_fetcher(inputs)

    def only_provided(inp: Input, image: str) -> Path:
        if inp.sha256 not in inputs:
            raise BuildError(f"{inp.ref} was not built by a layer derivation", image=image, input=inp.ref,
                             fix="build through the flake (nix/image.nix)")
        return fetch(inp, image)

    return only_provided


def _place(src: Path, dest: Path) -> None:
    """A layer blob (a symlink in the scratch store) stays a symlink to its store path; config and
    manifest (files in the scratch store, inside $out) are hard-linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dest)
    else:
        os.link(src, dest)


def assemble(defn: Definition, parts: list[Part], inputs: dict[str, Path], out: Path) -> Built:
    """Write the OCI layout of `defn` from its parts into `out` (new)."""
    _check_parts(defn, parts)
    if out.exists():
        raise BuildError(f"{out} exists", image=defn.image.alias, fix="give a new directory")
    out.mkdir(parents=True)
    store = Store(out / SCRATCH)
    try:
        link_parts(store, parts)
        for p in parts:
            if p.entry is not None:
                store.action_put(p.key, {k: v for k, v in p.entry.items() if k != "key"})
        builder = Builder(store, _no_fetch(inputs))
        outcomes = builder.build_layers(defn)
        if builder.stats.layers_built:
            raise BuildError("the assembly would have packed a layer", image=defn.image.alias,
                             fix="build through the flake (nix/image.nix)")
        built = builder.assemble(defn, [d for o in outcomes for d in o.descs])
        write_layout(out, [built], store.blob_path, place=_place)
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    return built
