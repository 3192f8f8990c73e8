"""Sandboxes for run steps and runtime checks: an unpacked root as ``/``, nothing of the host
visible but what the program needs read-only, no capability that reaches past the sandbox.

Every sandbox is started the same way (``sandbox_launch.py``, then bubblewrap):

* a user namespace of its own — an identity map of every id when we are root (the image's
  owners are the real ones, so layers record them as they are), our own id as 0 otherwise.
  Root in it has capabilities over that namespace only: ``open_by_handle_at`` needs
  CAP_DAC_READ_SEARCH of the host's namespace, mounts and namespaces belong to ours;
* bubblewrap makes the mount, PID, network (none but loopback), IPC, UTS and cgroup
  namespaces, drops every capability but the few the program needs (`STEP_CAPS`; the image
  user's probe keeps none), sets no_new_privs and loads `seccomp.program` for the host's CPU;
* the root is the only file system: a step sees its root writable at ``/`` (its changes are
  the layer), a check sees an overlay over the read-only image (a container's writable layer,
  in memory, discarded afterwards); `/tmp` and ``/dev/shm`` are its own; inputs are bound
  read-only at their container paths; ``/proc`` is the sandbox's, ``/sys`` is absent;
* a foreign arch (aarch64 on x86_64) runs through qemu-user registered in a binfmt_misc of the
  sandbox's own user namespace with the ``F`` flag (the kernel keeps qemu open), so every
  aarch64 program a step starts runs under qemu and no host path is visible at all. That needs
  Linux ≥ 6.7; on an older kernel a host-wide ``F`` registration (binfmt-support) serves.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from enginefab.assemble import seccomp
from enginefab.core import tools
from enginefab.core.errors import EnginefabError

QEMU = {"aarch64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}
LAUNCHER = Path(__file__).with_name("sandbox_launch.py")
#: what a run step may do as root of its namespace: own and chmod files, change uids (installers
#: drop to service users), signal its own processes — nothing else (no SETFCAP: layers carry no
#: file capabilities; no DAC_READ_SEARCH, MKNOD, NET_*, SYS_*)
STEP_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID", "CAP_SETGID", "CAP_KILL")
#: an image user's probe starts as root with these only, to drop to the image's user
DROP_CAPS = ("CAP_SETUID", "CAP_SETGID")
SETUP_FAILED = 125  # sandbox_launch.py's exit status when it could not set up

#: ELF header of a program for `arch` and the mask binfmt_misc compares it under (class, data,
#: version, any OS ABI, ET_EXEC or ET_DYN, e_machine) — the values Debian's qemu-user registers
_ELF = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00"
_ELF_MASK = b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
_MACHINE = {"aarch64": b"\xb7\x00", "x86_64": b"\x3e\x00"}


class SandboxError(EnginefabError):
    """A sandbox could not be set up here (not: a program that failed inside one)."""


def host_arch() -> str:
    m = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    command: list[str]


@dataclass(frozen=True)
class Sandbox:
    """One sandbox over `root`, for programs of `arch`."""

    root: Path
    arch: str
    env: Mapping[str, str]
    cwd: str = "/"
    #: "step": `root` itself, writable; "image": a discarded overlay over the read-only `root`
    mode: str = "step"
    #: host path → container path, read-only
    binds: tuple[tuple[Path, str], ...] = ()
    #: host path → container path, writable (a step's build directory)
    writable: tuple[tuple[Path, str], ...] = ()
    caps: tuple[str, ...] = ()
    #: a host directory as /tmp (a step's scratch space); None: a tmpfs of mode 1777
    tmp: Path | None = None
    #: more tmpfs of mode 1777 (container paths)
    tmpfs: tuple[str, ...] = ()
    hostname: str = "enginefab"
    #: more bubblewrap arguments (the accelerator level hands devices in)
    extra: tuple[str, ...] = ()


def _escape(b: bytes) -> str:
    return "".join(f"\\x{c:02x}" for c in b)


def binfmt_rule(arch: str) -> str:
    """The binfmt_misc registration of qemu-user for `arch` (P: argv[0] kept; F: qemu opened now).
    qemu must be static: it starts inside the sandbox's root, where no host library is."""
    if arch not in QEMU:
        raise SandboxError(f"cannot run {arch} programs here: enginefab knows qemu-user only for {', '.join(QEMU)}",
                           fix=f"build and check this image on an {arch} machine")
    qemu = tools.which(QEMU[arch])
    if not qemu:
        raise SandboxError(f"cannot run {arch} programs here: {QEMU[arch]} is missing",
                           fix="apt-get install qemu-user-static")
    if not is_static(Path(qemu)):
        raise SandboxError(f"{qemu} is linked dynamically: it cannot start inside a sandbox that shows none of the "
                           "host's libraries", fix="put a statically linked qemu-user first on PATH "
                           "(Debian: apt-get install qemu-user-static)")
    return f":enginefab-{arch}:M::{_escape(_ELF + _MACHINE[arch])}:{_escape(_ELF_MASK)}:{qemu}:PF"


