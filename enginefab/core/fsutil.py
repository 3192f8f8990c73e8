"""Small filesystem helpers every stage shares: atomic writes, hashing files, scratch space."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that readers see the old bytes or the new bytes, never a mix or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p: str | Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file, streamed."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def stat_key(st: os.stat_result) -> str:
    """What a 'verified' marker remembers of a file: rewriting it (or restoring it from elsewhere)
    changes one of these, so a marker that still matches means the bytes hashed then are still there."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst (same filesystem), else copy; atomic either way."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    _unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def scratch_dir(need: int, fallback: Path) -> Path:
    """Where to stage `need` bytes: a RAM disk when one has room (unlinking gigabytes of freshly
    written files on a disk takes longer than writing them), else `fallback`."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > need + (1 << 30):
            return shm
    except OSError:
        pass
    return fallback
