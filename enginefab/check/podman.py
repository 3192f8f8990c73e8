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

A model image is also served under podman from the same pull (`_serve_result`): its command
started detached as 1000:100 with ``--network=none``, `serving.CLIENT` run inside the container
with ``podman exec`` (so the health check's traffic stays on the container's loopback), then
``podman stop`` (SIGTERM, SIGKILL after 10 s).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enginefab.assemble.image import Built, write_layout
from enginefab.assemble.sandbox import host_arch
from enginefab.assemble.store import Store
from enginefab.check import container, runtime, serving
from enginefab.check import modelarts as ma
from enginefab.check.report import Result
from enginefab.check.structure import Suite
from enginefab.core import tools
from enginefab.core.definition import Definition, RuntimeCheck

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


def run_dir() -> Path:
    """A new directory for podman's run-time state: a short path (podman wants at most 50
    characters there) whose name is valid in an image reference (lowercase hex, no "_")."""
    while True:
        d = Path(tempfile.gettempdir()) / f"efpod-{secrets.token_hex(6)}"
        try:
            d.mkdir(mode=0o700)
            return d
        except FileExistsError:
            continue


@contextmanager
def pulled(store: Store, built: Built, *, timeout: float) -> Iterator[tuple[Podman, subprocess.CompletedProcess]]:
    """A podman of its own that has pulled `built` (check the returncode); removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="enginefab-podman-", dir=store.root / "tmp"))
    run = run_dir()
    try:
        podman = Podman(base, run)
        layout = base / "layout"
        write_layout(layout, [built], store.blob_path)
        # podman names the pulled image after the layout's path, which must then be a valid
        # reference (no component starting with a dot, as in ~/.cache): pull through a link in `run`
        (run / "layout").symlink_to(layout)
        yield podman, podman("pull", "--quiet", "--signature-policy", str(base / "policy.json"),
                             f"oci:{run / 'layout'}:{built.alias}", timeout=timeout)
    finally:
        for d in (run, base):
            _unmount_below(d)
            shutil.rmtree(d, ignore_errors=True)


def cross_check(store: Store, built: Built, defn: Definition, rootfs: Path, suite: Suite | None, *,
                timeout: float = 1800, serve_limit: float = 60.0) -> list[Result]:
    """Each engine probe under podman, compared with the same probe in our sandbox; a model image
    is also served and health-checked under podman (`_serve_result`), from the same pull."""
    names = [f"podman:import-{c.engine}" for c in defn.checks.runtime]
    if ma.kind_of(defn.image.kind) == "model":
        names.append("podman:model-health")
    why = missing(defn.image.arch)
    if why:
        return [Result("runtime", n, "skip", f"cross-check skipped: {why}") for n in names]
    out = []
    t0 = time.monotonic()
    with pulled(store, built, timeout=timeout) as (podman, pull):
        if pull.returncode != 0:
            return [Result("runtime", n, "error", f"podman could not pull the image: {runtime.tail(pull.stderr, 5)}",
                           time.monotonic() - t0) for n in names]
        image_id = pull.stdout.strip().splitlines()[-1]
        pull_s = time.monotonic() - t0
        for c, name in zip(defn.checks.runtime, names[:len(defn.checks.runtime)]):
            out.append(_probe(podman, image_id, defn, rootfs, c, suite, name, pull_s, timeout))
        if ma.kind_of(defn.image.kind) == "model":
            out.append(_serve_result(podman, image_id, defn, rootfs, limit=serve_limit, timeout=timeout))
    return out


def _probe(podman: Podman, image_id: str, defn: Definition, rootfs: Path, c: RuntimeCheck, suite: Suite | None,
           name: str, pull_s: float, timeout: float) -> Result:
    env = [] if "PYTHONDONTWRITEBYTECODE" in defn.config.env else ["--env", "PYTHONDONTWRITEBYTECODE=1"]
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
        return Result("runtime", name, "fail", "podman (runc) and our sandbox differ: " + "; ".join(differ),
                      time.monotonic() - t1, data)
    return Result("runtime", name, "pass", f"podman (runc) agrees: {c.engine} {b['version']} as "
                  f"{b['identity']}, printed {b['output'].splitlines()[0] if b['output'] else 'nothing'!r}",
                  time.monotonic() - t1, data)


def _serve_result(podman: Podman, image_id: str, defn: Definition, rootfs: Path, *, limit: float,
                  timeout: float) -> Result:
    """A model image served by podman (runc) as the service serves it — its command, as 1000:100,
    in a container with ``--network=none`` (a network namespace of its own with only loopback) —
    and probed from inside that namespace (``podman exec``): it must answer as it did in our
    sandbox (ports listened on, /health's status and body, stopped by SIGTERM)."""
    name = "podman:model-health"
    t0 = time.monotonic()
    theirs, stop, data = _serve(podman, image_id, defn, limit, timeout)
    if theirs is None:
        return Result("runtime", name, "fail", f"podman's probe reported nothing: {data.get('error', '')}"[:800],
                      time.monotonic() - t0, data)
    ours = serving.Seen.parse(serving.serve(defn, rootfs, limit=limit).stdout)
    b = {**theirs.comparable(), "stopped_by_sigterm": stop}
    a = {**ours.comparable(), "stopped_by_sigterm": ours.sigterm is not None} if ours else {}
    data.update(ours=a, podman=b)
    differ = [f"{k}: ours {a.get(k)!r}, podman's {b[k]!r}" for k in b if a.get(k) != b[k]]
    if differ:
        return Result("runtime", name, "fail", "podman (runc) and our sandbox differ: " + "; ".join(differ),
                      time.monotonic() - t0, data)
    got = f"status {b['status']} {theirs.body.strip()[:80]}" if b["status"] is not None else "no answer"
    return Result("runtime", name, "pass", f"podman (runc) agrees: listening on "
                  f"{', '.join(f'{x}:{p}' for x, p in theirs.listening) or 'nothing'}, GET /health → {got}, "
                  f"{'stopped' if stop else 'not stopped'} by SIGTERM", time.monotonic() - t0, data)


def _serve(podman: Podman, image_id: str, defn: Definition, limit: float,
           timeout: float) -> tuple[serving.Seen | None, bool, dict]:
    """Start the image's command under podman, probe it from inside, stop it with SIGTERM."""
    t0 = time.monotonic()
    uid, gid = ma.USER_IDS
    started = podman("run", "-d", "--network=none", "--pull=never", "--user", f"{uid}:{gid}", image_id,
                     timeout=timeout)
    if started.returncode != 0:
        return None, False, {"error": f"podman run failed: {runtime.tail(started.stderr, 5)}"}
    cid = started.stdout.strip().splitlines()[-1]
    try:
        probe = podman("exec", cid, defn.python.interpreter, "-I", "-S", "-c", serving.PROBE_ONLY,
                       str(ma.MODEL_PORT), str(limit), timeout=limit + 60)
        t1 = time.monotonic()
        podman("stop", "--time", "10", cid, timeout=60)
        stop_s = time.monotonic() - t1
        code = podman("inspect", "--format", "{{.State.ExitCode}}", cid, timeout=60).stdout.strip()
        logs = podman("logs", cid, timeout=60)
    finally:
        podman("rm", "--force", cid, timeout=60)
    data = {"stop_seconds": round(stop_s, 2), "exit_code": code, "serve_seconds": round(time.monotonic() - t0, 1),
            "server_output": (logs.stdout + logs.stderr).strip()[-2000:], "error": runtime.tail(probe.stderr, 5)}
    return serving.Seen.parse(probe.stdout), stop_s < 10 and code != "137", data


def _unmount_below(base: Path) -> None:
    """Detach what podman may have left mounted in its storage (a killed run's /dev/shm)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
    for point in sorted((p for p in points if p.startswith(f"{base}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