def is_static(path: Path) -> bool:
    """Whether the ELF program at `path` needs no loader (no PT_INTERP)."""
    try:
        with open(path, "rb") as f:
            return not any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())
    except (OSError, ELFError):
        return False


def host_binfmt(arch: str, registry: Path = Path("/proc/sys/fs/binfmt_misc")) -> bool:
    """Whether the host already runs `arch` ELF programs through an interpreter it keeps open (F)."""
    magic = (_ELF + _MACHINE[arch]).hex()
    try:
        entries = [p for p in registry.iterdir() if p.name not in ("register", "status")]
    except OSError:
        return False
    for p in entries:
        try:
            lines = p.read_text().splitlines()
        except OSError:
            continue
        fields = dict(ln.split(" ", 1) for ln in lines if " " in ln)
        if "enabled" in lines and "F" in fields.get("flags:", "") and fields.get("magic", "").startswith(magic[:40]):
            return True
    return False


def _id_maps() -> dict[str, str]:
    if os.geteuid() == 0:
        return {"uid_map": "0 0 4294967295\n", "gid_map": "0 0 4294967295\n", "setgroups": "allow"}
    return {"uid_map": f"0 {os.geteuid()} 1\n", "gid_map": f"0 {os.getegid()} 1\n", "setgroups": "deny"}


def _bwrap_args(sb: Sandbox, new_root: Path, seccomp_fd: int) -> list[str]:
    bwrap = tools.which("bwrap")
    if not bwrap:
        raise SandboxError("bubblewrap (bwrap) is not installed", fix="apt-get install bubblewrap")
    args = [bwrap, "--bind", str(new_root), "/", "--dev", "/dev", "--proc", "/proc"]
    if sb.tmp is not None:
        args += ["--bind", str(sb.tmp), "/tmp"]
    else:
        args += ["--perms", "1777", "--tmpfs", "/tmp"]
    for path in ("/dev/shm", *sb.tmpfs):
        args += ["--perms", "1777", "--tmpfs", path]
    for src, dest in sb.binds:
        args += ["--ro-bind", str(src), dest]
    for src, dest in sb.writable:
        args += ["--bind", str(src), dest]
    args += ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", sb.hostname, "--die-with-parent", "--new-session", "--clearenv",
             "--cap-drop", "ALL", *[x for c in sb.caps for x in ("--cap-add", c)],
             "--seccomp", str(seccomp_fd), *sb.extra]
    args += ["--chdir", sb.cwd]
    for k, v in sorted(sb.env.items()):
        args += ["--setenv", k, v]
    return args


def _spec(sb: Sandbox, scratch: Path, error_fd: int) -> tuple[dict, Path]:
    """What the launcher sets up, and the host path that becomes /."""
    spec: dict = {**_id_maps(), "error_fd": error_fd, "parent": os.getpid(), "binfmt": [], "overlay": None}
    if sb.arch != host_arch() and not host_binfmt(sb.arch):
        spec["binfmt"].append({"dir": str(scratch / "binfmt"), "rule": binfmt_rule(sb.arch)})
    new_root = sb.root
    if sb.mode == "image":
        if any(c in str(sb.root) for c in ",:\\"):
            raise SandboxError(f"the unpacked image's path {sb.root} holds a ',', ':' or '\\' that an overlay "
                               "mount cannot take", fix="use a store path without those characters (--store)")
        spec["overlay"] = {"lower": str(sb.root), "scratch": str(scratch)}
        new_root = scratch / "merged"
    return spec, new_root


