"""Debian packages into a layer: data.tar extracted under the staging rules, dpkg status kept.

No maintainer script runs. So that scanners (syft, trivy, grype) still see every package, each
one gets ``/var/lib/dpkg/status.d/<package>`` (the distroless convention: one paragraph per
file, so layers never fight over a single status file) and ``<package>.md5sums`` when the
package ships one.
"""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path
from typing import BinaryIO

from enginefab.assemble.archives import BoundedTarInfo, extract_tar, refuse_corrupt
from enginefab.assemble.staging import Staging
from enginefab.core.definition import Input
from enginefab.core.errors import UnsafeArchiveError

STATUS_D = "var/lib/dpkg/status.d"
MD5SUMS_MAX = 16 << 20  # read into memory; Debian's largest are a few MB


def ar_members(f: BinaryIO, *, input: str) -> dict[str, bytes | tuple[int, int]]:
    """Names → (offset, size) of the members of an ar archive (a .deb)."""
    if f.read(8) != b"!<arch>\n":
        raise UnsafeArchiveError("not a Debian package (no ar header)", input=input,
                                 fix="the download is not a .deb; check the pin")
    out: dict[str, tuple[int, int]] = {}
    while True:
        hdr = f.read(60)
        if not hdr:
            break
        if len(hdr) < 60 or hdr[58:60] != b"`\n":
            raise UnsafeArchiveError("the .deb is truncated or corrupt (ar header)", input=input)
        name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(hdr[48:58].decode("ascii").strip())
        except ValueError:
            raise UnsafeArchiveError(f"the .deb is truncated or corrupt (ar member {name!r} has no size)",
                                     input=input) from None
        off = f.tell()
        out[name] = (off, size)
        f.seek(size + (size & 1), 1)
    return out  # type: ignore[return-value]


class _Slice(io.RawIOBase):
    """A read-only window onto part of a file (one ar member), streamed."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f, self._off, self._left = f, offset, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        self._f.seek(self._off)
        data = self._f.read(min(len(b), self._left))
        n = len(data)
        b[:n] = data
        self._off += n
        self._left -= n
        return n


def _open_tar(name: str, raw: BinaryIO, *, input: str) -> tarfile.TarFile:
    """A streaming tar reader over a (compressed) member, without loading it into memory."""
    stream = io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type]
    if name.endswith(".xz"):
        return tarfile.open(fileobj=lzma.LZMAFile(stream), mode="r|", tarinfo=BoundedTarInfo)
    if name.endswith(".gz"):
        import gzip

        return tarfile.open(fileobj=gzip.GzipFile(fileobj=stream), mode="r|", tarinfo=BoundedTarInfo)
    if name.endswith(".zst"):
        import zstandard

        return tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(stream), mode="r|", tarinfo=BoundedTarInfo)
    if name.endswith(".tar"):
        return tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo)
    raise UnsafeArchiveError(f"unknown compression of the .deb member {name}", input=input)


def _member(f: BinaryIO, members: dict, prefix: str, *, input: str) -> tuple[str, _Slice]:
    for name, (off, size) in members.items():
        if name.startswith(prefix):
            return name, _Slice(f, off, size)
    raise UnsafeArchiveError(f"the .deb has no {prefix}* member", input=input)


def stage_deb(staging: Staging, path: Path, inp: Input) -> None:
    label = inp.ref
    md5sums = None
    with open(path, "rb") as f:
        members = ar_members(f, input=label)
        cname, craw = _member(f, members, "control.tar", input=label)
        with refuse_corrupt(label, f"the .deb's {cname}"), _open_tar(cname, craw, input=label) as tf:
            for m in tf:
                if m.name.lstrip("./") == "md5sums" and m.isfile():
                    if m.size > MD5SUMS_MAX:
                        raise UnsafeArchiveError(f"the .deb's md5sums claims {m.size} bytes (at most {MD5SUMS_MAX})",
                                                 input=label, fix="the package is broken or hostile; do not use it")
                    md5sums = tf.extractfile(m).read()  # type: ignore[union-attr]
        dname, draw = _member(f, members, "data.tar", input=label)
        with refuse_corrupt(label, f"the .deb's {dname}"), _open_tar(dname, draw, input=label) as tf:
            extract_tar(staging, tf, input=label, archive_size=members[dname][1], keep_owner=True)
    write_status(staging, inp, md5sums)


def status_paragraph(inp: Input) -> str:
    fields = dict(inp.control or {})
    fields.setdefault("Package", inp.name)
    fields.setdefault("Version", inp.version)
    fields.setdefault("Architecture", inp.arch or "all")
    order = ["Package", "Status"] + [k for k in fields if k not in ("Package",)]
    fields["Status"] = "install ok installed"
    lines = []
    for k in order:
        v = fields[k]
        first, *rest = v.split("\n")
        lines.append(f"{k}: {first}")
        lines.extend(" " + r if r.strip() else " ." for r in rest)
    return "\n".join(lines) + "\n"


def write_status(staging: Staging, inp: Input, md5sums: bytes | None) -> None:
    label = inp.ref
    staging.mkdir("var", input=label)
    staging.mkdir("var/lib", input=label)
    staging.mkdir("var/lib/dpkg", input=label)
    staging.mkdir(STATUS_D, input=label)
    staging.write_file(f"{STATUS_D}/{inp.name}", status_paragraph(inp).encode(), input=label)
    if md5sums:
        staging.write_file(f"{STATUS_D}/{inp.name}.md5sums", md5sums, input=label)
