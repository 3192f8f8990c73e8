"""The `enginefab` command line: one sub-command per pipeline stage (the entry point).

Each command lives in the module of its stage (cli/inspect, lock, build, check, publish, store,
registry, render, release, nix, doctor) and is parse → call → present: it turns its options into
the stage's arguments (cli/args.py), calls the stage, and prints the result (cli/present.py).
This module registers them on the typer application (cli/app.py), in the order `--help` lists them.
"""

from __future__ import annotations

from enginefab.cli import build, check, doctor, inspect, lock, nix, project, publish, registry, release, render, store
from enginefab.cli.app import app, nix_app, registry_app, render_app, store_app

app.command("list")(inspect.list_)
app.command()(inspect.show)
app.command()(inspect.schema)
app.command()(lock.lock)
app.command()(build.build)
app.command()(inspect.plan)
app.command()(inspect.diff)
app.command()(inspect.validate)
app.command()(check.check)
app.command()(publish.push)
app.command()(publish.pull)
app.command("referrers")(publish.referrers)
store_app.command("verify")(store.verify)
store_app.command("gc")(store.gc)
app.command()(project.init)
app.command()(doctor.doctor)
registry_app.command("start")(registry.start)
registry_app.command("list")(registry.list_)
registry_app.command("stop")(registry.stop)
render_app.command("dockerfile")(render.dockerfile)
render_app.command("ci")(render.ci)
app.command()(release.release)
app.command()(release.report)
app.command()(release.demo)
nix_app.command("build-layer")(nix.build_layer)
nix_app.command("assemble")(nix.assemble)
nix_app.command("missing-input")(nix.missing_input)
nix_app.command("flake-check")(nix.flake_check)
nix_app.command("fetch-blob")(nix.fetch_blob)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
