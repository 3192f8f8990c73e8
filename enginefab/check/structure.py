"""Per-engine checks as data: engines/checks/<engine>.yaml in container-structure-test's schema.

A suite is ``common.yaml`` (every image) plus the files of the image's engine and framework.
Sections follow container-structure-test v2 (``schemaVersion: 2.0.0``): ``commandTests``,
``fileExistenceTests``, ``fileContentTests``, ``metadataTest``. One extra section, ``enginefab``,
holds what that schema has no place for (read only by us; container-structure-test never sees
it): expressions for what the engine reports it was built for (``builtFor``), a snippet run in
the runtime probe after the engine is imported (``probe``), sonames an engine may leave
unresolved because they are optional (``optionalSonames``), libraries it loads with dlopen
(``dlopen``) and the accelerator tests (``accelerator``).

Patterns are regular expressions searched in the whole text, as container-structure-test
does (``(?m)`` makes ``^``/``$`` match at lines). Strings may use ``{{var}}`` placeholders,
filled per image (`variables`). We interpret the tests ourselves (files and metadata at the
static level, commands at the runtime level, in the sandbox); `cst.py` hands the file and
metadata tests to the real container-structure-test.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enginefab.assemble.rootfs import resolve_in
from enginefab.check import container
from enginefab.check.report import Result
from enginefab.core.definition import Definition
from enginefab.core.errors import CheckError

CHECKS = Path("engines") / "checks"
COMMON = "common.yaml"
_VAR = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EnvVar(_Model):
    key: str
    value: str
    isRegex: bool = False


class CommandTest(_Model):
    name: str
    command: str
    args: list[str] = Field(default_factory=list)
    envVars: list[EnvVar] = Field(default_factory=list)
    expectedOutput: list[str] = Field(default_factory=list)
    excludedOutput: list[str] = Field(default_factory=list)
    expectedError: list[str] = Field(default_factory=list)
    excludedError: list[str] = Field(default_factory=list)
    exitCode: int = 0


class FileExistenceTest(_Model):
    name: str
    path: str
    shouldExist: bool = True
    permissions: str | None = None
    uid: int | None = None
    gid: int | None = None
    isExecutableBy: str | None = None


class FileContentTest(_Model):
    name: str
    path: str
    expectedContents: list[str] = Field(default_factory=list)
    excludedContents: list[str] = Field(default_factory=list)


class MetadataTest(_Model):
    envVars: list[EnvVar] = Field(default_factory=list)
    labels: list[EnvVar] = Field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None


class OptionalSoname(_Model):
    soname: str
    reason: str


class Evidence(_Model):
    path: str
    contains: str


class Dlopen(_Model):
    """Libraries an engine loads with dlopen (so no DT_NEEDED names them), for some of its releases."""

    versions: str = Field(description="engine releases this applies to (version specifier)")
    engine: str = Field(default="", description="set from the file name: whose releases `versions` means")
    sonames: list[str]
    evidence: Evidence | None = Field(default=None, description="a file and a string in it proving the loader is there")
    source: str = ""


class Extension(_Model):
    """Ours, not container-structure-test's."""

    builtFor: dict[str, str] = Field(default_factory=dict, description="cuda/cudnn → Python expression after import")
    probe: str = ""
    optionalSonames: list[OptionalSoname] = Field(default_factory=list)
    dlopen: list[Dlopen] = Field(default_factory=list)
    #: accelerator tests: "cuda"/"cann" → {"device"|"op"|"collective": Python code}
    accelerator: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: command tests only for images whose accelerator stack provides a library (soname → tests):
    #: Horovod builds its NCCL operations only where the stack has NCCL (libnccl.so.2)
    stackCommandTests: dict[str, list[CommandTest]] = Field(default_factory=dict)


class Suite(_Model):
    schemaVersion: str = "2.0.0"
    commandTests: list[CommandTest] = Field(default_factory=list)
    fileExistenceTests: list[FileExistenceTest] = Field(default_factory=list)
    fileContentTests: list[FileContentTest] = Field(default_factory=list)
    metadataTest: MetadataTest | None = None
    enginefab: Extension = Field(default_factory=Extension)
    #: each engine's own `enginefab` section (file stem → section): an engine's runtime probe runs
    #: its own builtFor and probe only (Horovod's probe imports horovod, not the torch of pytorch.yaml)
    engineSections: dict[str, Extension] = Field(default_factory=dict, exclude=True)
    #: which files made this suite, with their sha256 (recorded in the report)
    sources: dict[str, str] = Field(default_factory=dict, exclude=True)


