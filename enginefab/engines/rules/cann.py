"""Rules over a CANN stack: an adapter for the image's framework, the Ascend driver it pairs
with, the Pythons it supports (Huawei's facts in engines/checks/compat.toml)."""

from __future__ import annotations

from enginefab.engines import compat as compat_mod
from enginefab.engines.image import Image
from enginefab.engines.rules.base import COMPAT, Context, rule, version_tuple


@rule("cann-framework", "the CANN release ships an adapter for the image's framework version",
      "Huawei CANN / MindSpore version-matching tables")
def cann_framework(img: Image, ctx: Context):
    s = img.stack
    if not s or s.kind != "cann" or not (ctx.compat.cann or ctx.compat.cuda):
        return
    facts = ctx.compat.cann.get(s.version)
    if facts is None:
        yield (f"field accelerator: no compatibility facts for CANN {s.version} in {COMPAT}",
               f'add [cann."{s.version}"] frameworks = {{…}} with its source to {COMPAT}')
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


@rule("cann-driver", "the CANN stack declares the Ascend driver its release pairs with, and the image's Python is one "
      "its adapters support", "MindSpore 1.3 Ascend installation guide (CANN 5.0.2, driver and firmware 1.0.11.SCP001)")
def cann_driver(img: Image, ctx: Context):
    s = img.stack
    if not s or s.kind != "cann":
        return
    facts = ctx.compat.cann.get(s.version)
    if facts is None:
        return  # cann-framework says so
    if facts.driver and not s.driver:
        yield (f"field driver: stack {img.stack_id} does not declare its Ascend driver (CANN {s.version} pairs with "
               f"{facts.driver}; {facts.source})", f'set driver = "{facts.driver}"')
    elif facts.driver and s.driver and version_tuple(s.driver) < version_tuple(facts.driver):
        yield (f"field driver: stack {img.stack_id} declares driver {s.driver}, but CANN {s.version} needs "
               f"{facts.driver} or later ({facts.source})", f'set driver = "{facts.driver}"')
    if facts.python and not compat_mod.version_in(img.d.python, facts.python):
        yield (f"field python: CANN {s.version} supports Python {facts.python}, not {img.d.python} ({facts.source})",
               f"use Python {facts.python}")
