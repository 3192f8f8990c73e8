"""First push of the demo images: `enginefab push` against `skopeo copy` of the same OCI layouts,
in the same run, each into a fresh docker-registry on 127.0.0.1, with wall time and peak memory.

The images come from an already-built store ($ENGINEFAB_STORE or the default store; built first
if needed, not timed). skopeo runs with a fresh blob-info cache each time (its cache can turn a
copy into cross-repository mounts): as root its cache is /var/lib/containers/cache, so skopeo runs
in bubblewrap with an empty directory bound there. Each side runs ROUNDS times, alternating; the
best time of each is compared. Peak memory is the max RSS GNU time reports for the whole process
tree. `ours_full` is the same push with the multi-arch index and the referrers (SBOM,
provenance), which skopeo does not do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in bytes, stdout) of a command, measured by GNU time."""
    p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *cmd], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, ENGINEFAB_QUIET="1", **(env or {})))
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    line = [x for x in p.stderr.splitlines() if x.startswith("TIME ")][-1]
    _, secs, kib = line.split()
    return float(secs), int(kib) * 1024, p.stdout


def run(work: Path) -> dict:
    from enginefab.engines.matrix import load
    from enginefab.core.settings import Settings
    from enginefab.publish.server import Registry, free_port

    m = load(ROOT)
    aliases = [i.alias for i in m.demos]
    store = Settings.from_env(os.environ, root=ROOT).store
    layout = work / "layout"
    enginefab = [sys.executable, "-m", "enginefab"]
    p = subprocess.run([*enginefab, "build", *aliases, "--store", str(store), "--out", str(layout), "--json"],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    built = json.loads(p.stdout)
    total = 0
    seen = set()
    for r in built:
        man = json.loads((layout / "blobs/sha256" / r["digest"][7:]).read_bytes())
        for d in [man["config"], *man["layers"]]:
            if d["digest"] not in seen:
                seen.add(d["digest"])
                total += d["size"]

    def fresh_registry(name: str) -> Registry:
        return Registry(root=work / name, port=free_port()).start()

    results: dict[str, list[tuple[float, int]]] = {"ours": [], "ours_full": [], "skopeo": []}
    for rnd in range(ROUNDS):
        for side in ("ours", "skopeo", "ours_full"):
            reg = fresh_registry(f"reg-{side}-{rnd}")
            try:
                if side.startswith("ours"):
                    extra = [] if side == "ours_full" else ["--no-index", "--no-referrers"]
                    secs, rss, out = _timed([*enginefab, "push", *aliases, "--to", f"{reg.host}/enginefab",
                                             "--plain-http", "--store", str(store), "--json", *extra],
                                            env={"ENGINEFAB_CACHE": str(work / f"cache-{side}-{rnd}")})
                    assert json.loads(out)["stats"]["uploaded_bytes"] == total
                else:
                    cache = work / f"skopeo-cache-{rnd}"
                    cache.mkdir()
                    script = " && ".join(
                        f"skopeo copy -q --dest-tls-verify=false oci:{layout}:{a} "
                        f"docker://{reg.host}/enginefab/pytorch:{a}" for a in aliases)
                    secs, rss, _ = _timed(["bwrap", "--dev-bind", "/", "/", "--bind", str(cache),
                                           "/var/lib/containers/cache", "sh", "-c", script])
                results[side].append((secs, rss))
            finally:
                reg.stop()
                shutil.rmtree(reg.root, ignore_errors=True)

    best = {k: min(s for s, _ in v) for k, v in results.items()}
    peak = {k: max(r for _, r in v) for k, v in results.items()}
    return {
        "images": aliases,
        "bytes": total,
        "rounds": ROUNDS,
        "seconds": {k: [round(s, 2) for s, _ in v] for k, v in results.items()},
        "best_seconds": {k: round(v, 2) for k, v in best.items()},
        "peak_rss_mb": {k: round(v / 1e6, 1) for k, v in peak.items()},
        "ratio_ours_vs_skopeo": round(best["ours"] / best["skopeo"], 3),
        "ratio_ours_full_vs_skopeo": round(best["ours_full"] / best["skopeo"], 3),
        "ours_mb_per_s": round(total / best["ours"] / 1e6, 1),
        "goal": "ratio_ours_vs_skopeo <= 1.0",
    }
