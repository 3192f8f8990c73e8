"""ELF files fit the image: their machine is the image's arch, and the GLIBC_x.y symbol versions
they need are no newer than the OS's glibc. Pure functions of an Inventory."""

from __future__ import annotations

from enginefab.check.facts import Facts
from enginefab.check.inventory import Inventory
from enginefab.check.report import Result
from enginefab.core.elf import version_tuple

MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}


def elf_arch(inv: Inventory, facts: Facts) -> Result:
    want = MACHINE[facts.arch]
    wrong = [f"{e.path} ({e.machine})" for e in inv.elves if e.machine != want]
    return Result("static", "elf-arch", "fail" if wrong else "pass",
                  (f"{len(wrong)} ELF files are not {facts.arch}: " + ", ".join(wrong[:5])) if wrong
                  else f"all {len(inv.elves)} ELF files are {facts.arch}", inv.seconds, {"wrong": wrong[:50]})


def glibc(inv: Inventory, facts: Facts) -> Result:
    limit = version_tuple(facts.glibc)
    too_new = sorted(((e.glibc_max, e.path) for e in inv.elves if e.glibc_max and e.glibc_max > limit), reverse=True)
    top = max((e.glibc_max for e in inv.elves if e.glibc_max), default=None)
    return Result("static", "glibc", "fail" if too_new else "pass",
                  (f"{len(too_new)} files need glibc newer than {facts.glibc}: "
                   + ", ".join(f"{p} (GLIBC_{_dotted(v)})" for v, p in too_new[:5])) if too_new
                  else f"highest GLIBC symbol version needed: {_dotted(top) if top else 'none'} <= {facts.glibc}",
                  data={"max": _dotted(top) if top else None, "too_new": [p for _, p in too_new[:50]]})


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))
