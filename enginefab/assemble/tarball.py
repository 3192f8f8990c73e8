"""Pack a staging tree into a deterministic layer tar, compressed under the contract.

Entries are sorted by path (a parent sorts before its children), directories end with ``/``,
owners and modes come from the staging side table (root 0755/0644 by default), every mtime is
the lock's SOURCE_DATE_EPOCH, user and group names are empty, PAX headers appear only where
ustar cannot hold a field. Hard links are kept: the first path of a link group (in sorted
order) is the file, the others link to it. The archive ends with two zero blocks.

The packer streams: memory stays bounded by the compressor's in-flight blocks, whatever the
layer size. It returns the diff_id (sha256 of the tar) and the digest of the compressed blob.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from enginefab.assemble import compress
from enginefab.assemble.staging import Meta, Staging
from enginefab.core.definition import Compression

BLOCK = 512
READ = 1 << 20
PROGRESS_STEP = 64 << 20


@dataclass(frozen=True)
class Packed:
    digest: str  # sha256:… of the compressed blob
    diff_id: str  # sha256:… of the uncompressed tar
    size: int  # compressed bytes
    tar_size: int


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path below root (relative, '/'-separated) with its lstat, in sorted order."""
    stack = [""]
    out: list[tuple[str, os.stat_result]] = []
    while stack:
        rel = stack.pop()
        base = root / rel if rel else root
        with os.scandir(base) as it:
            for e in it:
                if e.name.endswith(".enginefab-new"):
                    continue
                r = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                out.append((r, st))
                if stat.S_ISDIR(st.st_mode):
                    stack.append(r)
    out.sort(key=lambda x: x[0].encode("utf-8", "surrogateescape"))
    yield from out


def default_meta(st: os.stat_result) -> Meta:
    if stat.S_ISDIR(st.st_mode):
        return Meta(0o755)
    if stat.S_ISLNK(st.st_mode):
        return Meta(0o777)
    return Meta(0o755 if st.st_mode & 0o111 else 0o644)


class _Tee:
    """Counts and hashes the compressed stream on its way to the file."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.n += len(data)
        self.out.write(data)
        return len(data)


@dataclass(frozen=True)
class FileData:
    """The contents of a regular file in the tar stream (read by the compressor itself)."""

    path: Path
    size: int


def tar_records(staging: Staging, mtime: int) -> Iterator[bytes | FileData]:
    """The tar stream of a staging tree: header and padding bytes, and FileData for contents."""
    first_of_inode: dict[tuple[int, int], str] = {}
    for rel, st in walk(staging.root):
        meta = staging.meta.get(rel) or default_meta(st)
        ti = tarfile.TarInfo(rel)
        ti.mtime = mtime
        ti.uid, ti.gid = meta.uid, meta.gid
        ti.uname = ti.gname = ""
        ti.mode = meta.mode
        host = staging.root / rel
        data_path = None
        if stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
            ti.name = rel + "/"
        elif stat.S_ISLNK(st.st_mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(host)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_of_inode:
                ti.type = tarfile.LNKTYPE
                ti.linkname = first_of_inode[key]
            else:
                if st.st_nlink > 1:
                    first_of_inode[key] = rel
                ti.type = tarfile.REGTYPE
                ti.size = st.st_size
                data_path = host
        else:  # staging never creates these; be explicit anyway
            continue
        yield ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if data_path is not None:
            yield FileData(data_path, ti.size)
            pad = (-ti.size) % BLOCK
            if pad:
                yield b"\0" * pad
    yield b"\0" * (2 * BLOCK)


def tar_entries(staging: Staging, mtime: int) -> Iterator[bytes]:
    """The tar stream of a staging tree as byte chunks."""
    for rec in tar_records(staging, mtime):
        if not isinstance(rec, FileData):
            yield rec
            continue
        left = rec.size
        with open(rec.path, "rb") as f:
            while left > 0:
                chunk = f.read(min(READ, left))
                if not chunk:
                    raise OSError(f"{rec.path} shrank while packing")
                left -= len(chunk)
                yield chunk


def pack(staging: Staging, contract: Compression, mtime: int, out: BinaryIO,
         on_bytes: Callable[[int], None] | None = None, threads: int | None = None) -> Packed:
    """Write the compressed layer to `out`; return its digests. `on_bytes(n)` reports progress
    in uncompressed tar bytes. File contents go from the page cache straight into the
    compressor's blocks; the tar's sha256 (diff_id) is taken by the compressor as it goes.
    `threads`: the compressor's (None: the CPUs this process may use)."""
    tee = _Tee(out)
    diff = hashlib.sha256()
    writer = compress.open_writer(contract, tee, threads=threads, raw=diff)  # type: ignore[arg-type]
    tar_size = 0
    buf = bytearray()
    report = on_bytes or (lambda n: None)
    for rec in tar_records(staging, mtime):
        if isinstance(rec, FileData):
            if buf:
                writer.write(buf)
                report(len(buf))
                buf.clear()
            with open(rec.path, "rb", buffering=0) as f:
                left = rec.size
                while left:
                    k = min(left, PROGRESS_STEP)
                    writer.write_from(f, k)
                    report(k)
                    left -= k
            tar_size += rec.size
            continue
        buf += rec
        tar_size += len(rec)
        if len(buf) >= READ:
            writer.write(buf)
            report(len(buf))
            buf.clear()
    if buf:
        writer.write(buf)
        report(len(buf))
    writer.close()
    return Packed(
        digest="sha256:" + tee.h.hexdigest(),
        diff_id="sha256:" + diff.hexdigest(),
        size=tee.n,
        tar_size=tar_size,
    )
