"""The `enginefab` command line: one sub-command per pipeline stage (the entry point).

Each command lives in the module of its stage (cli/inspect, lock, build, check, publish, project,
store, registry, render, release, nix, doctor) and is parse → call → present: it turns its
options into the stage's arguments (cli/args.py), calls the stage, and prints the result
(cli/present.py).
cli/app.py names them all; only the one that runs is built (cli/lazy.py).
"""

from __future__ import annotations

from enginefab.cli.app import app


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
