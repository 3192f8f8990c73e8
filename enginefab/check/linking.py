"""What the dynamic loader would find: every DT_NEEDED of every ELF file, searched as ld.so does
(RUNPATH/RPATH with $ORIGIN, LD_LIBRARY_PATH, ld.so.conf.d, the default directories), else
provided by the accelerator stack, the host driver, a declared base, or a Python package loaded
first; and which of the stack's sonames the engine needs. Pure functions of an Inventory."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from enginefab.check.facts import Facts
from enginefab.check.inventory import Inventory
from enginefab.check.report import Result
from enginefab.core.elf import Elf

TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
#: the dynamic loader itself and the vDSO are never files the image must carry
IMPLICIT = re.compile(r"^(ld-linux.*\.so\.\d|ld64\.so\.\d|linux-vdso\.so\.1|linux-gate\.so\.1)$")


@dataclass
class Resolution:
    """Where each DT_NEEDED went: counts by provider, and soname → the ELF files needing it."""

    inside: int = 0
    from_stack: int = 0
    from_host: int = 0
    from_base: int = 0
    #: libraries inside site-packages, soname (or file name) → path
    in_packages: dict[str, str] = field(default_factory=dict)
    preloaded: dict[str, list[str]] = field(default_factory=dict)
    optional: dict[str, list[str]] = field(default_factory=dict)
    unresolved: dict[str, list[str]] = field(default_factory=dict)
    #: the stack's sonames, whether or not the image also carries them
    stack_users: dict[str, list[str]] = field(default_factory=dict)


def search_path(e: Elf, ld_path: list[str], default_dirs: list[str]) -> list[str]:
    """The directories the loader searches for `e`'s DT_NEEDED, in order."""
    origin = e.path.rpartition("/")[0] or "/"
    search = [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in e.runpath]
    return [os.path.normpath(p) for p in search] + ld_path + default_dirs + [origin]


def resolve(inv: Inventory, facts: Facts) -> Resolution:
    triplet = TRIPLET[facts.arch]
    default_dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib", "/lib64", "/usr/lib64",
                    "/usr/local/lib"] + list(inv.ld_conf_dirs)
    ld_path = [p for p in facts.env.get("LD_LIBRARY_PATH", "").split(":") if p]
    stack, hostp, base = set(facts.stack_provides), set(facts.host_provides), set(facts.base_provides)
    # libraries of Python packages, by soname: an extension that links another package's library
    # (torchvision's _C.so → libc10.so) finds it already loaded, because that package is imported first
    sp = facts.site_packages.rstrip("/") + "/"
    r = Resolution(in_packages={(e.soname or e.path.rsplit("/", 1)[1]): e.path for e in inv.elves
                                if e.path.startswith(sp)})
    for e in inv.elves:
        search = search_path(e, ld_path, default_dirs)
        for n in e.needed:
            if IMPLICIT.match(n):
                r.inside += 1
                continue
            if "/" in n:
                ok = n in inv.present
            else:
                ok = any(n in inv.names_in_dir.get(d.rstrip("/") or "/", ()) for d in search)
            if n in stack:
                r.stack_users.setdefault(n, []).append(e.path)
            if ok:
                r.inside += 1
            elif n in stack:
                r.from_stack += 1
            elif n in hostp:
                r.from_host += 1
            elif n in base:
                r.from_base += 1
            elif n in r.in_packages and e.path.startswith(sp):
                r.preloaded.setdefault(n, []).append(e.path)
            elif n in facts.optional:
                r.optional.setdefault(n, []).append(e.path)
            else:
                r.unresolved.setdefault(n, []).append(e.path)
    return r


def dt_needed(inv: Inventory, facts: Facts, r: Resolution) -> Result:
    sp = facts.site_packages.rstrip("/") + "/"
    summary = (f"{r.inside} resolved in the image, {r.from_stack} by the {facts.accelerator} stack, "
               f"{r.from_host} by the host driver" + (f", {r.from_base} by the declared base" if facts.base_provides else ""))
    if r.preloaded:
        summary += "; loaded first by the package that provides them: " + ", ".join(
            f"{n} ({r.in_packages[n].removeprefix(sp)}, for {v[0].removeprefix(sp)})" for n, v in sorted(r.preloaded.items()))
    if r.optional:
        summary += "; optional, left unresolved: " + ", ".join(
            f"{n} ({facts.optional[n]}; needed by {v[0]})" for n, v in sorted(r.optional.items()))
    if r.unresolved:
        listing = "; ".join(f"{n} (needed by {v[0]}{' +' + str(len(v) - 1) if len(v) > 1 else ''})"
                            for n, v in sorted(r.unresolved.items())[:12])
        return Result("static", "dt-needed", "fail", f"unresolved sonames: {listing}; {summary}",
                      data={"unresolved": {k: v[:5] for k, v in sorted(r.unresolved.items())}})
    stack, hostp = set(facts.stack_provides), set(facts.host_provides)
    return Result("static", "dt-needed", "pass", f"every DT_NEEDED resolves: {summary}",
                  data={"stack": sorted({n for e in inv.elves for n in e.needed if n in stack}),
                        "host": sorted({n for e in inv.elves for n in e.needed if n in hostp})})


def stack_needs(inv: Inventory, facts: Facts, r: Resolution) -> tuple[dict[str, str], list[str]]:
    """soname → why the engine needs it from the stack (DT_NEEDED, or a dlopen declaration whose
    evidence is in the image), and the declarations whose evidence is not."""
    need = {n: f"DT_NEEDED by {v[0]}" + (f" +{len(v) - 1}" if len(v) > 1 else "")
            for n, v in sorted(r.stack_users.items())}
    problems = []
    for d in facts.dlopen:
        if d.evidence is not None and (d.evidence.path, d.evidence.contains) not in inv.evidence:
            problems.append(f"{d.evidence.path} does not contain {d.evidence.contains!r}: the dlopen "
                            f"declaration for {facts.engine} {d.versions} does not fit this image")
            continue
        for n in d.sonames:
            need.setdefault(n, f"dlopen ({d.source})" if d.source else "dlopen")
    return need, problems


def stack_sonames(inv: Inventory, facts: Facts, r: Resolution) -> Result:
    """Which of the stack's libraries the image needs and whether each is provided: the answer to
    "what does this engine need from CUDA/cuDNN"."""
    stack, hostp = set(facts.stack_provides), set(facts.host_provides)
    need, problems = stack_needs(inv, facts, r)
    if not need and not problems:
        return Result("static", "stack-sonames", "pass" if facts.accelerator != "cuda" or not stack else "skip",
                      f"nothing in the image links the {facts.stack or facts.accelerator} stack's libraries")
    groups: dict[str, list[str]] = {}
    for n, why in need.items():
        if n in stack or n in hostp or inv.anywhere(n):
            groups.setdefault(why if why.startswith("dlopen") else "DT_NEEDED", []).append(
                n if why.startswith("dlopen") else f"{n} ({why[len('DT_NEEDED '):]})")
        elif n in facts.optional:
            groups.setdefault("optional", []).append(f"{n}: {facts.optional[n]}")
        else:
            problems.append(f"{n} is needed ({why}) but the {facts.stack} stack does not provide it")
    detail = (f"{facts.engine} {facts.engine_version} needs from the {facts.stack} stack: "
              + "; ".join(f"[{k}] {', '.join(v)}" for k, v in groups.items())
              + ("; " + "; ".join(problems) if problems else "; all provided"))
    return Result("static", "stack-sonames", "fail" if problems else "pass", detail,
                  data={"needs": need, "stack": sorted(stack)})
