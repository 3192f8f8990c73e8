"""The content-addressed store: blobs by sha256, an action cache, safe under kills and sharing.

Layout (default ~/.cache/enginefab/store, or $ENGINEFAB_STORE, or --store)::

    blobs/sha256/<hex>     layers, configs, manifests, indexes (read-only files)
    checked/<hex>          the blob was hashed when written (or since): its device, inode, size
                           and mtime then; a blob whose stat no longer matches is hashed again
                           before it is used
    actions/<key>.json     action cache: layer key → {digest, diff_id, size, media_type}
    tmp/                   in-progress writes and staging trees (removed by gc; never read)
    locks/<key>.lock       one builder per action at a time
    roots/<hash>           symlinks to the OCI layouts builds wrote (gc roots)
    verified/<key>         this machine's compressor passed the contract's probe (compress.verify)
    logs/                  output of failed run steps
    store.lock             builds hold it shared, gc exclusive

Every write goes to tmp/ and is renamed into place only after its digest is known, so a build
killed at any moment leaves at worst a stray temporary file: never a blob whose name lies about
its bytes, never an action entry pointing at a missing blob (entries are written after blobs,
and a hit whose blob is gone is treated as a miss). Two builds sharing a store take a lock per
action key, so each layer is packed once and the second build finds it in the cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from filelock import FileLock

from enginefab.core import canonical
from enginefab.core.errors import BuildError
from enginefab.core.fsutil import CHUNK, sha256_file, stat_key, write_atomic


_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class BadDigest(BuildError, ValueError):
    """A digest that is not `sha256:` and 64 lowercase hex digits."""


class CorruptBlob(BuildError):
    """A store blob whose bytes are not what its name says (or that is gone)."""


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for d in ("blobs/sha256", "actions", "tmp", "locks", "roots", "checked"):
            try:
                (self.root / d).mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a read-only store still serves reads (check, verify, push)
                if not (self.root / "blobs" / "sha256").is_dir() or e.errno not in READ_ONLY:
                    raise

    # -- sharing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def using(self, *, exclusive: bool = False, wait: bool = True) -> Iterator[None]:
        """Builds use the store shared; gc uses it alone (it deletes temporaries of running builds
        otherwise). The lock is the kernel's (flock): a killed process releases it."""
        fd = os.open(self.root / "store.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, op | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise BuildError(f"the store {self.root} is in use by a build",
                                 fix="run `enginefab store gc` when no build is running") from None
            yield
        finally:
            os.close(fd)

    def tmp_dir(self, prefix: str) -> Path:
        """A fresh private directory under tmp/ (same filesystem as the blobs: renames are cheap)."""
        d = self.root / "tmp" / f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
        d.mkdir(parents=True)
        return d

    # -- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; a digest that is not sha256 and 64 lowercase hex digits (a hostile
        definition's `../../etc/shadow`) is refused, so no path is ever made of it."""
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise BadDigest(f"not a sha256 digest: {str(digest)[:100]!r}",
                            fix="the definition or the store holds a malformed digest: re-lock the image "
                            "(`enginefab lock NAME`) or run `enginefab store verify`")
        return self.root / "blobs" / "sha256" / digest[7:]

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    # -- integrity --------------------------------------------------------------------------
    def _checked_marker(self, digest: str) -> Path:
        return self.root / "checked" / digest.partition(":")[2]

    def mark_checked(self, digest: str) -> None:
        """Record that the blob's bytes hash to its name, as of its current stat."""
        st = os.stat(self.blob_path(digest))
        write_atomic(self._checked_marker(digest), stat_key(st).encode())

    def intact(self, digest: str, size: int | None = None) -> bool:
        """The blob is present, `size` bytes long (when given), and hashes to its name: trusted
        without reading when its stat is the one recorded when it was last hashed, else hashed
        now (and recorded)."""
        p = self.blob_path(digest)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return False
        if size is not None and st.st_size != size:
            return False
        try:
            if self._checked_marker(digest).read_bytes().decode() == stat_key(st):
                return True
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        hexd, _ = sha256_file(p)
        if "sha256:" + hexd != digest:
            return False
        with contextlib.suppress(OSError):  # a read-only store still serves; it only re-hashes
            self.mark_checked(digest)
        return True

    def checked_path(self, digest: str, size: int | None = None, *, what: str = "blob") -> Path:
        """The path of an intact blob, or BuildError naming it (a corrupt one is never used)."""
        if not self.intact(digest, size):
            p = self.blob_path(digest)
            state = "missing" if not p.exists() else "corrupt (its bytes do not match its digest or size)"
            raise CorruptBlob(f"{what} {digest} in the store ({p}) is {state}",
                              fix="`enginefab build` of the image rebuilds (or refetches) it; "
                              "`enginefab store verify` lists every damaged blob")
        return self.blob_path(digest)

    def discard(self, digest: str) -> None:
        """Remove a damaged blob (and its marker), so the next use rebuilds or refetches it."""
        for p in (self.blob_path(digest), self._checked_marker(digest)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def put_bytes(self, data: bytes) -> Blob:
        d = canonical.digest(data)
        if not self.intact(d, len(data)):
            with self.writer() as (out, commit):
                out.write(data)
                commit(d)
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
            self.mark_checked(digest)  # the caller hashed these bytes on their way in
            committed.append(Blob(digest, size))
            return committed[-1]

        try:
            yield f, commit
        except OSError as e:
            if e.filename is None:  # a write into the file: say which (ENOSPC names no path)
                raise OSError(e.errno, e.strerror, str(tmp)) from e
            raise
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
        digest = entry.get("digest", "")
        if not self.has(digest if _DIGEST.match(str(digest)) else "sha256:" + "0" * 64):
            return None
        if not self.intact(digest, entry.get("size")):
            self.discard(digest)  # damaged: the layer is built again, never used
            return None
        return entry

    def action_put(self, key: str, entry: dict) -> None:
        write_atomic(self.root / "actions" / f"{key}.json", canonical.dumps(entry))

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{key}.lock"))

    # -- gc roots -------------------------------------------------------------------------
    def add_root(self, layout: Path) -> None:
        """Remember an OCI layout a build wrote: gc keeps every blob it references."""
        target = Path(layout).resolve()
        link = self.root / "roots" / canonical.sha256_hex(str(target).encode())[:32]
        if not link.is_symlink():
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, link)

    def roots(self) -> list[Path]:
        """The layouts registered by builds that still exist (dangling roots are dropped)."""
        out = []
        for link in sorted((self.root / "roots").iterdir()):
            target = Path(os.readlink(link)) if link.is_symlink() else None
            if target is not None and (target / "index.json").is_file():
                out.append(target)
        return out

    # -- maintenance ----------------------------------------------------------------------
    def stale(self) -> list[str]:
        """Temporaries left by killed builds (harmless: never read; removed by gc)."""
        out = [f"tmp/{p.name}" for p in sorted((self.root / "tmp").iterdir())]
        for d in ("blobs/sha256", "actions"):
            out += [f"{d}/{p.name}" for p in sorted((self.root / d).iterdir()) if p.name.startswith(".")]
        return out

    def verify(self, *, deep: bool = True) -> list[str]:
        """Problems found: blobs whose bytes do not match their name, dangling action entries.
        Temporaries of killed builds are not problems (see `stale`)."""
        problems = []
        for p in sorted((self.root / "blobs" / "sha256").iterdir()):
            if p.name.startswith("."):
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

    def gc(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        """Remove blobs not in `keep` (digests), temporaries, and action entries whose blob is
        gone. Call it while holding the store exclusively (`using(exclusive=True)`)."""
        removed = freed = 0

        def drop(p: Path) -> None:
            nonlocal freed
            if p.is_dir() and not p.is_symlink():
                freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
                if not dry_run:
                    shutil.rmtree(p, ignore_errors=True)
            else:
                freed += p.lstat().st_size
                if not dry_run:
                    p.unlink()

        for p in list((self.root / "tmp").iterdir()):
            drop(p)
        for d in ("blobs/sha256", "actions"):
            for p in list((self.root / d).iterdir()):
                if p.name.startswith("."):
                    drop(p)
        gone: set[str] = set()
        for p in list((self.root / "blobs" / "sha256").iterdir()):
            if not p.name.startswith(".") and f"sha256:{p.name}" not in keep:
                gone.add(f"sha256:{p.name}")
                drop(p)
                removed += 1
        for p in list((self.root / "checked").iterdir()) if (self.root / "checked").is_dir() else []:
            if not (self.root / "blobs" / "sha256" / p.name).exists() and not dry_run:
                p.unlink()
        for p in list((self.root / "actions").glob("*.json")):
            try:
                entry = json.loads(p.read_bytes())
            except ValueError:
                drop(p)
                continue
            d = entry.get("digest", "sha256:" + "0" * 64)
            if d in gone or not self.has(d):
                if not dry_run:
                    p.unlink()
        for link in list((self.root / "roots").iterdir()):
            if link.is_symlink() and not (Path(os.readlink(link)) / "index.json").is_file() and not dry_run:
                link.unlink()
        if not dry_run:
            shutil.rmtree(self.root / "rootfs", ignore_errors=True)  # unpacked images of `check`
        return removed, freed
