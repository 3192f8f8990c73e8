"""`enginefab nix`: what the flake's derivations run (flake.nix; docs/nix.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli.app import run_guarded


group = typer.Typer(help="What the flake's derivations run (flake.nix; docs/nix.md).",
                    no_args_is_help=True, rich_markup_mode=None, add_completion=False)


@group.command("build-layer")
@run_guarded
def build_layer(
    layer: Annotated[Path, typer.Option("--layer", envvar="layerPath", help="The layer object from the lock (JSON).")],
    compression: Annotated[str, typer.Option("--compression", envvar="compression", help="The compression contract (JSON).")],
    source_date_epoch: Annotated[int, typer.Option("--source-date-epoch", envvar="sourceDateEpoch")],
    inputs: Annotated[Path, typer.Option("--inputs", envvar="inputsPath", help="JSON {sha256: store path} of its fetches.")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Directory to create: blob, descriptor.json.")],
    lower: Annotated[Optional[Path], typer.Option("--lower", envvar="lowerPath",
                                                  help="Run steps: JSON list of the parts below.")] = None,
    arch: Annotated[str, typer.Option("--arch", envvar="arch", help="Run steps: the image's architecture.")] = "",
) -> None:
    """Build one layer of a definition, without network (the flake's layer derivations).

    Prints `<layer id> <blob digest>`."""
    from enginefab.core.definition import Compression, Layer
    from enginefab.nix.layer import LayerJob, build_layer as build
    from enginefab.nix.parts import read_inputs, read_parts

    job = LayerJob(layer=Layer.model_validate_json(layer.read_bytes()),
                   compression=Compression.model_validate_json(compression), source_date_epoch=source_date_epoch,
                   inputs=read_inputs(inputs), lower=tuple(read_parts(lower)) if lower else (), arch=arch)
    entry = build(job, out)
    print(f"{job.layer.id} {entry['digest']}")


@group.command("assemble")
@run_guarded
def assemble(
    definition: Annotated[Path, typer.Option("--definition", help="The image's build/<alias>.json.")],
    layers: Annotated[Path, typer.Option("--layers", envvar="layersPath", help="JSON list of the image's parts.")],
    inputs: Annotated[Path, typer.Option("--inputs", envvar="inputsPath", help="JSON {sha256: store path}: the base's config.")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="The OCI layout to create.")],
) -> None:
    """Write an image's config, manifest and OCI layout from its layer derivations' outputs.

    Prints `<alias> <manifest digest>`, as `enginefab build` does."""
    from enginefab.core.definition import load_definition
    from enginefab.nix.assemble import assemble as write_image
    from enginefab.nix.parts import read_inputs, read_parts

    defn = load_definition(definition)
    built = write_image(defn, read_parts(layers), read_inputs(inputs), out)
    print(f"{defn.image.alias} {built.digest}")


@group.command("missing-input")
@run_guarded
def missing_input(
    kind: Annotated[str, typer.Argument(help="manual, awaiting, unresolved or unpinned.")],
    input_json: Annotated[str, typer.Option("--input", envvar="input", help="The input from the lock (JSON).")],
) -> None:
    """Fail with what a user must do to supply an input (the flake's manual-input derivations)."""
    from enginefab.core.definition import Input
    from enginefab.nix.missing import missing_input as failure

    raise failure(kind, Input.model_validate_json(input_json))


@group.command("flake-check")
@run_guarded
def flake_check(
    name: Annotated[str, typer.Argument(help="lock or definitions.")],
    root: Annotated[Path, typer.Option("--root", envvar="ENGINEFAB_ROOT", help="The matrix (engines/, build/).")],
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Where to write the JSON report.")],
) -> None:
    """One of `nix flake check`'s checks: the JSON report to --out; exit 1 (report on stderr) if it fails."""
    from enginefab.nix.checks import flake_check as run

    ok, report = run(name, root)
    out.write_bytes(report)
    if not ok:
        sys.stderr.buffer.write(report)
        raise typer.Exit(1)


@group.command("fetch-blob")
@run_guarded
def fetch_blob(
    reference: Annotated[str, typer.Argument(help="NAME@sha256:HEX, as the lock's oci inputs have it.")],
    size: Annotated[int, typer.Option("--size", help="Expected size in bytes (progress only; 0: unknown).")] = 0,
    out: Annotated[Path, typer.Option("--out", envvar="out", help="Where to write the blob.")] = Path("blob"),
) -> None:
    """Fetch one base-image blob from its registry (or mirror): the flake's fixed-output fetcher."""
    from enginefab.cli import args
    from enginefab.nix.fetch import fetch_blob as fetch

    fetch(reference, size, out, args.session())