def variables(defn: Definition) -> dict[str, str]:
    uid, _, gid = defn.config.user.partition(":")
    im = defn.image
    cuda = im.accelerator_version if im.accelerator == "cuda" and im.accelerator_version else None
    return {
        "alias": im.alias, "name": im.name, "arch": im.arch, "engine": im.engine,
        "engine_version": im.engine_version, "framework": im.framework, "framework_version": im.framework_version,
        "accelerator": im.accelerator, "accelerator_version": im.accelerator_version or "",
        "cuda": cuda or "None", "cuda_repr": repr(cuda) if cuda else "None",
        "framework_import": {"pytorch": "torch"}.get(im.framework, im.framework),
        "python": defn.python.interpreter, "python_version": defn.python.version,
        "site_packages": defn.python.site_packages, "scripts": defn.python.scripts,
        "home": defn.config.workdir, "uid": uid, "gid": gid or "0",
    }


def _render(obj: Any, vars_: dict[str, str], where: str) -> Any:
    if isinstance(obj, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in vars_:
                raise CheckError(f"{where}: unknown placeholder {{{{{m.group(1)}}}}}",
                                 fix=f"use one of {', '.join(sorted(vars_))}")
            return vars_[m.group(1)]
        return _VAR.sub(sub, obj)
    if isinstance(obj, list):
        return [_render(x, vars_, where) for x in obj]
    if isinstance(obj, dict):
        return {k: _render(v, vars_, where) for k, v in obj.items()}
    return obj


def suite_files(root: Path, engines: list[str]) -> list[Path]:
    d = root / CHECKS
    names = [COMMON] + [f"{e}.yaml" for e in dict.fromkeys(engines)]
    return [d / n for n in names if (d / n).is_file()]


def sources(root: Path, img) -> dict[str, str]:
    """The check data an image's report was made with: path → sha256 (the report records them)."""
    d = root / CHECKS
    names = [p.name for p in suite_files(root, [img.engine.name, img.framework])]
    names += [n for n in ("compat.toml", "known-broken.toml", "bases.toml") if (d / n).is_file()]
    return {f"engines/checks/{n}": hashlib.sha256((d / n).read_bytes()).hexdigest() for n in sorted(names)}


def load(root: Path, defn: Definition) -> Suite:
    """The rendered suite for one image: common.yaml + its engine's and framework's files."""
    vars_ = variables(defn)
    merged: dict[str, Any] = {"commandTests": [], "fileExistenceTests": [], "fileContentTests": []}
    meta: dict[str, Any] = {}
    ext: dict[str, Any] = {"builtFor": {}, "probe": "", "optionalSonames": [], "dlopen": [], "accelerator": {}}
    sources, sections = {}, {}
    for path in suite_files(root, [defn.image.framework, defn.image.engine]):  # the engine's file has the last word
        raw = path.read_bytes()
        sources[f"engines/checks/{path.name}"] = hashlib.sha256(raw).hexdigest()
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as e:
            raise CheckError(f"{path.name}: not valid YAML: {e}", fix=f"correct {path}") from None
        data = _render(data, vars_, path.name)
        try:
            part = Suite.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            msg = f"unknown key {first['loc'][-1]!r}" if first["type"] == "extra_forbidden" else first["msg"]
            raise CheckError(f"{path.name}: field {where}: {msg}",
                             fix="use container-structure-test's schema (commandTests, fileExistenceTests, "
                             "fileContentTests, metadataTest) or the enginefab section") from None
        for key in ("commandTests", "fileExistenceTests", "fileContentTests"):
            merged[key] += [t.model_dump() for t in getattr(part, key)]
        merged["commandTests"] += [t.model_dump() for so, tests in part.enginefab.stackCommandTests.items()
                                   if so in defn.checks.accelerator_provides for t in tests]
        if part.metadataTest:
            for k, v in part.metadataTest.model_dump(exclude_none=True).items():
                meta[k] = (meta.get(k, []) + v) if isinstance(v, list) and k in ("envVars", "labels") else v
        sections[path.stem] = part.enginefab
        ext["builtFor"].update(part.enginefab.builtFor)
        ext["probe"] += part.enginefab.probe
        ext["optionalSonames"] += [o.model_dump() for o in part.enginefab.optionalSonames]
        ext["dlopen"] += [d.model_dump() | {"engine": path.stem} for d in part.enginefab.dlopen]
        for kind, tests in part.enginefab.accelerator.items():  # a framework's file adds, an engine's overrides
            ext["accelerator"].setdefault(kind, {}).update(tests)
    return Suite.model_validate({**merged, "metadataTest": meta or None, "enginefab": ext, "sources": sources,
                                 "engineSections": sections})


# -- our interpretation -------------------------------------------------------------------

def _lookup(root: Path, cpath: str) -> Path:
    return resolve_in(root, cpath.lstrip("/"), follow_last=True)


def _perm_string(mode: int) -> str:
    return stat.filemode(mode)


def file_tests(root: Path, suite: Suite) -> list[Result]:
    out = []
    for t in suite.fileExistenceTests:
        problems = []
        try:
            host = _lookup(root, t.path)
            st = os.stat(host)
            exists = True
        except OSError:
            exists, st = False, None
        if exists != t.shouldExist:
            problems.append(f"{t.path} {'exists' if exists else 'does not exist'}")
        elif exists and st is not None:
            if t.permissions and _perm_string(st.st_mode) != t.permissions:
                problems.append(f"{t.path} has permissions {_perm_string(st.st_mode)}, expected {t.permissions}")
            if os.geteuid() == 0:  # unpacked as root: the image's owners are the real ones
                if t.uid is not None and st.st_uid != t.uid:
                    problems.append(f"{t.path} is owned by uid {st.st_uid}, expected {t.uid}")
                if t.gid is not None and st.st_gid != t.gid:
                    problems.append(f"{t.path} has gid {st.st_gid}, expected {t.gid}")
            if t.isExecutableBy:
                bits = {"owner": stat.S_IXUSR, "group": stat.S_IXGRP, "other": stat.S_IXOTH,
                        "any": stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH}[t.isExecutableBy]
                if not st.st_mode & bits:
                    problems.append(f"{t.path} is not executable by {t.isExecutableBy}")
        out.append(Result("static", f"file:{t.name}", "fail" if problems else "pass",
                          "; ".join(problems) or f"{t.path} {'exists' if t.shouldExist else 'is absent'} as expected"))
    for c in suite.fileContentTests:
        try:
            text = _lookup(root, c.path).read_text(errors="replace")
        except OSError as e:
            out.append(Result("static", f"content:{c.name}", "fail", f"cannot read {c.path}: {e.strerror}"))
            continue
        missing = [p for p in c.expectedContents if not re.search(p, text)]
        present = [p for p in c.excludedContents if re.search(p, text)]
        detail = "; ".join([f"{c.path} lacks /{p}/" for p in missing] + [f"{c.path} contains /{p}/" for p in present])
        out.append(Result("static", f"content:{c.name}", "fail" if detail else "pass", detail or f"{c.path} matches"))
    return out


def metadata_tests(defn: Definition, suite: Suite) -> list[Result]:
    m = suite.metadataTest
    if m is None:
        return []
    c = defn.config
    problems = []

    def match(want: EnvVar, got: str | None) -> bool:
        if got is None:
            return False
        return bool(re.fullmatch(want.value, got)) if want.isRegex else got == want.value

    for e in m.envVars:
        if not match(e, c.env.get(e.key)):
            problems.append(f"env {e.key}={c.env.get(e.key)!r}, expected {e.value!r}")
    for lb in m.labels:
        if not match(lb, c.labels.get(lb.key)):
            problems.append(f"label {lb.key}={c.labels.get(lb.key)!r}, expected {lb.value!r}")
    if m.workdir is not None and c.workdir != m.workdir:
        problems.append(f"WorkingDir {c.workdir!r}, expected {m.workdir!r}")
    if m.user is not None and c.user != m.user:
        problems.append(f"User {c.user!r}, expected {m.user!r}")
    if m.entrypoint is not None and list(c.entrypoint or []) != m.entrypoint:
        problems.append(f"Entrypoint {c.entrypoint}, expected {m.entrypoint}")
    if m.cmd is not None and list(c.cmd or []) != m.cmd:
        problems.append(f"Cmd {c.cmd}, expected {m.cmd}")
    return [Result("static", "metadata", "fail" if problems else "pass",
                   "; ".join(problems) or "image config matches the metadata test")]


def command_tests(root: Path, defn: Definition, suite: Suite, *, timeout: float = 600) -> list[Result]:
    """Each command in the image as a container runtime runs it (`enginefab.check.container`),
    with the test's environment added and, as container-structure-test does, without the
    image's entrypoint."""
    out = []
    for t in suite.commandTests:
        r = container.run(defn, root, [t.command, *t.args], env={e.key: e.value for e in t.envVars},
                          entrypoint=False, timeout=timeout)
        problems = []
        if r.returncode != t.exitCode:
            problems.append(f"exit {r.returncode}, expected {t.exitCode}: {_tail(r.stderr)}")
        problems += [f"stdout lacks /{p}/ (got {_tail(r.stdout)!r})" for p in t.expectedOutput
                     if not re.search(p, r.stdout)]
        problems += [f"stdout contains /{p}/" for p in t.excludedOutput if re.search(p, r.stdout)]
        problems += [f"stderr lacks /{p}/" for p in t.expectedError if not re.search(p, r.stderr)]
        problems += [f"stderr contains /{p}/" for p in t.excludedError if re.search(p, r.stderr)]
        out.append(Result("runtime", f"command:{t.name}", "fail" if problems else "pass",
                          "; ".join(problems) or f"{t.command} {' '.join(t.args)[:60]} behaved as expected",
                          data={"stdout": r.stdout[-400:]}))
    return out


def _tail(s: str, n: int = 300) -> str:
    s = s.strip()
    return s[-n:]
