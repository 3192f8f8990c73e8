"""The files of engines/ as read: platforms.toml, and each engine file's [engine] and images
validated one by one, so a broken image or file leaves the others usable (problems.py says why).

What is read is (text, tables): the text gives problems their lines; tables handed in directly
(`Matrix.from_data`) have no text, and their problems no line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from enginefab.engines.locate import TomlText
from enginefab.engines.model import EngineDef, EngineFile, ImageDef, PlatformsFile
from enginefab.engines.problems import KEYS, Broken, MatrixProblems, Problem, from_validation, read_toml

PLATFORMS = "platforms.toml"
#: hashes of manual inputs recorded by `enginefab lock --add-file` (not an engine file)
MANUAL_PINS = "manual-pins.toml"

class NoText(TomlText):
    """Tables handed in without their text: no line is known (problems name the file alone)."""

    def __init__(self) -> None:
        super().__init__("")

    def line_of(self, loc) -> None:  # type: ignore[override]
        return None


#: one file as read: its text (for lines) and its tables, or the problem that stops reading it
Read = tuple[TomlText, dict[str, Any] | Problem]


def read_engines_dir(edir: Path) -> dict[str, Read]:
    """platforms.toml and every engine file of `edir`, by file name (platforms.toml first)."""
    out = {PLATFORMS: read_toml(edir / PLATFORMS)}
    for path in sorted(edir.glob("*.toml")):
        if path.name not in (PLATFORMS, MANUAL_PINS):
            out[path.name] = read_toml(path)
    return out


def platforms_file(name: str, read: Read) -> PlatformsFile:
    """platforms.toml, which every image depends on: any problem in it stops the load."""
    text, data = read
    if isinstance(data, Problem):
        raise MatrixProblems([data])
    try:
        return PlatformsFile.model_validate(data)
    except ValidationError as e:
        raise MatrixProblems(from_validation(name, text, e, data, PlatformsFile)) from None


@dataclass
class EngineFileRead:
    """One engine file as read: its engine (None when the [engine] table is broken) and images."""

    path: Path
    text: TomlText
    data: dict[str, Any]
    engine: EngineDef | None
    images: list[tuple[int, ImageDef | None, list[Problem]]]


def engine_file(name: str, read: Read, broken: list[Broken]) -> EngineFileRead | None:
    """The file's engine and images; what cannot be read goes to `broken` (None: nothing is usable)."""
    path = Path(name)
    text, data = read
    if isinstance(data, Problem):
        broken.append(Broken(path.name, None, None, None, (data,)))
        return None
    raw_images = data.get("image", [])
    try:  # the file minus its images: [engine] and unknown top-level keys
        head = EngineFile.model_validate({k: v for k, v in data.items() if k != "image"} | {"image": []})
    except ValidationError as e:
        broken.append(Broken(path.name, None, None, None, tuple(from_validation(path.name, text, e, data, EngineFile))))
        return EngineFileRead(path, text, data, None, [])  # its engine's names still read the other families' names
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
    return EngineFileRead(path, text, data, head.engine, images)
