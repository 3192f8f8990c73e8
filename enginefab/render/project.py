"""`enginefab init`: a small project of a team's own, separate from this checkout — engines/ with
one derived image that starts from a preset by registry reference and digest, the platforms that
image needs, build/, a README and a .gitignore — in which the same commands (lock, build, check,
push) work.

What the project holds is planned here from the matrix (pure: file path → bytes), then written
only into an empty directory (or with `force`). The platforms and the engine table are the
preset's own, as validated (its OS, apt repository, accelerator stack, Python runtime, the
conventions); the checks files the preset's engine uses are copied, so `check` runs the same tests.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from enginefab.core.errors import EnginefabError
from enginefab.core.fsutil import write_atomic
from enginefab.engines.matrix import Image, Matrix
from enginefab.engines.model import PlatformsFile

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
#: the checks files a project copies (engines/checks/): the engine's own are added
CHECKS = ("common.yaml", "compat.toml", "known-broken.toml", "bases.toml")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    """A TOML value (one line: strings are basic strings with JSON's escapes, which TOML reads)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise EnginefabError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _table(header: str, d: dict[str, Any]) -> str:
    return f"[{header}]\n" + _lines(d)


def _lines(d: dict[str, Any]) -> str:
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in d.items() if v is not None)


def verified(text: str, want: dict[str, Any]) -> str:
    """`text`, once it reads back as `want`: what is written is what was meant."""
    if _drop_none(tomllib.loads(text)) != _drop_none(want):
        raise EnginefabError("the project's TOML does not read back as written (a value TOML cannot hold)",
                             fix="report it: enginefab init wrote a value it cannot round-trip")
    return text


def _drop_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_none(x) for x in v]
    return v


def _dump(model) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True, by_alias=True)


def platforms_text(m: Matrix, img: Image) -> str:
    """platforms.toml of the project: what `img` needs of this matrix's platforms, nothing else."""
    p: PlatformsFile = m.platforms
    want: dict[str, Any] = {"source_date_epoch": p.source_date_epoch, "pypi": _dump(p.pypi),
                            "compression": p.compression.model_dump(mode="json"),
                            "conventions": p.conventions.model_dump(mode="json")}
    repos = [img.os.apt] if img.os.apt else []
    if img.stack:
        repos += [r for r in img.stack.apt if r not in repos]
    want["apt"] = {r: _dump(p.apt[r]) for r in repos}
    want["os"] = {img.os_id: _dump(img.os)}
    if img.stack:
        want["stack"] = {img.stack_id: _dump(img.stack)}
    want["python"] = {img.python_id: _dump(img.python)}
    text = (f"# The platforms of {img.alias} (from the enginefab matrix it was locked in): what this project's\n"
            "# images build on. Every pin says where it was published (`source`).\n"
            + _lines({"source_date_epoch": p.source_date_epoch}))
    for key in ("pypi", "compression", "conventions"):
        text += "\n" + _table(key, want[key])
    for group in ("apt", "os", "stack", "python"):
        for k, d in want.get(group, {}).items():
            text += "\n" + _table(f"{group}.{_key(k)}", d)
    return verified(text, want)


def engine_text(img: Image, alias: str, reference: str) -> str:
    """engines/<family>.toml: the preset's engine (its one release) and the derived image."""
    engine = _dump(img.engine)
    engine.pop("releases", None)
    release = _dump(img.release)
    d = img.d
    image = {"alias": alias, "name": alias, "from": reference, "engine_version": d.engine_version,
             "framework": d.framework, "framework_version": d.framework_version, "python": d.python, "os": d.os,
             "accelerator": d.accelerator, "arch": d.arch,
             "description": f"{img.d.description or img.name}, with what our team adds"}
    text = (f"# {img.engine.display}: the engine of the preset this project derives from ({img.alias}).\n"
            + _table("engine", engine) + "\n[[engine.releases]]\n" + _lines(release)
            + "\n# Our image: the preset's layers byte for byte (by its registry reference and digest) and its\n"
            "# config (user, working directory, environment), then what we add. Lock it with `enginefab lock`.\n"
            "[[image]]\n" + _lines(image)
            + "requirements = []   # Python packages, e.g. [\"six==1.17.0\"]: the preset's distributions are constraints\n"
            "# debs = [\"curl\"]     # Debian packages over the preset's\n"
            "# env = { MY_SETTING = \"1\" }   # added to the preset's environment\n"
            "# [[image.files]] and [[image.run]]: files and build steps, as in the enginefab matrix (docs/matrix.md)\n")
    want = {"engine": engine | {"releases": [release]}, "image": [image | {"requirements": []}]}
    return verified(text, want)


README = """# {alias}

Our own engine image, built with [enginefab](https://github.com/) on top of the preset
`{preset}`, which it refers to by registry reference and digest:

    {reference}

Its lower layers are the preset's, byte for byte (a registry stores them once), and it inherits the
preset's config (the ModelArts user `ma-user`, uid 1000, its home and working directory, the
environment). What we add is in `engines/{family}.toml` (requirements, Debian packages, files,
environment, run steps).

```sh
enginefab lock {alias}            # pin every input (and the preset's digest) → build/{alias}.json; commit it
enginefab lock --check            # offline: is build/ what engines/ says? (CI runs this)
enginefab build {alias} --out out # → content-addressed store + OCI layout; prints the digest
enginefab check {alias}           # definition, static, runtime and accelerator checks
enginefab push {alias} --to REGISTRY/PREFIX
```

A new digest of the preset (a re-released preset) goes into `from` in `engines/{family}.toml`;
`enginefab lock --check` says the image is stale until it is locked again.
"""

GITIGNORE = "out/\n.venv/\n"


def plan(m: Matrix, preset: Image, reference: str, alias: str, checks: Path) -> dict[str, bytes]:
    """The project's files (relative path → bytes). `checks`: this matrix's engines/checks/."""
    family = preset.file.removesuffix(".toml")
    files = {
        "engines/platforms.toml": platforms_text(m, preset).encode(),
        f"engines/{preset.file}": engine_text(preset, alias, reference).encode(),
        "build/.gitkeep": b"",
        "README.md": README.format(alias=alias, preset=preset.alias, reference=reference, family=family).encode(),
        ".gitignore": GITIGNORE.encode(),
    }
    for name in (*CHECKS, f"{preset.engine.name}.yaml"):
        if (checks / name).is_file():
            files[f"engines/checks/{name}"] = (checks / name).read_bytes()
    return files


def write(target: Path, files: dict[str, bytes], *, force: bool = False) -> list[str]:
    """Write the project into `target` (created); refused when it holds anything, unless `force`."""
    if target.exists() and not target.is_dir():
        raise EnginefabError(f"{target} is a file, not a directory", fix="name a new or empty directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise EnginefabError(f"{target} is not empty", fix="name a new or empty directory, or pass --force to "
                             "write the project's files over what is there")
    for rel, data in files.items():
        write_atomic(target / rel, data)
    return sorted(files)
