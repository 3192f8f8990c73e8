"""What engines/ pins by itself, read without resolving anything: the part of engines/ a definition
depends on (`matrix_entry`), the inputs it declares (files, vendor wheels, manual files, run
steps) and the base reference. `lock --check` needs only this, offline; `locker` resolves the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from enginefab.core import canonical
from enginefab.core.definition import FileEntry, Input
from enginefab.core.errors import LockError
from enginefab.engines.matrix import MANUAL_PINS, Image, Matrix
from enginefab.engines.model import AptRepo, GitSource, ManualFile, ManualPinsFile, OciRef, RunStep, UrlFile, VendorWheel
from enginefab.engines.problems import MatrixProblems, Problem, from_validation, read_toml
from enginefab.lock.asof import as_of


# -- the part of engines/ a definition depends on -----------------------------------------


def manual_pins(root: Path) -> dict[str, dict[str, Any]]:
    """User-recorded hashes of manual files upstream published none for (engines/manual-pins.toml),
    validated like the rest of engines/ (each as written: no defaults added)."""
    p = root / "engines" / MANUAL_PINS
    if not p.is_file():
        return {}
    text, data = read_toml(p)
    if isinstance(data, Problem):
        raise MatrixProblems([data])
    try:
        pins = ManualPinsFile.model_validate(data)
    except ValidationError as e:
        raise MatrixProblems(from_validation(MANUAL_PINS, text, e, data, ManualPinsFile)) from None
    return {name: pin.model_dump(mode="json", exclude_unset=True) for name, pin in pins.files.items()}


def matrix_entry(img: Image, m: Matrix) -> dict[str, Any]:
    """Everything from engines/ that the definition of `img` is a function of (for lock --check)."""
    p = m.platforms
    fw = m.engines.get(img.framework) if img.framework != img.engine.name else None
    apt = p.apt.get(img.os.apt) if img.os.apt else None
    pins = manual_pins(m.root)
    names = [f.name for f in manual_files(img)]
    entry = {
        # an image without git inputs (or as_of) keeps the entry it had before they existed (the demos' locks)
        "image": img.d.model_dump(mode="json", exclude=(set() if img.d.git else {"git"}) | _unset(img.d, "as_of", "from_")
                                  | {f for f, default in _KIND_FIELDS.items() if getattr(img.d, f) == default}),
        "engine": img.engine.model_dump(mode="json", exclude={"releases", *_NAMING})
        | {"release": img.release.model_dump(mode="json", exclude=_unset(img.release, "published"))},
        "framework": fw.model_dump(mode="json", exclude={"releases", *_NAMING}) if fw else None,
        "os": {"id": img.os_id, **img.os.model_dump(mode="json")},
        "apt": apt.model_dump(mode="json") if apt else None,
        "stack": {"id": img.stack_id, **_stack_dump(img)} if img.stack else None,
        "python": {"id": img.python_id, **img.python.model_dump(mode="json")},
        "conventions": img.conventions.model_dump(mode="json"),
        "source_date_epoch": p.source_date_epoch,
        "pypi": p.pypi.model_dump(mode="json", exclude={"release_grace_days"}),
        "compression": p.compression.model_dump(mode="json"),
        "manual_pins": {n: pins[n] for n in sorted(names) if n in pins},
    }
    repos = stack_repos(img, m)
    if repos:
        entry["stack_apt"] = {rid: r.model_dump(mode="json") for rid, r in repos}
    when = as_of(img, p.pypi)
    if when.recorded:  # else the instant used is pypi.exclude_newer, recorded above
        entry["as_of"] = when.record() | {"release_grace_days": p.pypi.release_grace_days}
    return _without_unset_step_fields(canonical_copy(entry))


#: RunStep fields added with source builds: left out of the entry while unset, so that the
#: definitions of images whose steps use none of them do not change
_STEP_FIELDS = ("tools", "unreproducible")


def _without_unset_step_fields(obj: Any) -> Any:
    """`obj` with every run step's unset `_STEP_FIELDS` left out (the image's, stack's, Python's)."""
    if isinstance(obj, dict):
        for key, val in obj.items():
            if key == "run" and isinstance(val, list):
                for step in val:
                    for f in _STEP_FIELDS:
                        if isinstance(step, dict) and step.get(f, 0) is None:
                            del step[f]
            else:
                _without_unset_step_fields(val)
    return obj


#: how image names spell an engine: read by the name grammar, no part of any definition
_NAMING = ("spellings", "abbreviation")


#: image fields added with the image kinds, left out at their defaults (the demos' locks stay as they are)
_KIND_FIELDS: dict[str, Any] = {"kind": "training", "cmd": None, "ports": [], "add": []}
#: the largest text file `add` copies into an image from the project
MAX_ADDED = 1 << 20


def added_files(img: Image, root: Path) -> list[FileEntry]:
    """The image's `add` entries as file entries, each file's text read from engines/ (a regular
    file inside it, UTF-8, at most 1 MiB), with the directories above each path (0755, root)."""
    engines = (root / "engines").resolve()
    out: dict[str, FileEntry] = {}
    for a in img.d.add:
        parts = a.path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i])
            out.setdefault(d, FileEntry(path=d, type="dir", mode=0o755))
        if a.link is not None:
            out[a.path] = FileEntry(path=a.path, type="symlink", target=a.link, mode=0o777)
            continue
        out[a.path] = FileEntry(path=a.path, content=_project_text(img, engines, a.source or ""), mode=a.mode)
    return [out[p] for p in sorted(out)]


def _project_text(img: Image, engines: Path, source: str) -> str:
    where = f"engines/{img.file}: image {img.alias}: add {source}"
    host = (engines / source).resolve()
    if engines not in host.parents or not host.is_file():
        raise LockError(f"{where}: engines/{source} is not a file inside engines/", image=img.alias,
                        fix=f"write the file at engines/{source}, or correct `source`")
    data = host.read_bytes()[: MAX_ADDED + 1]
    if len(data) > MAX_ADDED:
        raise LockError(f"{where}: more than {MAX_ADDED} bytes", image=img.alias,
                        fix="add large files by URL (`files`, with their sha256) or in a run step")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise LockError(f"{where}: not UTF-8 text", image=img.alias,
                        fix="add binary files by URL (`files`, with their sha256)") from None


def _unset(model: Any, *fields: str) -> set[str]:
    """Fields added after definitions were first locked, left out while unset, so that those
    definitions (the demos') stay byte-identical."""
    return {f for f in fields if getattr(model, f) is None}


#: StackDef fields added with apt-made stacks: left out of the entry while unset, so that the
#: definitions of stacks that use none of them (CANN) do not change
_STACK_APT_FIELDS = {"apt", "packages", "published", "published_source", "notes"}


def _stack_dump(img: Image) -> dict[str, Any]:
    assert img.stack is not None
    unset = {k for k in _STACK_APT_FIELDS if not getattr(img.stack, k)} | _unset(img.stack, "driver", "service_user")
    return img.stack.model_dump(mode="json", exclude=unset)


def stack_repos(img: Image, m: Matrix) -> list[tuple[str, AptRepo]]:
    """The apt repositories an image's stack packages resolve against: the stack's, then the OS's."""
    if not img.stack or not img.stack.packages:
        return []
    ids = list(img.stack.apt) + ([img.os.apt] if img.os.apt and img.os.apt not in img.stack.apt else [])
    return [(i, m.platforms.apt[i]) for i in ids]


def canonical_copy(obj: Any) -> Any:
    return json.loads(canonical.dumps(obj))


def manual_files(img: Image) -> list[ManualFile]:
    out = list(img.d.manual)
    if img.stack:
        out += img.stack.manual
    if img.os.source == "manual" and img.arch in img.os.archive:
        out.append(img.os.archive[img.arch])
    return out


# -- inputs of each kind ------------------------------------------------------------------


def run_input(step: RunStep) -> Input:
    body = canonical.dumps({"script": step.script, "env": step.env})
    return Input(kind="run", name=step.name, version="1", url=None, sha256=canonical.sha256_hex(body),
                 size=len(step.script.encode()), script=step.script, env=dict(step.env) or None)


def url_input(f: UrlFile) -> Input:
    return Input(kind="url", name=f.name, version=f.version, url=f.url, sha256=f.sha256, size=f.size,
                 filename=f.url.rsplit("/", 1)[-1], dest=f.dest or None, unpack=f.unpack,
                 strip_components=f.strip_components, source=f.source, trust=f.trust)


def git_input(g: GitSource) -> Input:
    """A source tree: the archive enginefab makes of it is what run steps (or `dest`) get."""
    return Input(kind="git", name=g.name, version=g.version, url=g.url, sha256=g.sha256, size=g.size,
                 filename=g.filename, dest=g.dest or None, unpack=bool(g.dest), commit=g.commit, tree=g.tree,
                 prefix=g.prefix, source=g.source, trust=g.trust)


def manual_input(f: ManualFile, pins: dict[str, dict[str, Any]]) -> Input:
    sha, size = f.sha256, f.size
    if sha is None and f.name in pins:
        sha, size = pins[f.name]["sha256"], int(pins[f.name].get("size", 0))
    return Input(kind="manual", name=f.name, version=f.version, url=None, sha256=sha, size=size, filename=f.name,
                 dest=f.dest or None, unpack=f.unpack, where=f.where, source=f.source, trust=f.trust)


def vendor_wheel_input(w: VendorWheel) -> Input:
    return Input(kind="wheel", name=w.name, version=w.version, url=w.url, sha256=w.sha256, size=w.size,
                 filename=w.url.rsplit("/", 1)[-1], source=w.source, trust=w.trust)


def base_ref(img: Image) -> OciRef | None:
    """The base image: the image's own, else its CUDA stack's for its OS, else the OS's (a
    derived image has none: its parent's layers are its base)."""
    if img.derived:
        return None
    ref = img.d.base or (img.stack.base.get(img.os_id) if img.stack and not img.stack.bundled else None)
    if ref is None and img.os.source == "oci":
        ref = img.os.base.get(img.arch)  # type: ignore[arg-type]
    return ref


def declared_inputs(img: Image, m: Matrix) -> list[Input]:
    """The inputs engines/ pins by itself (no resolution): files, vendor wheels, manual files,
    run steps. `lock --check` compares them with build/ offline."""
    pins = manual_pins(m.root)
    out: list[Input] = []
    platform = not img.derived  # a derived image's OS, stack and Python are its parent's layers
    if platform and img.os.source == "manual" and img.arch in img.os.archive:
        out.append(manual_input(img.os.archive[img.arch], pins))  # type: ignore[index]
    if platform and img.stack:
        out += [manual_input(f, pins) for f in img.stack.manual] + [run_input(r) for r in img.stack.run]
    if platform and img.python.source == "url":
        out += [url_input(f) for f in img.python.files] + [run_input(r) for r in img.python.run]
    out += [vendor_wheel_input(w) for w in img.d.wheels]
    out += [url_input(f) for f in img.d.files] + [git_input(g) for g in img.d.git]
    out += [manual_input(f, pins) for f in img.d.manual] + [run_input(r) for r in img.d.run]
    return out
