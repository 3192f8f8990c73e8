"""The `enginefab` command line: one sub-command per pipeline stage (the entry point).

Each command lives in the module of its stage (cli/inspect, lock, build, check, publish, project,
store, registry, render, release, nix, doctor) and is parse → call → present: it turns its
options into the stage's arguments (cli/args.py), calls the stage, and prints the result
(cli/present.py).
cli/app.py names them all; only the one that runs is built (cli/lazy.py). `list` and
`lock --check` on inputs seen before print their recorded output before typer is even imported
(cli/replay.py).
"""

from __future__ import annotations

import sys

from enginefab.cli import replay


def main() -> None:
    """The console script: a replay if one holds, else the typer app (recording a pure run)."""
    argv = sys.argv[1:]
    code = replay.replay(argv)
    if code is not None:
        raise SystemExit(code)
    from enginefab.cli.app import app

    replay.recorded(argv, app)


def __getattr__(name: str):
    if name == "app":  # typer, imported only by a run that needs it
        from enginefab.cli.app import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
