"""Push built images from the store: graph order, blobs the registry has are skipped, blobs another
repository of the same registry has are mounted, uploads run in parallel and stream; manifests
are pushed by digest, tags last, and the registry is asked at the end whether it serves exactly
what we pushed. A push killed midway leaves no tag pointing at missing content.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from enginefab import canonical
from enginefab.build.image import MANIFEST
from enginefab.build.store import Store
from enginefab.errors import RegistryError
from enginefab.registry.client import RegistryClient


@dataclass
class PushStats:
    blobs: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted: int = 0
    skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, uploaded: int, mounted: bool, skipped: bool) -> None:
        with self._lock:
            self.blobs += 1
            self.uploaded_bytes += uploaded
            self.uploaded_blobs += 1 if uploaded else 0
            self.mounted += 1 if mounted else 0
            self.skipped += 1 if skipped else 0


@dataclass(frozen=True)
class Pushed:
    repository: str
    digest: str
    tags: tuple[str, ...]
    reference: str


class BlobHome:
    """Which repository of this registry already holds a blob (for cross-repository mounts)."""

    def __init__(self) -> None:
        self._where: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        with self._lock:
            return self._where.get(digest)

    def put(self, digest: str, repo: str) -> None:
        with self._lock:
            self._where.setdefault(digest, repo)


def push_blobs(client: RegistryClient, repository: str, blobs: list[tuple[str, int, Path]], stats: PushStats,
               home: BlobHome, *, parallel: int = 4, progress: Callable[[int], None] | None = None) -> None:
    def one(item: tuple[str, int, Path]) -> None:
        digest, size, path = item
        if client.has_blob(repository, digest):
            stats.add(0, False, True)
            home.put(digest, repository)
            return
        src = home.get(digest)
        n = client.upload_blob_file(repository, digest, size, path, mount_from=src, progress=progress)
        stats.add(n, n == 0, False)
        home.put(digest, repository)

    uniq = list({d: (d, s, p) for d, s, p in blobs}.values())
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for f in [pool.submit(one, b) for b in uniq]:
            f.result()


def push_image_content(client: RegistryClient, store: Store, repository: str, manifest: bytes, stats: PushStats,
                       home: BlobHome, *, parallel: int = 4, progress: Callable[[int], None] | None = None,
                       media_type: str = MANIFEST) -> str:
    """Blobs (config and layers), then the manifest by digest: no tag yet. Returns the digest."""
    doc = json.loads(manifest)
    descs = [doc["config"], *doc.get("layers", [])]
    blobs = [(d["digest"], d["size"], store.blob_path(d["digest"])) for d in descs]
    for d, _, p in blobs:
        if not p.is_file():
            raise RegistryError(f"blob {d} is not in the store", fix="run `enginefab build` first")
    client.prepare(repository, push=True)
    push_blobs(client, repository, blobs, stats, home, parallel=parallel, progress=progress)
    return client.put_manifest(repository, canonical.digest(manifest), manifest, media_type)


def push_tags(client: RegistryClient, repository: str, manifest: bytes, tags: list[str],
              media_type: str = MANIFEST) -> None:
    """Tags last: each points at a manifest whose content is all in the registry already."""
    for t in tags:
        client.put_manifest(repository, t, manifest, media_type)


def push_image(client: RegistryClient, store: Store, repository: str, manifest: bytes, tags: list[str],
               stats: PushStats, home: BlobHome, *, parallel: int = 4,
               progress: Callable[[int], None] | None = None, media_type: str = MANIFEST) -> Pushed:
    """One image in graph order (blobs, manifest, tags), verified."""
    digest = push_image_content(client, store, repository, manifest, stats, home, parallel=parallel,
                                progress=progress, media_type=media_type)
    push_tags(client, repository, manifest, tags, media_type)
    verify(client, repository, digest, tags)
    return Pushed(repository, digest, tuple(tags), f"{client.host}/{repository}@{digest}")


def verify(client: RegistryClient, repository: str, digest: str, tags: list[str]) -> None:
    """Ask the registry whether the digest and every tag resolve to exactly `digest`."""
    for ref in [digest, *tags]:
        got = client.head_manifest(repository, ref)
        if got is None or (got[0] and got[0] != digest):
            raise RegistryError(f"after the push, {repository}:{ref} resolves to {got[0] if got else 'nothing'}, "
                                f"not {digest}", fix="another writer changed the tag; push again")
