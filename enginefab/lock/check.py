"""`enginefab lock --check`: offline, fast — do engines/ and build/ agree, and is every input pinned?"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginefab.core import canonical
from enginefab.core.definition import MAX_BYTES, Definition, parse_definition
from enginefab.core.errors import LockError
from enginefab.core.paths import definition_path
from enginefab.engines.matrix import Matrix
from enginefab.lock.declared import base_ref, declared_inputs, matrix_entry
from enginefab.lock import derive, pins
from enginefab.lock.parentrecord import matrix_record
from enginefab.lock.layering import parts_of, plan_image

_HEX = re.compile(r"^[0-9a-f]{64}$")


def read_capped(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(MAX_BYTES + 1)
    except OSError as e:
        raise LockError(f"build/{path.name}: cannot read it: {e.strerror}", fix="check the file and its permissions") from None


def _by_name(items: list) -> dict[str, Any] | None:
    """A list of named tables (files, wheels, manual inputs, run steps; layers by id, file
    entries by path) keyed by that, if it is one."""
    for key in ("name", "id", "path"):
        if items and all(isinstance(i, dict) and isinstance(i.get(key), str) for i in items):
            keyed = {i[key]: i for i in items}
            if len(keyed) == len(items):
                return keyed
    return None


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Leaf-level differences, as 'path: old → new' lines; named list items show their name
    (image.files[horovod].sha256), so a changed pin names its input."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and old != new:
        ko, kn = _by_name(old), _by_name(new)
        if ko is not None and kn is not None and set(ko) != set(kn) and len(old) == len(new):
            # the same list with items renamed (a layer whose id changed with its contents): side by side
            out = []
            for name, o, n in zip(ko, old, new):
                out += diff(o, n, f"{path}[{name}]")
            return out
        if ko is not None and kn is not None:
            out = []
            for k in [n for n in ko if n in kn] + [n for n in kn if n not in ko] + [n for n in ko if n not in kn]:
                out += diff(ko.get(k), kn.get(k), f"{path}[{k}]")
            return out
    if old != new:
        show = lambda v: canonical.dumps(v).decode()[:120]  # noqa: E731
        return [f"{path}: {show(old)} → {show(new)}"]
    return []


def _declared_mismatches(defn: Definition, img, m: Matrix) -> list[str]:
    """Inputs engines/ pins itself (files, vendor wheels, manual files, run steps, the base) that
    build/ carries differently: a definition edited by hand."""
    have: dict[tuple[str, str], list[dict]] = {}
    for i in defn.inputs():
        have.setdefault((i.kind, i.name), []).append(i.model_dump(mode="json", exclude={"requested_by"}))
    out = []
    for want in declared_inputs(img, m):
        w = want.model_dump(mode="json", exclude={"requested_by"})
        found = have.get((want.kind, want.name), [])
        if w in found:
            continue
        if not found:
            out.append(f"build/{img.alias}.json lacks input {want.ref} that engines/ declares; re-run `enginefab lock {img.alias}`")
        else:
            for line in diff(found[0], w):
                out.append(f"input {want.ref}: build/ differs from engines/: {line} (edited by hand? re-run `enginefab lock {img.alias}`)")
    ref = base_ref(img)
    want_base = f"{ref.reference}@{ref.digest}" if ref else None
    got_base = f"{defn.base.reference}@{defn.base.digest}" if defn.base else None
    if want_base != got_base:
        out.append(f"base: build/ has {got_base}, engines/ pins {want_base} (re-run `enginefab lock {img.alias}`)")
    return out


def _package_mismatches(defn: Definition, img) -> list[str]:
    """The stack's packages engines/ pins (name=version, published sha256) must be in build/ so."""
    if not img.stack or not img.stack.packages:
        return []
    debs = {(i.name, i.version): i for i in defn.inputs() if i.kind == "deb"}
    out = []
    for root in img.stack.packages:
        name, _, version = root.partition("=")
        got = debs.get((name, version or "*")) or (None if version else next(
            (i for (n, _v), i in debs.items() if n == name), None))
        if got is None:
            out.append(f"build/{img.alias}.json lacks {root} that stack {img.stack_id} pins; "
                       f"re-run `enginefab lock {img.alias}`")
        elif root in img.stack.published and got.sha256 != img.stack.published[root]:
            out.append(f"input {got.ref}: build/ has sha256 {got.sha256}, {img.stack.published_source or 'engines/'} "
                       f"published {img.stack.published[root]} (edited by hand? re-run `enginefab lock {img.alias}`)")
    return out


