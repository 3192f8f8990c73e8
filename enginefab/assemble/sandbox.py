"""Run a program inside an unpacked image: bubblewrap, network cut, as the image's user; an
aarch64 image runs through qemu-user (there is no binfmt_misc here, so qemu is called
explicitly: ``/qemu -L / program``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from enginefab.core.errors import CheckError

QEMU = {"aarch64": "qemu-aarch64-static", "x86_64": "qemu-x86_64-static"}
QEMU_MOUNT = "/.enginefab-qemu"


def host_arch() -> str:
    m = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    command: list[str]


def bwrap_command(root: Path, arch: str, argv: list[str], *, env: dict[str, str], uid: int | None, gid: int | None,
                  cwd: str, network: bool = False, writable: bool = False) -> list[str]:
    """bwrap argv. uid None: stay root (real root only). As root, no user namespace is made, so
    that the image's own uids are the real ones and a program can drop to them itself."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise CheckError("bubblewrap (bwrap) is not installed", fix="apt-get install bubblewrap")
    cmd = [bwrap, "--bind" if writable else "--ro-bind", str(root), "/", "--dev", "/dev", "--proc", "/proc",
           "--tmpfs", "/tmp", "--die-with-parent", "--new-session", "--clearenv",
           "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        cmd.append("--unshare-net")
    if os.geteuid() != 0:
        cmd += ["--unshare-user"]
        if uid is not None:
            cmd += ["--uid", str(uid), "--gid", str(gid if gid is not None else uid)]
    if (root / cwd.lstrip("/")).is_dir():
        cmd += ["--chdir", cwd]
    for k, v in sorted(env.items()):
        cmd += ["--setenv", k, v]
    if arch != host_arch():
        qemu = shutil.which(QEMU.get(arch, ""))
        if not qemu:
            raise CheckError(f"cannot run {arch} programs here: {QEMU.get(arch)} is missing",
                             fix="apt-get install qemu-user-static")
        marker = root / QEMU_MOUNT.lstrip("/")
        if not marker.exists():
            marker.touch()
        cmd += ["--ro-bind", qemu, QEMU_MOUNT, QEMU_MOUNT, "-L", "/"]
    return cmd + argv


def run(root: Path, arch: str, argv: list[str], *, env: dict[str, str], uid: int, gid: int, cwd: str,
        timeout: float = 600, stdin: str | None = None) -> Result:
    cmd = bwrap_command(root, arch, argv, env=env, uid=uid, gid=gid, cwd=cwd)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else ""
        return Result(124, out, f"timed out after {timeout:.0f} s", cmd)
    return Result(p.returncode, p.stdout, p.stderr, cmd)


DROP = (
    "import os, sys\n"
    "if os.geteuid() == 0:\n"
    "    os.setgroups([]); os.setgid({gid}); os.setuid({uid})\n"
    "sys.argv = ['-c']\n"
    "exec(compile({code!r}, '<enginefab-probe>', 'exec'))\n"
)


def run_python(root: Path, arch: str, interpreter: str, code: str, *, env: dict[str, str], uid: int, gid: int,
               cwd: str, timeout: float = 600) -> Result:
    """The image's Python runs `code` as uid:gid: dropped to by Python itself when we are root
    (the image's uids are then real), or mapped by a user namespace when we are not."""
    prog = DROP.format(uid=uid, gid=gid, code=code)
    return run(root, arch, [interpreter, "-c", prog], env=env, uid=uid, gid=gid, cwd=cwd, timeout=timeout)


def available() -> list[str]:
    """What is missing to run sandboxes here (empty when everything is present)."""
    missing = []
    if not shutil.which("bwrap"):
        missing.append("bubblewrap")
    if not shutil.which(QEMU["aarch64"]) and host_arch() != "aarch64":
        missing.append("qemu-user-static")
    return missing



# -- build steps ---------------------------------------------------------------------------

STEP_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID",
             "CAP_SETGID", "CAP_KILL", "CAP_SETFCAP")
#: x86_64 syscall number of statx, which proot 5.1 does not translate (see `_no_statx`)
_X86_64_STATX = 332
_AUDIT_ARCH_X86_64 = 0xC000003E