def execute(sb: Sandbox, argv: list[str], *, stdout: int | IO | None, stderr: int | IO | None,
            timeout: float) -> subprocess.CompletedProcess:
    """Run `argv` in the sandbox (stdin: /dev/null); exit status 124 after `timeout`, with the
    output so far. Killing us kills the sandbox: each process of the chain dies with its parent."""
    if host_arch() not in seccomp.ARCHES:
        raise SandboxError(f"no seccomp filter for a {host_arch()} host", fix="run on x86_64 or aarch64")
    scratch = Path(tempfile.mkdtemp(prefix="enginefab-sandbox-"))
    if sb.mode != "image":
        (scratch / "binfmt").mkdir()
    filt_r, filt_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        os.write(filt_w, seccomp.program(host_arch()))
        os.close(filt_w)
        spec, new_root = _spec(sb, scratch, err_w)
        cmd = [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec), "--",
               *_bwrap_args(sb, new_root, filt_r), *argv]
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, timeout=timeout,
                               pass_fds=(filt_r, err_w), umask=0o022, text=stdout == subprocess.PIPE)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            p = subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f} s")
        os.close(err_w)
        err_w = -1
        why = _read_all(err_r)
        if p.returncode == SETUP_FAILED and why:
            raise SandboxError(f"cannot set up the sandbox: {why}", fix=_fix(why))
        return p
    finally:
        for fd in (filt_r, err_r, err_w):
            if fd >= 0:
                os.close(fd)
        _remove_scratch(scratch)


def _read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode(errors="replace").strip()


def _fix(why: str) -> str:
    if "binfmt_misc" in why:
        return ("run on Linux 6.7 or later, or register qemu-user host-wide with the F flag "
                "(apt-get install binfmt-support qemu-user-static)")
    if "user namespace" in why:
        return "allow user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)"
    return "see the message; the sandbox needs user namespaces, overlayfs and bubblewrap"


def _remove_scratch(scratch: Path) -> None:
    try:
        shutil.rmtree(scratch)
    except FileNotFoundError:
        pass


def run(sb: Sandbox, argv: list[str], *, timeout: float = 600) -> Result:
    """Run `argv` in the sandbox, its output captured."""
    p = execute(sb, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return Result(p.returncode, p.stdout or "", p.stderr or "", list(p.args))


def available(arch: str | None = None) -> list[str]:
    """What is missing to run sandboxes (for `arch`) here: empty when everything is present."""
    missing = []
    if not tools.which("bwrap"):
        missing.append("bubblewrap")
    foreign = [a for a in ([arch] if arch else QEMU) if a != host_arch()]
    if any(not tools.which(QEMU[a]) for a in foreign if a in QEMU):
        missing.append("qemu-user-static")
    return missing


# -- run steps -------------------------------------------------------------------------------

def step(root: Path, arch: str, *, env: Mapping[str, str], binds: list[tuple[Path, str]], scratch: Path,
         cwd: str = "/", writable: Sequence[tuple[Path, str]] = ()) -> Sandbox:
    """A build step over `root` (writable, its changes become the layer): root of its own user
    namespace with `STEP_CAPS`, `binds` (host file → container path) read-only, `writable` ones
    (the build directory) writable, `scratch`/tmp as /tmp, a fixed host name and environment."""
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    os.chmod(scratch / "tmp", 0o1777)
    return Sandbox(root=root, arch=arch, env=dict(env), cwd=cwd, mode="step", binds=tuple(binds), caps=STEP_CAPS,
                   tmp=scratch / "tmp", writable=tuple(writable))


def run_step(sb: Sandbox, argv: list[str], *, log: Path, timeout: float) -> int:
    """Run a build step, its output into `log`; its exit status (124 on timeout)."""
    with open(log, "ab") as out:
        rc = execute(sb, argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        if rc == 124:
            out.write(f"\nenginefab: timed out after {timeout:.0f} s\n".encode())
        return rc
