"""Locked rules: read the pinned definition build/<alias>.json. The engine wheel is the version
the matrix says, every wheel fits the image's Python, arch and glibc, and no known-broken
dependency combination (engines/checks/known-broken.toml) was locked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from enginefab.core.pytarget import Target
from enginefab.core.versions import same_version
from enginefab.engines import compat as compat_mod
from enginefab.engines.image import Image
from enginefab.engines.rules.base import Context, engines_of, rule

if TYPE_CHECKING:  # annotations only: a definition is read, never built here
    from enginefab.core.definition import Definition


#: suffixes of engine distributions on PyPI (tensorflow-gpu, mindspore-ascend, …)
_FLAVOURS = ("", "-gpu", "-cpu", "-ascend", "-cuda")


def _locked_versions(defn: Definition) -> dict[str, tuple[str, str]]:
    """canonical distribution name → (version, filename) of every locked wheel, sdist and vendor file."""
    out: dict[str, tuple[str, str]] = {}
    for i in defn.inputs():
        if i.kind not in ("wheel", "url", "manual"):
            continue
        name, version = i.name, i.version
        fn = i.filename or i.name
        if fn.endswith(".whl"):
            try:
                n, v, _, _ = parse_wheel_filename(fn)
                name, version = str(n), str(v)
            except InvalidWheelFilename:
                pass
        out.setdefault(str(canonicalize_name(name)), (version, fn))
    if defn.parent is not None:  # a derived image: what its parent installed is locked too
        for name, version in defn.parent.distributions.items():
            out.setdefault(str(canonicalize_name(name)), (version, f"in the parent {defn.parent.label}"))
    return out


def _dist_of(pypi: str | None, locked: dict[str, tuple[str, str]]) -> tuple[str, str, str] | None:
    if not pypi:
        return None
    base = str(canonicalize_name(pypi))
    for suf in _FLAVOURS:
        if base + suf in locked:
            v, fn = locked[base + suf]
            return base + suf, v, fn
    return None


def _same(a: str, b: str) -> bool:
    return same_version(Version(a).public if _is_v(a) else a, b)


def _is_v(s: str) -> bool:
    try:
        Version(s)
        return True
    except InvalidVersion:
        return False


@rule("engine-pinned", "the locked engine (and framework) distribution is the version the matrix names",
             "engines/*.toml engine_version / framework_version")
def engine_pinned(img: Image, defn: Definition, ctx: Context):
    locked = _locked_versions(defn)
    pairs = [(img.engine, img.d.engine_version)]
    if img.framework != img.engine.name and img.framework in ctx.engines:
        pairs.append((ctx.engines[img.framework], img.framework_version))
    for eng, want in pairs:
        hit = _dist_of(eng.pypi, locked)
        if hit and not _same(hit[1], want):
            yield (f"{eng.display} is locked at {hit[0]} {hit[1]} ({hit[2]}), but the image is {eng.display} {want}",
                   f"pin {hit[0]}=={want} in requirements and re-run `enginefab lock {img.alias}`")


@rule("engine-cuda-flavour", "a locked engine wheel built for one CUDA (+cuXYZ) or for CPU (+cpu) matches the stack",
             "PyTorch / MindSpore local version labels (+cu102, +cpu)")
def engine_cuda_flavour(img: Image, defn: Definition, ctx: Context):
    locked = _locked_versions(defn)
    hit = _dist_of(img.engine.pypi, locked)
    if not hit or not _is_v(hit[1]):
        return
    local = Version(hit[1]).local
    if not local:
        return
    if local == "cpu" and img.accelerator == "cuda":
        yield (f"the locked {hit[0]} {hit[1]} is a CPU-only build in a CUDA {img.accelerator_version} image",
               f"lock the CUDA {img.accelerator_version} build")
    elif local.startswith("cu") and local[2:].isdigit():
        want = (img.accelerator_version or "").replace(".", "")
        if img.accelerator != "cuda" or local[2:] != want:
            yield (f"the locked {hit[0]} {hit[1]} was built for CUDA {local[2:-1]}.{local[-1]}, but the image's stack is "
                   f"{img.accelerator} {img.accelerator_version or ''}".rstrip(),
                   f"lock the {img.accelerator} {img.accelerator_version or ''} build".rstrip())


@rule("wheel-fits", "every locked wheel's tags fit the image's Python, arch and glibc",
             "PEP 425 tags; manylinux PEP 513/571/599/600")
def wheel_fits(img: Image, defn: Definition, ctx: Context):
    target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
    ok = set(target.tags())
    for i in defn.inputs():
        fn = i.filename or i.name
        if i.kind not in ("wheel", "manual", "url") or not fn.endswith(".whl"):
            continue
        try:
            _, _, _, tags = parse_wheel_filename(fn)
        except InvalidWheelFilename:
            continue
        if any(t in ok for t in tags):
            continue
        yield (f"{fn} does not fit Python {img.d.python} on {img.arch} with glibc {img.os.glibc}: "
               f"{_why_not(tags, target)}", f"re-lock {img.alias} for its target (`enginefab lock {img.alias}`)")


def _why_not(tags, target) -> str:
    plats = {t.platform for t in tags}
    if plats != {"any"} and not any(target.arch in p for p in plats):
        return f"it is built for {', '.join(sorted(plats))}, not {target.arch}"
    need = []
    for p in plats:
        parts = p.split("_")
        if p.startswith("manylinux_") and len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
            need.append((int(parts[1]), int(parts[2])))
        for legacy, v in (("manylinux2014", (2, 17)), ("manylinux2010", (2, 12)), ("manylinux1", (2, 5))):
            if p.startswith(legacy):
                need.append(v)
    if need and min(need) > target.glibc_tuple:
        lo = min(need)
        return f"it needs glibc >= {lo[0]}.{lo[1]} ({', '.join(sorted(plats))}), the OS has {target.glibc}"
    pys = {t.interpreter for t in tags} | {t.abi for t in tags}
    return f"its Python tags are {', '.join(sorted(pys))}, the image runs {target.abi}"


@rule("known-broken", "no locked dependency is in a combination known to break the engine at run time",
             "engines/checks/known-broken.toml (each entry cites its issue)")
def known_broken(img: Image, defn: Definition, ctx: Context):
    locked = _locked_versions(defn)
    for b in ctx.broken.broken:
        for eng, ver in engines_of(img):
            if eng != b.framework or not compat_mod.version_in(ver, b.versions):
                continue
            got = locked.get(b.dist)
            if got and compat_mod.version_in(got[0], b.package_versions):
                yield (f"{b.package} {got[0]} with {eng} {ver} is known to break ({b.id}): {b.symptom} "
                       f"[{b.source}]", b.fix)
