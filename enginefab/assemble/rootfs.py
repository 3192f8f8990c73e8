"""Unpack an image's layers into a directory, with OCI whiteouts, for sandboxed runs and audits.

Paths are resolved the way a container runtime sees them: inside the root. A symlink met on the
way (``/lib -> usr/lib``, or an absolute ``/etc/alternatives/x``) is followed *within* the root
and can never lead outside it.

`unpacked(store, built)` is the store's service for checks: an image's rootfs, unpacked once per
manifest digest under the store's rootfs/.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable

from enginefab.assemble.archives import CORRUPT, BoundedTarInfo
from enginefab.assemble.image import Built
from enginefab.assemble.store import Store
from enginefab.core.errors import BuildError

WH = ".wh."
OPAQUE = ".wh..wh..opq"


def open_layer(path: Path, media_type: str) -> BinaryIO:
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # type: ignore[return-value]
    if media_type.endswith("gzip"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def resolve_in(root: Path, rel: str, *, follow_last: bool = False, depth: int = 0) -> Path:
    """The host path of container path `rel`, following symlinks inside `root` only."""
    if depth > 40:
        raise OSError(f"too many levels of symbolic links resolving /{rel}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    cur = root
    for i, part in enumerate(parts):
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        last = i == len(parts) - 1
        if nxt.is_symlink() and (not last or follow_last):
            target = os.readlink(nxt)
            base = "" if target.startswith("/") else str(cur.relative_to(root))
            joined = f"{base}/{target}".lstrip("/")
            rest = "/".join(parts[i + 1 :])
            return resolve_in(root, f"{joined}/{rest}" if rest else joined, follow_last=follow_last, depth=depth + 1)
        cur = nxt
    return cur


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def apply_layer(root: Path, layer: Path, media_type: str, *, chown: bool | None = None) -> None:
    """One layer blob onto the tree at `root` (whiteouts applied); a blob that is not a whole
    (compressed) tar, or a whiteout that names no entry (``.wh..``, ``.wh...``), is a BuildError."""
    if chown is None:
        chown = os.geteuid() == 0
    try:
        _apply(root, layer, media_type, chown)
    except CORRUPT as e:
        raise BuildError(f"the layer blob {layer} is truncated or corrupt: {e}",
                         fix="`enginefab store verify` names the damaged blobs; `enginefab build` of the image "
                         "rebuilds (or refetches) them") from None


def _member_path(name: str) -> str:
    """A member name relative to the root: leading '/' and './' dropped (a leading dot of the
    name itself kept: ``./.wh.x`` is the whiteout of ``x``)."""
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _whiteout_target(rel: str, base: str, layer: Path) -> str:
    name = base[len(WH):]
    if name in ("", ".", "..") or "/" in name:
        raise BuildError(f"the layer {layer.name} holds the whiteout /{rel}, which names no file (it would delete "
                         "the directory it is in, or one above)",
                         fix="the layer (a base image's?) is broken or hostile: do not build on it")
    return name


def _apply(root: Path, layer: Path, media_type: str, chown: bool) -> None:
    with open_layer(layer, media_type) as f, tarfile.open(fileobj=f, mode="r|", tarinfo=BoundedTarInfo) as tf:
        for m in tf:
            rel = _member_path(m.name)
            if not rel or any(p == ".." for p in rel.split("/")):
                continue
            d, _, base = rel.rpartition("/")
            parent = resolve_in(root, d, follow_last=True) if d else root
            if base == OPAQUE:
                if parent.is_dir():
                    for child in parent.iterdir():
                        _remove(child)
                continue
            if base.startswith(WH):
                _remove(parent / _whiteout_target(rel, base, layer))
                continue
            parent.mkdir(parents=True, exist_ok=True)
            dest = parent / base
            if m.isdir():
                if dest.exists() and not dest.is_dir() or dest.is_symlink():
                    _remove(dest)
                dest.mkdir(exist_ok=True)
            else:
                if dest.is_symlink() or dest.exists():
                    _remove(dest)
                if m.isreg():
                    src = tf.extractfile(m)
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)  # type: ignore[arg-type]
                elif m.issym():
                    os.symlink(m.linkname, dest)
                    continue
                elif m.islnk():
                    target = resolve_in(root, _member_path(m.linkname))
                    os.link(target, dest)
                else:
                    continue  # devices, fifos: never needed for checks
            os.chmod(dest, stat.S_IMODE(m.mode))
            if chown:
                os.lchown(dest, m.uid, m.gid)
            os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)
        while f.read(1 << 20):  # to the stream's end: the compressor's own checksum is what
            pass                # catches a flipped byte inside a file's content


def unpack(root: Path, layers: Iterable[tuple[Path, str]]) -> Path:
    """A fresh rootfs at `root` from (blob path, media type) pairs, lowest first."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for path, mt in layers:
        apply_layer(root, path, mt)
    return root


def unpacked(store: Store, built: Built) -> Path:
    """The image's rootfs, unpacked once per manifest digest under the store.

    When another image's rootfs holds exactly this image's lower layers (a variant with layers
    added on top), it is copied with hard links and only the rest is applied: replaced files are
    unlinked first, never written through, so the other rootfs is untouched."""
    root = store.root / "rootfs" / built.digest.split(":", 1)[1]
    done = root.with_name(root.name + ".complete")
    if done.exists() and root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # one unpacker per image at a time (two `check`s of one image at once): the second waits,
    # then finds the tree complete; a killed unpacker releases the kernel's lock
    fd = os.open(root.with_name(root.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if done.exists() and root.is_dir():
            return root
        return _unpack_image(store, built, root, done)
    finally:
        os.close(fd)


def _unpack_image(store: Store, built: Built, root: Path, done: Path) -> Path:
    if root.exists():  # an interrupted unpack
        shutil.rmtree(root)
    descs = json.loads(built.manifest)["layers"]
    for d in descs:  # size and hash (unless checked since written): a damaged blob is named, not unpacked
        store.checked_path(d["digest"], d.get("size"), what=f"layer of {built.alias}")
    layers = [(d["digest"], d["mediaType"]) for d in descs]
    base, n = _lower(store, [d for d, _ in layers])
    if base is not None and subprocess.run(["cp", "-al", str(base), str(root)], capture_output=True).returncode == 0:
        for digest, mt in layers[n:]:
            apply_layer(root, store.blob_path(digest), mt)
    else:
        shutil.rmtree(root, ignore_errors=True)
        unpack(root, [(store.blob_path(d), mt) for d, mt in layers])
    done.write_text(json.dumps([d for d, _ in layers]))
    return root


def _lower(store: Store, layers: list[str]) -> tuple[Path | None, int]:
    """The unpacked rootfs whose layers are the longest proper prefix of `layers`."""
    best, n = None, 0
    for marker in (store.root / "rootfs").glob("*.complete"):
        try:
            theirs = json.loads(marker.read_text() or "null")
        except ValueError:
            continue
        if isinstance(theirs, list) and n < len(theirs) < len(layers) and layers[:len(theirs)] == theirs:
            best, n = marker.with_name(marker.name[: -len(".complete")]), len(theirs)
    return best, n
