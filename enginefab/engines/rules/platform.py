"""Rules over the platforms an image stands on: the OS, the accelerator stack and the Python
runtime exist for its arch and fit together (platforms.toml; glibc from compat.toml)."""

from __future__ import annotations

from enginefab.engines.image import Image
from enginefab.engines.rules.base import Context, needs, rule, version_tuple


@rule("stack-arch", "the accelerator stack exists for the arch", "NVIDIA / Ascend support matrices")
def stack_arch(img: Image, ctx: Context):
    if img.stack and img.arch not in img.stack.arches:
        yield (
            f"field accelerator: stack {img.stack_id} has no {img.arch} build "
            f"(it exists for {', '.join(img.stack.arches)})",
            f"use a stack available on {img.arch}",
        )


@rule("os-arch", "the OS base exists for the arch", "distribution ports")
def os_arch(img: Image, ctx: Context):
    if img.arch not in img.os.arches:
        yield (
            f"field os: {img.os_id} is not defined for {img.arch} (only {', '.join(img.os.arches)})",
            f"pick an OS available on {img.arch}",
        )


@rule("stack-base-for-os", "a CUDA stack not bundled in the wheels is made of packages over the OS's base image, "
      "or has a base image of its own for the OS", "platforms.toml; NVIDIA's Dockerfiles (ubuntu + apt packages)")
def stack_base_for_os(img: Image, ctx: Context):
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


@rule("python-os", "the Python runtime is defined for the image's OS", "platforms.toml")
def python_os(img: Image, ctx: Context):
    if img.python.os != img.os_id:
        yield (f"field python: runtime {img.python_id} is for {img.python.os}, not {img.os_id}", "define a runtime for this OS")


@rule("os-glibc", "the OS's glibc is at least what the engine's binaries need", "engine install guides; manylinux tags (PEP 571/599/600)")
def os_glibc(img: Image, ctx: Context):
    for eng, ver, need in needs(img, ctx):
        if need.glibc and version_tuple(img.os.glibc) < version_tuple(need.glibc):
            yield (f"field os: {eng} {ver} needs glibc >= {need.glibc}, but {img.os_id} has glibc "
                   f"{img.os.glibc} ({need.source})", f"use an OS with glibc >= {need.glibc}")
