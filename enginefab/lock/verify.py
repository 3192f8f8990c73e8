"""`enginefab lock --verify`: online — ask the indexes again and say where upstream now differs
from the committed definitions.

`lock --check` proves offline everything engines/ states and the shape of the index pins, but
takes the index pins themselves on trust. This re-resolves them exactly as `lock` would (the
same engines/, the same `exclude_newer`), builds the definition that `lock` would write, with
the committed compression contract, and diffs it with the committed one. It writes nothing.
"""

from __future__ import annotations

import json

from enginefab.core.definition import Definition, load_definition
from enginefab.core.errors import LockError
from enginefab.core.paths import definition_path
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import layering
from enginefab.lock.check import diff
from enginefab.lock.derive import make_definition
from enginefab.lock.locker import resolve, resolve_derived
from enginefab.lock.parent import from_registry
from enginefab.lock.parentrecord import ParentPins
from enginefab.transport.session import Session


def verify(m: Matrix, images: list[Image], session: Session) -> list[str]:
    """Problems: each a line naming the image and the field or input upstream answers differently."""
    out: list[str] = []
    for img in images:
        path = definition_path(m.root, img.alias)
        committed = load_definition(path)
        raw = committed.to_json()
        if img.derived:
            r = resolve_derived(img, m, _parent(img, committed, session), session)
        else:
            r = resolve(img, m, session)
        want = make_definition(img, m, r.base, layering.plan_image(r.parts), committed.compression,
                               parent=r.parent).to_json()
        if want != raw:
            out += [f"{img.alias}: build/{img.alias}.json → what upstream answers now: {line} "
                    f"(review, then `enginefab lock {img.alias}`)" for line in diff(json.loads(raw), json.loads(want))]
    return out


def _parent(img: Image, committed: Definition, session: Session) -> ParentPins:
    """A registry parent is read again by its digest; a matrix parent is verified as an image of
    its own, so its child keeps the parent it was locked over (and lock --check says if that moved)."""
    reg = img.parent_reference
    if reg is not None:
        return from_registry(reg[0], reg[1], img.oci_platform, image=img.label(), session=session)
    base = [i for layer in committed.layers if layer.kind == "base" for i in layer.inputs]
    if committed.parent is None:
        raise LockError(f"build/{img.alias}.json records no parent, but engines/ derives it from {img.d.from_}",
                        image=img.label(), fix=f"run `enginefab lock {img.alias}`")
    return ParentPins(base=base, parent=committed.parent)
