"""Read what the loader needs from an ELF file: machine, DT_NEEDED, RUNPATH/RPATH, SONAME and
the highest GLIBC_x.y symbol version it requires (pyelftools, nothing is run)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection


@dataclass
class Elf:
    path: str  # container path
    machine: str
    needed: list[str]
    runpath: list[str]
    glibc_max: tuple[int, ...] | None
    soname: str | None


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def read_elf(host: Path, cpath: str) -> Elf | None:
    try:
        with open(host, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            e = ELFFile(f)
            needed, runpath, soname = [], [], None
            glibc: tuple[int, ...] | None = None
            for sec in e.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                            runpath += (tag.runpath if tag.entry.d_tag == "DT_RUNPATH" else tag.rpath).split(":")
                        elif tag.entry.d_tag == "DT_SONAME":
                            soname = tag.soname
                elif isinstance(sec, GNUVerNeedSection):
                    for _vn, auxs in sec.iter_versions():
                        for aux in auxs:
                            name = aux.name
                            if name.startswith("GLIBC_") and name[6:7].isdigit():
                                v = version_tuple(name[6:])
                                glibc = v if glibc is None or v > glibc else glibc
            return Elf(cpath, e["e_machine"], needed, [p for p in runpath if p], glibc, soname)
    except (ELFError, OSError, ValueError, KeyError, AssertionError):
        return None