def _no_statx() -> bytes:
    """A classic-BPF seccomp program: statx fails with ENOSYS on x86_64, everything else is allowed.

    Under `proot -q qemu-aarch64-static`, proot (5.1, Debian 12) does not rewrite the paths of
    statx, so `ls` or `stat` in the guest would look at the *host's* files. With statx refused,
    qemu falls back to newfstatat, whose paths proot does rewrite."""
    import struct

    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    return b"".join([
        ins(ld_abs, 0, 0, 4),  # seccomp_data.arch
        ins(jeq, 0, 3, _AUDIT_ARCH_X86_64),
        ins(ld_abs, 0, 0, 0),  # seccomp_data.nr
        ins(jeq, 0, 1, _X86_64_STATX),
        ins(ret, 0, 0, 0x00050000 | 38),  # SECCOMP_RET_ERRNO | ENOSYS
        ins(ret, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
    ])


@dataclass(frozen=True)
class StepCommand:
    argv: list[str]
    seccomp: bytes | None  # a BPF program bwrap reads from the fd named after --seccomp


def step_command(root: Path, arch: str, argv: list[str], *, env: dict[str, str], binds: list[tuple[Path, str]],
                 scratch: Path, cwd: str = "/") -> StepCommand:
    """A build step over `root` (writable): network, IPC, PID and UTS namespaces of its own, as
    root with a few file capabilities only, a fixed environment, `binds` (host file → container
    path) read-only, `scratch` as /tmp. A foreign-arch root runs under `proot -q qemu-<arch>`
    (inside bubblewrap, which still cuts the network): qemu alone cannot exec the guest's other
    programs without binfmt_misc."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise CheckError("bubblewrap (bwrap) is not installed", fix="apt-get install bubblewrap")
    ns = ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
          "--hostname", "enginefab", "--die-with-parent", "--new-session", "--clearenv"]
    if os.geteuid() == 0:
        ns += ["--cap-drop", "ALL"] + [x for c in STEP_CAPS for x in ("--cap-add", c)]
    else:
        ns += ["--unshare-user", "--uid", "0", "--gid", "0"]
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    if arch == host_arch():
        cmd = [bwrap, "--bind", str(root), "/", "--dev", "/dev", "--proc", "/proc",
               "--bind", str(scratch / "tmp"), "/tmp", *ns]
        for src, dest in binds:
            cmd += ["--ro-bind", str(src), dest]
        cmd += ["--chdir", cwd]
        for k, v in sorted(env.items()):
            cmd += ["--setenv", k, v]
        return StepCommand(cmd + argv, None)
    qemu = shutil.which(QEMU.get(arch, ""))
    proot = shutil.which("proot")
    if not qemu or not proot:
        raise CheckError(f"cannot run {arch} build steps here: " + ", ".join(
            n for n, p in ((QEMU.get(arch, f"qemu-{arch}-static"), qemu), ("proot", proot)) if not p) + " missing",
            fix="apt-get install qemu-user-static proot")
    # proot needs a writable /tmp of its own (it ignores PROOT_TMP_DIR for its glue); the root,
    # the scratch directory and the inputs are bound after it, at their own paths
    cmd = [bwrap, "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--bind", str(root), str(root),
           "--bind", str(scratch), str(scratch), "--dev", "/dev", "--proc", "/proc", *ns,
           "--setenv", "PROOT_TMP_DIR", "/tmp"]
    for src, _dest in binds:
        cmd += ["--ro-bind", str(src), str(src)]
    for k, v in sorted(env.items()):
        cmd += ["--setenv", k, v]
    cmd += [proot, "-q", qemu, "-r", str(root), "-b", "/dev", "-b", "/proc", "-b", f"{scratch / 'tmp'}:/tmp"]
    for src, dest in binds:
        cmd += ["-b", f"{src}:{dest}"]
    cmd += ["-w", cwd]
    seccomp = _no_statx() if host_arch() == "x86_64" else None
    return StepCommand(cmd + argv, seccomp)


def run_step(cmd: StepCommand, *, log: Path, timeout: float) -> int:
    """Run a build step, its output into `log`; its exit status (124 on timeout)."""
    fds: list[int] = []
    argv = list(cmd.argv)
    if cmd.seccomp is not None:
        r, w = os.pipe()
        os.write(w, cmd.seccomp)
        os.close(w)
        fds.append(r)
        argv[1:1] = ["--seccomp", str(r)]
    try:
        with open(log, "ab") as out:
            try:
                return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout, pass_fds=fds, umask=0o022).returncode
            except subprocess.TimeoutExpired:
                out.write(f"\nenginefab: timed out after {timeout:.0f} s\n".encode())
                return 124
    finally:
        for fd in fds:
            os.close(fd)
