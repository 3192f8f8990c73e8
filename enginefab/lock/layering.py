"""Layer planning: a pure function from ONE image's resolved inputs to its layers.

An image's layers depend on its own inputs and on nothing else — not on which other images the
matrix holds — so adding, removing or editing one image can never change another image's layers
or digest. Sharing across the matrix comes from identical inputs giving identical layers, never
from the planner knowing the other images. docs/layering.md has the argument and the measurements
(bench/layering.py) behind the constants below.

1. platform parts are one layer each, in a fixed order — base image, OS packages, Python
   runtime, accelerator stack, extra OS packages. The Python runtime sits below the stack because
   vendor stack installers need it (CANN's installs its te/topi/hccl wheels with pip). A stack
   made of packages and steps (NVIDIA's debs, then the /usr/local/cuda link and ldconfig) is two
   layers, ``stack/`` and ``stack-setup/``;
2. Python wheels of ``ALONE`` bytes or more get a layer of their own: the engine (torch,
   tensorflow: the big-wheel rule) and the few other heavy wheels (numpy, scipy, grpcio…), so
   a difference elsewhere never costs their sharing; so do wheels of unknown size (vendor engine
   wheels whose vendor publishes only the hash);
3. the other wheels, sorted by name, are cut into groups at *content-defined boundaries*: a group
   ends after every wheel whose name hashes to 0 modulo ``GROUP``. A boundary depends only on the
   wheel's name, so adding or removing a wheel changes its own group (or joins two), and a new
   version of a wheel changes only the group holding it;
4. build steps (sdists, run steps), archives and the config layer (users, home) close the list;
5. an image over ``BUDGET`` OCI layers (a base image counts with all its blobs) is planned again
   one level coarser — twice the group size (a subset of the boundaries: neighbouring groups
   join) and twice the singleton threshold — until it fits. The level is a function of the
   image's own inputs too.

A layer's identity is what its bytes depend on: its kind, its inputs (by sha256, with where and
how they are unpacked), the install scheme and interpreter of its wheels, the files and owners
it writes. Its id is readable and ends in the hash of exactly that (``wheels/oauthlib+3-1cb412f9``):
the same id means the same bytes under the same compression contract. The same wheels for
another Python (another site-packages, another shebang) have another id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enginefab.core import canonical
from enginefab.core.definition import Definition, FileEntry, Input, Layer
from enginefab.core.errors import LockError
from enginefab.core.pytarget import scheme_for

#: the engine: always a layer of its own, whatever the level (the big-wheel rule)
BIG = 32 << 20
#: a wheel this size or more gets its own layer at level 0 (doubles per level, up to BIG)
ALONE = 1 << 20
#: expected wheels per group at level 0 (a power of two: each level keeps a subset of the boundaries)
GROUP = 4
BUDGET = 40
#: bump when the grouping rule changes (it changes every layer id of every image)
SCHEME = "enginefab-layering/2"


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
    run_tools: list[Input] = field(default_factory=list)  # build-only: the run steps see them, the layer lacks them
    run_unreproducible: str | None = None  # why the run layer's bytes differ between builds (declared)
    config: list[FileEntry] = field(default_factory=list)
    config_run: list[Input] = field(default_factory=list)
    #: the image's own files from the project (`add`): the top layer
    added: list[FileEntry] = field(default_factory=list)
    scheme: dict[str, str] = field(default_factory=dict)
    interpreter: str = ""
    arch: str = ""


#: Input fields that say where a file came from or why, not what ends up in the layer
_NOT_BYTES = {"url", "where", "requested_by", "source", "trust"}


def identity(layer: Layer) -> str:
    """The hash of what the layer's bytes depend on (everything but its id, comment and the
    inputs' download locations): equal for two layers exactly when they are the same bytes
    under the same compression contract and SOURCE_DATE_EPOCH (a run layer also depends on the
    layers below it: the action-cache key adds them)."""
    obj = layer.model_dump(mode="json", exclude={"id", "comment"}, exclude_none=True)
    for part in ("inputs", "tools"):
        if part in obj:
            obj[part] = [{k: v for k, v in i.items() if k not in _NOT_BYTES} for i in obj[part]]
    return canonical.key_of(obj)[:8]


def _sorted(inputs: list[Input]) -> list[Input]:
    """Inputs sorted by (kind, name, sha256), except that run steps keep the order they were
    declared in among themselves (the sort is stable): they run in that order."""
    def key(i: Input) -> tuple[str, str, str]:
        return (i.kind, "", "") if i.kind == "run" else (i.kind, i.name, i.sha256 or "")

    return sorted(inputs, key=key)


def _layer(kind: str, name: str, comment: str, inputs: list[Input] | None = None, files: list[FileEntry] | None = None,
           **extra) -> Layer:
    """A layer whose id is `name` followed by the hash of its identity."""
    draft = Layer(id=name, kind=kind, inputs=_sorted(list(inputs or [])), files=list(files or []),  # type: ignore[arg-type]
                  comment=comment, **extra)
    return draft.model_copy(update={"id": f"{name}-{identity(draft)}"})


def _head(inputs: list[Input]) -> str:
    """A readable name for a group: its biggest input (ties: by name), and how many others."""
    names = sorted({i.name for i in inputs}, key=lambda n: (-max(i.size for i in inputs if i.name == n), n))
    head = names[0] if names else "empty"
    return head + (f"+{len(names) - 1}" if len(names) > 1 else "")


def _base_blobs(base: list[Input]) -> int:
    """How many layers a base image adds (its layer blobs; one if they were never resolved)."""
    return sum(1 for i in base if i.media_type and (".layer." in i.media_type or ".rootfs.diff." in i.media_type)) or 1


def _kind_of(inputs: list[Input]) -> str:
    if all(i.kind == "deb" for i in inputs):
        return "debs"
    return "run" if any(i.kind == "run" for i in inputs) else "archives"


def boundary(name: str, group: int) -> bool:
    """Does a wheel group end after the wheel called `name`? A property of the name alone."""
    h = int(canonical.sha256_hex(f"{SCHEME}:{name}".encode())[:16], 16)
    return h % group == 0


def wheel_groups(wheels: list[Input], *, alone: int = ALONE, group: int = GROUP,
                 big: int = BIG) -> tuple[list[list[Input]], list[Input]]:
    """(groups in name order — a singleton for each wheel of `alone` bytes or more —, the big
    wheels). Pure in the image's wheel list."""
    bigs, out, run = [], [], []
    for w in sorted(wheels, key=lambda i: (i.name, i.sha256 or "")):
        if w.size >= big or w.size == 0:
            bigs.append(w)
        elif w.size >= alone:
            out.append([w])
        else:
            run.append(w)
            if boundary(w.name, group):
                out.append(run)
                run = []
    if run:
        out.append(run)
    out.sort(key=lambda g: g[0].name)
    return out, bigs


