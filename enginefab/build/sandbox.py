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

from enginefab.errors import CheckError

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


def run_layer(builder, defn, layer, staging) -> None:
    """A run step's layer: the filesystem diff of its scripts over the lower layers."""
    from enginefab.build.runstep import build_run_layer

    build_run_layer(builder, defn, layer, staging)

