"""Every command answers --help: a user's first step must not crash on its own help text."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from enginefab.cli.main import app


def _commands(cmd, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):  # a group's sub-commands
        found += _commands(sub, (*path, name))
    return found


def test_every_command_prints_its_help():
    root = typer.main.get_command(app)
    paths = _commands(root)
    assert ("release",) in paths and ("pull",) in paths and ("store", "gc") in paths
    runner = CliRunner()
    for path in paths:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output, r.exception)
        assert "Usage:" in r.output, path
    # option texts with literal brackets survive (they once crashed rich's markup parser)
    r = runner.invoke(app, ["pull", "--help"], terminal_width=200)
    assert "OS/ARCH[/VARIANT]" in r.output and "HOST[:PORT]/REPOSITORY[:TAG]" in r.output
