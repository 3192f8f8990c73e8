"""`enginefab lock`: resolve every input of the chosen images, plan their layers, write
build/<alias>.json — all of them or none.

Resolution happens first, for every requested image; only when all succeeded are files written
(each atomically). An image's layers are a function of its own inputs (layering.py), so the
images not requested cannot have changed: their definitions are neither read nor written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.markup import escape

from enginefab.core.definition import Base, Compression, Definition, Input, Parent, parse_definition
from enginefab.core.errors import EnginefabError, LockError
from enginefab.core.fsutil import write_atomic
from enginefab.core.paths import definition_path
from enginefab.core.pytarget import Target
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import deb, layering, oci, parent as parents_, pypi, stackdebs, tools
from enginefab.lock.asof import as_of
from enginefab.lock.declared import base_ref, manual_input, matrix_entry, run_input, stack_repos, vendor_wheel_input
from enginefab.lock.derive import IndexPins, base_of, make_definition, parts_for
from enginefab.lock.debnames import provided_names
from enginefab.lock.parentrecord import ParentPins
from enginefab.transport.session import Session


@dataclass
class Resolved:
    parts: layering.Parts
    base: Base | None
    parent: Parent | None = None


#: a matrix parent, built: (its image, its definition) → its manifest and config as the child's base
ParentSource = Callable[[Image, Definition, bytes], ParentPins]


def resolve(img: Image, m: Matrix, session: Session) -> Resolved:
    """Every input of one image, pinned: the index pins online (PyPI, apt, registries, through the
    session), the rest from engines/ (`derive.parts_for`)."""
    pins = IndexPins()
    _base_pins(img, pins, session)
    # the OS root, the accelerator stack's packages (over the base; its files behind a login and
    # run steps are engines/'s), the Python runtime, then the extra OS packages: each over the last
    have = _os_pins(img, m, pins, session)
    if img.stack:
        pins.stack = stack_debs(img, m, pins.base, have, session)
        have |= provided_names(pins.stack)
    have |= _python_runtime_pins(img, m, pins, have, session)
    if img.d.debs:
        pins.debs = extra_debs(img, m, pins.base, have, session)
    if img.d.requirements:
        target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
        pins.wheels, pins.sdists = python_closure(img, m, target, session)
    if tools.wanted(img) != ([], [], []):
        held = {w.name: w.version for w in pins.wheels + [vendor_wheel_input(w) for w in img.d.wheels]}
        pins.tools = tools.resolve(img, m, session, base=pins.base, have=have | provided_names(pins.debs),
                                   held=held)
    return Resolved(parts=parts_for(img, m, pins), base=base_of(img, pins.manifest))


def _base_pins(img: Image, pins: IndexPins, session: Session) -> None:
    """The base image's layers and manifest, from its registry."""
    ref = base_ref(img)
    if img.os.source == "oci" and ref is None:
        raise LockError(f"OS {img.os_id} comes from a base image but none is pinned for this image",
                        image=img.label(), fix="pin one in platforms.toml (os.base or the stack's base) or on the image")
    if ref is not None:
        session.reporter.info(f"  {img.alias}: base {ref.reference}@{ref.digest[:19]}…")
        pins.base, pins.manifest = oci.resolve(ref, img.oci_platform, image=img.label(), session=session)


def _os_pins(img: Image, m: Matrix, pins: IndexPins, session: Session) -> set[str]:
    """The OS root's packages (an OS made of debs); the package names it provides."""
    if img.os.source == "debs":
        apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
        assert apt is not None
        session.reporter.info(f"  {img.alias}: {img.os_id} packages ({img.arch})")
        pins.os = deb.resolve([apt], img.arch, list(img.os.packages), set(), image=img.label(), root=m.root,
                              session=session)
        return provided_names(pins.os)
    if img.os.source == "manual" and img.arch not in img.os.archive:
        raise LockError(f"OS {img.os_id} is imported from an archive but none is declared for {img.arch}",
                        image=img.label(), fix=f'add [os."{img.os_id}".archive.{img.arch}] to platforms.toml')
    return set()


