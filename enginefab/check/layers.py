"""Static audit of the engine layers of an image that cannot be built here.

The presets' bases (ubuntu:18.04 and NVIDIA's packages, the EulerOS root) and some vendor files
are out of reach, but their engine wheels come from PyPI. Every wheel layer whose inputs can be fetched is
installed with the builder's own wheel stager into one temporary root (no packing, no
compression) and audited like a built image, against what the definition *declares* about the
rest: the OS's glibc, the accelerator stack's sonames, the host driver's, and the sonames the
absent base and Python runtime provide (engines/checks/bases.toml, each with its source).
"""

from __future__ import annotations

import os
import shutil
import time
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from enginefab.assemble.fetching import fetch_input
from enginefab.assemble.staging import Staging
from enginefab.assemble.store import Store
from enginefab.assemble.wheels import stage_wheel
from enginefab.check.facts import Facts
from enginefab.check.report import Result
from enginefab.check.static import audit
from enginefab.check.structure import Suite
from enginefab.core.definition import Definition, Input, Layer
from enginefab.core.errors import EnginefabError
from enginefab.core.fsutil import scratch_dir
from enginefab.transport import download
from enginefab.transport.session import Session

BASES = Path("engines") / "checks" / "bases.toml"


class Provides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    provides: list[str]
    source: str


class BasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    os: dict[str, Provides] = Field(default_factory=dict)
    python: dict[str, Provides] = Field(default_factory=dict)


def bases(root: Path) -> BasesFile:
    p = root / BASES
    return BasesFile.model_validate(tomllib.loads(p.read_text())) if p.is_file() else BasesFile()


def reachable(inp: Input, session: Session) -> str | None:
    """None if the input's bytes are here (the session's download cache) or can be fetched, else why not."""
    if inp.sha256 and download.cached(inp.sha256, session.downloads, reporter=session.reporter):
        return None
    if inp.kind == "deb" and not inp.url:
        return "a package not pinned yet (its repository was out of reach when locked): see `enginefab lock --check`"
    if inp.kind == "manual" or not inp.url:
        return "a manual input (behind a login): add it with `enginefab lock --add-file`"
    url = session.mirrors.url(inp.url)
    u = urllib.parse.urlsplit(url)
    if u.scheme == "file":
        return None if Path(u.path).exists() else f"{url} does not exist"
    if not u.hostname or session.unreachable_host(inp.url, timeout=5):
        return f"{u.hostname} is not reachable from here"
    return None


@dataclass
class Plan:
    audited: list[Layer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # layer id → why


def plan(defn: Definition, session: Session) -> Plan:
    p = Plan()
    for layer in defn.layers:
        if layer.kind != "wheels":
            p.skipped[layer.id] = ("the base image: " if layer.kind == "base" else f"a {layer.kind} layer: ") + \
                "not audited without the image (its facts are declared)"
            continue
        why = next((f"{i.ref}: {r}" for i in layer.inputs if (r := reachable(i, session))), None)
        if why:
            p.skipped[layer.id] = why
        else:
            p.audited.append(layer)
    return p


def facts_for(defn: Definition, suite: Suite | None, root: Path, staged_pins: dict[str, str]) -> Facts:
    f = Facts.of(defn, suite)
    b = bases(root)
    os_id = defn.matrix.get("os", {}).get("id", "")
    py_id = defn.matrix.get("python", {}).get("id", "")
    declared = []
    for table, key in ((b.os, os_id), (b.python, py_id)):
        if key in table:
            declared += table[key].provides
    f.base_provides = sorted(set(declared))
    f.pins = staged_pins
    return f


def audit_layers(defn: Definition, store: Store, project: Path, session: Session,
                 suite: Suite | None = None) -> list[Result]:
    """Stage every reachable wheel layer (fetched through `session`) into a temporary root and audit it."""
    t0 = time.monotonic()
    p = plan(defn, session)
    out: list[Result] = []
    if not p.audited:
        return [Result("static", "engine-layers", "skip",
                       "no wheel layer of this image can be fetched here: " + "; ".join(
                           f"{k}: {v}" for k, v in p.skipped.items()))]
    need = 4 * sum(i.size for layer in p.audited for i in layer.inputs)  # unpacked wheels, generously
    work = scratch_dir(need, store.root / "tmp") / f"enginefab-audit-{defn.image.alias}-{time.monotonic_ns()}"
    merged = work / "root"
    merged.mkdir(parents=True)
    pins: dict[str, str] = {}
    total = 0
    try:
        for n, layer in enumerate(p.audited):
            staging = Staging(work / f"layer{n}")
            staging.root.mkdir()
            for inp in sorted(layer.inputs, key=lambda i: i.name):
                path = fetch_input(inp, defn.image.alias, session)
                total += path.stat().st_size
                session.reporter.info(f"  staging {inp.ref} ({path.stat().st_size / 1e6:.0f} MB)")
                stage_wheel(staging, path, inp, dict(layer.scheme or {}), layer.interpreter or defn.python.interpreter)
                pins[inp.name] = inp.version
            _overlay(staging.root, merged)  # a later layer's file replaces an earlier one's, as in the image
        staged = time.monotonic() - t0
        facts = facts_for(defn, suite, project, pins)
        out += audit(merged, facts, with_image_checks=False)
    except EnginefabError as e:
        out.append(Result("static", "engine-layers", "error", f"cannot stage the engine layers: {e.message}"))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dt = time.monotonic() - t0
    audited = ", ".join(layer.id for layer in p.audited)
    skipped = "; ".join(f"{k} ({v})" for k, v in p.skipped.items())
    out.insert(0, Result("static", "engine-layers", "pass",
                         f"audited {len(p.audited)} wheel layers ({total / 1e6:.0f} MB of wheels) against the declared "
                         f"base facts: {audited}. Not audited here: {skipped}", dt,
                         data={"audited": [layer.id for layer in p.audited], "skipped": p.skipped,
                               "wheel_bytes": total}))
    session.reporter.info(f"  staged {total / 1e6:.0f} MB of wheels in {staged:.0f} s, audited in {dt - staged:.0f} s")
    return out


def _overlay(src: Path, dst: Path) -> None:
    """Move the tree `src` onto `dst`, replacing files (same filesystem: renames only)."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(exist_ok=True)
        for n in filenames:
            os.replace(Path(dirpath) / n, dst / rel / n)
        for n in list(dirnames):
            if (Path(dirpath) / n).is_symlink():
                os.replace(Path(dirpath) / n, dst / rel / n)
                dirnames.remove(n)
