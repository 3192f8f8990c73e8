"""OCI image config, manifest and layout: pure functions from layers to canonical JSON bytes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from enginefab.core import canonical
from enginefab.core.definition import Definition
from enginefab.core.fsutil import link_or_copy, sha256_file, write_atomic

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class LayerDesc:
    media_type: str
    digest: str
    size: int
    diff_id: str
    created_by: str
    comment: str = ""

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_json(defn: Definition, layers: list[LayerDesc], base_config: dict | None = None) -> bytes:
    created = iso(defn.source_date_epoch)
    c = defn.config
    env = dict(c.env)
    cfg: dict = {
        "User": c.user,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "WorkingDir": c.workdir,
        "Labels": dict(sorted(c.labels.items())),
    }
    if c.entrypoint:
        cfg["Entrypoint"] = list(c.entrypoint)
    if c.cmd:
        cfg["Cmd"] = list(c.cmd)
    if c.exposed_ports:
        cfg["ExposedPorts"] = {p: {} for p in sorted(c.exposed_ports)}
    history = []
    if base_config:
        history.extend(base_config.get("history", []))
    for ld in layers:
        if ld.created_by.startswith("base:"):
            continue  # carried in the base's own history above
        h = {"created": created, "created_by": ld.created_by}
        if ld.comment:
            h["comment"] = ld.comment
        history.append(h)
    doc = {
        "architecture": defn.image.platform["architecture"],
        "os": defn.image.platform["os"],
        "created": created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [ld.diff_id for ld in layers]},
        "history": history,
    }
    if "variant" in defn.image.platform:
        doc["variant"] = defn.image.platform["variant"]
    return canonical.dumps(doc)


def manifest_json(defn: Definition, config: bytes, layers: list[LayerDesc]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": canonical.digest(config), "size": len(config)},
        "layers": [ld.descriptor() for ld in layers],
        "annotations": {
            "org.opencontainers.image.title": defn.image.name,
            "org.opencontainers.image.version": defn.image.engine_version,
            "org.opencontainers.image.created": iso(defn.source_date_epoch),
        },
    }
    return canonical.dumps(doc)


def index_json(manifests: list[dict]) -> bytes:
    return canonical.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})


@dataclass(frozen=True)
class Built:
    """A built image: its manifest and every blob it needs (digests)."""

    name: str
    alias: str
    manifest: bytes
    platform: dict[str, str]
    blobs: tuple[str, ...]  # config + layers (+ manifest itself is separate)

    @property
    def digest(self) -> str:
        return canonical.digest(self.manifest)

    def descriptor(self, ref: str | None = None) -> dict:
        d = {"mediaType": MANIFEST, "digest": self.digest, "size": len(self.manifest), "platform": self.platform}
        if ref:
            d["annotations"] = {REF_NAME: ref}
        return d


def write_layout(out: Path, images: list[Built], blob_path, place=link_or_copy) -> None:
    """Add images to the OCI layout at `out` (created if needed): blobs placed from the store
    (`blob_path(digest)`, which refuses a damaged blob; `place(src, dest)`: hard link, else copy;
    a copy already there that does not match is replaced), index.json entries for each image's canonical
    name and alias (replacing older ones)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "oci-layout", canonical.dumps({"imageLayoutVersion": "1.0.0"}))
    for img in images:
        for d in (*img.blobs, img.digest):
            dest = out / "blobs" / "sha256" / d.split(":", 1)[1]
            src = blob_path(d)
            if not _same_blob(src, dest, d):
                place(src, dest)
    with layout_index(out) as entries:
        for img in images:
            for ref in (img.name, img.alias):
                entries[ref] = img.descriptor(ref)


def _same_blob(src: Path, dest: Path, digest: str) -> bool:
    """The layout already holds the store's blob: the same file (a hard link), or a copy whose
    bytes match (a damaged copy is replaced)."""
    try:
        if os.path.samefile(src, dest):
            return True
    except FileNotFoundError:
        return False
    return "sha256:" + sha256_file(dest)[0] == digest


@contextlib.contextmanager
def layout_index(out: Path) -> Iterator[dict[str, dict]]:
    """The entries of the layout's index.json (by ref name, else digest), to change in place;
    written back sorted on exit. Read-modify-write under an exclusive flock of the layout
    directory itself (index.json is replaced, so its own inode cannot carry the lock): concurrent
    builds, pulls and index writers into one layout lose no entry."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        idx = out / "index.json"
        entries: dict[str, dict] = {}
        if idx.exists():
            for m in json.loads(idx.read_bytes()).get("manifests", []):
                entries[m.get("annotations", {}).get(REF_NAME) or m["digest"]] = m
        yield entries
        write_atomic(idx, index_json([entries[k] for k in sorted(entries)]))
    finally:
        os.close(fd)  # releases the lock
