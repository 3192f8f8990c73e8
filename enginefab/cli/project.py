"""`enginefab init`: a project of one's own, with one image derived from a preset in a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import JsonOpt, run_guarded
from enginefab.core.errors import EnginefabError


@run_guarded
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the project (new or empty).")] = Path("."),
    from_: Annotated[str, typer.Option("--from", help="The preset in a registry, by digest: REGISTRY/REPOSITORY"
                                       "[:TAG]@sha256:… (what `enginefab push` printed).")] = "",
    preset: Annotated[str, typer.Option("--preset", help="Which image of this matrix --from is (its platforms, "
                                        "engine and checks go into the project).")] = "demo-pytorch-x86_64",
    alias: Annotated[Optional[str], typer.Option("--alias", help="The new image's alias [default: "
                                                 "<engine>-custom-<arch>].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a directory that is not empty.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a project of your own: engines/ with one image derived from a preset by registry
    reference and digest, its platforms and checks, build/, a README and a .gitignore. In it,
    lock, build, check and push work as here."""
    from enginefab.render import project
    from enginefab.transport.reference import parse_reference

    if "@sha256:" not in from_:
        raise EnginefabError(f"--from {from_!r} does not name a digest" if from_ else "--from is required",
                             fix="pass --from REGISTRY/REPOSITORY@sha256:… (`enginefab push PRESET --to …` prints "
                             "the reference and digest it pushed)")
    parse_reference(from_)
    m = args.matrix()
    img = m.get(preset)
    name = alias or f"{img.engine.name}-custom-{img.arch}"
    files = project.write(directory, project.plan(m, img, from_, name, m.root / "engines" / "checks"), force=force)
    if as_json:
        present.emit({"directory": str(directory.resolve()), "image": name, "from": from_, "preset": img.alias,
                      "files": files})
        return
    for f in files:
        present.note(f"[green]wrote[/] {directory / f}")
    present.plain(f"next: cd {directory} && enginefab lock {name} && enginefab build {name} && enginefab check {name}")
