"""Static level: audit an image's files without running anything.

* every ELF file's machine matches the image's arch;
* the highest GLIBC_x.y symbol version any ELF file needs is <= the OS's glibc;
* every DT_NEEDED of every ELF file resolves: inside the image (the loader's search: RUNPATH /
  RPATH with $ORIGIN, LD_LIBRARY_PATH, ld.so.conf.d, the default directories), or to the
  declared accelerator stack's sonames, or to the host driver's (libcuda.so.1) — the rest are
  named as unresolved;
* installed wheels' tags fit the image's Python; dist-info versions equal the pins;
* ModelArts conventions: ma-user uid 1000 gid 100, home and workdir, PYTHONUNBUFFERED=1, no
  setuid/setgid files owned by root;
* NVIDIA variables on CUDA images, CANN variables on Ascend images.

`audit(root, facts)` works on any directory, so the engine layers of an image whose base is
out of reach can be audited against the base's *declared* facts.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name

from enginefab.build.image import Built
from enginefab.build.store import Store
from enginefab.check.report import Result
from enginefab.check.structure import Dlopen, Suite
from enginefab.engines.compat import version_in
from enginefab.lock.definition import Definition
from enginefab.lock.pypi import Target

MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
NVIDIA_VARS = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA")
CANN_VARS = ("ASCEND_OPP_PATH", "ASCEND_AICPU_PATH", "TBE_IMPL_PATH")
#: the dynamic loader itself and the vDSO are never files the image must carry
IMPLICIT = re.compile(r"^(ld-linux.*\.so\.\d|ld64\.so\.\d|linux-vdso\.so\.1|linux-gate\.so\.1)$")


@dataclass
class Facts:
    """What the audit compares against; from the definition, or declared for an absent base."""

    arch: str
    glibc: str
    env: dict[str, str]
    accelerator: str
    stack_provides: list[str]
    host_provides: list[str]
    python: Target
    site_packages: str
    pins: dict[str, str]  # wheel name → version
    user: str = "1000:100"
    workdir: str = "/home/ma-user"
    home_user: tuple[str, int, int, str] = ("ma-user", 1000, 100, "/home/ma-user")
    #: sonames the (absent) base provides, when auditing layers without their base
    base_provides: list[str] = field(default_factory=list)
    engine: str = ""
    engine_version: str = ""
    stack: str = ""
    #: soname → why it may stay unresolved (engines/checks/<engine>.yaml optionalSonames)
    optional: dict[str, str] = field(default_factory=dict)
    #: libraries the engine dlopens (engines/checks/<engine>.yaml dlopen), for this engine version
    dlopen: list[Dlopen] = field(default_factory=list)

    @classmethod
    def of(cls, d: Definition, suite: Suite | None = None) -> "Facts":
        uid, _, gid = d.config.user.partition(":")
        ext = suite.enginefab if suite else None
        return cls(
            arch=d.image.arch, glibc=d.image.glibc, env=dict(d.config.env), accelerator=d.image.accelerator,
            stack_provides=list(d.checks.accelerator_provides), host_provides=list(d.checks.host_provides),
            python=Target(python=d.python.version, arch=d.image.arch, glibc=d.image.glibc),
            site_packages=d.python.site_packages,
            pins={i.name: i.version for layer in d.layers for i in layer.inputs if i.kind == "wheel"},
            user=d.config.user, workdir=d.config.workdir,
            home_user=("ma-user", int(uid), int(gid or 0), d.config.workdir),
            engine=d.image.engine, engine_version=d.image.engine_version,
            stack=f"{d.image.accelerator} {d.image.accelerator_version or ''}".strip(),
            optional={o.soname: o.reason for o in ext.optionalSonames} if ext else {},
            dlopen=[x for x in ext.dlopen if version_in(
                d.image.framework_version if x.engine == d.image.framework != d.image.engine else d.image.engine_version,
                x.versions)] if ext else [],
        )


@dataclass
class Elf:
    path: str  # container path
    machine: str
    needed: list[str]
    runpath: list[str]
    glibc_max: tuple[int, ...] | None
    soname: str | None


def _vt(v: str) -> tuple[int, ...]:
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
                                v = _vt(name[6:])
                                glibc = v if glibc is None or v > glibc else glibc
            return Elf(cpath, e["e_machine"], needed, [p for p in runpath if p], glibc, soname)
    except (ELFError, OSError, ValueError, KeyError, AssertionError):
        return None


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            host = Path(dirpath) / n
            yield host, "/" + str(host.relative_to(root))


def _ld_conf_dirs(root: Path) -> list[str]:
    out = []
    d = root / "etc" / "ld.so.conf.d"
    if d.is_dir():
        for conf in sorted(d.glob("*.conf")):
            for line in conf.read_text(errors="replace").splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("/"):
                    out.append(line)
    return out


def audit(root: Path, facts: Facts, *, with_image_checks: bool = True) -> list[Result]:
    t0 = time.monotonic()
    elves: list[Elf] = []
    names_in_dir: dict[str, set[str]] = {}
    setuid: list[str] = []
    old_pb2: list[str] = []
    for host, cpath in _walk(root):
        d, _, base = cpath.rpartition("/")
        names_in_dir.setdefault(d or "/", set()).add(base)
        try:
            st = os.lstat(host)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_uid == 0:
                setuid.append(cpath)
            if st.st_size > 64:
                elf = read_elf(host, cpath)
                if elf is not None:
                    elves.append(elf)
            if base.endswith("_pb2.py") and _old_protoc(host):
                old_pb2.append(cpath)
    results: list[Result] = []
    scanned = time.monotonic() - t0

    # 1. arch
    want = MACHINE[facts.arch]
    wrong = [f"{e.path} ({e.machine})" for e in elves if e.machine != want]
    results.append(Result("static", "elf-arch", "fail" if wrong else "pass",
                          (f"{len(wrong)} ELF files are not {facts.arch}: " + ", ".join(wrong[:5])) if wrong
                          else f"all {len(elves)} ELF files are {facts.arch}", scanned, {"wrong": wrong[:50]}))

    # 2. glibc
    limit = _vt(facts.glibc)
    too_new = sorted(((e.glibc_max, e.path) for e in elves if e.glibc_max and e.glibc_max > limit), reverse=True)
    top = max((e.glibc_max for e in elves if e.glibc_max), default=None)
    fmt = lambda v: ".".join(map(str, v))  # noqa: E731
    results.append(Result("static", "glibc", "fail" if too_new else "pass",
                          (f"{len(too_new)} files need glibc newer than {facts.glibc}: "
                           + ", ".join(f"{p} (GLIBC_{fmt(v)})" for v, p in too_new[:5])) if too_new
                          else f"highest GLIBC symbol version needed: {fmt(top) if top else 'none'} <= {facts.glibc}",
                          data={"max": fmt(top) if top else None, "too_new": [p for _, p in too_new[:50]]}))

    # 3. DT_NEEDED
    triplet = TRIPLET[facts.arch]
    default_dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib", "/lib64", "/usr/lib64",
                    "/usr/local/lib"] + _ld_conf_dirs(root)
    ld_path = [p for p in facts.env.get("LD_LIBRARY_PATH", "").split(":") if p]
    stack, hostp = set(facts.stack_provides), set(facts.host_provides)
    base = set(facts.base_provides)
    # libraries of Python packages, by soname: an extension that links another package's library
    # (torchvision's _C.so → libc10.so) finds it already loaded, because that package is imported first
    sp = facts.site_packages.rstrip("/") + "/"
    in_packages = {(e.soname or e.path.rsplit("/", 1)[1]): e.path for e in elves if e.path.startswith(sp)}
    preloaded: dict[str, list[str]] = {}
    inside = from_stack = from_host = from_base = 0
    unresolved: dict[str, list[str]] = {}
    optional: dict[str, list[str]] = {}
    stack_users: dict[str, list[str]] = {}
    for e in elves:
        origin = e.path.rpartition("/")[0] or "/"
        search = [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in e.runpath]
        search = [os.path.normpath(p) for p in search] + ld_path + default_dirs + [origin]
        for n in e.needed:
            if IMPLICIT.match(n):
                inside += 1
                continue
            if "/" in n:
                ok = (root / n.lstrip("/")).exists()
            else:
                ok = any(n in names_in_dir.get(d.rstrip("/") or "/", ()) for d in search)
            if n in stack:
                stack_users.setdefault(n, []).append(e.path)
            if ok:
                inside += 1
            elif n in stack:
                from_stack += 1
            elif n in hostp:
                from_host += 1
            elif n in base:
                from_base += 1
            elif n in in_packages and e.path.startswith(sp):
                preloaded.setdefault(n, []).append(e.path)
            elif n in facts.optional:
                optional.setdefault(n, []).append(e.path)
            else:
                unresolved.setdefault(n, []).append(e.path)
    summary = (f"{inside} resolved in the image, {from_stack} by the {facts.accelerator} stack, "
               f"{from_host} by the host driver" + (f", {from_base} by the declared base" if base else ""))
    if preloaded:
        summary += "; loaded first by the package that provides them: " + ", ".join(
            f"{n} ({in_packages[n].removeprefix(sp)}, for {v[0].removeprefix(sp)})" for n, v in sorted(preloaded.items()))
    if optional:
        summary += "; optional, left unresolved: " + ", ".join(
            f"{n} ({facts.optional[n]}; needed by {v[0]})" for n, v in sorted(optional.items()))
    if unresolved:
        listing = "; ".join(f"{n} (needed by {v[0]}{' +' + str(len(v) - 1) if len(v) > 1 else ''})"
                            for n, v in sorted(unresolved.items())[:12])
        results.append(Result("static", "dt-needed", "fail", f"unresolved sonames: {listing}; {summary}",
                              data={"unresolved": {k: v[:5] for k, v in sorted(unresolved.items())}}))
    else:
        results.append(Result("static", "dt-needed", "pass", f"every DT_NEEDED resolves: {summary}",
                              data={"stack": sorted({n for e in elves for n in e.needed if n in stack}),
                                    "host": sorted({n for e in elves for n in e.needed if n in hostp})}))

    results.append(_stack_sonames(root, facts, stack_users, names_in_dir))
    results.append(_protobuf(root, facts, old_pb2))

    # 4. wheel tags and dist-info versions
    results += _python_checks(root, facts)
    if with_image_checks:
        results += _conventions(root, facts, setuid)
    return results


def _stack_sonames(root: Path, facts: Facts, users: dict[str, list[str]], names_in_dir) -> Result:
    """Which of the stack's libraries the image needs (DT_NEEDED, or dlopen declared for the engine)
    and whether each is provided: the answer to "what does this engine need from CUDA/cuDNN"."""
    stack, hostp = set(facts.stack_provides), set(facts.host_provides)
    need: dict[str, str] = {n: f"DT_NEEDED by {v[0]}" + (f" +{len(v) - 1}" if len(v) > 1 else "")
                            for n, v in sorted(users.items())}
    problems = []
    for d in facts.dlopen:
        if d.evidence is not None:
            if not _file_contains(root / d.evidence.path.lstrip("/"), d.evidence.contains.encode()):
                problems.append(f"{d.evidence.path} does not contain {d.evidence.contains!r}: the dlopen "
                                f"declaration for {facts.engine} {d.versions} does not fit this image")
                continue
        for n in d.sonames:
            need.setdefault(n, f"dlopen ({d.source})" if d.source else "dlopen")
    if not need and not problems:
        return Result("static", "stack-sonames", "pass" if facts.accelerator != "cuda" or not stack else "skip",
                      f"nothing in the image links the {facts.stack or facts.accelerator} stack's libraries")
    groups: dict[str, list[str]] = {}
    for n, why in need.items():
        inside = any(n in names for names in names_in_dir.values())
        if n in stack or n in hostp or inside:
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


def _file_contains(path: Path, needle: bytes, chunk: int = 1 << 24) -> bool:
    try:
        with open(path, "rb") as f:
            tail = b""
            while True:
                block = f.read(chunk)
                if not block:
                    return False
                if needle in tail + block:
                    return True
                tail = block[-len(needle):]
    except OSError:
        return False


def _old_protoc(path: Path) -> bool:
    """A _pb2 module generated by protoc < 3.19: it creates descriptors directly, which protobuf
    >= 4.21 refuses ("Descriptors cannot not be created directly")."""
    try:
        head = path.read_bytes()[:200_000]
    except OSError:
        return False
    return b"_descriptor.FieldDescriptor(" in head and b"_internal_create_key" not in head


def _protobuf(root: Path, facts: Facts, old_pb2: list[str]) -> Result:
    sp = root / facts.site_packages.lstrip("/")
    version = None
    for di in sorted(sp.glob("protobuf-*.dist-info")) if sp.is_dir() else []:
        version = di.name[len("protobuf-"):-len(".dist-info")]
    impl = facts.env.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION")
    if not old_pb2:
        return Result("static", "protobuf-generated-code", "pass", "no _pb2 modules from protoc < 3.19"
                      + (f" (protobuf {version})" if version else ""))
    ok = version is None or _vt(version) < (3, 21) or impl == "python"
    where = ", ".join(old_pb2[:3]) + (f" +{len(old_pb2) - 3}" if len(old_pb2) > 3 else "")
    if ok:
        can = (f"protobuf {version} can import them (< 3.21)" if version else
               "protobuf is not installed here (add one < 3.21 if these are used)")
        return Result("static", "protobuf-generated-code", "pass",
                      f"{len(old_pb2)} _pb2 modules from protoc < 3.19 ({where}); {can}",
                      data={"protobuf": version, "old_pb2": len(old_pb2)})
    return Result("static", "protobuf-generated-code", "fail",
                  f"protobuf {version} cannot import {len(old_pb2)} _pb2 modules generated by protoc < 3.19 "
                  f"({where}): TypeError: Descriptors cannot not be created directly (tensorflow/tensorflow#56266); "
                  "constrain protobuf<3.21", data={"protobuf": version, "old_pb2": len(old_pb2)})


def _python_checks(root: Path, facts: Facts) -> list[Result]:
    sp = root / facts.site_packages.lstrip("/")
    if not sp.is_dir():
        return [Result("static", "wheels", "skip", f"{facts.site_packages} is absent")]
    wanted = set(facts.python.tags())
    bad_tags, bad_versions, seen = [], [], {}
    for di in sorted(sp.glob("*.dist-info")):
        meta = di / "METADATA"
        name = version = None
        if meta.is_file():
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = canonicalize_name(line[5:].strip())
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                elif not line.strip():
                    break
        wheel = di / "WHEEL"
        if wheel.is_file():
            tags = [ln[4:].strip() for ln in wheel.read_text(errors="replace").splitlines() if ln.startswith("Tag:")]
            if tags and not any(t in wanted for tag in tags for t in parse_tag(tag)):
                bad_tags.append(f"{di.name} ({', '.join(tags)})")
        if name:
            seen[str(name)] = version or ""
            pin = facts.pins.get(str(name))
            if pin is not None and version is not None and _normv(pin) != _normv(version):
                bad_versions.append(f"{name} {version} (pinned {pin})")
    missing = sorted(n for n in facts.pins if n not in seen)
    out = [Result("static", "wheel-tags", "fail" if bad_tags else "pass",
                  ("wheels built for another Python or platform: " + ", ".join(bad_tags[:8])) if bad_tags
                  else f"{len(seen)} installed distributions fit cp{facts.python.py[0]}{facts.python.py[1]} {facts.arch}")]
    problems = bad_versions + [f"{n} missing (pinned {facts.pins[n]})" for n in missing]
    out.append(Result("static", "dist-versions", "fail" if problems else "pass",
                      ("installed versions differ from the lock: " + ", ".join(problems[:8])) if problems
                      else f"all {len(facts.pins)} pinned distributions installed at their pinned versions"))
    return out


def _normv(v: str) -> str:
    from packaging.version import Version

    try:
        return str(Version(v))
    except Exception:
        return v


def _conventions(root: Path, facts: Facts, setuid: list[str]) -> list[Result]:
    out = []
    user, uid, gid, home = facts.home_user
    problems = []
    if facts.user != f"{uid}:{gid}":
        problems.append(f"config User is {facts.user!r}, not {uid}:{gid}")
    if facts.workdir != home:
        problems.append(f"WorkingDir is {facts.workdir!r}, not {home}")
    if facts.env.get("PYTHONUNBUFFERED") != "1":
        problems.append("PYTHONUNBUFFERED=1 is not set")
    passwd = root / "etc" / "passwd"
    entry = None
    if passwd.is_file():
        for line in passwd.read_text(errors="replace").splitlines():
            f = line.split(":")
            if len(f) >= 7 and f[2] == str(uid):
                entry = f
    if entry is None:
        problems.append(f"/etc/passwd has no user with uid {uid}")
    elif entry[0] != user or entry[3] != str(gid) or entry[5] != home:
        problems.append(f"uid {uid} is {entry[0]} (gid {entry[3]}, home {entry[5]}), not {user} gid {gid} home {home}")
    h = root / home.lstrip("/")
    if not h.is_dir():
        problems.append(f"{home} does not exist")
    elif os.geteuid() == 0 and (h.stat().st_uid, h.stat().st_gid) != (uid, gid):
        problems.append(f"{home} is owned by {h.stat().st_uid}:{h.stat().st_gid}, not {uid}:{gid}")
    if setuid:
        problems.append(f"{len(setuid)} root-owned setuid/setgid files: {', '.join(setuid[:5])}")
    out.append(Result("static", "modelarts-conventions", "fail" if problems else "pass",
                      "; ".join(problems) if problems else f"{user} {uid}:{gid}, home and workdir {home}, "
                      "PYTHONUNBUFFERED=1, no root setuid/setgid files"))
    if facts.accelerator in ("cuda", "cann"):
        need = NVIDIA_VARS if facts.accelerator == "cuda" else CANN_VARS
        missing = [v for v in need if not facts.env.get(v)]
        out.append(Result("static", f"{facts.accelerator}-env", "fail" if missing else "pass",
                          f"missing {', '.join(missing)}" if missing else f"{', '.join(need)} set"))
    return out


def check(defn: Definition, store: Store, built: Built, suite: Suite | None = None) -> list[Result]:
    from enginefab.check.runner import unpacked

    return audit(unpacked(store, built), Facts.of(defn, suite))
