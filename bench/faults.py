"""Time to a clear error when the registry misbehaves, with the default settings, against
skopeo (same servers, same run) as the peer. Goal: each of ours under 30 s.

Faults: nothing listening; a server that accepts and never answers; HTTP 500 on everything; a
blob that never ends (its descriptor says 10 bytes); a real docker-registry stopped with SIGSTOP
while four 64 MiB blobs stream to it. The first four are `enginefab pull` (the CLI, start-up
included) against tests/hostile_http.py's server; the push is enginefab's push code
(`push_blobs`, 4 in parallel) and `skopeo copy` of an OCI layout holding the same blobs. A peer
that has not failed after PEER_CAP seconds is stopped and reported as `null` with `gave_up`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_CAP = 90.0
GOAL = 30.0


def _run(cmd: list[str], cap: float) -> tuple[float | None, str, str]:
    """(seconds to exit, or None when still running at `cap`; stdout; stderr)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, ENGINEFAB_QUIET="1"))
    try:
        out, err = p.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, "", ""
    return round(time.monotonic() - t0, 2), out, err


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


def _ours_pull(ref: str, work: Path) -> dict:
    secs, out, _ = _run([sys.executable, "-m", "enginefab", "pull", ref, "--out", str(work / "pulled"),
                         "--plain-http", "--json"], PEER_CAP)
    err = json.loads(out).get("error", "") if secs is not None and out.strip().startswith("{") else ""
    return {"seconds": secs, "error": err}


def _skopeo_pull(ref: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    secs, _, err = _run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}",
                         f"oci:{work / 'skopeo'}:x"], PEER_CAP)
    return {"seconds": secs, "error": _last_line(err), **({"gave_up": PEER_CAP} if secs is None else {})}


def _hostile_cases(work: Path) -> dict:
    from enginefab.publish.server import free_port
    from tests import hostile_http as hostile

    out = {}
    port = free_port()
    out["nothing_listening"] = {"ours": _ours_pull(f"127.0.0.1:{port}/t/x:v1", work / "a"),
                                "skopeo": _skopeo_pull(f"127.0.0.1:{port}/t/x:v1", work / "a")}
    for name, behaviour in (("never_answers", hostile.silent), ("http_500", hostile.status(500)),
                            ("endless_blob", hostile.registry(hostile.endless, layer_size=10))):
        res = {}
        for side, fn in (("ours", _ours_pull), ("skopeo", _skopeo_pull)):
            with hostile.HostileServer(behaviour) as srv:
                res[side] = fn(f"{srv.host}/t/x:v1", work / f"{name}-{side}")
                if name == "endless_blob":
                    res[side]["bytes_the_server_sent"] = srv.sent_bytes
        out[name] = res
    return out


def _blobs(work: Path, n: int = 4, mib: int = 64) -> list[tuple[str, int, Path]]:
    out = []
    for i in range(n):
        p = work / f"blob{i}"
        h = hashlib.sha256()
        with open(p, "wb") as f:
            for _ in range(mib):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        out.append(("sha256:" + h.hexdigest(), mib << 20, p))
    return out


def _layout(work: Path, blobs: list[tuple[str, int, Path]]) -> Path:
    """An OCI layout with `blobs` as the layers of one image, for skopeo."""
    lay = work / "layout"
    (lay / "blobs" / "sha256").mkdir(parents=True)
    for d, _, p in blobs:
        os.link(p, lay / "blobs" / "sha256" / d[7:])
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cfg_d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    (lay / "blobs" / "sha256" / cfg_d[7:]).write_bytes(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d,
                                 "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                                 for d, s, _ in blobs]}).encode()
    man_d = "sha256:" + hashlib.sha256(man).hexdigest()
    (lay / "blobs" / "sha256" / man_d[7:]).write_bytes(man)
    (lay / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": len(man),
         "annotations": {"org.opencontainers.image.ref.name": "x"}}]}))
    return lay


def _uploading(root: Path) -> int:
    n = 0
    for dirpath, _, files in os.walk(root / "data/docker/registry/v2/repositories"):
        if "/_uploads/" in dirpath + "/":
            n += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if f == "data")
    return n


def _stop_when_uploading(reg, threshold: int, stopped: list[float], done: threading.Event) -> None:
    while not done.is_set() and _uploading(reg.root) < threshold:
        time.sleep(0.02)
    if not done.is_set():
        os.kill(reg.proc.pid, signal.SIGSTOP)
        stopped.append(time.monotonic())


def _stopped_mid_push(work: Path) -> dict:
    from enginefab.core.errors import EnginefabError
    from enginefab.publish.push import BlobHome, PushStats, push_blobs
    from enginefab.publish.server import Registry, free_port
    from enginefab.transport.client import RegistryClient

    blobs = _blobs(work)
    layout = _layout(work, blobs)
    res = {}
    for side in ("ours", "skopeo"):
        reg = Registry(root=work / f"reg-{side}", port=free_port()).start()
        stopped: list[float] = []
        done = threading.Event()
        watcher = threading.Thread(target=_stop_when_uploading, args=(reg, 32 << 20, stopped, done), daemon=True)
        watcher.start()
        err, ended = "", None
        try:
            if side == "ours":
                try:
                    push_blobs(RegistryClient(reg.host, plain_http=True, env=os.environ), "t/x", blobs, PushStats(), BlobHome(None))
                except EnginefabError as e:
                    err = e.message
                ended = time.monotonic()
            else:
                secs, _, out = _run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:x",
                                     f"docker://{reg.host}/t/x:x"], PEER_CAP + 30)
                ended = None if secs is None else time.monotonic()
                err = _last_line(out)
        finally:
            done.set()
            if reg.proc and reg.proc.poll() is None:
                os.kill(reg.proc.pid, signal.SIGCONT)
            reg.stop()
        secs = round(ended - stopped[0], 2) if stopped and ended else None
        res[side] = {"seconds_after_sigstop": secs, "error": err,
                     **({"gave_up": True} if side == "skopeo" and ended is None else {})}
    return res


def run(work: Path) -> dict:
    cases = _hostile_cases(work)
    cases["registry_stopped_mid_push"] = _stopped_mid_push(work)
    ours = {k: v["ours"].get("seconds", v["ours"].get("seconds_after_sigstop")) for k, v in cases.items()}
    return {
        "cases": cases,
        "ours_seconds": ours,
        "skopeo_seconds": {k: v["skopeo"].get("seconds", v["skopeo"].get("seconds_after_sigstop"))
                           for k, v in cases.items()},
        "all_ours_under_goal": all(s is not None and s < GOAL for s in ours.values()),
        "goal": f"each of ours < {GOAL:g} s with the default settings",
    }
