"""Whole-build costs on the demo images (every input reachable here):

* a cold build (empty store) through the CLI;
* a no-op rebuild of the same images — in process (the builder's own cost) and through the CLI —
  against the peers a no-op cannot beat: the Python interpreter starting, and importing the CLI;
* a no-op of the whole matrix (`build --all --reachable-layers`: the presets' reachable layers
  are cache hits and their unreachable inputs fail fast);
* stored bytes against the sum of the image sizes, here and (from `plan`) across the matrix.

The demos are built into a fresh store. The whole-matrix no-op runs in ENGINEFAB_BENCH_STORE=DIR
if given (e.g. a store where the presets' reachable layers are built already), else in the same
fresh store after a first pass that builds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "enginefab", *args], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, ENGINEFAB_QUIET="1", ENGINEFAB_NO_REPLAY="1"))  # the builder, not a replay
    return time.monotonic() - t0, p


def _best(n: int, f) -> float:
    return min(f() for _ in range(n))


def run(work: Path) -> dict:
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.gc import project_definitions
    from enginefab.assemble.planreport import plan
    from enginefab.assemble.store import Store
    from enginefab.core.settings import Settings
    from enginefab.transport.session import Session

    store_dir = work / "store"
    matrix_store = Path(os.environ.get("ENGINEFAB_BENCH_STORE") or store_dir)
    out = work / "layout"
    res: dict = {"matrix_store": str(matrix_store)}
    cold_s, p = _cli("build", "--demo", "--store", str(store_dir), "--out", str(out), "--json")
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    cold = json.loads(p.stdout)
    res["cold_build"] = {"seconds": round(cold_s, 2), "layers_built": sum(r["built"] for r in cold),
                         "images": {r["alias"]: r["digest"] for r in cold}}

    store = Store(store_dir)
    defns = [d for d in project_definitions(ROOT) if d.image.alias in res["cold_build"]["images"]]

    def in_process() -> float:
        b = Builder(store, session=Session.of(Settings.from_env(os.environ, root=ROOT)))
        t0 = time.monotonic()
        digests = {d.image.alias: b.image(d).digest for d in defns}
        took = time.monotonic() - t0
        assert digests == res["cold_build"]["images"] and b.stats.layers_built == 0
        return took

    def cli() -> float:
        took, p = _cli("build", "--demo", "--store", str(store_dir), "--out", str(out), "--json")
        assert all(r["built"] == 0 for r in json.loads(p.stdout))
        return took

    def python_start() -> float:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.monotonic() - t0

    def cli_import() -> float:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import enginefab.cli.main, enginefab.assemble.pipeline"], check=True, cwd=ROOT)
        return time.monotonic() - t0

    def matrix() -> float:
        took, p = _cli("build", "--all", "--reachable-layers", "--store", str(matrix_store), "--out",
                       str(work / "all"), "--json")
        res["matrix_noop_layers_built"] = sum(r["built"] for r in json.loads(p.stdout))
        return took

    noop_in = _best(3, in_process)
    noop_cli = _best(3, cli)
    py = _best(3, python_start)
    imp = _best(3, cli_import)
    res["noop_rebuild"] = {
        "images": len(defns),
        "in_process_seconds": round(noop_in, 3),
        "cli_seconds": round(noop_cli, 3),
        "python_start_seconds": round(py, 3),
        "cli_import_seconds": round(imp, 3),
        "cli_minus_import_seconds": round(noop_cli - imp, 3),
        "goal_under_1s": noop_cli < 1.0,
    }
    built_sizes = {}
    for r in cold:
        manifest = json.loads(store.blob_path(r["digest"]).read_bytes())
        built_sizes[r["alias"]] = (sum(ld["size"] for ld in manifest["layers"]) + manifest["config"]["size"]
                                   + store.blob_path(r["digest"]).stat().st_size)
    stored = sum(p.stat().st_size for p in (store_dir / "blobs/sha256").iterdir())
    res["bytes"] = {"sum_of_image_sizes": sum(built_sizes.values()), "stored": stored,
                    "ratio": round(stored / sum(built_sizes.values()), 3)}
    res["matrix_first_reachable_build_seconds"] = round(matrix(), 2)  # builds what is reachable and new
    res["matrix_noop_seconds"] = round(_best(2, matrix), 3)

    full = plan(project_definitions(ROOT), Store(matrix_store))["totals"]
    res["matrix_plan"] = {k: full[k] for k in ("images", "layers", "shared_layers", "sum_of_image_sizes",
                                               "unique_bytes", "saved_by_sharing", "sizes")}
    res["matrix_plan"]["unique_over_sum"] = round(full["unique_bytes"] / full["sum_of_image_sizes"], 3)
    return res
