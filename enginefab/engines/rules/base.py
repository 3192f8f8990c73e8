"""What every rule is made of: a violation, the context rules read, and the rule itself.

A rule is a function yielding (message, fix) with an id, a one-line statement and where the fact
comes from; `@rule(...)` makes one. Image rules take (img, ctx), locked rules (img, defn, ctx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from enginefab.engines import compat as compat_mod
from enginefab.engines.image import Image
from enginefab.engines.model import EngineDef

#: where the compatibility facts live, for messages
COMPAT = "engines/checks/compat.toml"


@dataclass(frozen=True)
class Violation:
    rule: str
    image: str | None
    message: str
    fix: str
    source: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {"rule": self.rule, "image": self.image, "message": self.message, "fix": self.fix, "source": self.source}


class _Engines(Protocol):
    """What a Context is made from: a matrix (its root and engine families)."""

    root: Path
    engines: dict[str, EngineDef]


@dataclass(frozen=True)
class Context:
    """What rules read beyond the image: the compatibility facts and the other engines."""

    compat: compat_mod.CompatFile = field(default_factory=compat_mod.CompatFile)
    broken: compat_mod.KnownBrokenFile = field(default_factory=compat_mod.KnownBrokenFile)
    engines: dict[str, EngineDef] = field(default_factory=dict)

    @classmethod
    def of(cls, m: _Engines) -> "Context":
        return cls.at(m.root, m.engines)

    @classmethod
    def at(cls, root: Path, engines: dict[str, EngineDef] | None = None) -> "Context":
        return cls(compat_mod.compat(root), compat_mod.known_broken(root), dict(engines or {}))


@dataclass(frozen=True)
class Rule:
    id: str
    statement: str
    source: str
    #: yields (message, fix); image rules take (img, ctx), locked rules (img, defn, ctx)
    fn: Callable[..., Iterator[tuple[str, str]]]


def rule(id: str, statement: str, source: str) -> Callable[[Callable[..., Iterator[tuple[str, str]]]], Rule]:
    """Make the decorated function a Rule (the rule sets list them in order in rules/__init__.py)."""

    def deco(fn: Callable[..., Iterator[tuple[str, str]]]) -> Rule:
        return Rule(id, statement, source, fn)

    return deco


def version_tuple(s: str) -> tuple[int, ...]:
    """The numeric parts of a version, for ordering ("1.0.11.SCP001" → (1, 0, 11, 1))."""
    out = []
    for part in s.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def major_minor(s: str) -> str:
    return ".".join(s.split(".")[:2])


def engines_of(img: Image) -> list[tuple[str, str]]:
    """(engine id, version) of the engine and, for an engine over a framework, the framework."""
    out = [(img.engine.name, img.d.engine_version)]
    if img.framework != img.engine.name:
        out.append((img.framework, img.framework_version))
    return out


def needs(img: Image, ctx: Context) -> Iterator[tuple[str, str, compat_mod.EngineNeeds]]:
    """(engine, version, facts) of what the image's engine and framework were built against, for
    its accelerator kind and, for CUDA facts, its CUDA version."""
    for eng, ver in engines_of(img):
        for need in ctx.compat.needs(eng, ver, img.accelerator):
            if need.cuda and (not img.stack or not compat_mod.version_in(img.stack.version, need.cuda)):
                continue
            yield eng, ver, need