def plan_image(p: Parts, *, budget: int = BUDGET, big: int = BIG, alone: int = ALONE, group: int = GROUP) -> list[Layer]:
    """The layers of one image, bottom to top."""
    bottom: list[Layer] = []
    if p.base:
        ref = next((i for i in p.base if i.media_type is None), p.base[0])
        bottom.append(Layer(id=f"base/{ref.name}@{(ref.sha256 or '')[:12]}", kind="base", inputs=p.base,
                            comment=f"base image {ref.url}"))
    if p.os:
        bottom.append(_layer(_kind_of(p.os), f"os/{p.os_id}-{p.arch}", f"{p.os_id} ({len(p.os)} packages)", p.os))
    if p.python:
        bottom.append(_layer(_kind_of(p.python), f"python/{p.python_id}-{p.arch}", f"Python runtime {p.python_id}",
                             p.python))
    if p.stack:
        debs, rest = [i for i in p.stack if i.kind == "deb"], [i for i in p.stack if i.kind != "deb"]
        if debs and rest:  # packages (NVIDIA's CUDA debs), then what sets them up (links, ldconfig)
            bottom.append(_layer("debs", f"stack/{p.stack_id}-{p.arch}", f"accelerator stack {p.stack_id}", debs))
            bottom.append(_layer(_kind_of(rest), f"stack-setup/{p.stack_id}-{p.arch}",
                                 f"accelerator stack {p.stack_id}: setup", rest))
        else:
            bottom.append(_layer(_kind_of(p.stack), f"stack/{p.stack_id}-{p.arch}", f"accelerator stack {p.stack_id}",
                                 p.stack))
    if p.debs:
        bottom.append(_layer("debs", f"debs/{_head(p.debs)}", "extra OS packages", p.debs))

    top: list[Layer] = []
    if p.builds:
        top.append(_layer("run", f"compile/{_head(p.builds)}", "packages built from source", p.builds))
    if p.archives:
        top.append(_layer("archives", f"files/{_head(p.archives)}", "files", p.archives))
    if p.run:
        tools = sorted(p.run_tools, key=lambda i: (i.kind, i.name)) or None
        top.append(_layer("run", f"run/{_head(p.run)}", "image build steps", p.run, tools=tools,
                          unreproducible=p.run_unreproducible))
    if p.config_run:
        top.append(_layer("run", f"config/{_head(p.config_run)}", "users and home", p.config_run))
    if p.config:
        top.append(_layer("files", "config/users", "ModelArts user, group and home",
                          files=sorted(p.config, key=lambda f: f.path)))  # the id must not depend on the order given
    if p.added:
        top.append(_layer("files", "add/files", "the image's own files", files=sorted(p.added, key=lambda f: f.path)))

    # a base counts with all its blobs: the budget is on the image's OCI layers
    room = budget - len(bottom) - len(top) - (_base_blobs(p.base) - 1 if p.base else 0)
    while True:
        groups, bigs = wheel_groups(p.wheels, alone=alone, group=group, big=big)
        if len(groups) + len(bigs) <= room or (alone >= big and len(groups) <= 1):
            break
        alone, group = min(alone * 2, big), group * 2

    wheel = {"scheme": p.scheme, "interpreter": p.interpreter}
    mid: list[Layer] = []
    for g in groups:
        if len(g) == 1:
            mid.append(_layer("wheels", f"wheel/{g[0].name}-{g[0].version}", f"{g[0].name} {g[0].version}", g, **wheel))
        else:
            mid.append(_layer("wheels", f"wheels/{_head(g)}", f"{len(g)} Python packages", g, **wheel))
    for w in bigs:
        mid.append(_layer("wheels", f"wheel/{w.name}-{w.version}", f"{w.name} {w.version}", [w], **wheel))
    return bottom + mid + top


