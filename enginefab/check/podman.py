"""Cross-check with a real OCI runtime: podman (with runc) runs the engine probe in the image,
and what it reports must be what our sandbox reported — version, what the engine was built for,
the smoke computation's output, where the image's user could write, and who it ran as.

podman pulls the image from an OCI layout written for it (blobs linked from the store) into a
storage of its own under the store's ``tmp/``, removed afterwards: vfs storage, cgroupfs, file
events and a ``containers.conf`` with ``default_ulimits = []`` and ``pids_limit = 0`` (what
these machines need; crun refuses their cgroup setup, so runc). The container runs with
``--network=none`` and podman's own user, environment, working directory and entrypoint
handling. vfs copies the whole image on pull and again for the container: about 70 s and 18 s
for the 1.7 GB x86_64 demo. podman runs images of the host's arch only (no binfmt_misc here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.sandbox import host_arch
from enginefab.assemble.store import Store
from enginefab.check import container, runtime
from enginefab.check.report import Result
from enginefab.check.structure import Suite
from enginefab.core import tools
from enginefab.core.definition import Definition

CONTAINERS_CONF = """[containers]
default_ulimits = []
pids_limit = 0

[engine]
image_copy_tmp_dir = "{tmp}"
"""
POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}'


def missing(arch: str) -> str | None:
    """Why podman cannot run an `arch` image here, or None."""
    for name in ("podman", "runc"):
        if not tools.which(name):  # runs: podman, runc
            return f"{name} is not installed ({tools.known(name).install})"
    if arch != host_arch():
        return f"podman runs {host_arch()} images here, not {arch} (there is no binfmt_misc for it on this host)"
    return None


class Podman:
    """podman with all of its state in `base`, but for its run-time state in `run` (podman wants
    a path of at most 50 characters there)."""

    def __init__(self, base: Path, run: Path):
        self.base, self.run = base, run
        (base / "tmp").mkdir(parents=True)
        (base / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=base / "tmp"))
        (base / "policy.json").write_text(POLICY)
        self.env = {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf"), "TMPDIR": str(base / "tmp")}

    def cmd(self, *args: str) -> list[str]:
        b = self.base
        return ["podman", "--root", str(b / "root"), "--runroot", str(self.run / "run"), "--tmpdir", str(self.run / "libpod"),
                "--network-config-dir", str(b / "net"), "--storage-driver", "vfs", "--runtime", "runc",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]

    def __call__(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=self.env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(e.cmd, 124, out, f"timed out after {timeout:.0f} s")


def _facts(stdout: str, uid: int) -> dict:
    """What a probe's output says, in the terms both runs are compared in."""
    w = runtime.writable_result(stdout, uid)
    return {"version": runtime.marker(stdout, "ENGINEFAB-VERSION "),
            "built_for": {ln.split(" ", 2)[1]: ln.split(" ", 2)[2] for ln in stdout.splitlines()
                          if ln.startswith("ENGINEFAB-BUILT-FOR ") and len(ln.split(" ", 2)) == 3},
            "output": runtime.printed(stdout), "identity": runtime.marker(stdout, "ENGINEFAB-ID "),
            "writable": {k: v["status"] for k, v in w.data.items()}, "ok": "ENGINEFAB-OK" in stdout}


def cross_check(store: Store, built: Built, defn: Definition, rootfs: Path, suite: Suite | None, *,
                timeout: float = 1800) -> list[Result]:
    """Each engine probe under podman, compared with the same probe in our sandbox."""
    names = [f"podman:import-{c.engine}" for c in defn.checks.runtime]
    why = missing(defn.image.arch)
    if why:
        return [Result("runtime", n, "skip", f"cross-check skipped: {why}") for n in names]
    out = []
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="enginefab-podman-", dir=store.root / "tmp"))
    run = Path(tempfile.mkdtemp(prefix="efpod-"))
    try:
        podman = Podman(base, run)
        layout = base / "layout"
        write_layout(layout, [built], store.blob_path)
        pulled = podman("pull", "--quiet", "--signature-policy", str(base / "policy.json"),
                        f"oci:{layout}:{built.alias}", timeout=timeout)
        if pulled.returncode != 0:
            return [Result("runtime", n, "error", f"podman could not pull the image: {runtime.tail(pulled.stderr, 5)}",
                           time.monotonic() - t0) for n in names]
        image_id = pulled.stdout.strip().splitlines()[-1]
        pull_s = time.monotonic() - t0
        env = [] if "PYTHONDONTWRITEBYTECODE" in defn.config.env else ["--env", "PYTHONDONTWRITEBYTECODE=1"]
        for c, name in zip(defn.checks.runtime, names):
            code = runtime.probe_code(c, suite)
            t1 = time.monotonic()
            theirs = podman("run", "--rm", "--network=none", "--pull=never", *env, image_id,
                            defn.python.interpreter, "-c", code, timeout=timeout)
            run_s = time.monotonic() - t1
            ours = runtime.run_probe(defn, rootfs, code, timeout=timeout)
            uid = container.user_of(rootfs, defn.config.user).uid
            a, b = _facts(ours.stdout, uid), _facts(theirs.stdout, uid)
            differ = [f"{k}: ours {a[k]!r}, podman's {b[k]!r}" for k in a if a[k] != b[k]]
            data = {"podman": b, "ours": a, "pull_seconds": round(pull_s, 1), "run_seconds": round(run_s, 1)}
            if theirs.returncode != 0 and not differ:
                differ.append(f"podman exited {theirs.returncode}: {runtime.explain(theirs.stderr) or runtime.tail(theirs.stderr, 10)}")
            if differ:
                out.append(Result("runtime", name, "fail", "podman (runc) and our sandbox differ: " + "; ".join(differ),
                                  time.monotonic() - t1, data))
            else:
                out.append(Result("runtime", name, "pass", f"podman (runc) agrees: {c.engine} {b['version']} as "
                                  f"{b['identity']}, printed {b['output'].splitlines()[0] if b['output'] else 'nothing'!r}",
                                  time.monotonic() - t1, data))
        return out
    finally:
        for d in (run, base):
            _unmount_below(d)
            shutil.rmtree(d, ignore_errors=True)


def _unmount_below(base: Path) -> None:
    """Detach what podman may have left mounted in its storage (a killed run's /dev/shm)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
    for point in sorted((p for p in points if p.startswith(f"{base}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
