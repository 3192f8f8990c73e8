"""Why two versions of one file differ — for `enginefab diff` on layers a compile made twice.

A layer that is not reproducible usually differs in a few compiled files. Their hashes say
*that* they differ; this says *where*, from the bytes of both:

* ELF objects: the sections whose contents differ (``.text``: different code;
  ``.debug_info``/``.debug_str``/``.debug_line``: paths or producer strings in the debug info;
  ``.note.gnu.build-id``: the link's hash; ``.gnu_debuglink``: a stripped file's checksum) and
  the hint that goes with them;
* Python bytecode: the 16-byte header (a timestamp-based .pyc records its source's mtime)
  against the code object;
* anything else: the first differing byte, and its line when both are text.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from enginefab.assemble import rootfs
from enginefab.assemble.archives import BoundedTarInfo

#: how a layer's history comment says the run step declared it not reproducible
DECLARED = "not reproducible:"
#: files larger than this are not read into memory to be explained
MAX_BYTES = 256 << 20
#: paths explained per layer pair at most
MAX_FILES = 20

HINTS = {
    ".note.gnu.build-id": "the build-id is a hash of the link (-Wl,--build-id=none leaves it out)",
    ".debug_info": "debug info records directories and file names: build in $ENGINEFAB_BUILD (the prefix maps)",
    ".debug_str": "debug strings hold paths and the compiler's command line",
    ".debug_line": "the line table names source files and directories",
    ".text": "the machine code itself differs: another compiler, other flags or other sources",
    ".rodata": "constants differ: __DATE__/__TIME__, embedded paths or random names",
    ".gnu_debuglink": "the checksum of a separate debug file",
}


def contents(blob, media_type: str, paths: set[str]) -> dict[str, bytes]:
    """The bytes of the regular files `paths` in a layer blob (each at most MAX_BYTES)."""
    out: dict[str, bytes] = {}
    with rootfs.open_layer(blob, media_type) as f, tarfile.open(fileobj=f, mode="r|", tarinfo=BoundedTarInfo) as tf:
        for m in tf:
            name = m.name.rstrip("/")
            if name in paths and m.isreg() and m.size <= MAX_BYTES:
                out[name] = tf.extractfile(m).read()  # type: ignore[union-attr]
    return out


def _sections(data: bytes) -> dict[str, str]:
    elf = ELFFile(io.BytesIO(data))
    return {s.name: hashlib.sha256(s.data() if s["sh_type"] != "SHT_NOBITS" else b"").hexdigest()
            for s in elf.iter_sections() if s.name}


def _elf(a: bytes, b: bytes) -> str:
    try:
        sa, sb = _sections(a), _sections(b)
    except (ELFError, ValueError, KeyError) as e:
        return f"ELF files that cannot be compared by section ({e})"
    differ = sorted(n for n in sa.keys() & sb.keys() if sa[n] != sb[n])
    only = sorted(sa.keys() ^ sb.keys())
    parts = []
    if differ:
        parts.append("ELF sections differ: " + ", ".join(differ))
    if only:
        parts.append("sections in one only: " + ", ".join(only))
    if not parts:
        return "same sections, other headers or padding (section offsets, alignment)"
    hints = [HINTS[n] for n in differ + only if n in HINTS]
    return "; ".join(parts) + (f" ({'; '.join(dict.fromkeys(hints))})" if hints else "")


def _pyc(a: bytes, b: bytes) -> str:
    if a[16:] == b[16:]:
        return ("only the .pyc header differs (a timestamp-based .pyc records its source's mtime and size): "
                "leave bytecode out (pip --no-compile) or compile with --invalidation-mode unchecked-hash")
    return "the bytecode differs (other source, or another Python)"


def _bytes(a: bytes, b: bytes) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    where = f"first difference at byte {n}"
    try:
        line = a[:n].decode().count("\n") + 1
        b.decode()
        return f"{where} (line {line})"
    except UnicodeDecodeError:
        return where


def why(a: bytes, b: bytes, path: str) -> str:
    """One sentence on where the two versions of `path` differ (pure)."""
    if a[:4] == b[:4] == b"\x7fELF":
        return _elf(a, b)
    if path.endswith(".pyc") and len(a) >= 16 and len(b) >= 16:
        return _pyc(a, b)
    return _bytes(a, b)


def explain(a_blob, a_media: str, b_blob, b_media: str, paths: list[str]) -> dict[str, str]:
    """path → why, for the first MAX_FILES of `paths` (files whose contents differ)."""
    wanted = set(paths[:MAX_FILES])
    ca, cb = contents(a_blob, a_media, wanted), contents(b_blob, b_media, wanted)
    return {p: why(ca[p], cb[p], p) for p in sorted(wanted) if p in ca and p in cb}
