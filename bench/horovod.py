"""Horovod 0.22.1 compiled in the sandbox against the x86_64 demo's PyTorch 1.8.0 (the matrix's
`demo-horovod-x86_64`), cold and cached, and whether the layer is reproducible:

* cold: the run layer built in a store that holds the demo's layers but not this one — in
  phases: unpacking the layers below (1.6 GB of torch), staging and applying the build tools
  (g++, make, libpython3.9-dev, python3-distutils; pip, setuptools, wheel, cmake), the step in
  the sandbox (CMake configure, the compile of Horovod's common code, Gloo twice — once for the
  pre-C++11 ABI torch 1.8 uses — and the torch ops, `pip install .`), and the layer's whole time;
* cold again, when ENGINEFAB_BENCH_TWICE=1: in a second store that never saw the run layer —
  the two layer digests are equal or `enginefab diff` names the files that differ;
* cached: the same build again through the CLI (the layer is an action-cache hit);
* runtime: `enginefab check --level runtime` on the built image (the probe imports horovod and
  torch; `horovodrun --check-build` lists PyTorch and Gloo);
* tools: every layer of the image listed — no compiler, assembler, linker, header, pip, setuptools
  or CMake in any of them, Horovod's library in the run layer.

The peer is the step itself: layer/step is what enginefab adds around the compile (unpacking,
tools, snapshots, packing). No host peer: torch 1.8.0 has no wheel for the host's Python.

Needs a store with the demo's layers: ENGINEFAB_BENCH_STORE=DIR (hard-linked, never written),
else the lower layers are built into the fresh store first (timed apart). The compile runs with
MAKEFLAGS=-j2 (the step's env); the load average is recorded, as the machine may be shared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench._runphases import timed_phases

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "demo-horovod-x86_64"


def _cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "enginefab", *args], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, ENGINEFAB_QUIET="1"))
    return time.monotonic() - t0, p


def _store(work: Path, name: str, seed: bool) -> Path:
    dest = work / name
    given = os.environ.get("ENGINEFAB_BENCH_STORE")
    if seed and given:
        shutil.copytree(given, dest, copy_function=os.link, ignore=shutil.ignore_patterns(
            "rootfs", "tmp", "roots", "locks", "store.lock", "logs"))
    return dest


def _cold(store: Path) -> dict:
    """Every layer built in-process; the run layer's phases timed."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from enginefab.core.definition import load_definition
    from enginefab.core.settings import Settings
    from enginefab.transport.session import Session

    load0 = os.getloadavg()
    with timed_phases() as phases:
        b = Builder(Store(store), session=Session.of(Settings.from_env(os.environ, root=ROOT)))
        outcomes = b.build_layers(load_definition(ROOT / "build" / f"{ALIAS}.json"))
    run = next(o for o in outcomes if o.id.startswith("run/"))
    assert run.status == "built", run.status
    lower = sum(o.seconds for o in outcomes if o.status == "built" and not o.id.startswith(("run/", "config/")))
    return {"layer_seconds": round(run.seconds, 1), **{k: round(v, 1) for k, v in phases.items()},
            "lower_layers_built_seconds": round(lower, 1), "digest": run.descs[0].digest,
            "layer_bytes": run.descs[0].size, "load_average_before": load0, "load_average_after": os.getloadavg()}


SITE = "usr/local/lib/python3.9/dist-packages"
#: files of the build tools, by name, and the tool wheels' packages
TOOL_FILES = ("gcc", "gcc-10", "g++", "g++-10", "cc1", "cc1plus", "as", "ld", "ld.bfd", "make", "stdio.h", "Python.h",
              "cmake")
TOOL_PACKAGES = tuple(f"{SITE}/{p}" for p in ("pip", "setuptools", "cmake", "wheel"))


def _tools_in_image(store: Path, layers: list[dict]) -> dict:
    from enginefab.assemble.rootfs import open_layer

    found, names = [], set()
    for lr in layers:
        for d in lr.get("digests", []):
            with open_layer(store / "blobs/sha256" / d.split(":")[1], "application/vnd.oci.image.layer.v1.tar+gzip") as f, \
                    tarfile.open(fileobj=f, mode="r|") as tf:
                for m in tf:
                    names.add(m.name)
                    name = m.name.rstrip("/")
                    if (not m.isdir() and name.rsplit("/", 1)[-1] in TOOL_FILES) or name in TOOL_PACKAGES:
                        found.append(name)
    lib = sorted(n for n in names if n.startswith(f"{SITE}/horovod/torch/mpi_lib_v2"))
    return {"found": sorted(found), "horovod_torch_library": lib, "files": len(names)}


def run(work: Path) -> dict:
    a = _store(work, "store-a", seed=True)
    res: dict = {"cold": _cold(a)}
    cold = res["cold"]
    cold["ratio_layer_over_step"] = round(cold["layer_seconds"] / cold["step_seconds"], 3)
    if os.environ.get("ENGINEFAB_BENCH_TWICE") == "1":
        b = _store(work, "store-b", seed=True)
        again = _cold(b)
        res["cold_again"] = again
        res["reproducible"] = again["digest"] == cold["digest"]
        if not res["reproducible"]:  # which files differ, from the two layouts
            for s, o in ((a, "out-a"), (b, "out-b")):
                _cli("build", ALIAS, "--store", str(s), "--out", str(work / o))
            _, p = _cli("diff", f"{work / 'out-a'}:{ALIAS}", f"{work / 'out-b'}:{ALIAS}")
            res["diff"] = (p.stdout + p.stderr)[-4000:]
    secs, p = _cli("build", ALIAS, "--store", str(a), "--out", str(work / "out"), "--json")
    assert p.returncode == 0, p.stderr
    layer = next(lr for lr in json.loads(p.stdout)[0]["layer_results"] if lr["id"].startswith("run/"))
    assert layer["status"] == "cached" and layer["digests"][0] == cold["digest"], layer
    res["cached"] = {"cli_seconds": round(secs, 2), "layer_seconds": round(layer["seconds"], 3)}
    res["tools_in_image"] = _tools_in_image(a, json.loads(p.stdout)[0]["layer_results"])
    secs, p = _cli("check", ALIAS, "--store", str(a), "--level", "runtime", "--json")
    rep = json.loads(p.stdout)[0]
    by = {r["name"]: r for r in rep["results"]}
    res["runtime_check"] = {"seconds": round(secs, 1), "ok": rep["ok"],
                            "check_build": by["command:horovodrun-check-build"]["status"],
                            "check_build_output": by["command:horovodrun-check-build"]["data"]["stdout"]}
    res["cpus"] = os.cpu_count()
    return res
