"""Rules over what upstream published: the engine (and the framework under it) has a build for
the image's Python, accelerator and arch (engines/<family>.toml releases)."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from enginefab.core.versions import same_version
from enginefab.engines.image import Image
from enginefab.engines.rules.base import Context, rule


@rule("python-published", "the engine release publishes builds for the image's Python", "upstream release files")
def python_published(img: Image, ctx: Context):
    if img.d.python not in img.release.python:
        yield (
            f"field python: {img.engine.display} {img.release.version} publishes no build for Python "
            f"{img.d.python} (builds exist for {', '.join(img.release.python)})",
            f"use one of Python {', '.join(img.release.python)}, or another {img.engine.display} version",
        )


def _builds_of(img: Image):
    return [b for b in img.release.builds if b.accelerator == img.accelerator]


@rule("accelerator-built", "the engine release was built for the accelerator and its version", "upstream release notes")
def accelerator_built(img: Image, ctx: Context):
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
def arch_built(img: Image, ctx: Context):
    builds = _builds_of(img)
    if builds and not any(img.arch in b.arches for b in builds):
        arches = sorted({a for b in builds for a in b.arches})
        yield (
            f"field arch: {img.engine.display} {img.release.version} has no {img.arch} build for "
            f"{img.accelerator} (its {img.accelerator} builds are for {', '.join(arches)})",
            f"build this image for {' or '.join(arches)}, or pick an accelerator with an {img.arch} build",
        )


@rule("framework-supported", "an engine over a framework supports that framework version", "engine release notes")
def framework_supported(img: Image, ctx: Context):
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
        ok = Version(img.framework_version) in SpecifierSet(spec)
    except (InvalidSpecifier, InvalidVersion):  # not PEP 440: never supported
        ok = False
    if not ok:
        yield (
            f"field framework_version: {img.engine.display} {img.release.version} supports "
            f"{img.framework} {spec}, not {img.framework_version}",
            f"use {img.framework} {spec}",
        )


@rule("framework-built", "the framework under an engine publishes a build for the image's Python, accelerator and arch",
      "the framework's releases in engines/<framework>.toml")
def framework_built(img: Image, ctx: Context):
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
