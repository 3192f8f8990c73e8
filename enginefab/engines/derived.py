"""Derived images (`from` in an [[image]] table): what they inherit from a parent of the matrix,
checked on the tables as read, before the models validate them.

A derived image of a matrix image states only what it adds (requirements, debs, files, env, run
steps); it inherits the parent's engine version, framework, Python, OS, accelerator and arch,
which it may restate only with the same value. Its name is its own (a custom image's name, not
a preset's canonical name): without one, it is the alias. A derived image of a registry image by
digest states those fields itself (nothing can be read from a registry before any I/O). A parent
that does not exist, a cycle and a `base` of its own are problems naming the file, the image and
the fix.
"""

from __future__ import annotations

import re
from typing import Any

from enginefab.engines.locate import TomlText, similar
from enginefab.engines.problems import REFERENCE, Problem

#: what a derived image inherits from a matrix parent
INHERITED = ("engine_version", "framework", "framework_version", "python", "os", "accelerator", "arch")

#: a registry parent: a reference without credentials, pinned by a sha256 digest
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*@sha256:[0-9a-f]{64}$")

#: (file name, index of the [[image]] table)
Where = tuple[str, int]


def is_registry(key: str) -> bool:
    return "@sha256:" in key


def expand(tables: dict[str, tuple[TomlText, Any]]) -> tuple[dict[str, Any], dict[Where, list[Problem]]]:
    """The engine files' tables with each derived image's inherited fields filled in (file name →
    tables), and the problems of the derived images that cannot be (by where they are)."""
    raw: dict[Where, dict] = {}
    by_key: dict[str, Where] = {}
    for name, (_text, data) in tables.items():
        images = data.get("image") if isinstance(data, dict) else None
        for n, t in enumerate(images if isinstance(images, list) else []):
            if isinstance(t, dict):
                raw[(name, n)] = t
                for k in ("alias", "name"):
                    if isinstance(t.get(k), str):
                        by_key.setdefault(t[k], (name, n))
    problems: dict[Where, list[Problem]] = {}
    done: dict[Where, dict] = {}
    for where, t in raw.items():
        if isinstance(t.get("from"), str):
            _fill(where, raw, by_key, tables, done, problems, [])
    out: dict[str, Any] = {}
    for name, (_text, data) in tables.items():
        if isinstance(data, dict) and any(w[0] == name for w in done):
            data = dict(data)
            data["image"] = [done.get((name, n), t) for n, t in enumerate(data["image"])]
        out[name] = data
    return out, problems


def _fill(where: Where, raw: dict[Where, dict], by_key: dict[str, Where], tables, done: dict[Where, dict],
          problems: dict[Where, list[Problem]], chain: list[Where]) -> dict | None:
    """The table at `where` with what it inherits (None: it cannot be, and `problems` says why)."""
    if where in done:
        return done[where]
    if where in problems:
        return None
    t = raw[where]
    key = t.get("from")
    if not isinstance(key, str):
        return t
    file, n = where
    text = tables[file][0]
    who = f"{t.get('alias')} ({t.get('name') or t.get('alias')})"

    def fail(msg: str, fix: str, fieldname: str = "from") -> None:
        problems.setdefault(where, []).append(Problem(file, text.line_of(["image", n, fieldname]), who,
                                                      f"field {fieldname}: {msg}", fix, REFERENCE, "from"))

    if "base" in t:
        fail("a derived image's base is its parent: it has no base of its own", "remove `base` (or `from`)", "base")
    filled = dict(t)
    filled.setdefault("name", t.get("alias"))
    if "@" in key and not _PINNED.match(key):
        fail(f"{key!r} is not a registry image pinned by digest",
             "write registry/repository[:tag]@sha256:<64 hex> (the digest `enginefab push` or `skopeo inspect` prints)")
        return None
    if is_registry(key):
        if where not in problems:
            done[where] = filled
        return done.get(where)
    parent_at = by_key.get(key)
    if parent_at is None:
        close = similar(key, [k for k in by_key if not is_registry(k)], n=3)
        fail(f"no image {key!r} in engines/ to derive from",
             (f"did you mean {', '.join(close)}? " if close else "")
             + "name an alias or name of engines/, or a registry image by digest (registry/repository@sha256:…)")
        return None
    if parent_at in chain or parent_at == where:
        members = [*chain[chain.index(parent_at):], where] if parent_at in chain else [where]
        cycle = " → ".join(str(raw[w].get("alias")) for w in [*members, members[0]])
        for w in members:  # every image of the cycle says so
            t_w = raw[w]
            problems.setdefault(w, []).append(Problem(
                w[0], tables[w[0]][0].line_of(["image", w[1], "from"]),
                f"{t_w.get('alias')} ({t_w.get('name') or t_w.get('alias')})", f"field from: derived images form a cycle ({cycle})", "make one of them start from an image without `from`",
                REFERENCE, "from"))
        return None
    parent = _fill(parent_at, raw, by_key, tables, done, problems, [*chain, where])
    if parent is None:
        if where not in problems:
            fail(f"the parent {key!r} (engines/{parent_at[0]}) does not load", f"fix the parent {key!r} first")
        return None
    if parent_at[0] != file:
        fail(f"the parent {key!r} is an image of engines/{parent_at[0]}, another engine family",
             f"put the derived image in engines/{parent_at[0]}")
    _inherit(t, parent, filled, key, fail)
    if where in problems:
        return None
    done[where] = filled
    return filled


def _inherit(t: dict, parent: dict, filled: dict, key: str, fail) -> None:
    """Fill `filled` with what `t` inherits from `parent`; a field restated otherwise fails."""
    for k in INHERITED:
        if k in t and k in parent and t[k] != parent[k]:
            fail(f"{t[k]!r}, but a derived image has its parent's {k} ({parent[k]!r})",
                 f"remove {k} (it is inherited from {key!r})", k)
        elif k in parent:
            filled[k] = parent[k]
