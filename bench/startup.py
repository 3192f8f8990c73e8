"""Start-up: `enginefab --help`, `list`, `lock --check` and a no-op `build --demo` through the
CLI, each as a ratio to Python's own start-up (`python -c pass`, the same interpreter) measured in
the same run. The goal (issue 13) is 3x; this never fails on time.

Each command runs REPEAT times, round-robin with the peer so that a change of load hits all of
them alike; the medians of wall and CPU (user+sys) time are compared. CPU time is the steadier
number on a loaded machine. Bytecode is cached as an installed package has it (a warm-up run writes
it under the work directory; PYTHONDONTWRITEBYTECODE would recompile every module every run).

Beside them, in the same run, what a command cannot avoid (`floors`): importing typer,
pydantic's first model, importing the stages.

`--help`, `list`, `lock --check` and the no-op build are replayed from the cache once a run on the same
inputs was recorded (cli/replay.py): the rows marked "full" run them with ENGINEFAB_NO_REPLAY=1,
as the first run after a change of engines/ or build/ does.

The no-op build runs in ENGINEFAB_BENCH_STORE=DIR if given, else in the default store; the demos
are built there first if they are not (that first build is not timed).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 9
GOAL = 3.0


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli() -> list[str]:
    """The console script a user types (beside the interpreter), else `python -m enginefab`."""
    script = Path(sys.executable).parent / "enginefab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "enginefab"]


FULL = " (full)"  # the suffix of a command run with its replay turned off


def _run(name: str, cmd: list[str], env: dict) -> tuple[float, float, int]:
    env = dict(env, ENGINEFAB_NO_REPLAY="1") if name.endswith(FULL) else env
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,  # runs: enginefab (or its own Python)
                       stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu() - c0, p.returncode


def commands(work: Path) -> dict[str, list[str]]:
    store = os.environ.get("ENGINEFAB_BENCH_STORE") or ""
    build = ["build", "--demo", "--out", str(work / "out")] + (["--store", store] if store else [])
    cli = _cli()
    replayed = {"--help": [*cli, "--help"], "list": [*cli, "list"], "lock --check": [*cli, "lock", "--check"],
                "build --demo (no-op)": [*cli, *build]}
    return {"python -c pass": [sys.executable, "-c", "pass"], **replayed,
            **{name + FULL: cmd for name, cmd in replayed.items()}}


#: what the commands cannot avoid paying, each alone: typer (every command), pydantic's first model
#: (typer converts option values with pydantic; the matrix and the definitions are pydantic models),
#: and importing the stages a command calls
FLOORS = {
    "import typer": "import typer",
    "pydantic's first model": "import pydantic\nclass A(pydantic.BaseModel):\n    x: int",
    "import the matrix (engines)": "import enginefab.engines.matrix",
    "import the assembler": "import enginefab.assemble.pipeline",
}


def run(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ENGINEFAB_QUIET="1", PYTHONPYCACHEPREFIX=str(work / "pycache"))
    cmds = commands(work) | {name: [sys.executable, "-c", code] for name, code in FLOORS.items()}
    # warm-up: bytecode, the replays recorded, and the demos built if needed
    codes = {name: _run(name, cmd, env)[2] for name, cmd in cmds.items()}
    wall: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(REPEAT):
        for name, cmd in cmds.items():
            w, c, codes[name] = _run(name, cmd, env)
            wall[name].append(w)
            cpu[name].append(c)
    peer_wall, peer_cpu = statistics.median(wall["python -c pass"]), statistics.median(cpu["python -c pass"])
    res: dict = {"repeat": REPEAT, "goal_ratio": GOAL, "python_start": {"wall_seconds": round(peer_wall, 4),
                                                                        "cpu_seconds": round(peer_cpu, 4)}}
    res["floors"] = {}
    for name in list(cmds)[1:]:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        if name in FLOORS:
            res["floors"][name] = {"cpu_ratio": round(c / peer_cpu, 2), "wall_ratio": round(w / peer_wall, 2)}
            continue
        res[name] = {"wall_seconds": round(w, 4), "cpu_seconds": round(c, 4), "wall_ratio": round(w / peer_wall, 2),
                     "cpu_ratio": round(c / peer_cpu, 2), "exit": codes[name], "meets_goal": c / peer_cpu <= GOAL}
    res["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return res

