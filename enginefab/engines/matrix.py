"""Load engines/*.toml into a validated Matrix of Images.

Loading never half-succeeds: a TOML syntax error, an unknown key, a dangling reference or a
broken compatibility rule raises MatrixError naming the file, the image, the field and the rule.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from enginefab.core.errors import MatrixError
from enginefab.core.fields import rule_of, show
from enginefab.core.versions import same_version
from enginefab.engines import rules
from enginefab.engines.model import (
    OCI_ARCH,
    Conventions,
    EngineDef,
    EngineFile,
    EngineRelease,
    ImageDef,
    OSDef,
    PlatformsFile,
    PythonDef,
    StackDef,
)
from enginefab.engines.names import ImageName, NameError_, parse

PLATFORMS = "platforms.toml"
#: hashes of manual inputs recorded by `enginefab lock --add-file` (not an engine file)
MANUAL_PINS = "manual-pins.toml"


@dataclass(frozen=True)
class Image:
    """One image of the matrix, with every reference resolved."""

    d: ImageDef
    engine: EngineDef
    release: EngineRelease
    os_id: str
    os: OSDef
    stack_id: str | None
    stack: StackDef | None
    python_id: str
    python: PythonDef
    conventions: Conventions
    source_date_epoch: int
    file: str

    @property
    def alias(self) -> str:
        return self.d.alias

    @property
    def name(self) -> str:
        return self.d.name

    @property
    def arch(self) -> str:
        return self.d.arch

    @property
    def accelerator(self) -> str:
        return self.stack.kind if self.stack else "cpu"

    @property
    def accelerator_version(self) -> str | None:
        return self.stack.version if self.stack else None

    @property
    def framework(self) -> str:
        return self.d.framework or self.engine.name

    @property
    def framework_version(self) -> str:
        return self.d.framework_version or self.d.engine_version

    @property
    def oci_platform(self) -> dict[str, str]:
        p = {"os": "linux", "architecture": OCI_ARCH[self.arch]}
        if self.arch == "aarch64":
            p["variant"] = "v8"
        return p

    @cached_property
    def parsed_name(self) -> ImageName:
        return parse(self.d.name)

    def label(self) -> str:
        return f"{self.alias} ({self.name})"

    def summary(self) -> dict[str, Any]:
        """The `enginefab list --json` record: a stable contract."""
        s = self.stack
        return {
            "name": self.name,
            "alias": self.alias,
            "engine": self.engine.name,
            "engine_version": self.d.engine_version,
            "framework": self.framework,
            "framework_version": self.framework_version,
            "accelerator": self.accelerator,
            "accelerator_version": self.accelerator_version,
            "cudnn": s.cudnn if s else None,
            "nccl": s.nccl if s else None,
            "min_driver": s.min_driver if s else None,
            "python": self.d.python,
            "os": self.os.name,
            "os_version": self.os.version,
            "arch": self.arch,
            "user": f"{self.conventions.user}:{self.conventions.uid}:{self.conventions.gid}",
            "home": self.conventions.home,
            "demo": self.d.demo,
        }


@dataclass
class Matrix:
    root: Path
    platforms: PlatformsFile
    engines: dict[str, EngineDef]
    images: list[Image]
    _by_key: dict[str, Image] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for img in self.images:
            self._by_key[img.alias] = img
            self._by_key[img.name] = img

    def get(self, key: str) -> Image:
        """An image by alias or canonical name (any historical spelling of it)."""
        if key in self._by_key:
            return self._by_key[key]
        try:
            wanted = parse(key)
        except NameError_:
            wanted = None
        if wanted is not None:
            for img in self.images:
                if img.parsed_name == wanted:
                    return img
        close = sorted(a for a in (i.alias for i in self.images) if key.split("-")[0] in a)
        raise MatrixError(
            f"no image named {key!r}",
            fix="run `enginefab list` to see aliases and names"
            + (f"; did you mean {', '.join(close[:4])}?" if close else ""),
        )

    def select(self, keys: Iterable[str] = (), *, all_: bool = False, demo: bool = False) -> list[Image]:
        keys = list(keys)
        if all_ or (not keys and not demo):
            return list(self.images) if all_ or not keys else []
        out = [self.get(k) for k in keys]
        if demo:
            out += [i for i in self.images if i.d.demo and i not in out]
        return out

    @property
    def demos(self) -> list[Image]:
        return [i for i in self.images if i.d.demo]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise MatrixError(f"{path.name}: not valid TOML: {e}", fix=f"correct the syntax in {path}") from e
    except UnicodeDecodeError as e:
        raise MatrixError(f"{path.name}: not UTF-8 (byte {e.start})", fix=f"save {path} as UTF-8") from None
    except RecursionError:
        raise MatrixError(f"{path.name}: nested too deeply to read", fix=f"flatten {path}") from None
    except OSError as e:
        raise MatrixError(f"{path.name}: cannot read it: {e.strerror}", fix=f"check {path} and its permissions") from None


def _pydantic_error(path: Path, e: ValidationError, data: dict[str, Any]) -> MatrixError:
    first = e.errors()[0]
    loc = list(first["loc"])
    image = None
    if len(loc) >= 2 and loc[0] == "image" and isinstance(loc[1], int):
        try:
            image = data["image"][loc[1]].get("alias") or data["image"][loc[1]].get("name")
        except (KeyError, IndexError, AttributeError):
            image = None
        image = show(image, 80) if image is not None and not (isinstance(image, str) and len(image) <= 80) else image
    where = ".".join(str(x) for x in loc)
    if first["type"] == "extra_forbidden":
        msg, fix = f"unknown key {show(loc[-1])}", "see the JSON schema from `enginefab schema` for the allowed keys"
    else:
        msg = rule_of(first)
        fix = f"correct {where} in {path.name} (the rule: {msg.split(': ', 1)[-1]})"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return MatrixError(f"{path.name}: field {where}: {msg}{more}", image=image, fix=fix)


def load(root: Path) -> Matrix:
    """Load and validate the matrix in ``root/engines``."""
    edir = root / "engines"
    if not (edir / PLATFORMS).is_file():
        raise MatrixError(f"{edir / PLATFORMS} not found", fix="run enginefab from the project checkout")
    pdata = _read_toml(edir / PLATFORMS)
    try:
        platforms = PlatformsFile.model_validate(pdata)
    except ValidationError as e:
        raise _pydantic_error(edir / PLATFORMS, e, pdata) from None

    engines: dict[str, EngineDef] = {}
    images: list[Image] = []
    for path in sorted(edir.glob("*.toml")):
        if path.name in (PLATFORMS, MANUAL_PINS):
            continue
        data = _read_toml(path)
        try:
            ef = EngineFile.model_validate(data)
        except ValidationError as e:
            raise _pydantic_error(path, e, data) from None
        if ef.engine.name in engines:
            raise MatrixError(f"{path.name}: engine {ef.engine.name!r} is defined twice")
        engines[ef.engine.name] = ef.engine
        for d in ef.image:
            images.append(_resolve(path, d, ef.engine, platforms))

    matrix = Matrix(root=root, platforms=platforms, engines=engines, images=images)
    problems = rules.check_matrix(matrix)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        file = next((f"{i.file}: " for i in images if i.label() == first.image), "")
        raise MatrixError(file + first.message + more, image=first.image, fix=first.fix)
    return matrix


def _resolve(path: Path, d: ImageDef, engine: EngineDef, p: PlatformsFile) -> Image:
    who = f"{d.alias} ({d.name})"

    def fail(fieldname: str, msg: str, fix: str) -> MatrixError:
        return MatrixError(f"{path.name}: field {fieldname}: {msg}", image=who, fix=fix)

    release = next((r for r in engine.releases if same_version(r.version, d.engine_version)), None)
    if release is None:
        known = ", ".join(r.version for r in engine.releases)
        raise fail(
            "engine_version",
            f"{engine.name} has no release {d.engine_version} in {path.name} (known: {known})",
            f"add an [[engine.releases]] entry for {d.engine_version} with the builds upstream publishes",
        )
    if d.os not in p.os:
        raise fail("os", f"unknown OS {d.os!r}", f"use one of {', '.join(sorted(p.os))} or add it to platforms.toml")
    stack = None
    stack_id = None
    if d.accelerator != "cpu":
        if d.accelerator not in p.stack:
            raise fail(
                "accelerator",
                f"unknown accelerator stack {d.accelerator!r}",
                f'use "cpu" or one of {", ".join(sorted(p.stack))}',
            )
        stack_id, stack = d.accelerator, p.stack[d.accelerator]
        for rid in stack.apt:
            if rid not in p.apt:
                raise fail("accelerator", f"stack {stack_id} takes packages from apt repository {rid!r}, which "
                           "platforms.toml does not define", f"add [apt.{rid}] or use one of {', '.join(sorted(p.apt))}")
    pys = [(k, v) for k, v in p.python.items() if v.version == d.python and v.os == d.os]
    if not pys:
        raise fail(
            "python",
            f"no Python {d.python} runtime is defined for OS {d.os}",
            f'add a [python."{d.python}-{d.os}"] entry to platforms.toml',
        )
    python_id, python = pys[0]
    return Image(
        d=d,
        engine=engine,
        release=release,
        os_id=d.os,
        os=p.os[d.os],
        stack_id=stack_id,
        stack=stack,
        python_id=python_id,
        python=python,
        conventions=p.conventions,
        source_date_epoch=p.source_date_epoch,
        file=path.name,
    )


def json_schema() -> dict[str, Any]:
    """JSON schemas of both file kinds, for editors (Taplo / Even Better TOML)."""
    return {
        "platforms.toml": PlatformsFile.model_json_schema(),
        "engine.toml": EngineFile.model_json_schema(),
    }