def plan(images: list[Parts], **kw) -> dict[str, list[Layer]]:
    """Every image planned on its own (see plan_image): the same result as planning any subset."""
    return {p.alias: plan_image(p, **kw) for p in images}


#: id prefix → the Parts slot its inputs came from (build/: what compile/ was called before)
_SLOTS = {"base": "base", "os": "os", "stack": "stack", "stack-setup": "stack", "python": "python", "debs": "debs", "wheels": "wheels",
          "wheel": "wheels", "compile": "builds", "build": "builds", "files": "archives", "run": "run"}


def parts_of(defn: Definition) -> Parts:
    """Invert the id prefixes: the resolved inputs of an already-locked image, which
    `plan_image` maps back to its layers (`lock --check` compares them)."""
    p = Parts(alias=defn.image.alias, arch=defn.image.arch, interpreter=defn.python.interpreter,
              scheme=scheme_for(defn.python.site_packages, defn.python.scripts, defn.python.version))
    for layer in defn.layers:
        prefix, _, rest = layer.id.partition("/")
        if prefix == "config":
            if layer.kind == "files":
                p.config = list(layer.files)
            else:
                p.config_run = list(layer.inputs)
            continue
        if prefix == "add":
            p.added = list(layer.files)
            continue
        if prefix not in _SLOTS:
            raise LockError(f"build/{defn.image.alias}.json: layer {layer.id}: no planner makes a layer {prefix}/",
                            image=defn.image.alias, fix=f"re-run `enginefab lock {defn.image.alias}`")
        getattr(p, _SLOTS[prefix]).extend(layer.inputs)
        if prefix == "run":
            p.run_tools.extend(layer.tools or [])
            p.run_unreproducible = layer.unreproducible
        if prefix in ("os", "stack", "python"):
            setattr(p, f"{prefix}_id", rest.rsplit("-", 2)[0])
    p.wheels.sort(key=lambda i: i.name)
    return p
