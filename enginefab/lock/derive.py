"""The pure half of `enginefab lock`: from an image's index pins (what only a registry, the apt
archive or PyPI can say) and engines/ (everything else), its parts, layers and definition.

`lock` resolves the index pins online and calls this; `lock --check` takes the index pins out of
the committed definition and calls this offline: the definition must come out byte for byte
what is committed. So every pin engines/ states (files, vendor wheels, manual files, run steps,
the base reference, the users), the layers' order and contents, the image config and the checks
are proven; only the index pins themselves are taken on trust (`lock --verify` re-resolves them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enginefab.core.definition import (
    Base,
    Checks,
    Compression,
    Definition,
    FileEntry,
    ImageConfig,
    ImageIdentity,
    Input,
    Layer,
    Parent,
    PythonTarget,
    RuntimeCheck,
)
from enginefab.core.pytarget import Target, scheme_for
from enginefab.engines.matrix import Image, Matrix
from enginefab.engines.model import RunStep
from enginefab.lock import layering
from enginefab.lock.declared import (
    added_files,
    base_ref,
    git_input,
    manual_input,
    manual_pins,
    matrix_entry,
    run_input,
    url_input,
    vendor_wheel_input,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_INPUTS = "/enginefab/inputs"


@dataclass
class IndexPins:
    """What lock resolved online for one image: the only pins engines/ does not state itself."""

    base: list[Input] = field(default_factory=list)
    #: the platform manifest digest when the base reference is an index
    manifest: str | None = None
    os: list[Input] = field(default_factory=list)  # an OS made of Debian packages
    stack: list[Input] = field(default_factory=list)  # a stack's Debian packages (NVIDIA's CUDA debs)
    python: list[Input] = field(default_factory=list)  # a Python made of Debian packages
    debs: list[Input] = field(default_factory=list)
    wheels: list[Input] = field(default_factory=list)  # from the package index (not vendor wheels)
    sdists: list[Input] = field(default_factory=list)
    #: a derived image: the image it starts from (its layers are `base`)
    parent: Parent | None = None
    #: build-only inputs of the image's run steps (debs and wheels; lock/tools.py)
    tools: list[Input] = field(default_factory=list)


def parts_for(img: Image, m: Matrix, pins: IndexPins) -> layering.Parts:
    """The resolved inputs of `img`, grouped for the planner: `pins` and what engines/ declares.
    A derived image has only the parent's layers (`base`) below its own: no OS, stack, Python
    runtime or users of its own (the parent's are inherited)."""
    py = img.python
    parts = layering.Parts(alias=img.alias, os_id=img.os_id, stack_id=img.stack_id or "", python_id=img.python_id,
                           scheme=scheme_for(py.site_packages, py.scripts, img.d.python),
                           interpreter=py.interpreter, arch=img.arch)
    pins_ = manual_pins(m.root)
    parts.base = list(pins.base)
    derived = img.derived
    if img.os.source == "debs" and not derived:
        parts.os = list(pins.os)
    elif img.os.source == "manual" and img.arch in img.os.archive and not derived:
        parts.os = [manual_input(img.os.archive[img.arch], pins_)]  # type: ignore[index]
    if img.stack and not derived:
        parts.stack = (list(pins.stack) + [manual_input(f, pins_) for f in img.stack.manual]
                       + [run_input(s) for s in img.stack.run])
    if py.source == "debs" and not derived:
        parts.python = list(pins.python)
    elif py.source == "url" and not derived:
        parts.python = [url_input(f) for f in py.files] + [run_input(s) for s in py.run]
    _own_parts(img, pins, parts, pins_)
    parts.added = added_files(img, m.root)
    if derived:  # the parent's users, group and home
        return parts
    if img.os.source == "debs":
        parts.config = users_files(img)
    else:
        parts.config_run = [run_input(RunStep(name="ma-user", script=user_script(img)))]
    return parts


def _own_parts(img: Image, pins: IndexPins, parts: layering.Parts, pins_: dict) -> None:
    """The image's own packages, wheels, builds, files and run steps."""
    py = img.python
    parts.debs = list(pins.debs)
    parts.wheels = list(pins.wheels)
    if pins.sdists:
        names = " ".join(f"{RUN_INPUTS}/{s.filename}" for s in pins.sdists)
        step = RunStep(name="install-sdists",
                       script=f"{py.interpreter} -m pip install --no-deps --no-index --no-build-isolation "
                       f"--no-compile --prefix={Path(py.site_packages).parent.parent.parent} {names}\n")
        parts.builds = list(pins.sdists) + [run_input(step)]
    parts.wheels += [vendor_wheel_input(w) for w in img.d.wheels]
    parts.wheels.sort(key=lambda i: i.name)
    parts.archives = ([url_input(f) for f in img.d.files] + [git_input(g) for g in img.d.git]
                      + [manual_input(f, pins_) for f in img.d.manual])
    parts.run = [run_input(s) for s in img.d.run]
    parts.run_tools = list(pins.tools)
    parts.run_unreproducible = "; ".join(f"{s.name}: {s.unreproducible}" for s in img.d.run if s.unreproducible) or None
    if parts.run and parts.archives:  # run steps see the image's own files
        parts.run = parts.archives + parts.run
        parts.archives = []


def user_script(img: Image) -> str:
    """The step that gives the image its ModelArts user (uid from the conventions) and, for a stack
    with a service user (CANN's HwHiAiUser), that user with its own ids and the ModelArts user in
    its group: whoever held either uid or the group's gid before is removed first, by name."""
    c = img.conventions
    su = img.stack.service_user if img.stack else None
    lines = ["set -e", f"getent group {c.gid} >/dev/null || groupadd -g {c.gid} {c.group}"]
    if su:
        lines += [f"if getent passwd {su.name} >/dev/null; then userdel {su.name}; fi",
                  f"if getent group {su.group} >/dev/null; then groupdel {su.group}; fi"]
    for uid in [c.uid] + ([su.uid] if su else []):
        lines.append(f"if getent passwd {uid} >/dev/null; then userdel -r \"$(getent passwd {uid} | cut -d: -f1)\" || true; fi")
    if su:
        lines += [f"if getent group {su.gid} >/dev/null; then groupdel \"$(getent group {su.gid} | cut -d: -f1)\"; fi",
                  f"groupadd -g {su.gid} {su.group}",
                  f"useradd -M -d /home/{su.name} -u {su.uid} -g {su.gid} -s /sbin/nologin {su.name}"]
    lines.append(f"useradd -m -d {c.home} -u {c.uid} -g {c.gid}" + (f" -G {su.group}" if su else "") + f" -s /bin/bash {c.user}")
    lines.append(f"chmod 750 {c.home}")
    return "\n".join(lines) + "\n"


def base_of(img: Image, manifest: str | None) -> Base | None:
    ref = base_ref(img)
    if ref is None:
        return None
    return Base(reference=ref.reference, digest=ref.digest, source=ref.source, trust=ref.trust, manifest=manifest)


def users_files(img: Image) -> list[FileEntry]:
    c = img.conventions
    passwd = (
        "root:x:0:0:root:/root:/bin/bash\n"
        f"{c.user}:x:{c.uid}:{c.gid}::{c.home}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\n{c.group}:x:{c.gid}:\nnogroup:x:65534:\n"
    home_parts = c.home.strip("/").split("/")
    dirs = ["/".join(home_parts[:i]) for i in range(1, len(home_parts))]
    return (
        [FileEntry(path="/etc", type="dir", mode=0o755),
         FileEntry(path="/etc/passwd", content=passwd, mode=0o644),
         FileEntry(path="/etc/group", content=group, mode=0o644),
         FileEntry(path="/tmp", type="dir", mode=0o1777)]
        + [FileEntry(path=f"/{d}", type="dir", mode=0o755) for d in dirs]
        + [FileEntry(path=c.home, type="dir", mode=0o750, uid=c.uid, gid=c.gid)]
    )



def make_definition(img: Image, m: Matrix, base: Base | None, layers: list[Layer], contract: Compression,
                    parent: Parent | None = None) -> Definition:
    """The definition of `img`: its layers and everything else engines/ says about it (a derived
    image: its parent's config, inherited and extended)."""
    s = img.summary()
    target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
    runtime = [_runtime_check(img.engine, img.d.engine_version)]
    fw = m.engines.get(img.framework)
    if fw is not None and fw is not img.engine:
        runtime.append(_runtime_check(fw, img.framework_version))
    return Definition(
        image=ImageIdentity(
            name=s["name"], alias=s["alias"], engine=s["engine"], engine_version=s["engine_version"],
            framework=s["framework"], framework_version=s["framework_version"], accelerator=s["accelerator"],
            accelerator_version=s["accelerator_version"], cudnn=s["cudnn"], nccl=s["nccl"], min_driver=s["min_driver"],
            python=s["python"], os=s["os"], os_version=s["os_version"], glibc=img.os.glibc, arch=s["arch"],
            platform=img.oci_platform, kind="model" if img.d.kind == "model" else None,
        ),
        base=base,
        parent=parent,
        python=PythonTarget(version=img.d.python, interpreter=img.python.interpreter,
                            site_packages=img.python.site_packages, scripts=img.python.scripts, abi=target.abi,
                            platforms=target.platforms()),
        compression=contract,
        source_date_epoch=img.source_date_epoch,
        layers=layers,
        config=image_config(img, parent),
        checks=Checks(runtime=runtime, accelerator_provides=list(img.stack.provides) if img.stack else [],
                      host_provides=list(img.stack.host) if img.stack else []),
        matrix=matrix_entry(img, m),
    )


def _labels(img: Image) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": img.name,
        "org.opencontainers.image.version": img.d.engine_version,
        "org.opencontainers.image.description": img.d.description or f"{img.engine.display} {img.d.engine_version}",
        "io.enginefab.alias": img.alias,
        "io.enginefab.engine": f"{img.engine.name} {img.d.engine_version}",
        "io.enginefab.framework": f"{img.framework} {img.framework_version}",
        "io.enginefab.python": img.d.python,
        "io.enginefab.accelerator": img.accelerator + (f" {img.accelerator_version}" if img.accelerator_version else ""),
    }
    if img.stack:
        for key in ("cudart", "cudnn", "nccl", "min_driver"):
            val = getattr(img.stack, key)
            if val:
                labels[f"io.enginefab.{img.stack.kind}.{key.replace('_', '-')}"] = val
    return labels


def image_config(img: Image, parent: Parent | None) -> ImageConfig:
    """The image config: the conventions, the stack's and the image's environment; a derived
    image's is its parent's (user, working directory, command, labels) with its own env and
    labels over it."""
    if parent is not None:
        pc = parent.config
        env = dict(pc.env)
        env.update(img.d.env)
        labels = dict(pc.labels)
        labels.update(_labels(img))
        labels["io.enginefab.parent"] = f"{parent.label}@{parent.manifest}" if parent.alias else parent.label
        return ImageConfig(user=pc.user, workdir=pc.workdir, env=env, entrypoint=pc.entrypoint,
                           cmd=img.d.cmd or pc.cmd, labels=labels,
                           exposed_ports=sorted({*(pc.exposed_ports or []), *img.d.ports}) or None)
    c = img.conventions
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": c.home}
    env.update(c.env)
    if img.stack:
        env.update(img.stack.env)
    env.update(img.d.env)
    # the image's Python scripts stay reachable whatever PATH a stack or the image sets
    if img.python.source != "debs" and img.python.scripts not in env["PATH"].split(":"):
        env["PATH"] = f"{img.python.scripts}:{env['PATH']}"
    return ImageConfig(user=f"{c.uid}:{c.gid}", workdir=c.home, env=env, cmd=img.d.cmd or [img.python.interpreter],
                       labels=_labels(img), exposed_ports=list(img.d.ports) or None)


def _runtime_check(engine, version: str) -> RuntimeCheck:
    return RuntimeCheck(engine=engine.name, import_name=engine.import_name, version_expr=engine.version_expr,
                        expect_version=version, smoke=engine.smoke)


def index_pins_of(defn: Definition, img: Image) -> IndexPins:
    """The index pins a committed definition holds, read by where the planner puts them. Inputs
    anywhere else are not pins: `expected` rebuilds those slots from engines/."""
    pins = IndexPins(manifest=defn.base.manifest if defn.base else None, parent=defn.parent)
    vendor = {w.name for w in img.d.wheels}
    for layer in defn.layers:
        prefix = layer.id.partition("/")[0]
        if prefix == "base":
            pins.base += layer.inputs
        elif prefix == "os" and img.os.source == "debs":
            pins.os += layer.inputs
        elif prefix == "python" and img.python.source == "debs":
            pins.python += layer.inputs
        elif prefix in ("stack", "stack-setup"):
            pins.stack += [i for i in layer.inputs if i.kind == "deb"]
        elif prefix == "debs":
            pins.debs += layer.inputs
        elif prefix in ("wheel", "wheels"):
            pins.wheels += [i for i in layer.inputs if i.name not in vendor]
        elif prefix in ("compile", "build"):
            pins.sdists += [i for i in layer.inputs if i.kind != "run"]
        elif prefix == "run":
            pins.tools += layer.tools or []
    return pins


def expected(defn: Definition, img: Image, m: Matrix) -> Definition:
    """What `enginefab lock` writes for `img` if the index still answers what `defn` pinned."""
    pins = index_pins_of(defn, img)
    parts = parts_for(img, m, pins)
    return make_definition(img, m, base_of(img, pins.manifest), layering.plan_image(parts), defn.compression,
                           parent=pins.parent)
