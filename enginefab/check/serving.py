"""Runtime level of a model image: serve as the service would, and answer the health check.

ModelArts starts a model image's command as ma-user (uid 1000, gid 100), waits for it to listen
on 0.0.0.0:8080 and calls ``GET /health``, which must answer 200 with ``{"health": "true"}``;
on a rolling upgrade it stops the container with SIGTERM. The check does the same in the sandbox
(`enginefab.check.container`): a network namespace of the sandbox's own, with only loopback, so
every byte goes to 127.0.0.1 inside it. The image's own Python runs `LAUNCH` (with ``-I -S``,
nothing of the image before it): it forks the image's command as 1000:100 in its working
directory, drops to the same ids itself, then runs `CLIENT`: it reads the listening sockets from
``/proc/net/tcp{,6}`` until port 8080 appears, asks ``GET /health`` on 127.0.0.1:8080 until a
200 or the time limit, reads the server's ids from ``/proc``, sends SIGTERM to the server's
process group and waits for it to stop. One JSON line (``ENGINEFAB-SERVE …``) says what it saw;
the server's own output goes to stderr. `podman.cross_check` (a model image) runs `CLIENT` through
``podman exec`` in a container podman started with ``--network=none`` (its own loopback).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from enginefab.assemble import sandbox
from enginefab.check import container
from enginefab.check import modelarts as ma
from enginefab.check.report import Result
from enginefab.core.definition import Definition

#: argv: port limit_seconds. Reads /proc; sends GET /health to 127.0.0.1 only; prints one line.
CLIENT = r'''
import json, os, signal, socket, sys, time
def _addr(h):
    b = bytes.fromhex(h)
    if len(b) == 4:
        return socket.inet_ntop(socket.AF_INET, b[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(b[i:i + 4][::-1] for i in range(0, 16, 4)))
def listening():
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 3 and f[3] == "0A":
                a, p = f[1].rsplit(":", 1)
                out.add((_addr(a), int(p, 16)))
    return sorted([a, p] for a, p in out)
def health(port, timeout):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/health")
        r = c.getresponse()
        return r.status, r.read(4096).decode("utf-8", "replace"), None
    except Exception as e:
        return None, "", type(e).__name__ + ": " + str(e)
    finally:
        c.close()
def ids(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
        return int(st["Uid"].split()[0]), int(st["Gid"].split()[0])
    except (OSError, KeyError, ValueError):
        return None
def serve_probe(port, limit, child=None):
    """Wait for the port, then for a healthy answer; `child` (a pid) is watched and stopped."""
    t0 = time.time()
    seen = dict(listening=[], status=None, body="", error=None, listen_seconds=None, healthy_seconds=None,
                exited=None, ids=None, sigterm=None)
    def alive():
        if child is None:
            return True
        pid, st = os.waitpid(child, os.WNOHANG)
        if pid:
            seen["exited"] = os.waitstatus_to_exitcode(st) if hasattr(os, "waitstatus_to_exitcode") else st
        return not pid
    while time.time() - t0 < limit and alive():
        seen["listening"] = listening()
        if any(p == port for _a, p in seen["listening"]):
            seen["listen_seconds"] = round(time.time() - t0, 2)
            break
        time.sleep(0.1)
    while seen["listen_seconds"] is not None and seen["exited"] is None and time.time() - t0 < limit:
        seen["status"], seen["body"], seen["error"] = health(port, max(1.0, limit - (time.time() - t0)))
        if seen["status"] == 200:
            seen["healthy_seconds"] = round(time.time() - t0, 2)
            break
        if not alive():
            break
        time.sleep(0.2)
    seen["listening"] = listening() or seen["listening"]
    if child is not None and seen["exited"] is None:
        seen["ids"] = ids(child)
        os.killpg(child, signal.SIGTERM)
        t1 = time.time()
        while time.time() - t1 < 10 and alive():
            time.sleep(0.05)
        seen["sigterm"] = round(time.time() - t1, 2) if seen["exited"] is not None else None
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
    return seen
'''

#: argv: uid gid groups cwd port limit program args…; run as root of the sandbox's namespace
#: holding CAP_SETUID/CAP_SETGID only; no id of root survives past the fork
LAUNCH = CLIENT + r'''
uid, gid, groups, cwd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
port, limit, argv = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7:]
def drop():
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setgid(gid)
    os.setuid(uid)
sys.stdout.flush()
child = os.fork()
if child == 0:
    try:
        os.setsid()
        os.dup2(2, 1)
        if not os.path.isdir(cwd):
            os.makedirs(cwd, 0o755)
        drop()
        os.chdir(cwd)
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write("enginefab: cannot start %s: %s\n" % (" ".join(argv), e))
    os._exit(127)
drop()
print("ENGINEFAB-SERVE " + json.dumps(serve_probe(port, limit, child)))
'''

#: the `CLIENT` alone, for a server something else started (podman)
PROBE_ONLY = CLIENT + r'''
_seen = serve_probe(int(sys.argv[1]), float(sys.argv[2]))
_seen["ids"] = ids(1)  # the container's first process: the server
print("ENGINEFAB-SERVE " + json.dumps(_seen))
'''

MARKER = "ENGINEFAB-SERVE "


@dataclass(frozen=True)
class Seen:
    """What one probe of a served image saw."""

    listening: list[tuple[str, int]]
    status: int | None
    body: str
    error: str | None
    listen_seconds: float | None
    healthy_seconds: float | None
    exited: int | None
    ids: tuple[int, int] | None
    sigterm: float | None

    @classmethod
    def parse(cls, stdout: str) -> "Seen | None":
        lines = [ln for ln in stdout.splitlines() if ln.startswith(MARKER)]
        try:
            d = json.loads(lines[-1][len(MARKER):])
            return cls(listening=[(str(a), int(p)) for a, p in d["listening"]], status=d["status"],
                       body=str(d["body"]), error=d["error"], listen_seconds=d["listen_seconds"],
                       healthy_seconds=d["healthy_seconds"], exited=d["exited"],
                       ids=tuple(d["ids"]) if d["ids"] else None, sigterm=d["sigterm"])  # type: ignore[arg-type]
        except (IndexError, ValueError, KeyError, TypeError):
            return None

    def healthy(self) -> bool:
        try:
            return self.status == 200 and json.loads(self.body) == {"health": "true"}
        except ValueError:
            return False

    def wildcard(self, port: int) -> bool:
        return any(p == port and a in ("0.0.0.0", "::") for a, p in self.listening)

    def comparable(self) -> dict:
        """What two runtimes must agree on (not timings)."""
        return {"listening": self.listening, "status": self.status, "body": self.body, "healthy": self.healthy()}


def serve(defn: Definition, rootfs: Path, *, limit: float = 60.0) -> sandbox.Result:
    """The image's command started as the service starts it, probed by `LAUNCH`."""
    user = container.user_of(rootfs, f"{ma.USER_IDS[0]}:{ma.USER_IDS[1]}", image=defn.image.alias)
    argv = [*(defn.config.entrypoint or []), *(defn.config.cmd or [])]
    return container.run(defn, rootfs, argv, entrypoint=False, timeout=limit + 30, as_user=user,
                         launcher=LAUNCH, launcher_args=(str(ma.MODEL_PORT), str(limit)))


