"""`enginefab store gc`: what the store keeps, and the rest removed.

Roots, by default both kinds:

* ``definitions`` — every definition in build/: the blobs of its layers found in the action
  cache, its base image's blobs, and, when every layer is there, its config and manifest. A
  rebuild of the current matrix stays a no-op after gc.
* ``layouts`` — every OCI layout a build wrote (registered in ``roots/`` by `enginefab build
  --out DIR`; a layout deleted since is dropped) and any given with ``--layout``: every blob
  their index reaches. Images you built and kept stay pushable.

Everything else goes: blobs no root reaches, their action-cache entries, temporaries of killed
builds, and unpacked check roots. gc holds the store exclusively, so it waits for running builds
(or refuses at once with ``--no-wait``).
"""

from __future__ import annotations

import json
from pathlib import Path

from enginefab.assemble.builder import Builder
from enginefab.assemble.image import INDEX, MANIFEST
from enginefab.assemble.keys import chain_keys, is_layer_media
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition, Input, load_definition
from enginefab.core.errors import BuildError, EnginefabError
from enginefab.transport import download

KINDS = ("definitions", "layouts")


def cached_only(downloads: Path):
    """A fetcher that only reads the download cache `downloads` (gc never downloads)."""

    def fetch(inp: Input, image: str) -> Path:
        p = download.cached(inp.sha256, downloads) if inp.sha256 else None
        if p is None:
            raise BuildError(f"{inp.ref} is not in the download cache", image=image)
        return p

    return fetch


def definition_roots(store: Store, defns: list[Definition], downloads: Path) -> set[str]:
    keep: set[str] = set()
    builder = Builder(store, cached_only(downloads))
    for defn in defns:
        complete = True
        for layer, key in zip(defn.layers, chain_keys(defn)):
            if layer.kind == "base":
                for i in layer.inputs:
                    if is_layer_media(i.media_type):
                        keep.add("sha256:" + (i.sha256 or ""))
                        complete = complete and store.has("sha256:" + (i.sha256 or ""))
                continue
            hit = store.action_get(key)
            if hit is None:
                complete = False
                continue
            keep.add(hit["digest"])
        if complete:
            try:
                built = builder.image(defn)  # every layer is a hit: writes only config and manifest
            except EnginefabError:
                continue
            keep.update(built.blobs)
            keep.add(built.digest)
    return keep


def layout_roots(layouts: list[Path]) -> set[str]:
    keep: set[str] = set()

    def visit(layout: Path, desc: dict) -> None:
        d = desc["digest"]
        if d in keep:
            return
        keep.add(d)
        mt = desc.get("mediaType")
        if mt not in (MANIFEST, INDEX):
            return
        p = layout / "blobs" / "sha256" / d.split(":", 1)[1]
        if not p.is_file():
            return
        doc = json.loads(p.read_bytes())
        if mt == INDEX:
            for m in doc.get("manifests", []):
                visit(layout, m)
        else:
            visit(layout, doc["config"])
            for layer in doc.get("layers", []):
                visit(layout, layer)

    for layout in layouts:
        idx = layout / "index.json"
        if idx.is_file():
            for m in json.loads(idx.read_bytes()).get("manifests", []):
                visit(layout, m)
    return keep


def project_definitions(project: Path) -> list[Definition]:
    out = []
    for p in sorted((project / "build").glob("*.json")):
        try:
            out.append(load_definition(p))
        except EnginefabError:
            continue
    return out


def collect(store: Store, project: Path, downloads: Path, *, keep: tuple[str, ...] = KINDS,
            layouts: list[Path] | None = None, dry_run: bool = False, wait: bool = True) -> dict:
    """Drop what no root references; definitions count as roots through the download cache
    `downloads` (a base config is read from there)."""
    bad = [k for k in keep if k not in KINDS]
    if bad:
        raise BuildError(f"unknown gc root kind {bad[0]!r}", fix=f"use {' or '.join(KINDS)}")
    with store.using(exclusive=True, wait=wait):
        roots: set[str] = set()
        if "definitions" in keep:
            roots |= definition_roots(store, project_definitions(project), downloads)
        lays = list(layouts or [])
        if "layouts" in keep:
            lays += store.roots()
        roots |= layout_roots(lays)
        before = sum(1 for p in (store.root / "blobs" / "sha256").iterdir() if not p.name.startswith("."))
        removed, freed = store.gc(roots, dry_run=dry_run)
    return {"kept": before - removed, "removed": removed, "freed_bytes": freed, "roots": sorted(keep),
            "layouts": [str(p) for p in lays], "dry_run": dry_run}
