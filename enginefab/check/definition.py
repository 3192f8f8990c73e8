"""Definition level: the typed compatibility rules, per image, without building anything.

Image rules read the matrix and engines/checks/compat.toml; locked rules read the pinned
definition build/<alias>.json (skipped, with the reason, when the image is not locked yet).
"""

from __future__ import annotations

from enginefab.check.report import Result
from enginefab.core.definition import Definition, load_definition
from enginefab.core.errors import EnginefabError
from enginefab.core.paths import definition_path
from enginefab.engines import compat, rules
from enginefab.engines.matrix import Image, Matrix


def _results(ids_sources: list[tuple[str, str, str]], violations: list[rules.Violation]) -> list[Result]:
    by_rule: dict[str, list[rules.Violation]] = {}
    for v in violations:
        by_rule.setdefault(v.rule, []).append(v)
    out = []
    for rid, statement, source in ids_sources:
        vs = by_rule.get(rid, [])
        if vs:
            out.append(Result("definition", rid, "fail", "; ".join(v.message for v in vs),
                              data={"source": source, "fix": [v.fix for v in vs]}))
        else:
            out.append(Result("definition", rid, "pass", statement, data={"source": source}))
    return out


def known_to_compat(m: Matrix, img: Image) -> Result:
    """A warning when compat.toml knows nothing of the image's engine (or framework) release for
    its accelerator: the rules that read it (os-glibc, cudnn, …) then checked nothing."""
    facts = compat.compat(m.root)
    pairs = [(img.engine.name, img.d.engine_version)]
    if img.framework != img.engine.name:
        pairs.append((img.framework, img.framework_version))
    unknown = [f"{e} {v}" for e, v in pairs if not facts.needs(e, v, img.accelerator)]
    if unknown:
        return Result("definition", "compat-known", "warn",
                      f"engines/checks/compat.toml has no [[engine]] entry for {' and '.join(unknown)} "
                      f"({img.accelerator}): the rules that read it (os-glibc, cudnn) checked nothing for it; "
                      "add one saying what the release was built against (glibc, cuDNN), with its source")
    return Result("definition", "compat-known", "pass", f"compat.toml knows {' and '.join(f'{e} {v}' for e, v in pairs)}")


def check(m: Matrix, img: Image, defn: Definition | None = None) -> list[Result]:
    """Every image rule, then every locked rule against `defn` (default: build/<alias>.json)."""
    ctx = rules.Context.of(m)
    out = _results([(r.id, r.statement, r.source) for r in rules.RULES], rules.check_image(img, ctx))
    out.append(known_to_compat(m, img))
    if defn is None:
        path = definition_path(m.root, img.alias)
        if not path.is_file():
            return out + [Result("definition", r.id, "skip", f"not locked yet: run `enginefab lock {img.alias}`")
                          for r in rules.LOCKED_RULES]
        try:
            defn = load_definition(path)
        except EnginefabError as e:
            return out + [Result("definition", "locked", "error", e.message)]
    return out + _results([(r.id, r.statement, r.source) for r in rules.LOCKED_RULES],
                          rules.check_locked(img, defn, ctx))
