"""Load engines/*.toml into a validated Matrix of Images.

Every problem is found, not only the first: a TOML syntax error, an unknown key, a dangling
reference, a broken compatibility rule — each named by file:line, image alias, field and rule
(problems.py). A strict load (the default) raises them all, root cause first. A lenient load
(the CLI's) keeps them with the image or file they belong to: the images that are fine stay
usable, and a command that touches a broken one fails with its problems (``Matrix.get``,
``Matrix.select``), so one bad file does not stop `list` or `show` of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from enginefab.core.errors import MatrixError
from enginefab.core.versions import same_version
from enginefab.engines import rules
from enginefab.engines.locate import TomlText, did_you_mean, similar
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
from enginefab.engines.names import Grammar, ImageName, NameError_
from enginefab.engines.problems import (
    KEYS,
    REFERENCE,
    RULE,
    UNIQUE,
    Broken,
    MatrixProblems,
    Problem,
    from_validation,
    ordered,
    raw_naming,
    raw_str,
    read_toml,
)

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
    #: position among the file's [[image]] tables (0-based) and the name grammar of the matrix
    index: int = 0
    grammar: Grammar = field(default_factory=lambda: Grammar({}, {}), compare=False, repr=False)

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
        return self.grammar.parse(self.d.name)

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
    broken: list[Broken] = field(default_factory=list)
    grammar: Grammar = field(default_factory=lambda: Grammar({}, {}))
    _by_key: dict[str, Image] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for img in self.images:
            self._by_key[img.alias] = img
            self._by_key[img.name] = img

    @property
    def problems(self) -> list[Problem]:
        return ordered([p for b in self.broken for p in b.problems])

    def get(self, key: str) -> Image:
        """An image by alias or canonical name (any historical spelling of it)."""
        if key in self._by_key:
            return self._by_key[key]
        hit = [b for b in self.broken if key in (b.alias, b.name)]
        if hit:
            raise MatrixProblems(list(hit[0].problems))
        try:
            wanted = self.grammar.parse(key)
        except NameError_:
            wanted = None
        if wanted is not None:
            for img in self.images:
                if img.parsed_name == wanted:
                    return img
        close = similar(key, [i.alias for i in self.images] + [i.name for i in self.images], n=4)
        unread = [b for b in self.broken if b.alias is None]
        raise MatrixError(
            f"no image named {key!r}" + "".join(f"; engines/{b.file} could not be read ({b.reason()})" for b in unread),
            fix="run `enginefab list` to see aliases and names"
            + (f"; did you mean {', '.join(close[:4])}?" if close else ""),
        )

    def select(self, keys: Iterable[str] = (), *, all_: bool = False, demo: bool = False) -> list[Image]:
        """The images named (and every image, or the demos); a broken one among them fails the selection."""
        keys = list(keys)
        if all_ or (not keys and not demo):
            if all_ or not keys:
                self.require_valid()
            return list(self.images) if all_ or not keys else []
        out = [self.get(k) for k in keys]
        if demo:
            self.require_valid([b for b in self.broken if b.demo is not False])
            out += [i for i in self.images if i.d.demo and i not in out]
        return out

    def require_valid(self, broken: list[Broken] | None = None) -> None:
        """Raise the problems of `broken` (default: all): for commands that touch every image."""
        problems = [p for b in (self.broken if broken is None else broken) for p in b.problems]
        if problems:
            raise MatrixProblems(problems)

    @property
    def demos(self) -> list[Image]:
        return [i for i in self.images if i.d.demo]




def _platforms(edir: Path) -> PlatformsFile:
    """platforms.toml, which every image depends on: any problem in it stops the load."""
    path = edir / PLATFORMS
    if not path.is_file():
        raise MatrixError(f"{path} not found", fix="run enginefab from the project checkout")
    text, data = read_toml(path)
    if isinstance(data, Problem):
        raise MatrixProblems([data])
    try:
        return PlatformsFile.model_validate(data)
    except ValidationError as e:
        raise MatrixProblems(from_validation(path.name, text, e, data, PlatformsFile)) from None


@dataclass
class _File:
    """One engine file as read: its engine (None when the [engine] table is broken) and images."""

    path: Path
    text: TomlText
    data: dict[str, Any]
    engine: EngineDef | None
    images: list[tuple[int, ImageDef | None, list[Problem]]]


def _engine_file(path: Path, broken: list[Broken]) -> _File | None:
    text, data = read_toml(path)
    if isinstance(data, Problem):
        broken.append(Broken(path.name, None, None, None, (data,)))
        return None
    raw_images = data.get("image", [])
    try:  # the file minus its images: [engine] and unknown top-level keys
        head = EngineFile.model_validate({k: v for k, v in data.items() if k != "image"} | {"image": []})
    except ValidationError as e:
        broken.append(Broken(path.name, None, None, None, tuple(from_validation(path.name, text, e, data, EngineFile))))
        return _File(path, text, data, None, [])  # its engine's names still read the other families' names
    if not isinstance(raw_images, list):
        broken.append(Broken(path.name, None, None, None, (Problem(
            path.name, text.line_of(["image"]), None, "`image` must be an array of tables ([[image]])",
            "write each image as an [[image]] table", KEYS),)))
        return None
    images: list[tuple[int, ImageDef | None, list[Problem]]] = []
    for n, raw in enumerate(raw_images):
        try:
            images.append((n, ImageDef.model_validate(raw), []))
        except ValidationError as e:
            images.append((n, None, from_validation(path.name, text, e, data, EngineFile, prefix=("image", n))))
    return _File(path, text, data, head.engine, images)


def load(root: Path, *, strict: bool = True) -> Matrix:
    """Load and validate the matrix in ``root/engines``.

    strict: raise every problem (root cause first). Otherwise keep them in ``Matrix.broken``
    with the image or file they belong to; a problem in platforms.toml always raises."""
    edir = root / "engines"
    platforms = _platforms(edir)
    broken: list[Broken] = []
    files = [f for path in sorted(edir.glob("*.toml")) if path.name not in (PLATFORMS, MANUAL_PINS)
             if (f := _engine_file(path, broken)) is not None]
    engines: dict[str, EngineDef] = {}
    for f in files:
        if f.engine is not None and f.engine.name in engines:
            broken.append(Broken(f.path.name, None, None, None, (Problem(
                f.path.name, f.text.line_of(["engine", "name"]), None,
                f"engine {f.engine.name!r} is defined twice", "give each engine family one file", REFERENCE),)))
            f.engine = None
        elif f.engine is not None:
            engines[f.engine.name] = f.engine
    grammar = Grammar.of([(e.name, e.spellings, e.abbreviation) for e in engines.values()]
                         + [raw_naming(f.data) for f in files if f.engine is None and raw_naming(f.data)])
    # every family by name: its file, loaded or not (a framework in a broken file is no dangling reference)
    known = {e.name: "" for e in engines.values()} | {
        r[0]: f.path.name for f in files if f.engine is None and (r := raw_naming(f.data)) and r[0] not in engines}
    images: list[Image] = []
    for f in files:
        for n, d, problems in f.images if f.engine else []:
            if d is not None:
                img_or_problems = _resolve(f.path, f.text, n, d, f.engine, platforms, grammar, known)
                if isinstance(img_or_problems, Image):
                    images.append(img_or_problems)
                    continue
                problems = img_or_problems
            raw = f.data["image"][n] if isinstance(f.data["image"][n], dict) else {}
            broken.append(Broken(f.path.name, raw_str(raw.get("alias")), raw_str(raw.get("name")), raw.get("demo") is True,
                                 tuple(problems)))
    texts = {f.path.name: f.text for f in files}
    images = _apply_rules(Matrix(root, platforms, engines, images, broken, grammar), texts)
    m = Matrix(root=root, platforms=platforms, engines=engines, images=images, broken=broken, grammar=grammar)
    if strict:
        m.require_valid()
    return m


def _apply_rules(m: Matrix, texts: dict[str, TomlText]) -> list[Image]:
    """The images that pass every rule; the others go to m.broken with their violations."""
    ctx = rules.Context.of(m)
    per_image: dict[int, list[Problem]] = {}
    first_of: dict[tuple[str, str], Image] = {}
    for img in m.images:
        out = per_image.setdefault(id(img), [])
        for v in rules.check_image(img, ctx):
            out.append(Problem(img.file, _line(texts[img.file], img, v.message), img.label(), v.message, v.fix, RULE, v.rule))
        for key, what in (("alias", img.alias), ("name", img.name)):
            other = first_of.setdefault((key, what), img)
            if other is not img:  # both are ambiguous now: neither is usable by that key
                for a, b in ((img, other), (other, img)):
                    per_image[id(a)].append(Problem(
                        a.file, _line(texts[a.file], a, f"field {key}"), a.label(),
                        f"field {key}: {what!r} is used twice (also by the image in engines/{b.file}:"
                        f"{texts[b.file].line_of(['image', b.index])})", f"give each image a {key} of its own",
                        UNIQUE, f"unique-{key}"))
    keep = []
    for img in m.images:
        if per_image[id(img)]:
            m.broken.append(Broken(img.file, img.alias, img.name, img.d.demo, tuple(per_image[id(img)])))
        else:
            keep.append(img)
    return keep


def _line(text: TomlText, img: Image, message: str) -> int:
    """The line of the field a rule's message names ("field python: …"), else the image's table."""
    fieldname = message.split(":", 1)[0].removeprefix("field ").split(".")[0] if message.startswith("field ") else ""
    return text.line_of(["image", img.index] + ([fieldname] if fieldname else []))


def _resolve(path: Path, text: TomlText, index: int, d: ImageDef, engine: EngineDef, p: PlatformsFile,
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
                raise fail("accelerator", f"stack {stack_id} takes packages from apt repository {rid!r}, which "
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


def json_schema() -> dict[str, Any]:
    """JSON schemas of both file kinds, for editors (Taplo / Even Better TOML)."""
    return {
        "platforms.toml": PlatformsFile.model_json_schema(),
        "engine.toml": EngineFile.model_json_schema(),
    }
