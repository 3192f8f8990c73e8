"""REFERENCE PEER for bench/layering.py — NOT the planner enginefab uses.

A verbatim copy of the layer planner as it was before issue 14 (enginefab/lock/layering.py at
a60e593; only its imports follow the core/ layout): small wheels grouped by *sharing signature*,
the set of images of the whole matrix that install the same file, so every layer is a function
of the whole matrix. Kept here only so the benchmark (and the churn test, which it fails) can
measure today's churn and sharing next to the new planner in the same run; never import it from
enginefab.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from enginefab.core import canonical
from enginefab.core.definition import FileEntry, Input, Layer

BIG = 32 << 20
BUDGET = 40


@dataclass
class Parts:
    """One image's resolved inputs, grouped by where they sit in the image."""

    alias: str
    base: list[Input] = field(default_factory=list)
    os: list[Input] = field(default_factory=list)
    os_id: str = ""
    stack: list[Input] = field(default_factory=list)  # archives/manual (placed), then run inputs
    stack_id: str = ""
    python: list[Input] = field(default_factory=list)
    python_id: str = ""
    debs: list[Input] = field(default_factory=list)
    wheels: list[Input] = field(default_factory=list)
    builds: list[Input] = field(default_factory=list)  # sdists + the run input that installs them
    archives: list[Input] = field(default_factory=list)
    run: list[Input] = field(default_factory=list)
    config: list[FileEntry] = field(default_factory=list)
    config_run: list[Input] = field(default_factory=list)
    scheme: dict[str, str] = field(default_factory=dict)
    interpreter: str = ""
    arch: str = ""


def _short(inputs: list[Input]) -> str:
    return canonical.key_of(sorted(i.sha256 or f"awaiting:{i.name}" for i in inputs))[:8]


def _named(prefix: str, inputs: list[Input]) -> str:
    names = sorted({i.name for i in inputs}, key=lambda n: (-max(i.size for i in inputs if i.name == n), n))
    head = names[0] if names else "empty"
    more = f"+{len(names) - 1}" if len(names) > 1 else ""
    return f"{prefix}/{head}{more}-{_short(inputs)}"


def _layer_of_inputs(kind: str, id_: str, inputs: list[Input], comment: str, **extra) -> Layer:
    """Inputs sorted by (kind, name, sha256), except that run steps keep the order they were
    declared in among themselves (the sort is stable): they run in that order."""
    def key(i: Input) -> tuple[str, str, str]:
        return (i.kind, "", "") if i.kind == "run" else (i.kind, i.name, i.sha256 or "")

    return Layer(id=id_, kind=kind, inputs=sorted(inputs, key=key), comment=comment, **extra)  # type: ignore[arg-type]


def _base_blobs(base: list[Input]) -> int:
    """How many layers a base image adds (its layer blobs; one if they were never resolved)."""
    return sum(1 for i in base if i.media_type and (".layer." in i.media_type or ".rootfs.diff." in i.media_type)) or 1


def _kind_of_stack(inputs: list[Input]) -> str:
    return "run" if any(i.kind == "run" for i in inputs) else "archives"


def plan(images: list[Parts], *, big: int = BIG, budget: int = BUDGET) -> dict[str, list[Layer]]:
    # sharing signatures of the small wheels, across the whole matrix
    def is_big(w: Input) -> bool:
        return w.size >= big or w.size == 0

    users: dict[str, set[str]] = {}
    for p in images:
        for w in p.wheels:
            if not is_big(w):
                users.setdefault(w.sha256, set()).add(p.alias)

    out: dict[str, list[Layer]] = {}
    for p in images:
        layers: list[Layer] = []
        if p.base:
            ref = next((i for i in p.base if i.media_type is None), p.base[0])
            layers.append(Layer(id=f"base/{ref.name}@{(ref.sha256 or '')[:12]}", kind="base", inputs=p.base,
                                comment=f"base image {ref.url}"))
        if p.os:
            kind = "debs" if all(i.kind == "deb" for i in p.os) else "archives"
            layers.append(_layer_of_inputs(kind, f"os/{p.os_id}-{p.arch}-{_short(p.os)}", p.os,
                                           f"{p.os_id} ({len(p.os)} packages)"))
        if p.python:
            kind = "debs" if all(i.kind == "deb" for i in p.python) else _kind_of_stack(p.python)
            layers.append(_layer_of_inputs(kind, f"python/{p.python_id}-{p.arch}-{_short(p.python)}", p.python,
                                           f"Python runtime {p.python_id}"))
        if p.stack:
            layers.append(_layer_of_inputs(_kind_of_stack(p.stack), f"stack/{p.stack_id}-{p.arch}-{_short(p.stack)}",
                                           p.stack, f"accelerator stack {p.stack_id}"))
        if p.debs:
            layers.append(_layer_of_inputs("debs", _named("debs", p.debs), p.debs, "extra OS packages"))

        wheel_extra = {"scheme": p.scheme, "interpreter": p.interpreter}
        groups: dict[frozenset[str], list[Input]] = {}
        bigs: list[Input] = []
        for w in p.wheels:
            if is_big(w):
                bigs.append(w)
            else:
                groups.setdefault(frozenset(users[w.sha256]), []).append(w)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[0]), _short(kv[1])))
        # a base counts with all its blobs: the budget is on the image's OCI layers
        fixed = (len(layers) + (_base_blobs(p.base) - 1 if p.base else 0) + len(bigs) + bool(p.builds)
                 + bool(p.archives) + bool(p.run) + bool(p.config_run) + bool(p.config))
        while len(ordered) >= 2 and fixed + len(ordered) > budget:
            # merge the two least-shared groups (they sit at the end)
            (sa, a), (sb, b) = ordered[-2], ordered[-1]
            ordered = ordered[:-2] + [(sa & sb, a + b)]
        for _sig, ws in ordered:
            layers.append(_layer_of_inputs("wheels", _named("wheels", ws), ws, f"{len(ws)} Python packages", **wheel_extra))
        for w in sorted(bigs, key=lambda i: i.name):
            layers.append(_layer_of_inputs("wheels", f"wheel/{w.name}-{w.version}-{w.sha256[:8]}", [w],
                                           f"{w.name} {w.version}", **wheel_extra))
        if p.builds:
            layers.append(_layer_of_inputs("run", _named("build", p.builds), p.builds, "packages built from source"))
        if p.archives:
            layers.append(_layer_of_inputs("archives", _named("files", p.archives), p.archives, "files"))
        if p.run:
            layers.append(_layer_of_inputs("run", _named("run", p.run), p.run, "image build steps"))
        if p.config_run:
            layers.append(_layer_of_inputs("run", _named("config", p.config_run), p.config_run, "users and home"))
        if p.config:
            files = sorted(p.config, key=lambda f: f.path)  # the id must not depend on the order given
            key = canonical.key_of([f.model_dump(mode="json") for f in files])[:8]
            layers.append(Layer(id=f"config/users-{key}", kind="files", files=files,
                                comment="ModelArts user, group and home"))
        out[p.alias] = layers
    return out
