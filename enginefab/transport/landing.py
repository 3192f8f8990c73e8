"""Files that appear whole or not at all, and leave nothing behind when the process is killed.

``with landing(directory) as out:`` gives `out.file` to write; `out.commit(dest)` makes it
`dest` (an atomic rename in `directory`); leaving the block without a commit discards it. On
Linux the file has no name until the commit (`O_TMPFILE`): a download killed by SIGKILL leaves
no `.part` for anyone to find, let alone trust. Where the filesystem cannot do that, it is
`.<pid>-<n>.part` in `directory`, removed on error, and `sweep` removes those of processes that
no longer run. Nothing ever reads a `.part`.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator

_PROC_FD = Path("/proc/self/fd")
_serial = itertools.count()


class Landing:
    def __init__(self, directory: Path, mode: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.mode = directory, mode
        self._named: Path | None = None
        fd = -1
        if hasattr(os, "O_TMPFILE") and _PROC_FD.is_dir():
            try:
                fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
        if fd < 0:
            self._named = self._part_name()
            fd = os.open(self._named, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def _part_name(self) -> Path:
        return self.directory / f".{os.getpid()}-{next(_serial)}.part"

    def commit(self, dest: Path) -> Path:
        """Put the bytes written so far at `dest` (same directory tree: one rename)."""
        self.file.flush()
        os.fchmod(self.file.fileno(), self.mode)
        if self._named is None:
            self._named = self._part_name()
            # linkat(AT_SYMLINK_FOLLOW) on the /proc link names the unnamed file (os.link uses
            # plain link(2), which would link the symlink itself, unless a dir fd is given)
            dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(_PROC_FD / str(self.file.fileno()), self._named, src_dir_fd=dirfd, follow_symlinks=True)
            finally:
                os.close(dirfd)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._named, dest)
        self._named = None
        return dest

    def discard(self) -> None:
        self.file.close()
        if self._named is not None:
            self._named.unlink(missing_ok=True)
            self._named = None


@contextlib.contextmanager
def landing(directory: Path, *, mode: int = 0o644) -> Iterator[Landing]:
    out = Landing(directory, mode)
    try:
        yield out
    finally:
        out.discard()


def sweep(directory: Path) -> int:
    """Remove the `.part` files of processes that no longer run; how many went."""
    n = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for p in entries:
        if not (p.name.startswith(".") and p.name.endswith(".part")):
            continue
        stem = p.name[1:-5]  # ours: <pid>-<n>; older releases: <name>.<pid>
        pid = stem.split("-", 1)[0] if "-" in stem else stem.rsplit(".", 1)[-1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def scratch_dir(directory: Path, prefix: str) -> Iterator[Path]:
    """A private working directory `directory/.<prefix>-<pid>-<n>.tmp`, removed on leaving; the
    ones of processes that no longer run (killed mid-work) are swept first."""
    directory.mkdir(parents=True, exist_ok=True)
    sweep_dirs(directory, prefix)
    path = Path(tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-{next(_serial)}-", suffix=".tmp", dir=directory))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_dirs(directory: Path, prefix: str) -> int:
    """Remove the `scratch_dir`s (and the older `<prefix>-*` temporary directories) of processes
    that no longer run; how many went."""
    n = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for p in entries:
        name = p.name
        if name.startswith(f".{prefix}-") and name.endswith(".tmp"):
            pid = name[len(prefix) + 2:].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
        elif name.startswith(f"{prefix}-") and p.is_dir() and not p.is_symlink():
            # tempfile.TemporaryDirectory of releases before this one: no pid, so only when stale
            with contextlib.suppress(OSError):
                if _age(p) < 24 * 3600:
                    continue
        else:
            continue
        if p.is_symlink() or not p.is_dir():
            continue
        shutil.rmtree(p, ignore_errors=True)
        n += not p.exists()
    return n


def _age(p: Path) -> float:
    return time.time() - p.lstat().st_mtime
