"""Archives into a staging tree under the safety rules (see `staging`): tar (any compression)
and zip, for .deb data, URL inputs and manual files."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

from enginefab.assemble.limits import Expansion
from enginefab.assemble.staging import Staging
from enginefab.core.errors import UnsafeArchiveError


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
                                       gzip.BadGzipFile]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


HEADER_MAX = 1 << 20  # a PAX or GNU long-name header: tarfile reads it into memory whole
_LONG_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)


class HeaderTooLarge(Exception):
    """A tar header that claims more than HEADER_MAX bytes (a memory bomb, not a file)."""


class BoundedTarInfo(tarfile.TarInfo):
    """TarInfo for every tar we read (``tarfile.open(..., tarinfo=BoundedTarInfo)``): a PAX or
    GNU long-name header claiming more than HEADER_MAX is refused before tarfile reads it."""

    def _proc_member(self, tf):  # tarfile's per-header dispatch, the hook its TarInfo subclasses get
        if self.type in _LONG_HEADERS and self.size > HEADER_MAX:
            raise HeaderTooLarge(f"a tar extended header (PAX or long name) claims {self.size} bytes; "
                                 f"at most {HEADER_MAX} are read")
        return super()._proc_member(tf)


CORRUPT = _corrupt_errors() + (HeaderTooLarge,)


def _too_large(e: HeaderTooLarge, input: str, what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{what}: {e}", input=input,
                              fix="the archive is hostile (a header that size is a memory bomb); do not use it")


@contextlib.contextmanager
def refuse_corrupt(input: str, what: str) -> Iterator[None]:
    """R12: a truncated or corrupt archive becomes an UnsafeArchiveError naming the input."""
    try:
        yield
    except HeaderTooLarge as e:
        raise _too_large(e, input, what) from None
    except CORRUPT as e:
        raise UnsafeArchiveError(f"{what} is truncated or corrupt: {e}", input=input,
                                 fix="the file is damaged or not what it claims to be; check the pin and the "
                                 "download (delete it from the download cache to fetch it again)") from None


def _under(dest: str, rel: str) -> str:
    return f"{dest}/{rel}" if dest and rel else (dest or rel)


def _strip(rel: str, n: int) -> str | None:
    parts = rel.split("/")
    return "/".join(parts[n:]) if len(parts) > n else None


def extract_tar(
    staging: Staging, tf: tarfile.TarFile, *, input: str, archive_size: int, dest: str = "", strip: int = 0,
    keep_owner: bool = False,
) -> None:
    """Every member of a (streamed) tar into staging, under `dest` (relative), rules applied;
    `archive_size` (the bytes the tar came from) bounds its expansion (R13)."""
    with refuse_corrupt(input, "the tar archive"):
        _extract_tar(staging, tf, staging.expansion(input, archive_size), input=input, dest=dest, strip=strip,
                     keep_owner=keep_owner)


def _extract_tar(staging: Staging, tf: tarfile.TarFile, count: Expansion, *, input: str, dest: str, strip: int,
                 keep_owner: bool) -> None:
    for m in tf:
        count.add(m.name, m.size if m.isreg() else 0)
        rel = staging.clean(m.name, input=input)
        if strip:
            stripped = _strip(rel, strip)
            if stripped is None:
                continue
            rel = stripped
        rel = _under(dest, rel)
        if not rel:
            continue
        uid, gid = (m.uid, m.gid) if keep_owner else (0, 0)
        if m.isdir():
            staging.mkdir(rel, m.mode, uid, gid, input=input)
        elif m.isreg():
            src = tf.extractfile(m)
            assert src is not None
            staging.write_file(rel, src, m.mode, uid, gid, input=input)
        elif m.issym():
            staging.symlink(rel, m.linkname, uid, gid, input=input)
        elif m.islnk():
            target = staging.clean(m.linkname, input=input)
            if strip:
                target = _strip(target, strip) or ""
            staging.hardlink(rel, _under(dest, target), input=input)
        elif m.ischr() or m.isblk():
            staging.refuse_special(rel, "device node", input=input)
        elif m.isfifo():
            staging.refuse_special(rel, "FIFO", input=input)
        else:
            raise UnsafeArchiveError(f"/{rel} has an unsupported tar type {m.type!r}", input=input)


def extract_zip(staging: Staging, path: Path, *, input: str, dest: str = "", strip: int = 0) -> None:
    with refuse_corrupt(input, "the zip archive"), zipfile.ZipFile(path) as zf:
        check_zip(staging, zf, path, input=input)
        for info in zf.infolist():
            rel = staging.clean(info.filename, input=input)
            if strip:
                stripped = _strip(rel, strip)
                if stripped is None:
                    continue
                rel = stripped
            rel = _under(dest, rel)
            mode = (info.external_attr >> 16) & 0xFFFF
            if stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise UnsafeArchiveError(f"the symlink /{rel} has a target of {info.file_size} bytes",
                                             input=input, fix="the archive is broken or hostile")
                staging.symlink(rel, zf.read(info).decode("utf-8", "surrogateescape"), input=input)
            elif info.is_dir():
                staging.mkdir(rel, stat.S_IMODE(mode) or 0o755, input=input)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                staging.refuse_special(rel, "special file", input=input)
            else:
                with zf.open(info) as src:
                    staging.write_file(rel, src, stat.S_IMODE(mode) or 0o644, input=input)


def check_zip(staging: Staging, zf: zipfile.ZipFile, path: Path, *, input: str) -> None:
    """Before anything is written: no name twice, and the expansion the central directory
    declares within the limits (zipfile never inflates a member past its declared size)."""
    seen: set[str] = set()
    count = staging.expansion(input, path.stat().st_size)
    for info in zf.infolist():
        if info.filename in seen:
            raise UnsafeArchiveError(f"the zip lists {info.filename!r} twice", input=input,
                                     fix="the archive is broken or hostile")
        seen.add(info.filename)
        count.add(info.filename, info.file_size)


def stage_archive(staging: Staging, path: Path, *, input: str, dest: str, filename: str, unpack: bool,
                  strip: int = 0) -> None:
    """A URL or manual input: unpacked into `dest`, or placed as the file `dest`."""
    rel_dest = staging.clean(dest.lstrip("/"), input=input) if dest.strip("/") else ""
    if not unpack:
        with open(path, "rb") as src:
            staging.write_file(rel_dest, src, 0o755 if filename.endswith((".run", ".sh")) else 0o644, input=input)
        return
    if filename.endswith((".zip", ".whl")):
        extract_zip(staging, path, input=input, dest=rel_dest, strip=strip)
        return
    try:
        tf = tarfile.open(path, mode="r:*", tarinfo=BoundedTarInfo)
    except HeaderTooLarge as e:
        raise _too_large(e, input, filename) from None
    except CORRUPT as e:
        raise UnsafeArchiveError(f"{filename} is not an archive this builder can unpack (truncated or corrupt?): {e}",
                                 input=input) from None
    with tf:
        if _plain_tar(path):
            _prescan(staging, tf, input=input, archive_size=path.stat().st_size)
        extract_tar(staging, tf, input=input, archive_size=path.stat().st_size, dest=rel_dest, strip=strip)


def _plain_tar(path: Path) -> bool:
    """An uncompressed (ustar, GNU or PAX) tar: its headers can be read by seeking past the data."""
    with open(path, "rb") as f:
        return f.read(262)[257:262] == b"ustar"


def _prescan(staging: Staging, tf: tarfile.TarFile, *, input: str, archive_size: int) -> None:
    """R13 before anything is written, where it is cheap (an uncompressed tar: tarfile seeks from
    header to header): a bomb is refused with an empty tree. Compressed tars are counted while
    they stream (one decompression, not two)."""
    count = staging.expansion(input, archive_size)
    with refuse_corrupt(input, "the tar archive"):
        for m in tf:
            count.add(m.name, m.size if m.isreg() else 0)
