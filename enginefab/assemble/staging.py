"""A layer's tree before packing, and the rules every archive entry must pass to get in.

Layers are first materialized in a private directory (the *staging* tree), then packed by
`tarball.pack`. The host filesystem holds the bytes; ownership and modes come from a side table
(`meta`), so neither the builder's uid nor its umask reach the layer.

Archive safety rules (debs, wheels, URL archives, manual files) — each violation raises
UnsafeArchiveError naming the input and the path, or is normalized as stated:

  R1  an absolute member path (/etc/x) is refused; a leading ./ is dropped
  R2  a path with a .. component, a NUL byte, an empty name or invalid UTF-8 is refused
  R3  a member whose parent is a symlink (writing through a link) is refused
  R4  a relative symlink whose target climbs above the image root is refused; absolute symlink
      targets are kept (they resolve inside the container's root)
  R5  device nodes, FIFOs and sockets are refused
  R6  setuid, setgid bits are cleared (normalized); sticky is kept on directories only
  R7  the same path twice in one layer: identical type and bytes are merged; anything else is
      refused as a conflict
  R8  a hard link must point at a regular file earlier in the same archive, else refused
  R9  group- and world-write bits are cleared from files and directories (normalized), except
      sticky directories such as /tmp
  R10 a path longer than 4096 bytes or with a component over 255 bytes is refused
  R11 a directory declared by two inputs of one layer with different modes or owners gets the
      metadata of the input whose label sorts first (so the result never depends on the order
      inputs are processed in); declared beats implied (a parent created for a member)
  R12 a truncated or corrupt archive (tar, zip, ar, compressed stream) is refused
  R13 an input that expands past its limits (bytes, entries, bytes per archive byte; `limits`)
      is refused at the entry that crosses them, before its bytes are written
  R14 a name starting with .wh. (an OCI whiteout or opaque marker) is refused: only the builder
      writes whiteouts (a run step's deletions)
  R15 every path is resolved beneath the staging root through real directories only
      (`core.beneath`: openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, else an O_NOFOLLOW walk), so
      neither a write nor a hard link's target can pass through a symlink to the host

The order in which stagers create files never reaches the layer (the packer sorts); a builder
made with `creation_order=in_reverse` creates every stager's files in reverse order, which the
determinism tests use to prove it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, TypeVar

from enginefab.assemble.limits import DEFAULT as DEFAULT_LIMITS
from enginefab.assemble.limits import ArchiveLimits, Expansion
from enginefab.core import beneath
from enginefab.core.errors import UnsafeArchiveError

CHUNK = 1 << 20
WHITEOUT = ".wh."  # OCI whiteout prefix (and ".wh..wh..opq", the opaque marker)
T = TypeVar("T")


def as_given(items: Sequence[T]) -> list[T]:
    """The order stagers create their files in: as given."""
    return list(items)


def in_reverse(items: Sequence[T]) -> list[T]:
    """The other order (the determinism tests: creation order never reaches a layer)."""
    return list(reversed(items))


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int = 0
    gid: int = 0


@dataclass
class Staging:
    """A directory tree plus the metadata the layer will carry."""

    root: Path
    meta: dict[str, Meta] = field(default_factory=dict)
    #: which input declared a directory's metadata (R11)
    declared_by: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # normalizations applied, for the build log
    limits: ArchiveLimits = DEFAULT_LIMITS  # how far one input may expand (R13)

    def expansion(self, input: str, archive_size: int) -> Expansion:
        """A fresh count of one input's expansion under this tree's limits."""
        return Expansion(self.limits, input, archive_size)

    # -- path rules ---------------------------------------------------------------------
    def clean(self, name: str, *, input: str) -> str:
        """The normalized relative path of an archive member, or UnsafeArchiveError (R1, R2, R10)."""
        if not name or "\x00" in name:
            raise UnsafeArchiveError(f"member with an empty name or a NUL byte: {name!r}", input=input,
                                     fix="the archive is corrupt or hostile; do not use it")
        if name.startswith("/"):
            raise UnsafeArchiveError(f"member {name!r} has an absolute path", input=input,
                                     fix="archives must hold relative paths; repackage the input")
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise UnsafeArchiveError(f"member {name!r} climbs out of the root with '..'", input=input,
                                     fix="the archive is hostile or broken; do not use it")
        rel = "/".join(parts)
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafeArchiveError(f"member {name!r} is not valid UTF-8", input=input) from None
        if len(rel.encode()) > 4096 or any(len(p.encode()) > 255 for p in parts):
            raise UnsafeArchiveError(f"member path too long: {rel[:80]}…", input=input)
        if any(p.startswith(WHITEOUT) for p in parts):
            raise UnsafeArchiveError(
                f"member {rel!r} has an OCI whiteout name ({WHITEOUT}…): in a layer it would delete files of the "
                "layers below", input=input,
                fix="inputs may not carry names starting with .wh. (only the builder writes whiteouts); "
                "repackage the input without them")
        return rel

    def host(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    @contextlib.contextmanager
    def _parent(self, rel: str, *, input: str) -> Iterator[tuple[int, str]]:
        """(fd of rel's parent directory, rel's last component): every parent a real directory
        reached beneath the root (created root-owned 0755 when missing), never a symlink (R3)."""
        parent, _, name = rel.rpartition("/")
        root_fd = os.open(self.root, beneath.DIR_FLAGS)
        try:
            try:
                fd = beneath.open_beneath(root_fd, parent) if parent else os.dup(root_fd)
            except beneath.Blocked:
                fd = self._make_parents(root_fd, rel, parent, input=input)
        finally:
            os.close(root_fd)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _make_parents(self, root_fd: int, rel: str, parent: str, *, input: str) -> int:
        def create(at: str, dir_fd: int, part: str) -> None:
            os.mkdir(part, 0o755, dir_fd=dir_fd)
            _fchmod_dir(dir_fd, part, 0o755)
            self.meta.setdefault(at, Meta(0o755))

        try:
            return beneath.walk(root_fd, parent.split("/"), create=create)
        except beneath.Blocked as b:
            if b.kind == "symlink":
                raise UnsafeArchiveError(
                    f"member {rel!r} would be written through the symlink {b.at!r}", input=input,
                    fix="an archive may not write through its own symlinks",
                ) from None
            raise UnsafeArchiveError(f"member {rel!r} needs {b.at!r} to be a directory, but it is a file",
                                     input=input, fix="two inputs of this layer disagree about that path") from None

    @staticmethod
    def norm_mode(mode: int, is_dir: bool) -> int:
        """R6, R9: clear setuid/setgid; clear group/other write unless a sticky directory."""
        perm = stat.S_IMODE(mode)
        perm &= ~(stat.S_ISUID | stat.S_ISGID)
        if is_dir and perm & stat.S_ISVTX:
            return perm
        return perm & ~(stat.S_IWGRP | stat.S_IWOTH | stat.S_ISVTX)

    def _note_mode(self, rel: str, before: int, after: int, input: str) -> None:
        if stat.S_IMODE(before) != after and stat.S_IMODE(before) & (stat.S_ISUID | stat.S_ISGID):
            self.notes.append(f"{input}: cleared setuid/setgid on /{rel} ({oct(stat.S_IMODE(before))} → {oct(after)})")

    # -- adding entries -----------------------------------------------------------------
    def mkdir(self, rel: str, mode: int = 0o755, uid: int = 0, gid: int = 0, *, input: str) -> None:
        if not rel:
            return
        m = self.norm_mode(mode, True)
        self._note_mode(rel, mode, m, input)
        with self._parent(rel, input=input) as (pfd, name):
            st = _lstat_at(pfd, name)
            if st is None:
                os.mkdir(name, 0o755, dir_fd=pfd)
            elif not stat.S_ISDIR(st.st_mode):
                raise UnsafeArchiveError(f"/{rel} is a directory in {input} but not in an earlier input of this layer",
                                         input=input, fix="two inputs of this layer disagree about that path")
            _fchmod_dir(pfd, name, 0o755)
        new = Meta(m, uid, gid)
        prev = self.declared_by.get(rel)
        if prev is not None and prev != input and self.meta.get(rel) != new:
            keep = min(prev, input)
            self.notes.append(f"/{rel} is declared by {prev} and {input} with different modes or owners: "
                              f"{keep}'s wins (R11)")
            if keep == prev:
                return
        self.meta[rel] = new
        self.declared_by[rel] = input if prev is None else min(prev, input)

    def write_file(self, rel: str, src: BinaryIO | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
                   *, input: str) -> None:
        m = self.norm_mode(mode, False)
        self._note_mode(rel, mode, m, input)
        with self._parent(rel, input=input) as (pfd, name):
            existing = _lstat_at(pfd, name)
            tmp = f".{name}.enginefab-new" if existing else name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                with os.fdopen(fd, "wb") as out:
                    if isinstance(src, (bytes, bytearray)):
                        out.write(src)
                    else:
                        shutil.copyfileobj(src, out, CHUNK)
                    os.fchmod(out.fileno(), 0o755 if m & 0o111 else 0o644)
            except OSError as e:
                if e.filename is None:  # ENOSPC while writing names no path: this one
                    raise OSError(e.errno, e.strerror, str(self.host(rel))) from e
                raise
            if existing:
                same = (stat.S_ISREG(existing.st_mode) and _same_bytes_at(pfd, name, tmp)
                        and self.meta.get(rel) == Meta(m, uid, gid))
                os.unlink(tmp, dir_fd=pfd)
                if not same:
                    raise UnsafeArchiveError(f"/{rel} is written twice in this layer with different content or mode",
                                             input=input, fix="two inputs of this layer ship the same path; split "
                                             "them into different layers or drop one")
                return
        self.meta[rel] = Meta(m, uid, gid)

    def symlink(self, rel: str, target: str, uid: int = 0, gid: int = 0, *, input: str) -> None:
        if not target or "\x00" in target:
            raise UnsafeArchiveError(f"symlink /{rel} has an empty target", input=input)
        if not target.startswith("/"):
            depth = rel.count("/")  # directories between / and the link
            for part in target.split("/"):
                if part == "..":
                    depth -= 1
                    if depth < 0:
                        raise UnsafeArchiveError(
                            f"symlink /{rel} -> {target} points outside the image root", input=input,
                            fix="relative links may not climb above /",
                        )
                elif part not in ("", "."):
                    depth += 1
        with self._parent(rel, input=input) as (pfd, name):
            existing = _lstat_at(pfd, name)
            if existing:
                if stat.S_ISLNK(existing.st_mode) and os.readlink(name, dir_fd=pfd) == target:
                    return
                raise UnsafeArchiveError(f"/{rel} is written twice in this layer (once as a symlink to {target})",
                                         input=input, fix="two inputs of this layer ship the same path")
            os.symlink(target, name, dir_fd=pfd)
        self.meta[rel] = Meta(0o777, uid, gid)

    def hardlink(self, rel: str, target_rel: str, *, input: str) -> None:
        """R8: the target must be a regular file of this tree reached through real directories
        only (a hard link through the archive's own symlink would pick up a host file)."""
        broken = UnsafeArchiveError(f"hard link /{rel} points at /{target_rel}, which is not a file earlier in the "
                                    "archive", input=input, fix="the archive is broken or hostile")
        if not target_rel:
            raise broken
        tparent, _, tname = target_rel.rpartition("/")
        root_fd = os.open(self.root, beneath.DIR_FLAGS)
        try:
            sfd = beneath.open_beneath(root_fd, tparent) if tparent else os.dup(root_fd)
        except beneath.Blocked as b:
            if b.kind == "symlink":
                raise UnsafeArchiveError(f"hard link /{rel} points at /{target_rel} through the symlink /{b.at}",
                                         input=input, fix="a hard link must name a file of the archive by its real "
                                         "path; the archive is broken or hostile") from None
            raise broken from None
        finally:
            os.close(root_fd)
        try:
            st = _lstat_at(sfd, tname)
            if st is None or not stat.S_ISREG(st.st_mode):
                raise broken
            with self._parent(rel, input=input) as (pfd, name):
                have = _lstat_at(pfd, name)
                if have:
                    if (have.st_dev, have.st_ino) == (st.st_dev, st.st_ino):
                        return
                    raise UnsafeArchiveError(f"/{rel} is written twice in this layer (once as a hard link)",
                                             input=input)
                os.link(tname, name, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(sfd)
        self.meta[rel] = self.meta.get(target_rel, Meta(0o644))

    def adopt(self, rel: str, src: Path, mode: int, uid: int = 0, gid: int = 0, *, input: str) -> None:
        """Move an existing file or symlink (same filesystem) into the tree, e.g. a run step's
        output; hard links between adopted files survive (the inode moves, not the bytes)."""
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(rel, os.readlink(src), uid, gid, input=input)
            return
        m = self.norm_mode(mode, False)
        self._note_mode(rel, mode, m, input)
        with self._parent(rel, input=input) as (pfd, name):
            if _lstat_at(pfd, name):
                raise UnsafeArchiveError(f"/{rel} is written twice in this layer", input=input)
            try:
                os.rename(src, name, dst_dir_fd=pfd)
            except OSError:
                with open(src, "rb") as f:
                    self.write_file(rel, f, m, uid, gid, input=input)
                return
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.fchmod(fd, 0o755 if m & 0o111 else 0o644)
            finally:
                os.close(fd)
        self.meta[rel] = Meta(m, uid, gid)

    def refuse_special(self, rel: str, kind: str, *, input: str) -> None:
        """R5."""
        raise UnsafeArchiveError(f"/{rel} is a {kind}; layers may not carry device nodes, FIFOs or sockets",
                                 input=input, fix="create it at run time (the container runtime provides /dev)")


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _fchmod_dir(dir_fd: int, name: str, mode: int) -> None:
    fd = os.open(name, beneath.DIR_FLAGS, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _same_bytes_at(dir_fd: int, a: str, b: str) -> bool:
    fa_fd = os.open(a, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    fb_fd = os.open(b, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fa_fd, "rb") as fa, os.fdopen(fb_fd, "rb") as fb:
        if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
            return False
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True