def _planned_mismatches(defn: Definition) -> list[str]:
    """The layers must be what this planner makes of the definition's own inputs: a definition
    locked by another planner (or with layers edited by hand) would build other digests."""
    try:
        want = plan_image(parts_of(defn))
    except LockError as e:
        return [e.message]
    if [la.model_dump() for la in want] == [la.model_dump() for la in defn.layers]:
        return []
    have_ids, want_ids = [la.id for la in defn.layers], [la.id for la in want]
    if have_ids != want_ids and sorted(have_ids) == sorted(want_ids):
        at = next(n for n, (h, w) in enumerate(zip(have_ids, want_ids)) if h != w)
        return [f"build/{defn.image.alias}.json: the layers are out of the planner's order: layer {at + 1} is "
                f"{have_ids[at]}, the planner puts {want_ids[at]} there (edited by hand? "
                f"re-run `enginefab lock {defn.image.alias}`)"]
    gone = [i for i in have_ids if i not in want_ids]
    new = [i for i in want_ids if i not in have_ids]
    detail = f" (build/ has {', '.join(gone[:3]) or 'the same ids'}; the planner makes {', '.join(new[:3]) or 'the same ids'})"
    return [f"build/{defn.image.alias}.json: the layers are not what this enginefab plans for its inputs"
            f"{detail if gone or new else ' (same ids, other layer contents)'}: locked by another planner "
            f"version or edited by hand; re-run `enginefab lock {defn.image.alias}`"]


def unpinned_debs(layer) -> str | None:
    """What a layer's packages from a repository not reachable at lock time still need (None: nothing)."""
    waiting = [i for i in layer.inputs if i.kind == "deb" and i.url is None]
    if not waiting:
        return None
    published = sum(1 for i in waiting if i.sha256)
    names = ", ".join(f"{i.name}={i.version}" for i in waiting[:4]) + (", …" if len(waiting) > 4 else "")
    return (f"{len(waiting)} packages are not pinned yet ({names}; {published} with a sha256 upstream published, "
            f"checked when pinned); they come from {waiting[0].where}")


@dataclass
class Report:
    """What `lock --check` found. Problems make it fail; the lists name the images by kind."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # images (or files) of engines/ that do not load
    never_locked: list[str] = field(default_factory=list)  # no build/<alias>.json yet
    stale: list[str] = field(default_factory=list)  # locked, then engines/ was edited

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.problems, "problems": self.problems, "warnings": self.warnings,
                "invalid": self.invalid, "never_locked": self.never_locked, "stale": self.stale}


def check(m: Matrix, *, strict: bool = False, cache: Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, warnings) of `report`."""
    r = report(m, strict=strict, cache=cache)
    return r.problems, r.warnings


def report(m: Matrix, *, strict: bool = False, cache: Path | None = None) -> Report:
    """An image of engines/ that does not load is a problem (with its own); one never locked (no
    build/<alias>.json yet) is a warning, a problem with `strict`; one locked and then edited
    is stale, a problem."""
    r = Report(problems=[p.render() for p in m.problems], invalid=[b.alias or f"engines/{b.file}" for b in m.broken])
    defns: dict[str, Definition] = {}
    expected = {definition_path(m.root, a) for a in [i.alias for i in m.images] + [b.alias for b in m.broken] if a}
    if not any(b.alias is None for b in m.broken):  # an unreadable file may hold any alias
        for path in sorted((m.root / "build").glob("*.json")):
            if path not in expected:
                r.problems.append(f"build/{path.name} belongs to no image of the matrix (remove it)")
    for img in m.images:
        defn = _check_image(img, m, r, strict)
        if defn is not None:
            defns[img.alias] = defn
    r.problems += pins.incoherent(defns, m, cache)
    return r


def _check_image(img, m: Matrix, r: Report, strict: bool) -> Definition | None:
    path = definition_path(m.root, img.alias)
    who = img.alias
    if not path.is_file():
        r.never_locked.append(who)
        (r.problems if strict else r.warnings).append(
            f"{who}: never locked: build/{img.alias}.json does not exist yet (run `enginefab lock {img.alias}`)")
        return None
    raw = read_capped(path)
    defn = parse_definition(raw, f"build/{path.name}")  # absurd values: LockError, exit 2
    if defn.image.alias != img.alias:
        r.problems.append(f"{who}: build/{path.name} is the definition of {defn.image.alias}, not of {who} "
                          f"(re-run `enginefab lock {who}`)")
        return None
    if defn.to_json() != raw:
        r.problems.append(f"{who}: build/{path.name} is not in canonical form (edited by hand?); re-run `enginefab lock`")
    stale = diff(defn.matrix, matrix_entry(img, m))
    if stale:
        r.stale.append(who)
    for line in stale:
        r.problems.append(f"{who}: stale: engines/ changed since it was locked (`enginefab lock {who}`): {line}")
    mine: list[str] = parent_changes(defn, img, m)
    if mine and who not in r.stale:
        r.stale.append(who)
    if not stale:  # same engines/: the pins it declares must be in build/ as declared
        mine += _declared_mismatches(defn, img, m) + _package_mismatches(defn, img)
    mine += _planned_mismatches(defn)
    if not stale and not mine:  # the last word: what `lock` writes from these index pins, byte for byte
        mine += _derived_mismatches(defn, raw, img, m)
    r.problems += [f"{who}: {p}" for p in mine]
    _pin_states(who, defn, strict, r.problems, r.warnings)
    return defn


def parent_changes(defn: Definition, img, m: Matrix) -> list[str]:
    """A derived image whose parent is no longer the one it was locked over: the registry digest
    engines/ names, or a matrix parent's definition as engines/ and build/ make it now."""
    if not img.derived:
        return []
    fix = f"run `enginefab lock {img.alias}`"
    if defn.parent is None:
        return [f"build/{img.alias}.json records no parent, but engines/ derives it from {img.d.from_}; {fix}"]
    reg = img.parent_reference
    if reg is not None:
        now = f"{reg[0]}@{reg[1]}"
        locked = defn.parent.reference or ""
        if locked != now:
            return [f"parent {reg[0]} changed (locked {locked.rpartition('@')[2] or 'none'} now {reg[1]}); {fix}"]
        return []
    parent = m.get(img.parent_alias or "")
    path = definition_path(m.root, parent.alias)
    if not path.is_file():
        return [f"its parent {parent.alias} is not locked (no build/{parent.alias}.json); "
                f"run `enginefab lock {parent.alias} {img.alias}`"]
    raw = read_capped(path)
    pdefn = parse_definition(raw, f"build/{path.name}")
    if pdefn.matrix != matrix_entry(parent, m):  # the parent's own entry moved on: what lock would make of it now
        raw = derive.expected(pdefn, parent, m).to_json()
        fix = f"run `enginefab lock {parent.alias} {img.alias}`"
    now = "sha256:" + canonical.sha256_hex(raw)
    if now != defn.parent.definition:
        return [f"parent {parent.alias} changed (locked {defn.parent.definition} now {now}); {fix}"]
    want = matrix_record(pdefn, raw, defn.parent.manifest, pdefn.config)
    return [f"build/{img.alias}.json: parent.{line} (what build/{parent.alias}.json says; edited by hand? {fix})"
            for line in diff(defn.parent.model_dump(mode="json"), want.model_dump(mode="json"))]


def _pin_states(who: str, defn: Definition, strict: bool, problems: list[str], warnings: list[str]) -> None:
    """Inputs not fully pinned yet (awaiting a file, a tree alone, packages not pinned, bases not
    followed): warnings, or problems with --strict; pins without a URL or a size: problems."""
    for layer in defn.layers:
        unpinned = unpinned_debs(layer)
        if unpinned:
            (problems if strict else warnings).append(f"{who}: layer {layer.id}: {unpinned}")
        for i in layer.inputs:
            where = f"{who}: layer {layer.id}: input {i.ref}"
            if i.kind == "deb" and i.url is None:  # reported above, for the whole layer
                if i.sha256 is not None and not _HEX.match(i.sha256):
                    problems.append(f"{where} has no valid sha256")
                continue
            if i.sha256 is None and i.kind == "git":
                msg = (f"{where} is pinned by its tree {i.tree} alone (a SHA-1): `enginefab build {who}` where "
                       f"{i.url} is reachable prints the archive's sha256; pin it as `sha256` in engines/")
                (problems if strict else warnings).append(msg)
            elif i.sha256 is None:
                msg = f"{where} awaits a user-supplied file ({i.where or 'see engines/'}); add it with `enginefab lock --add-file`"
                (problems if strict else warnings).append(msg)
            elif not _HEX.match(i.sha256):
                problems.append(f"{where} has no valid sha256")
            if i.kind in ("wheel", "deb", "url", "git") and not i.url:
                problems.append(f"{where} has no URL")
            if i.kind == "deb" and i.size <= 0:
                problems.append(f"{where} has no size")
            if i.kind == "oci" and i.media_type is None and len(layer.inputs) == 1:
                warnings.append(f"{where}: base pinned by digest only; its layers were not resolved (registry unreachable at lock time)")


def _derived_mismatches(defn: Definition, raw: bytes, img, m: Matrix) -> list[str]:
    """Everything but the index pins, derived again from engines/ and the planner (`derive`):
    an image config, a check, a file entry or an owner edited by hand differs here."""
    want = derive.expected(defn, img, m).to_json()
    if want == raw:
        return []
    lines = diff(json.loads(raw), json.loads(want))
    return [f"build/{defn.image.alias}.json differs from what `enginefab lock` makes of engines/ and its own "
            f"index pins: {line} (edited by hand? re-run `enginefab lock {defn.image.alias}`)" for line in lines[:10]]

