"""The content-addressed store: blobs by sha256, an action cache, safe under kills and sharing.

Layout (default ~/.cache/enginefab/store, or $ENGINEFAB_STORE, or --store)::

    blobs/sha256/<hex>     layers, configs, manifests, indexes (read-only files)
    actions/<key>.json     action cache: layer key → {digest, diff_id, size, media_type}
    tmp/                   in-progress writes (removed by gc; never read)
    locks/<key>.lock       one builder per action at a time

Every write goes to tmp/ and is renamed into place only after its digest is known, so a build
killed at any moment leaves at worst a stray temporary file: never a blob whose name lies about
its bytes, never an action entry pointing at a missing blob (entries are written after blobs,
and a hit whose blob is gone is treated as a miss).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from filelock import FileLock

from enginefab import canonical
from enginefab.fsutil import CHUNK, write_atomic


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for d in ("blobs/sha256", "actions", "tmp", "locks"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # -- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64:
            raise ValueError(f"not a sha256 digest: {digest}")
        return self.root / "blobs" / "sha256" / hexd

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_bytes(self, data: bytes) -> Blob:
        d = canonical.digest(data)
        p = self.blob_path(d)
        if not p.is_file():
            write_atomic(p, data, mode=0o444)
        return Blob(d, len(data))

    @contextlib.contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, Callable[[str], Blob]]]:
        """A temporary file to stream into; call commit(digest) with the digest the caller computed."""
        tmp = self.root / "tmp" / f"{os.getpid()}-{time.monotonic_ns()}"
        f = open(tmp, "wb")
        committed: list[Blob] = []

        def commit(digest: str) -> Blob:
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
            f.close()
            dest = self.blob_path(digest)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            committed.append(Blob(digest, size))
            return committed[-1]

        try:
            yield f, commit
        finally:
            if not f.closed:
                f.close()
            if tmp.exists():
                tmp.unlink()

    def put_file(self, path: Path) -> Blob:
        """Copy a file into the store (hashing it on the way)."""
        h = hashlib.sha256()
        with self.writer() as (out, commit), open(path, "rb") as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            return commit("sha256:" + h.hexdigest())

    def read(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # -- action cache ---------------------------------------------------------------------
    def action_get(self, key: str) -> dict | None:
        p = self.root / "actions" / f"{key}.json"
        try:
            entry = json.loads(p.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        if not self.has(entry.get("digest", "sha256:" + "0" * 64)):
            return None
        return entry

    def action_put(self, key: str, entry: dict) -> None:
        write_atomic(self.root / "actions" / f"{key}.json", canonical.dumps(entry))

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{key}.lock"))

    # -- maintenance ----------------------------------------------------------------------
    def verify(self, *, deep: bool = True) -> list[str]:
        """Problems found: blobs whose bytes do not match their name, dangling action entries."""
        problems = []
        for p in sorted((self.root / "blobs" / "sha256").iterdir()):
            if p.name.startswith("."):
                problems.append(f"stray temporary blob {p.name}")
                continue
            if deep:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                if h.hexdigest() != p.name:
                    problems.append(f"blob {p.name} has sha256 {h.hexdigest()}")
        for p in sorted((self.root / "actions").glob("*.json")):
            try:
                entry = json.loads(p.read_bytes())
            except ValueError:
                problems.append(f"action {p.stem} is not valid JSON")
                continue
            d = entry.get("digest")
            if not d or not self.has(d):
                problems.append(f"action {p.stem} points at missing blob {entry.get('digest')}")
        return problems

    def gc(self, keep: set[str]) -> tuple[int, int]:
        """Remove blobs not in `keep` (digests), stale temporaries and their action entries."""
        removed = freed = 0
        for p in (self.root / "tmp").iterdir():
            freed += p.stat().st_size
            p.unlink()
        for p in (self.root / "blobs" / "sha256").iterdir():
            if f"sha256:{p.name}" not in keep:
                freed += p.stat().st_size
                p.unlink()
                removed += 1
        for p in (self.root / "actions").glob("*.json"):
            try:
                entry = json.loads(p.read_bytes())
            except ValueError:
                p.unlink()
                continue
            if not self.has(entry.get("digest", "sha256:" + "0" * 64)):
                p.unlink()
        return removed, freed
