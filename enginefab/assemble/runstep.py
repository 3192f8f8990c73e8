"""Run-step layers: scripts executed in a sandbox over the lower layers; their diff is the layer.

1. The layer's file inputs (url, manual, …) are fetched first, so an unreachable input fails
   before any work; each is visible read-only at ``/enginefab/inputs/<file name>``, and one with
   a ``dest`` is also placed in the image (as files of this layer).
2. The layers below are unpacked into a private root (OCI whiteouts applied), and every path's
   lstat is recorded (the *before* snapshot). The layer's build-only `tools` (debs, wheels) are
   then applied over it and recorded again (`enginefab.assemble.tools`): the steps see them, the
   layer will not hold them.
3. Each run input's script runs, in order, with ``sh`` (or bash) from that root, umask 022, in
   the sandbox of `enginefab.assemble.sandbox`: root of a user namespace of its own with a few
   file capabilities only, a seccomp filter, network cut, host name ``enginefab``, a private
   /tmp and /dev/shm, nothing of the host but its inputs (read-only), and a fixed environment —
   PATH, HOME=/root, LANG=C.UTF-8, TZ=UTC, PYTHONHASHSEED=0, PYTHONDONTWRITEBYTECODE=1
   (import-time .pyc files are not reproducible), SOURCE_DATE_EPOCH, the compile environment
   (`BUILD_DIR` as working directory, prefix maps in CPPFLAGS, no build-id: `PREFIX_MAP`) and
   pip's offline settings — plus the step's own ``env``. Nothing else from the definition or the host reaches it, because nothing else is
   in the layer's cache key. An aarch64 root runs under qemu-user (binfmt_misc of the
   sandbox's own): every aarch64 program the script starts, too.
4. The *after* snapshot, with the tools taken back out, is compared with the first: the layer
   holds every path that is new or
   changed (type, mode, owner, and for non-directories inode, size, mtime or ctime), the
   directories above them with their current metadata, an OCI whiteout ``.wh.<name>`` for each
   deleted path (only the topmost of a deleted tree), and an opaque marker ``.wh..wh..opq`` for a
   directory all of whose former entries were deleted. The staging rules apply (setuid and
   group/world-write bits cleared, device nodes, FIFOs and sockets refused, relative symlinks
   may not climb out of the root), then the packer writes it like any other layer: sorted
   entries, fixed times and owners from the files.

``/dev``, ``/proc``, ``/sys``, ``/tmp`` and ``/enginefab`` (with the build directory) belong to
the sandbox: what a step writes there is not part of the layer. A failed step's error shows the
compiler's diagnostics and the log's tail (`steplog`) and names the file with the whole log. The layer is deterministic when the scripts are: same
lower layers, same inputs, same environment, same paths touched.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble import rootfs, sandbox, steplog
from enginefab.assemble.archives import stage_archive
from enginefab.assemble.image import LayerDesc
from enginefab.assemble.limits import ArchiveLimits
from enginefab.assemble.staging import Staging
from enginefab.assemble.tarball import tar_entries
from enginefab.assemble.tools import apply_tools, without_tools
from enginefab.core.definition import Definition, Input, Layer
from enginefab.core.errors import BuildError, UnsafeArchiveError

INPUTS = "/enginefab/inputs"
STEPS = "/enginefab/steps"
SANDBOX_PATHS = frozenset({"dev", "proc", "sys", "tmp", "enginefab"})
SHELLS = ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Entry:
    """What a snapshot remembers of a path."""

    kind: str  # d, f, l, or o (other: device, FIFO, socket)
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    target: str = ""

    def same_as(self, other: Entry) -> bool:
        if self.kind != other.kind or (self.mode, self.uid, self.gid) != (other.mode, other.uid, other.gid):
            return False
        if self.kind == "d":  # a directory's times change with its entries: those are compared one by one
            return True
        return (self.ino, self.size, self.mtime_ns, self.ctime_ns, self.target) == (
            other.ino, other.size, other.mtime_ns, other.ctime_ns, other.target)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISLNK(mode):
        return "l"
    return "o"


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path below `root` except the sandbox's own (relative, '/'-separated) → Entry."""
    out: dict[str, Entry] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                if not rel and e.name in SANDBOX_PATHS:
                    continue
                st = e.stat(follow_symlinks=False)
                k = _kind(st.st_mode)
                out[r] = Entry(k, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                               st.st_ctime_ns, st.st_ino, os.readlink(e.path) if k == "l" else "")
                if k == "d":
                    stack.append(r)
    return out


@dataclass
class Diff:
    changed: list[str]  # new or changed paths, sorted
    whiteouts: list[str]  # deleted paths to mask (topmost only)
    opaque: list[str]  # directories whose former entries are all gone
    dirs: list[str]  # directories the layer must carry (changed ones and parents), sorted


def _parent(p: str) -> str:
    return p.rpartition("/")[0]


