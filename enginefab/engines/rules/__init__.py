"""Definition-level compatibility rules: pure functions of the matrix and the lock, no build needed.

Each rule has an id, a one-line statement and where the fact comes from (base.py). Two kinds:

* image rules (``RULES``) read the matrix (engines/*.toml) and the compatibility facts in
  engines/checks/compat.toml; matrix loading refuses any violation, and
  `enginefab check --level definition` reports them all. One module per concern: naming,
  releases (what upstream published), platform (OS, stack, Python), cuda, cann;
* locked rules (``LOCKED_RULES``, locked.py) read the pinned definition build/<alias>.json.

The lists below are the order rules run and report in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enginefab.engines.image import Image
from enginefab.engines.rules import cann, cuda, locked, naming, platform, releases
from enginefab.engines.rules.base import Context, Rule, Violation

if TYPE_CHECKING:  # annotations only: a definition is read, never built here
    from enginefab.core.definition import Definition

__all__ = ["Context", "Rule", "Violation", "RULES", "LOCKED_RULES", "check_image", "check_locked"]

RULES: list[Rule] = [
    naming.name_matches_fields,
    releases.python_published,
    releases.accelerator_built,
    releases.arch_built,
    platform.stack_arch,
    platform.os_arch,
    platform.stack_base_for_os,
    releases.framework_supported,
    platform.python_os,
    cuda.cuda_driver,
    cuda.cudnn_for_cuda,
    cuda.nccl_for_cuda,
    cuda.engine_cudnn,
    platform.os_glibc,
    cann.cann_framework,
    releases.framework_built,
    cann.cann_driver,
]

LOCKED_RULES: list[Rule] = [
    locked.engine_pinned,
    locked.engine_cuda_flavour,
    locked.wheel_fits,
    locked.known_broken,
]


def check_image(img: Image, ctx: Context | None = None) -> list[Violation]:
    ctx = ctx or Context()
    return [Violation(r.id, img.label(), message, fix, r.source) for r in RULES for message, fix in r.fn(img, ctx)]


def check_locked(img: Image, defn: "Definition", ctx: Context | None = None) -> list[Violation]:
    ctx = ctx or Context()
    return [Violation(r.id, img.label(), message, fix, r.source) for r in LOCKED_RULES
            for message, fix in r.fn(img, defn, ctx)]
