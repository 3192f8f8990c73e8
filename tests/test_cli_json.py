"""`--json` where a machine reads the output: every command that reports results takes it."""

from __future__ import annotations

import json

import typer

from enginefab.cli.main import app
from tests.conftest import cli

#: commands whose result is not a report: the demo (a release, with its own output), the CI file
#: (the file is the result) and what the flake's derivations run (they print what nix reads)
NO_JSON = {("demo",), ("render", "ci"), ("nix", "build-layer"), ("nix", "assemble"), ("nix", "missing-input"),
           ("nix", "flake-check"), ("nix", "fetch-blob")}


def _leaves(cmd, path: tuple[str, ...] = ()):
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def test_every_command_that_reports_results_takes_json():
    leaves = dict(_leaves(typer.main.get_command(app)))
    assert ("list",) in leaves and ("store", "gc") in leaves and NO_JSON <= set(leaves)
    missing = [" ".join(p) for p, cmd in leaves.items()
               if p not in NO_JSON and not any("--json" in prm.opts for prm in cmd.params)]
    assert missing == [], f"commands without --json: {missing}"


def test_render_dockerfile_json_names_every_file_it_wrote(engines_copy, tmp_path):
    """A preset with a base image, its packages pinned (real Debian packages in their place)."""
    demo = json.loads((engines_copy / "build" / "demo-pytorch-x86_64.json").read_text())
    debs = [i for layer in demo["layers"] for i in layer["inputs"] if i["kind"] == "deb"][:3]
    path = engines_copy / "build" / "kungfu-tf1.13.json"
    d = json.loads(path.read_text())
    for layer in d["layers"]:
        if layer["kind"] == "debs":
            layer["inputs"] = debs
    path.write_text(json.dumps(d))
    ctx = tmp_path / "ctx"
    p = cli("render", "dockerfile", "kungfu-tf1.13", "--out", str(ctx), "--json", check=True, cwd=engines_copy)
    listed = json.loads(p.stdout)
    assert listed["dockerfile"] == str(ctx / "Dockerfile") and "Dockerfile" in listed["files"]
    written = sorted(str(f.relative_to(ctx)) for f in ctx.rglob("*") if f.is_file())
    assert listed["files"] == written and len(written) > 1  # the Dockerfile and its step scripts
