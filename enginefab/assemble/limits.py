"""How far one input archive may expand: bytes, entries, and bytes per byte of archive.

A 10 KB sparse tar can claim 4 GiB, a 2 MB zip of zeros can inflate to 2 GiB, an archive can
hold a million empty files: each stops at the first entry that crosses a limit, before that
entry's bytes are written. The limits are per input (a .deb's data.tar, a wheel, an archive
input), counted from what the archive declares (tar member sizes, sparse or not; a zip's
central directory, which zipfile never reads past), so nothing is written first and measured
after. The largest real input of the matrix (the PyTorch CUDA wheel: 736 MB → 1.6 GB in 3,281
files, ratio 2.1; the densest .deb ratio 6.4) is far inside the defaults. The values come from
the settings built at the command line's edge (`--archive-max-bytes` … or
``ENGINEFAB_ARCHIVE_MAX_*``; `core.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enginefab.core.archivelimits import DEFAULT, ArchiveLimits
from enginefab.core.errors import UnsafeArchiveError

__all__ = ["DEFAULT", "ArchiveLimits", "Expansion", "RAISE_FIX"]

RAISE_FIX = ("if the input really is that large, raise the limit: ENGINEFAB_ARCHIVE_MAX_BYTES, "
             "ENGINEFAB_ARCHIVE_MAX_ENTRIES, ENGINEFAB_ARCHIVE_MAX_RATIO (or `enginefab build --archive-max-…`)")


@dataclass
class Expansion:
    """The running count of one input's expansion; `add` refuses the entry that crosses a limit."""

    limits: ArchiveLimits
    input: str
    archive_size: int
    bytes: int = 0
    entries: int = 0
    _ratio_cap: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._ratio_cap = max(self.limits.ratio_floor, self.limits.max_ratio * max(self.archive_size, 1))

    def add(self, name: str, size: int) -> None:
        self.entries += 1
        self.bytes += max(size, 0)
        lim = self.limits
        if self.entries > lim.max_entries:
            raise UnsafeArchiveError(f"the archive holds more than {lim.max_entries} entries (limit reached at {name!r})",
                                     input=self.input, fix=RAISE_FIX)
        if self.bytes > lim.max_bytes:
            raise UnsafeArchiveError(f"the archive expands to more than {_size(lim.max_bytes)} "
                                     f"({_size(self.bytes)} at {name!r})", input=self.input, fix=RAISE_FIX)
        if self.bytes > self._ratio_cap:
            raise UnsafeArchiveError(
                f"the archive expands more than {lim.max_ratio}× its size ({_size(self.archive_size)} → "
                f"{_size(self.bytes)} at {name!r}): a decompression bomb or a sparse file", input=self.input,
                fix=RAISE_FIX)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover
