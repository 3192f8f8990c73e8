"""`enginefab lock --check`: offline, fast — do engines/ and build/ agree, and is every input pinned?"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from enginefab import canonical
from enginefab.engines.matrix import Matrix
from enginefab.lock.definition import Definition
from enginefab.lock.locker import definition_path, matrix_entry

_HEX = re.compile(r"^[0-9a-f]{64}$")


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Leaf-level differences, as 'path: old → new' lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    if old != new:
        show = lambda v: canonical.dumps(v).decode()[:120]  # noqa: E731
        return [f"{path}: {show(old)} → {show(new)}"]
    return []


def check(m: Matrix, *, strict: bool = False) -> tuple[list[str], list[str]]:
    """(problems, warnings). Problems make `lock --check` fail."""
    problems: list[str] = []
    warnings: list[str] = []
    expected = {definition_path(m.root, i.alias) for i in m.images}
    for path in sorted((m.root / "build").glob("*.json")):
        if path not in expected:
            problems.append(f"build/{path.name} belongs to no image of the matrix (remove it)")
    for img in m.images:
        path = definition_path(m.root, img.alias)
        who = img.alias
        if not path.is_file():
            problems.append(f"{who}: build/{img.alias}.json is missing (run `enginefab lock {img.alias}`)")
            continue
        raw = path.read_bytes()
        try:
            defn = Definition.model_validate_json(raw)
        except ValidationError as e:
            problems.append(f"{who}: build/{path.name} is not a valid definition: {e.errors()[0]['msg']}")
            continue
        if defn.to_json() != raw:
            problems.append(f"{who}: build/{path.name} is not in canonical form (edited by hand?); re-run `enginefab lock`")
        for line in diff(defn.matrix, matrix_entry(img, m)):
            problems.append(f"{who}: engines/ changed since the lock: {line}")
        for layer in defn.layers:
            for i in layer.inputs:
                where = f"{who}: layer {layer.id}: input {i.ref}"
                if i.sha256 is None:
                    msg = f"{where} awaits a user-supplied file ({i.where or 'see engines/'}); add it with `enginefab lock --add-file`"
                    (problems if strict else warnings).append(msg)
                elif not _HEX.match(i.sha256):
                    problems.append(f"{where} has no valid sha256")
                if i.kind in ("wheel", "deb", "url") and not i.url:
                    problems.append(f"{where} has no URL")
                if i.kind == "deb" and i.size <= 0:
                    problems.append(f"{where} has no size")
                if i.kind == "oci" and i.media_type is None and len(layer.inputs) == 1:
                    warnings.append(f"{where}: base pinned by digest only; its layers were not resolved (registry unreachable at lock time)")
    return problems, warnings

