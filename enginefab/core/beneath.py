"""Open paths strictly beneath a directory: never through a symlink, never out of it.

`open_beneath(root_fd, rel)` is the kernel's ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
where the kernel has it (Linux 5.6), else a walk of the components with ``O_NOFOLLOW`` directory
file descriptors (each component is lstat'ed; a symlink or a non-directory on the way stops
it). Either way a symlink planted by an archive (``lnk -> /etc``) cannot make a later member
resolve on the host: the path either names something inside the root, reached through real
directories only, or the call raises `Blocked` naming the component that stopped it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup
SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (asm-generic)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_have_openat2: list[bool] = [True]  # cleared once the kernel says ENOSYS


class Blocked(Exception):
    """A component of the path is a symlink, not a directory, or missing."""

    def __init__(self, at: str, kind: str) -> None:
        self.at = at  # the relative path up to and including the component that stopped the walk
        self.kind = kind  # "symlink", "file" (not a directory) or "missing"
        super().__init__(f"{at} is a {kind}" if kind != "missing" else f"{at} does not exist")


def _openat2(root_fd: int, rel: str, flags: int,
             resolve: int = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) -> int:
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    fd = _libc.syscall(SYS_OPENAT2, root_fd, os.fsencode(rel), buf, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


def walk(root_fd: int, parts: list[str], *, create=None) -> int:
    """A directory fd for root/parts[0]/…, each component lstat'ed and opened O_NOFOLLOW.
    `create(rel, parent_fd, name)` is called for a missing component (it must make the
    directory); without it a missing component raises Blocked(…, "missing")."""
    fd = os.dup(root_fd)
    done: list[str] = []
    try:
        for part in parts:
            done.append(part)
            at = "/".join(done)
            try:
                st = os.lstat(part, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise Blocked(at, "missing") from None
                create(at, fd, part)
                st = os.lstat(part, dir_fd=fd)
            if stat.S_ISLNK(st.st_mode):
                raise Blocked(at, "symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise Blocked(at, "file")
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:  # swapped for a link or a file since the lstat
                raise Blocked(at, "symlink" if e.errno == errno.ELOOP else "file") from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_beneath(root_fd: int, rel: str, flags: int = DIR_FLAGS, *, use_openat2: bool = True) -> int:
    """An fd for `rel` (relative, '/'-separated, no '..') opened beneath root_fd through real
    directories only (the last component is not followed either). Raises Blocked."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Blocked(rel, "path with '..'")
    if not parts:
        return os.dup(root_fd)
    if use_openat2 and _have_openat2[0]:
        try:
            return _openat2(root_fd, "/".join(parts), flags | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                _have_openat2[0] = False
            elif e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EXDEV):
                raise
    # no openat2, or it refused: the walk finds (and names) the component that is in the way
    pfd = walk(root_fd, parts[:-1])
    try:
        st = _lstat_at(pfd, parts[-1])
        if st is None:
            raise Blocked(rel, "missing")
        if stat.S_ISLNK(st.st_mode):
            raise Blocked(rel, "symlink")
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
            raise Blocked(rel, "file")
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    finally:
        os.close(pfd)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def openat2_available() -> bool:
    """Whether this kernel has openat2 (tried once on a throwaway open of '.')."""
    if not _have_openat2[0]:
        return False
    fd = os.open(".", DIR_FLAGS)
    try:
        os.close(_openat2(fd, ".", DIR_FLAGS))
        return True
    except OSError as e:
        if e.errno == errno.ENOSYS:
            _have_openat2[0] = False
            return False
        raise
    finally:
        os.close(fd)


def resolve_in_root(root_fd: int, path: str) -> str:
    """`path` (a container path) resolved as the image itself would see it: symlinks are followed,
    but an absolute target starts again at the root and '..' stops at it, as under chroot — so
    an image's ``/lib -> usr/lib`` works and ``passwd -> /etc/passwd`` names the image's file,
    never the host's. Returns the resolved relative path ('' for the root itself); raises
    Blocked(…, "missing") for a dangling path, (…, "loop") past MAX_LINKS symlinks."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    todo.reverse()
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        rel = "/".join([*done, part])
        try:
            st = os.lstat(rel, dir_fd=root_fd) if _beneath_ok(root_fd, done) else None
        except FileNotFoundError:
            st = None
        if st is None:
            raise Blocked(rel, "missing")
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise Blocked(rel, "loop")
            target = os.readlink(rel, dir_fd=root_fd)
            if target.startswith("/"):
                done = []
            todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise Blocked(rel, "file")
        done.append(part)
    return "/".join(done)


def _beneath_ok(root_fd: int, done: list[str]) -> bool:
    """The components resolved so far are real directories beneath the root (checked again at
    each step, so a component swapped for a symlink meanwhile cannot lead out)."""
    if not done:
        return True
    try:
        os.close(walk(root_fd, done))
        return True
    except Blocked:
        return False


_BLOCKED = {errno.ENOENT: "missing", errno.ELOOP: "loop", errno.ENOTDIR: "file"}


def open_in_root(root_fd: int, path: str, flags: int = os.O_RDONLY) -> int:
    """An fd for the container path `path` of the tree at root_fd, its symlinks resolved inside
    the tree (`resolve_in_root`): openat2(RESOLVE_IN_ROOT) where the kernel has it, else the
    user-space resolution followed by `open_beneath` of the result (which refuses any symlink,
    so nothing swapped in between leads out). Raises Blocked or OSError."""
    rel = path.lstrip("/") or "."
    if _have_openat2[0]:
        try:
            return _openat2(root_fd, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                _have_openat2[0] = False
            elif e.errno in _BLOCKED:
                raise Blocked(rel, _BLOCKED[e.errno]) from None
            else:
                raise
    return open_beneath(root_fd, resolve_in_root(root_fd, path), flags, use_openat2=False)
