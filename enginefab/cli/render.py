"""`enginefab render`: a Dockerfile build context or a CI workflow from the pinned definitions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import AliasArg, JsonOpt, run_guarded


group = typer.Typer(help="Generators: Dockerfiles and CI workflows from the pinned definitions.",
                    no_args_is_help=True, rich_markup_mode=None, add_completion=False)


@group.command("dockerfile")
@run_guarded
def dockerfile(name: AliasArg,
               out: Annotated[Path, typer.Option("--out", help="Directory to write the build context into.")],
               parent: Annotated[Optional[str], typer.Option(
                   "--parent", help="A derived image of a matrix image: the repository its parent was pushed to "
                   "(REGISTRY/REPOSITORY); the Dockerfile starts FROM it by the locked digest.")] = None,
               as_json: JsonOpt = False) -> None:
    """An equivalent Dockerfile build context (BuildKit, ADD --checksum) for an image with a base
    image, or derived from another (FROM the parent by digest, then its own layers)."""
    from enginefab.core.definition import load_definition
    from enginefab.core.paths import definition_path
    from enginefab.render.context import write_context
    from enginefab.render.generate import dockerfile as generate

    m = args.matrix()
    files = generate(load_definition(definition_path(m.root, m.get(name).alias)), parent)
    write_context(files, out)
    if as_json:
        present.emit({"dockerfile": str(out / "Dockerfile"), "files": sorted(files)})
    steps = sum(rel.startswith("steps/") for rel in files)
    present.info(f"wrote {out / 'Dockerfile'}, {steps} step scripts and {len(files) - 1 - steps} files of layers")


@group.command("ci")
@run_guarded
def ci(
    github: Annotated[bool, typer.Option("--github", help="A GitHub Actions workflow (the default).")] = False,
    gitlab: Annotated[bool, typer.Option("--gitlab", help="A GitLab CI file.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here instead of stdout (with --check: the file "
                                                "to compare; default .github/workflows/engine-images.yml or .gitlab-ci.yml).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the file differs from what would be written.")] = False,
    runner: Annotated[Optional[list[str]], typer.Option("--runner", help="ARCH=LABEL: the runs-on label (GitHub) or runner "
                                                        "tag (GitLab) for images of that arch (repeatable).")] = None,
) -> None:
    """CI with lock --check once, then one build-check-push job per image on a runner of its arch
    (push only for a tag), using the shared action cache when ENGINEFAB_CACHE is set."""
    from enginefab.core.errors import EnginefabError
    from enginefab.render.generate import CI_PATHS, parse_runners, render_ci as generate

    if github and gitlab:
        raise EnginefabError("--github and --gitlab are two files", fix="render one at a time")
    system = "gitlab" if gitlab else "github"
    path = out or (Path(CI_PATHS[system]) if check else None)
    text = generate(args.matrix(), system, str(path or CI_PATHS[system]), parse_runners(runner or []))
    if check:
        have = path.read_text() if path.is_file() else None
        if have != text:
            flag = f"--{system} --out {path}" + "".join(f" --runner {r}" for r in runner or [])
            why = "is missing" if have is None else "is stale: it is not what the matrix (and these options) give now"
            present.err(f"[red]{path} {why}[/]; run `enginefab render ci {flag}` and commit it")
            raise typer.Exit(1)
        present.info(f"{path} is up to date")
    elif path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    else:
        sys.stdout.write(text)
