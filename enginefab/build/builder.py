"""Build images from pinned definitions into the store, layer by layer, through the action cache.

A layer's *key* is the sha256 of everything that determines its bytes: the builder version,
the layer object from the lock (its inputs with their sha256), the compression contract and
SOURCE_DATE_EPOCH. A key found in the action cache whose blob is still in the store costs one
stat; otherwise the layer is staged, packed, written to the store, then recorded. A no-op
rebuild of the whole matrix therefore reads no layer bytes.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from enginefab import __version__, canonical, ui
from enginefab.build import compress
from enginefab.build.archives import stage_archive
from enginefab.build.debs import stage_deb
from enginefab.build.image import Built, LayerDesc, config_json, manifest_json
from enginefab.build.staging import Staging
from enginefab.build.store import Store
from enginefab.build.tarball import pack
from enginefab.build.wheels import stage_wheel
from enginefab.errors import BuildError, EnginefabError
from enginefab.lock import fetch
from enginefab.lock.definition import Definition, Input, Layer

#: bump when the bytes a layer builder writes for the same inputs change
BUILDER_VERSION = "enginefab-layers/1"


@dataclass
class Stats:
    layers_built: int = 0
    layers_cached: int = 0
    bytes_packed: int = 0
    seconds_packing: float = 0.0
    notes: list[str] = field(default_factory=list)


def layer_key(defn: Definition, layer: Layer) -> str:
    return canonical.key_of(
        {
            "builder": BUILDER_VERSION,
            "layer": layer.model_dump(mode="json", exclude_none=True),
            "compression": defn.compression.model_dump(mode="json"),
            "source_date_epoch": defn.source_date_epoch,
        }
    )


def is_layer_media(mt: str | None) -> bool:
    return bool(mt) and (".layer." in mt or ".rootfs.diff." in mt)  # type: ignore[operator]


def is_config_media(mt: str | None) -> bool:
    return mt in ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


Fetcher = Callable[[Input, str], Path]


def default_fetcher(inp: Input, image: str) -> Path:
    """The verified local file of an input (download cache, user-added manual files)."""
    if inp.kind == "manual":
        p = fetch.cached(inp.sha256)
        if p is None:
            raise BuildError(
                f"{inp.name} ({inp.version}) must be downloaded by hand: {inp.where or 'see its vendor'}",
                image=image,
                input=inp.ref,
                fix=f"download it, then run `enginefab lock --add-file PATH` (expects sha256 {inp.sha256})",
            )
        return p
    if inp.kind == "oci":
        from enginefab.registry.blobs import fetch_base_blob

        return fetch_base_blob(inp, image=image)
    if not inp.url:
        raise BuildError(f"{inp.ref} has no URL", image=image, input=inp.ref)
    return fetch.fetch(fetch.Want(url=inp.url, sha256=inp.sha256, size=inp.size or None, label=inp.ref, image=image))


class Builder:
    def __init__(self, store: Store, fetcher: Fetcher = default_fetcher) -> None:
        self.store = store
        self.fetch = fetcher
        self.stats = Stats()

    # -- layers ---------------------------------------------------------------------------
    def layer(self, defn: Definition, layer: Layer) -> list[LayerDesc]:
        if layer.kind == "base":
            return self._base(defn, layer)
        key = layer_key(defn, layer)
        created_by = f"enginefab {__version__}: {layer.kind} {layer.id}"
        hit = self.store.action_get(key)
        if hit is None:
            with self.store.lock(key):
                hit = self.store.action_get(key)  # another build may have made it meanwhile
                if hit is None:
                    hit = self._make(defn, layer, key)
                    self.stats.layers_built += 1
                else:
                    self.stats.layers_cached += 1
        else:
            self.stats.layers_cached += 1
        return [LayerDesc(hit["media_type"], hit["digest"], hit["size"], hit["diff_id"], created_by, layer.comment)]

    def _make(self, defn: Definition, layer: Layer, key: str) -> dict:
        image = defn.image.alias
        stage_root = self.store.root / "tmp" / f"stage-{key[:16]}-{time.monotonic_ns()}"
        stage_root.mkdir(parents=True)
        staging = Staging(stage_root)
        t0 = time.monotonic()
        try:
            self._stage(defn, layer, staging)
            with self.store.writer() as (out, commit):
                packed = pack(staging, defn.compression, defn.source_date_epoch, out)
                commit(packed.digest)
        except EnginefabError as e:
            if not e.image:
                e.image = image
            raise
        finally:
            shutil.rmtree(stage_root, ignore_errors=True)
        self.stats.seconds_packing += time.monotonic() - t0
        self.stats.bytes_packed += packed.tar_size
        self.stats.notes.extend(staging.notes)
        entry = {
            "media_type": compress.MEDIA_TYPES[defn.compression.algorithm],
            "digest": packed.digest,
            "diff_id": packed.diff_id,
            "size": packed.size,
            "tar_size": packed.tar_size,
            "layer": layer.id,
        }
        self.store.action_put(key, entry)
        return entry

    def _stage(self, defn: Definition, layer: Layer, staging: Staging) -> None:
        image = defn.image.alias
        if layer.kind == "debs":
            for inp in sorted(layer.inputs, key=lambda i: i.name):
                stage_deb(staging, self.fetch(inp, image), inp)
        elif layer.kind == "wheels":
            if not layer.scheme or not layer.interpreter:
                raise BuildError(f"wheel layer {layer.id} has no scheme", image=image)
            for inp in sorted(layer.inputs, key=lambda i: i.name):
                stage_wheel(staging, self.fetch(inp, image), inp, layer.scheme, layer.interpreter)
        elif layer.kind == "archives":
            for inp in layer.inputs:
                stage_archive(staging, self.fetch(inp, image), input=inp.ref, dest=inp.dest or "/",
                              filename=inp.filename or inp.name, unpack=inp.unpack, strip=inp.strip_components)
        elif layer.kind == "files":
            for fe in sorted(layer.files, key=lambda f: f.path):
                rel = staging.clean(fe.path.lstrip("/"), input=f"files:{layer.id}")
                if fe.type == "dir":
                    staging.mkdir(rel, fe.mode, fe.uid, fe.gid, input=layer.id)
                elif fe.type == "symlink":
                    staging.symlink(rel, fe.target or "", fe.uid, fe.gid, input=layer.id)
                else:
                    staging.write_file(rel, (fe.content or "").encode(), fe.mode, fe.uid, fe.gid, input=layer.id)
        elif layer.kind == "run":
            from enginefab.build.sandbox import run_layer

            run_layer(self, defn, layer, staging)
        else:  # pragma: no cover - the model forbids other kinds
            raise BuildError(f"unknown layer kind {layer.kind}", image=image)

    def _base(self, defn: Definition, layer: Layer) -> list[LayerDesc]:
        """Base image layers: the registry's blobs, byte for byte (verified, never recompressed)."""
        out = []
        for inp in layer.inputs:
            if not is_layer_media(inp.media_type):  # the base's index, manifest or config
                continue
            digest = "sha256:" + inp.sha256
            if not self.store.has(digest):
                self.store.put_file(self.fetch(inp, defn.image.alias))
            out.append(LayerDesc(inp.media_type, digest, inp.size, inp.diff_id or "", f"base: {inp.name}"))
        if not out:
            raise BuildError(
                f"the base {defn.base.reference if defn.base else '?'} is pinned by digest but its layers "
                "were never resolved (its registry was unreachable when locking)",
                image=defn.image.alias,
                fix="run `enginefab lock` where the registry (or a mirror in registry/mirrors.toml) is reachable",
            )
        return out

    # -- images ---------------------------------------------------------------------------
    def image(self, defn: Definition) -> Built:
        compress.verify(defn.compression, image=defn.image.alias)
        layers: list[LayerDesc] = []
        for layer in defn.layers:
            layers.extend(self.layer(defn, layer))
        base_config = None
        if defn.base and defn.layers and defn.layers[0].kind == "base":
            base_config = self._base_config(defn)
        config = config_json(defn, layers, base_config)
        cfg = self.store.put_bytes(config)
        manifest = manifest_json(defn, config, layers)
        self.store.put_bytes(manifest)
        return Built(
            name=defn.image.name,
            alias=defn.image.alias,
            manifest=manifest,
            platform=dict(defn.image.platform),
            blobs=(cfg.digest, *[ld.digest for ld in layers]),
        )

    def _base_config(self, defn: Definition) -> dict | None:
        import json

        for inp in defn.layers[0].inputs:
            if is_config_media(inp.media_type):
                return json.loads(self.fetch(inp, defn.image.alias).read_bytes())
        return None


def report(stats: Stats) -> None:
    for n in stats.notes:
        ui.info(f"[dim]normalized: {n}[/]")