def _python_runtime_pins(img: Image, m: Matrix, pins: IndexPins, have: set[str], session: Session) -> set[str]:
    """The Python runtime's packages (a runtime made of debs); the package names it provides."""
    py = img.python
    if py.source != "debs":
        return set()
    apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
    if apt is None:
        raise LockError(f"Python runtime {img.python_id} is made of packages, but {img.os_id} has no apt repository",
                        image=img.label(), fix="set os.apt in platforms.toml")
    session.reporter.info(f"  {img.alias}: Python {py.version} packages")
    pins.python = deb.resolve([apt], img.arch, list(py.packages), have, image=img.label(), root=m.root, session=session)
    return provided_names(pins.python)


def python_closure(img: Image, m: Matrix, target: Target, session: Session,
                   parent: Parent | None = None) -> tuple[list[Input], list[Input]]:
    """(wheels, sdists) of the image's requirements: uv for the versions, the index for the files.
    Over a parent, the parent's distributions are constraints and are not installed again."""
    say, who = session.reporter.info, img.label()
    say(f"  {img.alias}: Python closure of {', '.join(img.d.requirements)} for cp{target.py[0]}{target.py[1]} {img.arch}")
    when = as_of(img, m.platforms.pypi)
    say(escape(f"  {img.alias}: PyPI as of {when.instant or 'now'} ({when.why})"))
    have = dict(parent.distributions) if parent else {}
    constraints = list(img.d.constraints) + [f"{n}=={v}" for n, v in have.items()]
    pins_ = [p for p in pypi.resolve_versions(list(img.d.requirements), constraints, target, image=who,
                                              session=session, exclude_newer=when.instant) if p.name not in have]
    with ThreadPoolExecutor(max_workers=8) as pool:  # one index page per package: fetch them together
        files = list(pool.map(lambda pin: pypi.select_file(pin, target, session, image=who), pins_))
    return [f for f in files if f.kind == "wheel"], [f for f in files if f.kind == "url"]


def resolve_derived(img: Image, m: Matrix, parent: ParentPins, session: Session) -> Resolved:
    """A derived image: the parent's layers as its base, then its own packages, wheels, files and
    steps; what the parent has installed is neither fetched nor installed again."""
    who = img.label()
    pins = IndexPins(base=list(parent.base), parent=parent.parent)
    if img.d.debs:
        apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
        if apt is None:
            raise LockError(f"field debs: {img.os_id} has no apt repository this lock can read", image=who,
                            fix="install them with a run step, or use an OS with an apt repository")
        session.reporter.info(f"  {img.alias}: extra OS packages over {parent.parent.label}")
        pins.debs = deb.resolve([apt], img.arch, list(img.d.debs), set(parent.parent.debs), image=who, root=m.root,
                                session=session)
    if img.d.requirements:
        target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
        pins.wheels, pins.sdists = python_closure(img, m, target, session, parent.parent)
    if tools.wanted(img) != ([], [], []):  # over the parent: its packages and distributions are there
        held = dict(parent.parent.distributions) | {w.name: w.version for w in pins.wheels}
        pins.tools = tools.resolve(img, m, session, base=pins.base, held=held,
                                   have=set(parent.parent.debs) | provided_names(pins.debs))
    return Resolved(parts=parts_for(img, m, pins), base=None, parent=parent.parent)


def stack_debs(img: Image, m: Matrix, base: list, have: set[str], session: Session) -> list[Input]:
    """The stack's Debian packages (over the base), from its repositories and the OS's."""
    assert img.stack is not None
    if not img.stack.packages:
        return []
    return stackdebs.resolve(img, m, stack_repos(img, m), list(img.stack.packages), base=base, have=have,
                             published=dict(img.stack.published), what=f"stack {img.stack_id} packages", session=session)


def stack_inputs(img: Image, m: Matrix, base: list, have: set[str], pins: dict, session: Session) -> list:
    """The stack's inputs as the planner gets them: its packages, files behind a login, run steps."""
    assert img.stack is not None
    return (stack_debs(img, m, base, have, session) + [manual_input(f, pins) for f in img.stack.manual]
            + [run_input(s) for s in img.stack.run])


def extra_debs(img: Image, m: Matrix, base: list, have: set[str], session: Session) -> list:
    apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
    if apt is None:
        raise LockError(f"field debs: {img.os_id} has no apt repository this lock can read", image=img.label(),
                        fix="install them with a run step, or use an OS with an apt repository")
    if img.os.source == "oci":  # over a base image: what it has installed is not fetched again
        return stackdebs.resolve(img, m, [(img.os.apt, apt)], list(img.d.debs), base=base, have=have,
                                 what="extra OS packages", session=session)
    return deb.resolve([apt], img.arch, list(img.d.debs), have, image=img.label(), root=m.root, session=session)


