"""The local registries `enginefab registry start` leaves running: one state directory per port
(`<state>/<port>/`: config, data, log, pid), so several run side by side and each is found,
listed and stopped by its port. A port already taken is refused naming who holds it."""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from enginefab.core.errors import RegistryError
from enginefab.publish.server import BINARY, Registry


@dataclass(frozen=True)
class Running:
    port: int
    pid: int
    root: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def as_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "pid": self.pid, "root": str(self.root)}


def _alive_registry(pid: int, root: Path) -> bool:
    """Whether `pid` is still the docker-registry serving `root` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and Path(argv[0].decode(errors="replace")).name == Path(BINARY).name and \
        str(root / "config.yml").encode() in argv


def _read(root: Path) -> Running | None:
    try:
        pid, port = int((root / "pid").read_text()), int((root / "port").read_text())
    except (OSError, ValueError):
        return None
    return Running(port, pid, root) if _alive_registry(pid, root) else None


def running(state: Path) -> list[Running]:
    """Every registry started here that still runs, by port (state left by one that died is removed)."""
    out = []
    for root in sorted(p for p in state.iterdir() if p.is_dir() and p.name.isdigit()) if state.is_dir() else ():
        r = _read(root)
        if r is not None:
            out.append(r)
        elif (root / "pid").exists():
            (root / "pid").unlink(missing_ok=True)
    legacy = _read(state)  # the single registry of an older release (state/pid, state/port)
    if legacy is not None and all(r.port != legacy.port for r in out):
        out.append(legacy)
    return sorted(out, key=lambda r: r.port)


def holder(port: int) -> str | None:
    """Who listens on TCP `port` here: 'pid N (program args)', 'another program' when the
    socket's owner is not visible from here, None when nobody listens."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                cmd = " ".join(a.decode(errors="replace") for a in argv if a)[:120]
                return f"pid {proc.name} ({cmd})"
        except OSError:
            continue
    return "another program (its process is not visible from here)"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start(state: Path, port: int) -> tuple[Running, bool]:
    """The registry on `port`: the one already running there (False), else a new one (True)."""
    if not 1 <= port <= 65535:
        raise RegistryError(f"port {port} is not a TCP port", input=f"--port {port}", fix="give a port from 1 to 65535")
    for r in running(state):
        if r.port == port:
            return r, False
    if not _port_free(port):
        who = holder(port) or "another program"
        raise RegistryError(f"port {port} on 127.0.0.1 is in use by {who}", input=f"--port {port}",
                            fix="stop that program, or pass another --port (enginefab registry list shows ours)")
    root = state / str(port)
    reg = Registry(root=root, port=port).start()
    pid = reg.proc.pid
    reg.proc = None  # leave it running after we exit
    return Running(port, pid, root), True


def stop(r: Running, timeout: float = 5) -> None:
    """SIGTERM to the registry's process group, SIGKILL after `timeout`; its data is kept."""
    try:
        os.killpg(r.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while _alive_registry(r.pid, r.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive_registry(r.pid, r.root):
        os.killpg(r.pid, signal.SIGKILL)
    (r.root / "pid").unlink(missing_ok=True)


def choose(state: Path, port: int | None, all_: bool) -> list[Running]:
    """Which running registries `registry stop` means: --all, --port N, or the only one."""
    up = running(state)
    if all_:
        return up
    if port is not None:
        mine = [r for r in up if r.port == port]
        if not mine:
            ours = ", ".join(str(r.port) for r in up) or "none"
            raise RegistryError(f"no registry of ours runs on port {port} (ours: {ours})", input=f"--port {port}",
                                fix="enginefab registry list")
        return mine
    if len(up) > 1:
        raise RegistryError(f"{len(up)} registries run (ports {', '.join(str(r.port) for r in up)})",
                            fix="pass --port N, or --all")
    return up
