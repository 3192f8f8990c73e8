"""An image's references resolved: its engine release, OS, accelerator stack and Python runtime
from platforms.toml and its engine file, or every reference that dangles (with its fix)."""

from __future__ import annotations

from pathlib import Path

from enginefab.core.versions import same_version
from enginefab.engines.image import Image
from enginefab.engines.locate import TomlText, did_you_mean
from enginefab.engines.model import EngineDef, ImageDef, PlatformsFile
from enginefab.engines.names import Grammar
from enginefab.engines.problems import REFERENCE, Problem


def resolve(path: Path, text: TomlText, index: int, d: ImageDef, engine: EngineDef, p: PlatformsFile,
            grammar: Grammar, families: dict[str, str]) -> Image | list[Problem]:
    """The image with every reference resolved, or every reference that dangles. `families`:
    engine name → "" when loaded, else the file that does not load."""
    who = f"{d.alias} ({d.name})"
    problems: list[Problem] = []

    def fail(fieldname: str, msg: str, fix: str) -> None:
        problems.append(Problem(path.name, text.line_of(["image", index, fieldname]), who, f"field {fieldname}: {msg}",
                                fix, REFERENCE, "reference"))

    if d.framework and d.framework != engine.name and families.get(d.framework) != "":
        broken_file = families.get(d.framework)
        hint = did_you_mean(d.framework, [k for k, v in families.items() if v == ""])
        fail("framework", f"engines/{broken_file} (the {d.framework} family) does not load" if broken_file else
             f"no engine family {d.framework!r} in engines/" + (f" ({hint})" if hint else ""),
             f"fix engines/{broken_file} first" if broken_file else f"add engines/{d.framework}.toml, or name a "
             f"family of engines/ ({', '.join(sorted(k for k, v in families.items() if v == ''))})")
    release = next((r for r in engine.releases if same_version(r.version, d.engine_version)), None)
    if release is None:
        known = ", ".join(r.version for r in engine.releases)
        fail("engine_version", f"{engine.display} has no release {d.engine_version} in {path.name} (it has: {known})",
             f"use one of {known}, or add an [[engine.releases]] entry for {d.engine_version} with the builds "
             "upstream publishes")
    if d.os not in p.os:
        hint = did_you_mean(d.os, p.os)
        fail("os", f"unknown OS {d.os!r}" + (f" ({hint})" if hint else ""),
             f"use one of {', '.join(sorted(p.os))}, or add [os.\"{d.os}\"] to platforms.toml")
    stack = stack_id = None
    if d.accelerator != "cpu" and d.accelerator not in p.stack:
        hint = did_you_mean(d.accelerator, list(p.stack) + ["cpu"])
        fail("accelerator", f"unknown accelerator stack {d.accelerator!r}" + (f" ({hint})" if hint else ""),
             f'use "cpu" or one of {", ".join(sorted(p.stack))}')
    elif d.accelerator != "cpu":
        stack_id, stack = d.accelerator, p.stack[d.accelerator]
        for rid in stack.apt:
            if rid not in p.apt:
                fail("accelerator", f"stack {stack_id} takes packages from apt repository {rid!r}, which "
                     "platforms.toml does not define", f"add [apt.{rid}] or use one of {', '.join(sorted(p.apt))}")
    pys = [(k, v) for k, v in p.python.items() if v.version == d.python and v.os == d.os]
    if release is not None and d.python not in release.python:
        # the right fix is a Python the engine publishes, never "add a runtime" for one it does not
        fail("python", f"{engine.display} {release.version} publishes no build for Python {d.python} "
             f"(builds exist for {', '.join(release.python)})",
             f"use one of Python {', '.join(release.python)}, or another {engine.display} version")
    elif not pys and d.os in p.os:
        have = sorted(v.version for v in p.python.values() if v.os == d.os)
        fail("python", f"no Python {d.python} runtime is defined for OS {d.os} (it has: {', '.join(have) or 'none'})",
             f'add a [python."{d.python}-{d.os}"] entry to platforms.toml' + (
                 f", or use Python {' or '.join(have)}" if have else ""))
    if problems or release is None:
        return problems
    python_id, python = pys[0]
    return Image(d=d, engine=engine, release=release, os_id=d.os, os=p.os[d.os], stack_id=stack_id, stack=stack,
                 python_id=python_id, python=python, conventions=p.conventions,
                 source_date_epoch=p.source_date_epoch, file=path.name, index=index, grammar=grammar)
