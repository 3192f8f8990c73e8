"""Push built images from the store: graph order, blobs the registry has are skipped, blobs another
repository of the same registry has are mounted, uploads run in parallel and stream; manifests
are pushed by digest, tags last, and the registry is asked at the end whether it serves exactly
what we pushed. A push killed midway leaves no tag pointing at missing content.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from enginefab.assemble.image import MANIFEST
from enginefab.assemble.store import Store
from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.core.fsutil import write_atomic
from enginefab.transport.client import RegistryClient


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


class BlobHome:
    """Where in this registry a blob already is, so that a push into another repository mounts it
    instead of uploading it again (one upload per registry, not per repository).

    Known homes come from this push, from earlier pushes to the same registry (remembered in
    ``<cache>/blob-homes/<host>.json``, like skopeo's blob-info cache), and, on a fresh machine,
    from the registry's catalog (``/v2/_catalog``, where the registry allows it): at most
    CATALOG_PROBES other repositories are asked (HEAD) for a blob before it is uploaded. A
    remembered home is checked with HEAD before it is used.
    """

    CATALOG_PROBES = 16

    def __init__(self, cache_file: Path | None = None) -> None:
        self._where: dict[str, str] = {}
        self._lock = threading.Lock()
        self._catalog: list[str] | None = None
        self._file = cache_file
        if cache_file and cache_file.is_file():
            try:
                self._where.update(json.loads(cache_file.read_text()))
            except ValueError:
                pass  # a damaged cache is only a lost optimisation

    @classmethod
    def for_registry(cls, host: str, homes: Path | None) -> "BlobHome":
        """The blob homes of `host`, kept in the directory `homes` (the cache's blob-homes/; None: not kept)."""
        return cls(homes / (host.replace(":", "_").replace("/", "_") + ".json") if homes else None)

    def get(self, digest: str) -> str | None:
        with self._lock:
            return self._where.get(digest)

    def put(self, digest: str, repo: str) -> None:
        with self._lock:
            self._where[digest] = repo

    def find(self, client: RegistryClient, digest: str, repository: str) -> str | None:
        """Another repository of the registry that has `digest`, or None."""
        known = self.get(digest)
        if known and known != repository and client.has_blob(known, digest):
            return known
        with self._lock:
            if self._catalog is None:
                self._catalog = client.catalog()
            candidates = [r for r in self._catalog if r not in (repository, known)]
        prefix = repository.rsplit("/", 1)[0]
        candidates.sort(key=lambda r: (not r.startswith(prefix), r))
        for r in candidates[: self.CATALOG_PROBES]:
            if client.has_blob(r, digest):
                return r
        return None

    def save(self) -> None:
        if self._file is None:
            return

        with self._lock:
            items = list(self._where.items())[-20000:]
        try:
            write_atomic(self._file, json.dumps(dict(items), sort_keys=True).encode())
        except OSError:
            pass


def push_blobs(client: RegistryClient, repository: str, blobs: list[tuple[str, int, Path]], stats: PushStats,
               home: BlobHome, *, parallel: int = 4, progress: Callable[[int], None] | None = None) -> None:
    """Make every blob present in `repository`: skip, mount or upload (bounded parallelism).
    The first failure stops the rest: queued blobs are not started, uploads in flight end."""
    def one(item: tuple[str, int, Path]) -> None:
        digest, size, path = item
        if client.has_blob(repository, digest):
            stats.add(0, False, True)
            home.put(digest, repository)
            return
        src = home.find(client, digest, repository)
        n = client.upload_blob_file(repository, digest, size, path, mount_from=src, progress=progress, head=False)
        stats.add(n, n == 0, False)
        home.put(digest, repository)

    uniq = list({d: (d, s, p) for d, s, p in blobs}.values())
    first: BaseException | None = None
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for f in as_completed([pool.submit(one, b) for b in uniq]):
                first = f.exception()
                if first is not None:  # the cause; what it stops below is not reported
                    client.cancel.set()
                    pool.shutdown(wait=True, cancel_futures=True)
                    break
    finally:
        client.cancel.clear()
    if first is not None:
        raise first


def store_blobs(store: Store, descs: list[dict]) -> list[tuple[str, int, Path]]:
    """(digest, size, path) of each descriptor's blob in the store; a missing blob or one of
    another size is refused before anything is sent (a short file would leave the registry
    waiting for bytes that never come)."""
    out = []
    for d in descs:
        p = store.blob_path(d["digest"])
        try:
            have = p.stat().st_size
        except FileNotFoundError:
            raise RegistryError(f"blob {d['digest']} is not in the store", fix="run `enginefab build` first") from None
        if have != d["size"]:
            raise RegistryError(f"blob {d['digest']} is {have} bytes in the store ({p}), its descriptor says "
                                f"{d['size']}: the store is damaged, nothing was pushed",
                                fix="run `enginefab store verify`, then `enginefab build` to rebuild it")
        if not store.intact(d["digest"], d["size"]):
            raise RegistryError(f"blob {d['digest']} in the store ({p}) does not hash to its digest: the store is "
                                "damaged, nothing was pushed",
                                fix="run `enginefab build` of the image (it rebuilds the blob), then push again")
        out.append((d["digest"], d["size"], p))
    return out


def push_image_content(client: RegistryClient, store: Store, repository: str, manifest: bytes, stats: PushStats,
                       home: BlobHome, *, parallel: int = 4, progress: Callable[[int], None] | None = None,
                       media_type: str = MANIFEST) -> str:
    """Blobs (config and layers), then the manifest by digest: no tag yet. Returns the digest."""
    doc = json.loads(manifest)
    blobs = store_blobs(store, [doc["config"], *doc.get("layers", [])])
    client.prepare(repository, push=True)
    push_blobs(client, repository, blobs, stats, home, parallel=parallel, progress=progress)
    return client.put_manifest(repository, canonical.digest(manifest), manifest, media_type)


def push_tags(client: RegistryClient, repository: str, manifest: bytes, tags: list[str],
              media_type: str = MANIFEST) -> None:
    """Tags last: each points at a manifest whose content is all in the registry already."""
    for t in tags:
        client.put_manifest(repository, t, manifest, media_type)


def verify(client: RegistryClient, repository: str, digest: str, tags: list[str]) -> None:
    """Ask the registry whether the digest and every tag resolve to exactly `digest`."""
    for ref in [digest, *tags]:
        got = client.head_manifest(repository, ref)
        if got is None or (got[0] and got[0] != digest):
            raise RegistryError(f"after the push, {repository}:{ref} resolves to {got[0] if got else 'nothing'}, "
                                f"not {digest}", fix="another writer changed the tag; push again")
