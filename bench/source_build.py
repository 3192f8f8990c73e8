"""The compile step of a source build (mmh3 5.2.0's C extension from its PyPI sdist, over the x86_64
demo image; tests/test_source_build.py's image), cold and cached, against a peer in the same run:

* cold: the run layer built in a store that holds the demo's layers but not this one — in
  phases: unpacking the layers below, staging and applying the build tools (gcc, libc6-dev,
  libpython3.9-dev; pip, setuptools, wheel), the step itself in the sandbox (`pip install .`),
  and the layer's whole time;
* cached: the same build again (the layer is an action-cache hit), through the CLI;
* peer: the same `pip wheel --no-deps --no-build-isolation` of the same sdist with the host's
  Python 3.9 and gcc, plain (no sandbox, no image, no tools to stage) — what the step alone costs
  on a developer machine. The ratio step/peer is the sandbox's and the image's Python's overhead
  on the compile; layer/peer is what a source build costs end to end.

Needs a store with the demo's layers: ENGINEFAB_BENCH_STORE=DIR (hard-linked, never written),
else the demos are built into a fresh one first. The peer needs a host Python 3.9
(ENGINEFAB_BENCH_PY39, else `python3.9` on PATH or pyenv's) and PyPI for its setuptools.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench._runphases import timed_phases

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "enginefab", *args], cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, ENGINEFAB_QUIET="1"))
    if p.returncode != 0:
        raise RuntimeError(f"enginefab {' '.join(args)}: {p.stderr}")
    return time.monotonic() - t0, p


def _project(work: Path) -> Path:
    from tests.test_source_build import ARCHES, BUILD, FAMILY, IMAGE, SDIST

    proj = work / "proj"
    proj.mkdir()
    for d in ("engines", "build", "registry"):
        shutil.copytree(ROOT / d, proj / d)
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    acc, name = ARCHES["x86_64"]
    (proj / "engines" / "mmh3.toml").write_text(FAMILY + IMAGE.format(arch="x86_64", acc=acc, acc_name=name,
                                                                        sdist=SDIST, script=BUILD))
    _cli("lock", "mmh3-x86_64", cwd=proj)
    return proj


def _demo_store(work: Path) -> Path:
    given = os.environ.get("ENGINEFAB_BENCH_STORE")
    if given:
        dest = work / "store"
        shutil.copytree(given, dest, copy_function=os.link, ignore=shutil.ignore_patterns("rootfs", "tmp", "roots",
                                                                                         "locks", "store.lock"))
        return dest
    _cli("build", "--demo", "--store", str(work / "store"), "--out", str(work / "demo"), cwd=ROOT)
    return work / "store"


def _cold(proj: Path, store: Path) -> dict:
    """The run layer built in-process, its phases timed."""
    from enginefab.assemble.builder import Builder
    from enginefab.assemble.store import Store
    from enginefab.core.definition import load_definition
    from enginefab.core.settings import Settings
    from enginefab.transport.session import Session

    with timed_phases() as phases:
        defn = load_definition(proj / "build" / "mmh3-x86_64.json")
        b = Builder(Store(store), session=Session.of(Settings.from_env(os.environ, root=proj)))
        outcomes = b.build_layers(defn)
    run = next(o for o in outcomes if o.id.startswith("run/"))
    assert run.status == "built", run.status
    return {"layer_seconds": round(run.seconds, 2), **{k: round(v, 2) for k, v in phases.items()},
            "digest": run.descs[0].digest}


def _python39() -> str | None:
    cand = [os.environ.get("ENGINEFAB_BENCH_PY39"), shutil.which("python3.9")]
    cand += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    # a pyenv shim is on PATH even when that version is not selected: run each to know
    return next((c for c in cand if c and subprocess.run([c, "-c", "pass"],  # runs: python3.9
                                                         capture_output=True).returncode == 0), None)


def _peer(work: Path) -> dict:
    """pip wheel of the same sdist with the host's Python 3.9 and gcc, plain."""
    py = _python39()
    if py is None:
        return {"skipped": "no host Python 3.9 (set ENGINEFAB_BENCH_PY39)"}
    from enginefab.core.settings import Settings
    from enginefab.transport.download import Want, fetch
    from enginefab.transport.session import Session
    from tests.test_source_build import SDIST

    venv = work / "peer-venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True)  # runs: python3.9
    pip = [str(venv / "bin/python"), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "setuptools>=74.1", "wheel"], check=True)  # runs: python3.9
    sdist = fetch(Want(url=SDIST, sha256="1efc8fec8478e9243a78bb993422cf79f8ff85cb4cf6b79647480a31e0d950a8",
                       size=33582, label="mmh3"), Session.of(Settings.from_env(os.environ, root=ROOT)))
    best = None
    for n in range(3):
        src = work / f"peer-src{n}"
        src.mkdir()
        subprocess.run(["tar", "xzf", str(sdist), "-C", str(src)], check=True)
        t0 = time.monotonic()
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / f"whl{n}"),  # runs: python3.9
                        str(src / "mmh3-5.2.0")], check=True)
        took = time.monotonic() - t0
        best = took if best is None else min(best, took)
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"pip_wheel_seconds": round(best, 2), "python": py, "gcc": gcc, "of": 3}


def run(work: Path) -> dict:
    proj = _project(work)
    store = _demo_store(work)
    res: dict = {"peer": _peer(work)}  # first: it is quick, and needs PyPI
    res["cold"] = _cold(proj, store)
    cached_s, p = _cli("build", "mmh3-x86_64", "--store", str(store), "--out", str(work / "out"), "--json", cwd=proj)
    run_layer = next(lr for lr in json.loads(p.stdout)[0]["layer_results"] if lr["id"].startswith("run/"))
    assert run_layer["status"] == "cached" and run_layer["digests"][0] == res["cold"]["digest"]
    res["cached"] = {"cli_seconds": round(cached_s, 2), "layer_seconds": round(run_layer["seconds"], 3)}
    peer = res["peer"].get("pip_wheel_seconds")
    if peer:
        res["ratios"] = {"step_over_peer": round(res["cold"]["step_seconds"] / peer, 2),
                         "layer_over_peer": round(res["cold"]["layer_seconds"] / peer, 2),
                         "cached_cli_over_peer": round(cached_s / peer, 2)}
    res["load_average"] = os.getloadavg()
    return res
