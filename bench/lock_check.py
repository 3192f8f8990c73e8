"""`enginefab lock --check` of the whole matrix: in-process and CLI wall time, against peers
measured in the same run.

Peers:
* floor: `sha256sum build/*.json` (reading every definition once) and a bare `python -c pass`
  (what any Python CLI pays before doing anything);
* the alternative: re-verifying closures with a resolver — `uv pip compile --offline` of one
  image's requirements from uv's warm cache (no network), times the number of images that have
  requirements. That is what a check that re-resolves instead of diffing `matrix` would cost.

The CLI runs with every proxy pointed at a closed port, so a check that touched the network
would fail (`ok` false) instead of looking fast.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 7


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _median_wall(cmd: list[str], *, env: dict | None = None, cwd: Path = ROOT,
                 cpu: list | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Median wall time of REPEAT runs; appends the median CPU time (user+sys) to `cpu`, which
    a loaded machine inflates much less than wall time."""
    times, cpus, last = [], [], None
    for _ in range(REPEAT):
        c0, t0 = _children_cpu(), time.perf_counter()
        last = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - c0)
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return statistics.median(times), last  # type: ignore[return-value]


def _in_process() -> dict:
    t0 = time.perf_counter()
    from enginefab.engines.matrix import load
    from enginefab.lock import check

    imported = time.perf_counter() - t0
    loads, checks, problems = [], [], None
    for _ in range(REPEAT):
        t1 = time.perf_counter()
        m = load(ROOT)
        t2 = time.perf_counter()
        problems, _warnings = check.check(m)
        t3 = time.perf_counter()
        loads.append(t2 - t1)
        checks.append(t3 - t2)
    return {"import_s": round(imported, 4), "load_matrix_s": round(statistics.median(loads), 4),
            "check_s": round(statistics.median(checks), 4),
            "total_s": round(statistics.median(loads) + statistics.median(checks), 4),
            "ok": not problems, "images": len(m.images)}


def _uv_offline(work: Path) -> dict:
    """uv re-resolving one image's closure offline (warm cache), the peer for 'verify by resolving'."""
    from enginefab.engines.matrix import load
    from enginefab.core.pytarget import Target
    from enginefab.lock.pypi import uv_binary

    m = load(ROOT)
    img = m.get("demo-pytorch-x86_64")
    req, con = work / "req.in", work / "con.txt"
    req.write_text("\n".join(img.d.requirements) + "\n")
    con.write_text("\n".join(img.d.constraints) + "\n")
    target = Target(python=img.d.python, arch=img.arch, glibc=img.os.glibc)
    cmd = [uv_binary(), "pip", "compile", str(req), "-c", str(con), "--offline", "--quiet", "--no-header",
           "--python-version", target.python, "--python-platform", target.uv_platform(), "--no-config",
           "--exclude-newer", m.platforms.pypi.exclude_newer or "2100-01-01T00:00:00Z"]
    wall, proc = _median_wall(cmd, env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"))
    with_reqs = sum(1 for i in m.images if i.d.requirements)
    return {"per_image_s": round(wall, 4), "ok": proc.returncode == 0, "images_with_requirements": with_reqs,
            "matrix_s": round(wall * with_reqs, 4),
            "note": "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1:]}


def run(work: Path) -> dict:
    from enginefab.publish.server import free_port  # released at once: nothing listens

    dead = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, ENGINEFAB_QUIET="1", HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
               NO_PROXY="", no_proxy="")
    cpu: list[float] = []
    cli_wall, proc = _median_wall([sys.executable, "-m", "enginefab", "lock", "--check", "--json"], env=env, cpu=cpu)
    sha_wall, _ = _median_wall(["sha256sum", *sorted(str(p) for p in (ROOT / "build").glob("*.json"))])
    py_wall, _ = _median_wall([sys.executable, "-c", "pass"], cpu=cpu)
    load = os.getloadavg()[0]
    inproc = _in_process()
    with tempfile.TemporaryDirectory(dir=work) as td:
        uv = _uv_offline(Path(td))
    definitions = sorted((ROOT / "build").glob("*.json"))
    return {
        "images": inproc["images"],
        "definitions_bytes": sum(p.stat().st_size for p in definitions),
        "cli_wall_s": round(cli_wall, 4),
        "cli_cpu_s": round(cpu[0], 4),
        "cli_ok": proc.returncode == 0,
        "load_average_1min": round(load, 2),
        "in_process": inproc,
        "peers": {
            "sha256sum_build_s": round(sha_wall, 4),
            "python_startup_s": round(py_wall, 4),
            "python_startup_cpu_s": round(cpu[1], 4),
            "uv_compile_offline": uv,
        },
        "ratios": {
            "cli_vs_python_startup": round(cli_wall / py_wall, 2),
            "cli_cpu_vs_python_startup_cpu": round(cpu[0] / cpu[1], 2),
            "cli_vs_sha256sum": round(cli_wall / sha_wall, 1),
            "uv_offline_matrix_vs_cli": round(uv["matrix_s"] / cli_wall, 2),
            "in_process_check_vs_cli": round(inproc["total_s"] / cli_wall, 3),
        },
        "goal": "cli_wall_s well under 1 s; no network (proxies point at a closed port)",
    }