def diff(before: dict[str, Entry], after: dict[str, Entry]) -> Diff:
    """The layer that turns `before` into `after` (pure: only the two snapshots)."""
    changed = sorted(p for p, e in after.items() if p not in before or not before[p].same_as(e))
    deleted = {p for p in before if p not in after}
    children: dict[str, int] = {}
    gone: dict[str, int] = {}
    for p in before:
        par = _parent(p)
        children[par] = children.get(par, 0) + 1
        if p in deleted:
            gone[par] = gone.get(par, 0) + 1
    opaque = sorted(d for d, n in gone.items()
                    if d and n == children[d] and d in after and after[d].kind == "d" and before[d].kind == "d")
    opq = set(opaque)
    whiteouts = []
    for p in sorted(deleted):
        par = _parent(p)
        if par in deleted or par in opq:
            continue  # masked by the parent's whiteout or opaque marker
        if par and (par not in after or after[par].kind != "d"):
            continue  # the parent became a file or link: it replaces the whole tree
        whiteouts.append(p)
    need: set[str] = set()
    for p in [*changed, *whiteouts, *opaque]:
        par = p if p in opq else _parent(p)
        while par and par not in need:
            need.add(par)
            par = _parent(par)
    dirs = sorted(need | {p for p in changed if after[p].kind == "d"})
    return Diff(changed=changed, whiteouts=whiteouts, opaque=opaque, dirs=dirs)


def _owner(uid: int, gid: int) -> tuple[int, int]:
    """Owners as the layer records them: a non-root builder's own ids are root's in the sandbox."""
    if os.geteuid() != 0:
        uid = 0 if uid == os.getuid() else uid
        gid = 0 if gid == os.getgid() else gid
    return uid, gid


def to_staging(d: Diff, after: dict[str, Entry], root: Path, staging: Staging, *, input: str) -> None:
    """Move the changed paths of `root` into `staging`, with whiteouts and opaque markers."""
    for rel in d.dirs:
        e = after[rel]
        staging.mkdir(rel, e.mode, *_owner(e.uid, e.gid), input=input)
    for rel in d.changed:
        e = after[rel]
        if rel.rpartition("/")[2].startswith(rootfs.WH):
            raise UnsafeArchiveError(f"the step created /{rel}, a name OCI reserves for whiteouts", input=input,
                                     fix="rename the file: names starting with .wh. mark deletions in layers")
        if e.kind == "d":
            continue
        if e.kind == "o":
            what = stat.filemode(os.lstat(root / rel).st_mode)[0]
            staging.refuse_special(rel, {"p": "FIFO", "s": "socket", "c": "device node", "b": "device node"}.get(
                what, "special file"), input=input)
        if e.kind == "l":
            staging.symlink(rel, e.target, *_owner(e.uid, e.gid), input=input)
        else:
            staging.adopt(rel, root / rel, e.mode, *_owner(e.uid, e.gid), input=input)
    for rel in d.whiteouts:
        par, _, name = rel.rpartition("/")
        staging.write_file(f"{par}/{rootfs.WH}{name}" if par else f"{rootfs.WH}{name}", b"", 0o644, input=input)
    for rel in d.opaque:
        staging.write_file(f"{rel}/{rootfs.OPAQUE}", b"", 0o644, input=input)


# -- running ----------------------------------------------------------------------------

#: the step's fixed build directory (writable, empty, its working directory; not part of the
#: layer): compilers are told to write it as "." into what they produce
BUILD_DIR = "/enginefab/build"
#: what every compiler of a step is given, so that the same sources give the same bytes: the
#: build directory written as "." (file names, __FILE__, DWARF comp_dir), no build-id note
#: (a hash of the output anyway, but of nothing a reviewer pins); SOURCE_DATE_EPOCH fixes
#: __DATE__/__TIME__ (gcc >= 7), Debian's binutils make `ar` deterministic by default.
#: In CPPFLAGS, not CFLAGS: setuptools (>= 72) and autoconf take a CFLAGS from the environment
#: *instead of* their own -O2 -g; CPPFLAGS and LDFLAGS they add. CMake reads neither CPPFLAGS nor
#: our intent: a CMake build sets CFLAGS/CXXFLAGS to $ENGINEFAB_CFLAGS itself (docs/build.md).
PREFIX_MAP = f"-ffile-prefix-map={BUILD_DIR}=. -fdebug-prefix-map={BUILD_DIR}=."
LDFLAGS = "-Wl,--build-id=none"


def step_env(defn: Definition, inp: Input) -> dict[str, str]:
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "TZ": "UTC", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1",
           "SOURCE_DATE_EPOCH": str(defn.source_date_epoch), "ENGINEFAB_INPUTS": INPUTS,
           "ENGINEFAB_BUILD": BUILD_DIR, "ENGINEFAB_CFLAGS": PREFIX_MAP, "CPPFLAGS": PREFIX_MAP, "LDFLAGS": LDFLAGS,
           "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    env.update(inp.env or {})
    return env