@dataclass
class LockResult:
    written: list[str]
    unchanged: list[str]


def lock(m: Matrix, images: list[Image], contract: Compression, session: Session, *,
         parents: ParentSource | None = None) -> LockResult:
    """Resolve and plan `images` (through `session`), write each definition that changed; touch no
    other file.

    `contract` is what this machine's compressor fulfils for platforms.toml's compression
    (`assemble.compress.contract`, measured by the caller): the lock records it. `parents`
    builds a matrix parent of a derived image (the caller's builder) into its manifest and
    config; a parent locked in the same run is built from its new definition."""
    say = session.reporter.info
    wanted = {i.alias for i in images}
    out: dict[Path, bytes] = {}
    failed: list[EnginefabError] = []
    for img in parents_first([i for i in m.images if i.alias in wanted], m):
        say(f"[bold]lock[/] {img.label()}")
        try:
            if img.derived:
                r = resolve_derived(img, m, parent_pins(img, m, out, parents, session), session)
            else:
                r = resolve(img, m, session)
        except EnginefabError as e:  # shared indexes fail without knowing for which image
            failed.append(e if e.image else type(e)(e.message, image=img.label(), input=e.input, fix=e.fix))
            continue  # the others are resolved too, so that every failure is told at once
        defn = make_definition(img, m, r.base, layering.plan_image(r.parts), contract, parent=r.parent)
        out[definition_path(m.root, img.alias)] = defn.to_json()
    if len(failed) == 1:
        raise failed[0]
    if failed:
        first = failed[0]
        raise LockError(f"{len(failed)} images could not be locked (nothing was written):\n"
                        + "\n".join(f"  {n}. " + str(e).replace("\n", "\n     ") for n, e in enumerate(failed, 1)),
                        image=first.image, input=first.input, fix=first.fix)
    written, unchanged = [], []
    for path, data in out.items():
        if path.is_file() and path.read_bytes() == data:
            unchanged.append(path.stem)
            continue
        write_atomic(path, data)
        written.append(path.stem)
    return LockResult(written=sorted(written), unchanged=sorted(unchanged))


def parents_first(images: list[Image], m: Matrix) -> list[Image]:
    """`images` with each matrix parent before the images derived from it (else in matrix order)."""
    out: list[Image] = []

    def place(img: Image) -> None:
        if img in out:
            return
        if img.parent_alias is not None:
            parent = m.get(img.parent_alias)
            if parent in images:
                place(parent)
        out.append(img)

    for img in images:
        place(img)
    return out


def parent_pins(img: Image, m: Matrix, out: dict[Path, bytes], parents: ParentSource | None,
                session: Session) -> ParentPins:
    """The parent of a derived image, read as the child's base: from its registry by digest, or
    (a matrix parent) its current definition built by `parents`."""
    who = img.label()
    reg = img.parent_reference
    if reg is not None:
        say_ref = f"{reg[0]}@{reg[1][:19]}…"
        session.reporter.info(f"  {img.alias}: parent {say_ref}")
        return parents_.from_registry(reg[0], reg[1], img.oci_platform, image=who, session=session)
    parent = m.get(img.parent_alias or "")
    path = definition_path(m.root, parent.alias)
    raw = out.get(path)
    if raw is None:
        if not path.is_file():
            raise LockError(f"the parent {parent.alias} was never locked (no build/{parent.alias}.json)", image=who,
                            fix=f"run `enginefab lock {parent.alias} {img.alias}`")
        raw = path.read_bytes()
    defn = parse_definition(raw, f"build/{path.name}")
    if defn.matrix != matrix_entry(parent, m):
        raise LockError(f"the parent {parent.alias} is stale: engines/ changed since build/{parent.alias}.json was "
                        "locked", image=who, fix=f"run `enginefab lock {parent.alias} {img.alias}`")
    if parents is None:
        raise LockError(f"the parent {parent.alias} must be built to pin its manifest, and no builder was given",
                        image=who, fix=f"run `enginefab lock {img.alias}` (the CLI builds the parent)")
    return parents(parent, defn, raw)
