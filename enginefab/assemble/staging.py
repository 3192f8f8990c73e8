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

The order in which stagers create files never reaches the layer (the packer sorts); the
environment knob ENGINEFAB_CREATE_ORDER=reverse makes every stager create its files in reverse
order, which the determinism tests use to prove it.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence, TypeVar

from enginefab.core.errors import UnsafeArchiveError

CHUNK = 1 << 20
T = TypeVar("T")


def creation_order(items: Sequence[T]) -> list[T]:
    """Items in the order a stager should create them: as given, or reversed under the test knob."""
    if os.environ.get("ENGINEFAB_CREATE_ORDER") == "reverse":
        return list(reversed(items))
    return list(items)


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
        return rel

    def host(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _parents(self, rel: str, *, input: str) -> None:
        """Create the parents of rel as real directories (root-owned 0755); R3."""
        cur = ""
        for part in rel.split("/")[:-1]:
            cur = f"{cur}/{part}" if cur else part
            p = self.host(cur)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p)
                os.chmod(p, 0o755)
                self.meta.setdefault(cur, Meta(0o755))
                continue
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchiveError(
                    f"member {rel!r} would be written through the symlink {cur!r}", input=input,
                    fix="an archive may not write through its own symlinks",
                )
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeArchiveError(f"member {rel!r} needs {cur!r} to be a directory, but it is a file",
                                         input=input, fix="two inputs of this layer disagree about that path")

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
        self._parents(rel, input=input)
        p = self.host(rel)
        m = self.norm_mode(mode, True)
        self._note_mode(rel, mode, m, input)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            os.mkdir(p)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeArchiveError(f"/{rel} is a directory in {input} but not in an earlier input of this layer",
                                         input=input, fix="two inputs of this layer disagree about that path")
        os.chmod(p, 0o755)
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
        self._parents(rel, input=input)
        p = self.host(rel)
        existing = _lstat(p)
        tmp = p.with_name(f".{p.name}.enginefab-new") if existing else p
        with open(tmp, "xb") as out:
            if isinstance(src, (bytes, bytearray)):
                out.write(src)
            else:
                shutil.copyfileobj(src, out, CHUNK)
        m = self.norm_mode(mode, False)
        self._note_mode(rel, mode, m, input)
        if existing:
            same = stat.S_ISREG(existing.st_mode) and _same_bytes(p, tmp) and self.meta.get(rel) == Meta(m, uid, gid)
            os.unlink(tmp)
            if not same:
                raise UnsafeArchiveError(f"/{rel} is written twice in this layer with different content or mode",
                                         input=input, fix="two inputs of this layer ship the same path; split them "
                                         "into different layers or drop one")
            return
        os.chmod(p, 0o755 if m & 0o111 else 0o644)
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
        self._parents(rel, input=input)
        p = self.host(rel)
        existing = _lstat(p)
        if existing:
            if stat.S_ISLNK(existing.st_mode) and os.readlink(p) == target:
                return
            raise UnsafeArchiveError(f"/{rel} is written twice in this layer (once as a symlink to {target})",
                                     input=input, fix="two inputs of this layer ship the same path")
        os.symlink(target, p)
        self.meta[rel] = Meta(0o777, uid, gid)

    def hardlink(self, rel: str, target_rel: str, *, input: str) -> None:
        src = self.host(target_rel)
        st = _lstat(src)
        if not target_rel or st is None or not stat.S_ISREG(st.st_mode):
            raise UnsafeArchiveError(f"hard link /{rel} points at /{target_rel}, which is not a file earlier in the archive",
                                     input=input, fix="the archive is broken or hostile")
        self._parents(rel, input=input)
        p = self.host(rel)
        if _lstat(p):
            if os.path.samefile(p, src):
                return
            raise UnsafeArchiveError(f"/{rel} is written twice in this layer (once as a hard link)", input=input)
        os.link(src, p)
        self.meta[rel] = self.meta.get(target_rel, Meta(0o644))

    def adopt(self, rel: str, src: Path, mode: int, uid: int = 0, gid: int = 0, *, input: str) -> None:
        """Move an existing file or symlink (same filesystem) into the tree, e.g. a run step's
        output; hard links between adopted files survive (the inode moves, not the bytes)."""
        self._parents(rel, input=input)
        p = self.host(rel)
        if _lstat(p):
            raise UnsafeArchiveError(f"/{rel} is written twice in this layer", input=input)
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(rel, os.readlink(src), uid, gid, input=input)
            return
        try:
            os.rename(src, p)
        except OSError:
            shutil.copyfile(src, p)
        m = self.norm_mode(mode, False)
        self._note_mode(rel, mode, m, input)
        os.chmod(p, 0o755 if m & 0o111 else 0o644)
        self.meta[rel] = Meta(m, uid, gid)

    def refuse_special(self, rel: str, kind: str, *, input: str) -> None:
        """R5."""
        raise UnsafeArchiveError(f"/{rel} is a {kind}; layers may not carry device nodes, FIFOs or sockets",
                                 input=input, fix="create it at run time (the container runtime provides /dev)")


def _lstat(p: Path) -> os.stat_result | None:
    try:
        return os.lstat(p)
    except FileNotFoundError:
        return None


def _same_bytes(a: Path, b: Path) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True
