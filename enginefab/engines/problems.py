"""What is wrong in engines/, said so that a user can fix it: every problem, root cause first.

A problem names its file and 1-based line, the image by alias (never ``image.3``), the field, and
a fix only when the fix is right for the case. Pydantic's errors are translated here: an unknown
key gets "did you mean" from the fields the table allows, and a required field that a misspelt
key was meant to set is not reported a second time (``suit =`` is the unknown key ``suit``, not
"suite: Field required").
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from enginefab.core.errors import MatrixError
from enginefab.core.fields import rule_of, show
from enginefab.engines.locate import TomlText, did_you_mean, similar, syntax_position

#: the OCI and Debian names of the arches, which engines/ writes as the kernel does
_ARCH_OF_OCI = {"arm64": "aarch64", "amd64": "x86_64"}

#: rank of a problem: what to fix first (a syntax error hides everything after it)
SYNTAX, KEYS, REFERENCE, RULE, UNIQUE = range(5)


@dataclass(frozen=True)
class Problem:
    file: str  # engines/<file>
    line: int | None
    image: str | None  # "alias (name)" or None for a file-level problem
    message: str
    fix: str = ""
    rank: int = RULE
    rule: str = ""

    @property
    def where(self) -> str:
        return f"engines/{self.file}" + (f":{self.line}" if self.line else "")

    def render(self) -> str:
        who = f"image {self.image}: " if self.image else ""
        return f"{self.where}: {who}{self.message}" + (f"\n      fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return {"file": f"engines/{self.file}", "line": self.line, "image": self.image, "message": self.message,
                "fix": self.fix or None, "rule": self.rule or None}


def ordered(problems: Sequence[Problem]) -> list[Problem]:
    """Root causes first (syntax, keys, references, rules, duplicates), then file and line order."""
    return sorted(problems, key=lambda p: (p.rank, p.file, p.line or 0))


def summary(problems: Sequence[Problem]) -> str:
    ps = ordered(problems)
    if len(ps) == 1:
        return ps[0].render()
    return f"{len(ps)} problems in engines/ (the first is the root cause to fix first):\n" + "\n".join(
        f"  {n}. {p.render()}" for n, p in enumerate(ps, 1))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Broken:
    """An image (or, with no alias, a whole file) that could not be loaded, and why."""

    file: str
    alias: str | None
    name: str | None
    demo: bool | None  # None: not known (the file could not be read)
    problems: tuple[Problem, ...]

    def reason(self) -> str:
        first = ordered(self.problems)[0]
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"{first.where}: {first.message}{more}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": f"engines/{self.file}", "alias": self.alias, "name": self.name, "valid": False,
                "reason": self.reason(), "problems": [p.as_dict() for p in ordered(self.problems)]}


class MatrixProblems(MatrixError):
    """Problems of engines/, every one with its place and fix (the message lists them all)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = ordered(problems)
        first = self.problems[0]
        super().__init__(summary(self.problems), image=first.image, fix=first.fix or None)

    def __str__(self) -> str:  # the summary names images, places and fixes itself
        return self.message

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"problems": [p.as_dict() for p in self.problems]}


def _problem_of_syntax(file: str, e: Exception) -> Problem:
    pos = syntax_position(str(e))
    msg = str(e).split(" (at line")[0]
    col = f", column {pos[1]}" if pos else ""
    return Problem(file, pos[0] if pos else None, None, f"not valid TOML{col}: {msg}",
                   "correct the syntax at that line (strings in quotes, one key = value per line)", SYNTAX)


def read_toml(path: Path, file: str | None = None) -> tuple[TomlText, dict[str, Any] | Problem]:
    """The text of an engines/ file (for positions) and its tables, or the problem that stops
    reading it. `file`: its path under engines/ (default: its name)."""
    file = file or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return TomlText(""), Problem(file, None, None, f"cannot be read: {e}", "make it a UTF-8 text file", SYNTAX)
    try:
        return TomlText(text), tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return TomlText(text), _problem_of_syntax(file, e)
    except RecursionError:
        return TomlText(text), Problem(file, None, None, "nested too deeply to read", f"flatten engines/{file}", SYNTAX)


def raw_naming(data: dict[str, Any]) -> tuple[str, list[str], str | None] | None:
    """How a broken file's [engine] names its engine, when it says so plainly (for other families' names)."""
    e = data.get("engine")
    if not isinstance(e, dict) or not isinstance(e.get("name"), str):
        return None
    spellings = [x for x in e.get("spellings", []) if isinstance(x, str)] if isinstance(e.get("spellings"), list) else []
    return e["name"], spellings, raw_str(e.get("abbreviation"))


