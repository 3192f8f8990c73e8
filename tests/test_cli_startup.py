"""Start-up a user waits for: `enginefab --help` loads typer and the CLI, none of the stages
and none of the heavy libraries; a command's own help loads none of the stages; `list` and `lock --check` load no
registry or network code. What is imported is deterministic, so this cannot be flaky; the time
itself is measured in bench/startup.py, which never gates CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import typer

from enginefab.cli.main import app
from tests.conftest import ROOT

HEAVY = ("rich", "pydantic", "pydantic_core", "oras", "requests", "urllib3", "jsonschema", "debian", "zstandard",
         "yaml", "packaging")
STAGES = ("engines", "lock", "assemble", "check", "publish", "release", "render", "nix", "transport", "demo")
NETWORK = ("oras", "requests", "urllib3", "enginefab.transport", "enginefab.publish", "enginefab.assemble",
           "enginefab.check", "enginefab.release")

_PROBE = """
import json, sys
sys.argv = ["enginefab", *json.loads(sys.argv[1])]
from enginefab.cli.main import main
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded(*args: str) -> tuple[int, set[str]]:
    """The exit code of `enginefab ARGS` and every module it had imported when it exited."""
    env = dict(os.environ, ENGINEFAB_NO_REPLAY="1")  # the full run (a replay imports neither: test_cli_replay)
    p = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    out = json.loads(p.stderr.strip().splitlines()[-1])
    return out["exit"], set(out["modules"])


def _hits(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_help_loads_no_stage_and_no_heavy_library():
    for args in (["--help"], []):
        code, modules = loaded(*args)
        assert code in (0, 2), (args, code)  # no arguments: the help, exit 2 as click has it
        assert "typer" in modules  # the probe saw the CLI run
        assert _hits(modules, HEAVY) == [], (args, _hits(modules, HEAVY))
        assert _hits(modules, [f"enginefab.{s}" for s in STAGES]) == [], args


def test_a_commands_help_loads_no_stage():
    """A command's own help builds its options (typer converts their values with pydantic), and
    nothing of the stage it runs."""
    for args in (["build", "--help"], ["release", "--help"], ["store", "--help"], ["registry", "stop", "--help"]):
        code, modules = loaded(*args)
        assert code == 0, args
        heavy = [h for h in HEAVY if not h.startswith("pydantic")]
        assert _hits(modules, heavy) == [], (args, _hits(modules, heavy))
        assert _hits(modules, [f"enginefab.{s}" for s in STAGES]) == [], args


def test_list_and_lock_check_load_no_registry_or_network_code():
    for args in (["list"], ["lock", "--check"]):
        code, modules = loaded(*args)
        assert code == 0, args
        assert "enginefab.engines.matrix" in modules  # it did load the matrix
        assert _hits(modules, NETWORK) == [], (args, _hits(modules, NETWORK))


def test_the_root_help_lists_what_the_built_commands_say():
    """The root's listing comes from docstrings, without building the commands: it must read as
    typer's own listing of the built commands does."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="enginefab")
    lazy, eager = ctx.make_formatter(), ctx.make_formatter()
    root.format_commands(ctx, lazy)
    typer.core.TyperGroup.format_commands(root, ctx, eager)  # typer's own: builds every command
    assert "  release " in lazy.getvalue() and "  store " in lazy.getvalue()
    assert lazy.getvalue() == eager.getvalue()