def _shell(root: Path) -> str:
    for sh in SHELLS:
        p = rootfs.resolve_in(root, sh, follow_last=True)
        if p.is_file():
            return "/" + sh
    raise BuildError("the layers below this run step have no /bin/sh or /bin/bash to run it with",
                     fix="add a shell (e.g. the `dash` or `bash` package) to a lower layer")


def _place(inputs: list[tuple[Input, Path]], root: Path, work: Path, limits: ArchiveLimits) -> None:
    """Inputs with a `dest` into the root, under the archive rules, as a layer applied on top."""
    placed = [(i, p) for i, p in inputs if i.dest]
    if not placed:
        return
    st = Staging(work / "placed", limits=limits)
    st.root.mkdir()
    for inp, path in placed:
        stage_archive(st, path, input=inp.ref, dest=inp.dest or "/", filename=inp.filename or inp.name,
                      unpack=inp.unpack, strip=inp.strip_components)
    tar = work / "placed.tar"
    with open(tar, "wb") as f:
        for chunk in tar_entries(st, 0):
            f.write(chunk)
    shutil.rmtree(st.root)
    rootfs.apply_layer(root, tar, "application/vnd.oci.image.layer.v1.tar")
    tar.unlink()


def build_run_layer(builder, defn: Definition, layer: Layer, staging: Staging, lower: list[LayerDesc]) -> None:
    image = defn.image.alias
    steps = [i for i in layer.inputs if i.kind == "run"]
    if not steps:
        raise BuildError(f"run layer {layer.id} has no run input", image=image)
    files = [(i, builder.fetch_input(i, image)) for i in layer.inputs if i.kind != "run"]
    missing = sandbox.available(defn.image.arch)
    if missing:
        raise BuildError(f"run steps for {defn.image.arch} need {' and '.join(missing)}", image=image,
                         fix=f"apt-get install {' '.join(missing)}")
    work = builder.store.tmp_dir("run")
    umask = os.umask(0o022)  # the unpacked root and the step's new files must not depend on the caller's
    try:
        root = work / "root"
        rootfs.unpack(root, [(builder.store.blob_path(d.digest), d.media_type) for d in lower])
        shell = _shell(root)
        before = tooled = snapshot(root)
        if layer.tools:
            apply_tools(builder, defn, list(layer.tools), root, work)
            tooled = snapshot(root)
        _place(files, root, work, builder.limits)
        binds = _binds(work, files)
        for n, step in enumerate(steps, 1):
            _run_one(builder, defn, layer, step, n, shell, root, work, binds)
        after = snapshot(root)
        mine = without_tools(before, tooled, after) if layer.tools else after
        to_staging(diff(before, mine), after, root, staging, input=f"run:{layer.id}")
    finally:
        os.umask(umask)
        shutil.rmtree(work, ignore_errors=True)


def _binds(work: Path, files: list[tuple[Input, Path]]) -> list[tuple[Path, str]]:
    """The read-only binds of a step: its inputs, the directory of its scripts."""
    (work / "steps").mkdir()
    (work / "inputs").mkdir()
    for i, _ in files:  # mount points, so that the directory itself can be bound read-only
        (work / "inputs" / (i.filename or i.name)).touch()
    binds = [(work / "inputs", INPUTS)] + [(p, f"{INPUTS}/{i.filename or i.name}") for i, p in files]
    binds.append((work / "steps", STEPS))
    return binds


def _run_one(builder, defn: Definition, layer: Layer, step: Input, n: int, shell: str, root: Path, work: Path,
             binds: list[tuple[Path, str]]) -> None:
    """Run one step in a fresh, empty build directory; a failure keeps its whole log."""
    image = defn.image.alias
    script = work / "steps" / f"{n:02d}-{step.name}.sh"
    script.write_text(step.script or "")
    build = work / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    log = work / "log"
    sb = sandbox.step(root, defn.image.arch, env=step_env(defn, step), binds=binds, scratch=work / "scratch",
                      writable=[(build, BUILD_DIR)], cwd=BUILD_DIR)
    try:
        rc = sandbox.run_step(sb, [shell, f"{STEPS}/{script.name}"], log=log, timeout=builder.run_timeout)
    except sandbox.SandboxError as e:
        raise BuildError(f"run step {step.name} of layer {layer.id}: {e.message}", image=image,
                         input=step.ref, fix=e.fix) from e
    if rc != 0:
        kept = builder.store.root / "logs" / f"{layer.id.replace('/', '_')}-{step.name}.log"
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(log, kept)
        excerpt = steplog.excerpt(log.read_text(errors="replace").splitlines())
        raise BuildError(
            f"run step {step.name} of layer {layer.id} exited with status {rc}; the whole log is {kept}\n    "
            + "\n    ".join(excerpt),
            image=image, input=step.ref, fix=f"read the whole log in {kept}; fix the script (or the sources) in "
            "engines/ and re-lock")
