"""Load engines/*.toml into a validated Matrix of Images.

Every problem is found, not only the first: a TOML syntax error, an unknown key, a dangling
reference, a broken compatibility rule — each named by file:line, image alias, field and rule
(problems.py). A strict load (the default) raises them all, root cause first. A lenient load
(the CLI's) keeps them with the image or file they belong to: the images that are fine stay
usable, and a command that touches a broken one fails with its problems (``Matrix.get``,
``Matrix.select``), so one bad file does not stop `list` or `show` of the others.

``load(root)`` reads engines/ (files.py); ``Matrix.from_data(root, tables)`` takes the parsed
tables instead (tests, tools), and ``Matrix.validate()`` lists every problem as a Violation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from enginefab.core.errors import MatrixError
from enginefab.engines import derived, rules
from enginefab.engines.files import (
    MANUAL_PINS,
    PLATFORMS,
    NoText,
    Read,
    engine_file,
    platforms_file,
    read_engines_dir,
)
from enginefab.engines.image import Image
from enginefab.engines.locate import TomlText, similar
from enginefab.engines.model import EngineDef, EngineFile, PlatformsFile
from enginefab.engines.names import Grammar, NameError_
from enginefab.engines.problems import (
    KEYS,
    REFERENCE,
    RULE,
    SYNTAX,
    UNIQUE,
    Broken,
    MatrixProblems,
    Problem,
    ordered,
    raw_naming,
    raw_str,
)
from enginefab.engines.references import resolve

__all__ = ["MANUAL_PINS", "PLATFORMS", "Image", "Matrix", "json_schema", "load"]


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
                if not img.derived and img.parsed_name == wanted:
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

    @classmethod
    def from_data(cls, root: Path, tables: Mapping[str, dict[str, Any]], *, strict: bool = True) -> "Matrix":
        """The matrix of already-parsed engines/ tables (file name → its TOML tables, platforms.toml
        among them), as `load` makes it of the files; problems have no line (there is no text).
        `root` still holds engines/checks/ (the compatibility facts) and build/."""
        if PLATFORMS not in tables:
            raise MatrixError(f"no {PLATFORMS} among the tables given", fix=f"pass the tables of engines/{PLATFORMS}")
        reads: dict[str, Read] = {PLATFORMS: (NoText(), tables[PLATFORMS])}
        reads |= {name: (NoText(), data) for name, data in sorted(tables.items())
                  if name not in (PLATFORMS, MANUAL_PINS)}
        return _build(root, reads, strict=strict)

    def validate(self) -> list[rules.Violation]:
        """Every problem of the matrix (references, rules, duplicates, unreadable files) as a
        Violation, root cause first; [] when every image is valid."""
        source = {r.id: r.source for r in rules.RULES}
        return [rules.Violation(p.rule or _KIND[p.rank], p.image, p.message, p.fix, source.get(p.rule, p.where))
                for p in self.problems]


#: the rule id of a problem no rule found (a rule's problem carries its own id)
_KIND = {SYNTAX: "syntax", KEYS: "schema", REFERENCE: "reference", RULE: "rule", UNIQUE: "unique"}



def load(root: Path, *, strict: bool = True) -> Matrix:
    """Load and validate the matrix in ``root/engines``.

    strict: raise every problem (root cause first). Otherwise keep them in ``Matrix.broken``
    with the image or file they belong to; a problem in platforms.toml always raises."""
    edir = root / "engines"
    if not (edir / PLATFORMS).is_file():
        raise MatrixError(f"{edir / PLATFORMS} not found", fix="run enginefab from the project checkout")
    return _build(root, read_engines_dir(edir), strict=strict)


def _build(root: Path, reads: dict[str, Read], *, strict: bool) -> Matrix:
    """The matrix of the files as read: models, references, then the rules."""
    platforms = platforms_file(PLATFORMS, reads[PLATFORMS])
    broken: list[Broken] = []
    tables, derived_problems = derived.expand({k: v for k, v in reads.items() if k != PLATFORMS})
    reads = {k: (text, tables.get(k, data)) for k, (text, data) in reads.items()}
    files = [f for name, read in reads.items() if name != PLATFORMS
             if (f := engine_file(name, read, broken)) is not None]
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
            if (f.path.name, n) in derived_problems:  # a parent missing, a cycle: said once, as such
                d, problems = None, derived_problems[(f.path.name, n)]
            if d is not None:
                img_or_problems = resolve(f.path, f.text, n, d, f.engine, platforms, grammar, known)
                if isinstance(img_or_problems, Image):
                    images.append(img_or_problems)
                    continue
                problems = img_or_problems
            raw = f.data["image"][n] if isinstance(f.data["image"][n], dict) else {}
            broken.append(Broken(f.path.name, raw_str(raw.get("alias")), raw_str(raw.get("name")), raw.get("demo") is True,
                                 tuple(problems)))
    texts = {f.path.name: f.text for f in files}
    images = _apply_rules(Matrix(root, platforms, engines, images, broken, grammar), texts)
    images = _orphans(images, broken, texts)
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
                        f"field {key}: {what!r} is used twice (also by the image in {_place(texts, b)})",
                        f"give each image a {key} of its own",
                        UNIQUE, f"unique-{key}"))
    keep = []
    for img in m.images:
        if per_image[id(img)]:
            m.broken.append(Broken(img.file, img.alias, img.name, img.d.demo, tuple(per_image[id(img)])))
        else:
            keep.append(img)
    return keep


def _orphans(images: list[Image], broken: list[Broken], texts: dict[str, TomlText]) -> list[Image]:
    """Derived images whose matrix parent does not load (a rule broke it) go to `broken` too."""
    while True:
        keys = {k for i in images for k in (i.alias, i.name)}
        lost = [i for i in images if i.parent_alias is not None and i.parent_alias not in keys]
        if not lost:
            return images
        for i in lost:
            broken.append(Broken(i.file, i.alias, i.name, i.d.demo, (Problem(
                i.file, texts[i.file].line_of(["image", i.index, "from"]), i.label(),
                f"field from: the parent {i.parent_alias!r} does not load", f"fix the parent {i.parent_alias!r} first",
                REFERENCE, "from"),)))
        images = [i for i in images if i not in lost]


def _place(texts: dict[str, TomlText], img: Image) -> str:
    line = texts[img.file].line_of(["image", img.index])
    return f"engines/{img.file}" + (f":{line}" if line else "")


def _line(text: TomlText, img: Image, message: str) -> int | None:
    """The line of the field a rule's message names ("field python: …"), else the image's table."""
    fieldname = message.split(":", 1)[0].removeprefix("field ").split(".")[0] if message.startswith("field ") else ""
    return text.line_of(["image", img.index] + ([fieldname] if fieldname else []))


def json_schema() -> dict[str, Any]:
    """JSON schemas of both file kinds, for editors (Taplo / Even Better TOML)."""
    return {
        "platforms.toml": PlatformsFile.model_json_schema(),
        "engine.toml": EngineFile.model_json_schema(),
    }