def raw_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# -- pydantic errors -------------------------------------------------------------------------


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation holds (Model, list[Model], dict[str, Model], Model | None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            out += _inner_models(arg)
    return out


def _is_collection(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return True
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return any(_is_collection(a) for a in typing.get_args(annotation))
    return False


def model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validates the table at `loc` (keys and list indexes under `model`)."""
    current = model
    i = 0
    while i < len(loc):
        key = loc[i]
        if not isinstance(key, str) or key not in current.model_fields:
            return None
        annotation = current.model_fields[key].annotation
        inner = _inner_models(annotation)
        if not inner:
            return None
        current = inner[0]
        i += 1
        if i < len(loc) and _is_collection(annotation):
            i += 1  # the list index or dict key that picks one table of the collection
    return current


def _label(loc: Sequence[str | int], data: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(the image it concerns as "alias (name)", the location in words) for a pydantic loc."""
    if len(loc) >= 2 and loc[0] == "image" and isinstance(loc[1], int):
        raw = data.get("image", [])
        item = raw[loc[1]] if isinstance(raw, list) and loc[1] < len(raw) and isinstance(raw[loc[1]], dict) else {}
        alias, name = item.get("alias"), item.get("name")
        n = f"the {ordinal(loc[1] + 1)} [[image]]"
        alias, name = (v if isinstance(v, str) and len(v) <= 80 else (show(v, 80) if v else None) for v in (alias, name))
        who = f"{alias} ({name})" if alias and name else (str(alias or name) if alias or name else n)
        if alias or name:
            who += f", {n}"
        return who, _words(loc[2:])
    return None, _words(loc)


def _words(loc: Sequence[str | int]) -> list[str]:
    """["files", 0, "sha256"] → ["files[1].sha256"]: indexes 1-based, as a user counts them."""
    out = ""
    for part in loc:
        key = part if isinstance(part, int) or re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'  # TOML quoting
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{key}" if out else str(key))
    return [out] if out else []


def from_validation(file: str, text: TomlText, e: ValidationError, data: dict[str, Any], model: type[BaseModel],
                    prefix: Sequence[str | int] = ()) -> list[Problem]:
    """Every error of one validation, as problems with their line; unknown keys get "did you mean"."""
    errors = e.errors()
    unknown = {(tuple(prefix) + tuple(er["loc"][:-1]), str(er["loc"][-1])) for er in errors
               if er["type"] == "extra_forbidden"}
    out: list[Problem] = []
    for er in errors:
        loc = tuple(prefix) + tuple(er["loc"])
        where, words = _label(loc, data)
        field = words[0] if words else "(file)"
        table = model_at(model, loc[:-1]) if loc else None
        allowed = list(table.model_fields) if table else []
        if er["type"] == "extra_forbidden":
            key = str(loc[-1])
            hint = did_you_mean(key, allowed)
            msg = f"unknown key {show(key)}" + (f" ({hint})" if hint else "")
            fix = f"rename it to {similar(key, allowed)[0]!r}" if hint else (
                f"remove it; this table allows {', '.join(allowed)}" if allowed else "remove it")
            out.append(Problem(file, text.line_of(loc), where, f"field {field}: {msg}", fix, KEYS))
        elif er["type"] == "missing":
            key = str(loc[-1])
            if any(p == loc[:-1] and key in similar(k, [key]) for p, k in unknown):
                continue  # the misspelt key above was meant to set it
            out.append(Problem(file, text.line_of(loc[:-1]), where, f"field {field}: required, but not set",
                               f"add {key} = … to this table", KEYS))
        elif er["type"] == "literal_error" and isinstance(er.get("input"), str):
            choices = re.findall(r"'([^']*)'", str(er.get("ctx", {}).get("expected", "")))
            got = er["input"]
            meant = _ARCH_OF_OCI.get(got) or (similar(got, choices) or [None])[0]
            out.append(Problem(file, text.line_of(loc), where, f"field {field}: {got!r} is not one of "
                               f"{', '.join(choices)}" + (f" (did you mean {meant!r}?)" if meant else ""),
                               f"write {meant!r}" if meant else f"use one of {', '.join(choices)}", KEYS))
        else:
            msg = rule_of(er)  # our validators' own words; a number out of range says the range
            out.append(Problem(file, text.line_of(loc), where, f"field {field}: {msg}",
                               f"correct {field} in engines/{file} (the rule: {msg.split(': ', 1)[-1]})", KEYS))
    return out
