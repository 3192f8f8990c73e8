"""Definition level: the typed compatibility rules, per image, without building anything."""

from __future__ import annotations

from enginefab.check.report import Result
from enginefab.engines import rules
from enginefab.engines.matrix import Image


def check(img: Image) -> list[Result]:
    violations = {r.id: [] for r in rules.RULES}
    for v in rules.check_image(img):
        violations.setdefault(v.rule, []).append(v)
    out = []
    for r in rules.RULES:
        vs = violations[r.id]
        if vs:
            out.append(Result("definition", r.id, "fail", "; ".join(v.message for v in vs), data={"source": r.source}))
        else:
            out.append(Result("definition", r.id, "pass", r.statement, data={"source": r.source}))
    return out
