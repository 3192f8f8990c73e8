"""`enginefab lock --verify`: online — ask the indexes again and say where upstream now differs
from the committed definitions.

`lock --check` proves offline everything engines/ states and the shape of the index pins, but
takes the index pins themselves on trust. This re-resolves them exactly as `lock` would (the
same engines/, the same `exclude_newer`), builds the definition that `lock` would write, with
the committed compression contract, and diffs it with the committed one. It writes nothing.
"""

from __future__ import annotations

import json

from enginefab.core.definition import load_definition
from enginefab.core.paths import definition_path
from enginefab.engines.matrix import Image, Matrix
from enginefab.lock import layering
from enginefab.lock.check import diff
from enginefab.lock.derive import make_definition
from enginefab.lock.locker import resolve
from enginefab.transport.session import Session


def verify(m: Matrix, images: list[Image], session: Session) -> list[str]:
    """Problems: each a line naming the image and the field or input upstream answers differently."""
    out: list[str] = []
    for img in images:
        path = definition_path(m.root, img.alias)
        committed = load_definition(path)
        raw = committed.to_json()
        r = resolve(img, m, session)
        want = make_definition(img, m, r.base, layering.plan_image(r.parts), committed.compression).to_json()
        if want != raw:
            out += [f"{img.alias}: build/{img.alias}.json → what upstream answers now: {line} "
                    f"(review, then `enginefab lock {img.alias}`)" for line in diff(json.loads(raw), json.loads(want))]
    return out
