"""Definition-level compatibility rules: pure functions of the matrix, no build needed.

Each rule has an id, a one-line statement and where the fact comes from. `check_image` returns
every violation for one image; `check_matrix` adds the matrix-wide ones (duplicate aliases).
Matrix loading refuses any violation; `enginefab check --level definition` reports them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

if TYPE_CHECKING:
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
class Rule:
    id: str
    statement: str
    source: str
    fn: Callable[["Image"], Iterator[tuple[str, str]]]  # yields (message, fix)


RULES: list[Rule] = []


def rule(id: str, statement: str, source: str):
    def deco(fn):
        RULES.append(Rule(id, statement, source, fn))
        return fn

    return deco


def _v(s: str) -> Version:
    return Version(s)


# -- image rules --------------------------------------------------------------------------


@rule("name-matches-fields", "the canonical name says what the fields say", "ModelArts naming")
def _name(img: "Image"):
    from enginefab.engines.matrix import same_version
    from enginefab.engines.names import NameError_, parse

    try:
        n = parse(img.name)
    except NameError_ as e:
        yield (f"field name: {e}", "write the name as engine_ver[-framework_ver]-accel[_ver]-py_X.Y-os_ver-arch")
        return
    checks = [
        ("engine", n.engine, img.engine.name, False),
        ("engine_version", n.engine_version, img.d.engine_version, True),
        ("framework", n.effective_framework, img.framework, False),
        ("framework_version", n.effective_framework_version, img.framework_version, True),
        ("accelerator", n.accelerator, img.accelerator, False),
        ("accelerator_version", n.accelerator_version, img.accelerator_version, True),
        ("python", n.python, img.d.python, False),
        ("os", n.os, img.os.name, False),
        ("os_version", n.os_version, img.os.version, True),
        ("arch", n.arch, img.arch, False),
    ]
    for fieldname, said, actual, is_version in checks:
        if said is None:  # the spelling does not say it (KungFu style, "cpu")
            continue
        ok = same_version(said, actual) if is_version else said == actual
        if not ok:
            yield (
                f"field {fieldname}: the canonical name {img.name!r} says {said!r} but the field is {actual!r}",
                f"make the name and the {fieldname} field agree",
            )


@rule("python-published", "the engine release publishes builds for the image's Python", "upstream release files")
def _python(img: "Image"):
    if img.d.python not in img.release.python:
        yield (
            f"field python: {img.engine.display} {img.release.version} publishes no build for Python "
            f"{img.d.python} (builds exist for {', '.join(img.release.python)})",
            f"use one of Python {', '.join(img.release.python)}, or another {img.engine.display} version",
        )


def _builds_of(img: "Image"):
    return [b for b in img.release.builds if b.accelerator == img.accelerator]


@rule("accelerator-built", "the engine release was built for the accelerator and its version", "upstream release notes")
def _accel(img: "Image"):
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
def _arch(img: "Image"):
    builds = _builds_of(img)
    if builds and not any(img.arch in b.arches for b in builds):
        arches = sorted({a for b in builds for a in b.arches})
        yield (
            f"field arch: {img.engine.display} {img.release.version} has no {img.arch} build for "
            f"{img.accelerator} (its {img.accelerator} builds are for {', '.join(arches)})",
            f"build this image for {' or '.join(arches)}, or pick an accelerator with an {img.arch} build",
        )


@rule("stack-arch", "the accelerator stack exists for the arch", "NVIDIA / Ascend support matrices")
def _stack_arch(img: "Image"):
    if img.stack and img.arch not in img.stack.arches:
        yield (
            f"field accelerator: stack {img.stack_id} has no {img.arch} build "
            f"(it exists for {', '.join(img.stack.arches)})",
            f"use a stack available on {img.arch}",
        )


@rule("os-arch", "the OS base exists for the arch", "distribution ports")
def _os_arch(img: "Image"):
    if img.arch not in img.os.arches:
        yield (
            f"field os: {img.os_id} is not defined for {img.arch} (only {', '.join(img.os.arches)})",
            f"pick an OS available on {img.arch}",
        )


@rule("stack-base-for-os", "a stack that is not bundled in the wheels has a base image for the OS", "platforms.toml")
def _stack_base(img: "Image"):
    s = img.stack
    if s and s.kind == "cuda" and not s.bundled and img.os_id not in s.base:
        yield (
            f"field os: stack {img.stack_id} has no base image for {img.os_id} "
            f"(it has: {', '.join(sorted(s.base)) or 'none'})",
            f"add a pinned base for {img.os_id} under [stack.\"{img.stack_id}\".base], or use another OS",
        )


@rule("framework-supported", "an engine over a framework supports that framework version", "engine release notes")
def _framework(img: "Image"):
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
    except InvalidSpecifier:
        ok = False
    if not ok:
        yield (
            f"field framework_version: {img.engine.display} {img.release.version} supports "
            f"{img.framework} {spec}, not {img.framework_version}",
            f"use {img.framework} {spec}",
        )


@rule("python-os", "the Python runtime is defined for the image's OS", "platforms.toml")
def _python_os(img: "Image"):
    if img.python.os != img.os_id:
        yield (f"field python: runtime {img.python_id} is for {img.python.os}, not {img.os_id}", "define a runtime for this OS")


def check_image(img: "Image") -> list[Violation]:
    out = []
    for r in RULES:
        for message, fix in r.fn(img):
            out.append(Violation(r.id, img.label(), message, fix, r.source))
    return out


def check_matrix(m: "Matrix") -> list[Violation]:
    out: list[Violation] = []
    seen_alias: dict[str, str] = {}
    seen_name: dict[str, str] = {}
    for img in m.images:
        if img.alias in seen_alias:
            out.append(
                Violation(
                    "unique-alias",
                    img.label(),
                    f"field alias: alias {img.alias!r} is used twice ({seen_alias[img.alias]} and {img.file})",
                    "give each image an alias unique in the matrix",
                )
            )
        seen_alias.setdefault(img.alias, img.file)
        if img.name in seen_name:
            out.append(
                Violation(
                    "unique-name",
                    img.label(),
                    f"field name: canonical name {img.name!r} is used twice",
                    "two images cannot share a canonical name",
                )
            )
        seen_name.setdefault(img.name, img.file)
        out.extend(check_image(img))
    return out