def results(spec: str, own: container.User, seen: Seen | None, *, stderr: str = "", limit: float = 60.0) -> list[Result]:
    """The model-serving results of what `serve` saw: the image's own user (config `spec`,
    resolved as `own`), then the health check."""
    uid, gid = ma.USER_IDS
    if (own.uid, own.gid) != ma.USER_IDS:
        who = "root" if own.uid == 0 else f"uid {own.uid}"
        user = Result("runtime", "model-user", "fail", f"the image's User {spec!r} runs its server as {who} "
                      f"({own.uid}:{own.gid}) under docker or podman, while ModelArts starts it as ma-user {uid}:{gid}: "
                      f"set the image's user to {uid}:{gid} [{ma.USER.cite()}]")
    else:
        user = Result("runtime", "model-user", "pass", f"the image's User {spec} is {uid}:{gid}, as ModelArts runs it")
    return [user, _health(seen, stderr, limit)]


def _health(seen: Seen | None, stderr: str, limit: float) -> Result:
    port = ma.MODEL_PORT
    name = "model-health"
    if seen is None:
        return Result("runtime", name, "error", "the probe reported nothing: " + stderr.strip()[-600:])
    data = {"listening": [f"{a}:{p}" for a, p in seen.listening], "status": seen.status, "body": seen.body[:500],
            "listen_seconds": seen.listen_seconds, "healthy_seconds": seen.healthy_seconds, "ids": seen.ids,
            "sigterm_seconds": seen.sigterm, "server_output": stderr.strip()[-2000:]}
    where = ", ".join(data["listening"]) or "no port"
    if seen.listen_seconds is None:
        by_itself = seen.exited is not None and seen.sigterm is None
        why = (f"the server exited with status {seen.exited} before listening on {port}" if by_itself
               else f"nothing listened on port {port} within {limit:g} s (listening: {where})")
        tail = f"; its output ends: {stderr.strip()[-300:]}" if stderr.strip() else ""
        return Result("runtime", name, "fail", f"{why}{tail} [{ma.PORT.cite()}]", data=data)
    problems = []
    if not seen.wildcard(port):
        problems.append(f"listens on {where}, not 0.0.0.0:{port} (the service reaches it from outside the "
                        f"container) [{ma.PORT.cite()}]")
    if not seen.healthy():
        got = f"status {seen.status}, body {seen.body[:200]!r}" if seen.status is not None else seen.error
        problems.append(f"GET /health answered {got} within {limit:g} s [{ma.HEALTH.cite()}]")
    if seen.ids is not None and seen.ids != ma.USER_IDS:
        problems.append(f"the server runs as {seen.ids[0]}:{seen.ids[1]} [{ma.USER.cite()}]")
    if problems:
        return Result("runtime", name, "fail", "; ".join(problems), data=data)
    stop = (f"stopped {seen.sigterm:g} s after SIGTERM" if seen.sigterm is not None
            else f"did not stop within 10 s of SIGTERM ({ma.SIGTERM.cite()})")
    status = "pass" if seen.sigterm is not None else "warn"
    who = f"{seen.ids[0]}:{seen.ids[1]}" if seen.ids else "?"
    return Result("runtime", name, status, f"as {who}, listening on "
                  f"{where} after {seen.listen_seconds:g} s, GET /health → 200 {seen.body.strip()} after "
                  f"{seen.healthy_seconds:g} s; {stop}", data=data)


def check(defn: Definition, rootfs: Path, *, limit: float = 60.0) -> list[Result]:
    """The model image at `rootfs` served and health-checked in the sandbox; nothing for a training image."""
    if ma.kind_of(defn.image.kind) != "model":
        return []
    t0 = time.monotonic()
    r = serve(defn, rootfs, limit=limit)
    own = container.user_of(rootfs, defn.config.user, image=defn.image.alias)
    out = results(defn.config.user, own, Seen.parse(r.stdout), stderr=r.stderr, limit=limit)
    out[-1].seconds = time.monotonic() - t0
    return out
