"""`enginefab lock`: resolve every input of the chosen images, plan their layers, write
build/<alias>.json — all of them or none.

Resolution happens first, for every requested image; only when all succeeded are files written
(each atomically). An image's layers are a function of its own inputs (layering.py), so the
images not requested cannot have changed: their definitions are neither read nor written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from enginefab.core import ui
from enginefab.core.definition import (
    Base,
    Checks,
    Compression,
    Definition,
    FileEntry,
    ImageConfig,
    ImageIdentity,
    Layer,
    PythonTarget,
    RuntimeCheck,
)
from enginefab.core.errors import EnginefabError, LockError
from enginefab.core.fsutil import write_atomic
from enginefab.core.paths import definition_path
from enginefab.core.pytarget import Target, scheme_for
from enginefab.engines.matrix import Image, Matrix
from enginefab.engines.model import RunStep
from enginefab.lock import deb, layering, oci, pypi, stackdebs
from enginefab.lock.declared import (
    base_ref,
    git_input,
    manual_input,
    manual_pins,
    matrix_entry,
    stack_repos,
    run_input,
    url_input,
    vendor_wheel_input,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_INPUTS = "/enginefab/inputs"


@dataclass
class Resolved:
    parts: layering.Parts
    base: Base | None


def resolve(img: Image, m: Matrix, *, say: Callable[[str], None] = ui.info) -> Resolved:
    """Every input of one image, pinned (network: PyPI, apt, registries)."""
    p = m.platforms
    who = img.label()
    pins = manual_pins(m.root)
    target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
    scheme = scheme_for(img.python.site_packages, img.python.scripts, img.d.python)
    parts = layering.Parts(alias=img.alias, os_id=img.os_id, stack_id=img.stack_id or "", python_id=img.python_id,
                           scheme=scheme, interpreter=img.python.interpreter, arch=img.arch)

    # base image
    base = None
    ref = base_ref(img)
    if img.os.source == "oci" and ref is None:
        raise LockError(f"OS {img.os_id} comes from a base image but none is pinned for this image",
                        image=who, fix="pin one in platforms.toml (os.base or the stack's base) or on the image")
    if ref is not None:
        say(f"  {img.alias}: base {ref.reference}@{ref.digest[:19]}…")
        parts.base, manifest = oci.resolve(ref, img.oci_platform, image=who)
        base = Base(reference=ref.reference, digest=ref.digest, source=ref.source, trust=ref.trust, manifest=manifest)

    # OS root
    have: set[str] = set()
    apt = p.apt.get(img.os.apt) if img.os.apt else None
    if img.os.source == "debs":
        assert apt is not None
        say(f"  {img.alias}: {img.os_id} packages ({img.arch})")
        parts.os = deb.resolve([apt], img.arch, list(img.os.packages), set(), image=who, root=m.root)
        have |= deb.provided_names(parts.os)
    elif img.os.source == "manual":
        arch_file = img.os.archive.get(img.arch)  # type: ignore[arg-type]
        if arch_file is None:
            raise LockError(f"OS {img.os_id} is imported from an archive but none is declared for {img.arch}",
                            image=who, fix=f'add [os."{img.os_id}".archive.{img.arch}] to platforms.toml')
        parts.os = [manual_input(arch_file, pins)]

    # accelerator stack: its packages (over the base), files behind a login, then its run steps
    if img.stack:
        parts.stack = stack_inputs(img, m, parts.base, have, pins, say)
        have |= deb.provided_names([i for i in parts.stack if i.kind == "deb"])

    # Python runtime
    py = img.python
    if py.source == "debs":
        if apt is None:
            raise LockError(f"Python runtime {img.python_id} is made of packages, but {img.os_id} has no apt repository",
                            image=who, fix="set os.apt in platforms.toml")
        say(f"  {img.alias}: Python {py.version} packages")
        parts.python = deb.resolve([apt], img.arch, list(py.packages), have, image=who, root=m.root)
        have |= deb.provided_names(parts.python)
    elif py.source == "url":
        parts.python = [url_input(f) for f in py.files] + [run_input(s) for s in py.run]

    # extra OS packages
    if img.d.debs:
        parts.debs = extra_debs(img, m, parts.base, have, say)

    # Python packages: uv for versions, the index for files
    if img.d.requirements:
        say(f"  {img.alias}: Python closure of {', '.join(img.d.requirements)} for cp{target.py[0]}{target.py[1]} {img.arch}")
        pins_ = pypi.resolve_versions(list(img.d.requirements), list(img.d.constraints), target, image=who,
                                      exclude_newer=p.pypi.exclude_newer)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:  # one index page per package: fetch them together
            files = list(pool.map(lambda pin: pypi.select_file(pin, target, image=who), pins_))
        parts.wheels = [f for f in files if f.kind == "wheel"]
        sdists = [f for f in files if f.kind == "url"]
        if sdists:
            names = " ".join(f"{RUN_INPUTS}/{s.filename}" for s in sdists)
            step = RunStep(name="install-sdists",
                           script=f"{py.interpreter} -m pip install --no-deps --no-index --no-build-isolation "
                           f"--no-compile --prefix={Path(py.site_packages).parent.parent.parent} {names}\n")
            parts.builds = sdists + [run_input(step)]
    parts.wheels += [vendor_wheel_input(w) for w in img.d.wheels]
    parts.wheels.sort(key=lambda i: i.name)

    # files, manual files, build steps
    parts.archives = ([url_input(f) for f in img.d.files] + [git_input(g) for g in img.d.git]
                      + [manual_input(f, pins) for f in img.d.manual])
    parts.run = [run_input(s) for s in img.d.run]
    if parts.run and parts.archives:  # run steps see the image's own files
        parts.run = parts.archives + parts.run
        parts.archives = []

    # users, groups, home (ModelArts)
    c = img.conventions
    if img.os.source == "debs":
        parts.config = users_files(img)
    else:
        parts.config_run = [run_input(RunStep(name="ma-user", script=user_script(img)))]
    return Resolved(parts=parts, base=base)


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


def stack_inputs(img: Image, m: Matrix, base: list, have: set[str], pins: dict, say: Callable[[str], None]) -> list:
    assert img.stack is not None
    debs = []
    if img.stack.packages:
        debs = stackdebs.resolve(img, m, stack_repos(img, m), list(img.stack.packages), base=base, have=have,
                                 published=dict(img.stack.published), what=f"stack {img.stack_id} packages", say=say)
    return debs + [manual_input(f, pins) for f in img.stack.manual] + [run_input(s) for s in img.stack.run]


def extra_debs(img: Image, m: Matrix, base: list, have: set[str], say: Callable[[str], None]) -> list:
    apt = m.platforms.apt.get(img.os.apt) if img.os.apt else None
    if apt is None:
        raise LockError(f"field debs: {img.os_id} has no apt repository this lock can read", image=img.label(),
                        fix="install them with a run step, or use an OS with an apt repository")
    if img.os.source == "oci":  # over a base image: what it has installed is not fetched again
        return stackdebs.resolve(img, m, [(img.os.apt, apt)], list(img.d.debs), base=base, have=have,
                                 what="extra OS packages", say=say)
    return deb.resolve([apt], img.arch, list(img.d.debs), have, image=img.label(), root=m.root)


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


# -- definitions --------------------------------------------------------------------------


def make_definition(img: Image, m: Matrix, resolved: Resolved, layers: list[Layer], contract: Compression) -> Definition:
    s = img.summary()
    target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
    c = img.conventions
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": c.home}
    env.update(c.env)
    if img.stack:
        env.update(img.stack.env)
    env.update(img.d.env)
    # the image's Python scripts stay reachable whatever PATH a stack or the image sets
    if img.python.source != "debs" and img.python.scripts not in env["PATH"].split(":"):
        env["PATH"] = f"{img.python.scripts}:{env['PATH']}"
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
            platform=img.oci_platform,
        ),
        base=resolved.base,
        python=PythonTarget(version=img.d.python, interpreter=img.python.interpreter,
                            site_packages=img.python.site_packages, scripts=img.python.scripts, abi=target.abi,
                            platforms=target.platforms()),
        compression=contract,
        source_date_epoch=img.source_date_epoch,
        layers=layers,
        config=ImageConfig(user=f"{c.uid}:{c.gid}", workdir=c.home, env=env, cmd=[img.python.interpreter],
                           labels=labels),
        checks=Checks(runtime=runtime, accelerator_provides=list(img.stack.provides) if img.stack else [],
                      host_provides=list(img.stack.host) if img.stack else []),
        matrix=matrix_entry(img, m),
    )


def _runtime_check(engine, version: str) -> RuntimeCheck:
    return RuntimeCheck(engine=engine.name, import_name=engine.import_name, version_expr=engine.version_expr,
                        expect_version=version, smoke=engine.smoke)


@dataclass
class LockResult:
    written: list[str]
    unchanged: list[str]


def lock(m: Matrix, images: list[Image], contract: Compression, *,
         say: Callable[[str], None] = ui.info) -> LockResult:
    """Resolve and plan `images`, write each definition that changed; touch no other file.

    `contract` is what this machine's compressor fulfils for platforms.toml's compression
    (`assemble.compress.contract`, measured by the caller): the lock records it."""
    wanted = {i.alias for i in images}
    out: dict[Path, bytes] = {}
    for img in m.images:
        if img.alias not in wanted:
            continue
        say(f"[bold]lock[/] {img.label()}")
        try:
            r = resolve(img, m, say=say)
        except EnginefabError as e:  # shared indexes fail without knowing for which image
            if e.image:
                raise
            raise type(e)(e.message, image=img.label(), input=e.input, fix=e.fix) from None
        defn = make_definition(img, m, r, layering.plan_image(r.parts), contract)
        out[definition_path(m.root, img.alias)] = defn.to_json()
    written, unchanged = [], []
    for path, data in out.items():
        if path.is_file() and path.read_bytes() == data:
            unchanged.append(path.stem)
            continue
        write_atomic(path, data)
        written.append(path.stem)
    return LockResult(written=sorted(written), unchanged=sorted(unchanged))
