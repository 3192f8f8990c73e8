"""Definition-level compatibility rules: pure functions of the matrix and the lock, no build needed.

Each rule has an id, a one-line statement and where the fact comes from. Two kinds:

* image rules (``RULES``) read the matrix (engines/*.toml) and the compatibility facts in
  engines/checks/compat.toml; matrix loading refuses any violation, and
  `enginefab check --level definition` reports them all;
* locked rules (``LOCKED_RULES``) read the pinned definition build/<alias>.json: the engine
  wheel is the version the matrix says, every wheel fits the image's Python, arch and glibc, no
  known-broken dependency combination (engines/checks/known-broken.toml) was locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from enginefab.core.pytarget import Target
from enginefab.core.versions import same_version
from enginefab.engines import compat as compat_mod
from enginefab.engines.model import EngineDef
from enginefab.engines.names import NameError_

if TYPE_CHECKING:  # annotations only: matrix imports the rules; a definition is read, never built here
    from enginefab.core.definition import Definition
    from enginefab.engines.matrix import Image, Matrix


@dataclass(frozen=True)
class Violation:
    rule: str
    image: str | None
    message: str
    fix: str
    source: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {"rule": self.rule, "image": self.image, "message": self.message, "fix": self.fix, "source": self.source}


@dataclass(frozen=True)
class Context:
    """What rules read beyond the image: the compatibility facts and the other engines."""

    compat: compat_mod.CompatFile = field(default_factory=compat_mod.CompatFile)
    broken: compat_mod.KnownBrokenFile = field(default_factory=compat_mod.KnownBrokenFile)
    engines: dict[str, "EngineDef"] = field(default_factory=dict)

    @classmethod
    def of(cls, m: "Matrix") -> "Context":
        return cls.at(m.root, m.engines)

    @classmethod
    def at(cls, root: Path, engines: dict[str, "EngineDef"] | None = None) -> "Context":
        return cls(compat_mod.compat(root), compat_mod.known_broken(root), dict(engines or {}))


@dataclass(frozen=True)
class Rule:
    id: str
    statement: str
    source: str
    #: yields (message, fix); image rules take (img, ctx), locked rules (img, defn, ctx)
    fn: Callable[..., Iterator[tuple[str, str]]]


RULES: list[Rule] = []
LOCKED_RULES: list[Rule] = []


def _registrar(registry: list[Rule]):
    def register(id: str, statement: str, source: str):
        def deco(fn):
            registry.append(Rule(id, statement, source, fn))
            return fn

        return deco

    return register


rule = _registrar(RULES)
locked_rule = _registrar(LOCKED_RULES)


def _v(s: str) -> Version:
    return Version(s)


def _vt(s: str) -> tuple[int, ...]:
    out = []
    for part in s.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def _majmin(s: str) -> str:
    return ".".join(s.split(".")[:2])


# -- image rules --------------------------------------------------------------------------


@rule("name-matches-fields", "the canonical name says what the fields say", "ModelArts naming")
def _name(img: "Image", ctx: Context):
    try:
        n = img.parsed_name
    except NameError_ as e:
        yield (f"field name: {e}", "write the name as engine_ver[-framework_ver]-accel[_ver]-py_X.Y-os_ver-arch, "
               "starting with an engine of engines/")
        return
    checks = [
        ("engine", n.engine, img.engine.name, False),
        ("engine_version", n.engine_version, img.d.engine_version, True),
        ("framework", n.effective_framework, img.framework, False),
        ("framework_version", n.effective_framework_version, img.framework_version, True),
        ("accelerator", n.accelerator, img.accelerator, False),
        ("python", n.python, img.d.python, False),
        ("os", n.os, img.os.name, False),
        ("os_version", n.os_version, img.os.version, True),
        ("arch", n.arch, img.arch, False),
    ]
    if n.accelerator == img.accelerator:  # the version of another kind is no second contradiction
        checks.insert(5, ("accelerator_version", n.accelerator_version, img.accelerator_version, True))
    for fieldname, said, actual, is_version in checks:
        if said is None:  # the spelling does not say it (KungFu style, "cpu")
            continue
        ok = actual is not None and (same_version(said, actual) if is_version else said == actual)
        if not ok:
            setting = _SET_BY.get(fieldname, fieldname)
            yield (
                f"field {setting}: the name contradicts the fields: {img.name!r} says {fieldname} {said!r}, "
                f"but the image's {fieldname} is {actual!r}" + (f" (from {setting} = {_raw(img, setting)!r})"
                                                                  if setting in ("os", "accelerator") else ""),
                f"make the name say {fieldname} {actual!r}, or "
                + (f"move the image to engines/{said}.toml" if fieldname == "engine" else
                   f"set the {setting} field to match the name"),
            )


#: fields of an image that are derived: the field of [[image]] that sets them
_SET_BY = {"accelerator_version": "accelerator", "os_version": "os"}


def _raw(img: "Image", fieldname: str) -> object:
    return getattr(img.d, fieldname, None)


@rule("python-published", "the engine release publishes builds for the image's Python", "upstream release files")
def _python(img: "Image", ctx: Context):
    if img.d.python not in img.release.python:
        yield (
            f"field python: {img.engine.display} {img.release.version} publishes no build for Python "
            f"{img.d.python} (builds exist for {', '.join(img.release.python)})",
            f"use one of Python {', '.join(img.release.python)}, or another {img.engine.display} version",
        )


def _builds_of(img: "Image"):
    return [b for b in img.release.builds if b.accelerator == img.accelerator]


@rule("accelerator-built", "the engine release was built for the accelerator and its version", "upstream release notes")
def _accel(img: "Image", ctx: Context):
    builds = _builds_of(img)
    if not builds:
        kinds = sorted({b.accelerator for b in img.release.builds})
        yield (
            f"field accelerator: {img.engine.display} {img.release.version} has no {img.accelerator} build "
            f"(it has: {', '.join(kinds)})",
            f"use an accelerator among {', '.join(kinds)}",
        )
        return
    v = img.accelerator_version
    if v is not None and not any(v in b.versions for b in builds):
        have = sorted({x for b in builds for x in b.versions})
        yield (
            f"field accelerator: {img.engine.display} {img.release.version} was not built for "
            f"{img.accelerator} {v} (built for {img.accelerator} {', '.join(have)})",
            f"use the {img.accelerator} stack {' or '.join(have)}",
        )


@rule("arch-built", "the engine publishes a build of this accelerator kind for the arch", "upstream release files")
def _arch(img: "Image", ctx: Context):
    builds = _builds_of(img)
    if builds and not any(img.arch in b.arches for b in builds):
        arches = sorted({a for b in builds for a in b.arches})
        yield (
            f"field arch: {img.engine.display} {img.release.version} has no {img.arch} build for "
            f"{img.accelerator} (its {img.accelerator} builds are for {', '.join(arches)})",
            f"build this image for {' or '.join(arches)}, or pick an accelerator with an {img.arch} build",
        )


@rule("stack-arch", "the accelerator stack exists for the arch", "NVIDIA / Ascend support matrices")
def _stack_arch(img: "Image", ctx: Context):
    if img.stack and img.arch not in img.stack.arches:
        yield (
            f"field accelerator: stack {img.stack_id} has no {img.arch} build "
            f"(it exists for {', '.join(img.stack.arches)})",
            f"use a stack available on {img.arch}",
        )


@rule("os-arch", "the OS base exists for the arch", "distribution ports")
def _os_arch(img: "Image", ctx: Context):
    if img.arch not in img.os.arches:
        yield (
            f"field os: {img.os_id} is not defined for {img.arch} (only {', '.join(img.os.arches)})",
            f"pick an OS available on {img.arch}",
        )


@rule("stack-base-for-os", "a CUDA stack not bundled in the wheels is made of packages over the OS's base image, "
      "or has a base image of its own for the OS", "platforms.toml; NVIDIA's Dockerfiles (ubuntu + apt packages)")
def _stack_base(img: "Image", ctx: Context):
    s = img.stack
    if not s or s.kind != "cuda" or s.bundled:
        return
    if s.packages:
        if img.os.source != "oci" or img.arch not in img.os.base:
            yield (f"field os: stack {img.stack_id} is made of packages installed over a base image, but {img.os_id} "
                   f"pins no base image for {img.arch}",
                   f'pin one under [os."{img.os_id}".base.{img.arch}] (e.g. ubuntu:18.04 by digest)')
        if not s.apt:
            yield (f"field apt: stack {img.stack_id} lists packages but no apt repository to take them from",
                   f'name its repositories in [stack."{img.stack_id}"] apt = [...]')
    elif img.os_id not in s.base:
        yield (
            f"field os: stack {img.stack_id} has no packages and no base image for {img.os_id} "
            f"(it has: {', '.join(sorted(s.base)) or 'none'})",
            f"add packages (and apt) or a pinned base for {img.os_id} under [stack.\"{img.stack_id}\"], or use another OS",
        )


@rule("framework-supported", "an engine over a framework supports that framework version", "engine release notes")
def _framework(img: "Image", ctx: Context):
    if img.framework == img.engine.name:
        return
    spec = img.release.frameworks.get(img.framework)
    if spec is None:
        yield (
            f"field framework: {img.engine.display} {img.release.version} does not support {img.framework} "
            f"(supports: {', '.join(sorted(img.release.frameworks)) or 'none'})",
            "pick a supported framework",
        )
        return
    try:
        ok = _v(img.framework_version) in SpecifierSet(spec)
    except (InvalidSpecifier, InvalidVersion):  # not PEP 440: never supported
        ok = False
    if not ok:
        yield (
            f"field framework_version: {img.engine.display} {img.release.version} supports "
            f"{img.framework} {spec}, not {img.framework_version}",
            f"use {img.framework} {spec}",
        )


@rule("python-os", "the Python runtime is defined for the image's OS", "platforms.toml")
def _python_os(img: "Image", ctx: Context):
    if img.python.os != img.os_id:
        yield (f"field python: runtime {img.python_id} is for {img.python.os}, not {img.os_id}", "define a runtime for this OS")


def _engines_of(img: "Image") -> list[tuple[str, str]]:
    """(engine id, version) of the engine and, for an engine over a framework, the framework."""
    out = [(img.engine.name, img.d.engine_version)]
    if img.framework != img.engine.name:
        out.append((img.framework, img.framework_version))
    return out


_COMPAT = "engines/checks/compat.toml"


@rule("cuda-driver", "the CUDA stack declares at least NVIDIA's minimum driver for its toolkit, and says so in "
      "NVIDIA_REQUIRE_CUDA", "NVIDIA CUDA toolkit release notes (toolkit ↔ minimum driver table)")
def _cuda_driver(img: "Image", ctx: Context):
    s = img.stack
    if not s or s.kind != "cuda" or not ctx.compat.cuda:
        return
    facts = ctx.compat.cuda.get(_majmin(s.version))
    if facts is None:
        yield (f"field accelerator: no compatibility facts for CUDA {s.version} in {_COMPAT}",
               f'add [cuda."{_majmin(s.version)}"] (min_driver, cudnn, nccl_min, source) to {_COMPAT}')
        return
    if not s.min_driver:
        yield (f"field min_driver: stack {img.stack_id} does not declare its minimum driver "
               f"(CUDA {s.version} needs >= {facts.min_driver})", f'set min_driver = "{facts.min_driver}"')
    elif _vt(s.min_driver) < _vt(facts.min_driver):
        yield (f"field min_driver: stack {img.stack_id} declares driver >= {s.min_driver}, but CUDA {s.version} "
               f"needs driver >= {facts.min_driver} ({facts.source})", f'set min_driver = "{facts.min_driver}"')
    req = s.env.get("NVIDIA_REQUIRE_CUDA")
    if req is not None:
        said = next((t[len("cuda>="):] for t in req.split() if t.startswith("cuda>=")), None)
        if said is None or _majmin(said) != _majmin(s.version):
            yield (f"field env.NVIDIA_REQUIRE_CUDA: {req!r} does not say cuda>={_majmin(s.version)} for the CUDA "
                   f"{s.version} stack {img.stack_id} (the NVIDIA container runtime checks the host driver against it)",
                   f"write NVIDIA_REQUIRE_CUDA = \"cuda>={_majmin(s.version)} …\"")


def _cuda_facts(img: "Image", ctx: Context, declared: str):
    """The image's CUDA stack and NVIDIA's facts for its version, when the stack declares `declared`."""
    s = img.stack
    if not s or s.kind != "cuda" or not getattr(s, declared):
        return None, None
    return s, ctx.compat.cuda.get(_majmin(s.version))


@rule("cudnn-for-cuda", "the stack's cuDNN release was built for its CUDA version", "NVIDIA cuDNN archive (builds per CUDA)")
def _cudnn_for_cuda(img: "Image", ctx: Context):
    s, facts = _cuda_facts(img, ctx, "cudnn")
    if s and facts and not s.bundled and _majmin(s.cudnn) not in facts.cudnn:
        yield (f"field cudnn: cuDNN {s.cudnn} has no build for CUDA {s.version} (cuDNN releases for CUDA "
               f"{_majmin(s.version)}: {', '.join(facts.cudnn)}; {facts.source})",
               f"use a cuDNN {' or '.join(facts.cudnn)} build for CUDA {_majmin(s.version)}")


@rule("nccl-for-cuda", "the stack's NCCL release has a build for its CUDA version", "NVIDIA NCCL downloads (+cudaX.Y builds)")
def _nccl_for_cuda(img: "Image", ctx: Context):
    s, facts = _cuda_facts(img, ctx, "nccl")
    if s and facts and _vt(s.nccl) < _vt(facts.nccl_min):
        yield (f"field nccl: NCCL {s.nccl} predates CUDA {s.version}: the first NCCL built for it is "
               f"{facts.nccl_min} ({facts.source})", f"use NCCL >= {facts.nccl_min}")


@rule("engine-cudnn", "the engine was built against the stack's cuDNN major version",
      "tensorflow.org tested build configurations; MindSpore installation guide")
def _engine_cudnn(img: "Image", ctx: Context):
    s = img.stack
    if not s or s.kind != "cuda" or s.bundled:
        return
    for eng, ver, need in _needs(img, ctx):
        if need.cudnn:
            if not s.cudnn:
                yield (f"field cudnn: {eng} {ver} loads cuDNN {need.cudnn} but stack {img.stack_id} declares no cuDNN",
                       "declare the stack's cudnn version")
            elif not compat_mod.version_in(s.cudnn, need.cudnn):
                yield (f"field cudnn: {eng} {ver} for CUDA {s.version} was built against cuDNN {need.cudnn} "
                       f"(libcudnn.so.{_cudnn_major(need.cudnn)}); stack {img.stack_id} has cuDNN {s.cudnn} "
                       f"({need.source})", f"use a stack with cuDNN {need.cudnn}")


def _needs(img: "Image", ctx: Context):
    """(engine, version, facts) of what the image's engine and framework were built against, for
    its accelerator kind and, for CUDA facts, its CUDA version."""
    for eng, ver in _engines_of(img):
        for need in ctx.compat.needs(eng, ver, img.accelerator):
            if need.cuda and (not img.stack or not compat_mod.version_in(img.stack.version, need.cuda)):
                continue
            yield eng, ver, need


def _cudnn_major(spec: str) -> str:
    lows = [sp.version for sp in SpecifierSet(spec) if sp.operator in (">=", "==", "~=")]
    return lows[0].split(".")[0] if lows else "?"


@rule("os-glibc", "the OS's glibc is at least what the engine's binaries need", "engine install guides; manylinux tags (PEP 571/599/600)")
def _os_glibc(img: "Image", ctx: Context):
    for eng, ver, need in _needs(img, ctx):
        if need.glibc and _vt(img.os.glibc) < _vt(need.glibc):
            yield (f"field os: {eng} {ver} needs glibc >= {need.glibc}, but {img.os_id} has glibc "
                   f"{img.os.glibc} ({need.source})", f"use an OS with glibc >= {need.glibc}")


@rule("cann-framework", "the CANN release ships an adapter for the image's framework version",
      "Huawei CANN / MindSpore version-matching tables")
def _cann_framework(img: "Image", ctx: Context):
    s = img.stack
    if not s or s.kind != "cann" or not (ctx.compat.cann or ctx.compat.cuda):
        return
    facts = ctx.compat.cann.get(s.version)
    if facts is None:
        yield (f"field accelerator: no compatibility facts for CANN {s.version} in {_COMPAT}",
               f'add [cann."{s.version}"] frameworks = {{…}} with its source to {_COMPAT}')
        return
    fw, ver = img.framework, img.framework_version
    spec = facts.frameworks.get(fw)
    if spec is None:
        yield (f"field framework: CANN {s.version} has no adapter for {fw} (it has: "
               f"{', '.join(f'{k} {v}' for k, v in sorted(facts.frameworks.items()))}; {facts.source})",
               f"use {' or '.join(sorted(facts.frameworks))} on CANN {s.version}")
    elif not compat_mod.version_in(ver, spec):
        yield (f"field framework_version: CANN {s.version}'s {fw} adapter supports {fw} {spec}, not {ver} "
               f"({facts.source})", f"use {fw} {spec}, or the CANN release made for {fw} {ver}")


@rule("framework-built", "the framework under an engine publishes a build for the image's Python, accelerator and arch",
      "the framework's releases in engines/<framework>.toml")
def _framework_built(img: "Image", ctx: Context):
    if img.framework == img.engine.name or img.framework not in ctx.engines:
        return
    fw = ctx.engines[img.framework]
    rel = next((r for r in fw.releases if same_version(r.version, img.framework_version)), None)
    if rel is None:
        yield (f"field framework_version: {fw.display} has no release {img.framework_version} in {img.framework}.toml",
               f"add it to engines/{img.framework}.toml or use one of {', '.join(r.version for r in fw.releases)}")
        return
    if img.d.python not in rel.python:
        yield (f"field python: {fw.display} {rel.version} (under {img.engine.display}) publishes no build for "
               f"Python {img.d.python} (it has {', '.join(rel.python)})", f"use Python {' or '.join(rel.python)}")
    builds = [b for b in rel.builds if b.accelerator == img.accelerator]
    v = img.accelerator_version
    if not builds or (v is not None and not any(v in b.versions for b in builds)):
        have = sorted({f"{b.accelerator} {x}" for b in rel.builds for x in (b.versions or [''])})
        yield (f"field accelerator: {fw.display} {rel.version} (under {img.engine.display}) was not built for "
               f"{img.accelerator} {v or ''}".rstrip() + f" (it has: {', '.join(h.strip() for h in have)})",
               f"use a stack {fw.display} {rel.version} was built for")
    elif not any(img.arch in b.arches for b in builds):
        yield (f"field arch: {fw.display} {rel.version} has no {img.arch} build for {img.accelerator}",
               "build for an arch the framework supports")


# -- locked rules: the pinned definition ---------------------------------------------------

#: suffixes of engine distributions on PyPI (tensorflow-gpu, mindspore-ascend, …)
_FLAVOURS = ("", "-gpu", "-cpu", "-ascend", "-cuda")


def _locked_versions(defn: "Definition") -> dict[str, tuple[str, str]]:
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


@locked_rule("engine-pinned", "the locked engine (and framework) distribution is the version the matrix names",
             "engines/*.toml engine_version / framework_version")
def _engine_pinned(img: "Image", defn: "Definition", ctx: Context):
    locked = _locked_versions(defn)
    pairs = [(img.engine, img.d.engine_version)]
    if img.framework != img.engine.name and img.framework in ctx.engines:
        pairs.append((ctx.engines[img.framework], img.framework_version))
    for eng, want in pairs:
        hit = _dist_of(eng.pypi, locked)
        if hit and not _same(hit[1], want):
            yield (f"{eng.display} is locked at {hit[0]} {hit[1]} ({hit[2]}), but the image is {eng.display} {want}",
                   f"pin {hit[0]}=={want} in requirements and re-run `enginefab lock {img.alias}`")


@locked_rule("engine-cuda-flavour", "a locked engine wheel built for one CUDA (+cuXYZ) or for CPU (+cpu) matches the stack",
             "PyTorch / MindSpore local version labels (+cu102, +cpu)")
def _cuda_flavour(img: "Image", defn: "Definition", ctx: Context):
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


@locked_rule("wheel-fits", "every locked wheel's tags fit the image's Python, arch and glibc",
             "PEP 425 tags; manylinux PEP 513/571/599/600")
def _wheel_fits(img: "Image", defn: "Definition", ctx: Context):
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


@locked_rule("known-broken", "no locked dependency is in a combination known to break the engine at run time",
             "engines/checks/known-broken.toml (each entry cites its issue)")
def _known_broken(img: "Image", defn: "Definition", ctx: Context):
    locked = _locked_versions(defn)
    for b in ctx.broken.broken:
        for eng, ver in _engines_of(img):
            if eng != b.framework or not compat_mod.version_in(ver, b.versions):
                continue
            got = locked.get(b.dist)
            if got and compat_mod.version_in(got[0], b.package_versions):
                yield (f"{b.package} {got[0]} with {eng} {ver} is known to break ({b.id}): {b.symptom} "
                       f"[{b.source}]", b.fix)


def check_locked(img: "Image", defn: "Definition", ctx: Context | None = None) -> list[Violation]:
    ctx = ctx or Context()
    out = []
    for r in LOCKED_RULES:
        for message, fix in r.fn(img, defn, ctx):
            out.append(Violation(r.id, img.label(), message, fix, r.source))
    return out


def check_image(img: "Image", ctx: Context | None = None) -> list[Violation]:
    ctx = ctx or Context()
    out = []
    for r in RULES:
        for message, fix in r.fn(img, ctx):
            out.append(Violation(r.id, img.label(), message, fix, r.source))
    return out


@rule("cann-driver", "the CANN stack declares the Ascend driver its release pairs with, and the image's Python is one "
      "its adapters support", "MindSpore 1.3 Ascend installation guide (CANN 5.0.2, driver and firmware 1.0.11.SCP001)")
def _cann_driver(img: "Image", ctx: Context):
    s = img.stack
    if not s or s.kind != "cann":
        return
    facts = ctx.compat.cann.get(s.version)
    if facts is None:
        return  # cann-framework says so
    if facts.driver and not s.driver:
        yield (f"field driver: stack {img.stack_id} does not declare its Ascend driver (CANN {s.version} pairs with "
               f"{facts.driver}; {facts.source})", f'set driver = "{facts.driver}"')
    elif facts.driver and s.driver and _vt(s.driver) < _vt(facts.driver):
        yield (f"field driver: stack {img.stack_id} declares driver {s.driver}, but CANN {s.version} needs "
               f"{facts.driver} or later ({facts.source})", f'set driver = "{facts.driver}"')
    if facts.python and not compat_mod.version_in(img.d.python, facts.python):
        yield (f"field python: CANN {s.version} supports Python {facts.python}, not {img.d.python} ({facts.source})",
               f"use Python {facts.python}")
